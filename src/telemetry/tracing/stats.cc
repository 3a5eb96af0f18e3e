#include "telemetry/tracing/stats.h"

namespace oxg::tracing {
namespace {

metrics::Family<metrics::Counter>& SpansFamily(metrics::Registry& registry) {
  return registry.AddCounter("oxg_trace_spans_total",
                             "Spans by outcome: exported over OTLP, written to the span archive, "
                             "or dropped (queue full, export failed).",
                             {"outcome"});
}

}  // namespace

TracingStats::TracingStats(metrics::Registry& registry)
    : TracingStats(SpansFamily(registry), registry) {}

TracingStats::TracingStats(metrics::Family<metrics::Counter>& spans, metrics::Registry& registry)
    : exported(spans.WithLabels({"exported"})),
      dropped_queue_full(spans.WithLabels({"dropped_queue_full"})),
      dropped_export_failed(spans.WithLabels({"dropped_export_failed"})),
      written_file(spans.WithLabels({"written_file"})),
      export_duration(registry.AddHistogram("oxg_trace_export_duration_seconds",
                                            "Latency of one span export call.",
                                            {"protocol", "result"})) {}

}  // namespace oxg::tracing
