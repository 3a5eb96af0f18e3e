#include "plugins/supervisor.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <span>
#include <stdexcept>
#include <thread>
#include <utility>

#include "absl/status/status.h"
#include "common/ids.h"
#include "common/log.h"
#include "common/strings.h"
#include "telemetry/audit/audit.h"
#include "telemetry/metrics/metrics.h"
#include "telemetry/tracing/tracer.h"

namespace oxg::plugins {
namespace {

constexpr std::string_view kComponent = "plugins";

// The restart reasons of contract §4, indexed by Termination. Kept here rather than calling
// TerminationName so this library needs only runner.h, not the runner's implementation.
constexpr std::array<std::string_view, 6> kTerminationNames = {
    "exit", "crash", "cpu_limit", "memory_limit", "timeout", "stopped"};
constexpr size_t kRestartReasons = 5;  // every termination but kStopped

std::string_view TerminationLabel(Termination t) {
  const auto i = static_cast<size_t>(t);
  return i < kTerminationNames.size() ? kTerminationNames[i] : "crash";
}

bool IsFailure(const ExitInfo& exit) {
  return !(exit.termination == Termination::kExit && exit.exit_code == 0);
}

// "exit (code 1)", "crash (signal 11)", "crash (launch failed)".
std::string Describe(const ExitInfo& exit, bool launch_failed) {
  if (launch_failed) return Cat(TerminationLabel(exit.termination), " (launch failed)");
  if (exit.signal != 0)
    return Cat(TerminationLabel(exit.termination), " (signal ", exit.signal, ")");
  if (exit.termination == Termination::kExit) return Cat("exit (code ", exit.exit_code, ")");
  return std::string(TerminationLabel(exit.termination));
}

// "2.1 s".
std::string Seconds(std::chrono::milliseconds d) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f s", static_cast<double>(d.count()) / 1000.0);
  return buf;
}

bool WaitOnRealClock(Clock::MonoTime deadline, std::stop_token stop) {
  std::mutex mu;
  std::condition_variable_any cv;
  std::unique_lock lock(mu);
  cv.wait_until(lock, stop, deadline, [] { return false; });
  return !stop.stop_requested();
}

}  // namespace

std::string_view PluginRunStateName(PluginRunState s) {
  switch (s) {
    case PluginRunState::kStarting:
      return "starting";
    case PluginRunState::kRunning:
      return "running";
    case PluginRunState::kBackoff:
      return "backoff";
    case PluginRunState::kCrashLoop:
      return "crash_loop";
    case PluginRunState::kExited:
      return "exited";
    case PluginRunState::kStopped:
      return "stopped";
  }
  return "unknown";
}

// ---- RestartTracker ----------------------------------------------------------------------

RestartTracker::RestartTracker(RestartPolicy policy, BackoffOptions options, uint64_t seed)
    : policy_(policy), options_(options), rng_(seed) {}

RestartTracker::Decision RestartTracker::OnExit(const ExitInfo& exit,
                                                std::chrono::milliseconds ran_for) {
  Decision d;
  if (exit.termination == Termination::kStopped) return d;
  // A healthy run forgives the failures before it.
  if (ran_for >= options_.stable_after) failures_ = 0;
  if (!IsFailure(exit)) {
    failures_ = 0;
    if (policy_ == RestartPolicy::kAlways) {
      d.restart = true;
      d.delay = options_.initial;
    }
    return d;
  }
  ++failures_;
  if (policy_ == RestartPolicy::kNever) return d;
  if (options_.crash_loop_failures > 0 && failures_ >= options_.crash_loop_failures) {
    d.crash_loop = true;
    return d;
  }
  const double max_ms = static_cast<double>(options_.max.count());
  double ms = static_cast<double>(options_.initial.count()) *
              std::pow(std::max(options_.multiplier, 1.0), failures_ - 1);
  ms = std::min(ms, max_ms);
  const double jitter = std::clamp(options_.jitter, 0.0, 1.0);
  // 53 random bits as a double in [0, 1): the same sequence for a seed on every platform
  // (std::uniform_real_distribution is not specified that tightly).
  const double u = static_cast<double>(rng_() >> 11) * 0x1.0p-53;
  ms *= 1.0 - jitter + 2.0 * jitter * u;
  d.restart = true;
  d.delay = std::chrono::milliseconds(std::llround(std::max(ms, 0.0)));
  return d;
}

// ---- Supervisor --------------------------------------------------------------------------

class Supervisor::Impl {
 public:
  Impl(SupervisorOptions options, SupervisorDeps deps)
      : options_(std::move(options)), deps_(std::move(deps)) {}

