#include "plugins/runner.h"

#include <fcntl.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <system_error>
#include <thread>
#include <utility>

#include "common/log.h"
#include "common/status.h"
#include "common/strings.h"
#include "plugins/internal/output_limiter.h"
#include "plugins/internal/proc_scan.h"
#include "plugins/internal/seccomp_filter.h"

namespace oxg::plugins {

std::string_view TerminationName(Termination t) {
  switch (t) {
    case Termination::kExit:
      return "exit";
    case Termination::kCrash:
      return "crash";
    case Termination::kCpuLimit:
      return "cpu_limit";
    case Termination::kMemoryLimit:
      return "memory_limit";
    case Termination::kTimeout:
      return "timeout";
    case Termination::kStopped:
      return "stopped";
  }
  return "unknown";
}

namespace {

constexpr std::string_view kComponent = "plugins";
using SteadyClock = std::chrono::steady_clock;

// The child's file descriptors: 0 /dev/null, 1 and 2 pipes to the runner, 3 the token pipe,
// 4 the launch report pipe (close-on-exec, so the runner sees EOF once exec succeeded).
constexpr int kTokenFd = 3;
constexpr int kReportFd = 4;
// A token never comes near this; the pipe must take it whole before the child exists.
constexpr size_t kMaxTokenBytes = 16 * 1024;

class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept {
    if (this != &o) {
      Reset();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  ~UniqueFd() { Reset(); }
  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  void Reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

absl::Status MakePipe(UniqueFd* read_end, UniqueFd* write_end) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) {
    return absl::ResourceExhaustedError(Cat("pipe: ", std::strerror(errno)));
  }
  *read_end = UniqueFd(fds[0]);
  *write_end = UniqueFd(fds[1]);
  return absl::OkStatus();
}

// ---- the child, between fork and exec: async-signal-safe calls only ----

enum ChildStage : int32_t {
  kStageSetpgid = 1,
  kStageDeathSignal,
  kStageFds,
  kStageChdir,
  kStageRlimit,
  kStageExec,
  // Not fatal: reported, then the child goes on.
  kWarnNoNewPrivs = 100,
  kWarnSeccomp,
};

struct ChildReport {
  int32_t stage;
  int32_t err;
};

struct ChildLimit {
  int resource;
  rlimit value;
};

struct ChildPlan {
  pid_t parent = 0;
  const char* path = nullptr;
  char* const* argv = nullptr;
  char* const* envp = nullptr;
  const char* dir = nullptr;
  int fds[5] = {-1, -1, -1, -1, -1};  // become 0 (stdin), 1, 2, kTokenFd, kReportFd
  ChildLimit limits[8] = {};
  int num_limits = 0;
  const sock_fprog* seccomp = nullptr;
};

void ChildReportTo(int fd, int32_t stage, int err) {
  const ChildReport r{stage, err};
  const char* p = reinterpret_cast<const char*>(&r);
  size_t left = sizeof(r);
  while (left > 0) {
    const ssize_t n = ::write(fd, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    p += n;
    left -= static_cast<size_t>(n);
  }
}

[[noreturn]] void ChildFail(int report_fd, int32_t stage, int err) {
  ChildReportTo(report_fd, stage, err);
  _exit(127);
}

void ChildCloseFrom(int first) {
  if (syscall(SYS_close_range, static_cast<unsigned>(first), ~0u, 0u) == 0) return;
  rlimit nofile{};
  rlim_t end = 1 << 16;
  if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur != RLIM_INFINITY) {
    end = std::min<rlim_t>(nofile.rlim_cur, 1 << 20);
  }
  for (rlim_t fd = static_cast<rlim_t>(first); fd < end; ++fd) ::close(static_cast<int>(fd));
}

[[noreturn]] void RunChild(const ChildPlan& plan) {
  int report = plan.fds[4];
  // The daemon may ignore SIGPIPE or block signals for a signal thread; ignored dispositions
  // and the mask survive exec, so put everything back to the defaults.
  struct sigaction dfl;
  std::memset(&dfl, 0, sizeof(dfl));
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  for (int sig = 1; sig < NSIG; ++sig) {
    if (sig != SIGKILL && sig != SIGSTOP) sigaction(sig, &dfl, nullptr);
  }
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);

