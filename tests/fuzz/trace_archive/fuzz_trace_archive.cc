// Fuzzes the span archive reader (0xgenctl trace): the input is an archive file, read line by
// line as `trace cat` does, with bad lines skipped. Besides not crashing, every span read must
// survive the way back: written as an archive line and parsed again it gives the same line
// (what the writer and the reader agree on is a fixed point after one round).

#include <cstdint>
#include <cstdlib>
#include <sstream>
#include <string>
#include <string_view>

#include "telemetry/tracing/chrome_trace.h"
#include "telemetry/tracing/trace_tool.h"

namespace {

void CheckRoundTrip(const oxg::tracing::SpanData& span) {
  std::string once;
  oxg::tracing::AppendCompleteEvent(once, span, 1, 1);
  auto parsed = oxg::tracing::ParseArchiveLine(once);
  if (!parsed.ok() || parsed->kind != oxg::tracing::ArchiveLine::Kind::kSpan) std::abort();
  std::string twice;
  oxg::tracing::AppendCompleteEvent(twice, parsed->span, 1, 1);
  if (once != twice) std::abort();
  (void)oxg::tracing::FormatSpanLine(parsed->span);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  std::istringstream in(input);
  oxg::tracing::ArchiveReader reader({.skip_bad_lines = true});
  const auto status =
      reader.Read(in, "fuzz", [](oxg::tracing::SpanData&& span) { CheckRoundTrip(span); });
  // With bad lines skipped, only an unreadable stream can fail, and a string never is.
  if (!status.ok()) std::abort();
  return 0;
}
