// Plugin bus throughput and latency with real plugin processes.
//
// For each plugin count (default 1, 4, 16) this starts a PluginBus in-process on a loopback port,
// spawns that many `bus_sink_plugin` processes (C++ SDK plugins that count what they receive),
// waits until all are connected, then:
//   1. throughput: publishes flow events (a typical ~700-byte sanitized request, and its
//      response) as fast as the publisher can for --seconds; the plugins' receive counts over
//      their receive window give the delivered events per second. Queues fill and drop at
//      saturation: drops are printed, never hidden.
//   2. latency: delivers --latency-rate events per second in all (each plugin gets that rate
//      divided by the plugin count, a load well under capacity) for --seconds; each plugin
//      measures now - captured_at (CLOCK_REALTIME, same host) per event.
// Prints one table. Informational: exit status 0 unless something failed to run.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "bus/plugin_bus.h"
#include "common/clock.h"
#include "common/ids.h"
#include "common/log.h"
#include "common/strings.h"
#include "telemetry/metrics/metrics.h"

extern char** environ;

namespace {

struct Args {
  std::vector<int> plugins = {1, 4, 16};
  double seconds = 5;
  double latency_rate = 8000;
  std::string sink;
};

struct PluginReport {
  uint64_t events = 0;
  double p50_us = 0, p99_us = 0;
  int64_t first_ns = 0, last_ns = 0;
};

struct Child {
  pid_t pid = -1;
  int out = -1;  // its stdout
};

std::string Request(int i) {
  return oxg::Cat("GET http://app.example.test/api/items/", i,
                  "?page=2&sort=name HTTP/1.1\r\nHost: app.example.test\r\n"
                  "User-Agent: Mozilla/5.0 (X11; Linux x86_64) bench\r\n"
                  "Accept: application/json\r\nAccept-Language: en-GB,en;q=0.9\r\n"
                  "Accept-Encoding: gzip, deflate\r\nCookie: session=[REDACTED]; theme=[REDACTED]\r\n"
                  "Authorization: Bearer [REDACTED]\r\nContent-Length: 0\r\n\r\n");
}

std::string Response() {
  std::string body(320, 'x');
  return oxg::Cat("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nServer: nginx\r\n"
                  "Cache-Control: no-store\r\nContent-Length: ",
                  body.size(), "\r\n\r\n", body);
}

Child Spawn(const std::string& binary, const std::string& name, int port,
            const std::string& token) {
  int fds[2];
  if (::pipe(fds) != 0) return {};
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, fds[1], 1);
  posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addclose(&actions, fds[0]);
  std::vector<std::string> env_strings = {
      oxg::Cat("OXG_BUS_ADDR=127.0.0.1:", port), oxg::Cat("OXG_AUTH_TOKEN=", token),
      oxg::Cat("OXG_PLUGIN_NAME=", name), "PATH=/usr/bin:/bin"};
  std::vector<char*> envp;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::string arg0 = binary;
  char* argv[] = {arg0.data(), nullptr};
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, binary.c_str(), &actions, nullptr, argv, envp.data());
  posix_spawn_file_actions_destroy(&actions);
  ::close(fds[1]);
  if (rc != 0) {
    ::close(fds[0]);
    std::fprintf(stderr, "cannot start %s: %s\n", binary.c_str(), std::strerror(rc));
    return {};
  }
  return {pid, fds[0]};
}

// Reads a "key":number out of the one JSON line the sink prints.
double JsonNumber(const std::string& line, std::string_view key) {
  const std::string needle = oxg::Cat("\"", key, "\":");
  const size_t at = line.find(needle);
  if (at == std::string::npos) return 0;
  return std::strtod(line.c_str() + at + needle.size(), nullptr);
}

std::vector<PluginReport> StopAll(std::vector<Child>& children) {
  std::vector<PluginReport> reports;
  for (Child& c : children) ::kill(c.pid, SIGTERM);
  for (Child& c : children) {
    std::string out;
    char buf[4096];
    for (ssize_t n; (n = ::read(c.out, buf, sizeof(buf))) > 0;) out.append(buf, n);
    ::close(c.out);
    int status = 0;
    ::waitpid(c.pid, &status, 0);
    PluginReport r;
    const size_t nl = out.rfind('{');
    const std::string line = nl == std::string::npos ? out : out.substr(nl);
    r.events = static_cast<uint64_t>(JsonNumber(line, "events"));
    r.p50_us = JsonNumber(line, "p50_us");
    r.p99_us = JsonNumber(line, "p99_us");
    r.first_ns = static_cast<int64_t>(JsonNumber(line, "first_ns"));
    r.last_ns = static_cast<int64_t>(JsonNumber(line, "last_ns"));
    reports.push_back(r);
  }
  children.clear();
  return reports;
}

struct PhaseResult {
  uint64_t published = 0;   // per plugin
  uint64_t delivered = 0;   // sum over plugins
  double window_s = 0;      // first to last receive over all plugins
  double p50_us = 0, p99_us = 0;  // median of p50s, worst p99
};