  // Its own process group (pgid = pid). setsid also gives it its own session, hence its own
  // scheduler autogroup where the kernel has them: then a fork bomb competes for the CPU as one
  // task, and the runner's watchdog is not starved while it counts the group.
  if (setsid() < 0 && setpgid(0, 0) != 0) ChildFail(report, kStageSetpgid, errno);
  if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0) ChildFail(report, kStageDeathSignal, errno);
  // The runner's thread may have gone between fork and prctl: then nobody would kill us.
  if (getppid() != plan.parent) _exit(127);

  // Lift every descriptor we keep above the targets first, so no dup2 clobbers a source.
  int high[5];
  for (int i = 0; i < 5; ++i) {
    high[i] = fcntl(plan.fds[i], F_DUPFD_CLOEXEC, 10);
    if (high[i] < 0) ChildFail(report, kStageFds, errno);
  }
  report = high[4];
  for (int i = 0; i < 4; ++i) {
    if (dup2(high[i], i) < 0) ChildFail(report, kStageFds, errno);  // clears close-on-exec
  }
  if (dup3(high[4], kReportFd, O_CLOEXEC) < 0) ChildFail(report, kStageFds, errno);
  report = kReportFd;
  ChildCloseFrom(kReportFd + 1);

  if (chdir(plan.dir) != 0) ChildFail(report, kStageChdir, errno);
  for (int i = 0; i < plan.num_limits; ++i) {
    if (setrlimit(static_cast<__rlimit_resource>(plan.limits[i].resource), &plan.limits[i].value) !=
        0) {
      ChildFail(report, kStageRlimit, errno);
    }
  }
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) ChildReportTo(report, kWarnNoNewPrivs, errno);
  if (plan.seccomp != nullptr &&
      prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, plan.seccomp, 0, 0) != 0) {
    ChildReportTo(report, kWarnSeccomp, errno);
  }
  execve(plan.path, plan.argv, plan.envp);
  ChildFail(report, kStageExec, errno);
}

std::string_view StageName(int32_t stage) {
  switch (stage) {
    case kStageSetpgid:
      return "setpgid";
    case kStageDeathSignal:
      return "prctl(PR_SET_PDEATHSIG)";
    case kStageFds:
      return "setting up file descriptors";
    case kStageChdir:
      return "chdir";
    case kStageRlimit:
      return "setrlimit";
    default:
      return "exec";
  }
}

// ---- the parent ----

