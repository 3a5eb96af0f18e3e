// The OTLP/HTTP exporter against tests/integration/otlp_receiver.py, a separate process with
// its own HTTP stack (Python's http.server): faults by mode, bodies recorded to a directory.
// This also keeps the receiver script honest for the daemon's end-to-end tests.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/log.h"
#include "telemetry/tracing/otlp_http_exporter.h"

namespace oxg::tracing {
namespace {

using std::chrono::milliseconds;
using std::chrono::nanoseconds;
using std::chrono::seconds;
using Steady = std::chrono::steady_clock;

// The receiver as a child process. Every wait on it is bounded; the destructor stops it.
class Receiver {
 public:
  explicit Receiver(std::vector<std::string> args) {
    dir_ = std::filesystem::temp_directory_path() /
           ("otlp_receiver_" + std::to_string(getpid()) + "_" + std::to_string(++counter_));
    std::filesystem::remove_all(dir_);
    std::vector<std::string> argv = {OXG_TEST_PYTHON, OXG_OTLP_RECEIVER, "--out-dir",
                                     dir_.string()};
    argv.insert(argv.end(), args.begin(), args.end());
    int out[2];
    if (pipe2(out, O_CLOEXEC) != 0) return;
    pid_ = fork();
    if (pid_ == 0) {
      dup2(out[1], STDOUT_FILENO);
      std::vector<char*> cargv;
      for (std::string& a : argv) cargv.push_back(a.data());
      cargv.push_back(nullptr);
      execv(cargv[0], cargv.data());
      _exit(127);
    }
    close(out[1]);
    stdout_ = out[0];
    // "listening <port>\n", within 10 s.
    std::string line;
    const auto give_up = Steady::now() + seconds(10);
    while (line.find('\n') == std::string::npos && Steady::now() < give_up) {
      pollfd pfd{stdout_, POLLIN, 0};
      if (poll(&pfd, 1, 100) <= 0) continue;
      char buf[256];
      const ssize_t n = read(stdout_, buf, sizeof(buf));
      if (n <= 0) break;
      line.append(buf, static_cast<size_t>(n));
    }
    if (line.rfind("listening ", 0) == 0) port_ = std::atoi(line.c_str() + 10);
  }

  ~Receiver() {
    Stop();
    if (stdout_ >= 0) close(stdout_);
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  // SIGTERM, then the exit status within `limit` (SIGKILL and -1 after it).
  int Stop(milliseconds limit = milliseconds(5000)) {
    if (pid_ <= 0) return exit_status_;
    kill(pid_, SIGTERM);
    const auto give_up = Steady::now() + limit;
    int status = 0;
    for (;;) {
      const pid_t r = waitpid(pid_, &status, WNOHANG);
      if (r == pid_) {
        exit_status_ = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        break;
      }
      if (Steady::now() >= give_up) {
        kill(pid_, SIGKILL);
        waitpid(pid_, &status, 0);
        exit_status_ = -1;
        break;
      }
      std::this_thread::sleep_for(milliseconds(10));  // polling a child's exit, bounded
    }
    pid_ = -1;
    return exit_status_;
  }

  bool ok() const { return port_ > 0; }
  std::string Url() const { return "http://127.0.0.1:" + std::to_string(port_) + "/v1/traces"; }
  std::string Body(int n) const { return Read(Stem(n) + ".body"); }
  nlohmann::json Meta(int n) const { return nlohmann::json::parse(Read(Stem(n) + ".json")); }
  int Recorded() const {
    int n = 0;
    while (std::filesystem::exists(Stem(n + 1) + ".json")) ++n;
    return n;
  }
  bool WaitForRecorded(int n, milliseconds timeout = milliseconds(10000)) const {
    const auto give_up = Steady::now() + timeout;
    while (Recorded() < n) {
      if (Steady::now() >= give_up) return false;
      std::this_thread::sleep_for(milliseconds(10));  // polling files, bounded
    }
    return true;
  }

 private:
  std::string Stem(int n) const {
    char name[16];
    std::snprintf(name, sizeof(name), "%06d", n);
    return (dir_ / name).string();
  }
  static std::string Read(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
  }

  static inline int counter_ = 0;
  std::filesystem::path dir_;
  pid_t pid_ = -1;
  int stdout_ = -1;
  int port_ = 0;
  int exit_status_ = -1;
};

std::vector<SpanData> Spans() {
  std::vector<SpanData> spans(3);
  for (size_t i = 0; i < spans.size(); ++i) {
    spans[i].trace_id.bytes.fill(0xab);
    spans[i].span_id.bytes.fill(static_cast<uint8_t>(i + 1));
    spans[i].name = "span-" + std::to_string(i);
    spans[i].start_unix_nano = 1700000000000000000;
    spans[i].end_unix_nano = 1700000000001000000;
  }
  return spans;
}

class ReceiverTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* v : {"http_proxy", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"}) {
      unsetenv(v);
    }
    signal(SIGPIPE, SIG_IGN);
    resource_.attributes.push_back({"service.name", std::string("0xgend")});
  }

