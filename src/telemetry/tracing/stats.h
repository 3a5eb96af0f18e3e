#pragma once

// Metric families of the tracing pipeline (contract §4), declared once per Registry.

#include "telemetry/metrics/metrics.h"

namespace oxg::tracing {

struct TracingStats {
  explicit TracingStats(metrics::Registry& registry);

  // oxg_trace_spans_total{outcome}
  metrics::Counter& exported;
  metrics::Counter& dropped_queue_full;
  metrics::Counter& dropped_export_failed;
  metrics::Counter& written_file;
  // oxg_trace_export_duration_seconds{protocol,result}; protocol "http/protobuf", "http/json"
  // or "file"; result "success" or "failure".
  metrics::Family<metrics::Histogram>& export_duration;

  // The counter for an exporter's SuccessOutcome().
  metrics::Counter& Success(const char* outcome) {
    return std::string_view(outcome) == "written_file" ? written_file : exported;
  }

 private:
  TracingStats(metrics::Family<metrics::Counter>& spans, metrics::Registry& registry);
};

}  // namespace oxg::tracing