std::string DirName(const std::string& path) {
  if (path.empty()) return "/";
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

std::string Mib(uint64_t bytes) {
  const uint64_t mib = bytes >> 20;
  return mib > 0 ? Cat(mib, " MiB") : Cat(bytes, " bytes");
}

// A limit for the child, never above the daemon's own hard limit (which an unprivileged child
// could not raise, so setrlimit would fail).
ChildLimit ChildRlimit(int resource, rlim_t soft, rlim_t hard) {
  rlimit cur{};
  if (getrlimit(static_cast<__rlimit_resource>(resource), &cur) == 0 &&
      cur.rlim_max != RLIM_INFINITY) {
    soft = std::min(soft, cur.rlim_max);
    hard = std::min(hard, cur.rlim_max);
  }
  return ChildLimit{resource, rlimit{std::min(soft, hard), hard}};
}

void LogOnce(std::once_flag& flag, log::Level level, const std::string& message) {
  std::call_once(flag, [&] { log::Write(level, kComponent, message); });
}

std::once_flag g_arch_once;
std::once_flag g_seccomp_once;
std::once_flag g_nnp_once;
std::once_flag g_pidfd_once;

class ProcessImpl final : public Process {
 public:
  // The monitor thread starts here, before the fork: when a fork bomb has used up the
  // machine's tasks a moment after exec, it is too late to ask for a thread.
  ProcessImpl(const LaunchSpec& spec, const RunnerOptions& options, UniqueFd wake)
      : name_(spec.manifest->name),
        limits_(spec.manifest->limits),
        options_(options),
        on_output_(spec.on_output),
        wake_(std::move(wake)),
        limiter_(options.output_lines_per_second, options.output_burst, SteadyClock::now()) {
    monitor_ = std::thread([this] { Monitor(); });
  }

  // Hands the started process to the monitor thread.
  void Begin(pid_t pid, UniqueFd pidfd, UniqueFd out, UniqueFd err, SteadyClock::time_point start) {
    std::lock_guard lock(mu_);
    pid_ = pid;
    pidfd_ = std::move(pidfd);
    streams_[0] = std::move(out);
    streams_[1] = std::move(err);
    start_ = start;
    began_ = true;
    cv_.notify_all();
  }

  ~ProcessImpl() override {
    if (monitor_.joinable()) {
      bool began;
      {
        std::lock_guard lock(mu_);
        began = began_;
        if (!began) {
          abandoned_ = true;
          cv_.notify_all();
        }
      }
      if (began) Stop(std::chrono::milliseconds(0));
      monitor_.join();
    }
  }

  pid_t pid() const override { return pid_; }

  ExitInfo Wait() override {
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [this] { return done_; });
    }
    if (monitor_.joinable() && monitor_.get_id() != std::this_thread::get_id()) monitor_.join();
    std::lock_guard lock(mu_);
    return result_;
  }

  void Signal(int sig) override {
    std::lock_guard lock(mu_);
    // Once the leader is reaped its pid, and so the group id, may belong to someone else.
    if (!reaped_) ::kill(-pid_, sig);
  }

  void Stop(std::chrono::milliseconds grace) override {
    {
      std::lock_guard lock(mu_);
      if (reaped_) return;
      if (!reason_) reason_ = Termination::kStopped;
      ::kill(-pid_, grace.count() > 0 ? SIGTERM : SIGKILL);
      const auto at = SteadyClock::now() + grace;
      if (!kill_at_ || at < *kill_at_) kill_at_ = at;
    }
    Wake();
  }

 private:
  void Wake() {
    const uint64_t one = 1;
    [[maybe_unused]] const ssize_t n = ::write(wake_.get(), &one, sizeof(one));
  }

  // Kills the group for a reason of the runner's own. The first reason given sticks.
  void KillFor(Termination reason, const std::string& detail) {
    std::lock_guard lock(mu_);
    if (reaped_) return;
    if (!reason_) {
      reason_ = reason;
      detail_ = detail;
      log::Warn(kComponent, Cat("plugin ", name_, " (pid ", pid_, "): ", detail,
                                "; killing its process group"));
    }
    ::kill(-pid_, SIGKILL);
  }

  void KillGroup() {
    std::lock_guard lock(mu_);
    if (!reaped_) ::kill(-pid_, SIGKILL);
  }

  void Watchdog() {
    const internal::GroupUsage g = internal::ScanProcessGroup(
        pid_, internal::ScanStop{limits_.processes, limits_.memory_bytes});
    peak_rss_ = std::max(peak_rss_, g.rss_bytes);
    if (g.rss_bytes > limits_.memory_bytes) {
      KillFor(Termination::kMemoryLimit, Cat("resident size ", Mib(g.rss_bytes),
                                             " over the limit of ", Mib(limits_.memory_bytes)));
    } else if (static_cast<uint64_t>(g.processes) > limits_.processes) {
      // Not in the contract's list of reasons: an unasked-for SIGKILL is a crash.
      KillFor(Termination::kCrash,
              Cat(g.processes, " processes in its group, over the limit of ", limits_.processes));
    }
  }

  void Deliver(std::string_view line) {
    if (on_output_) {
      on_output_(line);
    } else {
      log::Info(Cat("plugin ", name_), line);
    }
  }

  void OnLine(std::string_view line) {
    const auto now = SteadyClock::now();
    if (!limiter_.Admit(now)) return;
    // At most one summary a second; the monitor loop flushes a pending count when a flood stops.
    if (now - last_summary_ >= std::chrono::seconds(1)) FlushDropped(now);
    Deliver(line);
  }

  void FlushDropped(SteadyClock::time_point now) {
    const uint64_t dropped = limiter_.TakeDropped();
    if (dropped == 0) return;
    last_summary_ = now;
    Deliver(internal::DroppedSummary(dropped));
  }

  // Reads what is there (bounded, so the watchdog keeps its pace under a flood).
  void ReadStream(int i) {
    char buf[64 * 1024];
    size_t total = 0;
    const internal::LineSplitter::Emit emit = [this](std::string_view line) { OnLine(line); };
    while (total < 4 * sizeof(buf)) {
      const ssize_t n = ::read(streams_[i].get(), buf, sizeof(buf));
      if (n > 0) {
        split_[i].Feed(std::string_view(buf, static_cast<size_t>(n)), emit);
        total += static_cast<size_t>(n);
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
      split_[i].Finish(emit);  // EOF or error: the stream is over
      streams_[i].Reset();
      return;
    }
  }

  void Monitor();
  ExitInfo Classify(int status, bool have_status, const siginfo_t& info, const rusage& ru,
                    SteadyClock::time_point end);

  const std::string name_;
  const Limits limits_;
  const RunnerOptions options_;
  const std::function<void(std::string_view)> on_output_;
  UniqueFd wake_;
  // Set by Begin, before anyone else sees the Process; read-only afterwards.
  pid_t pid_ = 0;
  UniqueFd pidfd_;
  SteadyClock::time_point start_;

  std::mutex mu_;
  std::condition_variable cv_;
  bool reaped_ = false;                // guarded by mu_; no signal to the group after this
  std::optional<Termination> reason_;  // guarded by mu_
  std::string detail_;                 // guarded by mu_
  std::optional<SteadyClock::time_point> kill_at_;  // guarded by mu_; SIGKILL after Stop's grace
  bool done_ = false;                               // guarded by mu_
  bool began_ = false;                              // guarded by mu_
  bool abandoned_ = false;                          // guarded by mu_: the fork failed
  ExitInfo result_;                                 // guarded by mu_

  // Monitor thread only.
  UniqueFd streams_[2];
  internal::LineSplitter split_[2];
  internal::LineRateLimiter limiter_;
  SteadyClock::time_point last_summary_{};
  uint64_t peak_rss_ = 0;

  std::thread monitor_;
};

