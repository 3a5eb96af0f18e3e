#include "bus/plugin_bus.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_set>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <grpcpp/support/proto_buffer_reader.h>

#include "bus/findings.h"
#include "bus/findings_store.h"
#include "bus/internal/finding_wire.h"
#include "bus/internal/plugin_event_wire.pb.h"
#include "bus/internal/rpc_metrics.h"
#include "common/ids.h"
#include "common/log.h"
#include "common/strings.h"
#include "oxg/plugin_bus.grpc.pb.h"
#include "telemetry/audit/audit.h"
#include "telemetry/metrics/metrics.h"

namespace oxg::bus {
namespace {

namespace pb = ::oxg::plugin_bus;
namespace wire = ::oxg::bus::internal;
using metrics::Counter;
using metrics::Gauge;
using metrics::Histogram;

constexpr std::string_view kComponent = "plugin_bus";
constexpr size_t kSubscriptions = 4;
constexpr size_t kMaxPluginName = 64;

// Indexed by Subscription: the first two carry the sanitized variant, the others the raw one.
constexpr std::string_view kEventLabel[kSubscriptions] = {"flow_request", "flow_response",
                                                          "flow_request_raw", "flow_response_raw"};
bool IsRaw(size_t sub) { return sub >= 2; }
std::string_view VariantName(size_t sub) { return IsRaw(sub) ? "raw" : "sanitized"; }

enum class DropReason { kQueueFull, kDisconnected, kTooLarge };
constexpr std::string_view kDropReasons[] = {"queue_full", "disconnected", "too_large"};

bool ValidPluginName(std::string_view name) {
  if (name.empty() || name.size() > kMaxPluginName) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '.' || c == '_' || c == '-';
  });
}

std::string_view RedeemErrorText(CapabilityTokens::RedeemError e) {
  switch (e) {
    case CapabilityTokens::RedeemError::kExpired: return "capability token expired";
    case CapabilityTokens::RedeemError::kAlreadyUsed: return "capability token already used";
    case CapabilityTokens::RedeemError::kWrongPlugin:
      return "capability token was issued for another plugin";
    case CapabilityTokens::RedeemError::kUnknown: break;
  }
  return "unknown capability token";
}

grpc::ByteBuffer Serialize(const google::protobuf::MessageLite& message) {
  const size_t size = message.ByteSizeLong();
  grpc::Slice slice(size);
  message.SerializeWithCachedSizesToArray(const_cast<uint8_t*>(slice.begin()));
  return grpc::ByteBuffer(&slice, 1);
}

tracing::SpanContext ParentFromMetadata(const grpc::CallbackServerContext& ctx) {
  tracing::SpanContext parent;
  const auto& md = ctx.client_metadata();
  if (auto it = md.find("traceparent"); it != md.end()) {
    if (!tracing::ParseTraceparent(std::string_view(it->second.data(), it->second.size()),
                                   &parent)) {
      parent = {};
    }
  }
  return parent;
}

// The bus's metric families (contract §4), declared once.
struct BusStats {
  explicit BusStats(metrics::Registry& r)
      : event_duration(r.AddHistogram("oxg_plugin_event_duration_seconds",
                                      "Time spent handling a plugin-sent event.",
                                      {"plugin", "event"}, metrics::DefaultLatencyBuckets(),
                                      /*exemplars=*/true)),
        queue_length(r.AddGauge("oxg_plugin_queue_length",
                                "Events waiting in each plugin's outbound queue.", {"plugin"})),
        queue_capacity(r.AddGauge("oxg_plugin_queue_capacity",
                                  "Capacity of each plugin's outbound queue.", {"plugin"})),
        queue_dropped(r.AddCounter("oxg_plugin_queue_dropped_total",
                                   "Events dropped because the plugin's queue was full.",
                                   {"plugin", "event"})),
        event_failures(r.AddCounter("oxg_plugin_event_failures_total",
                                    "Plugin-sent events rejected in validation or delivery.",
                                    {"plugin", "event"})),
        plugin_errors(r.AddCounter("oxg_plugin_errors_total",
                                   "Plugin errors: refused handshakes, broken streams.",
                                   {"plugin", "reason"})),
        active_plugins(r.AddGauge("oxg_active_plugins", "Connected plugins.").WithLabels({})) {
    auto& delivered = r.AddCounter("oxg_flow_events_total",
                                   "Flow events delivered to plugin queues.",
                                   {"subscription", "variant"});
    auto& dropped = r.AddCounter("oxg_flow_events_dropped_total",
                                 "Flow events not delivered to a subscribed plugin.",
                                 {"subscription", "reason"});
    auto& dispatch = r.AddHistogram("oxg_flow_dispatch_seconds",
                                    "Latency of sanitized/raw flow fan-out to plugin queues.",
                                    {"subscription", "variant"}, metrics::DefaultLatencyBuckets(),
                                    /*exemplars=*/true);
    for (size_t sub = 0; sub < kSubscriptions; ++sub) {
      const std::string_view name = SubscriptionName(static_cast<Subscription>(sub));
      flow_events[sub] = &delivered.WithLabels({name, VariantName(sub)});
      flow_dispatch[sub] = &dispatch.WithLabels({name, VariantName(sub)});
      for (size_t reason = 0; reason < std::size(kDropReasons); ++reason) {
        flow_dropped[sub][reason] = &dropped.WithLabels({name, kDropReasons[reason]});
      }
    }
  }

  void Dropped(size_t sub, DropReason reason, uint64_t n = 1) {
    if (n != 0) flow_dropped[sub][static_cast<size_t>(reason)]->Inc(n);
  }

  metrics::Family<Histogram>& event_duration;
  metrics::Family<Gauge>& queue_length;
  metrics::Family<Gauge>& queue_capacity;
  metrics::Family<Counter>& queue_dropped;
  metrics::Family<Counter>& event_failures;
  metrics::Family<Counter>& plugin_errors;
  Gauge& active_plugins;
  Counter* flow_events[kSubscriptions];
  Histogram* flow_dispatch[kSubscriptions];
  Counter* flow_dropped[kSubscriptions][std::size(kDropReasons)];
};

// One message waiting for a plugin's stream.
struct Outgoing {
  enum class Kind : uint8_t { kWelcome, kFlow, kGoodbye };
  Kind kind = Kind::kFlow;
  uint8_t sub = 0;
  size_t bytes = 0;
  grpc::ByteBuffer payload;  // shares its slices with the other plugins' copies
  tracing::Span span;        // plugin_bus.dispatch_event, recording only when sampled
};

