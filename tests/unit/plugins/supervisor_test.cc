#include "plugins/supervisor.h"

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <condition_variable>
#include <deque>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/strings.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "telemetry/audit/audit.h"
#include "telemetry/metrics/metrics.h"
#include "telemetry/tracing/batch_processor.h"
#include "telemetry/tracing/in_memory_exporter.h"
#include "telemetry/tracing/tracer.h"
#include "unit/testing.h"

namespace oxg::plugins {
namespace {

using std::chrono::milliseconds;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// A failsafe for condition waits: a test that hangs fails instead. Nothing waits this long
// when the code under test works.
constexpr auto kFailsafe = std::chrono::seconds(20);

ExitInfo Exit(int code) {
  ExitInfo e;
  e.termination = Termination::kExit;
  e.exit_code = code;
  return e;
}
ExitInfo Killed(Termination t, int sig) {
  ExitInfo e;
  e.termination = t;
  e.signal = sig;
  return e;
}

// ---- RestartTracker ----------------------------------------------------------------------

BackoffOptions NoJitter() {
  BackoffOptions o;
  o.initial = milliseconds(1000);
  o.max = milliseconds(60'000);
  o.multiplier = 2.0;
  o.jitter = 0;
  o.stable_after = milliseconds(60'000);
  o.crash_loop_failures = 100;
  return o;
}

struct PolicyCase {
  RestartPolicy policy;
  ExitInfo exit;
  bool restart;
};

TEST(RestartTrackerTest, PolicyTimesTermination) {
  const std::vector<ExitInfo> failures = {
      Exit(1), Killed(Termination::kCrash, SIGSEGV), Killed(Termination::kCpuLimit, SIGXCPU),
      Killed(Termination::kMemoryLimit, SIGKILL), Killed(Termination::kTimeout, SIGKILL)};
  std::vector<PolicyCase> cases;
  for (RestartPolicy p :
       {RestartPolicy::kAlways, RestartPolicy::kOnFailure, RestartPolicy::kNever}) {
    cases.push_back({p, Exit(0), p == RestartPolicy::kAlways});
    cases.push_back({p, Killed(Termination::kStopped, SIGTERM), false});
    for (const ExitInfo& f : failures) cases.push_back({p, f, p != RestartPolicy::kNever});
  }
  for (const PolicyCase& c : cases) {
    RestartTracker t(c.policy, NoJitter(), 1);
    const auto d = t.OnExit(c.exit, milliseconds(10));
    SCOPED_TRACE(Cat(RestartPolicyName(c.policy), " termination ",
                     static_cast<int>(c.exit.termination), " code ", c.exit.exit_code));
    EXPECT_EQ(d.restart, c.restart);
    EXPECT_FALSE(d.crash_loop);
    if (d.restart) {
      EXPECT_EQ(d.delay, milliseconds(1000));
    }
  }
}

TEST(RestartTrackerTest, BackoffDoublesAndCaps) {
  BackoffOptions o = NoJitter();
  o.max = milliseconds(20'000);
  RestartTracker t(RestartPolicy::kOnFailure, o, 7);
  std::vector<int64_t> delays;
  for (int i = 0; i < 8; ++i) {
    const auto d = t.OnExit(Killed(Termination::kCrash, SIGSEGV), milliseconds(5));
    ASSERT_TRUE(d.restart);
    delays.push_back(d.delay.count());
  }
  EXPECT_THAT(delays, ElementsAre(1000, 2000, 4000, 8000, 16000, 20000, 20000, 20000));
  EXPECT_EQ(t.consecutive_failures(), 8);
}

TEST(RestartTrackerTest, CleanExitUnderAlwaysIsNotAFailure) {
  RestartTracker t(RestartPolicy::kAlways, NoJitter(), 1);
  EXPECT_EQ(t.OnExit(Exit(1), milliseconds(5)).delay, milliseconds(1000));
  EXPECT_EQ(t.OnExit(Exit(1), milliseconds(5)).delay, milliseconds(2000));
  const auto clean = t.OnExit(Exit(0), milliseconds(5));
  EXPECT_TRUE(clean.restart);
  EXPECT_EQ(clean.delay, milliseconds(1000));
  EXPECT_EQ(t.consecutive_failures(), 0);
  EXPECT_EQ(t.OnExit(Exit(1), milliseconds(5)).delay, milliseconds(1000));
}

TEST(RestartTrackerTest, JitterStaysInBoundsAndIsReproduciblePerSeed) {
  BackoffOptions o = NoJitter();
  o.jitter = 0.2;
  o.max = milliseconds(1'000'000);
  auto run = [&](uint64_t seed) {
    RestartTracker t(RestartPolicy::kAlways, o, seed);
    std::vector<int64_t> out;
    for (int i = 0; i < 10; ++i) {
      out.push_back(t.OnExit(Killed(Termination::kCrash, SIGABRT), milliseconds(1)).delay.count());
    }
    return out;
  };
  const auto a = run(42);
  EXPECT_EQ(a, run(42));
  EXPECT_NE(a, run(43));
  bool any_off_nominal = false;
  for (size_t i = 0; i < a.size(); ++i) {
    const double nominal = 1000.0 * (1 << i);
    EXPECT_GE(a[i], static_cast<int64_t>(nominal * 0.8) - 1) << i;
    EXPECT_LE(a[i], static_cast<int64_t>(nominal * 1.2) + 1) << i;
    if (a[i] != static_cast<int64_t>(nominal)) any_off_nominal = true;
  }
  EXPECT_TRUE(any_off_nominal);
}

TEST(RestartTrackerTest, StableRunResetsBackoff) {
  RestartTracker t(RestartPolicy::kOnFailure, NoJitter(), 1);
  EXPECT_EQ(t.OnExit(Exit(3), milliseconds(10)).delay, milliseconds(1000));
  EXPECT_EQ(t.OnExit(Exit(3), milliseconds(10)).delay, milliseconds(2000));
  EXPECT_EQ(t.OnExit(Exit(3), milliseconds(59'999)).delay, milliseconds(4000));
  // This run lasted stable_after: the failure it ended with counts as the first again.
  EXPECT_EQ(t.OnExit(Exit(3), milliseconds(60'000)).delay, milliseconds(1000));
  EXPECT_EQ(t.consecutive_failures(), 1);
}

TEST(RestartTrackerTest, CrashLoopAfterNFailuresInARow) {
  BackoffOptions o = NoJitter();
  o.crash_loop_failures = 3;
  RestartTracker t(RestartPolicy::kAlways, o, 1);
  EXPECT_TRUE(t.OnExit(Killed(Termination::kCrash, SIGSEGV), milliseconds(1)).restart);
  EXPECT_TRUE(t.OnExit(Killed(Termination::kCrash, SIGSEGV), milliseconds(1)).restart);
  const auto d = t.OnExit(Killed(Termination::kCrash, SIGSEGV), milliseconds(1));
  EXPECT_FALSE(d.restart);
  EXPECT_TRUE(d.crash_loop);
  EXPECT_EQ(t.consecutive_failures(), 3);
}

TEST(RestartTrackerTest, NeverPolicyIsNotACrashLoop) {
  BackoffOptions o = NoJitter();
  o.crash_loop_failures = 1;
  RestartTracker t(RestartPolicy::kNever, o, 1);
  const auto d = t.OnExit(Killed(Termination::kCrash, SIGSEGV), milliseconds(1));
  EXPECT_FALSE(d.restart);
  EXPECT_FALSE(d.crash_loop);
}

// ---- fakes -------------------------------------------------------------------------------

// Everything the fakes saw, in order ("launch p", "goodbye p", "stop p 5000ms", ...).
struct Journal {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::string> events;
  void Add(std::string e) {
    std::lock_guard lock(mu);
    events.push_back(std::move(e));
    cv.notify_all();
  }
  std::vector<std::string> Get() {
    std::lock_guard lock(mu);
    return events;
  }
};

class FakeProcess final : public Process {
 public:
  FakeProcess(std::string name, pid_t pid, Journal* journal, std::optional<ExitInfo> exit)
      : name_(std::move(name)), pid_(pid), journal_(journal), exit_(std::move(exit)) {}
  pid_t pid() const override { return pid_; }
  ExitInfo Wait() override {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [this] { return exit_.has_value(); });
    return *exit_;
  }
  void Signal(int sig) override { journal_->Add(Cat("signal ", name_, " ", sig)); }
  void Stop(milliseconds grace) override {
    journal_->Add(Cat("stop ", name_, " ", grace.count(), "ms"));
    End(Killed(Termination::kStopped, SIGTERM));
  }
  void End(ExitInfo e) {
    std::lock_guard lock(mu_);
    if (!exit_) exit_ = e;
    cv_.notify_all();
  }

 private:
  const std::string name_;
  const pid_t pid_;
  Journal* journal_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::optional<ExitInfo> exit_;
};

// Launches FakeProcesses. `script(name, n)` (n = 0, 1, ... per plugin) says how launch n ends:
// an error status fails the launch, an ExitInfo ends the process at once, nullopt keeps it
// running until the test ends it or the supervisor stops it.
class FakeRunner final : public Runner {
 public:
  using Outcome = std::variant<std::nullopt_t, ExitInfo, absl::Status>;
  FakeRunner(Journal* journal, std::function<Outcome(const std::string&, int)> script)
      : journal_(journal), script_(std::move(script)) {}

  absl::StatusOr<std::unique_ptr<Process>> Launch(const LaunchSpec& spec) override {
    const std::string name = spec.manifest->name;
    int n = 0;
    {
      std::lock_guard lock(mu_);
      n = launches_[name]++;
      specs_.push_back({name, spec.bus_address, spec.token});
    }
    journal_->Add(Cat("launch ", name));
    if (spec.on_output) spec.on_output(Cat("hello from launch ", n));
    Outcome o = script_(name, n);
    if (auto* status = std::get_if<absl::Status>(&o)) return *status;
    std::optional<ExitInfo> exit;
    if (auto* e = std::get_if<ExitInfo>(&o)) exit = *e;
    auto p = std::make_unique<FakeProcess>(name, 1000 + next_pid_++, journal_, exit);
    {
      std::lock_guard lock(mu_);
      running_[name] = p.get();
    }
    return p;
  }
  int launches(const std::string& name) {
    std::lock_guard lock(mu_);
    return launches_[name];
  }
  struct Spec {
    std::string name, bus_address, token;
  };
  std::vector<Spec> specs() {
    std::lock_guard lock(mu_);
    return specs_;
  }

 private:
  Journal* journal_;
  std::function<Outcome(const std::string&, int)> script_;
  std::mutex mu_;
  std::map<std::string, int> launches_;
  std::map<std::string, FakeProcess*> running_;
  std::vector<Spec> specs_;
  std::atomic<int> next_pid_{0};
};

// The supervisor's wait: records each requested delay; either advances the simulated clock to
// the deadline at once, or (blocking) waits for the stop request.
class FakeWaiter {
 public:
  FakeWaiter(SimulatedClock* clock, bool blocking) : clock_(clock), blocking_(blocking) {}
  bool WaitUntil(Clock::MonoTime deadline, std::stop_token stop) {
    std::unique_lock lock(mu_);
    delays_.push_back(std::chrono::duration_cast<milliseconds>(deadline - clock_->MonoNow()));
    cv_.notify_all();
    if (!blocking_) {
      clock_->Advance(deadline - clock_->MonoNow());
      return !stop.stop_requested();
    }
    std::condition_variable_any cv;
    cv.wait(lock, stop, [] { return false; });
    return false;
  }
  std::vector<int64_t> delays_ms() {
    std::lock_guard lock(mu_);
    std::vector<int64_t> out;
    for (auto d : delays_) out.push_back(d.count());
    return out;
  }
  bool WaitForWaits(size_t n) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, kFailsafe, [&] { return delays_.size() >= n; });
  }

 private:
  SimulatedClock* clock_;
  const bool blocking_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<milliseconds> delays_;
};

// Collects state changes; lets the test wait for one.
class StateWatcher {
 public:
  void On(std::string_view plugin, PluginRunState s) {
    std::lock_guard lock(mu_);
    seen_[std::string(plugin)].push_back(s);
    cv_.notify_all();
  }
  // Waits until `plugin` has entered `s` `times` times.
  bool WaitFor(const std::string& plugin, PluginRunState s, int times = 1) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, kFailsafe, [&] {
      const auto& v = seen_[plugin];
      return std::count(v.begin(), v.end(), s) >= times;
    });
  }
  std::vector<PluginRunState> Seen(const std::string& plugin) {
    std::lock_guard lock(mu_);
    return seen_[plugin];
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, std::vector<PluginRunState>> seen_;
};

using oxg::testing::ReadFile;

std::vector<nlohmann::json> ReadJsonLines(const std::string& path) {
  std::vector<nlohmann::json> out;
  std::istringstream in(ReadFile(path));
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) out.push_back(nlohmann::json::parse(line));
  }
  return out;
}

Manifest MakeManifest(std::string name, RestartPolicy policy) {
  Manifest m;
  m.path = Cat("/plugins/", name, "/manifest.json");
  m.name = std::move(name);
  m.version = "0.1.0";
  m.command = Cat("/plugins/", m.name, "/run");
  m.restart = policy;
  m.limits.cpu_seconds = 60;
  m.limits.memory_bytes = 1 << 28;
  m.limits.open_files = 128;
  m.limits.processes = 8;
  return m;
}

const tracing::Attribute* FindAttr(const tracing::SpanData& s, std::string_view key) {
  for (const auto& a : s.attributes) {
    if (a.key == key) return &a;
  }
  return nullptr;
}

class SupervisorTest : public ::testing::Test {
 protected:
  SupervisorTest() {
    char dir_template[] = "/tmp/oxg_supervisor_test_XXXXXX";
    dir_ = mkdtemp(dir_template);
    log_path_ = dir_ + "/log.txt";
    log_fd_ = ::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    log::SetFdForTesting(log_fd_);
    audit_path_ = dir_ + "/audit.jsonl";
    audit_ = *audit::AuditLog::Open(audit_path_, audit_stats_, clock_);
    tracer_.AddProcessor(std::make_unique<tracing::BatchSpanProcessor>(
        std::make_unique<tracing::InMemoryExporter>(spans_), tracing::BatchOptions{}, nullptr));
  }
  ~SupervisorTest() override {
    tracer_.Shutdown();
    log::SetFdForTesting(-1);
    ::close(log_fd_);
    std::remove(log_path_.c_str());
    std::remove(audit_path_.c_str());
    ::rmdir(dir_.c_str());
  }

  std::unique_ptr<Supervisor> Start(std::vector<Manifest> manifests, FakeWaiter& waiter,
                                    BackoffOptions backoff = NoJitter()) {
    SupervisorOptions o;
    o.manifests = std::move(manifests);
    o.bus_address = "127.0.0.1:4100";
    o.token = "secret-token";
    o.backoff = backoff;
    o.stop_grace = milliseconds(2500);
    SupervisorDeps d;
    d.registry = &registry_;
    d.tracer = &tracer_;
    d.audit = audit_.get();
    d.clock = &clock_;
    d.runner = runner_.get();
    d.say_goodbye = [this](std::string_view p) { journal_.Add(Cat("goodbye ", p)); };
    d.wait_until = [&waiter](Clock::MonoTime t, std::stop_token s) {
      return waiter.WaitUntil(t, std::move(s));
    };
    d.on_state = [this](std::string_view p, PluginRunState s) { states_.On(p, s); };
    auto sup = Supervisor::Start(std::move(o), std::move(d));
    EXPECT_TRUE(sup.ok()) << sup.status();
    return sup.ok() ? *std::move(sup) : nullptr;
  }

  void UseScript(std::function<FakeRunner::Outcome(const std::string&, int)> script) {
    runner_ = std::make_unique<FakeRunner>(&journal_, std::move(script));
  }

  std::string Metrics() { return registry_.Scrape({}); }
  std::vector<tracing::SpanData> Spans() {
    tracer_.Shutdown();
    std::lock_guard lock(spans_->mu);
    return spans_->spans;
  }
  Supervisor::PluginState StateOf(Supervisor& s, const std::string& name) {
    for (auto& p : s.Snapshot()) {
      if (p.name == name) return p;
    }
    ADD_FAILURE() << "no plugin " << name;
    return {};
  }

  std::string dir_, log_path_, audit_path_;
  int log_fd_ = -1;
  SimulatedClock clock_;
  metrics::Registry registry_{clock_};
  audit::AuditStats audit_stats_{registry_};
  std::unique_ptr<audit::AuditLog> audit_;
  std::shared_ptr<tracing::InMemoryExporter::State> spans_ =
      std::make_shared<tracing::InMemoryExporter::State>();
  tracing::Tracer tracer_{tracing::TracerOptions{1.0}, clock_};
  Journal journal_;
  StateWatcher states_;
  std::unique_ptr<FakeRunner> runner_;
};

TEST_F(SupervisorTest, CrashAtStartBacksOffThenCrashLoops) {
  UseScript([](const std::string&, int) -> FakeRunner::Outcome {
    return Killed(Termination::kCrash, SIGSEGV);
  });
  FakeWaiter waiter(&clock_, /*blocking=*/false);
  BackoffOptions b = NoJitter();
  b.crash_loop_failures = 5;
  auto sup = Start({MakeManifest("p1", RestartPolicy::kOnFailure)}, waiter, b);
  ASSERT_TRUE(states_.WaitFor("p1", PluginRunState::kCrashLoop));

  EXPECT_THAT(waiter.delays_ms(), ElementsAre(1000, 2000, 4000, 8000));
  EXPECT_EQ(runner_->launches("p1"), 5);
  auto st = StateOf(*sup, "p1");
  EXPECT_EQ(st.state, PluginRunState::kCrashLoop);
  EXPECT_EQ(st.restarts, 4);
  ASSERT_TRUE(st.last_exit.has_value());
  EXPECT_EQ(st.last_exit->signal, SIGSEGV);
  sup->Stop();
  EXPECT_EQ(runner_->launches("p1"), 5);  // not launched again, not even by Stop
  EXPECT_EQ(StateOf(*sup, "p1").state, PluginRunState::kCrashLoop);

  const std::string metrics = Metrics();
  EXPECT_THAT(metrics, HasSubstr(R"(oxg_plugin_restarts_total{plugin="p1",reason="crash"} 4)"));
  EXPECT_THAT(metrics, HasSubstr(R"(oxg_plugin_restarts_total{plugin="p1",reason="exit"} 0)"));

  const auto audit = ReadJsonLines(audit_path_);
  ASSERT_EQ(audit.size(), 5u);
  for (int i = 0; i < 4; ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ(audit[i]["event_type"], "plugin_restart");
    EXPECT_EQ(audit[i]["plugin_id"], "p1");
    EXPECT_EQ(audit[i]["decision"], "allow");
    EXPECT_EQ(audit[i]["metadata"]["termination"], "crash");
    EXPECT_EQ(audit[i]["metadata"]["signal"], "11");
    EXPECT_EQ(audit[i]["metadata"]["attempt"], std::to_string(i + 1));
    EXPECT_EQ(audit[i]["metadata"]["delay_ms"], std::to_string(1000 << i));
    EXPECT_TRUE(audit[i].contains("trace_id"));
  }
  EXPECT_EQ(audit[0]["reason"], "restarting after crash (signal 11) in 1.0 s");
  EXPECT_EQ(audit[3]["reason"], "restarting after crash (signal 11) in 8.0 s");
  EXPECT_EQ(audit[4]["decision"], "deny");
  EXPECT_EQ(audit[4]["metadata"]["failures"], "5");

  const std::string log = ReadFile(log_path_);
  EXPECT_THAT(log, HasSubstr("plugin p1 is crash-looping (5 failures in a row); not restarting "
                             "until 0xgend restarts"));
  EXPECT_THAT(log, HasSubstr("plugin p1: restarting after crash (signal 11) in 2.0 s"));
  EXPECT_THAT(log, HasSubstr("plugin p1: hello from launch 0"));
}

TEST_F(SupervisorTest, LaunchFailureCountsAsCrash) {
  UseScript([](const std::string&, int n) -> FakeRunner::Outcome {
    if (n == 0) return absl::NotFoundError("no such file: /plugins/p1/run");
    return std::nullopt;
  });
  FakeWaiter waiter(&clock_, /*blocking=*/false);
  auto sup = Start({MakeManifest("p1", RestartPolicy::kOnFailure)}, waiter);
  ASSERT_TRUE(states_.WaitFor("p1", PluginRunState::kRunning));
  EXPECT_THAT(waiter.delays_ms(), ElementsAre(1000));
  sup->Stop();
  EXPECT_THAT(ReadFile(log_path_),
              HasSubstr("plugin p1: no such file: /plugins/p1/run"));
  EXPECT_THAT(Metrics(), HasSubstr(R"(oxg_plugin_restarts_total{plugin="p1",reason="crash"} 1)"));
  const auto audit = ReadJsonLines(audit_path_);
  ASSERT_GE(audit.size(), 1u);
  EXPECT_EQ(audit[0]["reason"], "restarting after crash (launch failed) in 1.0 s");
}

TEST_F(SupervisorTest, ExitZeroUnderAlwaysRestartsAfterInitialDelay) {
  UseScript([](const std::string&, int n) -> FakeRunner::Outcome {
    if (n == 0) return Exit(0);
    return std::nullopt;
  });
  FakeWaiter waiter(&clock_, /*blocking=*/false);
  auto sup = Start({MakeManifest("p1", RestartPolicy::kAlways)}, waiter);
  ASSERT_TRUE(states_.WaitFor("p1", PluginRunState::kRunning, 2));
  EXPECT_EQ(runner_->launches("p1"), 2);
  EXPECT_THAT(waiter.delays_ms(), ElementsAre(1000));
  EXPECT_EQ(StateOf(*sup, "p1").restarts, 1);
  EXPECT_EQ(StateOf(*sup, "p1").pid, 1001);
  sup->Stop();
  EXPECT_THAT(Metrics(), HasSubstr(R"(oxg_plugin_restarts_total{plugin="p1",reason="exit"} 1)"));
  const auto audit = ReadJsonLines(audit_path_);
  ASSERT_EQ(audit.size(), 1u);
  EXPECT_EQ(audit[0]["decision"], "allow");
  EXPECT_EQ(audit[0]["reason"], "restarting after exit (code 0) in 1.0 s");
  EXPECT_EQ(audit[0]["metadata"]["exit_code"], "0");
  // The launch was handed the bus address and the token.
  ASSERT_EQ(runner_->specs().size(), 2u);
  EXPECT_EQ(runner_->specs()[0].bus_address, "127.0.0.1:4100");
  EXPECT_EQ(runner_->specs()[0].token, "secret-token");
}

TEST_F(SupervisorTest, ExitZeroUnderOnFailureAndNeverDoesNotRestart) {
  UseScript([](const std::string&, int) -> FakeRunner::Outcome { return Exit(0); });
  FakeWaiter waiter(&clock_, /*blocking=*/false);
  auto sup = Start({MakeManifest("onfail", RestartPolicy::kOnFailure),
                    MakeManifest("never", RestartPolicy::kNever)},
                   waiter);
  ASSERT_TRUE(states_.WaitFor("onfail", PluginRunState::kExited));
  ASSERT_TRUE(states_.WaitFor("never", PluginRunState::kExited));
  sup->Stop();
  EXPECT_EQ(runner_->launches("onfail"), 1);
  EXPECT_EQ(runner_->launches("never"), 1);
  EXPECT_TRUE(waiter.delays_ms().empty());
  EXPECT_EQ(StateOf(*sup, "onfail").state, PluginRunState::kExited);
  EXPECT_EQ(StateOf(*sup, "never").state, PluginRunState::kExited);
  EXPECT_THAT(Metrics(),
              HasSubstr(R"(oxg_plugin_restarts_total{plugin="onfail",reason="exit"} 0)"));
  EXPECT_TRUE(ReadJsonLines(audit_path_).empty());
  const std::string log = ReadFile(log_path_);
  EXPECT_THAT(log, HasSubstr("plugin onfail ended: exit (code 0); restart policy on-failure: "
                             "not restarting"));
  EXPECT_THAT(log,
              HasSubstr("plugin never ended: exit (code 0); restart policy never: not restarting"));
}

TEST_F(SupervisorTest, FailureUnderNeverDoesNotRestart) {
  UseScript([](const std::string&, int) -> FakeRunner::Outcome { return Exit(2); });
  FakeWaiter waiter(&clock_, /*blocking=*/false);
  auto sup = Start({MakeManifest("p1", RestartPolicy::kNever)}, waiter);
  ASSERT_TRUE(states_.WaitFor("p1", PluginRunState::kExited));
  sup->Stop();
  EXPECT_EQ(runner_->launches("p1"), 1);
  EXPECT_EQ(StateOf(*sup, "p1").last_exit->exit_code, 2);
}

TEST_F(SupervisorTest, StopDuringBackoffReturnsAndLaunchesNothingMore) {
  UseScript([](const std::string&, int) -> FakeRunner::Outcome { return Exit(1); });
  FakeWaiter waiter(&clock_, /*blocking=*/true);
  auto sup = Start({MakeManifest("p1", RestartPolicy::kAlways)}, waiter);
  ASSERT_TRUE(waiter.WaitForWaits(1));
  EXPECT_EQ(StateOf(*sup, "p1").state, PluginRunState::kBackoff);
  sup->Stop();
  EXPECT_EQ(runner_->launches("p1"), 1);
  EXPECT_EQ(StateOf(*sup, "p1").state, PluginRunState::kStopped);
  // Nothing was running: no goodbye, no signal.
  EXPECT_THAT(journal_.Get(), ElementsAre("launch p1"));
  sup->Stop();  // idempotent
}

TEST_F(SupervisorTest, StopSaysGoodbyeThenStopsTheProcessWithTheGrace) {
  UseScript([](const std::string&, int) -> FakeRunner::Outcome { return std::nullopt; });
  FakeWaiter waiter(&clock_, /*blocking=*/false);
  auto sup = Start({MakeManifest("a", RestartPolicy::kAlways)}, waiter);
  ASSERT_TRUE(states_.WaitFor("a", PluginRunState::kRunning));
  EXPECT_EQ(StateOf(*sup, "a").pid, 1000);
  sup->Stop();
  EXPECT_THAT(journal_.Get(), ElementsAre("launch a", "goodbye a", "stop a 2500ms"));
  const auto st = StateOf(*sup, "a");
  EXPECT_EQ(st.state, PluginRunState::kStopped);
  EXPECT_EQ(st.pid, 0);
  EXPECT_EQ(st.restarts, 0);
  EXPECT_EQ(st.last_exit->termination, Termination::kStopped);
  EXPECT_TRUE(waiter.delays_ms().empty());
  EXPECT_TRUE(ReadJsonLines(audit_path_).empty());
  EXPECT_THAT(ReadFile(log_path_), HasSubstr("plugin a stopped"));
}

TEST_F(SupervisorTest, StopsEveryPlugin) {
  UseScript([](const std::string&, int) -> FakeRunner::Outcome { return std::nullopt; });
  FakeWaiter waiter(&clock_, /*blocking=*/false);
  auto sup = Start(
      {MakeManifest("a", RestartPolicy::kAlways), MakeManifest("b", RestartPolicy::kOnFailure),
       MakeManifest("c", RestartPolicy::kNever)},
      waiter);
  for (const char* n : {"a", "b", "c"}) ASSERT_TRUE(states_.WaitFor(n, PluginRunState::kRunning));
  sup.reset();  // the destructor stops too
  const auto events = journal_.Get();
  for (const char* n : {"a", "b", "c"}) {
    const auto goodbye = std::find(events.begin(), events.end(), Cat("goodbye ", n));
    const auto stop = std::find(events.begin(), events.end(), Cat("stop ", n, " 2500ms"));
    ASSERT_NE(goodbye, events.end()) << n;
    ASSERT_NE(stop, events.end()) << n;
    EXPECT_LT(goodbye, stop) << n;
    EXPECT_EQ(states_.Seen(n).back(), PluginRunState::kStopped) << n;
  }
}

TEST_F(SupervisorTest, SpansOnePerRunWithExecUnderTask) {
  UseScript([](const std::string&, int n) -> FakeRunner::Outcome {
    if (n == 0) {
      ExitInfo e = Killed(Termination::kMemoryLimit, SIGKILL);
      e.cpu_seconds = 1.5;
      e.max_rss_bytes = 300 << 20;
      return e;
    }
    return std::nullopt;
  });
  FakeWaiter waiter(&clock_, /*blocking=*/false);
  auto sup = Start({MakeManifest("p1", RestartPolicy::kOnFailure)}, waiter);
  ASSERT_TRUE(states_.WaitFor("p1", PluginRunState::kRunning, 2));
  sup->Stop();
  const auto spans = Spans();
  std::vector<tracing::SpanData> tasks, execs;
  for (const auto& s : spans) {
    if (s.name == "plugin.supervisor.task") tasks.push_back(s);
    if (s.name == "plugin.runner.exec") execs.push_back(s);
  }
  ASSERT_EQ(tasks.size(), 2u);
  ASSERT_EQ(execs.size(), 2u);
  std::sort(tasks.begin(), tasks.end(),
            [](auto& a, auto& b) { return a.start_unix_nano < b.start_unix_nano; });
  EXPECT_NE(tasks[0].trace_id, tasks[1].trace_id);
  for (const auto& t : tasks) {
    EXPECT_FALSE(t.parent_span_id.IsValid());
    EXPECT_EQ(t.kind, tracing::SpanKind::kInternal);
    EXPECT_EQ(std::get<std::string>(FindAttr(t, "oxg.plugin.id")->value), "p1");
    EXPECT_EQ(std::get<std::string>(FindAttr(t, "oxg.task.id")->value).size(), 26u);
    EXPECT_EQ(std::get<int64_t>(FindAttr(t, "oxg.limit.cpu_seconds")->value), 60);
    EXPECT_EQ(std::get<int64_t>(FindAttr(t, "oxg.limit.memory_bytes")->value), 1 << 28);
    EXPECT_EQ(std::get<int64_t>(FindAttr(t, "oxg.limit.open_files")->value), 128);
    EXPECT_EQ(std::get<int64_t>(FindAttr(t, "oxg.limit.processes")->value), 8);
    EXPECT_EQ(FindAttr(t, "oxg.limit.wall_seconds"), nullptr);
    const auto exec = std::find_if(execs.begin(), execs.end(),
                                   [&](auto& e) { return e.parent_span_id == t.span_id; });
    ASSERT_NE(exec, execs.end());
    EXPECT_EQ(exec->trace_id, t.trace_id);
    EXPECT_EQ(std::get<std::string>(FindAttr(*exec, "process.executable.path")->value),
              "/plugins/p1/run");
  }
  EXPECT_NE(std::get<std::string>(FindAttr(tasks[0], "oxg.task.id")->value),
            std::get<std::string>(FindAttr(tasks[1], "oxg.task.id")->value));
  EXPECT_EQ(std::get<std::string>(FindAttr(tasks[0], "oxg.task.termination")->value),
            "memory_limit");
  EXPECT_EQ(tasks[0].status, tracing::StatusCode::kError);
  EXPECT_EQ(tasks[0].status_message, "memory_limit (signal 9)");
  EXPECT_EQ(std::get<std::string>(FindAttr(tasks[1], "oxg.task.termination")->value), "stopped");
  EXPECT_EQ(tasks[1].status, tracing::StatusCode::kOk);

  const auto first_exec = std::find_if(
      execs.begin(), execs.end(), [&](auto& e) { return e.parent_span_id == tasks[0].span_id; });
  EXPECT_EQ(std::get<int64_t>(FindAttr(*first_exec, "process.pid")->value), 1000);
  EXPECT_EQ(std::get<int64_t>(FindAttr(*first_exec, "oxg.process.signal")->value), SIGKILL);
  EXPECT_DOUBLE_EQ(std::get<double>(FindAttr(*first_exec, "oxg.cpu_seconds")->value), 1.5);
  EXPECT_EQ(std::get<int64_t>(FindAttr(*first_exec, "oxg.max_rss_bytes")->value), 300 << 20);
  EXPECT_EQ(first_exec->status, tracing::StatusCode::kError);

  // The restart's audit line belongs to the run's task span.
  const auto audit = ReadJsonLines(audit_path_);
  ASSERT_EQ(audit.size(), 1u);
  EXPECT_EQ(audit[0]["trace_id"], tasks[0].trace_id.ToHex());
  EXPECT_EQ(audit[0]["span_id"], tasks[0].span_id.ToHex());
  EXPECT_EQ(audit[0]["metadata"]["termination"], "memory_limit");
}

TEST_F(SupervisorTest, RejectsDuplicateNamesAndMissingRunner) {
  SupervisorOptions o;
  o.manifests = {MakeManifest("x", RestartPolicy::kAlways),
                 MakeManifest("x", RestartPolicy::kNever)};
  SupervisorDeps d;
  d.clock = &clock_;
  EXPECT_FALSE(Supervisor::Start(o, d).ok());
  UseScript([](const std::string&, int) -> FakeRunner::Outcome { return std::nullopt; });
  d.runner = runner_.get();
  auto s = Supervisor::Start(o, d);
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("two plugins named \"x\""));
}

TEST_F(SupervisorTest, EmptyPluginListStartsAndStops) {
  UseScript([](const std::string&, int) -> FakeRunner::Outcome { return std::nullopt; });
  FakeWaiter waiter(&clock_, /*blocking=*/false);
  auto sup = Start({}, waiter);
  EXPECT_TRUE(sup->Snapshot().empty());
  sup->Stop();
}

}  // namespace
}  // namespace oxg::plugins
