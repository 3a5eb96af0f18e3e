// The real runner against a deliberately misbehaving plugin (misbehave.cc): every way a plugin
// can end, with small limits, and what must hold afterwards (no process of its group alive, the
// test process's own limits untouched, no token where other users can read it).
//
// Waits are bounded: a plugin that is not stopped by the runner is killed by a wall-clock limit
// (or by the test's Stop) so no test can hang.
#include "plugins/runner.h"

#include <dirent.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <fstream>
#include <mutex>
#include <sstream>
#include <regex>
#include <string>
#include <thread>
#include <vector>

namespace oxg::plugins {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using ::testing::HasSubstr;
using ::testing::StartsWith;

// Members of process group `pgid` that are alive (zombies are dead: they wait to be reaped).
std::vector<pid_t> LiveGroupMembers(pid_t pgid) {
  std::vector<pid_t> out;
  DIR* dir = opendir("/proc");
  if (dir == nullptr) return out;
  while (const dirent* e = readdir(dir)) {
    const pid_t pid = static_cast<pid_t>(std::atoi(e->d_name));
    if (pid <= 0) continue;
    std::ifstream in(std::string("/proc/") + e->d_name + "/stat");
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const size_t close = text.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream fields(text.substr(close + 1));
    char state = '?';
    pid_t ppid = 0, pgrp = 0;
    fields >> state >> ppid >> pgrp;
    if (pgrp == pgid && state != 'Z' && state != 'X') out.push_back(pid);
  }
  closedir(dir);
  return out;
}

// The output of one run, collected from the runner's thread.
class Output {
 public:
  std::function<void(std::string_view)> Sink() {
    return [this](std::string_view line) {
      std::lock_guard lock(mu_);
      lines_.emplace_back(line);
      cv_.notify_all();
    };
  }
  std::vector<std::string> Lines() {
    std::lock_guard lock(mu_);
    return lines_;
  }
  // Waits (bounded) for a line equal to `line`.
  bool WaitFor(const std::string& line, milliseconds timeout = milliseconds(10'000)) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] {
      for (const auto& l : lines_) {
        if (l == line) return true;
      }
      return false;
    });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::string> lines_;
};

class RunnerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/oxg-runner-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    runner_ = MakeProcessRunner();
  }
  void TearDown() override {
    ReapOrphans();
    std::string cmd = "rm -rf '" + dir_ + "'";
    ASSERT_EQ(std::system(cmd.c_str()), 0);
  }

  // Orphans of a killed group are re-parented to init, and this machine's init may not reap:
  // tests that leave orphans make the test process their subreaper and reap them here.
  static void BecomeSubreaper() { ASSERT_EQ(prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), 0); }
  static void ReapOrphans() {
    while (waitpid(-1, nullptr, WNOHANG) > 0) {
    }
  }

  Manifest MakeManifest(const std::string& mode) {
    Manifest m;
    m.path = dir_ + "/manifest.json";
    m.name = "misbehave";
    m.version = "1";
    m.command = OXG_MISBEHAVE_PATH;
    m.args = {mode};
    m.limits.wall_seconds = 30;  // the backstop that keeps every test bounded
    m.config_json = R"({"k":"v"})";
    return m;
  }

  std::unique_ptr<Process> Launch(const Manifest& m, Output* out,
                                  const std::string& token = "secret-token") {
    LaunchSpec spec;
    spec.manifest = &m;
    spec.bus_address = "127.0.0.1:50051";
    spec.token = token;
    spec.on_output = out->Sink();
    auto p = runner_->Launch(spec);
    EXPECT_TRUE(p.ok()) << p.status();
    return p.ok() ? std::move(p).value() : nullptr;
  }

  ExitInfo Run(const Manifest& m, Output* out) {
    auto p = Launch(m, out);
    if (p == nullptr) return ExitInfo{};
    const pid_t pgid = p->pid();
    ExitInfo info = p->Wait();
    EXPECT_THAT(LiveGroupMembers(pgid), ::testing::IsEmpty());
    return info;
  }

  std::string dir_;
  std::unique_ptr<Runner> runner_;
};