using Service = pb::PluginBus::WithRawCallbackMethod_EventStream<
    pb::PluginBus::WithCallbackMethod_GrantCapabilities<pb::PluginBus::Service>>;

}  // namespace

class Session;

class PluginBus::Impl final : public Service {
 public:
  Impl(PluginBusOptions options, PluginBusDeps deps)
      : options_(std::move(options)),
        deps_(deps),
        tracer_(deps.tracer != nullptr ? *deps.tracer : tracing::Tracer::Noop()),
        clock_(deps.clock != nullptr ? *deps.clock : Clock::Real()),
        rpc_metrics_(*deps.registry),
        stats_(*deps.registry),
        tokens_(clock_, CapabilityTokens::Options{.ttl = options_.capability_ttl}),
        routing_(std::make_shared<Routing>()) {}

  absl::Status Listen();
  void Publish(const FlowMessage& message);
  void Stop(std::chrono::milliseconds grace);
  bool Goodbye(std::string_view plugin, std::string_view reason);

  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* EventStream(
      grpc::CallbackServerContext* context) override;
  grpc::ServerUnaryReactor* GrantCapabilities(grpc::CallbackServerContext* context,
                                              const pb::PluginCapabilityRequest* request,
                                              pb::PluginCapabilityGrant* grant) override;

  // Session bookkeeping.
  enum class ClaimResult { kOk, kDuplicate, kTooMany, kStopping };
  ClaimResult Claim(const std::shared_ptr<Session>& session, const std::string& name);
  void Reroute();
  bool stopping() const { return stopped_.load(std::memory_order_relaxed); }
  void Forget(Session* session, const std::string& name, bool claimed);

  std::string_view PluginLabel(std::string_view name) const {
    return options_.manifests.contains(std::string(name)) ? name : std::string_view("unknown");
  }
  void Audit(audit::EventType type, audit::Decision decision, std::string_view plugin,
             std::string reason, std::vector<std::pair<std::string, std::string>> metadata = {});
  // A refused handshake or grant. Anyone who can reach the port can cause these, so they are
  // rate-limited (a burst of 200, then 50 a second); the counters still count every one, and
  // the next line written says how many were left out ("suppressed").
  void AuditRefusal(audit::EventType type, std::string_view plugin, std::string reason,
                    std::vector<std::pair<std::string, std::string>> metadata);

  const PluginBusOptions options_;
  const PluginBusDeps deps_;
  tracing::Tracer& tracer_;
  const Clock& clock_;
  internal::RpcMetrics rpc_metrics_;
  BusStats stats_;
  CapabilityTokens tokens_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;

 private:
  struct Routing {
    std::array<std::vector<std::shared_ptr<Session>>, kSubscriptions> by_sub;
  };
  std::shared_ptr<const Routing> LoadRouting() {
    std::lock_guard lock(routing_mu_);
    return routing_;
  }
  void DispatchVariant(const FlowMessage& message, size_t sub,
                       const std::vector<std::shared_ptr<Session>>& sessions);
  void Housekeeping();

  mutable std::mutex mu_;  // sessions
  std::unordered_map<std::string, std::shared_ptr<Session>> active_;
  std::unordered_map<Session*, std::shared_ptr<Session>> pending_;  // waiting for their hello
  bool stopping_ = false;
  std::condition_variable stop_cv_;
  std::thread housekeeping_;

  std::mutex routing_mu_;
  std::shared_ptr<const Routing> routing_;

  std::mutex refusal_mu_;  // the refusal audit lines' token bucket
  double refusal_tokens_ = 200;
  std::optional<Clock::MonoTime> refusal_last_;
  uint64_t refusals_suppressed_ = 0;
  std::atomic<bool> stopped_{false};
};

