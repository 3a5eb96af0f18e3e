#include "oxg/sdk/plugin.h"

#include <grpcpp/grpcpp.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <exception>
#include <mutex>
#include <random>
#include <thread>

#include "oxg/plugin_bus.grpc.pb.h"

namespace oxg::sdk {
namespace {

namespace pb = ::oxg::plugin_bus;
namespace common = ::oxg::common;
using Stream = grpc::ClientReaderWriter<pb::PluginEvent, pb::HostEvent>;
using Clock = std::chrono::steady_clock;

constexpr int kMaxReceiveBytes = 64 << 20;  // a flow event holds up to a whole captured body
constexpr auto kGrantDeadline = std::chrono::seconds(10);

Status FromGrpc(const grpc::Status& s, const std::string& what) {
  std::string message = what;
  if (!s.error_message().empty()) {
    message.append(": ");
    message.append(s.error_message());
  }
  return Status(static_cast<StatusCode>(s.error_code()), std::move(message));
}

// True for 1, 2, 4, 8, ...: rate-limits repeated log lines without a clock.
bool PowerOfTwo(uint64_t n) { return n != 0 && (n & (n - 1)) == 0; }

}  // namespace

struct Plugin::Impl {
  explicit Impl(PluginOptions o) : options(std::move(o)) {}

  // Stop(): goodbye, close the sending side (or cancel a call still connecting).
  void RequestStop() {
    Impl& p = *this;
    {
      std::lock_guard lock(p.stop_mu);
      if (p.stop) return;
      p.stop = true;
      p.stopping = true;
    }
    // Wake the backoff wait and the watchdog before taking write_mu: a write blocked on flow
    // control holds it, and the watchdog's cancel is what frees it.
    p.stop_cv.notify_all();
    std::lock_guard lock(p.write_mu);
    if (p.stream != nullptr && !p.writes_done) {
      pb::PluginEvent bye;
      bye.mutable_goodbye()->set_reason("stopped");
      p.stream->Write(bye);
      p.stream->WritesDone();
      p.writes_done = true;
      p.connected = false;
    } else if (p.ctx != nullptr) {
      p.ctx->TryCancel();
    }
  }

  PluginOptions options;
  Handler on_request;
  Handler on_response;
  bool resolved = false;  // Run thread only: the token fd is read once
  std::unique_ptr<pb::PluginBus::Stub> stub;
  std::mt19937_64 rng{std::random_device{}()};

  // Stop and per-stream lifecycle flags; stop_cv wakes the backoff wait, the stream watchdog
  // and WaitForStop.
  mutable std::mutex stop_mu;
  mutable std::condition_variable stop_cv;
  bool stop = false;
  bool stream_ended = false;
  bool welcomed = false;
  std::atomic<bool> stopping{false};

  // The current call, shared by the Run thread, Emit and Stop. `ctx` is set while a call is in
  // flight so Stop can cancel it; `stream` only once the hello is written, since nothing may
  // precede the hello on the wire.
  std::mutex write_mu;
  grpc::ClientContext* ctx = nullptr;
  Stream* stream = nullptr;
  bool connected = false;
  bool writes_done = false;

  std::atomic<uint64_t> events_received{0};
  std::atomic<uint64_t> parse_errors{0};
  std::atomic<uint64_t> findings_sent{0};
  std::atomic<uint64_t> findings_failed{0};
  std::atomic<uint64_t> connections{0};

  void Log(const std::string& line) const {
    if (!options.log) return;
    std::string out = options.name.empty() ? std::string("plugin") : options.name;
    out.append(": ");
    out.append(line);
    out.push_back('\n');
    // One write per line so lines from several threads do not interleave.
    std::fwrite(out.data(), 1, out.size(), stderr);
    std::fflush(stderr);
  }