TEST_F(RunnerTest, ExitZero) {
  Output out;
  const ExitInfo info = Run(MakeManifest("exit0"), &out);
  EXPECT_EQ(info.termination, Termination::kExit);
  EXPECT_EQ(info.exit_code, 0);
  EXPECT_EQ(info.signal, 0);
  EXPECT_TRUE(info.detail.empty());
}

TEST_F(RunnerTest, ExitCodeThree) {
  Output out;
  const ExitInfo info = Run(MakeManifest("exit3"), &out);
  EXPECT_EQ(info.termination, Termination::kExit);
  EXPECT_EQ(info.exit_code, 3);
  EXPECT_EQ(TerminationName(info.termination), "exit");
}

TEST_F(RunnerTest, CrashAtStart) {
  Output out;
  const ExitInfo info = Run(MakeManifest("crash"), &out);
  EXPECT_EQ(info.termination, Termination::kCrash);
  EXPECT_EQ(info.signal, SIGSEGV);
  EXPECT_EQ(TerminationName(info.termination), "crash");
}

TEST_F(RunnerTest, ExecFailureIsAClearError) {
  Manifest m = MakeManifest("exit0");
  m.command = dir_ + "/no-such-plugin";
  LaunchSpec spec;
  spec.manifest = &m;
  auto p = runner_->Launch(spec);
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().message(), "cannot start " + m.command + ": No such file or directory");
}

TEST_F(RunnerTest, UnboundedAllocationIsKilledAtTheMemoryLimit) {
  Manifest m = MakeManifest("alloc");
  m.limits.memory_bytes = 64ull << 20;
  Output out;
  const ExitInfo info = Run(m, &out);
  EXPECT_EQ(info.termination, Termination::kMemoryLimit);
  EXPECT_EQ(info.signal, SIGKILL);
  EXPECT_GT(info.max_rss_bytes, 64ull << 20);
  EXPECT_THAT(info.detail, HasSubstr("over the limit of 64 MiB"));
  EXPECT_EQ(TerminationName(info.termination), "memory_limit");
}

// A process whose main thread has exited still counts: its other threads hold the memory.
TEST_F(RunnerTest, AllocationAfterTheMainThreadLeftIsStillKilledAtTheMemoryLimit) {
  Manifest m = MakeManifest("alloc-headless");
  m.limits.memory_bytes = 64ull << 20;
  Output out;
  const ExitInfo info = Run(m, &out);
  EXPECT_EQ(info.termination, Termination::kMemoryLimit);
  EXPECT_THAT(info.detail, HasSubstr("over the limit of 64 MiB"));
}

TEST_F(RunnerTest, SpinningHitsTheCpuLimit) {
  Manifest m = MakeManifest("spin");
  m.limits.cpu_seconds = 1;
  Output out;
  const ExitInfo info = Run(m, &out);
  EXPECT_EQ(info.termination, Termination::kCpuLimit);
  EXPECT_EQ(info.signal, SIGXCPU);
  EXPECT_GE(info.cpu_seconds, 0.9);
  EXPECT_EQ(TerminationName(info.termination), "cpu_limit");
}

TEST_F(RunnerTest, WallClockLimitIsATimeout) {
  Manifest m = MakeManifest("sleep");
  m.limits.wall_seconds = 1;
  Output out;
  const ExitInfo info = Run(m, &out);
  EXPECT_EQ(info.termination, Termination::kTimeout);
  EXPECT_EQ(info.signal, SIGKILL);
  EXPECT_GE(info.wall, milliseconds(1000));
  EXPECT_LT(info.wall, milliseconds(5000));
  EXPECT_EQ(TerminationName(info.termination), "timeout");
}

