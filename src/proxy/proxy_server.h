#pragma once
// The capture proxy: an HTTP/1.1 forward proxy with CONNECT and TLS interception. Asio and
// OpenSSL stay inside the .cc files; this header is cheap to include.
//
// Threads: `workers` I/O threads, each with its own event loop. One listening socket (so a busy
// port is an error, never a silent share) hands accepted connections to the workers in turn; a
// connection lives on one worker for its whole life, together with the upstream connections it
// uses (pooled per worker: no locks on the hot path).
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "common/clock.h"
#include "common/net.h"
#include "proxy/flow/flow_pipeline.h"
#include "proxy/scope.h"
#include "proxy/tls/leaf_cache.h"
#include "telemetry/audit/audit.h"
#include "telemetry/metrics/metrics.h"
#include "telemetry/tracing/tracer.h"

namespace oxg::proxy {

struct ProxyOptions {
  HostPort listen;  // port 0: the OS picks (see ProxyServer::port())
  int workers = 1;
  double flow_sample_rate = 1.0;  // [0,1]
  int64_t max_body_kb = 128;      // capture limit per message; -1 unlimited, 0 headers only
  std::optional<ScopePolicy> scope;  // unset: everything in scope
  // Deadlines. Reading a request head (also the keep-alive idle time of a client connection).
  std::chrono::milliseconds client_idle_timeout{60'000};
  // Connecting to an upstream (DNS included) and each wait for upstream bytes or for a write
  // to make progress; a silent upstream gets the client a 504 after this.
  std::chrono::milliseconds upstream_timeout{30'000};
  // Each wait for client bytes in the middle of a message, and each client write.
  std::chrono::milliseconds client_io_timeout{30'000};
  size_t max_head_bytes = 64 * 1024;
  size_t max_connections = 10'000;  // client connections over all workers; more are refused
  size_t upstream_idle_per_host = 32;
  bool upstream_insecure_skip_verify = false;  // skip upstream TLS verification (explicit flag)
  std::string upstream_ca_file;  // extra trust anchors for upstream TLS (tests); empty: none
};

// What the proxy uses from the daemon; all must outlive the server.
struct ProxyDeps {
  metrics::Registry* registry = nullptr;
  tracing::Tracer* tracer = nullptr;  // null: Tracer::Noop()
  audit::AuditLog* audit = nullptr;   // may be null
  tls::LeafCertificateMinter* minter = nullptr;  // null: CONNECT is tunnelled, never intercepted
  FlowPipeline* pipeline = nullptr;   // null: nothing is captured
  const Clock* clock = nullptr;       // null: Clock::Real()
};

class ProxyServer {
 public:
  // Binds the listeners (error naming the address) and starts the worker threads.
  static absl::StatusOr<std::unique_ptr<ProxyServer>> Start(ProxyOptions options, ProxyDeps deps);
  ~ProxyServer();  // Stop()s
  ProxyServer(const ProxyServer&) = delete;
  ProxyServer& operator=(const ProxyServer&) = delete;

  uint16_t port() const;
  // Stops accepting, closes every connection, joins the workers. Idempotent.
  void Stop();

  class Impl;

 private:
  explicit ProxyServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace oxg::proxy
