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
  if (LooksLikeUlid(f.flow_id()) &&
      std::none_of(input.metadata.begin(), input.metadata.end(),
                   [](const auto& kv) { return kv.first == "flow_id"; })) {
    input.metadata.emplace_back("flow_id", f.flow_id());
  }
  return input;
}

}  // namespace oxg::bus::internal
