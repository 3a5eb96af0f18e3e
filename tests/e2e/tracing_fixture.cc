// The daemon's tracing pipeline driven by a steady synthetic operation, for end-to-end and
// fault tests against a real OTLP receiver.
//
// It takes 0xgend's own flags (--trace-endpoint, --trace-file, --trace-protocol,
// --trace-sample-ratio, --metrics-addr, --audit-log, --data-dir ...), parsed and wired by the
// daemon's code (ParseCommandLine, SetUpTracing), and serves the metrics endpoint. Until the
// capture proxy exists, each "operation" here stands in for one proxied exchange: a SERVER span
// `proxy.capture_flow` with a child `proxy.publish_flow_event`, an observation of
// oxg_proxy_request_duration_seconds (exemplar family) and, for the first operation, an audit
// event written inside the span.
//
// Environment: OXG_FIXTURE_OPS (operations to run, default 20; 0 = until stopped) and
// OXG_FIXTURE_RATE (operations per second, default 100). Stdout, flushed line by line:
//   listening <host:port>
//   op <n> trace_id <32 hex>        (for the first 5 operations)
//   done <n>                        (when OXG_FIXTURE_OPS operations have run)
// SIGTERM/SIGINT: flushes the tracer (bounded by 5 s) and exits 0.

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <thread>

#include "common/log.h"
#include "daemon/config.h"
#include "daemon/daemon.h"
#include "daemon/tracing_setup.h"
#include "telemetry/audit/audit.h"
#include "telemetry/metrics/metrics.h"
#include "telemetry/metrics/metrics_server.h"
#include "telemetry/tracing/tracer.h"

namespace {

long EnvLong(const char* name, long fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::strtol(v, nullptr, 10) : fallback;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace oxg;
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);

  daemon::ParseResult parsed = daemon::ParseCommandLine(argc, argv, std::cout, std::cerr);
  if (parsed.exit_code.has_value()) return *parsed.exit_code;
  const daemon::Config& config = parsed.config;
  if (absl::Status dir = daemon::EnsureDataDir(config.data_dir); !dir.ok()) {
    std::cerr << "0xgend: " << dir.message() << "\n";
    return 2;
  }

  metrics::Registry registry;
  metrics::RegisterProcessMetrics(registry);
  audit::AuditStats audit_stats(registry);
  auto audit_log = audit::AuditLog::Open(config.audit_log, audit_stats);
  if (!audit_log.ok()) {
    std::cerr << "audit: " << audit_log.status() << "\n";
    return 2;
  }
  auto tracing = daemon::SetUpTracing(config, registry);
  if (!tracing.ok()) {
    std::cerr << "0xgend: " << tracing.status().message() << "\n";
    return 2;
  }
  tracing::Tracer& tracer = *tracing->tracer;
  auto& duration = registry
                       .AddHistogram("oxg_proxy_request_duration_seconds",
                                     "Client-seen latency through the proxy.", {"method"},
                                     metrics::DefaultLatencyBuckets(), /*exemplars=*/true)
                       .WithLabels({"GET"});

  metrics::ServerOptions server_options;
  server_options.address = config.metrics_addr.value_or(HostPort{"127.0.0.1", 0});
  auto server = metrics::MetricsServer::Start(registry, server_options);
  if (!server.ok()) {
    std::cerr << server.status() << "\n";
    return 2;
  }
  std::printf("listening %s\n", (*server)->bound_address().ToString().c_str());
  std::fflush(stdout);

  std::atomic<bool> stopping{false};
  std::thread worker([&] {
    const long ops = EnvLong("OXG_FIXTURE_OPS", 20);
    const long rate = std::max(1L, EnvLong("OXG_FIXTURE_RATE", 100));
    const auto period = std::chrono::nanoseconds(1'000'000'000 / rate);
    auto next = std::chrono::steady_clock::now();
    for (long n = 1; !stopping.load() && (ops == 0 || n <= ops); ++n) {
      const auto start = std::chrono::steady_clock::now();
      {
        tracing::Span span = tracer.StartSpan("proxy.capture_flow", tracing::SpanKind::kServer);
        tracing::ScopedActivation active(span);
        span.SetAttribute("http.request.method", "GET")
            .SetAttribute("url.full", "http://app.test/item/" + std::to_string(n))
            .SetAttribute("oxg.flow.id", "flow-" + std::to_string(n));
        {
          tracing::Span publish = tracer.StartSpan("proxy.publish_flow_event");
          publish.SetAttribute("oxg.flow.phase", "request");
        }
        if (n == 1) {
          audit::AuditEvent event;
          event.component = "proxy";
          event.event_type = audit::EventType::kProxyLifecycle;
          event.reason = "first exchange";
          (*audit_log)->Write(event);
        }
        span.SetAttribute("http.response.status_code", 200).SetStatus(tracing::StatusCode::kOk);
        duration.Observe(
            std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
        if (n <= 5) {
          std::printf("op %ld trace_id %s\n", n, span.context().trace_id.ToHex().c_str());
          std::fflush(stdout);
        }
      }
      if (ops != 0 && n == ops) {
        std::printf("done %ld\n", n);
        std::fflush(stdout);
      }
      next += period;
      std::this_thread::sleep_until(next);
    }
  });

  int sig = 0;
  sigwait(&stop, &sig);
  stopping = true;
  worker.join();
  (*server)->Stop();
  const auto start = std::chrono::steady_clock::now();
  tracer.Shutdown(std::chrono::seconds(4));
  const double took =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::fprintf(stderr, "tracer shutdown took %.3f s\n", took);
  return 0;
}
