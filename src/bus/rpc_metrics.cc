#include "bus/internal/rpc_metrics.h"

#include <mutex>
#include <string_view>

#include <grpcpp/support/interceptor.h>
#include <grpcpp/server_context.h>
#include <grpcpp/support/status.h>

#include "telemetry/tracing/tracer.h"

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
  Interceptor(RpcMetrics& metrics, grpc::experimental::ServerRpcInfo* info, Route route)
      : metrics_(metrics), info_(info), route_(route), start_(std::chrono::steady_clock::now()) {
    metrics_.requests.WithLabels({route_.component, route_.method}).Inc();
  }
  ~Interceptor() override {
    // A call torn down without a status sent (the server stopped) still counts once.
    std::lock_guard lock(mu_);
    Record(status_seen_ && !cancelled_ ? code_ : grpc::StatusCode::CANCELLED);
  }

  // The status the handler sent is the outcome unless the call was cancelled: a peer that
  // vanished, or a message over the size limit that gRPC refused by cancelling the call, both
  // after which the handler's status reaches nobody. The call's close arrives before or after
  // the status, so the outcome is recorded when both are known.
  // The two hooks run on different threads (the one finishing the call, the one completing its
  // close), possibly at once: the state is under a lock.
  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      std::lock_guard lock(mu_);
      status_seen_ = true;
      code_ = methods->GetSendStatus().error_code();
      // The handler finishes with its span active: keep it for the exemplar.
      if (const tracing::SpanContext* ctx = tracing::CurrentContext();
          ctx != nullptr && ctx->sampled()) {
        exemplar_ = *ctx;
      }
      if (closed_) Record(cancelled_ ? grpc::StatusCode::CANCELLED : code_);
    }
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::POST_RECV_CLOSE)) {
      std::lock_guard lock(mu_);
      closed_ = true;
      cancelled_ = info_->server_context() != nullptr && info_->server_context()->IsCancelled();
      if (status_seen_) Record(cancelled_ ? grpc::StatusCode::CANCELLED : code_);
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
    metrics::Histogram& duration =
        metrics_.duration.WithLabels({route_.component, route_.method, name});
    if (exemplar_.IsValid()) {
      char trace_id[32], span_id[16];
      exemplar_.trace_id.WriteHex(trace_id);
      exemplar_.span_id.WriteHex(span_id);
      const metrics::ExemplarLabel labels[] = {
          {"trace_id", std::string_view(trace_id, sizeof(trace_id))},
          {"span_id", std::string_view(span_id, sizeof(span_id))}};
      duration.ObserveWithExemplar(seconds, labels);
    } else {
      duration.Observe(seconds);
    }
    if (code != grpc::StatusCode::OK) {
      metrics_.errors.WithLabels({route_.component, route_.method, name}).Inc();
    }
  }

  RpcMetrics& metrics_;
  grpc::experimental::ServerRpcInfo* info_;
  std::mutex mu_;
  Route route_;
  std::chrono::steady_clock::time_point start_;
  tracing::SpanContext exemplar_;
  grpc::StatusCode code_ = grpc::StatusCode::OK;
  bool status_seen_ = false;
  bool closed_ = false;
  bool cancelled_ = false;
  bool recorded_ = false;
};

class Factory final : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit Factory(RpcMetrics& metrics) : metrics_(metrics) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    return new Interceptor(metrics_, info, RouteOf(info->method() ? info->method() : ""));
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