// Threads on the whole machine (the fourth field of /proc/loadavg, "running/total"): one cheap
// read that tells the watchdog a group may be growing fast, long before its next full look.
int64_t MachineThreads() {
  const int fd = ::open("/proc/loadavg", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  char buf[128];
  const ssize_t n = ::read(fd, buf, sizeof(buf) - 1);
  ::close(fd);
  if (n <= 0) return -1;
  buf[n] = '\0';
  const char* slash = std::strchr(buf, '/');
  return slash == nullptr ? -1 : std::strtoll(slash + 1, nullptr, 10);
}

void ProcessImpl::Monitor() {
  using std::chrono::milliseconds;
  {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [this] { return began_ || abandoned_; });
    if (abandoned_) return;
  }
  const auto interval = std::max(options_.watchdog_interval, milliseconds(1));
  constexpr auto kNever = SteadyClock::time_point::max();
  auto wall_deadline = kNever;
  if (limits_.wall_seconds) wall_deadline = start_ + std::chrono::seconds(*limits_.wall_seconds);

  auto next_scan = start_;
  constexpr milliseconds kFastCheck{10};
  auto next_fast_check = start_ + kFastCheck;
  int64_t threads_at_scan = -1;
  bool leader_exited = false;
  siginfo_t leader_info;
  std::memset(&leader_info, 0, sizeof(leader_info));
  SteadyClock::time_point group_deadline{};
  bool group_gone = false;
  SteadyClock::time_point drain_deadline{};

  for (;;) {
    auto now = SteadyClock::now();
    if (!leader_exited && !pidfd_.valid()) {
      // No pidfd (kernel before 5.3): ask without reaping, which keeps the group id ours.
      siginfo_t si;
      std::memset(&si, 0, sizeof(si));
      if (waitid(P_PID, static_cast<id_t>(pid_), &si, WEXITED | WNOHANG | WNOWAIT) == 0 &&
          si.si_pid == pid_) {
        leader_exited = true;
        leader_info = si;
        group_deadline = now + options_.group_kill_timeout;
        KillGroup();
      }
    }
    if (!leader_exited) {
      if (now >= next_fast_check) {
        // Many new tasks on the machine since the last look: look now (a fork bomb doubles
        // far faster than the regular interval).
        const int64_t threads = MachineThreads();
        if (threads >= 0 && threads_at_scan >= 0 &&
            threads - threads_at_scan > static_cast<int64_t>(limits_.processes)) {
          next_scan = now;
        }
        next_fast_check = now + kFastCheck;
      }
      if (now >= next_scan) {
        threads_at_scan = MachineThreads();
        Watchdog();
        next_scan = now + interval;
        next_fast_check = now + kFastCheck;
      }
      if (now >= wall_deadline) {
        KillFor(Termination::kTimeout,
                Cat("still running after its wall-clock limit of ", *limits_.wall_seconds, " s"));
        wall_deadline = kNever;
      }
      std::lock_guard lock(mu_);
      if (kill_at_ && now >= *kill_at_) {
        ::kill(-pid_, SIGKILL);
        kill_at_.reset();
      }
    } else if (!group_gone) {
      // The leader is a zombie we have not reaped, so the group id cannot be reused yet.
      const internal::GroupUsage g = internal::ScanProcessGroup(pid_, internal::ScanStop{0});
      if (g.processes == 0) {
        group_gone = true;
        drain_deadline = now + options_.output_drain_timeout;
      } else if (now >= group_deadline) {
        log::Error(kComponent, Cat("plugin ", name_, " (pid ", pid_,
                                   "): part of its process group is still "
                                   "alive ",
                                   options_.group_kill_timeout.count(), " ms after SIGKILL"));
        group_gone = true;
        drain_deadline = now;
      } else {
        KillGroup();
      }
    }
    const bool streams_open = streams_[0].valid() || streams_[1].valid();
    if (group_gone && (!streams_open || now >= drain_deadline)) break;
    if (limiter_.pending_dropped() > 0 && now - last_summary_ >= std::chrono::seconds(1)) {
      FlushDropped(now);
    }

    // Sleep until something happens or the next check is due.
    auto until = now + interval;
    if (!leader_exited) {
      until = std::min({until, next_scan, next_fast_check});
      until = std::min(until, wall_deadline);
      std::lock_guard lock(mu_);
      if (kill_at_) until = std::min(until, *kill_at_);
    } else if (!group_gone) {
      until = now + milliseconds(5);
    } else {
      until = std::min(until, drain_deadline);
    }
    const auto wait = std::chrono::ceil<milliseconds>(until - now).count();

    pollfd fds[4];
    int nfds = 0;
    const int wake_index = nfds;
    fds[nfds++] = pollfd{wake_.get(), POLLIN, 0};
    int pidfd_index = -1;
    if (!leader_exited && pidfd_.valid()) {
      pidfd_index = nfds;
      fds[nfds++] = pollfd{pidfd_.get(), POLLIN, 0};
    }
    int stream_index[2] = {-1, -1};
    for (int i = 0; i < 2; ++i) {
      if (!streams_[i].valid()) continue;
      stream_index[i] = nfds;
      fds[nfds++] = pollfd{streams_[i].get(), POLLIN, 0};
    }
    const int ready = ::poll(fds, static_cast<nfds_t>(nfds),
                             static_cast<int>(std::clamp<int64_t>(wait, 0, 1000)));
    if (ready <= 0) continue;
    if (fds[wake_index].revents != 0) {
      uint64_t count;
      [[maybe_unused]] const ssize_t n = ::read(wake_.get(), &count, sizeof(count));
    }
    if (pidfd_index >= 0 && fds[pidfd_index].revents != 0) {
      siginfo_t si;
      std::memset(&si, 0, sizeof(si));
      if (waitid(P_PID, static_cast<id_t>(pid_), &si, WEXITED | WNOHANG | WNOWAIT) == 0) {
        leader_info = si;
      }
      leader_exited = true;
      group_deadline = SteadyClock::now() + options_.group_kill_timeout;
      KillGroup();  // whatever the plugin left behind goes with it
      pidfd_.Reset();
    }
    for (int i = 0; i < 2; ++i) {
      if (stream_index[i] >= 0 && fds[stream_index[i]].revents != 0) ReadStream(i);
    }
  }

  // Whatever is left: unterminated last lines, the count of dropped ones.
  const internal::LineSplitter::Emit emit = [this](std::string_view line) { OnLine(line); };
  for (int i = 0; i < 2; ++i) {
    if (streams_[i].valid()) {
      ReadStream(i);
      split_[i].Finish(emit);
      streams_[i].Reset();
    }
  }
  FlushDropped(SteadyClock::now());

  int status = 0;
  rusage ru;
  std::memset(&ru, 0, sizeof(ru));
  // Before the reap, not after: once the pid is released the kernel may hand it (and the group
  // id) to another process, and a concurrent Stop/Signal must no longer send to it. Every path
  // here has already killed the group.
  {
    std::lock_guard lock(mu_);
    reaped_ = true;
  }
  pid_t reaped;
  do {
    reaped = ::wait4(pid_, &status, 0, &ru);
  } while (reaped < 0 && errno == EINTR);
  const auto end = SteadyClock::now();
  if (reaped != pid_) {
    log::Warn(kComponent,
              Cat("plugin ", name_, " (pid ", pid_,
                  "): reaped by someone else (SIGCHLD ignored?): ", std::strerror(errno)));
  }
  ExitInfo result = Classify(status, reaped == pid_, leader_info, ru, end);
  std::lock_guard lock(mu_);
  result_ = std::move(result);
  done_ = true;
  cv_.notify_all();
}

