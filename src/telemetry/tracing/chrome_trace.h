#pragma once

// The span archive (--trace-file, contract §6.5): finished spans as Chrome trace event format
// complete events, one event per line, in the JSON array form that Perfetto UI, chrome://tracing
// and the Chrome DevTools performance panel open.
//
//   [
//   {"name":"process_name","ph":"M","pid":4242,"tid":0,"args":{"name":"0xgend"}},
//   {"name":"thread_name","ph":"M","pid":4242,"tid":1,"args":{"name":"thread 4250 #1"}},
//   {"name":"proxy.capture_flow","cat":"proxy","ph":"X","ts":1700000000000123,"dur":250,
//    "pid":4242,"tid":1,"args":{"trace_id":"…","span_id":"…","parent_span_id":"",
//    "kind":"server","status":"ok","attributes":{"http.request.method":"GET"}}},
//
// (the event is one line in the file). Every line after the first ends with ",": the array is
// never closed, which every viewer above accepts, so the file is valid while it is written, after
// a crash and after rotation, and a later run can append to it.
//
// Times: `ts` is the span's start in whole microseconds since the Unix epoch (rounded down) and
// `dur` is its end, rounded down the same way, minus `ts`. Whole numbers on purpose: viewers read
// fractional values through doubles, which near 1.7e15 µs only resolve 0.25 µs, and rounding a
// start and a duration separately can push a child past its parent's end, which makes Perfetto
// drop the child. Rounding both ends with the same monotonic function keeps every nesting exact.
// Spans shorter than a microsecond may show `dur` 0.
//
// Tracks: complete events on one (pid, tid) must nest or be disjoint. Each span goes to the
// first track of its OS thread (SpanData::thread_id) where it nests or is disjoint with every
// span already there; otherwise a new track of that thread is made. Tracks are named
// "thread <os tid> #<n>" by thread_name metadata, written before a track's first event in each
// file; tids in the file are small numbers given to tracks in order of creation.

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/clock.h"
#include "common/status.h"
#include "telemetry/tracing/span_data.h"

namespace oxg::tracing {

// The event category: the span name up to its first '.', e.g. "proxy" for "proxy.capture_flow";
// the whole name when it has no '.'.
std::string_view SpanCategory(std::string_view span_name);

// Nanoseconds since the epoch to whole microseconds, rounded toward negative infinity.
int64_t FloorMicros(int64_t unix_nano);

// Appends one complete ("X") event line for `span`, without the trailing ",\n", exactly as the
// archive writes it. Span event times are written as microseconds in args.events[].ts.
void AppendCompleteEvent(std::string& out, const SpanData& span, uint32_t pid, uint32_t tid);
// Appends a metadata ("M") event naming the process (`what` "process_name") or a track
// ("thread_name"), without the trailing ",\n".
void AppendNameMetadata(std::string& out, std::string_view what, uint32_t pid, uint32_t tid,
                        std::string_view name);

// Chooses a track for each span so that the intervals on one track nest or are disjoint.
//
// Per track it keeps the top-level (outermost) intervals, sorted and disjoint. Spans reach the
// exporter roughly in end order, so a new span usually either comes after everything on the
// track (O(1)) or encloses the last few top-level intervals, which become its children. A span
// that falls inside a top-level interval is accepted only when that interval has no children
// yet, since children are not remembered; anything else goes to the next track. To bound memory
// a track remembers at most `max_top_level` intervals; once it forgot one, it takes no span
// starting before the end of what it forgot. All of this errs toward a new track, never toward
// a bad nesting. Not thread-safe.
class TrackAssigner {
 public:
  struct Track {
    uint32_t tid = 0;        // written as "tid"; 1, 2, ... in order of creation
    uint32_t thread_id = 0;  // the OS thread the track belongs to
    uint32_t ordinal = 0;    // n in "thread <os tid> #n"
    std::string name;
  };

  explicit TrackAssigner(size_t max_top_level = 256);

  // The index of the track [start_us, end_us) goes to (end_us >= start_us); creates tracks.
  size_t Assign(uint32_t thread_id, int64_t start_us, int64_t end_us);
  const Track& track(size_t index) const { return tracks_[index].info; }
  size_t track_count() const { return tracks_.size(); }

