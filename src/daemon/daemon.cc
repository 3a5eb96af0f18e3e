#include "daemon/daemon.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <chrono>
#include <memory>
#include <optional>
#include <unordered_map>
#include <vector>

#include "bus/findings_store.h"
#include "bus/plugin_bus.h"
#include "common/build_info.h"
#include "common/clock.h"
#include "common/ids.h"
#include "common/log.h"
#include "common/redact.h"
#include "common/strings.h"
#include "daemon/tracing_setup.h"
#include "plugins/manifest.h"
#include "plugins/runner.h"
#include "plugins/supervisor.h"
#include "proxy/flow/flow_pipeline.h"
#include "proxy/proxy_server.h"
#include "proxy/scope.h"
#include "proxy/tls/ca.h"
#include "proxy/tls/leaf_cache.h"
#include "telemetry/audit/audit.h"
#include "telemetry/metrics/metrics.h"
#include "telemetry/metrics/metrics_server.h"

namespace oxg::daemon {

namespace {

// Hands the capture pipeline's flow events to the plugin bus (the proxy and the bus know
// nothing of each other).
class BusFlowSink final : public proxy::FlowSink {
 public:
  explicit BusFlowSink(bus::PluginBus& bus) : bus_(bus) {}
  void Publish(const proxy::FlowEvent& event) override {
    bus::FlowMessage message;
    message.flow_id = event.flow_id;
    message.scheme = event.scheme;
    message.sequence = event.sequence;
    message.response = event.type == proxy::FlowType::kResponse;
    message.captured_at_unix_nano = event.timestamp_unix_nano;
    message.sanitized = event.sanitized;
    message.raw = event.raw;
    message.raw_body_bytes = event.raw_body_bytes;
    message.raw_body_truncated = event.raw_body_truncated;
    message.context = event.context;
    bus_.Publish(message);
  }

 private:
  bus::PluginBus& bus_;
};

constexpr std::string_view kComponent = "daemon";
// Generous for a hex token, small enough that a wrong file (a log, a core) is refused quickly.
constexpr size_t kMaxTokenFileBytes = 4096;

std::string ErrnoText(int err) {
  char buf[256];
  return std::string(strerror_r(err, buf, sizeof(buf)));
}

std::string JoinPath(const std::string& dir, std::string_view name) {
  if (!dir.empty() && dir.back() == '/') return Cat(dir, name);
  return Cat(dir, "/", name);
}

std::string_view SignalName(int sig) {
  switch (sig) {
    case SIGINT:
      return "SIGINT";
    case SIGTERM:
      return "SIGTERM";
    default:
      return "signal";
  }
}

absl::StatusOr<std::string> ReadTokenFile(int fd, const std::string& path) {
  struct stat st;
  if (::fstat(fd, &st) != 0)
    return absl::InternalError(Cat("cannot read ", path, " (", ErrnoText(errno), ")"));
  if (!S_ISREG(st.st_mode)) {
    return absl::FailedPreconditionError(Cat(path, " is not a regular file"));
  }
  // Older runs or a careless copy may have left it readable by others; the token grants plugin
  // access, so it is kept owner-only.
  if ((st.st_mode & 07777) != 0600 && ::fchmod(fd, 0600) != 0) {
    log::Warn(kComponent, Cat("cannot restrict ", path, " to mode 0600 (", ErrnoText(errno), ")"));
  }
  std::string text;
  char buf[512];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::InternalError(Cat("cannot read ", path, " (", ErrnoText(errno), ")"));
    }
    if (n == 0) break;
    text.append(buf, static_cast<size_t>(n));
    if (text.size() > kMaxTokenFileBytes) {
      return absl::FailedPreconditionError(
          Cat(path, " is larger than ", kMaxTokenFileBytes, " bytes"));
    }
  }
  std::string_view stripped = TrimAscii(text);
  if (stripped.empty()) {
    return absl::FailedPreconditionError(
        Cat(path, " is empty; remove it to have a new one generated, or pass --token"));
  }
  if (stripped.size() < 8) {  // as for --token: too short to be redacted reliably
    return absl::FailedPreconditionError(
        Cat(path, " holds fewer than 8 characters; remove it to have a new one generated"));
  }
  return std::string(stripped);
}

absl::Status WriteAll(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::Status(absl::ErrnoToStatusCode(errno), ErrnoText(errno));
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return absl::OkStatus();
}

