#pragma once
// oxg_rpc_requests_total, oxg_rpc_errors_total and oxg_rpc_duration_seconds (contract §4) for
// every RPC of the daemon's gRPC server, taken by a server interceptor so no handler can forget
// them. Internal to the bus: it includes gRPC headers.
//
// The component label comes from the service (`oxg.plugin_bus.PluginBus` -> plugin_bus,
// `oxg.netgate.NetGate` -> netgate), the method label from the method name; calls to anything
// else are counted under component "unknown" and method "unknown" so a client probing random
// paths cannot create series. The duration covers the call from its first byte to the status
// (for streams, the stream's whole life) and takes the exemplar of the span active on the thread
// that finishes the call.
#include <memory>

#include <grpcpp/support/server_interceptor.h>

#include "telemetry/metrics/metrics.h"

namespace oxg::bus::internal {

class RpcMetrics {
 public:
  explicit RpcMetrics(metrics::Registry& registry);
  RpcMetrics(const RpcMetrics&) = delete;
  RpcMetrics& operator=(const RpcMetrics&) = delete;

  // The factory to give ServerBuilder::experimental().SetInterceptorCreators; it refers to this
  // object, which must outlive the server.
  std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> Factory();

  metrics::Family<metrics::Counter>& requests;
  metrics::Family<metrics::Counter>& errors;
  metrics::Family<metrics::Histogram>& duration;
};

// The gRPC status name ("OK", "PERMISSION_DENIED", ...).
const char* StatusCodeName(int code);

}  // namespace oxg::bus::internal
