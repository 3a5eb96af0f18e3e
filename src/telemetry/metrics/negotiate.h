#pragma once

// Content negotiation for the metrics endpoint: which exposition format and whether to gzip,
// decided from the request's Accept and Accept-Encoding headers with their q-values (RFC 9110
// §12.5), never by substring matching. Inputs are untrusted: any bytes are accepted, unknown or
// malformed elements are skipped, and work is linear in the header size.

#include <string_view>

#include "telemetry/metrics/metrics.h"

namespace oxg::metrics {

// OpenMetrics 1.0 when the client prefers it to text 0.0.4; text 0.0.4 otherwise (also for an
// empty, garbage or unsatisfiable header, so old scrapers always get something they can read).
Format NegotiateFormat(std::string_view accept);

// True when gzip is acceptable with a q-value above 0 (explicitly or through `*`).
bool AcceptsGzip(std::string_view accept_encoding);

// The Content-Type that goes with a format.
std::string_view ContentType(Format format);

}  // namespace oxg::metrics