  std::chrono::milliseconds Backoff(int attempt) {
    double base = static_cast<double>(options.backoff_min.count());
    const double max = static_cast<double>(options.backoff_max.count());
    for (int i = 0; i < attempt && base < max; ++i) base *= 2;
    if (base > max) base = max;
    std::uniform_real_distribution<double> jitter(0.8, 1.2);
    double ms = base * jitter(rng);
    if (ms > max) ms = max;
    if (ms < 1) ms = 1;
    return std::chrono::milliseconds(static_cast<int64_t>(ms));
  }

  // Waits up to `d`; true when Stop was called meanwhile.
  bool SleepUnlessStopped(std::chrono::milliseconds d) {
    std::unique_lock lock(stop_mu);
    return stop_cv.wait_for(lock, d, [&] { return stop; });
  }

  void Dispatch(const common::FlowEvent& fe) {
    events_received.fetch_add(1, std::memory_order_relaxed);
    const bool is_request = fe.type() == common::FlowEvent::FLOW_REQUEST;
    HttpMessage m;
    std::string error;
    bool ok = is_request || fe.type() == common::FlowEvent::FLOW_RESPONSE;
    if (!ok) error = "unknown flow event type " + std::to_string(static_cast<int>(fe.type()));
    if (ok) ok = ParseHttpMessage(fe.data(), is_request, &m, &error);
    if (!ok) {
      const uint64_t n = parse_errors.fetch_add(1, std::memory_order_relaxed) + 1;
      if (PowerOfTwo(n)) {
        Log("skipped flow event " + fe.flow_id() + " seq " + std::to_string(fe.sequence()) + ": " +
            error + " (" + std::to_string(n) + " skipped so far)");
      }
      return;
    }
    m.flow_id = fe.flow_id();
    m.sequence = fe.sequence();
    switch (fe.variant()) {
      case common::FLOW_VARIANT_SANITIZED:
        m.variant = Variant::kSanitized;
        break;
      case common::FLOW_VARIANT_RAW:
        m.variant = Variant::kRaw;
        break;
      default:
        m.variant = Variant::kUnspecified;
        break;
    }
    m.captured_at_unix_nano = fe.captured_at_unix_nano();
    m.traceparent = fe.traceparent();
    m.scheme = fe.scheme();
    if (fe.raw_body_truncated()) m.body_truncated = true;
    if (fe.raw_body_bytes() != 0) {
      m.raw_body_bytes = fe.raw_body_bytes();
    } else if (!m.body_truncated) {
      m.raw_body_bytes = m.body.size();
    }
    const Handler& handler = is_request ? on_request : on_response;
    if (!handler) return;
    // A throwing callback must not take the connection down with it.
    try {
      handler(m);
    } catch (const std::exception& e) {
      Log(std::string("callback threw: ") + e.what());
    } catch (...) {
      Log("callback threw a non-standard exception");
    }
  }

