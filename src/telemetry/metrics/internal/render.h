#pragma once

// Exposition helpers shared by the metrics core's translation units. Private.

#include <span>
#include <string>
#include <string_view>

#include "telemetry/metrics/metrics.h"

namespace oxg::metrics::internal {

// Appends a label value escaped for both formats (\\, \", \n); invalid UTF-8 becomes U+FFFD.
void AppendEscapedLabelValue(std::string& out, std::string_view value);
// Appends the shortest text that reads back as `v`; +Inf, -Inf and NaN as the formats spell them.
void AppendDouble(std::string& out, double v);
// AppendDouble in OpenMetrics' canonical form, which `le` values must use: a finite integral
// value gets ".0" (1 -> "1.0"). Both formats use it so a series keeps one `le` whichever
// format a scraper negotiates.
void AppendCanonicalDouble(std::string& out, double v);
void AppendUint(std::string& out, uint64_t v);
// Appends the exemplar suffix ` # {labels} value timestamp`.
void AppendExemplar(std::string& out, const ExemplarData& ex);
// Appends `name{labels} value\n` for a callback family's sample.
void RenderCallbackSample(std::string& out, std::string_view name, MetricType type, double v);

}  // namespace oxg::metrics::internal