TEST_F(RunnerTest, StopEndsAPoliteProcessWithSigterm) {
  Output out;
  auto p = Launch(MakeManifest("sleep"), &out);
  ASSERT_NE(p, nullptr);
  ASSERT_TRUE(out.WaitFor("ready"));
  const auto t0 = std::chrono::steady_clock::now();
  p->Stop(seconds(10));
  const ExitInfo info = p->Wait();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, seconds(9));  // before the 10 s grace
  EXPECT_EQ(info.termination, Termination::kStopped);
  EXPECT_EQ(info.signal, SIGTERM);
  EXPECT_THAT(LiveGroupMembers(p->pid()), ::testing::IsEmpty());
}

TEST_F(RunnerTest, IgnoringSigtermIsKilledAfterTheGrace) {
  Output out;
  auto p = Launch(MakeManifest("ignore-term"), &out);
  ASSERT_NE(p, nullptr);
  ASSERT_TRUE(out.WaitFor("ready"));
  const auto t0 = std::chrono::steady_clock::now();
  p->Stop(milliseconds(500));
  const ExitInfo info = p->Wait();
  const auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(took, milliseconds(450));
  // Killed by the SIGKILL at the end of the grace, not by waiting out something else (bounded
  // loosely: the machine may be busy; the signal says which path ended it).
  EXPECT_LT(took, seconds(10));
  EXPECT_EQ(info.termination, Termination::kStopped);
  EXPECT_EQ(info.signal, SIGKILL);
  EXPECT_THAT(LiveGroupMembers(p->pid()), ::testing::IsEmpty());
}

TEST_F(RunnerTest, ChildrenLeftBehindAreKilled) {
  BecomeSubreaper();
  Output out;
  auto p = Launch(MakeManifest("orphan"), &out);
  ASSERT_NE(p, nullptr);
  const ExitInfo info = p->Wait();
  EXPECT_EQ(info.termination, Termination::kExit);
  EXPECT_EQ(info.exit_code, 0);
  ASSERT_EQ(out.Lines().size(), 1u);
  EXPECT_THAT(out.Lines()[0], StartsWith("child "));
  EXPECT_THAT(LiveGroupMembers(p->pid()), ::testing::IsEmpty());
}

TEST_F(RunnerTest, ForkBombIsContained) {
  BecomeSubreaper();
  Manifest m = MakeManifest("fork-bomb");
  m.limits.processes = 8;
  Output out;
  auto p = Launch(m, &out);
  ASSERT_NE(p, nullptr);
  const pid_t pgid = p->pid();
  const ExitInfo info = p->Wait();
  EXPECT_EQ(info.termination, Termination::kCrash);
  EXPECT_EQ(info.signal, SIGKILL);
  EXPECT_THAT(info.detail, HasSubstr("processes in its group, over the limit of 8"));
  EXPECT_LT(info.wall, seconds(10));
  // It could not leave its group (seccomp), so killing the group got all of it.
  EXPECT_THAT(out.Lines(), ::testing::Contains("setsid: Operation not permitted"));
  EXPECT_THAT(out.Lines(), ::testing::Contains("setpgid: Operation not permitted"));
  EXPECT_THAT(LiveGroupMembers(pgid), ::testing::IsEmpty());
  // Once the orphans are reaped, the group is gone altogether.
  const auto deadline = std::chrono::steady_clock::now() + seconds(10);
  while (::kill(-pgid, 0) == 0 && std::chrono::steady_clock::now() < deadline) {
    ReapOrphans();
    std::this_thread::sleep_for(milliseconds(10));
  }
  EXPECT_EQ(::kill(-pgid, 0), -1);
  EXPECT_EQ(errno, ESRCH);
}

