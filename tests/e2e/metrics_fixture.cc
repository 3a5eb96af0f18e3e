// A metrics endpoint with known contents, for the tests that point real peers at it (promtool,
// the strict OpenMetrics parser of prometheus_client, a Prometheus server).
//
// It serves a registry shaped like the daemon's (contract §4), with label values that need
// escaping, an empty labelled family and exemplars from a fixed span, on 127.0.0.1 with an
// OS-chosen port. On stdout it prints, then flushes:
//
//   listening 127.0.0.1:<port>
//   trace_id <32 hex>
//   span_id <16 hex>
//
// and then serves until stdin reaches EOF or SIGTERM/SIGINT arrives; it exits 0.
//
// --keep-recording: also observes 0.003 s (with the span active) and increments the exemplar
// counter every 100 ms, so successive scrapes see fresh exemplar timestamps and scrapes race
// with updates.

#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>

#include "common/ids.h"
#include "common/net.h"
#include "telemetry/metrics/metrics.h"
#include "telemetry/metrics/metrics_server.h"

namespace {

using oxg::metrics::Counter;
using oxg::metrics::DefaultLatencyBuckets;
using oxg::metrics::Family;
using oxg::metrics::Gauge;
using oxg::metrics::Histogram;
using oxg::metrics::MetricsServer;
using oxg::metrics::Registry;
using oxg::metrics::ServerOptions;
using oxg::metrics::SpanContextRef;

// The one span this process ever reports; set before any observation.
SpanContextRef g_span;
// Whether that span is "active" on the calling thread.
thread_local bool t_span_active = false;

bool ActiveSpan(SpanContextRef* out) {
  if (!t_span_active) return false;
  *out = g_span;
  return true;
}

// Marks the span active for the lifetime of the scope, like a tracer's scoped span.
class ScopedSpan {
 public:
  ScopedSpan() { t_span_active = true; }
  ~ScopedSpan() { t_span_active = false; }
  ScopedSpan(const ScopedSpan&) = delete;
  ScopedSpan& operator=(const ScopedSpan&) = delete;
};

// Label values the exposition must escape or pass through untouched. The tests hold the same
// list; keep them in sync.
constexpr std::string_view kTrickyValues[] = {
    "a,b",                   // comma inside a value
    "say \"hi\"",            // double quotes
    "C:\\plugins\\x",        // backslashes
    "line1\nline2",          // newline
    "ünïcødé ✓",             // multi-byte UTF-8 (the source is UTF-8)
    "\\n is not a newline",  // a backslash followed by n
    "",                      // empty value
};

struct Families {
  Family<Counter>& proxy_requests;
  Family<Histogram>& rpc_duration;
  Family<Gauge>& queue_length;
};

Families Declare(Registry& registry) {
  oxg::metrics::RegisterProcessMetrics(registry);
  oxg::metrics::RegisterBuildInfo(registry);
  auto& proxy_requests =
      registry.AddCounter("oxg_proxy_requests_total", "Exchanges completed by the capture proxy.",
                          {"method", "code"}, /*exemplars=*/true);
  auto& rpc_duration = registry.AddHistogram(
      "oxg_rpc_duration_seconds", "Handler latency; for streams, the whole stream's life.",
      {"component", "method", "code"}, DefaultLatencyBuckets(), /*exemplars=*/true);
  auto& queue_length = registry.AddGauge("oxg_plugin_queue_length",
                                         "Depth of each plugin's outbound queue.", {"plugin"});
  // Declared and never used: must still be listed with HELP and TYPE.
  registry.AddCounter("oxg_rpc_errors_total", "RPC errors.", {"component", "method", "code"});
  registry.AddGauge("oxg_plugin_queue_capacity", "Capacity of each plugin's outbound queue.",
                    {"plugin"});
  registry.AddHistogram("oxg_trace_export_duration_seconds", "OTLP export call latency.",
                        {"protocol", "result"});
  // Unlabelled: exported as 0 before any update.
  registry.AddGauge("oxg_active_plugins", "Connected plugins.");
  registry.AddCounter("oxg_proxy_certs_minted_total", "Interception leaf certificates created.");
  return Families{proxy_requests, rpc_duration, queue_length};
}

void Record(Families& f) {
  auto& ok = f.rpc_duration.WithLabels({"plugin_bus", "EventStream", "OK"});
  auto& get200 = f.proxy_requests.WithLabels({"GET", "200"});
  {
    ScopedSpan span;
    ok.Observe(0.003);  // le="0.005" gets the exemplar
    ok.Observe(0.2);    // le="0.25" gets the exemplar
    get200.Inc();
  }
  // Without a span: counted, but must not replace or add exemplars.
  ok.Observe(0.004);
  ok.Observe(7);
  get200.Inc(2);
  f.rpc_duration.WithLabels({"netgate", "Fetch", "PERMISSION_DENIED"}).Observe(0.05);
  f.proxy_requests.WithLabels({"CONNECT", "error"}).Inc();

  double depth = 1;
  for (std::string_view v : kTrickyValues) {
    f.queue_length.WithLabels({v}).Set(depth++);
    f.proxy_requests.WithLabels({"GET", v}).Inc();
  }
}

void KeepRecording(Families& f) {
  ScopedSpan span;
  f.rpc_duration.WithLabels({"plugin_bus", "EventStream", "OK"}).Observe(0.003);
  f.proxy_requests.WithLabels({"GET", "200"}).Inc();
}

}  // namespace