  // One connection attempt: grant, stream, hello, welcome, events until the call ends.
  Status RunOnce(bool* got_welcome) {
    pb::PluginCapabilityRequest request;
    request.set_auth_token(options.token);
    request.set_plugin_name(options.name);
    for (const std::string& c : options.capabilities) request.add_capabilities(c);
    pb::PluginCapabilityGrant grant;
    {
      grpc::ClientContext gctx;
      gctx.set_deadline(std::chrono::system_clock::now() +
                        kGrantDeadline);  // gRPC wants system_clock
      {
        std::lock_guard lock(write_mu);
        if (stopping) return {};
        ctx = &gctx;
      }
      const grpc::Status gs = stub->GrantCapabilities(&gctx, request, &grant);
      {
        std::lock_guard lock(write_mu);
        ctx = nullptr;
      }
      if (stopping) return {};
      if (!gs.ok()) return FromGrpc(gs, "GrantCapabilities");
    }

    grpc::ClientContext sctx;
    if (!options.traceparent.empty()) sctx.AddMetadata("traceparent", options.traceparent);
    {
      std::lock_guard lock(write_mu);
      if (stopping) return {};
      ctx = &sctx;
    }
    std::unique_ptr<Stream> s = stub->EventStream(&sctx);
    {
      std::lock_guard lock(stop_mu);
      stream_ended = false;
      welcomed = false;
    }
    {
      std::lock_guard lock(write_mu);
      pb::PluginEvent hello_event;
      pb::PluginHello* hello = hello_event.mutable_hello();
      hello->set_auth_token(options.token);
      hello->set_plugin_name(options.name);
      hello->set_pid(static_cast<int32_t>(::getpid()));
      for (const std::string& sub : options.subscriptions) hello->add_subscriptions(sub);
      for (const std::string& c : options.capabilities) hello->add_capabilities(c);
      hello->set_capability_token(grant.capability_token());
      // A failed write shows up as the call's status below.
      if (s->Write(hello_event)) {
        stream = s.get();
        writes_done = false;
      }
    }

    // Watchdog: cancels the call when no welcome comes in time, or when the daemon does not end
    // the call within stop_grace of a Stop. Cancelling unblocks the Read below.
    bool welcome_timed_out = false;
    std::thread watchdog([&] {
      std::unique_lock lock(stop_mu);
      const auto welcome_deadline = Clock::now() + options.welcome_timeout;
      if (!stop_cv.wait_until(lock, welcome_deadline,
                              [&] { return stream_ended || welcomed || stop; })) {
        welcome_timed_out = true;
        sctx.TryCancel();
        return;
      }
      stop_cv.wait(lock, [&] { return stream_ended || stop; });
      if (stream_ended) return;
      if (!stop_cv.wait_for(lock, options.stop_grace, [&] { return stream_ended; })) {
        sctx.TryCancel();
      }
    });

    pb::HostEvent event;
    if (s->Read(&event)) {
      // The welcome: only core_version.
      {
        std::lock_guard lock(write_mu);
        connected = stream != nullptr && !writes_done;
      }
      {
        std::lock_guard lock(stop_mu);
        welcomed = true;
      }
      stop_cv.notify_all();
      *got_welcome = true;
      connections.fetch_add(1, std::memory_order_relaxed);
      Log("connected to 0xgend " + event.core_version());
      // The daemon's goodbye (it is stopping this plugin): leave as if Stop() had been called,
      // and do not reconnect.
      auto handle = [&](const pb::HostEvent& e) {
        if (e.has_flow_event()) Dispatch(e.flow_event());
        if (e.has_goodbye()) {
          Log("the daemon asked this plugin to stop: " + e.goodbye().reason());
          RequestStop();
        }
      };
      handle(event);
      while (s->Read(&event)) handle(event);
    }
    {
      std::lock_guard lock(stop_mu);
      stream_ended = true;
    }
    stop_cv.notify_all();
    watchdog.join();
    {
      std::lock_guard lock(write_mu);
      stream = nullptr;
      ctx = nullptr;
      connected = false;
    }
    const grpc::Status st = s->Finish();
    if (stopping) return {};
    if (welcome_timed_out) {
      return Status(StatusCode::kDeadlineExceeded,
                    "no welcome from the bus within " +
                        std::to_string(options.welcome_timeout.count()) + " ms");
    }
    if (st.ok()) {
      // Only a goodbye earns OK; the daemon ending the call otherwise is a lost connection.
      return Status(StatusCode::kUnavailable, "the bus ended the stream");
    }
    return FromGrpc(st, *got_welcome ? "EventStream" : "EventStream (before the welcome)");
  }
};

Plugin::Plugin(PluginOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}
Plugin::~Plugin() = default;

void Plugin::OnRequest(Handler handler) { impl_->on_request = std::move(handler); }
void Plugin::OnResponse(Handler handler) { impl_->on_response = std::move(handler); }
const PluginOptions& Plugin::options() const { return impl_->options; }

Status Plugin::Run() {
  Impl& p = *impl_;
  if (!p.resolved) {
    if (Status s = ResolveOptions(&p.options); !s.ok()) return s;
    p.resolved = true;
  }
  if (!p.stub) {
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(kMaxReceiveBytes);
    // gRPC's own reconnect backoff (1 s..120 s by default) would make a fail-fast call fail
    // without trying; keep it within ours.
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS,
                static_cast<int>(p.options.backoff_min.count()));
    args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, static_cast<int>(p.options.backoff_min.count()));
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, static_cast<int>(p.options.backoff_max.count()));
    p.stub = pb::PluginBus::NewStub(
        grpc::CreateCustomChannel(p.options.addr, grpc::InsecureChannelCredentials(), args));
  }
  int attempt = 0;
  while (!p.stopping) {
    bool welcomed = false;
    const Status s = p.RunOnce(&welcomed);
    if (p.stopping) break;
    if (!IsTemporary(s.code())) {
      return Status(s.code(), "the plugin bus at " + p.options.addr + " refused plugin \"" +
                                  p.options.name + "\": " + s.ToString());
    }
    if (welcomed) attempt = 0;
    const std::chrono::milliseconds delay = p.Backoff(attempt++);
    p.Log((welcomed ? "connection lost (" : "cannot connect (") + s.ToString() + "); retrying in " +
          std::to_string(delay.count()) + " ms");
    if (p.SleepUnlessStopped(delay)) break;
  }
  return {};
}

