#include "telemetry/tracing/chrome_trace.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <utility>
#include <variant>

#include "common/json_writer.h"
#include "common/log.h"
#include "common/write_all.h"
#include "common/strings.h"

namespace oxg::tracing {
namespace {

constexpr auto kReportInterval = std::chrono::seconds(10);

std::string ErrnoText(int err) {
  char buf[128];
  // GNU strerror_r returns the message, which may or may not live in buf.
  return std::string(::strerror_r(err, buf, sizeof(buf)));
}

// Doubles keep a fractional part or exponent in their text, so a reader can tell 3.0 from 3.
void WriteDouble(JsonWriter& w, double v) {
  if (!std::isfinite(v)) {
    w.Null();
    return;
  }
  char buf[40];
  const auto r = std::to_chars(buf, buf + sizeof(buf) - 2, v);
  char* end = r.ptr;
  if (std::find_if(buf, end, [](char c) { return c == '.' || c == 'e' || c == 'E'; }) == end) {
    *end++ = '.';
    *end++ = '0';
  }
  w.Raw(std::string_view(buf, static_cast<size_t>(end - buf)));
}

void WriteAttributes(JsonWriter& w, const std::vector<Attribute>& attributes) {
  w.BeginObject();
  for (const Attribute& a : attributes) {
    w.Key(a.key);
    std::visit(
        [&w](const auto& v) {
          using T = std::decay_t<decltype(v)>;
          if constexpr (std::is_same_v<T, std::string>) {
            w.String(v);
          } else if constexpr (std::is_same_v<T, bool>) {
            w.Bool(v);
          } else if constexpr (std::is_same_v<T, int64_t>) {
            w.Int(v);
          } else {
            WriteDouble(w, v);
          }
        },
        a.value);
  }
  w.EndObject();
}

std::string RotatedName(const std::string& path, int n) { return Cat(path, ".", n); }

}  // namespace

std::string_view SpanCategory(std::string_view span_name) {
  const size_t dot = span_name.find('.');
  return dot == std::string_view::npos ? span_name : span_name.substr(0, dot);
}

int64_t FloorMicros(int64_t unix_nano) {
  int64_t q = unix_nano / 1000;
  if (unix_nano % 1000 < 0) --q;
  return q;
}

void AppendCompleteEvent(std::string& out, const SpanData& span, uint32_t pid, uint32_t tid) {
  const int64_t ts = FloorMicros(span.start_unix_nano);
  const int64_t dur = std::max<int64_t>(0, FloorMicros(span.end_unix_nano) - ts);
  char trace_id[32];
  char span_id[16];
  char parent_id[16];
  span.trace_id.WriteHex(trace_id);
  span.span_id.WriteHex(span_id);
  JsonWriter w(out);
  w.BeginObject()
      .Key("name")
      .String(span.name)
      .Key("cat")
      .String(SpanCategory(span.name))
      .Key("ph")
      .String("X")
      .Key("ts")
      .Int(ts)
      .Key("dur")
      .Int(dur)
      .Key("pid")
      .Uint(pid)
      .Key("tid")
      .Uint(tid)
      .Key("args")
      .BeginObject()
      .Key("trace_id")
      .String(std::string_view(trace_id, sizeof(trace_id)))
      .Key("span_id")
      .String(std::string_view(span_id, sizeof(span_id)))
      .Key("parent_span_id");
  if (span.parent_span_id.IsValid()) {
    span.parent_span_id.WriteHex(parent_id);
    w.String(std::string_view(parent_id, sizeof(parent_id)));
  } else {
    w.String("");
  }
  w.Key("kind").String(SpanKindName(span.kind)).Key("status").String(StatusCodeName(span.status));
  if (span.status == StatusCode::kError && !span.status_message.empty()) {
    w.Key("status_message").String(span.status_message);
  }
  w.Key("attributes");
  WriteAttributes(w, span.attributes);
  if (!span.events.empty()) {
    w.Key("events").BeginArray();
    for (const SpanEvent& e : span.events) {
      w.BeginObject().Key("name").String(e.name).Key("ts").Int(FloorMicros(e.time_unix_nano));
      if (!e.attributes.empty()) {
        w.Key("attributes");
        WriteAttributes(w, e.attributes);
      }
      w.EndObject();
    }
    w.EndArray();
  }
  if (!span.trace_state.empty()) w.Key("trace_state").String(span.trace_state);
  w.EndObject().EndObject();
}

void AppendNameMetadata(std::string& out, std::string_view what, uint32_t pid, uint32_t tid,
                        std::string_view name) {
  JsonWriter(out)
      .BeginObject()
      .Key("name")
      .String(what)
      .Key("ph")
      .String("M")
      .Key("pid")
      .Uint(pid)
      .Key("tid")
      .Uint(tid)
      .Key("args")
      .BeginObject()
      .Key("name")
      .String(name)
      .EndObject()
      .EndObject();
}

// ---- TrackAssigner --------------------------------------------------------------------------

TrackAssigner::TrackAssigner(size_t max_top_level)
    : max_top_level_(std::max<size_t>(1, max_top_level)) {}

size_t TrackAssigner::Assign(uint32_t thread_id, int64_t start_us, int64_t end_us) {
  if (end_us < start_us) end_us = start_us;
  std::vector<size_t>& family = by_thread_[thread_id];
  for (size_t index : family) {
    if (TryPlace(tracks_[index], start_us, end_us)) return index;
  }
  const size_t index = tracks_.size();
  TrackState& track = tracks_.emplace_back();
  track.info.tid = static_cast<uint32_t>(index + 1);
  track.info.thread_id = thread_id;
  track.info.ordinal = static_cast<uint32_t>(family.size() + 1);
  track.info.name = thread_id == 0 ? Cat("unknown thread #", track.info.ordinal)
                                   : Cat("thread ", thread_id, " #", track.info.ordinal);
  family.push_back(index);
  TryPlace(track, start_us, end_us);  // an empty track takes anything
  return index;
}

bool TrackAssigner::TryPlace(TrackState& track, int64_t s, int64_t e) {
  // A forgotten interval could partially overlap anything that starts before it ended.
  if (s < track.forgotten_until) return false;
  std::deque<Interval>& top = track.top;
  if (top.empty() || top.back().end <= s) {
    // The usual case: after everything on the track.
    top.push_back({s, e, false});
  } else {
    // Top-level intervals are disjoint and sorted by (start, end), so their ends never
    // decrease; the ones overlapping [s, e) are the run ending at `hi` whose ends exceed s.
    auto hi = std::lower_bound(top.begin(), top.end(), e,
                               [](const Interval& i, int64_t v) { return i.start < v; });
    auto lo = hi;
    while (lo != top.begin() && std::prev(lo)->end > s) --lo;
    bool all_inside = true;
    for (auto it = lo; it != hi; ++it) {
      if (!(s <= it->start && it->end <= e)) {
        all_inside = false;
        break;
      }
    }
    if (all_inside) {
      // The new span encloses them (or touches nothing): it becomes their parent.
      const bool children = lo != hi;
      auto at = top.erase(lo, hi);
      // Among intervals with the same start, shorter ones stay first so ends keep their order.
      while (at != top.end() && at->start == s && at->end <= e) ++at;
      top.insert(at, Interval{s, e, children});
    } else if (std::next(lo) == hi && lo->start <= s && e <= lo->end && !lo->has_children) {
      // Inside a childless top-level interval. Its children are not remembered, so a second
      // one would need a check we cannot make; that one goes to another track instead.
      lo->has_children = true;
    } else {
      return false;
    }
  }
  while (top.size() > max_top_level_) {
    track.forgotten_until = std::max(track.forgotten_until, top.front().end);
    top.pop_front();
  }
  return true;
}

// ---- ChromeTraceFileExporter ----------------------------------------------------------------

absl::StatusOr<std::unique_ptr<ChromeTraceFileExporter>> ChromeTraceFileExporter::Open(
    ChromeTraceOptions options) {
  if (options.path.empty()) return absl::InvalidArgumentError("trace file path is empty");
  if (options.max_file_bytes == 0) {
    return absl::InvalidArgumentError(Cat("trace file ", options.path, ": size limit is 0"));
  }
  options.max_rotated_files = std::max(0, options.max_rotated_files);
  if (options.pid == 0) options.pid = static_cast<uint32_t>(::getpid());
  std::unique_ptr<ChromeTraceFileExporter> exporter(
      new ChromeTraceFileExporter(std::move(options), -1, true));
  std::lock_guard lock(exporter->mu_);
  OXG_RETURN_IF_ERROR(exporter->OpenCurrent(/*truncate=*/false));
  return exporter;
}

ChromeTraceFileExporter::ChromeTraceFileExporter(ChromeTraceOptions options, int fd, bool regular)
    : options_(std::move(options)),
      clock_(options_.clock != nullptr ? *options_.clock : Clock::Real()),
      fd_(fd),
      regular_(regular),
      tracks_(options_.max_top_level_per_track) {}

ChromeTraceFileExporter::~ChromeTraceFileExporter() {
  if (fd_ >= 0) ::close(fd_);
}

absl::Status ChromeTraceFileExporter::OpenCurrent(bool truncate) {
  const std::string& path = options_.path;
  const int fd = ::open(path.c_str(),
                        O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | (truncate ? O_TRUNC : 0), 0600);
  if (fd < 0) {
    const int err = errno;
    return absl::Status(absl::ErrnoToStatusCode(err),
                        Cat("cannot open trace file ", path, ": ", ErrnoText(err)));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return absl::Status(absl::ErrnoToStatusCode(err),
                        Cat("cannot open trace file ", path, ": ", ErrnoText(err)));
  }
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
  regular_ = S_ISREG(st.st_mode);
  size_ = regular_ ? static_cast<uint64_t>(st.st_size) : 0;
  named_in_file_.assign(named_in_file_.size(), false);
  process_named_ = false;
  needs_header_ = size_ == 0;
  file_has_events_ = size_ > 2;
  if (size_ > 0) {
    // Continue a file only when it is one of ours that ends between two events; a partial
    // last line (a crash mid-write) or foreign content would make the whole file unreadable.
    bool clean = false;
    char head[2];
    char tail[2];
    const int rfd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (rfd >= 0) {
      clean = ::pread(rfd, head, 2, 0) == 2 && ::pread(rfd, tail, 2, st.st_size - 2) == 2 &&
              head[0] == '[' && head[1] == '\n' &&
              (st.st_size == 2 || (tail[0] == ',' && tail[1] == '\n'));
      ::close(rfd);
    }
    if (!clean) {
      if (!Rotate()) {
        return absl::FailedPreconditionError(
            Cat("trace file ", path, " holds something else and cannot be rotated away"));
      }
      return absl::OkStatus();
    }
  }
  std::string header;
  StartFileIfNeeded(header);
  if (WriteChunk(header)) {
    needs_header_ = false;
    process_named_ = true;
  }
  return absl::OkStatus();
}

void ChromeTraceFileExporter::StartFileIfNeeded(std::string& out) {
  if (needs_header_) out.append("[\n");
  if (!process_named_) {
    AppendNameMetadata(out, "process_name", options_.pid, 0, options_.process_name);
    out.append(",\n");
  }
}

bool ChromeTraceFileExporter::Rotate() {
  const std::string& path = options_.path;
  const int keep = options_.max_rotated_files;
  if (keep > 0) {
    for (int i = keep - 1; i >= 1; --i) {
      if (::rename(RotatedName(path, i).c_str(), RotatedName(path, i + 1).c_str()) != 0 &&
          errno != ENOENT) {
        ReportFailure(Cat("cannot rename ", RotatedName(path, i)), errno);
      }
    }
    if (::rename(path.c_str(), RotatedName(path, 1).c_str()) != 0 && errno != ENOENT) {
      ReportFailure(Cat("cannot rotate ", path), errno);
      return false;
    }
  } else if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    ReportFailure(Cat("cannot rotate ", path), errno);
    return false;
  }
  rotations_.fetch_add(1, std::memory_order_relaxed);
  named_in_file_.assign(named_in_file_.size(), false);
  process_named_ = false;
  needs_header_ = true;
  file_has_events_ = false;
  size_ = 0;
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0) {
    ReportFailure(Cat("cannot open ", path), errno);
    write_errors_.fetch_add(1, std::memory_order_relaxed);
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    return true;  // rotated; the next Export tries to open the file again
  }
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
  regular_ = true;
  std::string header;
  StartFileIfNeeded(header);
  if (WriteChunk(header)) {
    needs_header_ = false;
    process_named_ = true;
  }
  return true;
}

