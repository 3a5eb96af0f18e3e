// The SDK against an in-process fake PluginBus (callback API, so the fake can end a stream with
// any status while a read is pending). Every wait is bounded; ports come from the OS.
#include "oxg/sdk/plugin.h"

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "oxg/plugin_bus.grpc.pb.h"

extern char** environ;

namespace oxg::sdk {
namespace {

namespace pb = ::oxg::plugin_bus;
using namespace std::chrono_literals;
constexpr auto kWait = 10s;

class FakeBus;

// One EventStream call. Callbacks may run on several gRPC threads; `mu_` orders them.
class FakeStream : public grpc::ServerBidiReactor<pb::PluginEvent, pb::HostEvent> {
 public:
  FakeStream(FakeBus* bus) : bus_(bus) { StartRead(&in_); }
  void OnReadDone(bool ok) override;
  void OnWriteDone(bool ok) override;
  void OnDone() override;
  void OnCancel() override { End(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled")); }
  void Send(const pb::HostEvent& event);
  void End(const grpc::Status& status);

 private:
  void FinishLocked(const grpc::Status& status);

  FakeBus* bus_;
  std::recursive_mutex mu_;
  pb::PluginEvent in_;
  bool got_hello_ = false;
  std::deque<pb::HostEvent> out_;
  bool writing_ = false;
  bool finished_ = false;
  std::optional<grpc::Status> finish_after_writes_;
};

// Records what plugins do, in order, and follows a script.
class FakeBus final : public pb::PluginBus::CallbackService {
 public:
  // Protocol log: "grant <name> <caps> token=<t>", "hello ...", "finding <type>",
  // "goodbye <reason>", "half-close".
  std::vector<std::string> log;
  std::vector<pb::PluginEvent> events;    // every message plugins sent, in order
  std::deque<grpc::Status> grant_script;  // next grants' statuses; OK when empty
  // A status to end each new stream with right after its hello (instead of a welcome).
  std::deque<grpc::Status> hello_script;
  int silent_hellos = 0;           // streams to leave without a welcome (after the script)
  bool ignore_half_close = false;  // do not end a stream when the plugin closes its side
  std::vector<std::string> traceparent_metadata;
  int grants_issued = 0;
  int streams_opened = 0;
  int streams_welcomed = 0;
  int streams_done = 0;
  std::string last_capability_token;
  FakeStream* current = nullptr;

  std::mutex mu;
  std::condition_variable cv;

  bool WaitFor(const std::function<bool()>& pred) {
    std::unique_lock lock(mu);
    return cv.wait_for(lock, kWait, pred);
  }
  int Count(const std::string& prefix) {
    int n = 0;
    for (const std::string& l : log) n += l.rfind(prefix, 0) == 0;
    return n;
  }
  void SendToCurrent(const pb::HostEvent& e) {
    FakeStream* s;
    {
      std::lock_guard lock(mu);
      s = current;
    }
    ASSERT_NE(s, nullptr);
    s->Send(e);
  }
  void EndCurrent(const grpc::Status& status) {
    FakeStream* s;
    {
      std::lock_guard lock(mu);
      s = current;
    }
    ASSERT_NE(s, nullptr);
    s->End(status);
  }

  grpc::ServerUnaryReactor* GrantCapabilities(grpc::CallbackServerContext* ctx,
                                              const pb::PluginCapabilityRequest* req,
                                              pb::PluginCapabilityGrant* resp) override {
    grpc::Status status;
    {
      std::lock_guard lock(mu);
      std::string caps;
      for (const auto& c : req->capabilities()) caps += (caps.empty() ? "" : ",") + c;
      log.push_back("grant " + req->plugin_name() + " " + caps + " token=" + req->auth_token());
      if (!grant_script.empty()) {
        status = grant_script.front();
        grant_script.pop_front();
      }
      if (status.ok()) {
        last_capability_token = "cap-" + std::to_string(++grants_issued);
        resp->set_capability_token(last_capability_token);
        resp->set_expires_at_unix(1);
      }
    }
    cv.notify_all();
    auto* reactor = ctx->DefaultReactor();
    reactor->Finish(status);
    return reactor;
  }

  grpc::ServerBidiReactor<pb::PluginEvent, pb::HostEvent>* EventStream(
      grpc::CallbackServerContext* ctx) override {
    std::lock_guard lock(mu);
    ++streams_opened;
    auto range = ctx->client_metadata().equal_range("traceparent");
    for (auto it = range.first; it != range.second; ++it) {
      traceparent_metadata.emplace_back(it->second.data(), it->second.size());
    }
    return new FakeStream(this);
  }
};

void FakeStream::OnReadDone(bool ok) {
  std::lock_guard self(mu_);
  if (!ok) {
    bool ignore;
    {
      std::lock_guard lock(bus_->mu);
      bus_->log.push_back("half-close");
      ignore = bus_->ignore_half_close;
    }
    bus_->cv.notify_all();
    // The plugin closed its side (after goodbye): the daemon answers OK.
    if (!ignore) FinishLocked(grpc::Status::OK);
    return;
  }
  std::optional<grpc::Status> refuse;
  bool welcome = false;
  {
    std::lock_guard lock(bus_->mu);
    bus_->events.push_back(in_);
    if (in_.has_hello()) {
      const pb::PluginHello& h = in_.hello();
      std::string subs, caps;
      for (const auto& s : h.subscriptions()) subs += (subs.empty() ? "" : ",") + s;
      for (const auto& c : h.capabilities()) caps += (caps.empty() ? "" : ",") + c;
      bus_->log.push_back("hello " + h.plugin_name() + " cap=" + h.capability_token() +
                          " subs=" + subs + " caps=" + caps + " token=" + h.auth_token() +
                          " pid=" + std::to_string(h.pid()));
    } else if (in_.has_finding()) {
      bus_->log.push_back("finding " + in_.finding().type());
    } else if (in_.has_goodbye()) {
      bus_->log.push_back("goodbye " + in_.goodbye().reason());
    } else {
      bus_->log.push_back("empty");
    }
    if (!got_hello_) {
      got_hello_ = true;
      if (!in_.has_hello()) {
        refuse = grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "first message not hello");
      } else if (in_.hello().capability_token() != bus_->last_capability_token) {
        refuse = grpc::Status(grpc::StatusCode::PERMISSION_DENIED, "capability token");
      } else if (!bus_->hello_script.empty()) {
        refuse = bus_->hello_script.front();
        bus_->hello_script.pop_front();
      } else if (bus_->silent_hellos > 0) {
        --bus_->silent_hellos;
      } else {
        welcome = true;
        bus_->current = this;
        ++bus_->streams_welcomed;
      }
    }
  }
  bus_->cv.notify_all();
  if (refuse) {
    FinishLocked(*refuse);
    return;
  }
  if (welcome) {
    pb::HostEvent w;
    w.set_core_version("9.9.9-fake");
    Send(w);
  }
  StartRead(&in_);
}

void FakeStream::Send(const pb::HostEvent& event) {
  std::lock_guard self(mu_);
  if (finished_ || finish_after_writes_) return;
  out_.push_back(event);
  if (!writing_) {
    writing_ = true;
    StartWrite(&out_.front());
  }
}

void FakeStream::OnWriteDone(bool ok) {
  std::lock_guard self(mu_);
  out_.pop_front();
  if (ok && !out_.empty()) {
    StartWrite(&out_.front());
    return;
  }
  writing_ = false;
  if (finish_after_writes_) FinishLocked(*finish_after_writes_);
}

void FakeStream::End(const grpc::Status& status) {
  std::lock_guard self(mu_);
  if (writing_) {
    finish_after_writes_ = status;
    return;
  }
  FinishLocked(status);
}

void FakeStream::FinishLocked(const grpc::Status& status) {
  if (finished_) return;
  if (writing_) {  // gRPC wants writes done before Finish
    finish_after_writes_ = status;
    return;
  }
  finished_ = true;
  Finish(status);
}

void FakeStream::OnDone() {
  {
    std::lock_guard lock(bus_->mu);
    if (bus_->current == this) bus_->current = nullptr;
    ++bus_->streams_done;
  }
  bus_->cv.notify_all();
  delete this;
}

pb::HostEvent Flow(common::FlowEvent::Type type, const std::string& data,
                   const std::string& flow_id, uint64_t seq) {
  pb::HostEvent e;
  common::FlowEvent* f = e.mutable_flow_event();
  f->set_type(type);
  f->set_data(data);
  f->set_flow_id(flow_id);
  f->set_sequence(seq);
  f->set_variant(common::FLOW_VARIANT_SANITIZED);
  f->set_captured_at_unix_nano(1700000000123456789);
  f->set_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
  f->set_raw_body_bytes(0);
  return e;
}

class SdkPluginTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(&bus_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_GT(port_, 0);
  }
  void TearDown() override {
    if (server_) server_->Shutdown(std::chrono::system_clock::now() + 2s);
  }