void Audit(audit::AuditLog& log, audit::EventType type, std::string reason,
           std::vector<std::pair<std::string, std::string>> metadata = {}) {
  audit::AuditEvent event;
  event.component = std::string(kComponent);
  event.event_type = type;
  event.decision = audit::Decision::kInfo;
  event.reason = std::move(reason);
  event.metadata = std::move(metadata);
  log.Write(event);
}

}  // namespace

absl::Status EnsureDataDir(const std::string& path) {
  if (path.empty()) return absl::InvalidArgumentError("the data dir path is empty");
  // mkdir -p, one component at a time, so the failing component can be named.
  size_t pos = 0;
  while (pos != std::string::npos) {
    pos = path.find('/', pos + 1);
    const std::string prefix = path.substr(0, pos);
    if (prefix.empty() || prefix == "." || prefix == "..") continue;
    if (::mkdir(prefix.c_str(), 0700) == 0) {
      // The umask may have taken bits away; the owner needs all three.
      ::chmod(prefix.c_str(), 0700);
      continue;
    }
    const int err = errno;
    if (err == EEXIST) continue;
    if (prefix == path || pos == path.size() - 1) {
      return absl::FailedPreconditionError(Cat("cannot create ", path, ": ", ErrnoText(err)));
    }
    return absl::FailedPreconditionError(
        Cat("cannot create ", path, " (at ", prefix, "): ", ErrnoText(err)));
  }
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    return absl::FailedPreconditionError(Cat(path, ": ", ErrnoText(errno)));
  }
  if (!S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(Cat(path, " is not a directory"));
  }
  if (::access(path.c_str(), W_OK | X_OK) != 0) {
    return absl::FailedPreconditionError(Cat(path, " is not writable: ", ErrnoText(errno)));
  }
  if ((st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof(mode), "%04o", static_cast<unsigned>(st.st_mode & 07777));
    log::Warn(kComponent, Cat("data dir ", path, " is accessible to other users (mode ", mode,
                              "); it holds the plugin token and captured traffic, "
                              "consider chmod 700"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> LoadOrCreateToken(const std::string& data_dir, TokenSource* source) {
  const std::string path = JoinPath(data_dir, "token");
  // Two attempts: if another process creates the file between our read and our create, the
  // second round reads what it wrote.
  for (int attempt = 0; attempt < 2; ++attempt) {
    const int rfd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (rfd >= 0) {
      auto token = ReadTokenFile(rfd, path);
      ::close(rfd);
      if (token.ok() && source != nullptr) *source = TokenSource::kFile;
      return token;
    }
    if (errno != ENOENT) {
      return absl::FailedPreconditionError(Cat("cannot read ", path, " (", ErrnoText(errno), ")"));
    }
    const std::string token = NewSecretToken();
    // O_EXCL: never truncate a token some other process has just written.
    const int wfd =
        ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (wfd < 0) {
      if (errno == EEXIST) continue;
      return absl::FailedPreconditionError(
          Cat("cannot create ", path, " (", ErrnoText(errno), ")"));
    }
    absl::Status st = WriteAll(wfd, token);
    if (st.ok() && ::fsync(wfd) != 0) st = absl::InternalError(ErrnoText(errno));
    ::close(wfd);
    if (!st.ok()) {
      ::unlink(path.c_str());
      return absl::FailedPreconditionError(Cat("cannot write ", path, " (", st.message(), ")"));
    }
    if (source != nullptr) *source = TokenSource::kGenerated;
    return token;
  }
  return absl::FailedPreconditionError(Cat("cannot read or create ", path));
}

int Run(const Config& config) {
  // Started with stdin, stdout or stderr closed, the next open() would take that number and,
  // say, the audit log would receive the operational log. Park /dev/null on any free one.
  for (int fd = 0; fd <= 2; ++fd) {
    if (::fcntl(fd, F_GETFD) == -1 && errno == EBADF) {
      const int null_fd = ::open("/dev/null", O_RDWR);
      if (null_fd > 2) ::close(null_fd);  // cannot happen while `fd` is free; be tidy anyway
    }
  }
  // Before any thread exists, so every thread inherits the mask and the signals are only ever
  // consumed by the sigwait() below instead of killing a random thread.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  if (int rc = pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr); rc != 0) {
    log::Error(kComponent, Cat("cannot block SIGINT/SIGTERM: ", ErrnoText(rc)));
    return 1;
  }
  // A scraper hanging up mid-response must cost an EPIPE, not the process.
  ::signal(SIGPIPE, SIG_IGN);

  log::SetLevel(config.log_level);
  log::Info(kComponent, Cat("0xgend ", kVersion, " (", kRevision, ") starting, pid ", ::getpid()));

  if (absl::Status st = EnsureDataDir(config.data_dir); !st.ok()) {
    log::Error(kComponent, Cat("--data-dir: ", st.message()));
    return 2;
  }

  std::string token_source = "flag";
  std::string token = config.token;
  if (token.empty()) {
    TokenSource source = TokenSource::kFile;
    auto loaded = LoadOrCreateToken(config.data_dir, &source);
    if (!loaded.ok()) {
      log::Error(kComponent, Cat("--data-dir: ", loaded.status().message()));
      return 2;
    }
    token = *std::move(loaded);
    token_source = source == TokenSource::kGenerated ? "generated" : "file";
  }
  // From here on the token is scrubbed from every log line, audit event and exported string.
  Redactor::Default().AddLiteral(token);
  const std::string token_path = JoinPath(config.data_dir, "token");
  if (token_source == "generated") {
    log::Info(kComponent, Cat("generated a new plugin auth token in ", token_path, " (mode 0600)"));
  } else if (token_source == "file") {
    log::Info(kComponent, Cat("using the plugin auth token stored in ", token_path));
  } else {
    log::Info(kComponent, "using the plugin auth token given with --token");
  }
  if (token.size() < 16) {
    log::Warn(kComponent,
              "the plugin token is shorter than 16 characters; prefer the generated one");
  }

  metrics::Registry registry(Clock::Real());
  metrics::RegisterProcessMetrics(registry);
  metrics::RegisterBuildInfo(registry);

  audit::AuditStats audit_stats(registry);
  auto audit_log = audit::AuditLog::Open(config.audit_log, audit_stats);
  if (!audit_log.ok()) {
    log::Error(kComponent, Cat("--audit-log: cannot open ", audit_log.status().message()));
    return 2;
  }
  audit::AuditLog& audit = **audit_log;
  {
    auto described = config.Describe();
    // Not "token-source": a key naming a token is redacted whole, value included.
    described.emplace_back("plugin-key-source", token_source);
    Audit(audit, audit::EventType::kConfigLoaded, "configuration loaded", std::move(described));
  }

  // Contract §2: the interception CA is generated on first start and checked on every later
  // one, so a broken pair stops the daemon now rather than at the first HTTPS connection.
  // A proxy holds two descriptors per connection: take the whole allowance the system gives
  // (the soft limit is often 1024 while the hard one is far higher).
  if (struct rlimit fds; ::getrlimit(RLIMIT_NOFILE, &fds) == 0 && fds.rlim_cur < fds.rlim_max) {
    const rlim_t before = fds.rlim_cur;
    fds.rlim_cur = fds.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &fds) != 0) {
      log::Warn(kComponent, Cat("cannot raise the open-file limit from ", before, ": ",
                                ErrnoText(errno)));
    }
  }

  std::optional<proxy::tls::CertificateAuthority> ca;
  std::optional<proxy::ScopePolicy> scope;
  if (config.proxy_addr.has_value()) {
    auto loaded_ca =
        proxy::tls::LoadOrCreateCa(config.proxy_ca_cert, config.proxy_ca_key, Clock::Real());
    if (!loaded_ca.ok()) {
      log::Error(kComponent,
                 Cat("--proxy-ca-cert/--proxy-ca-key: ", loaded_ca.status().message()));
      return 2;
    }
    ca.emplace(*std::move(loaded_ca));
    log::Info(kComponent, Cat("interception CA: ", config.proxy_ca_cert));
    if (!config.scope_policy.empty()) {
      auto policy = proxy::LoadScopePolicy(config.scope_policy);
      if (!policy.ok()) {
        log::Error(kComponent, Cat("--scope-policy: ", policy.status().message()));
        return 2;
      }
      scope.emplace(*std::move(policy));
    }
  }

  auto tracing = SetUpTracing(config, registry);
  if (!tracing.ok()) {
    log::Error(kComponent, std::string(tracing.status().message()));
    return 2;
  }

  std::unique_ptr<metrics::MetricsServer> metrics_server;
  if (config.metrics_addr.has_value()) {
    metrics::ServerOptions options;
    options.address = *config.metrics_addr;
    options.legacy_aliases = config.metrics_legacy_aliases;
    auto started = metrics::MetricsServer::Start(registry, std::move(options));
    if (!started.ok()) {
      const std::string address = config.metrics_addr->ToString();
      const std::string why(started.status().message());
      // The server's own message usually names the address already; say it only once.
      log::Error(kComponent, why.find(address) != std::string::npos
                                 ? Cat("--metrics-addr: ", why)
                                 : Cat("--metrics-addr: cannot listen on ", address, ": ", why));
      return 2;
    }
    metrics_server = *std::move(started);
    log::Info(kComponent, Cat("metrics listening on ", metrics_server->bound_address().ToString()));
  } else {
    log::Info(kComponent, "metrics endpoint disabled (--metrics-addr is empty)");
  }

  // Plugin manifests: the bus grants a plugin only the capabilities its manifest declares.
  std::unordered_map<std::string, bus::CapabilitySet> manifests;
  std::vector<plugins::Manifest> plugin_manifests;
  if (!config.plugins_dir.empty()) {
    std::vector<std::string> errors;
    plugin_manifests = plugins::LoadManifestsFromDir(config.plugins_dir, &errors);
    for (const plugins::Manifest& m : plugin_manifests) manifests.emplace(m.name, m.capabilities);
    if (!errors.empty()) {
      for (const std::string& e : errors) log::Error(kComponent, Cat("--plugins-dir: ", e));
      return 2;
    }
    log::Info(kComponent, Cat(manifests.size(), manifests.size() == 1 ? " plugin manifest" : " plugin manifests",
                              " in ", config.plugins_dir));
  } else {
    log::Info(kComponent, "no --plugins-dir: no plugin can connect");
  }

  // Findings store, then the bus that feeds it.
  const std::string findings_path = JoinPath(config.data_dir, "findings.jsonl");
  auto findings = bus::FindingStore::Open({.path = findings_path}, registry, Clock::Real());
  if (!findings.ok()) {
    log::Error(kComponent, Cat("--data-dir: ", findings.status().message()));
    return 2;
  }
  std::unique_ptr<bus::PluginBus> plugin_bus;
  {
    bus::PluginBusOptions options;
    options.listen = config.addr;
    options.token = token;
    options.manifests = std::move(manifests);
    options.core_version = kVersion;
    auto started = bus::PluginBus::Start(std::move(options),
                                         {.registry = &registry,
                                          .tracer = tracing->tracer.get(),
                                          .audit = &audit,
                                          .findings = findings->get(),
                                          .clock = &Clock::Real()});
    if (!started.ok()) {
      log::Error(kComponent, Cat("--addr: ", started.status().message()));
      return 2;
    }
    plugin_bus = *std::move(started);
    HostPort bound = config.addr;
    bound.port = static_cast<uint16_t>(plugin_bus->port());
    log::Info(kComponent, Cat("plugin bus listening on ", bound.ToString()));
  }
  BusFlowSink bus_sink(*plugin_bus);

  // Every plugin of --plugins-dir as its own supervised process, connecting to the bus above.
  std::unique_ptr<plugins::Runner> runner = plugins::MakeProcessRunner();
  std::unique_ptr<plugins::Supervisor> supervisor;
  if (!plugin_manifests.empty()) {
    plugins::SupervisorOptions options;
    options.manifests = std::move(plugin_manifests);
    // Plugins dial the bus over loopback when it listens on every interface.
    HostPort dial = config.addr;
    if (dial.host.empty() || dial.host == "0.0.0.0") dial.host = "127.0.0.1";
    if (dial.host == "::") dial.host = "::1";
    dial.port = static_cast<uint16_t>(plugin_bus->port());
    options.bus_address = dial.ToString();
    options.token = token;
    options.backoff.initial = std::chrono::milliseconds(
        static_cast<int64_t>(config.plugin_restart_backoff * 1000));
    options.backoff.max = std::max(options.backoff.initial, options.backoff.max);
    options.stop_grace =
        std::chrono::milliseconds(static_cast<int64_t>(config.plugin_stop_grace * 1000));
    options.goodbye_grace = options.stop_grace;
    bus::PluginBus* bus = plugin_bus.get();
    auto started = plugins::Supervisor::Start(
        std::move(options),
        {.registry = &registry,
         .tracer = tracing->tracer.get(),
         .audit = &audit,
         .clock = &Clock::Real(),
         .runner = runner.get(),
         .say_goodbye = [bus](std::string_view name) { bus->Goodbye(name, "0xgend is stopping"); },
         .wait_until = {}});
    if (!started.ok()) {
      log::Error(kComponent, Cat("--plugins-dir: ", started.status().message()));
      return 2;
    }
    supervisor = *std::move(started);
  }

  // The capture proxy and its pipeline (history, flow log, flows to the plugin bus).
  metrics::Counter& certs_minted =
      registry
          .AddCounter("oxg_proxy_certs_minted_total",
                      "Interception leaf certificates created by the capture proxy.")
          .WithLabels({});
  std::unique_ptr<proxy::tls::LeafCertificateMinter> minter;
  std::unique_ptr<proxy::FlowPipeline> pipeline;
  std::unique_ptr<proxy::ProxyServer> proxy_server;
  if (config.proxy_addr.has_value()) {
    minter = std::make_unique<proxy::tls::LeafCertificateMinter>(
        *ca, Clock::Real(), proxy::tls::LeafCertificateMinter::Options{.minted = &certs_minted});
    proxy::FlowPipelineOptions flow_options;
    flow_options.history_path = config.proxy_history;
    flow_options.flow_log_path = config.proxy_flow_log;
    flow_options.flow_log_raw = config.flow_log_raw;
    flow_options.flow.max_body_kb = config.max_body_kb;
    flow_options.sink = &bus_sink;
    auto started = proxy::FlowPipeline::Start(std::move(flow_options), registry,
                                              *tracing->tracer, Clock::Real());
    if (!started.ok()) {
      log::Error(kComponent, Cat("--proxy-history/--proxy-flow-log: ", started.status().message()));
      return 2;
    }
    pipeline = *std::move(started);

    proxy::ProxyOptions options;
    options.listen = *config.proxy_addr;
    options.workers = config.workers;
    options.flow_sample_rate = config.flow_sample_rate;
    options.max_body_kb = config.max_body_kb;
    options.scope = scope;
    options.upstream_timeout = std::chrono::milliseconds(
        static_cast<int64_t>(config.proxy_upstream_timeout * 1000));
    options.client_idle_timeout =
        std::chrono::milliseconds(static_cast<int64_t>(config.proxy_idle_timeout * 1000));
    options.upstream_insecure_skip_verify = config.proxy_insecure_skip_verify;
    options.upstream_ca_file = config.proxy_upstream_ca;
    proxy::ProxyDeps deps{.registry = &registry,
                          .tracer = tracing->tracer.get(),
                          .audit = &audit,
                          .minter = minter.get(),
                          .pipeline = pipeline.get(),
                          .clock = &Clock::Real()};
    auto proxy_started = proxy::ProxyServer::Start(std::move(options), deps);
    if (!proxy_started.ok()) {
      log::Error(kComponent, Cat("--proxy-addr: ", proxy_started.status().message()));
      return 2;
    }
    proxy_server = *std::move(proxy_started);
    HostPort bound = *config.proxy_addr;
    bound.port = proxy_server->port();
    log::Info(kComponent, Cat("proxy listening on ", bound.ToString(), " (", config.workers,
                              config.workers == 1 ? " worker)" : " workers)"));
  } else {
    log::Info(kComponent, "capture proxy disabled (--proxy-addr is empty)");
  }

  Audit(audit, audit::EventType::kProxyLifecycle, "daemon started",
        {{"version", kVersion}, {"revision", kRevision}, {"pid", Cat(::getpid())}});
  log::Debug(kComponent, "netgate is not part of this build yet");
  log::Info(kComponent, "running; stop with SIGINT or SIGTERM");

  int exit_code = 0;
  int sig = 0;
  for (;;) {
    const int rc = sigwait(&stop_signals, &sig);
    if (rc == 0) break;
    if (rc == EINTR) continue;
    log::Error(kComponent, Cat("sigwait failed: ", ErrnoText(rc)));
    exit_code = 1;
    break;
  }
  if (exit_code == 0) {
    log::Info(kComponent, Cat("received ", SignalName(sig), ", shutting down"));
  }

  // The proxy first (no new exchanges), then the pipeline writes what is queued.
  if (proxy_server != nullptr) proxy_server->Stop();
  if (pipeline != nullptr) pipeline->Stop();
  // Plugins get a goodbye after every flow already queued for them, then SIGTERM, then SIGKILL
  // after the grace period; none is left behind.
  if (supervisor != nullptr) supervisor->Stop();
  // Plugins are told the daemon is leaving; their last findings are written.
  plugin_bus->Stop();
  (*findings)->Stop();
  if (metrics_server != nullptr) metrics_server->Stop();
  Audit(audit, audit::EventType::kProxyLifecycle, "daemon stopped",
        {{"signal", std::string(exit_code == 0 ? SignalName(sig) : "none")}});
  // Last: flush the spans of everything above, bounded so a dead collector cannot hold the
  // exit (contract §6.3: 5 s; 4 s here leaves room for the rest of the shutdown).
  tracing->tracer->Shutdown(std::chrono::seconds(4));
  log::Info(kComponent, "stopped");
  return exit_code;
}

}  // namespace oxg::daemon