// One EventStream. Owned by itself (self_) until gRPC calls OnDone; the routing table and the
// housekeeping set hold extra references, so a Publish racing with the end of the stream still
// finds a live object whose `closing_` flag refuses the event.
//
// Writes: at most one is in flight. Whoever moves `writing_` from false to true (a Publish
// finding the stream idle, or OnWriteDone continuing with the next event) is the only caller of
// StartWrite/Finish until it hands the role back, so the two never race.
class Session final : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>,
                      public std::enable_shared_from_this<Session> {
 public:
  enum class Offer { kQueued, kFull, kClosed };

  Session(PluginBus::Impl& bus, grpc::CallbackServerContext* context)
      : bus_(bus), context_(context), opened_(std::chrono::steady_clock::now()) {}

  void Begin(std::shared_ptr<Session> self) {
    self_ = std::move(self);
    stream_span_ = bus_.tracer_.StartSpan("plugin_bus.EventStream", tracing::SpanKind::kServer,
                                          ParentFromMetadata(*context_));
    stream_span_.SetAttribute("rpc.system", "grpc")
        .SetAttribute("rpc.service", "oxg.plugin_bus.PluginBus")
        .SetAttribute("rpc.method", "EventStream");
    stream_ctx_ = stream_span_.context();
    StartRead(&in_);
  }

  bool awaiting_hello() const { return phase_.load() == Phase::kAwaitHello; }
  bool welcomed() const { return phase_.load() == Phase::kActive; }
  bool subscribed(size_t sub) const { return (subscriptions_ & (1u << sub)) != 0; }
  const std::string& name() const { return name_; }
  std::chrono::steady_clock::time_point opened() const { return opened_; }

  // `force`: past a full queue (the goodbye; one per session).
  Offer Enqueue(Outgoing&& out, bool force = false) {
    std::unique_lock lock(mu_);
    if (closing_) return Offer::kClosed;
    if (writing_) {
      if (!force && (queue_.size() >= bus_.options_.queue_capacity ||
                     (queued_bytes_ + out.bytes > bus_.options_.queue_max_bytes &&
                      !queue_.empty()))) {
        return Offer::kFull;
      }
      queued_bytes_ += out.bytes;
      queue_.push_back(std::move(out));
      queued_.store(queue_.size(), std::memory_order_relaxed);
      if (queue_length_) queue_length_->Set(static_cast<double>(queue_.size()));
      return Offer::kQueued;
    }
    writing_ = true;
    in_flight_ = std::move(out);
    lock.unlock();
    StartWrite(&in_flight_.payload);
    return Offer::kQueued;
  }

  // Ends the call with `status` once the write in flight (if any) completes; queued events are
  // dropped and counted. Only the first call counts.
  void Close(grpc::Status status) {
    std::unique_lock lock(mu_);
    if (finish_wanted_) return;
    finish_wanted_ = true;
    closing_ = true;
    final_status_ = std::move(status);
    DropQueuedLocked();
    closing_since_ = std::chrono::steady_clock::now();
    if (writing_) return;  // OnWriteDone finishes
    writing_ = true;
    finish_called_ = true;
    grpc::Status s = final_status_;
    lock.unlock();
    FinishNow(std::move(s));
  }

  void Refuse(grpc::StatusCode code, std::string message, std::string_view reason,
              audit::EventType audit_type = audit::EventType::kRpcDenied) {
    phase_ = Phase::kRefused;
    const std::string_view label = bus_.PluginLabel(hello_name_);
    bus_.stats_.plugin_errors.WithLabels({label, reason}).Inc();
    bus_.AuditRefusal(audit_type, label == "unknown" ? "" : label, message,
                      {{"method", "EventStream"}, {"code", internal::StatusCodeName(code)}});
    log::Warn(kComponent, Cat("EventStream refused",
                              label == "unknown" ? std::string() : Cat(" for ", label), ": ",
                              message));
    stream_span_.SetStatus(tracing::StatusCode::kError, message);
    Close(grpc::Status(code, std::move(message)));
  }

  // The hello did not come in time (housekeeping thread). Touches no read-side state: the read
  // callback may be running at the same moment.
  void TimeOut() {
    Phase expected = Phase::kAwaitHello;
    if (!phase_.compare_exchange_strong(expected, Phase::kRefused)) return;
    Close(grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "no hello within the time allowed"));
    bus_.stats_.plugin_errors.WithLabels({"unknown", "no_hello"}).Inc();
    bus_.AuditRefusal(audit::EventType::kRpcDenied, "", "no hello within the time allowed",
                      {{"method", "EventStream"}, {"code", "DEADLINE_EXCEEDED"}});
  }

  void OnReadDone(bool ok) override {
    if (closing()) return;  // refused, timed out or shutting down: nothing more to read
    if (phase_.load() == Phase::kAwaitHello) {
      // The first message: take it from the housekeeping thread's timeout, or leave.
      Phase expected = Phase::kAwaitHello;
      if (!phase_.compare_exchange_strong(expected, Phase::kAuthenticating)) return;
      if (!ok) {
        Refuse(grpc::StatusCode::FAILED_PRECONDITION, "the stream ended before a hello",
               "no_hello");
        return;
      }
      wire::PluginEventWire event;
      const bool parsed = Parse(&event);
      if (!parsed) {
        Refuse(grpc::StatusCode::INVALID_ARGUMENT, "malformed message", "no_hello");
      } else if (event.event_case() != wire::PluginEventWire::kHello) {
        Refuse(grpc::StatusCode::FAILED_PRECONDITION, "the first message must be hello",
               "no_hello");
      } else {
        HandleHello(event.hello());
      }
      if (phase_.load() == Phase::kActive) ContinueReading();
      return;
    }
    if (phase_.load() != Phase::kActive) return;
    if (!ok) {
      // The plugin closed its side (after a goodbye, or abruptly) or the call is gone.
      Close(grpc::Status::OK);
      return;
    }
    wire::PluginEventWire event;
    const bool parsed = Parse(&event);
    if (!parsed) {
      Failure("malformed", "a message that is not a PluginEvent");
    } else {
      switch (event.event_case()) {
        case wire::PluginEventWire::kFinding:
          HandleFinding(event.finding(), event.traceparent());
          break;
        case wire::PluginEventWire::kGoodbye:
          goodbye_ = true;
          leave_reason_ = Cat("goodbye: ", event.goodbye().reason().substr(0, 200));
          Close(grpc::Status::OK);
          return;
        case wire::PluginEventWire::kHello:
          Failure("hello", "a second hello");
          break;
        case wire::PluginEventWire::EVENT_NOT_SET:
          Failure("unknown", "an event this daemon does not know");
          break;
      }
    }
    ContinueReading();
  }

  bool Parse(wire::PluginEventWire* event) {
    bool parsed = false;
    {
      grpc::ProtoBufferReader reader(&in_);
      parsed = event->ParseFromZeroCopyStream(&reader);
    }
    in_.Clear();
    return parsed;
  }

  // The next read, unless the call is being finished. Under mu_ so it cannot slip in after
  // Finish (reactions are never run inline by gRPC, so holding the lock here is safe).
  void ContinueReading() {
    std::lock_guard lock(mu_);
    if (!finish_called_) StartRead(&in_);
  }

  void OnWriteDone(bool ok) override {
    std::unique_lock lock(mu_);
    Outgoing done = std::move(in_flight_);
    if (!ok) {
      // The stream is broken: the event in flight and everything queued never arrive, and the
      // call is finished now (nothing else is coming to finish it).
      closing_ = true;
      if (!finish_wanted_) {
        finish_wanted_ = true;
        final_status_ = grpc::Status::CANCELLED;
      }
      if (done.kind == Outgoing::Kind::kFlow) {
        bus_.stats_.Dropped(done.sub, DropReason::kDisconnected);
        dropped_.fetch_add(1, std::memory_order_relaxed);
      }
    } else if (done.kind == Outgoing::Kind::kFlow) {
      delivered_.fetch_add(1, std::memory_order_relaxed);
    }
    if (ok) {
      done.span.SetStatus(tracing::StatusCode::kOk);
    } else {
      done.span.SetStatus(tracing::StatusCode::kError, "stream broken");
    }
    if (closing_) {
      DropQueuedLocked();
      if (finish_wanted_) {
        finish_called_ = true;
        grpc::Status s = final_status_;
        lock.unlock();
        done.span.End();
        FinishNow(std::move(s));
        return;
      }
      writing_ = false;
      return;
    }
    if (!queue_.empty()) {
      in_flight_ = std::move(queue_.front());
      queue_.pop_front();
      queued_.store(queue_.size(), std::memory_order_relaxed);
      queued_bytes_ -= in_flight_.bytes;
      if (queue_length_) queue_length_->Set(static_cast<double>(queue_.size()));
      lock.unlock();
      done.span.End();
      StartWrite(&in_flight_.payload);
      return;
    }
    writing_ = false;
  }

  void OnCancel() override { Close(grpc::Status::CANCELLED); }

  void OnDone() override {
    {
      std::lock_guard lock(mu_);
      done_ = true;
    }
    const bool was_active = welcomed();
    if (was_active) {
      // Only now, with every operation finished, does IsCancelled() tell a plugin that vanished
      // (or sent a message over the size limit, which gRPC refuses by cancelling the call) from
      // one that closed its side: the read fails the same way in both cases, and the
      // cancellation may be reported before or after it.
      std::string reason;
      if (goodbye_) {
        reason = leave_reason_;
      } else if (context_->IsCancelled() && !bus_.stopping()) {
        bus_.stats_.plugin_errors.WithLabels({name_, "stream_recv"}).Inc();
        reason = Cat("connection lost (cancelled, or a message over ",
                     bus_.options_.max_receive_bytes, " bytes)");
      } else {
        std::lock_guard lock(mu_);
        reason = final_status_.ok() ? "closed without goodbye"
                                    : Cat("ended by the daemon: ", final_status_.error_message());
      }
      bus_.Audit(audit::EventType::kPluginDisconnect, audit::Decision::kInfo, name_, reason,
                 {{"delivered", Cat(delivered_.load())}, {"dropped", Cat(dropped_.load())}});
      log::Info(kComponent, Cat("plugin ", name_, " disconnected (", reason, ")"));
      // After the audit line (a reader seeing the gauge drop finds it written), before Forget:
      // once forgotten, a reconnecting plugin of the same name may create the series anew.
      bus_.stats_.active_plugins.Dec();
      bus_.stats_.queue_length.Remove({name_});
      bus_.stats_.queue_capacity.Remove({name_});
    }
    bus_.Forget(this, name_, claimed_);
    {
      std::lock_guard lock(mu_);
      if (final_status_.ok() && !context_->IsCancelled()) {
        stream_span_.SetStatus(tracing::StatusCode::kOk);
      } else if (final_status_.ok()) {
        stream_span_.SetStatus(tracing::StatusCode::kError, "cancelled");
      }  // refusals set their own ERROR status
    }
    stream_span_.End();
    // Last: may destroy this object.
    std::shared_ptr<Session> self = std::move(self_);
  }

  // A stream that has been closing for `grace` with a write still in flight belongs to a plugin
  // that stopped reading: its close would wait for ever (and its name stay taken). Cancel it.
  void CancelIfStuck(std::chrono::steady_clock::time_point now,
                     std::chrono::steady_clock::duration grace) {
    std::lock_guard lock(mu_);
    if (done_ || !finish_wanted_ || finish_called_ || now - closing_since_ < grace) return;
    context_->TryCancel();
  }

  // Refused before its hello because too many streams are waiting for theirs.
  void TooMany() {
    Phase expected = Phase::kAwaitHello;
    if (!phase_.compare_exchange_strong(expected, Phase::kRefused)) return;
    Close(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                       "too many streams waiting for their hello"));
    bus_.stats_.plugin_errors.WithLabels({"unknown", "limit"}).Inc();
  }

  // A lock-free hint for the publisher: false when the queue was full a moment ago. Used only
  // to skip building an event nobody can take; Enqueue decides for real.
  bool MayAccept() const {
    return queued_.load(std::memory_order_relaxed) < bus_.options_.queue_capacity;
  }

  void SendGoodbye(std::string_view reason) {
    pb::HostEvent event;
    event.set_core_version(bus_.options_.core_version);
    event.mutable_goodbye()->set_reason(std::string(reason.substr(0, 200)));
    Outgoing out;
    out.kind = Outgoing::Kind::kGoodbye;
    out.payload = Serialize(event);
    out.bytes = out.payload.Length();
    Enqueue(std::move(out), /*force=*/true);
  }

  void CountClosedDrop() { dropped_.fetch_add(1, std::memory_order_relaxed); }

  void CountDrop(size_t sub) {
    dropped_.fetch_add(1, std::memory_order_relaxed);
    if (queue_dropped_[sub]) queue_dropped_[sub]->Inc();
  }

 private:
  // kAwaitHello -> kAuthenticating (the read callback owns the hello) -> kActive or kRefused;
  // kAwaitHello -> kRefused (the housekeeping thread timed it out). Each move out of kAwaitHello
  // is a compare-exchange, so the hello and the timeout cannot both win.
  enum class Phase : uint8_t { kAwaitHello, kAuthenticating, kActive, kRefused };

  bool closing() {
    std::lock_guard lock(mu_);
    return closing_;
  }

  void FinishNow(grpc::Status status) {
    // The interceptor observes oxg_rpc_duration_seconds on this thread: give it the stream's
    // span as exemplar.
    tracing::ScopedActivation active(stream_ctx_);
    Finish(std::move(status));
  }

  void DropQueuedLocked() {
    for (Outgoing& out : queue_) {
      out.span.SetStatus(tracing::StatusCode::kError, "dropped: the plugin left");
      if (out.kind == Outgoing::Kind::kFlow) {
        bus_.stats_.Dropped(out.sub, DropReason::kDisconnected);
        dropped_.fetch_add(1, std::memory_order_relaxed);
      }
    }
    queue_.clear();
    queued_.store(0, std::memory_order_relaxed);
    queued_bytes_ = 0;
    if (queue_length_) queue_length_->Set(0);
  }

  void Failure(std::string_view event, std::string_view what) {
    bus_.stats_.event_failures.WithLabels({name_, event}).Inc();
    // One audit line per stream and kind, so a flood cannot fill the audit log.
    if (!audited_failure_.insert(std::string(event)).second) return;
    bus_.Audit(audit::EventType::kRpcDenied, audit::Decision::kDeny, name_,
               Cat("ignored ", what, " (further ones are only counted)"), {{"event", std::string(event)}});
  }

  void HandleHello(const wire::HelloWire& hello) {
    hello_name_ = hello.plugin_name();
    tracing::Span auth =
        bus_.tracer_.StartSpan("plugin_bus.authenticate", tracing::SpanKind::kInternal, stream_ctx_);
    auto refuse = [&](grpc::StatusCode code, std::string message, std::string_view reason,
                      audit::EventType type = audit::EventType::kRpcDenied) {
      auth.SetAttribute("outcome", reason).SetStatus(tracing::StatusCode::kError, message);
      phase_ = Phase::kRefused;
      Refuse(code, std::move(message), reason, type);
    };
    if (!ConstantTimeEquals(hello.auth_token(), bus_.options_.token)) {
      return refuse(grpc::StatusCode::UNAUTHENTICATED, "invalid auth token", "auth_token");
    }
    if (!ValidPluginName(hello_name_)) {
      return refuse(grpc::StatusCode::INVALID_ARGUMENT,
                    hello_name_.empty() ? "plugin_name: empty"
                                        : "plugin_name: must be 1-64 bytes of [A-Za-z0-9._-]",
                    "plugin_name");
    }
    if (!bus_.options_.manifests.contains(hello_name_)) {
      return refuse(grpc::StatusCode::PERMISSION_DENIED,
                    Cat("no manifest in --plugins-dir declares plugin ", hello_name_),
                    "no_manifest");
    }
    const CapabilityTokens::Redeemed redeemed =
        bus_.tokens_.Redeem(hello.capability_token(), hello_name_);
    if (!redeemed.granted.has_value()) {
      return refuse(grpc::StatusCode::PERMISSION_DENIED,
                    std::string(RedeemErrorText(redeemed.error)), "capability_token");
    }
    std::vector<std::string> names(hello.capabilities().begin(), hello.capabilities().end());
    std::string unknown;
    const std::optional<CapabilitySet> asked = ParseCapabilities(names, &unknown);
    if (!asked.has_value()) {
      return refuse(grpc::StatusCode::INVALID_ARGUMENT,
                    Cat("unknown capability ", unknown.substr(0, 64)), "capability_validation");
    }
    if (!asked->IsSubsetOf(*redeemed.granted)) {
      std::string extra;
      for (std::string_view n : asked->Names()) {
        if (!redeemed.granted->Has(*ParseCapability(n))) extra = std::string(n);
      }
      return refuse(grpc::StatusCode::PERMISSION_DENIED,
                    Cat("capability escalation: ", extra, " was not granted"),
                    "capability_escalation", audit::EventType::kCapabilityDenied);
    }
    const CapabilitySet caps = asked->empty() ? *redeemed.granted : *asked;
    uint32_t subs = 0;
    for (const std::string& s : hello.subscriptions()) {
      const std::optional<Subscription> sub = ParseSubscription(s);
      if (!sub.has_value()) {
        return refuse(grpc::StatusCode::INVALID_ARGUMENT,
                      Cat("unknown subscription ", s.substr(0, 64)), "subscription");
      }
      if (!RequiredCapabilities(*sub).IsSubsetOf(caps)) {
        std::string needs;
        for (std::string_view n : RequiredCapabilities(*sub).Names()) {
          if (!caps.Has(*ParseCapability(n))) needs = std::string(n);
        }
        return refuse(grpc::StatusCode::PERMISSION_DENIED,
                      Cat(SubscriptionName(*sub), " needs ", needs), "subscription",
                      audit::EventType::kCapabilityDenied);
      }
      subs |= 1u << static_cast<unsigned>(*sub);
    }

    switch (bus_.Claim(shared_from_this(), hello_name_)) {
      case PluginBus::Impl::ClaimResult::kOk: break;
      case PluginBus::Impl::ClaimResult::kDuplicate:
        return refuse(grpc::StatusCode::ALREADY_EXISTS,
                      Cat("plugin ", hello_name_, " is already connected"), "duplicate");
      case PluginBus::Impl::ClaimResult::kTooMany:
        return refuse(grpc::StatusCode::RESOURCE_EXHAUSTED,
                      Cat("too many plugins connected (", bus_.options_.max_plugins, ")"), "limit");
      case PluginBus::Impl::ClaimResult::kStopping:
        return refuse(grpc::StatusCode::UNAVAILABLE, "daemon shutting down", "shutdown");
    }
    claimed_ = true;
    name_ = hello_name_;
    caps_ = caps;
    subscriptions_ = subs;
    auto& stats = bus_.stats_;
    queue_length_ = stats.queue_length.Shared({name_});
    queue_length_->Set(0);
    stats.queue_capacity.WithLabels({name_}).Set(static_cast<double>(bus_.options_.queue_capacity));
    for (size_t sub = 0; sub < kSubscriptions; ++sub) {
      if (subscribed(sub)) queue_dropped_[sub] = stats.queue_dropped.Shared({name_, kEventLabel[sub]});
    }
    finding_duration_ = stats.event_duration.Shared({name_, "finding"});
    stats.active_plugins.Inc();

    auth.SetAttribute("outcome", "ok").SetStatus(tracing::StatusCode::kOk);
    auth.End();
    stream_span_.SetAttribute("oxg.plugin.id", std::string_view(name_))
        .SetAttribute("oxg.plugin.pid", static_cast<int64_t>(hello.pid()));

    std::vector<std::pair<std::string, std::string>> md;
    std::string sub_names;
    for (size_t sub = 0; sub < kSubscriptions; ++sub) {
      if (!subscribed(sub)) continue;
      if (!sub_names.empty()) sub_names += ',';
      sub_names += SubscriptionName(static_cast<Subscription>(sub));
    }
    std::string cap_names;
    for (std::string_view n : caps.Names()) {
      if (!cap_names.empty()) cap_names += ',';
      cap_names += n;
    }
    md.emplace_back("pid", Cat(hello.pid()));
    md.emplace_back("capabilities", cap_names);
    md.emplace_back("subscriptions", sub_names);
    bus_.Audit(audit::EventType::kPluginLoad, audit::Decision::kAllow, name_, "plugin connected",
               std::move(md));
    log::Info(kComponent, Cat("plugin ", name_, " connected (pid ", hello.pid(), ", ",
                              sub_names.empty() ? "no subscriptions" : sub_names, ")"));

    // The welcome goes out before any flow event: the session joins the routing table after.
    pb::HostEvent welcome;
    welcome.set_core_version(bus_.options_.core_version);
    Outgoing out;
    out.kind = Outgoing::Kind::kWelcome;
    out.payload = Serialize(welcome);
    out.bytes = out.payload.Length();
    Enqueue(std::move(out));
    phase_ = Phase::kActive;
    bus_.Reroute();
  }

  void HandleFinding(const wire::FindingWire& f, const std::string& traceparent) {
    const auto start = std::chrono::steady_clock::now();
    tracing::SpanContext parent;
    const bool has_parent = tracing::ParseTraceparent(traceparent, &parent);
    tracing::Span span = bus_.tracer_.StartSpan(
        "plugin_bus.receive_event", tracing::SpanKind::kConsumer, has_parent ? parent : stream_ctx_);
    span.SetAttribute("oxg.event.type", "finding").SetAttribute("oxg.plugin.id", std::string_view(name_));
    tracing::ScopedActivation active(span.context());
    auto reject = [&](std::string why) {
      bus_.stats_.event_failures.WithLabels({name_, "finding"}).Inc();
      bus_.Audit(audit::EventType::kFindingRejected, audit::Decision::kDeny, name_, why);
      span.SetStatus(tracing::StatusCode::kError, why);
      log::Debug(kComponent, Cat("finding from ", name_, " rejected: ", why));
    };
    if (!caps_.Has(Capability::kEmitFindings)) {
      reject("CAP_EMIT_FINDINGS was not granted");
    } else {
      const FindingInput input = internal::FindingInputFromWire(f);
      const std::string trace_id = has_parent ? parent.trace_id.ToHex() : std::string();
      absl::StatusOr<Finding> finding = ValidateFinding(input, name_, trace_id, bus_.clock_);
      if (!finding.ok()) {
        reject(std::string(finding.status().message()));
      } else {
        internal::AttachFlowId(*finding, f.flow_id());
        std::vector<std::pair<std::string, std::string>> md = {
            {"id", finding->id}, {"type", finding->type},
            {"severity", std::string(SeverityName(finding->severity))}};
        if (bus_.deps_.findings != nullptr && !bus_.deps_.findings->Submit(*std::move(finding))) {
          reject("the findings store is full");
        } else {
          bus_.Audit(audit::EventType::kFindingReceived, audit::Decision::kAllow, name_,
                     "finding stored", std::move(md));
          span.SetStatus(tracing::StatusCode::kOk);
        }
      }
    }
    finding_duration_->Observe(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }

  PluginBus::Impl& bus_;
  grpc::CallbackServerContext* context_;
  const std::chrono::steady_clock::time_point opened_;
  std::shared_ptr<Session> self_;

  // Read side: touched only by the read callbacks (one read outstanding at a time) and OnDone.
  grpc::ByteBuffer in_;
  tracing::Span stream_span_;
  tracing::SpanContext stream_ctx_;
  std::string hello_name_;
  bool goodbye_ = false;
  bool claimed_ = false;
  std::string leave_reason_;
  std::unordered_set<std::string> audited_failure_;
  CapabilitySet caps_;
  std::shared_ptr<Histogram> finding_duration_;

  // Set once in HandleHello before the session is routed, read-only afterwards.
  std::atomic<Phase> phase_{Phase::kAwaitHello};
  std::string name_;
  uint32_t subscriptions_ = 0;
  std::shared_ptr<Gauge> queue_length_;
  std::shared_ptr<Counter> queue_dropped_[kSubscriptions];

  // Write side.
  std::mutex mu_;
  std::deque<Outgoing> queue_;
  std::atomic<size_t> queued_{0};  // queue_.size(), readable without the lock
  size_t queued_bytes_ = 0;
  Outgoing in_flight_;
  bool writing_ = false;
  bool closing_ = false;
  bool finish_wanted_ = false;
  bool finish_called_ = false;
  bool done_ = false;  // OnDone ran: context_ is gone
  std::chrono::steady_clock::time_point closing_since_;
  grpc::Status final_status_;
  std::atomic<uint64_t> delivered_{0};
  std::atomic<uint64_t> dropped_{0};
};

