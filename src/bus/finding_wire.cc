#include "bus/internal/finding_wire.h"

#include <algorithm>

namespace oxg::bus::internal {
namespace {

bool LooksLikeUlid(std::string_view id) {
  return id.size() == 26 && std::all_of(id.begin(), id.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z');
         });
}

}  // namespace

FindingInput FindingInputFromWire(const FindingWire& f, const FindingLimits& limits) {
  FindingInput input;
  input.type = f.type();
  input.message = f.message();
  input.target = f.target();
  input.evidence = f.evidence();
  input.severity = f.severity();
  const size_t keep = limits.max_metadata_entries + 1;
  input.metadata.reserve(std::min<size_t>(f.metadata_size(), keep));
  for (int i = 0; i < f.metadata_size() && input.metadata.size() < keep; ++i) {
    input.metadata.emplace_back(f.metadata(i).key(), f.metadata(i).value());
  }
  return input;
}

void AttachFlowId(Finding& finding, std::string_view flow_id) {
  if (!LooksLikeUlid(flow_id)) return;
  auto at = std::lower_bound(finding.meta.begin(), finding.meta.end(), std::string_view("flow_id"),
                             [](const auto& kv, std::string_view key) { return kv.first < key; });
  if (at != finding.meta.end() && at->first == "flow_id") return;  // the plugin's own wins
  finding.meta.emplace(at, "flow_id", std::string(flow_id));
}

}  // namespace oxg::bus::internal
