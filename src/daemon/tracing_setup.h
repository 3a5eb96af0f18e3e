#pragma once

// Builds the daemon's tracer from the configuration: the only place exporters are chosen.

#include <memory>

#include "common/status.h"
#include "daemon/config.h"
#include "telemetry/metrics/metrics.h"
#include "telemetry/tracing/stats.h"
#include "telemetry/tracing/tracer.h"

namespace oxg::daemon {

struct TracingSetup {
  std::unique_ptr<tracing::TracingStats> stats;
  std::unique_ptr<tracing::Tracer> tracer;  // never null; records nothing when tracing is off
  bool enabled = false;
};

// Tracing is on when --trace-endpoint or --trace-file is given and --trace-sample-ratio > 0.
// Each destination gets its own batch processor, so a hanging collector never delays the span
// archive. Errors (an unwritable --trace-file) name the flag and the path.
absl::StatusOr<TracingSetup> SetUpTracing(const Config& config, metrics::Registry& registry);

// The resource attributes every span carries: service.name, service.version,
// service.instance.id, host.name, process.pid, telemetry.sdk.*. Never the command line or a
// secret.
tracing::Resource DaemonResource(const Config& config);

}  // namespace oxg::daemon
