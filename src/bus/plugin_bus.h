#pragma once
// The plugin bus (contract §10, docs/plugins.md): a gRPC server on --addr where plugins
// authenticate, subscribe to the proxy's flows and send findings back.
//
// - Handshake: GrantCapabilities trades the daemon token for a single-use capability token worth
//   a subset of the plugin's manifest capabilities; EventStream's first message must be a hello
//   redeeming it. Every refusal is a specific gRPC status, an audit line and a counter.
// - Fan-out: Publish() runs on the capture pipeline's thread and never waits for a plugin. Each
//   plugin has a bounded outbound queue; when it is full the event is dropped for that plugin
//   only and counted. Messages are built once per variant and shared between plugins unless a
//   sampled trace needs a plugin-specific traceparent.
// - Findings: validated (findings.h), redacted, handed to a FindingSink.
//
// Threading: gRPC's callback API runs every stream on its own small thread pool (no thread per
// stream). Publish() may be called from one thread at a time; everything else is thread-safe.
// No gRPC header is included here, so the daemon and tests can include this cheaply.
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>

#include "absl/status/statusor.h"
#include "bus/capabilities.h"
#include "common/clock.h"
#include "common/net.h"
#include "telemetry/tracing/tracer.h"

namespace oxg::metrics {
class Registry;
}
namespace oxg::audit {
class AuditLog;
}

namespace oxg::bus {

class FindingSink;

// One captured message offered to the plugins. Views are valid during Publish only.
struct FlowMessage {
  std::string_view flow_id;
  std::string_view scheme;  // "http" or "https"
  uint64_t sequence = 0;
  bool response = false;
  int64_t captured_at_unix_nano = 0;
  std::string_view sanitized;
  std::string_view raw;
  uint64_t raw_body_bytes = 0;
  bool raw_body_truncated = false;
  tracing::SpanContext context;  // proxy.publish_flow_event; invalid when tracing is off
};

struct PluginBusOptions {
  HostPort listen;    // --addr
  std::string token;  // the daemon token plugins must present
  // What each plugin may be granted, by name (from the manifests in --plugins-dir).
  std::unordered_map<std::string, CapabilitySet> manifests;
  size_t queue_capacity = 1024;        // events waiting per plugin
  size_t queue_max_bytes = 64u << 20;  // bytes waiting per plugin
  size_t max_plugins = 1024;           // connected at once
  // Largest message a plugin may send; larger ones end its stream (RESOURCE_EXHAUSTED).
  size_t max_receive_bytes = 1u << 20;
  // Flow events above this are not sent (counted as dropped, reason "too_large"); SDKs accept
  // messages up to 64 MiB.
  size_t max_event_bytes = 32u << 20;
  std::chrono::milliseconds hello_timeout{10'000};
  std::chrono::seconds capability_ttl{60};
  std::string core_version;  // sent in the welcome and every HostEvent
};

struct PluginBusDeps {
  metrics::Registry* registry = nullptr;
  tracing::Tracer* tracer = nullptr;
  audit::AuditLog* audit = nullptr;  // may be null (tests)
  FindingSink* findings = nullptr;   // may be null: findings are validated and counted only
  const Clock* clock = nullptr;
};

class PluginBus {
 public:
  // Binds --addr (error naming it when it cannot) and starts serving.
  static absl::StatusOr<std::unique_ptr<PluginBus>> Start(PluginBusOptions options,
                                                          PluginBusDeps deps);
  ~PluginBus();  // Stop()s
  PluginBus(const PluginBus&) = delete;
  PluginBus& operator=(const PluginBus&) = delete;

  // Offers one message to every subscriber of its variants. Never blocks on a plugin.
  void Publish(const FlowMessage& message);

  // Sends a goodbye (HostEvent.goodbye) to the plugin of that name, after what is queued for it
  // even when its queue is full: the SDKs then leave and do not reconnect. False when no such
  // plugin is connected. Thread-safe.
  bool Goodbye(std::string_view plugin, std::string_view reason);

  // Ends every stream with UNAVAILABLE, waits up to `grace` for them, stops the server.
  // Idempotent. Publish must not be called any more.
  void Stop(std::chrono::milliseconds grace = std::chrono::seconds(2));

  int port() const;
  size_t active_plugins() const;

  class Impl;

 private:
  explicit PluginBus(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace oxg::bus
