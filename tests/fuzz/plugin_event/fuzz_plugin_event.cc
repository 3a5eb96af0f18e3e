// Fuzzes what the bus does with the bytes of one plugin message: the lenient PluginEvent parse,
// the finding's conversion and validation, and the findings.jsonl line of an accepted finding.
// Any bytes must give either a refusal or a line that is one line of valid UTF-8 within the
// limits, with no secret left unredacted.

#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "bus/findings.h"
#include "bus/internal/finding_wire.h"
#include "bus/internal/plugin_event_wire.pb.h"
#include "common/clock.h"
#include "common/utf8.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  oxg::bus::internal::PluginEventWire event;
  if (!event.ParseFromArray(data, static_cast<int>(size))) return 0;
  if (event.event_case() != oxg::bus::internal::PluginEventWire::kFinding) return 0;
  static const oxg::SimulatedClock clock;
  const oxg::bus::FindingLimits limits;
  const oxg::bus::FindingInput input =
      oxg::bus::internal::FindingInputFromWire(event.finding(), limits);
  if (input.metadata.size() > limits.max_metadata_entries + 2) std::abort();
  auto finding = oxg::bus::ValidateFinding(input, "fuzz", "", clock, limits);
  if (!finding.ok()) {
    if (finding.status().code() != absl::StatusCode::kInvalidArgument) std::abort();
    return 0;
  }
  if (finding->type.empty() || finding->type.size() > limits.max_type) std::abort();
  if (finding->meta.size() > limits.max_metadata_entries) std::abort();
  oxg::bus::internal::AttachFlowId(*finding, event.finding().flow_id());
  if (finding->meta.size() > limits.max_metadata_entries + 1) std::abort();
  for (size_t i = 1; i < finding->meta.size(); ++i) {
    if (!(finding->meta[i - 1].first < finding->meta[i].first)) std::abort();  // sorted, unique
  }
  std::string line;
  oxg::bus::AppendFindingLine(line, *finding);
  if (line.empty() || line.back() != '\n') std::abort();
  if (line.find('\n') != line.size() - 1) std::abort();
  size_t code_points = 0;
  if (!oxg::utf8::CountCodePoints(line, &code_points)) std::abort();
  // A secret the redactor knows (an AWS key id standing as a word of its own: glued to other
  // letters it is part of something else) never reaches the file.
  constexpr std::string_view kKey = "AKIAIOSFODNN7EXAMPLE";
  auto word_char = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
  };
  for (size_t at = line.find(kKey); at != std::string::npos; at = line.find(kKey, at + 1)) {
    const bool starts_word = at == 0 || !word_char(line[at - 1]);
    const size_t end = at + kKey.size();
    const bool ends_word = end == line.size() || !word_char(line[end]);
    if (starts_word && ends_word) std::abort();
  }
  return 0;
}