int main(int argc, char** argv) {
  bool keep_recording = false;
  for (int i = 1; i < argc; ++i) {
    if (std::string_view(argv[i]) == "--keep-recording") {
      keep_recording = true;
    } else {
      std::fprintf(stderr, "usage: %s [--keep-recording]\n", argv[0]);
      return 2;
    }
  }

  // Block the stop signals before any thread starts so every thread inherits the mask and
  // they are only ever delivered through the signalfd below.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  if (pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr) != 0) {
    std::perror("pthread_sigmask");
    return 1;
  }
  int sig_fd = signalfd(-1, &stop_signals, SFD_CLOEXEC);
  if (sig_fd < 0) {
    std::perror("signalfd");
    return 1;
  }
  signal(SIGPIPE, SIG_IGN);

  g_span.trace_id = oxg::TraceId::Random();
  g_span.span_id = oxg::SpanId::Random();
  oxg::metrics::SetActiveSpanProvider(&ActiveSpan);

  Registry registry;
  Families families = Declare(registry);
  Record(families);

  ServerOptions options;
  options.address = oxg::HostPort{"127.0.0.1", 0};
  options.legacy_aliases = true;
  auto server = MetricsServer::Start(registry, std::move(options));
  if (!server.ok()) {
    std::fprintf(stderr, "metrics_fixture: %s\n", server.status().ToString().c_str());
    return 1;
  }

  std::printf("listening %s\n", (*server)->bound_address().ToString().c_str());
  std::printf("trace_id %s\n", g_span.trace_id.ToHex().c_str());
  std::printf("span_id %s\n", g_span.span_id.ToHex().c_str());
  std::fflush(stdout);

  using Steady = std::chrono::steady_clock;
  constexpr auto kPeriod = std::chrono::milliseconds(100);
  auto next = Steady::now() + kPeriod;
  bool done = false;
  while (!done) {
    int timeout_ms = -1;
    if (keep_recording) {
      auto left = std::chrono::ceil<std::chrono::milliseconds>(next - Steady::now());
      timeout_ms = left.count() > 0 ? static_cast<int>(left.count()) : 0;
    }
    pollfd fds[2] = {{STDIN_FILENO, POLLIN, 0}, {sig_fd, POLLIN, 0}};
    int n = poll(fds, 2, timeout_ms);
    if (n < 0) {
      if (errno == EINTR) continue;
      std::perror("poll");
      break;
    }
    if (fds[1].revents & POLLIN) {
      signalfd_siginfo info;
      if (read(sig_fd, &info, sizeof info) == static_cast<ssize_t>(sizeof info)) done = true;
    }
    if (fds[0].revents != 0) {
      // Drain whatever the parent wrote; EOF (or an error or hangup) means stop.
      char buf[256];
      ssize_t r = read(STDIN_FILENO, buf, sizeof buf);
      if (r <= 0 && !(r < 0 && errno == EINTR)) done = true;
    }
    if (keep_recording && Steady::now() >= next) {
      KeepRecording(families);
      next += kPeriod;
      if (next < Steady::now()) next = Steady::now() + kPeriod;
    }
  }

  (*server)->Stop();
  close(sig_fd);
  return 0;
}