void Plugin::Stop() { impl_->RequestStop(); }

bool Plugin::stop_requested() const { return impl_->stopping; }

bool Plugin::WaitForStop(std::chrono::milliseconds timeout) const {
  std::unique_lock lock(impl_->stop_mu);
  return impl_->stop_cv.wait_for(lock, timeout, [&] { return impl_->stop; });
}

bool Plugin::Emit(const Finding& finding, const HttpMessage* cause) {
  Impl& p = *impl_;
  pb::PluginEvent event;
  common::Finding* f = event.mutable_finding();
  f->set_type(finding.type);
  f->set_message(finding.message);
  f->set_severity(static_cast<common::Severity>(static_cast<int>(finding.severity)));
  f->set_target(finding.target);
  f->set_evidence(finding.evidence);
  for (const auto& [key, value] : finding.metadata) (*f->mutable_metadata())[key] = value;
  if (cause != nullptr) {
    f->set_flow_id(cause->flow_id);
    event.set_traceparent(cause->traceparent);
  }
  bool ok = false;
  {
    std::lock_guard lock(p.write_mu);
    if (p.stream != nullptr && p.connected && !p.writes_done) ok = p.stream->Write(event);
  }
  (ok ? p.findings_sent : p.findings_failed).fetch_add(1, std::memory_order_relaxed);
  return ok;
}

bool Plugin::connected() const {
  std::lock_guard lock(impl_->write_mu);
  return impl_->connected;
}

PluginCounters Plugin::counters() const {
  PluginCounters c;
  c.events_received = impl_->events_received.load(std::memory_order_relaxed);
  c.parse_errors = impl_->parse_errors.load(std::memory_order_relaxed);
  c.findings_sent = impl_->findings_sent.load(std::memory_order_relaxed);
  c.findings_failed = impl_->findings_failed.load(std::memory_order_relaxed);
  c.connections = impl_->connections.load(std::memory_order_relaxed);
  return c;
}

void BlockStopSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

int RunMain(Plugin& plugin) {
  BlockStopSignals();
  std::atomic<bool> done{false};
  std::thread signals([&] {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    int received = 0;
    for (;;) {
      int sig = 0;
      if (sigwait(&set, &sig) != 0) continue;
      if (done) return;  // Run has returned; this is the wake-up below
      if (++received == 1) {
        plugin.Stop();
      } else {
        static constexpr char kMsg[] = "second stop signal: exiting now\n";
        (void)!::write(STDERR_FILENO, kMsg, sizeof kMsg - 1);
        ::_exit(1);
      }
    }
  });
  const Status s = plugin.Run();
  done = true;
  pthread_kill(signals.native_handle(), SIGTERM);
  signals.join();
  if (!s.ok()) {
    const std::string name = plugin.options().name.empty() ? "plugin" : plugin.options().name;
    std::fprintf(stderr, "%s: %s\n", name.c_str(), s.ToString().c_str());
    return 1;
  }
  return 0;
}

}  // namespace oxg::sdk