TEST_F(RunnerTest, FloodedOutputIsBounded) {
  Output out;
  auto p = Launch(MakeManifest("flood"), &out);
  ASSERT_NE(p, nullptr);
  const auto t0 = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(milliseconds(1500));
  p->Stop(milliseconds(200));
  const ExitInfo info = p->Wait();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(info.termination, Termination::kStopped);
  const auto lines = out.Lines();
  size_t summaries = 0;
  uint64_t dropped = 0;
  for (const auto& l : lines) {
    if (l.rfind("(", 0) == 0) {
      ++summaries;
      dropped += std::strtoull(l.c_str() + 1, nullptr, 10);
      EXPECT_THAT(l, HasSubstr("lines dropped: the plugin writes too fast)"));
    } else {
      EXPECT_EQ(l, "flood flood flood flood flood flood flood flood");
    }
  }
  // Burst (200) + 200 a second, plus a summary at most once a second (and one at the end).
  EXPECT_LE(lines.size() - summaries, static_cast<size_t>(200 + 200 * secs + 1));
  EXPECT_GE(lines.size() - summaries, 200u);
  EXPECT_GE(summaries, 1u);
  EXPECT_LE(summaries, static_cast<size_t>(secs + 2));
  EXPECT_GT(dropped, 1000u);
  EXPECT_EQ(dropped, info.output_lines_dropped);
}

TEST_F(RunnerTest, LongLinesAreCut) {
  Output out;
  const ExitInfo info = Run(MakeManifest("long-line"), &out);
  EXPECT_EQ(info.termination, Termination::kExit);
  EXPECT_EQ(out.Lines(), (std::vector<std::string>{std::string(4096, 'x') + "\u2026", "after"}));
}

TEST_F(RunnerTest, EnvironmentIsMinimalAndTheTokenComesOnlyFromTheFd) {
  const std::string token = "tok-" + std::to_string(getpid()) + "-f00dfeed";
  Output out;
  Manifest m = MakeManifest("print-env");
  auto p = Launch(m, &out, token);
  ASSERT_NE(p, nullptr);
  const ExitInfo info = p->Wait();
  EXPECT_EQ(info.termination, Termination::kExit);
  std::vector<std::string> env;
  std::string cmdline, got_token, cwd, fds, seccomp, nnp;
  for (const auto& l : out.Lines()) {
    if (l.rfind("env: ", 0) == 0) env.push_back(l.substr(5));
    if (l.rfind("cmdline: ", 0) == 0) cmdline = l.substr(9);
    if (l.rfind("token: ", 0) == 0) got_token = l.substr(7);
    if (l.rfind("cwd: ", 0) == 0) cwd = l.substr(5);
    if (l.rfind("fds: ", 0) == 0) fds = l.substr(5);
    if (l.rfind("Seccomp:", 0) == 0) seccomp = l;
    if (l.rfind("NoNewPrivs:", 0) == 0) nnp = l;
  }
  EXPECT_THAT(env, ::testing::UnorderedElementsAre(
                       "PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8", "HOME=" + dir_,
                       "OXG_BUS_ADDR=127.0.0.1:50051", "OXG_PLUGIN_NAME=misbehave",
                       R"(OXG_PLUGIN_CONFIG={"k":"v"})", "OXG_AUTH_TOKEN_FD=3"));
  for (const auto& e : env) EXPECT_THAT(e, ::testing::Not(HasSubstr(token)));
  EXPECT_EQ(cmdline, std::string(OXG_MISBEHAVE_PATH) + " print-env ");
  EXPECT_EQ(got_token, token);
  EXPECT_EQ(cwd, dir_);
  // 3 (the token) was read and closed by the plugin; the launch report pipe (4) closed at exec;
  // nothing of the runner's leaked.
  EXPECT_EQ(fds, "0 1 2");
  EXPECT_EQ(seccomp, "Seccomp:\t2");
  EXPECT_EQ(nnp, "NoNewPrivs:\t1");
}

TEST_F(RunnerTest, TokenIsNotInProcfsOfTheRunningPlugin) {
  const std::string token = "tok-" + std::to_string(getpid()) + "-c0ffee";
  Output out;
  auto p = Launch(MakeManifest("sleep"), &out, token);
  ASSERT_NE(p, nullptr);
  ASSERT_TRUE(out.WaitFor("ready"));
  for (const char* file : {"environ", "cmdline"}) {
    std::ifstream in("/proc/" + std::to_string(p->pid()) + "/" + file, std::ios::binary);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    EXPECT_FALSE(text.empty()) << file;
    EXPECT_EQ(text.find(token), std::string::npos) << file;
  }
  p->Stop(seconds(1));
  EXPECT_EQ(p->Wait().termination, Termination::kStopped);
}