ExitInfo ProcessImpl::Classify(int status, bool have_status, const siginfo_t& info,
                               const rusage& ru, SteadyClock::time_point end) {
  ExitInfo r;
  r.wall = std::chrono::duration_cast<std::chrono::milliseconds>(end - start_);
  r.cpu_seconds = static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
                  static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
  r.max_rss_bytes = std::max<uint64_t>(static_cast<uint64_t>(ru.ru_maxrss) * 1024, peak_rss_);
  r.output_lines_dropped = limiter_.total_dropped();
  bool exited = false;
  if (have_status) {
    if (WIFEXITED(status)) {
      exited = true;
      r.exit_code = WEXITSTATUS(status);
    } else if (WIFSIGNALED(status)) {
      r.signal = WTERMSIG(status);
    }
  } else if (info.si_code == CLD_EXITED) {
    exited = true;
    r.exit_code = info.si_status;
  } else if (info.si_code == CLD_KILLED || info.si_code == CLD_DUMPED) {
    r.signal = info.si_status;
  }

  std::lock_guard lock(mu_);
  r.detail = detail_;
  if (reason_) {
    r.termination = *reason_;
  } else if (exited) {
    r.termination = Termination::kExit;
  } else if (r.signal == SIGXCPU || (r.signal == SIGKILL && limits_.cpu_seconds &&
                                     r.cpu_seconds >= static_cast<double>(*limits_.cpu_seconds))) {
    r.termination = Termination::kCpuLimit;
    r.detail = Cat("used its CPU-time limit of ", *limits_.cpu_seconds, " s");
  } else {
    r.termination = Termination::kCrash;
  }
  return r;
}