  OtlpHttpExporterOptions Options(const Receiver& r) {
    OtlpHttpExporterOptions o;
    o.endpoint = r.Url();
    o.resource = resource_;
    o.headers = {{"x-api-key", "integration-key"}};
    o.wait = [this](nanoseconds d) {
      waits_.push_back(d);
      clock_.Advance(d);
      return true;
    };
    o.random = [] { return 0.0; };
    return o;
  }

  SimulatedClock clock_;
  std::vector<nanoseconds> waits_;
  Resource resource_;
  const std::vector<SpanData> spans_ = Spans();
};

TEST_F(ReceiverTest, ProtobufAndJsonBodiesArriveAsEncoded) {
  Receiver r({});
  ASSERT_TRUE(r.ok());
  auto exporter = OtlpHttpExporter::Create(Options(r), clock_).value();
  ASSERT_EQ(exporter->Export(spans_), ExportResult::kSuccess);
  auto o = Options(r);
  o.protocol = OtlpProtocol::kHttpJson;
  o.gzip = false;
  auto json_exporter = OtlpHttpExporter::Create(std::move(o), clock_).value();
  ASSERT_EQ(json_exporter->Export(spans_), ExportResult::kSuccess);

  ASSERT_TRUE(r.WaitForRecorded(2));
  EXPECT_EQ(r.Body(1), EncodeOtlpProtobuf(spans_, resource_, InstrumentationScope{}));
  const nlohmann::json meta = r.Meta(1);
  EXPECT_EQ(meta["content_type"], "application/x-protobuf");
  EXPECT_EQ(meta["content_encoding"], "gzip");
  EXPECT_EQ(meta["headers"]["x-api-key"], "integration-key");
  EXPECT_EQ(meta["gunzip_error"], nullptr);
  EXPECT_EQ(r.Body(2), EncodeOtlpJson(spans_, resource_, InstrumentationScope{}));
  EXPECT_EQ(r.Meta(2)["content_type"], "application/json");
  EXPECT_EQ(r.Stop(), 0);
}

TEST_F(ReceiverTest, RetriesThroughScriptedFaults) {
  // "close" comes first, on a fresh connection: on a reused one libcurl itself re-sends the
  // request once over a new connection, which this test is not about.
  Receiver r({"--sequence", "close,503,429", "--retry-after", "2"});
  ASSERT_TRUE(r.ok());
  auto exporter = OtlpHttpExporter::Create(Options(r), clock_).value();
  ASSERT_EQ(exporter->Export(spans_), ExportResult::kSuccess);
  EXPECT_EQ(exporter->last_attempts(), 4);
  // Backoff (jitter 0) after the closed connection, then Retry-After: 2 twice.
  EXPECT_EQ(waits_, (std::vector<nanoseconds>{milliseconds(500), seconds(2), seconds(2)}));
  ASSERT_TRUE(r.WaitForRecorded(4));
  EXPECT_EQ(r.Meta(1)["answer"], "close");
  EXPECT_EQ(r.Meta(4)["answer"], "ok");
  EXPECT_EQ(r.Body(1), r.Body(4));
}

TEST_F(ReceiverTest, ServerErrorIsNotRetried) {
  Receiver r({"--mode", "500"});
  ASSERT_TRUE(r.ok());
  auto exporter = OtlpHttpExporter::Create(Options(r), clock_).value();
  EXPECT_EQ(exporter->Export(spans_), ExportResult::kFailure);
  EXPECT_EQ(exporter->last_attempts(), 1);
  EXPECT_TRUE(waits_.empty());
}

TEST_F(ReceiverTest, TooManyRequestsForeverGivesUpWithinTheBudget) {
  Receiver r({"--mode", "429", "--retry-after", "3"});
  ASSERT_TRUE(r.ok());
  auto o = Options(r);
  o.timeout = seconds(10);
  auto exporter = OtlpHttpExporter::Create(std::move(o), clock_).value();
  EXPECT_EQ(exporter->Export(spans_), ExportResult::kFailure);
  // 3 + 3 + 3 = 9 s waited; another 3 s would end past the 10 s budget.
  EXPECT_EQ(exporter->last_attempts(), 4);
  EXPECT_EQ(waits_.size(), 3u);
}

TEST_F(ReceiverTest, ShutdownAbortsAnExportToAHangingReceiver) {
  Receiver r({"--mode", "hang"});
  ASSERT_TRUE(r.ok());
  OtlpHttpExporterOptions o;
  o.endpoint = r.Url();
  auto exporter = OtlpHttpExporter::Create(std::move(o)).value();
  ExportResult result = ExportResult::kSuccess;
  std::thread t([&] { result = exporter->Export(spans_); });
  ASSERT_TRUE(r.WaitForRecorded(1));
  const auto start = Steady::now();
  exporter->Shutdown();
  t.join();
  EXPECT_LT(Steady::now() - start, seconds(1));
  EXPECT_EQ(result, ExportResult::kFailure);
  // The receiver itself stops promptly and cleanly with a request still hanging.
  EXPECT_EQ(r.Stop(), 0);
}

}  // namespace
}  // namespace oxg::tracing