bool ChromeTraceFileExporter::WriteChunk(const std::string& chunk) {
  if (chunk.empty()) return true;
  if (fd_ < 0) return false;
  // The real size, not ours: someone else may append to the same file.
  uint64_t before = size_;
  if (regular_) {
    struct stat st;
    if (::fstat(fd_, &st) == 0) before = static_cast<uint64_t>(st.st_size);
  }
  size_t written = 0;
  const int err = WriteAll(fd_, chunk, &written);
  if (err != 0) {
    // Cut a partial batch off again: half a line would make the rest of the file unreadable.
    if (written > 0 && regular_) {
      while (::ftruncate(fd_, static_cast<off_t>(before)) != 0 && errno == EINTR) {
      }
    }
    write_errors_.fetch_add(1, std::memory_order_relaxed);
    ReportFailure(Cat("cannot write ", options_.path), err);
    return false;
  }
  size_ = before + chunk.size();
  return true;
}

void ChromeTraceFileExporter::ReportFailure(std::string_view what, int err) {
  const Clock::MonoTime now = clock_.MonoNow();
  if (last_report_.has_value() && now - *last_report_ < kReportInterval) {
    ++unreported_;
    return;
  }
  std::string message = err != 0 ? Cat(what, ": ", ErrnoText(err)) : std::string(what);
  if (unreported_ > 0) {
    message += Cat(" (", unreported_, " more trace file failures since the last report)");
  }
  last_report_ = now;
  unreported_ = 0;
  log::Error("tracing", message);
}

