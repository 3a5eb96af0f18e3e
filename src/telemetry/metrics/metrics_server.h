#pragma once

// The HTTP endpoint for Prometheus: GET /metrics, /healthz, /readyz. It runs its own I/O thread,
// so scrapes never run on (or wait for) a data-path thread. Beast stays inside the .cc.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "common/net.h"
#include "common/status.h"
#include "telemetry/metrics/metrics.h"

namespace oxg::metrics {

struct ServerOptions {
  HostPort address;
  bool legacy_aliases = true;
  // Empty callbacks count as healthy / ready.
  std::function<bool()> healthy;
  std::function<bool()> ready;
};

// Owns the listener and its thread. Start() binds synchronously, so a port in use is reported
// before the daemon goes on. Destruction stops the thread and closes every connection.
class MetricsServer {
 public:
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(const Registry& registry,
                                                              ServerOptions options);
  virtual ~MetricsServer() = default;
  // The address actually bound (with the OS-chosen port when 0 was asked for).
  virtual HostPort bound_address() const = 0;
  virtual void Stop() = 0;
};

}  // namespace oxg::metrics