 private:
  struct Interval {
    int64_t start;
    int64_t end;
    bool has_children;
  };
  struct TrackState {
    Track info;
    std::deque<Interval> top;  // sorted by start; disjoint, so also sorted by end
    // Every interval the track forgot ended at or before this.
    int64_t forgotten_until = INT64_MIN;
  };
  bool TryPlace(TrackState& track, int64_t start, int64_t end);

  size_t max_top_level_;
  std::vector<TrackState> tracks_;
  std::unordered_map<uint32_t, std::vector<size_t>> by_thread_;
};

struct ChromeTraceOptions {
  std::string path;
  std::string process_name = "0xgend";  // the service name (--trace-service-name)
  // The file is rotated before a batch would take it past this size (a single event larger
  // than the limit still goes into a file of its own).
  uint64_t max_file_bytes = uint64_t{256} << 20;
  // Rotated files kept: <path>.1 (newest) ... <path>.N; 0 keeps none.
  int max_rotated_files = 5;
  uint32_t pid = 0;  // written as "pid"; 0 means this process's pid
  size_t max_top_level_per_track = 256;
  const Clock* clock = nullptr;  // for rate-limiting failure reports; null means the real clock
};

// The span archive exporter. Export() and Shutdown() are called by one batch processor thread
// (serialized by a mutex anyway); the counters may be read from any thread.
class ChromeTraceFileExporter final : public SpanExporter {
 public:
  // Opens (creating with mode 0600) or continues the archive at options.path. A file that ends
  // cleanly (a run of ours that stopped, or crashed between batches) is appended to; anything
  // else is rotated away first so the new file starts with "[". Fails, naming the path, when
  // the file cannot be opened (missing directory, no permission, a directory).
  static absl::StatusOr<std::unique_ptr<ChromeTraceFileExporter>> Open(ChromeTraceOptions options);
  // The same with `path` in place of options.path.
  static absl::StatusOr<std::unique_ptr<ChromeTraceFileExporter>> Open(std::string path,
                                                                       ChromeTraceOptions options) {
    options.path = std::move(path);
    return Open(std::move(options));
  }
  ~ChromeTraceFileExporter() override;
  ChromeTraceFileExporter(const ChromeTraceFileExporter&) = delete;
  ChromeTraceFileExporter& operator=(const ChromeTraceFileExporter&) = delete;

  // Writes the batch with one write(2) (two or more only when the file rotates within it), so a
  // reader never sees half a line. A failed write (disk full, file gone) is counted, reported
  // on the operational log at most every 10 s, cut back so the file stays valid, and answered
  // with kFailure; it never throws.
  ExportResult Export(std::span<const SpanData> batch) override;
  const char* SuccessOutcome() const override { return "written_file"; }
  void Shutdown() override;

  const std::string& path() const { return options_.path; }
  uint64_t write_errors() const { return write_errors_.load(std::memory_order_relaxed); }
  uint64_t rotations() const { return rotations_.load(std::memory_order_relaxed); }

 private:
  ChromeTraceFileExporter(ChromeTraceOptions options, int fd, bool regular);
  absl::Status OpenCurrent(bool truncate);
  bool Rotate();
  // Appends the header ("[" and the process name) to `out` when the file has none yet.
  void StartFileIfNeeded(std::string& out);
  bool WriteChunk(const std::string& chunk);
  // Logs "what: strerror(err)" (just `what` when err is 0), at most once per 10 s.
  void ReportFailure(std::string_view what, int err);

  ChromeTraceOptions options_;
  const Clock& clock_;
  std::mutex mu_;
  int fd_ = -1;
  bool regular_ = true;  // rotation and truncation only ever touch regular files
  bool shut_down_ = false;
  uint64_t size_ = 0;
  bool needs_header_ = false;     // the current file has no "[" yet
  bool process_named_ = false;    // this run's process_name is in the current file
  bool file_has_events_ = false;  // the current file holds more than its header
  TrackAssigner tracks_;
  std::vector<bool> named_in_file_;  // by track index
  std::optional<Clock::MonoTime> last_report_;
  uint64_t unreported_ = 0;
  std::atomic<uint64_t> write_errors_{0};
  std::atomic<uint64_t> rotations_{0};
};

}  // namespace oxg::tracing