TEST_F(RunnerTest, DeniedSystemCallsFailWithEperm) {
  Output out;
  const ExitInfo info = Run(MakeManifest("escape"), &out);
  EXPECT_EQ(info.termination, Termination::kExit);
  EXPECT_THAT(
      out.Lines(),
      ::testing::ElementsAre("setsid: Operation not permitted", "setpgid: Operation not permitted",
                             "ptrace: Operation not permitted", "unshare: Operation not permitted",
                             "kill daemon: Operation not permitted",
                             "kill everyone: Operation not permitted",
                             "prlimit daemon: Operation not permitted",
                             "clone newuser: Operation not permitted",
                             "clone3: Function not implemented", "kill self: ok", "getpid: ok"));
}

TEST_F(RunnerTest, TheRunnersOwnLimitsAreUnchanged) {
  std::vector<rlimit> before(RLIMIT_NLIMITS), after(RLIMIT_NLIMITS);
  for (int r = 0; r < RLIMIT_NLIMITS; ++r) {
    ASSERT_EQ(getrlimit(static_cast<__rlimit_resource>(r), &before[r]), 0);
  }
  Manifest m = MakeManifest("exit0");
  m.limits.cpu_seconds = 5;
  m.limits.memory_bytes = 64ull << 20;
  m.limits.open_files = 16;
  m.limits.processes = 4;
  Output out;
  EXPECT_EQ(Run(m, &out).termination, Termination::kExit);
  for (int r = 0; r < RLIMIT_NLIMITS; ++r) {
    ASSERT_EQ(getrlimit(static_cast<__rlimit_resource>(r), &after[r]), 0);
    EXPECT_EQ(before[r].rlim_cur, after[r].rlim_cur) << "resource " << r;
    EXPECT_EQ(before[r].rlim_max, after[r].rlim_max) << "resource " << r;
  }
}

TEST_F(RunnerTest, PluginLimitsAreApplied) {
  // The plugin itself sees them: read from /proc/<pid>/limits while it sleeps.
  Manifest m = MakeManifest("sleep");
  m.limits.cpu_seconds = 7;
  m.limits.open_files = 33;
  m.limits.processes = 5;
  m.limits.memory_bytes = 64ull << 20;
  Output out;
  auto p = Launch(m, &out);
  ASSERT_NE(p, nullptr);
  ASSERT_TRUE(out.WaitFor("ready"));
  std::ifstream in("/proc/" + std::to_string(p->pid()) + "/limits");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_THAT(text, ::testing::ContainsRegex("Max cpu time +7 +8 "));
  EXPECT_THAT(text, ::testing::ContainsRegex("Max open files +33 +33 "));
  // Processes: a backstop above the machine's current task count (the watchdog enforces the
  // limit on the group), so a non-root plugin can still start threads.
  std::smatch nproc;
  ASSERT_TRUE(std::regex_search(text, nproc, std::regex("Max processes +([0-9]+) +([0-9]+) ")))
      << text;
  EXPECT_EQ(nproc[1], nproc[2]);
  EXPECT_GE(std::stoll(nproc[1]), 64 * 5);
  EXPECT_THAT(text, ::testing::ContainsRegex("Max core file size +0 +0 "));
  const std::string as = std::to_string((64ull << 20) + (1ull << 30));
  EXPECT_THAT(text, ::testing::ContainsRegex("Max address space +" + as + " +" + as));
  EXPECT_EQ(getpgid(p->pid()), p->pid());
  p->Stop(seconds(1));
  p->Wait();
}

}  // namespace
}  // namespace oxg::plugins