// ---- PluginBus::Impl ----------------------------------------------------------------------

void PluginBus::Impl::Audit(audit::EventType type, audit::Decision decision,
                            std::string_view plugin, std::string reason,
                            std::vector<std::pair<std::string, std::string>> metadata) {
  if (deps_.audit == nullptr) return;
  audit::AuditEvent event;
  event.component = std::string(kComponent);
  event.plugin_id = std::string(plugin);
  event.event_type = type;
  event.decision = decision;
  event.reason = std::move(reason);
  event.metadata = std::move(metadata);
  deps_.audit->Write(event);
}

void PluginBus::Impl::AuditRefusal(audit::EventType type, std::string_view plugin,
                                   std::string reason,
                                   std::vector<std::pair<std::string, std::string>> metadata) {
  constexpr double kBurst = 200, kPerSecond = 50;
  uint64_t suppressed = 0;
  {
    std::lock_guard lock(refusal_mu_);
    const Clock::MonoTime now = clock_.MonoNow();
    if (refusal_last_.has_value()) {
      refusal_tokens_ = std::min(
          kBurst, refusal_tokens_ +
                      kPerSecond * std::chrono::duration<double>(now - *refusal_last_).count());
    }
    refusal_last_ = now;
    if (refusal_tokens_ < 1) {
      ++refusals_suppressed_;
      return;
    }
    refusal_tokens_ -= 1;
    suppressed = std::exchange(refusals_suppressed_, 0);
  }
  if (suppressed > 0) metadata.emplace_back("suppressed", Cat(suppressed));
  Audit(type, audit::Decision::kDeny, plugin, std::move(reason), std::move(metadata));
}

