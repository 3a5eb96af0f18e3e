// Fuzzes content negotiation of the metrics endpoint: Accept and Accept-Encoding are untrusted
// request headers. Besides not crashing or reading out of bounds, the decisions must respect
// the two invariants checked below.

#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "telemetry/metrics/negotiate.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const auto format = oxg::metrics::NegotiateFormat(input);
  const bool gzip = oxg::metrics::AcceptsGzip(input);
  // A header that names no OpenMetrics range can never select OpenMetrics.
  if (format == oxg::metrics::Format::kOpenMetrics100 &&
      input.find('/') == std::string_view::npos) {
    std::abort();
  }
  // gzip is only chosen when some coding could be gzip or the wildcard.
  if (gzip && input.find_first_of("gGxX*") == std::string_view::npos) std::abort();
  return 0;
}