  PluginOptions Options() {
    return PluginOptions{.name = "test-plugin",
                         .capabilities = {"CAP_FLOW_INSPECT", "CAP_EMIT_FINDINGS"},
                         .subscriptions = {"FLOW_REQUEST", "FLOW_RESPONSE"},
                         .addr = "127.0.0.1:" + std::to_string(port_),
                         .token = "daemon-token",
                         .backoff_min = 5ms,
                         .backoff_max = 20ms};
  }

  // Runs the plugin on its own thread.
  std::future<Status> Start(Plugin& plugin) {
    return std::async(std::launch::async, [&plugin] { return plugin.Run(); });
  }

  static Status Await(std::future<Status>& f) {
    if (f.wait_for(kWait) != std::future_status::ready) {
      ADD_FAILURE() << "Run did not return";
      std::abort();  // the plugin thread would outlive the test's objects
    }
    return f.get();
  }

  FakeBus bus_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
};

// Collects messages delivered to callbacks.
struct Inbox {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<HttpMessage> messages;
  void Add(const HttpMessage& m) {
    {
      std::lock_guard lock(mu);
      messages.push_back(m);
    }
    cv.notify_all();
  }
  bool WaitFor(size_t n) {
    std::unique_lock lock(mu);
    return cv.wait_for(lock, kWait, [&] { return messages.size() >= n; });
  }
};

TEST_F(SdkPluginTest, HandshakeEventsFindingsAndGoodbye) {
  PluginOptions o = Options();
  o.traceparent = "00-11111111111111111111111111111111-2222222222222222-01";
  Plugin plugin(o);
  Inbox requests, responses;
  plugin.OnRequest([&](const HttpMessage& m) { requests.Add(m); });
  plugin.OnResponse([&](const HttpMessage& m) {
    Finding f{.type = "test.finding",
              .message = "seen " + std::to_string(m.status),
              .severity = Severity::kMedium,
              .target = "https://h/x",
              .evidence = "ev",
              .metadata = {{"k", "v1"}, {"k2", "v2"}, {"k", "v3"}}};
    EXPECT_TRUE(plugin.Emit(f, &m));
    responses.Add(m);
  });
  EXPECT_FALSE(plugin.Emit({.type = "early", .message = "m"}));  // not connected yet
  std::future<Status> run = Start(plugin);

  ASSERT_TRUE(bus_.WaitFor([&] { return bus_.current != nullptr; }));
  {
    std::lock_guard lock(bus_.mu);
    ASSERT_EQ(bus_.log.size(), 2u);
    EXPECT_EQ(bus_.log[0],
              "grant test-plugin CAP_FLOW_INSPECT,CAP_EMIT_FINDINGS token=daemon-token");
    EXPECT_EQ(bus_.log[1],
              "hello test-plugin cap=cap-1 subs=FLOW_REQUEST,FLOW_RESPONSE "
              "caps=CAP_FLOW_INSPECT,CAP_EMIT_FINDINGS token=daemon-token pid=" +
                  std::to_string(::getpid()));
    ASSERT_EQ(bus_.traceparent_metadata.size(), 1u);
    EXPECT_EQ(bus_.traceparent_metadata[0], o.traceparent);
  }

  bus_.SendToCurrent(Flow(common::FlowEvent::FLOW_REQUEST, "garbage", "F0", 1));
  bus_.SendToCurrent(Flow(common::FlowEvent::FLOW_REQUEST,
                          "GET /a HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi", "F1", 2));
  bus_.SendToCurrent(Flow(common::FlowEvent::FLOW_RESPONSE,
                          "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", "F1", 3));
  ASSERT_TRUE(requests.WaitFor(1));
  ASSERT_TRUE(responses.WaitFor(1));
  {
    const HttpMessage& m = requests.messages[0];
    EXPECT_EQ(m.flow_id, "F1");
    EXPECT_EQ(m.sequence, 2u);
    EXPECT_EQ(m.variant, Variant::kSanitized);
    EXPECT_EQ(m.method, "GET");
    EXPECT_EQ(m.body, "hi");
    EXPECT_EQ(m.raw_body_bytes, 2u);
    EXPECT_EQ(m.captured_at_unix_nano, 1700000000123456789);
    EXPECT_EQ(m.Url(), "https://h/a");
    EXPECT_EQ(responses.messages[0].status, 404);
  }
  EXPECT_TRUE(plugin.connected());
  ASSERT_TRUE(bus_.WaitFor([&] { return bus_.Count("finding") == 1; }));
  {
    std::lock_guard lock(bus_.mu);
    const pb::PluginEvent& e = bus_.events.back();
    ASSERT_TRUE(e.has_finding());
    EXPECT_EQ(e.traceparent(), "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    EXPECT_EQ(e.finding().flow_id(), "F1");
    EXPECT_EQ(e.finding().severity(), common::MEDIUM);
    EXPECT_EQ(e.finding().message(), "seen 404");
    EXPECT_EQ(e.finding().target(), "https://h/x");
    EXPECT_EQ(e.finding().evidence(), "ev");
    EXPECT_EQ(e.finding().metadata().at("k"), "v3");
    EXPECT_EQ(e.finding().metadata().at("k2"), "v2");
  }
  // A finding without a cause carries no trace and no flow.
  ASSERT_TRUE(plugin.Emit({.type = "free", .message = "m", .severity = Severity::kInfo}));
  ASSERT_TRUE(bus_.WaitFor([&] { return bus_.Count("finding") == 2; }));
  {
    std::lock_guard lock(bus_.mu);
    EXPECT_EQ(bus_.events.back().traceparent(), "");
    EXPECT_EQ(bus_.events.back().finding().flow_id(), "");
    EXPECT_EQ(bus_.events.back().finding().severity(), common::INFO);
  }

  plugin.Stop();
  EXPECT_TRUE(Await(run).ok());
  ASSERT_TRUE(bus_.WaitFor([&] { return bus_.streams_done == 1; }));
  {
    std::lock_guard lock(bus_.mu);
    ASSERT_GE(bus_.log.size(), 2u);
    EXPECT_EQ(bus_.log[bus_.log.size() - 2], "goodbye stopped");
    EXPECT_EQ(bus_.log.back(), "half-close");
    EXPECT_TRUE(bus_.traceparent_metadata.size() == 1);
  }
  const PluginCounters c = plugin.counters();
  EXPECT_EQ(c.events_received, 3u);
  EXPECT_EQ(c.parse_errors, 1u);
  EXPECT_EQ(c.findings_sent, 2u);
  EXPECT_EQ(c.findings_failed, 1u);
  EXPECT_EQ(c.connections, 1u);
  EXPECT_FALSE(plugin.connected());
  EXPECT_FALSE(plugin.Emit({.type = "late", .message = "m"}));
}

TEST_F(SdkPluginTest, NoTraceparentMetadataUnlessGiven) {
  Plugin plugin(Options());
  std::future<Status> run = Start(plugin);
  ASSERT_TRUE(bus_.WaitFor([&] { return bus_.current != nullptr; }));
  plugin.Stop();
  EXPECT_TRUE(Await(run).ok());
  std::lock_guard lock(bus_.mu);
  EXPECT_TRUE(bus_.traceparent_metadata.empty());
}

TEST_F(SdkPluginTest, ReconnectsAfterUnavailable) {
  Plugin plugin(Options());
  Inbox requests;
  plugin.OnRequest([&](const HttpMessage& m) { requests.Add(m); });
  std::future<Status> run = Start(plugin);
  ASSERT_TRUE(bus_.WaitFor([&] { return bus_.streams_welcomed == 1 && bus_.current; }));
  bus_.EndCurrent(grpc::Status(grpc::StatusCode::UNAVAILABLE, "daemon shutting down"));
  // A new grant (the capability token is single use) and a new hello with it.
  ASSERT_TRUE(bus_.WaitFor([&] { return bus_.streams_welcomed == 2 && bus_.current; }));
  {
    std::lock_guard lock(bus_.mu);
    EXPECT_EQ(bus_.Count("grant"), 2);
    EXPECT_EQ(bus_.Count("hello test-plugin cap=cap-2 "), 1);
  }
  bus_.SendToCurrent(Flow(common::FlowEvent::FLOW_REQUEST, "GET / HTTP/1.1\r\n\r\n", "F", 1));
  ASSERT_TRUE(requests.WaitFor(1));
  EXPECT_EQ(plugin.counters().connections, 2u);
  plugin.Stop();
  EXPECT_TRUE(Await(run).ok());
}

TEST_F(SdkPluginTest, TemporaryRefusalsRetryUntilWelcome) {
  bus_.grant_script = {grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "too many tokens"),
                       grpc::Status(grpc::StatusCode::UNAVAILABLE, "starting")};
  bus_.hello_script = {grpc::Status(grpc::StatusCode::ALREADY_EXISTS, "duplicate"),
                       grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "slow")};
  Plugin plugin(Options());
  std::future<Status> run = Start(plugin);
  ASSERT_TRUE(bus_.WaitFor([&] { return bus_.streams_welcomed == 1; }));
  {
    std::lock_guard lock(bus_.mu);
    EXPECT_EQ(bus_.Count("grant"), 5);
    EXPECT_EQ(bus_.streams_opened, 3);
  }
  plugin.Stop();
  EXPECT_TRUE(Await(run).ok());
}

TEST_F(SdkPluginTest, PermissionDeniedIsFatal) {
  bus_.grant_script = {
      grpc::Status(grpc::StatusCode::PERMISSION_DENIED, "no manifest declares test-plugin")};
  Plugin plugin(Options());
  std::future<Status> run = Start(plugin);
  const Status s = Await(run);
  EXPECT_EQ(s.code(), StatusCode::kPermissionDenied);
  EXPECT_NE(s.message().find("no manifest declares test-plugin"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("test-plugin"), std::string::npos);
  std::lock_guard lock(bus_.mu);
  EXPECT_EQ(bus_.Count("grant"), 1);
  EXPECT_EQ(bus_.streams_opened, 0);
}

TEST_F(SdkPluginTest, RefusedHelloIsFatal) {
  bus_.hello_script = {grpc::Status(grpc::StatusCode::PERMISSION_DENIED, "capability_escalation")};
  Plugin plugin(Options());
  std::future<Status> run = Start(plugin);
  const Status s = Await(run);
  EXPECT_EQ(s.code(), StatusCode::kPermissionDenied);
  EXPECT_NE(s.message().find("capability_escalation"), std::string::npos) << s.message();
}

TEST_F(SdkPluginTest, UnauthenticatedIsFatal) {
  bus_.grant_script = {grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "bad token")};
  Plugin plugin(Options());
  std::future<Status> run = Start(plugin);
  EXPECT_EQ(Await(run).code(), StatusCode::kUnauthenticated);
}

TEST_F(SdkPluginTest, MissingTokenIsFatalBeforeConnecting) {
  PluginOptions o = Options();
  o.token.clear();
  o.name = "nobody-sets-this-token";
  Plugin plugin(o);
  // Only when the process environment has no token either (ctest does not set one).
  if (ProcessEnv("OXG_AUTH_TOKEN") || ProcessEnv("OXG_AUTH_TOKEN_FILE") ||
      ProcessEnv("OXG_AUTH_TOKEN_FD")) {
    GTEST_SKIP() << "token variables set in the environment";
  }
  EXPECT_EQ(plugin.Run().code(), StatusCode::kInvalidArgument);
  std::lock_guard lock(bus_.mu);
  EXPECT_EQ(bus_.Count("grant"), 0);
}

TEST_F(SdkPluginTest, StopDuringBackoffWithNoDaemon) {
  server_->Shutdown(std::chrono::system_clock::now());
  server_.reset();
  PluginOptions o = Options();
  o.backoff_min = 50ms;
  o.backoff_max = 200ms;
  Plugin plugin(o);
  std::future<Status> run = Start(plugin);
  EXPECT_FALSE(plugin.WaitForStop(100ms));
  plugin.Stop();
  EXPECT_TRUE(plugin.WaitForStop(0ms));
  EXPECT_TRUE(Await(run).ok());
  EXPECT_EQ(plugin.counters().connections, 0u);
}

TEST_F(SdkPluginTest, StopCancelsWhenTheDaemonIgnoresGoodbye) {
  bus_.ignore_half_close = true;
  PluginOptions o = Options();
  o.stop_grace = 100ms;
  Plugin plugin(o);
  std::future<Status> run = Start(plugin);
  ASSERT_TRUE(bus_.WaitFor([&] { return bus_.current != nullptr; }));
  plugin.Stop();
  plugin.Stop();  // idempotent
  EXPECT_TRUE(Await(run).ok());
  ASSERT_TRUE(bus_.WaitFor([&] { return bus_.streams_done == 1; }));
  std::lock_guard lock(bus_.mu);
  EXPECT_EQ(bus_.Count("goodbye"), 1);
}

TEST_F(SdkPluginTest, WelcomeTimeoutRetries) {
  bus_.silent_hellos = 1;  // the first stream gets no welcome and is never ended by the fake
  PluginOptions o = Options();
  o.welcome_timeout = 100ms;
  Plugin plugin(o);
  std::future<Status> run = Start(plugin);
  ASSERT_TRUE(bus_.WaitFor([&] { return bus_.streams_welcomed == 1; }));
  {
    std::lock_guard lock(bus_.mu);
    EXPECT_EQ(bus_.streams_opened, 2);
    EXPECT_EQ(bus_.Count("grant"), 2);
  }
  plugin.Stop();
  EXPECT_TRUE(Await(run).ok());
}

TEST_F(SdkPluginTest, StopBeforeRun) {
  Plugin plugin(Options());
  plugin.Stop();
  EXPECT_TRUE(plugin.Run().ok());
  std::lock_guard lock(bus_.mu);
  EXPECT_EQ(bus_.Count("grant"), 0);
}

#ifdef OXG_EXAMPLE_PLUGIN
// The example program end to end: token through an inherited fd, SIGTERM ends it with exit 0
// after a goodbye (RunMain's signal thread).
TEST_F(SdkPluginTest, ExampleProgramRunsAndStopsOnSigterm) {
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  ASSERT_EQ(::write(fds[1], "daemon-token\n", 13), 13);
  ::close(fds[1]);
  std::vector<std::string> env_strings = {"OXG_PLUGIN_NAME=example-cpp",
                                          "OXG_BUS_ADDR=127.0.0.1:" + std::to_string(port_),
                                          "OXG_AUTH_TOKEN_FD=" + std::to_string(fds[0])};
  std::vector<char*> envp;
  for (std::string& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::string path = OXG_EXAMPLE_PLUGIN;
  char* argv[] = {path.data(), nullptr};
  pid_t pid = 0;
  ASSERT_EQ(::posix_spawn(&pid, path.c_str(), nullptr, nullptr, argv, envp.data()), 0);
  ::close(fds[0]);
  ASSERT_TRUE(bus_.WaitFor([&] { return bus_.current != nullptr; }));
  bus_.SendToCurrent(Flow(common::FlowEvent::FLOW_REQUEST,
                          "GET /x HTTP/1.1\r\nHost: example.test\r\n\r\n", "F9", 1));
  bus_.SendToCurrent(Flow(common::FlowEvent::FLOW_REQUEST,
                          "GET /y HTTP/1.1\r\nHost: example.test\r\n\r\n", "F10", 2));
  ASSERT_TRUE(bus_.WaitFor([&] { return bus_.Count("finding example.host-seen") == 1; }));
  ASSERT_EQ(::kill(pid, SIGTERM), 0);
  std::promise<int> exited;
  std::thread waiter([&] {
    int status = 0;
    ::waitpid(pid, &status, 0);
    exited.set_value(status);
  });
  std::future<int> f = exited.get_future();
  if (f.wait_for(kWait) != std::future_status::ready) {
    ::kill(pid, SIGKILL);
    waiter.join();
    FAIL() << "example plugin did not exit on SIGTERM";
  }
  waiter.join();
  const int status = f.get();
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  std::lock_guard lock(bus_.mu);
  EXPECT_EQ(bus_.Count("finding"), 1);  // one per host
  EXPECT_EQ(bus_.Count("goodbye"), 1);
  EXPECT_EQ(bus_.log[0].rfind("grant example-cpp ", 0), 0u);
}
#endif

}  // namespace
}  // namespace oxg::sdk