absl::Status PluginBus::Impl::Listen() {
  grpc::ServerBuilder builder;
  const std::string address =
      options_.listen.host.find(':') != std::string::npos
          ? Cat("[", options_.listen.host, "]:", options_.listen.port)
          : Cat(options_.listen.host.empty() ? std::string("0.0.0.0") : options_.listen.host, ":",
                options_.listen.port);
  builder.AddListeningPort(address, grpc::InsecureServerCredentials(), &port_);
  builder.RegisterService(this);
  builder.SetMaxReceiveMessageSize(static_cast<int>(options_.max_receive_bytes));
  builder.SetMaxSendMessageSize(static_cast<int>(options_.max_event_bytes + (1 << 16)));
  // A plugin that vanished without closing its connection is noticed within a minute.
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 30'000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 20'000);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 10'000);
  // Port reuse would let a second daemon bind the same port silently.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> creators;
  creators.push_back(rpc_metrics_.Factory());
  builder.experimental().SetInterceptorCreators(std::move(creators));
  server_ = builder.BuildAndStart();
  if (server_ == nullptr || port_ == 0) {
    server_.reset();
    return absl::UnavailableError(Cat("cannot listen on ", address));
  }
  housekeeping_ = std::thread([this] { Housekeeping(); });
  return absl::OkStatus();
}

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* PluginBus::Impl::EventStream(
    grpc::CallbackServerContext* context) {
  auto session = std::make_shared<Session>(*this, context);
  Session* raw = session.get();
  bool too_many = false;
  {
    std::lock_guard lock(mu_);
    // Streams cost a little each while they wait for their hello: bound them, since anyone who
    // can reach the port can open them.
    too_many = pending_.size() >= options_.max_plugins;
    if (!too_many) pending_.emplace(raw, session);
  }
  raw->Begin(std::move(session));
  bool stopping = false;
  {
    std::lock_guard lock(mu_);
    stopping = stopping_;
  }
  if (too_many) {
    raw->TooMany();
  } else if (stopping) {
    raw->Close(grpc::Status(grpc::StatusCode::UNAVAILABLE, "daemon shutting down"));
  }
  return raw;
}

