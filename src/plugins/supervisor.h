#pragma once
// The plugin supervisor (issue 6): starts every plugin of --plugins-dir as its own process
// (runner.h), restarts it by its manifest's policy with exponential backoff and jitter on the
// injected clock, cuts a crash loop off with a clear log line, and stops them all on shutdown
// (goodbye on the stream, then SIGTERM, then SIGKILL after a grace period) leaving no process.
//
// Spans: one `plugin.supervisor.task` (root) per plugin run, `plugin.runner.exec` under it per
// process; metrics `oxg_plugin_restarts_total{plugin,reason}`; audit `plugin_restart`.
//
// Thread-safety: Start/Stop from the daemon's main thread; Snapshot from any thread.
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <stop_token>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "common/clock.h"
#include "plugins/manifest.h"
#include "plugins/runner.h"

namespace oxg::metrics {
class Registry;
}
namespace oxg::audit {
class AuditLog;
}
namespace oxg::tracing {
class Tracer;
}

namespace oxg::plugins {

struct BackoffOptions {
  std::chrono::milliseconds initial{1000};
  std::chrono::milliseconds max{60'000};
  double multiplier = 2.0;
  double jitter = 0.2;  // each delay is scaled by a uniform factor in [1 - jitter, 1 + jitter]
  // A run that lasted this long was healthy: the next failure starts the backoff over.
  std::chrono::milliseconds stable_after{60'000};
  // This many failed runs in a row, none of them stable, is a crash loop: no more restarts.
  int crash_loop_failures = 5;
};

// The restart decision for one plugin, as a pure state machine (tested on simulated time).
class RestartTracker {
 public:
  RestartTracker(RestartPolicy policy, BackoffOptions options, uint64_t seed);
  struct Decision {
    bool restart = false;
    std::chrono::milliseconds delay{0};
    bool crash_loop = false;  // gave up: too many failures in a row
  };
  // `ran_for`: how long the run lasted. A kStopped termination never restarts.
  Decision OnExit(const ExitInfo& exit, std::chrono::milliseconds ran_for);
  int consecutive_failures() const { return failures_; }

 private:
  RestartPolicy policy_;
  BackoffOptions options_;
  std::mt19937_64 rng_;
  int failures_ = 0;
};

struct SupervisorOptions {
  std::vector<Manifest> manifests;
  std::string bus_address;  // what plugins connect to (the bus's bound address)
  std::string token;        // the daemon token, handed over on a pipe
  BackoffOptions backoff;
  // Stopping: the goodbye, then up to `goodbye_grace` for the plugin to leave by itself, then
  // SIGTERM, then SIGKILL after `stop_grace`.
  std::chrono::milliseconds goodbye_grace{0};
  std::chrono::milliseconds stop_grace{5000};
};

// Where a supervised plugin is: launching, running, waiting out a restart delay, given up
// (crash loop), ended without a restart (its policy said so), or stopped by Stop().
enum class PluginRunState { kStarting, kRunning, kBackoff, kCrashLoop, kExited, kStopped };
std::string_view PluginRunStateName(PluginRunState s);  // "starting", "running", ...

struct SupervisorDeps {
  metrics::Registry* registry = nullptr;  // null: a private one (nothing exported)
  tracing::Tracer* tracer = nullptr;      // may be null: no spans
  audit::AuditLog* audit = nullptr;       // may be null (tests)
  const Clock* clock = nullptr;           // null: Clock::Real()
  Runner* runner = nullptr;               // MakeProcessRunner() in the daemon, a fake in tests
  // Asks the plugin bus to send a goodbye on that plugin's stream (first step of a stop).
  std::function<void(std::string_view plugin)> say_goodbye;
  // Waits until `deadline` on `clock` or until `stop` is requested (Stop() requests it; the
  // request is sticky, so a wait that starts after it returns at once); false when stopped.
  // The default waits on the real steady clock (so `clock` must then be a real clock); tests
  // pass one that advances a SimulatedClock.
  std::function<bool(Clock::MonoTime deadline, std::stop_token stop)> wait_until;
  // Told of every state change (plugin name, new state), on that plugin's supervisor thread
  // with no lock held. Optional (health reporting, tests).
  std::function<void(std::string_view plugin, PluginRunState state)> on_state;
};

class Supervisor {
 public:
  static absl::StatusOr<std::unique_ptr<Supervisor>> Start(SupervisorOptions options,
                                                           SupervisorDeps deps);
  ~Supervisor();  // Stop()s
  Supervisor(const Supervisor&) = delete;
  Supervisor& operator=(const Supervisor&) = delete;

  // Goodbye, SIGTERM, SIGKILL after the grace period; returns when every plugin process (and
  // its process group) is gone. Idempotent.
  void Stop();

  using State = PluginRunState;
  struct PluginState {
    std::string name;
    State state = State::kStarting;
    pid_t pid = 0;
    int restarts = 0;
    std::optional<ExitInfo> last_exit;
  };
  std::vector<PluginState> Snapshot() const;

  class Impl;

 private:
  explicit Supervisor(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace oxg::plugins