ExportResult ChromeTraceFileExporter::Export(std::span<const SpanData> batch) {
  try {
    std::lock_guard lock(mu_);
    if (shut_down_) return ExportResult::kFailure;
    if (fd_ < 0) {
      const absl::Status reopened = OpenCurrent(/*truncate=*/false);
      if (!reopened.ok()) {
        write_errors_.fetch_add(1, std::memory_order_relaxed);
        ReportFailure(std::string(reopened.message()), 0);
        return ExportResult::kFailure;
      }
    }
    std::string chunk;
    chunk.reserve(batch.size() * 384);
    std::vector<size_t> chunk_named;  // tracks first named in `chunk`
    size_t chunk_events = 0;
    bool rotation_failed = false;

    const auto commit = [&]() {
      const bool ok = WriteChunk(chunk);
      if (ok) {
        if (!chunk.empty()) {
          needs_header_ = false;
          process_named_ = true;
        }
        file_has_events_ = file_has_events_ || chunk_events > 0;
      } else {
        for (size_t index : chunk_named) named_in_file_[index] = false;
      }
      chunk.clear();
      chunk_named.clear();
      chunk_events = 0;
      return ok;
    };

    StartFileIfNeeded(chunk);
    std::string event;
    std::string meta;
    for (const SpanData& span : batch) {
      const int64_t start = FloorMicros(span.start_unix_nano);
      const int64_t end = std::max(start, FloorMicros(span.end_unix_nano));
      const size_t index = tracks_.Assign(span.thread_id, start, end);
      const TrackAssigner::Track& track = tracks_.track(index);
      if (index >= named_in_file_.size()) named_in_file_.resize(index + 1, false);
      event.clear();
      AppendCompleteEvent(event, span, options_.pid, track.tid);
      event.append(",\n");
      meta.clear();
      if (!named_in_file_[index]) {
        AppendNameMetadata(meta, "thread_name", options_.pid, track.tid, track.name);
        meta.append(",\n");
      }
      if (regular_ && !rotation_failed && (file_has_events_ || chunk_events > 0) &&
          size_ + chunk.size() + meta.size() + event.size() > options_.max_file_bytes) {
        if (!commit()) return ExportResult::kFailure;
        if (Rotate()) {
          if (fd_ < 0) return ExportResult::kFailure;
          StartFileIfNeeded(chunk);  // only when writing the header right away failed
          if (meta.empty()) {
            AppendNameMetadata(meta, "thread_name", options_.pid, track.tid, track.name);
            meta.append(",\n");
          }
        } else {
          rotation_failed = true;  // keep writing here; try again with the next batch
        }
      }
      if (!meta.empty()) {
        chunk.append(meta);
        named_in_file_[index] = true;
        chunk_named.push_back(index);
      }
      chunk.append(event);
      ++chunk_events;
    }
    return commit() ? ExportResult::kSuccess : ExportResult::kFailure;
  } catch (...) {
    // Out of memory while formatting: the batch is lost, the daemon is not.
    write_errors_.fetch_add(1, std::memory_order_relaxed);
    return ExportResult::kFailure;
  }
}

void ChromeTraceFileExporter::Shutdown() {
  std::lock_guard lock(mu_);
  shut_down_ = true;
  if (fd_ >= 0) {
    if (regular_) ::fsync(fd_);
    ::close(fd_);
    fd_ = -1;
  }
}

}  // namespace oxg::tracing