grpc::ServerUnaryReactor* PluginBus::Impl::GrantCapabilities(
    grpc::CallbackServerContext* context, const pb::PluginCapabilityRequest* request,
    pb::PluginCapabilityGrant* grant) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  tracing::Span span = tracer_.StartSpan("plugin_bus.GrantCapabilities",
                                         tracing::SpanKind::kServer, ParentFromMetadata(*context));
  span.SetAttribute("rpc.system", "grpc")
      .SetAttribute("rpc.service", "oxg.plugin_bus.PluginBus")
      .SetAttribute("rpc.method", "GrantCapabilities");
  tracing::ScopedActivation active(span.context());
  const std::string& name = request->plugin_name();
  const std::string_view label = PluginLabel(name);
  auto refuse = [&](grpc::StatusCode code, std::string message, std::string_view reason,
                    audit::EventType type = audit::EventType::kRpcDenied) {
    stats_.plugin_errors.WithLabels({label, reason}).Inc();
    AuditRefusal(type, label == "unknown" ? "" : label, message,
                 {{"method", "GrantCapabilities"}, {"code", internal::StatusCodeName(code)}});
    log::Warn(kComponent, Cat("GrantCapabilities refused: ", message));
    span.SetStatus(tracing::StatusCode::kError, message);
    reactor->Finish(grpc::Status(code, std::move(message)));
    return reactor;
  };
  if (!ConstantTimeEquals(request->auth_token(), options_.token)) {
    return refuse(grpc::StatusCode::UNAUTHENTICATED, "invalid auth token", "auth_token");
  }
  if (!ValidPluginName(name)) {
    return refuse(grpc::StatusCode::INVALID_ARGUMENT,
                  name.empty() ? "plugin_name: empty"
                               : "plugin_name: must be 1-64 bytes of [A-Za-z0-9._-]",
                  "plugin_name");
  }
  auto manifest = options_.manifests.find(name);
  if (manifest == options_.manifests.end()) {
    return refuse(grpc::StatusCode::PERMISSION_DENIED,
                  Cat("no manifest in --plugins-dir declares plugin ", name), "no_manifest");
  }
  std::vector<std::string> names(request->capabilities().begin(), request->capabilities().end());
  std::string unknown;
  std::optional<CapabilitySet> asked = ParseCapabilities(names, &unknown);
  if (!asked.has_value()) {
    return refuse(grpc::StatusCode::INVALID_ARGUMENT, Cat("unknown capability ", unknown.substr(0, 64)),
                  "capability_validation");
  }
  if (!asked->IsSubsetOf(manifest->second)) {
    std::string extra;
    for (std::string_view n : asked->Names()) {
      if (!manifest->second.Has(*ParseCapability(n))) extra = std::string(n);
    }
    return refuse(grpc::StatusCode::PERMISSION_DENIED,
                  Cat(extra, " is not declared in the manifest of ", name), "capability_validation",
                  audit::EventType::kCapabilityDenied);
  }
  const CapabilitySet granted = asked->empty() ? manifest->second : *asked;
  std::optional<CapabilityTokens::Grant> issued = tokens_.Issue(name, granted);
  if (!issued.has_value()) {
    return refuse(grpc::StatusCode::RESOURCE_EXHAUSTED,
                  "too many capability tokens outstanding; redeem or let them expire", "limit");
  }
  grant->set_capability_token(issued->token);
  grant->set_expires_at_unix(
      std::chrono::duration_cast<std::chrono::seconds>(issued->expires_at.time_since_epoch())
          .count());
  std::string cap_names;
  for (std::string_view n : granted.Names()) {
    if (!cap_names.empty()) cap_names += ',';
    cap_names += n;
  }
  span.SetAttribute("oxg.plugin.id", std::string_view(name))
      .SetAttribute("oxg.capabilities", std::string_view(cap_names));
  Audit(audit::EventType::kCapabilityGrant, audit::Decision::kAllow, name, "capabilities granted",
        {{"capabilities", cap_names}});
  span.SetStatus(tracing::StatusCode::kOk);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