// One phase: a fresh bus and fresh plugins, so each phase's counts and percentiles are its own.
bool RunPhase(const Args& args, int n, double rate, PhaseResult* result) {
  oxg::metrics::Registry registry;
  oxg::bus::PluginBusOptions options;
  options.listen = {"127.0.0.1", 0};
  options.token = oxg::NewSecretToken();
  options.core_version = "bench";
  oxg::bus::CapabilitySet caps;
  caps.Add(oxg::bus::Capability::kFlowInspect);
  for (int i = 0; i < n; ++i) options.manifests.emplace(oxg::Cat("bench-", i), caps);
  const std::string token = options.token;
  auto bus = oxg::bus::PluginBus::Start(std::move(options),
                                        {.registry = &registry, .clock = &oxg::Clock::Real()});
  if (!bus.ok()) {
    std::fprintf(stderr, "bus: %s\n", std::string(bus.status().message()).c_str());
    return false;
  }
  std::vector<Child> children;
  for (int i = 0; i < n; ++i) {
    Child c = Spawn(args.sink, oxg::Cat("bench-", i), (*bus)->port(), token);
    if (c.pid < 0) return false;
    children.push_back(c);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while ((*bus)->active_plugins() < static_cast<size_t>(n)) {
    if (std::chrono::steady_clock::now() > deadline) {
      std::fprintf(stderr, "only %zu of %d plugins connected\n", (*bus)->active_plugins(), n);
      StopAll(children);
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  std::vector<std::string> requests;
  for (int i = 0; i < 64; ++i) requests.push_back(Request(i));
  const std::string response = Response();
  const std::string flow_id = oxg::NewUlid();

  const auto start = std::chrono::steady_clock::now();
  const auto end = start + std::chrono::duration<double>(args.seconds);
  uint64_t published = 0;
  for (auto now = start; now < end; now = std::chrono::steady_clock::now()) {
    if (rate > 0) {
      const auto due = start + std::chrono::duration<double>(published / rate);
      if (due > now) std::this_thread::sleep_until(due);
    }
    oxg::bus::FlowMessage m;
    m.flow_id = flow_id;
    m.sequence = published + 1;
    m.response = (published & 1) != 0;
    m.captured_at_unix_nano = oxg::Clock::Real().NowUnixNanos();
    m.sanitized = m.response ? std::string_view(response) : std::string_view(requests[published % 64]);
    m.raw = m.sanitized;
    m.raw_body_bytes = m.response ? 320 : 0;
    (*bus)->Publish(m);
    ++published;
  }
  // Let the queues drain before the plugins report (bounded: at most 1024 events per queue).
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  std::vector<PluginReport> reports = StopAll(children);
  (*bus)->Stop();

  result->published = published;
  int64_t first = INT64_MAX, last = 0;
  std::vector<double> p50s;
  for (const PluginReport& r : reports) {
    result->delivered += r.events;
    if (r.events == 0) continue;
    first = std::min(first, r.first_ns);
    last = std::max(last, r.last_ns);
    p50s.push_back(r.p50_us);
    result->p99_us = std::max(result->p99_us, r.p99_us);
  }
  if (!p50s.empty()) {
    std::sort(p50s.begin(), p50s.end());
    result->p50_us = p50s[p50s.size() / 2];
  }
  result->window_s = last > first ? (last - first) / 1e9 : 0;
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  Args args;
  std::string bin_dir = ".";
  if (const char* slash = std::strrchr(argv[0], '/')) bin_dir.assign(argv[0], slash - argv[0]);
  args.sink = bin_dir + "/bus_sink_plugin";
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (a == "--plugins") {
      args.plugins.clear();
      std::string list = value();
      for (size_t pos = 0; pos <= list.size();) {
        const size_t comma = std::min(list.find(',', pos), list.size());
        args.plugins.push_back(std::atoi(list.substr(pos, comma - pos).c_str()));
        pos = comma + 1;
      }
    } else if (a == "--seconds") {
      args.seconds = std::atof(value().c_str());
    } else if (a == "--latency-rate") {
      args.latency_rate = std::atof(value().c_str());
    } else if (a == "--sink") {
      args.sink = value();
    } else {
      std::fprintf(stderr,
                   "usage: bus_bench [--plugins 1,4,16] [--seconds 5] [--latency-rate 8000] "
                   "[--sink PATH]\n");
      return 2;
    }
  }
  if (::access(args.sink.c_str(), X_OK) != 0) {
    std::fprintf(stderr, "bus_bench: %s is not built\n", args.sink.c_str());
    return 2;
  }
  ::signal(SIGPIPE, SIG_IGN);
  oxg::log::SetLevel(oxg::log::Level::kWarn);  // not a line per plugin connecting
  std::printf("%-8s %12s %14s %10s %10s | %14s %10s %10s\n", "plugins", "published/s",
              "delivered/s", "per plugin", "dropped", "latency at", "p50 us", "p99 us");
  for (int n : args.plugins) {
    PhaseResult thr, lat;
    if (!RunPhase(args, n, 0, &thr)) return 1;
    if (!RunPhase(args, n, args.latency_rate / n, &lat)) return 1;
    const double delivered_rate = thr.window_s > 0 ? thr.delivered / thr.window_s : 0;
    const uint64_t offered = thr.published * n;
    std::printf("%-8d %12.0f %14.0f %10.0f %9.1f%% | %9.0f/s in all %10.0f %10.0f\n", n,
                thr.published / args.seconds, delivered_rate, delivered_rate / n,
                offered ? 100.0 * (offered - std::min(offered, thr.delivered)) / offered : 0.0,
                args.latency_rate, lat.p50_us, lat.p99_us);
    std::fflush(stdout);
  }
  return 0;
}
