#include "telemetry/tracing/span_data.h"

#include <array>
#include <string_view>

namespace oxg::tracing {
namespace {

constexpr std::array<const char*, 6> kKindNames = {"unspecified", "internal", "server",
                                                   "client",      "producer", "consumer"};
constexpr std::array<const char*, 3> kStatusNames = {"unset", "ok", "error"};

}  // namespace

const char* SpanKindName(SpanKind kind) {
  const auto i = static_cast<size_t>(kind);
  return i < kKindNames.size() ? kKindNames[i] : "unspecified";
}

bool ParseSpanKind(std::string_view name, SpanKind* out) {
  for (size_t i = 1; i < kKindNames.size(); ++i) {
    if (name == kKindNames[i]) {
      *out = static_cast<SpanKind>(i);
      return true;
    }
  }
  return false;
}

const char* StatusCodeName(StatusCode code) {
  const auto i = static_cast<size_t>(code);
  return i < kStatusNames.size() ? kStatusNames[i] : "unset";
}

bool ParseStatusCode(std::string_view name, StatusCode* out) {
  for (size_t i = 0; i < kStatusNames.size(); ++i) {
    if (name == kStatusNames[i]) {
      *out = static_cast<StatusCode>(i);
      return true;
    }
  }
  return false;
}

}  // namespace oxg::tracing