PluginBus::Impl::ClaimResult PluginBus::Impl::Claim(const std::shared_ptr<Session>& session,
                                                    const std::string& name) {
  std::lock_guard lock(mu_);
  if (stopping_) return ClaimResult::kStopping;
  if (active_.contains(name)) return ClaimResult::kDuplicate;
  if (active_.size() >= options_.max_plugins) return ClaimResult::kTooMany;
  active_.emplace(name, session);
  pending_.erase(session.get());
  return ClaimResult::kOk;
}

void PluginBus::Impl::Reroute() {
  auto next = std::make_shared<Routing>();
  {
    std::lock_guard lock(mu_);
    for (const auto& [name, session] : active_) {
      if (!session->welcomed()) continue;
      for (size_t sub = 0; sub < kSubscriptions; ++sub) {
        if (session->subscribed(sub)) next->by_sub[sub].push_back(session);
      }
    }
    // Rebuilt under mu_ so two concurrent reroutes cannot publish out of order.
    std::lock_guard routing_lock(routing_mu_);
    routing_ = std::move(next);
  }
}

void PluginBus::Impl::Forget(Session* session, const std::string& name, bool claimed) {
  bool routed = false;
  {
    std::lock_guard lock(mu_);
    if (claimed) {
      if (auto it = active_.find(name); it != active_.end() && it->second.get() == session) {
        active_.erase(it);
        routed = true;
      }
    }
    pending_.erase(session);
    stop_cv_.notify_all();
  }
  if (routed) Reroute();
}

void PluginBus::Impl::Housekeeping() {
  std::unique_lock lock(mu_);
  while (!stopping_) {
    stop_cv_.wait_for(lock, std::chrono::milliseconds(250));
    if (stopping_) break;
    const auto now = std::chrono::steady_clock::now();
    std::vector<std::shared_ptr<Session>> late, active;
    for (const auto& [raw, session] : pending_) {
      if (session->awaiting_hello() && now - session->opened() >= options_.hello_timeout) {
        late.push_back(session);
      }
    }
    active.reserve(active_.size());
    for (const auto& [name, session] : active_) active.push_back(session);
    lock.unlock();
    for (const auto& session : late) session->TimeOut();
    for (const auto& session : active) session->CancelIfStuck(now, std::chrono::seconds(5));
    lock.lock();
  }
}

void PluginBus::Impl::Publish(const FlowMessage& message) {
  if (stopped_.load(std::memory_order_relaxed)) return;
  const std::shared_ptr<const Routing> routing = LoadRouting();
  const size_t sanitized = message.response ? 1 : 0;
  for (size_t sub : {sanitized, sanitized + 2}) {
    if (!routing->by_sub[sub].empty()) DispatchVariant(message, sub, routing->by_sub[sub]);
  }
}