class ProcessRunner final : public Runner {
 public:
  explicit ProcessRunner(RunnerOptions options) : options_(options) {}
  absl::StatusOr<std::unique_ptr<Process>> Launch(const LaunchSpec& spec) override;

 private:
  const RunnerOptions options_;
};

absl::StatusOr<std::unique_ptr<Process>> ProcessRunner::Launch(const LaunchSpec& spec) {
  if (spec.manifest == nullptr) return absl::InvalidArgumentError("launch without a manifest");
  const Manifest& m = *spec.manifest;
  if (m.command.empty()) return absl::InvalidArgumentError(Cat(m.name, ": empty command"));
  if (spec.token.size() > kMaxTokenBytes) {
    return absl::InvalidArgumentError(Cat(m.name, ": token longer than ", kMaxTokenBytes));
  }
  const auto fail = [&](std::string_view what, int err) {
    return absl::InternalError(
        Cat("cannot start ", m.command, ": ", what, what.empty() ? "" : ": ", std::strerror(err)));
  };

  // Everything the child needs is built here: after fork it may not allocate.
  const std::string dir = DirName(m.path);
  std::vector<std::string> args;
  args.push_back(m.command);
  args.insert(args.end(), m.args.begin(), m.args.end());
  std::vector<std::string> env = {
      "PATH=/usr/local/bin:/usr/bin:/bin",
      "LANG=C.UTF-8",
      Cat("HOME=", dir),
      Cat("OXG_BUS_ADDR=", spec.bus_address),
      Cat("OXG_PLUGIN_NAME=", m.name),
      Cat("OXG_PLUGIN_CONFIG=", m.config_json),
      Cat("OXG_AUTH_TOKEN_FD=", kTokenFd),
  };
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<char*> envp;
  for (std::string& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);

  ChildPlan plan;
  plan.parent = getpid();
  plan.path = m.command.c_str();
  plan.argv = argv.data();
  plan.envp = envp.data();
  plan.dir = dir.c_str();
  const Limits& l = m.limits;
  auto add_limit = [&](int resource, rlim_t soft, rlim_t hard) {
    plan.limits[plan.num_limits++] = ChildRlimit(resource, soft, hard);
  };
  if (l.cpu_seconds) add_limit(RLIMIT_CPU, *l.cpu_seconds, *l.cpu_seconds + 1);
  add_limit(RLIMIT_NOFILE, l.open_files, l.open_files);
  // RLIMIT_NPROC counts every task (threads included) of the user, the daemon's own among them:
  // set to `processes` it would stop a non-root plugin from starting a single thread. It is a
  // backstop above what the machine runs now; the watchdog enforces `processes` on the group.
  const int64_t machine = MachineThreads();
  const rlim_t nproc = static_cast<rlim_t>(machine > 0 ? machine : 4096) + 64 * l.processes;
  add_limit(RLIMIT_NPROC, nproc, nproc);
  add_limit(RLIMIT_CORE, 0, 0);
  // The memory limit proper is on resident size (the watchdog): interpreters and gRPC reserve
  // far more address space than they touch. RLIMIT_AS only stops a runaway between two looks.
  constexpr uint64_t kGiB = 1ull << 30;
  const uint64_t mem = std::min<uint64_t>(l.memory_bytes, 1ull << 50);
  const uint64_t as = std::max(4 * mem, mem + kGiB);
  add_limit(RLIMIT_AS, as, as);

  plan.seccomp = nullptr;
  if (const internal::SeccompProgram* filter = internal::DenyFilter()) {
    plan.seccomp = &filter->prog;
  } else {
    LogOnce(g_arch_once, log::Level::kWarn,
            "no seccomp filter for this architecture: plugins run without the system call "
            "deny-list");
  }

  UniqueFd devnull(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  if (!devnull.valid()) return fail("/dev/null", errno);
  UniqueFd out_r, out_w, err_r, err_w, token_r, token_w, report_r, report_w;
  OXG_RETURN_IF_ERROR(MakePipe(&out_r, &out_w));
  OXG_RETURN_IF_ERROR(MakePipe(&err_r, &err_w));
  OXG_RETURN_IF_ERROR(MakePipe(&token_r, &token_w));
  OXG_RETURN_IF_ERROR(MakePipe(&report_r, &report_w));
  UniqueFd wake(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!wake.valid()) return fail("eventfd", errno);

  // The token sits in the pipe before the child exists; the write end is closed, so the plugin
  // reads it and then EOF.
  if (fcntl(token_w.get(), F_SETFL, O_NONBLOCK) != 0) return fail("token pipe", errno);
  if (!spec.token.empty()) {
    const ssize_t n = ::write(token_w.get(), spec.token.data(), spec.token.size());
    if (n != static_cast<ssize_t>(spec.token.size())) {
      return fail("writing the token", n < 0 ? errno : EMSGSIZE);
    }
  }
  token_w.Reset();

  plan.fds[0] = devnull.get();
  plan.fds[1] = out_w.get();
  plan.fds[2] = err_w.get();
  plan.fds[3] = token_r.get();
  plan.fds[4] = report_w.get();

  std::unique_ptr<ProcessImpl> process;
  try {
    process = std::make_unique<ProcessImpl>(spec, options_, std::move(wake));
  } catch (const std::system_error& e) {
    return absl::ResourceExhaustedError(
        Cat("cannot start ", m.command, ": no thread to watch it: ", e.what()));
  }

  const auto start = SteadyClock::now();
  const pid_t pid = fork();
  if (pid < 0) return fail("fork", errno);  // `process` is abandoned: its thread just ends
  if (pid == 0) RunChild(plan);

  devnull.Reset();
  out_w.Reset();
  err_w.Reset();
  token_r.Reset();
  report_w.Reset();

  // Block until exec (EOF: the report pipe is close-on-exec) or a failure report.
  std::optional<ChildReport> fatal;
  for (;;) {
    ChildReport r{};
    const ssize_t n = ::read(report_r.get(), &r, sizeof(r));
    if (n < 0 && errno == EINTR) continue;
    if (n != static_cast<ssize_t>(sizeof(r))) break;
    if (r.stage == kWarnSeccomp) {
      LogOnce(g_seccomp_once, log::Level::kWarn,
              Cat("cannot install the seccomp filter (", std::strerror(r.err),
                  "): plugins run without the system call deny-list"));
    } else if (r.stage == kWarnNoNewPrivs) {
      LogOnce(g_nnp_once, log::Level::kWarn,
              Cat("cannot set PR_SET_NO_NEW_PRIVS for plugins: ", std::strerror(r.err)));
    } else {
      fatal = r;
    }
  }
  if (fatal) {
    int status;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return fail(fatal->stage == kStageExec ? "" : StageName(fatal->stage), fatal->err);
  }

  UniqueFd pidfd(static_cast<int>(syscall(SYS_pidfd_open, pid, 0)));
  if (!pidfd.valid()) {
    LogOnce(g_pidfd_once, log::Level::kInfo,
            Cat("pidfd_open: ", std::strerror(errno), "; plugin exits are noticed by polling"));
  }
  for (UniqueFd* fd : {&out_r, &err_r}) {
    fcntl(fd->get(), F_SETFL, fcntl(fd->get(), F_GETFL) | O_NONBLOCK);
  }
  log::Info(kComponent, Cat("plugin ", m.name, " started (pid ", pid, ")"));
  process->Begin(pid, std::move(pidfd), std::move(out_r), std::move(err_r), start);
  return std::unique_ptr<Process>(std::move(process));
}

}  // namespace

std::unique_ptr<Runner> MakeProcessRunner(RunnerOptions options) {
  return std::make_unique<ProcessRunner>(options);
}

}  // namespace oxg::plugins
