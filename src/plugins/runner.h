#pragma once
// Runs one plugin process (issue 6): fork/exec with the manifest's limits applied in the child
// only, its own session and process group (pgid = pid), a minimal environment, the bus token on an
// inherited pipe (never in argv or the environment), no-new-privs and a seccomp deny-list,
// stdout/stderr captured into the operational log. Then waits for it and says how it ended.
//
// Thread-safety: a Runner is used by one supervisor thread; Kill/Signal may be called from any
// thread while Wait blocks in another.
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "plugins/manifest.h"

namespace oxg::plugins {

// How a run ended (contract §4 `oxg_plugin_restarts_total{reason}`, span attribute
// `oxg.task.termination`).
enum class Termination {
  kExit,         // exited by itself (any code)
  kCrash,        // killed by a signal it did not ask for (SIGSEGV, SIGABRT, ...); also when
                 // the runner killed a group of more than `processes` (ExitInfo::detail says so)
  kCpuLimit,     // SIGXCPU/SIGKILL at its RLIMIT_CPU
  kMemoryLimit,  // killed by the runner for exceeding memory_bytes resident
  kTimeout,      // killed by the runner after wall_seconds
  kStopped,      // killed (or asked to leave) by the supervisor on purpose
};
std::string_view TerminationName(Termination t);  // "exit", "crash", "cpu_limit", ...

struct ExitInfo {
  Termination termination = Termination::kExit;
  int exit_code = 0;           // kExit
  int signal = 0;              // the signal that ended it, when one did
  double cpu_seconds = 0;      // user + system, of the whole run
  uint64_t max_rss_bytes = 0;  // peak resident size
  std::chrono::milliseconds wall{0};
  // Why the runner ended it, in words, when it did (e.g. "resident size 70 MiB over the limit
  // of 64 MiB"); empty otherwise.
  std::string detail;
  uint64_t output_lines_dropped = 0;  // by the output rate limit, over the whole run
};

struct LaunchSpec {
  const Manifest* manifest = nullptr;  // command, args, limits, config
  std::string bus_address;             // OXG_BUS_ADDR
  std::string token;                   // written to the child's OXG_AUTH_TOKEN_FD pipe
  // Where the child's output lines go (plugin name, line). Called on the runner's reader
  // thread; rate-limited by the runner (lines beyond the budget are counted, then summarized).
  std::function<void(std::string_view line)> on_output;
};

class Process {
 public:
  virtual ~Process() = default;
  virtual pid_t pid() const = 0;
  // Blocks until the process has exited (every process of its group killed when it is gone),
  // enforcing memory_bytes and wall_seconds meanwhile. Call once.
  virtual ExitInfo Wait() = 0;
  // Sends `sig` to the whole process group. Safe while Wait runs.
  virtual void Signal(int sig) = 0;
  // Marks the coming end as intended (termination kStopped) and sends SIGTERM; SIGKILL to the
  // group after `grace`. Returns at once.
  virtual void Stop(std::chrono::milliseconds grace) = 0;
};

class Runner {
 public:
  virtual ~Runner() = default;
  // The child gets PR_SET_PDEATHSIG(SIGKILL), which fires when the *thread* that forked it
  // ends: call Launch from a thread that lives at least as long as the plugin should.
  virtual absl::StatusOr<std::unique_ptr<Process>> Launch(const LaunchSpec& spec) = 0;
};

struct RunnerOptions {
  // Output lines passed on per plugin: a token bucket of `output_burst` lines refilled at
  // `output_lines_per_second`. The rest are counted and summarized in one line.
  double output_lines_per_second = 200;
  double output_burst = 200;
  // How often the watchdog measures the group (resident size, process count).
  std::chrono::milliseconds watchdog_interval{100};
  // After the leader is gone: how long to keep killing the group until none of it is alive,
  // then how long to wait for the output pipes to close.
  std::chrono::milliseconds group_kill_timeout{5000};
  std::chrono::milliseconds output_drain_timeout{1000};
};

// The real one: fork/exec on this machine.
std::unique_ptr<Runner> MakeProcessRunner(RunnerOptions options = {});

}  // namespace oxg::plugins