void PluginBus::Impl::DispatchVariant(const FlowMessage& message, size_t sub,
                                      const std::vector<std::shared_ptr<Session>>& sessions) {
  const auto start = std::chrono::steady_clock::now();
  const std::string_view data = IsRaw(sub) ? message.raw : message.sanitized;
  if (data.size() > options_.max_event_bytes) {
    stats_.Dropped(sub, DropReason::kTooLarge, sessions.size());
    return;
  }
  tracing::Span span;
  if (message.context.IsValid()) {
    span = tracer_.StartSpan("plugin_bus.dispatch_flow", tracing::SpanKind::kInternal,
                             message.context);
    span.SetAttribute("oxg.flow.id", message.flow_id)
        .SetAttribute("oxg.flow.variant", VariantName(sub));
  }
  std::optional<tracing::ScopedActivation> active;
  if (span.recording()) active.emplace(span.context());
  // Every subscriber's queue full (a stalled plugin, say): count the drops without building an
  // event nobody can take, so a stalled plugin costs the capture pipeline next to nothing.
  if (std::none_of(sessions.begin(), sessions.end(),
                   [](const auto& session) { return session->MayAccept(); })) {
    for (const auto& session : sessions) session->CountDrop(sub);
    stats_.Dropped(sub, DropReason::kQueueFull, sessions.size());
    span.SetAttribute("oxg.flow.delivered", int64_t{0})
        .SetAttribute("oxg.flow.dropped", static_cast<int64_t>(sessions.size()));
    stats_.flow_dispatch[sub]->Observe(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    return;
  }

  pb::HostEvent event;
  event.set_core_version(options_.core_version);
  common::FlowEvent* flow = event.mutable_flow_event();
  flow->set_type(message.response ? common::FlowEvent::FLOW_RESPONSE
                                  : common::FlowEvent::FLOW_REQUEST);
  flow->set_data(data.data(), data.size());
  flow->set_flow_id(message.flow_id.data(), message.flow_id.size());
  flow->set_sequence(message.sequence);
  flow->set_variant(IsRaw(sub) ? common::FLOW_VARIANT_RAW : common::FLOW_VARIANT_SANITIZED);
  flow->set_captured_at_unix_nano(message.captured_at_unix_nano);
  flow->set_raw_body_bytes(message.raw_body_bytes);
  flow->set_raw_body_truncated(message.raw_body_truncated);
  flow->set_scheme(message.scheme.data(), message.scheme.size());
  if (span.context().IsValid()) {
    flow->set_traceparent(tracing::FormatTraceparent(span.context()));
  } else if (message.context.IsValid()) {
    flow->set_traceparent(tracing::FormatTraceparent(message.context));
  }
  const grpc::ByteBuffer shared = Serialize(event);
  const size_t bytes = shared.Length();

  uint64_t delivered = 0, full = 0, closed = 0;
  for (const auto& session : sessions) {
    Outgoing out;
    out.kind = Outgoing::Kind::kFlow;
    out.sub = static_cast<uint8_t>(sub);
    out.bytes = bytes;
    if (span.recording()) {
      // A sampled flow: each plugin gets its own dispatch span and the traceparent naming it.
      out.span = tracer_.StartSpan("plugin_bus.dispatch_event", tracing::SpanKind::kProducer,
                                   span.context());
      out.span.SetAttribute("oxg.plugin.id", std::string_view(session->name()))
          .SetAttribute("oxg.event.type", kEventLabel[sub]);
      flow->set_traceparent(tracing::FormatTraceparent(out.span.context()));
      out.payload = Serialize(event);
    } else {
      out.payload = shared;
    }
    switch (session->Enqueue(std::move(out))) {
      case Session::Offer::kQueued:
        ++delivered;
        break;
      case Session::Offer::kFull:
        ++full;
        session->CountDrop(sub);
        break;
      case Session::Offer::kClosed:
        ++closed;
        session->CountClosedDrop();
        break;
    }
  }
  stats_.flow_events[sub]->Inc(delivered);
  stats_.Dropped(sub, DropReason::kQueueFull, full);
  stats_.Dropped(sub, DropReason::kDisconnected, closed);
  span.SetAttribute("oxg.flow.delivered", static_cast<int64_t>(delivered))
      .SetAttribute("oxg.flow.dropped", static_cast<int64_t>(full + closed))
      .SetStatus(tracing::StatusCode::kOk);
  stats_.flow_dispatch[sub]->Observe(
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
}

bool PluginBus::Impl::Goodbye(std::string_view plugin, std::string_view reason) {
  std::shared_ptr<Session> session;
  {
    std::lock_guard lock(mu_);
    auto it = active_.find(std::string(plugin));
    if (it == active_.end() || !it->second->welcomed()) return false;
    session = it->second;
  }
  session->SendGoodbye(reason);
  return true;
}

void PluginBus::Impl::Stop(std::chrono::milliseconds grace) {
  if (stopped_.exchange(true)) return;
  std::vector<std::shared_ptr<Session>> sessions;
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    for (const auto& [name, session] : active_) sessions.push_back(session);
    for (const auto& [raw, session] : pending_) sessions.push_back(session);
    stop_cv_.notify_all();
  }
  if (housekeeping_.joinable()) housekeeping_.join();
  for (const auto& session : sessions) {
    session->Close(grpc::Status(grpc::StatusCode::UNAVAILABLE, "daemon shutting down"));
  }
  sessions.clear();
  if (server_ != nullptr) {
    server_->Shutdown(std::chrono::system_clock::now() + grace);
    server_->Wait();
  }
}

// ---- PluginBus ------------------------------------------------------------------------------

PluginBus::PluginBus(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
PluginBus::~PluginBus() { Stop(); }

absl::StatusOr<std::unique_ptr<PluginBus>> PluginBus::Start(PluginBusOptions options,
                                                            PluginBusDeps deps) {
  if (deps.registry == nullptr) return absl::InvalidArgumentError("PluginBus needs a registry");
  auto impl = std::make_unique<Impl>(std::move(options), deps);
  OXG_RETURN_IF_ERROR(impl->Listen());
  return std::unique_ptr<PluginBus>(new PluginBus(std::move(impl)));
}

void PluginBus::Publish(const FlowMessage& message) { impl_->Publish(message); }
void PluginBus::Stop(std::chrono::milliseconds grace) { impl_->Stop(grace); }
bool PluginBus::Goodbye(std::string_view plugin, std::string_view reason) {
  return impl_->Goodbye(plugin, reason);
}
int PluginBus::port() const { return impl_->port_; }
size_t PluginBus::active_plugins() const {
  return static_cast<size_t>(impl_->stats_.active_plugins.Value());
}

}  // namespace oxg::bus