  absl::Status Init() {
    if (deps_.runner == nullptr) return absl::InvalidArgumentError("plugin supervisor: no runner");
    if (deps_.clock == nullptr) deps_.clock = &Clock::Real();
    if (deps_.tracer == nullptr) deps_.tracer = &tracing::Tracer::Noop();
    if (!deps_.wait_until) deps_.wait_until = WaitOnRealClock;
    if (deps_.registry == nullptr) {
      own_registry_ = std::make_unique<metrics::Registry>(*deps_.clock);
      deps_.registry = own_registry_.get();
    }
    for (size_t i = 0; i < options_.manifests.size(); ++i) {
      for (size_t j = 0; j < i; ++j) {
        if (options_.manifests[i].name == options_.manifests[j].name) {
          return absl::InvalidArgumentError(
              Cat("plugin supervisor: two plugins named \"", options_.manifests[i].name, "\""));
        }
      }
    }
    metrics::Family<metrics::Counter>* restarts = nullptr;
    try {
      restarts = &deps_.registry->AddCounter(
          "oxg_plugin_restarts_total",
          "Plugin processes restarted by the supervisor, by why the previous run ended.",
          {"plugin", "reason"});
    } catch (const std::invalid_argument& e) {
      return absl::FailedPreconditionError(Cat("plugin supervisor: ", e.what()));
    }
    // One thread-independent seed per supervisor; per plugin, a different stream of it.
    uint64_t seed = 0;
    RandomBytes(std::span(reinterpret_cast<uint8_t*>(&seed), sizeof seed));
    plugins_.reserve(options_.manifests.size());
    for (size_t i = 0; i < options_.manifests.size(); ++i) {
      const Manifest& m = options_.manifests[i];
      auto p = std::make_unique<Plugin>(&m, RestartTracker(m.restart, options_.backoff, seed + i));
      p->state.name = m.name;
      // Every reason's series exists from the start, so increase() sees the first restart.
      for (size_t r = 0; r < kRestartReasons; ++r) {
        p->restart_counters[r] = &restarts->WithLabels({m.name, kTerminationNames[r]});
      }
      plugins_.push_back(std::move(p));
    }
    for (auto& p : plugins_) {
      Plugin* raw = p.get();
      raw->thread = std::thread([this, raw] { Run(*raw); });
    }
    return absl::OkStatus();
  }

  ~Impl() { Stop(); }

  void Stop() {
    std::lock_guard stop_lock(stop_mu_);
    if (stopped_) return;
    stop_.request_stop();
    std::vector<Plugin*> running;
    {
      std::lock_guard lock(mu_);
      for (auto& p : plugins_) {
        if (p->process != nullptr && !p->stop_sent) {
          p->stop_sent = true;
          running.push_back(p.get());
        }
      }
    }
    // The goodbye travels behind whatever the plugin still has to read: give it time to act on
    // it (and leave by itself) before any signal, since the SDKs treat SIGTERM as "leave now".
    if (deps_.say_goodbye) {
      for (Plugin* p : running) deps_.say_goodbye(p->manifest->name);
    }
    if (options_.goodbye_grace.count() > 0) {
      std::unique_lock lock(mu_);
      exited_cv_.wait_for(lock, options_.goodbye_grace, [&] {
        return std::all_of(running.begin(), running.end(),
                           [](const Plugin* p) { return p->process == nullptr; });
      });
    }
    {
      std::lock_guard lock(mu_);
      // The plugin thread unregisters (and only then frees) the process under mu_.
      for (Plugin* p : running) {
        if (p->process != nullptr) p->process->Stop(options_.stop_grace);
      }
    }
    for (auto& p : plugins_) {
      if (p->thread.joinable()) p->thread.join();
    }
    stopped_ = true;
  }

  std::vector<PluginState> Snapshot() const {
    std::lock_guard lock(mu_);
    std::vector<PluginState> out;
    out.reserve(plugins_.size());
    for (const auto& p : plugins_) out.push_back(p->state);
    return out;
  }

 private:
  struct Plugin {
    Plugin(const Manifest* m, RestartTracker t) : manifest(m), tracker(std::move(t)) {}
    const Manifest* manifest;
    RestartTracker tracker;  // the plugin thread's only
    std::array<metrics::Counter*, kRestartReasons> restart_counters{};
    std::thread thread;
    // Guarded by Impl::mu_.
    PluginState state;
    Process* process = nullptr;  // owned by the plugin thread while it runs
    bool stop_sent = false;      // goodbye and Process::Stop done for the current process
  };

  // Goodbye on the stream, then SIGTERM now and SIGKILL after the grace (Process::Stop).
  void StopProcess(Plugin& p) {
    if (deps_.say_goodbye) deps_.say_goodbye(p.manifest->name);
    std::lock_guard lock(mu_);
    // The plugin thread unregisters (and only then frees) the process under mu_.
    if (p.process != nullptr) p.process->Stop(options_.stop_grace);
  }

