#pragma once

// Reading the span archive (chrome_trace.h) back into spans, and the `0xgenctl trace` commands
// built on it: cat (one line per span), tree (one trace as an indented tree) and to-otlp-json.
//
// The reader takes what the exporter writes and what a viewer accepts around it: the "[" line,
// a final "]" (on its own line or after the last event), trailing commas, metadata events,
// fractional microseconds, and lines of any length. Anything else is a bad line, reported as
// "file:line: reason"; reading stops there unless bad lines are to be skipped. A last line
// without its newline that does not parse is taken for a write in progress and only warned about.

#include <cstdint>
#include <functional>
#include <iosfwd>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "telemetry/tracing/span_data.h"

namespace oxg::tracing {

// One line of an archive, parsed.
struct ArchiveLine {
  enum class Kind {
    kNone,         // "[", "]", a blank line, or metadata other than the process name
    kSpan,         // a complete ("X") event
    kProcessName,  // the process_name metadata event
  };
  Kind kind = Kind::kNone;
  SpanData span;
  uint32_t pid = 0;
  std::string process_name;
};

// Parses one line (without its newline). The error says what is wrong, not where.
absl::StatusOr<ArchiveLine> ParseArchiveLine(std::string_view line);

struct ArchiveReadOptions {
  bool skip_bad_lines = false;
};

// Reads archives line by line. Not thread-safe.
class ArchiveReader {
 public:
  using SpanFn = std::function<void(SpanData&&)>;
  using WarningFn = std::function<void(const std::string&)>;

  // `on_warning` receives the "file:line: reason" of each skipped or ignored line.
  explicit ArchiveReader(ArchiveReadOptions options, WarningFn on_warning = nullptr);

  // Calls `on_span` for every span in file order. `name` stands for the stream in messages.
  absl::Status Read(std::istream& in, std::string_view name, const SpanFn& on_span);
  // Same for a file; failing to open it is a NotFound/PermissionDenied/... naming the path.
  absl::Status ReadFile(const std::string& path, const SpanFn& on_span);

  // The first process_name seen (the daemon's service name), or empty.
  const std::string& process_name() const { return process_name_; }
  uint64_t skipped_lines() const { return skipped_lines_; }

 private:
  ArchiveReadOptions options_;
  WarningFn on_warning_;
  std::string process_name_;
  uint64_t skipped_lines_ = 0;
};

// The files holding the archive `path`: with `rotated`, the rotated files that exist
// (<path>.N ... <path>.1, oldest first) and then `path`; otherwise just `path`.
std::vector<std::string> ArchiveFiles(const std::string& path, bool rotated);

// One human-readable line per span (what `trace cat` prints), without a newline:
//   <start, RFC 3339 UTC> <duration> <trace id> <span id> parent=<id|-> <kind> <status> <name>
//   [key=value ...] [(N events)]
std::string FormatSpanLine(const SpanData& span);
// "250us", "1.250ms", "3.000s".
std::string FormatDuration(int64_t nanos);

struct TraceToolOptions {
  bool rotated = false;         // also read <file>.N ... <file>.1
  bool skip_bad_lines = false;  // report bad lines and go on
};

// The commands; each writes its output to `out`, messages to `err`, and returns the exit code
// (contract §1): 0 success; 1 a bad line in the archive, or for tree a trace id that is not in
// it; 2 bad usage: a file that cannot be opened, or for tree an argument that is not a trace id.
int TraceCat(const std::string& path, const TraceToolOptions& options, std::ostream& out,
             std::ostream& err);
int TraceTree(std::string_view trace_id, const std::string& path, const TraceToolOptions& options,
              std::ostream& out, std::ostream& err);
// An OTLP/JSON ExportTraceServiceRequest holding every span, with the archive's process name as
// the resource's service.name ("unknown_service" when it names none).
int TraceToOtlpJson(const std::string& path, const TraceToolOptions& options, std::ostream& out,
                    std::ostream& err);

}  // namespace oxg::tracing
