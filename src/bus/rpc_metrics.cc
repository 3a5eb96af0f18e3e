#include "bus/internal/rpc_metrics.h"

#include <string_view>

#include <grpcpp/support/interceptor.h>
#include <grpcpp/support/status.h>

namespace oxg::bus::internal {
namespace {

using grpc::experimental::InterceptionHookPoints;

struct Route {
  std::string_view component = "unknown";
  std::string_view method = "unknown";
};

// "/oxg.plugin_bus.PluginBus/EventStream" -> {plugin_bus, EventStream}. Only the daemon's own
// methods get their names as labels.
Route RouteOf(std::string_view path) {
  static constexpr struct {
    std::string_view prefix, component;
    std::string_view methods[4];
  } kServices[] = {
      {"/oxg.plugin_bus.PluginBus/", "plugin_bus", {"EventStream", "GrantCapabilities", {}, {}}},
      {"/oxg.netgate.NetGate/", "netgate", {"Fetch", {}, {}, {}}},
  };
  for (const auto& service : kServices) {
    if (!path.starts_with(service.prefix)) continue;
    const std::string_view method = path.substr(service.prefix.size());
    for (std::string_view known : service.methods) {
      if (!known.empty() && known == method) return {service.component, known};
    }
    return {service.component, "unknown"};
  }
  return {};
}

class Interceptor final : public grpc::experimental::Interceptor {
 public:
  Interceptor(RpcMetrics& metrics, Route route)
      : metrics_(metrics), route_(route), start_(std::chrono::steady_clock::now()) {
    metrics_.requests.WithLabels({route_.component, route_.method}).Inc();
  }
  ~Interceptor() override {
    // A call torn down without a status sent (the server stopped) still counts once.
    if (!recorded_) Record(grpc::StatusCode::CANCELLED);
  }

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      Record(methods->GetSendStatus().error_code());
    }
    methods->Proceed();
  }

 private:
  void Record(grpc::StatusCode code) {
    if (recorded_) return;
    recorded_ = true;
    const std::string_view name = StatusCodeName(code);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    metrics_.duration.WithLabels({route_.component, route_.method, name}).Observe(seconds);
    if (code != grpc::StatusCode::OK) {
      metrics_.errors.WithLabels({route_.component, route_.method, name}).Inc();
    }
  }

  RpcMetrics& metrics_;
  Route route_;
  std::chrono::steady_clock::time_point start_;
  bool recorded_ = false;
};

class Factory final : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit Factory(RpcMetrics& metrics) : metrics_(metrics) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    return new Interceptor(metrics_, RouteOf(info->method() ? info->method() : ""));
  }

 private:
  RpcMetrics& metrics_;
};

}  // namespace

const char* StatusCodeName(int code) {
  static constexpr const char* kNames[] = {
      "OK",           "CANCELLED",         "UNKNOWN",          "INVALID_ARGUMENT",
      "DEADLINE_EXCEEDED", "NOT_FOUND",    "ALREADY_EXISTS",   "PERMISSION_DENIED",
      "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",  "OUT_OF_RANGE",
      "UNIMPLEMENTED", "INTERNAL",         "UNAVAILABLE",      "DATA_LOSS",
      "UNAUTHENTICATED"};
  if (code >= 0 && code < static_cast<int>(std::size(kNames))) return kNames[code];
  return "UNKNOWN";
}

RpcMetrics::RpcMetrics(metrics::Registry& registry)
    : requests(registry.AddCounter("oxg_rpc_requests_total",
                                   "RPC calls handled, per component and method.",
                                   {"component", "method"})),
      errors(registry.AddCounter("oxg_rpc_errors_total",
                                 "RPC calls that ended with a status other than OK.",
                                 {"component", "method", "code"})),
      duration(registry.AddHistogram(
          "oxg_rpc_duration_seconds",
          "RPC handler latency; for streams, the whole stream's life.",
          {"component", "method", "code"}, metrics::DefaultLatencyBuckets(),
          /*exemplars=*/true)) {}

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> RpcMetrics::Factory() {
  return std::make_unique<internal::Factory>(*this);
}

}  // namespace oxg::bus::internal