  void SetState(Plugin& p, PluginRunState s) {
    {
      std::lock_guard lock(mu_);
      p.state.state = s;
    }
    if (deps_.on_state) deps_.on_state(p.manifest->name, s);
  }

  void Audit(const Plugin& p, const tracing::Span& span, audit::Decision decision,
             std::string reason, std::vector<std::pair<std::string, std::string>> metadata) {
    if (deps_.audit == nullptr) return;
    audit::AuditEvent e;
    e.component = "plugin_supervisor";
    e.plugin_id = p.manifest->name;
    e.event_type = audit::EventType::kPluginRestart;
    e.decision = decision;
    e.reason = std::move(reason);
    e.metadata = std::move(metadata);
    if (span.context().IsValid()) {
      e.span = metrics::SpanContextRef{span.context().trace_id, span.context().span_id};
    }
    deps_.audit->Write(e);
  }

  // One plugin's life: launch, wait, decide, back off, again.
  void Run(Plugin& p) {
    const Manifest& m = *p.manifest;
    const std::stop_token stop = stop_.get_token();
    const Clock& clock = *deps_.clock;
    while (!stop.stop_requested()) {
      SetState(p, PluginRunState::kStarting);
      const std::string task_id = NewUlid(clock);
      tracing::Span task = deps_.tracer->StartSpan(
          "plugin.supervisor.task", tracing::SpanKind::kInternal, tracing::Parent::kRoot);
      task.SetAttribute("oxg.plugin.id", m.name).SetAttribute("oxg.task.id", task_id);
      if (task.recording()) {
        const Limits& l = m.limits;
        if (l.cpu_seconds) {
          task.SetAttribute("oxg.limit.cpu_seconds", static_cast<int64_t>(*l.cpu_seconds));
        }
        task.SetAttribute("oxg.limit.memory_bytes", static_cast<int64_t>(l.memory_bytes))
            .SetAttribute("oxg.limit.open_files", static_cast<int64_t>(l.open_files))
            .SetAttribute("oxg.limit.processes", static_cast<int64_t>(l.processes));
        if (l.wall_seconds) {
          task.SetAttribute("oxg.limit.wall_seconds", static_cast<int64_t>(*l.wall_seconds));
        }
      }
      tracing::Span exec = deps_.tracer->StartSpan("plugin.runner.exec",
                                                   tracing::SpanKind::kInternal, task.context());
      exec.SetAttribute("process.executable.path", m.command);

      ExitInfo exit;
      bool launch_failed = false;
      const Clock::MonoTime started = clock.MonoNow();
      {
        tracing::ScopedActivation active(exec);
        LaunchSpec spec;
        spec.manifest = &m;
        spec.bus_address = options_.bus_address;
        spec.token = options_.token;
        spec.on_output = [name = m.name](std::string_view line) {
          log::Info(kComponent, Cat("plugin ", name, ": ", line));
        };
        absl::StatusOr<std::unique_ptr<Process>> launched = deps_.runner->Launch(spec);
        if (!launched.ok()) {
          launch_failed = true;
          exit.termination = Termination::kCrash;
          // The runner's message names the command and the reason.
          log::Error(kComponent, Cat("plugin ", m.name, ": ", launched.status().message()));
          exec.SetAttribute("error.type", "launch_failed");
        } else {
          std::unique_ptr<Process> process = *std::move(launched);
          bool stop_now = false;
          {
            std::lock_guard lock(mu_);
            p.process = process.get();
            p.state.pid = process->pid();
            p.state.state = PluginRunState::kRunning;
            // Stop() may have run between Launch and here: it could not see this process.
            if (stop.stop_requested() && !p.stop_sent) p.stop_sent = stop_now = true;
          }
          if (deps_.on_state) deps_.on_state(m.name, PluginRunState::kRunning);
          exec.SetAttribute("process.pid", static_cast<int64_t>(process->pid()));
          if (stop_now) StopProcess(p);
          exit = process->Wait();
          {
            std::lock_guard lock(mu_);
            p.process = nullptr;
            p.stop_sent = false;
          }
          exited_cv_.notify_all();
        }
      }
      const auto ran_for =
          std::chrono::duration_cast<std::chrono::milliseconds>(clock.MonoNow() - started);
      // Whatever the runner saw, an end during shutdown was asked for.
      if (stop.stop_requested()) exit.termination = Termination::kStopped;
      const std::string described = Describe(exit, launch_failed);
      const bool clean = !IsFailure(exit) || exit.termination == Termination::kStopped;

      if (exit.termination == Termination::kExit) {
        exec.SetAttribute("process.exit.code", exit.exit_code);
      }
      if (exit.signal != 0) exec.SetAttribute("oxg.process.signal", exit.signal);
      exec.SetAttribute("oxg.cpu_seconds", exit.cpu_seconds)
          .SetAttribute("oxg.max_rss_bytes", static_cast<int64_t>(exit.max_rss_bytes))
          .SetAttribute("oxg.task.termination", TerminationLabel(exit.termination));
      exec.SetStatus(clean ? tracing::StatusCode::kOk : tracing::StatusCode::kError,
                     clean ? std::string_view() : std::string_view(described));
      exec.End();
      task.SetAttribute("oxg.task.termination", TerminationLabel(exit.termination));
      task.SetStatus(clean ? tracing::StatusCode::kOk : tracing::StatusCode::kError,
                     clean ? std::string_view() : std::string_view(described));

      const RestartTracker::Decision decision = p.tracker.OnExit(exit, ran_for);
      {
        std::lock_guard lock(mu_);
        p.state.last_exit = exit;
        p.state.pid = 0;
      }

      if (exit.termination == Termination::kStopped) {
        log::Info(kComponent, Cat("plugin ", m.name, " stopped"));
        SetState(p, PluginRunState::kStopped);
        return;
      }

      std::vector<std::pair<std::string, std::string>> metadata;
      metadata.emplace_back("termination", std::string(TerminationLabel(exit.termination)));
      if (exit.termination == Termination::kExit) {
        metadata.emplace_back("exit_code", std::to_string(exit.exit_code));
      }
      if (exit.signal != 0) metadata.emplace_back("signal", std::to_string(exit.signal));

      if (decision.crash_loop) {
        const int failures = p.tracker.consecutive_failures();
        log::Error(kComponent, Cat("plugin ", m.name, " is crash-looping (", failures,
                                   " failures in a row); not restarting until 0xgend restarts"));
        metadata.emplace_back("failures", std::to_string(failures));
        Audit(p, task, audit::Decision::kDeny,
              Cat("crash loop after ", described, ": ", failures,
                  " failures in a row; not restarting"),
              std::move(metadata));
        task.End();
        SetState(p, PluginRunState::kCrashLoop);
        return;
      }
      if (!decision.restart) {
        const std::string how = Cat("plugin ", m.name, " ended: ", described, "; restart policy ",
                                    RestartPolicyName(m.restart), ": not restarting");
        if (clean) {
          log::Info(kComponent, how);
        } else {
          log::Warn(kComponent, how);
        }
        task.End();
        SetState(p, PluginRunState::kExited);
        return;
      }

      int attempt = 0;
      {
        std::lock_guard lock(mu_);
        attempt = ++p.state.restarts;
      }
      p.restart_counters[std::min(static_cast<size_t>(exit.termination), kRestartReasons - 1)]
          ->Inc();
      const std::string reason =
          Cat("restarting after ", described, " in ", Seconds(decision.delay));
      metadata.emplace_back("attempt", std::to_string(attempt));
      metadata.emplace_back("delay_ms", std::to_string(decision.delay.count()));
      Audit(p, task, audit::Decision::kAllow, reason, std::move(metadata));
      const std::string line = Cat("plugin ", m.name, ": ", reason, " (restart ", attempt, ")");
      if (clean) {
        log::Info(kComponent, line);
      } else {
        log::Warn(kComponent, line);
      }
      task.End();
      SetState(p, PluginRunState::kBackoff);
      if (!deps_.wait_until(clock.MonoNow() + decision.delay, stop)) break;
    }
    SetState(p, PluginRunState::kStopped);
  }

  SupervisorOptions options_;
  SupervisorDeps deps_;
  std::unique_ptr<metrics::Registry> own_registry_;
  std::stop_source stop_;
  mutable std::mutex mu_;
  std::condition_variable exited_cv_;  // a plugin's process ended (mu_)
  std::vector<std::unique_ptr<Plugin>> plugins_;
  std::mutex stop_mu_;
  bool stopped_ = false;  // guarded by stop_mu_
};

absl::StatusOr<std::unique_ptr<Supervisor>> Supervisor::Start(SupervisorOptions options,
                                                              SupervisorDeps deps) {
  auto impl = std::make_unique<Impl>(std::move(options), std::move(deps));
  if (absl::Status s = impl->Init(); !s.ok()) return s;
  return std::unique_ptr<Supervisor>(new Supervisor(std::move(impl)));
}

Supervisor::Supervisor(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Supervisor::~Supervisor() { Stop(); }
void Supervisor::Stop() { impl_->Stop(); }
std::vector<Supervisor::PluginState> Supervisor::Snapshot() const { return impl_->Snapshot(); }

}  // namespace oxg::plugins
