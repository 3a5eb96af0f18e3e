#include "telemetry/audit/audit.h"

#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/clock.h"
#include "common/log.h"
#include "common/redact.h"
#include "unit/testing.h"

namespace oxg::audit {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

using oxg::testing::ReadFile;

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream ss(text);
  std::string line;
  while (std::getline(ss, line)) out.push_back(line);
  return out;
}

class AuditTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/oxg_audit_test.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/audit.jsonl";
  }
  void TearDown() override {
    SetAuditSpanProvider(nullptr);
    log::SetFdForTesting(-1);
    std::string cmd = "rm -rf '" + dir_ + "'";
    ASSERT_EQ(std::system(cmd.c_str()), 0);
  }

  std::unique_ptr<AuditLog> OpenLog(const std::string& path) {
    auto log = AuditLog::Open(path, stats_, clock_);
    EXPECT_TRUE(log.ok()) << log.status();
    return log.ok() ? *std::move(log) : nullptr;
  }

  static AuditEvent FullEvent() {
    AuditEvent e;
    e.component = "plugin_bus";
    e.plugin_id = "seer";
    e.event_type = EventType::kCapabilityDenied;
    e.decision = Decision::kDeny;
    e.reason = "capability not in manifest";
    e.metadata = {{"capability", "CAP_HTTP_ACTIVE"}, {"attempt", "1"}};
    return e;
  }

  std::string dir_;
  std::string path_;
  SimulatedClock clock_;
  metrics::Registry registry_{clock_};
  AuditStats stats_{registry_};
};

TEST_F(AuditTest, FieldsAreInContractOrder) {
  auto log = OpenLog(path_);
  clock_.Advance(std::chrono::nanoseconds(123456789));
  AuditEvent e = FullEvent();
  TraceId trace;
  SpanId span;
  for (size_t i = 0; i < trace.bytes.size(); ++i) trace.bytes[i] = static_cast<uint8_t>(i + 1);
  for (size_t i = 0; i < span.bytes.size(); ++i) span.bytes[i] = static_cast<uint8_t>(0xa0 + i);
  e.span = metrics::SpanContextRef{trace, span};
  ASSERT_TRUE(log->Write(e));

  EXPECT_EQ(ReadFile(path_),
            "{\"timestamp\":\"2023-11-14T22:13:20.123456789Z\",\"component\":\"plugin_bus\","
            "\"plugin_id\":\"seer\",\"event_type\":\"capability_denied\",\"decision\":\"deny\","
            "\"reason\":\"capability not in manifest\","
            "\"metadata\":{\"capability\":\"CAP_HTTP_ACTIVE\",\"attempt\":\"1\"},"
            "\"trace_id\":\"0102030405060708090a0b0c0d0e0f10\","
            "\"span_id\":\"a0a1a2a3a4a5a6a7\"}\n");
}

TEST_F(AuditTest, OptionalFieldsAreOmitted) {
  auto log = OpenLog(path_);
  AuditEvent e;
  e.component = "daemon";
  e.event_type = EventType::kProxyLifecycle;
  e.decision = Decision::kInfo;
  ASSERT_TRUE(log->Write(e));
  EXPECT_EQ(ReadFile(path_),
            "{\"timestamp\":\"2023-11-14T22:13:20.000000000Z\",\"component\":\"daemon\","
            "\"event_type\":\"proxy_lifecycle\",\"decision\":\"info\"}\n");
}

TEST_F(AuditTest, TimestampHasNanosecondsFromInjectedClock) {
  auto log = OpenLog(path_);
  AuditEvent e = FullEvent();
  clock_.Advance(std::chrono::seconds(86400) + std::chrono::nanoseconds(7));
  ASSERT_TRUE(log->Write(e));
  clock_.Advance(std::chrono::nanoseconds(999999993));
  ASSERT_TRUE(log->Write(e));
  auto lines = Lines(ReadFile(path_));
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(nlohmann::json::parse(lines[0])["timestamp"], "2023-11-15T22:13:20.000000007Z");
  EXPECT_EQ(nlohmann::json::parse(lines[1])["timestamp"], "2023-11-15T22:13:21.000000000Z");
}

TEST_F(AuditTest, SpanComesFromProviderWhenNotGiven) {
  auto log = OpenLog(path_);
  SetAuditSpanProvider([](metrics::SpanContextRef* out) {
    out->trace_id.bytes.fill(0x11);
    out->span_id.bytes.fill(0x22);
    return true;
  });
  ASSERT_TRUE(log->Write(FullEvent()));
  SetAuditSpanProvider([](metrics::SpanContextRef*) { return false; });
  ASSERT_TRUE(log->Write(FullEvent()));
  auto lines = Lines(ReadFile(path_));
  ASSERT_EQ(lines.size(), 2u);
  auto first = nlohmann::json::parse(lines[0]);
  EXPECT_EQ(first["trace_id"], std::string(32, '1'));
  EXPECT_EQ(first["span_id"], "2222222222222222");
  auto second = nlohmann::json::parse(lines[1]);
  EXPECT_FALSE(second.contains("trace_id"));
  EXPECT_FALSE(second.contains("span_id"));
}

TEST_F(AuditTest, SecretsAreRedactedInReasonAndMetadata) {
  auto log = OpenLog(path_);
  AuditEvent e = FullEvent();
  e.reason = "upstream sent Authorization: Bearer abcdefghijklmnop0123456789";
  e.metadata = {
      {"Authorization", "Basic dXNlcjpwYXNzd29yZA=="},
      {"cookie", "session=s3cr3tc00kievalue"},
      {"token", "plainlookingvalue42"},
      {"url", "https://api.example.com/v1?token=abcdef0123456789abcdef"},
      {"method", "GET"},
  };
  ASSERT_TRUE(log->Write(e));
  const std::string text = ReadFile(path_);
  EXPECT_THAT(text, Not(HasSubstr("abcdefghijklmnop0123456789")));
  EXPECT_THAT(text, Not(HasSubstr("dXNlcjpwYXNzd29yZA")));
  EXPECT_THAT(text, Not(HasSubstr("s3cr3tc00kievalue")));
  EXPECT_THAT(text, Not(HasSubstr("plainlookingvalue42")));
  EXPECT_THAT(text, Not(HasSubstr("abcdef0123456789abcdef")));

  auto j = nlohmann::json::parse(Lines(text).at(0));
  EXPECT_THAT(j["reason"].get<std::string>(), HasSubstr("[REDACTED]"));
  EXPECT_EQ(j["metadata"]["Authorization"], "[REDACTED]");
  EXPECT_EQ(j["metadata"]["cookie"], "[REDACTED]");
  EXPECT_EQ(j["metadata"]["token"], "[REDACTED]");
  EXPECT_THAT(j["metadata"]["url"].get<std::string>(), HasSubstr("[REDACTED]"));
  EXPECT_EQ(j["metadata"]["method"], "GET");
}

TEST_F(AuditTest, RegisteredLiteralIsRedacted) {
  const std::string secret = "0123456789abcdef0123456789abcdef-audit-literal";
  Redactor::Default().AddLiteral(secret);
  auto log = OpenLog(path_);
  AuditEvent e = FullEvent();
  e.reason = "plugin presented " + secret;
  e.metadata = {{"presented", secret}};
  ASSERT_TRUE(log->Write(e));
  EXPECT_THAT(ReadFile(path_), Not(HasSubstr(secret)));
}

TEST_F(AuditTest, FileIsCreatedOwnerOnly) {
  auto log = OpenLog(path_);
  struct stat st;
  ASSERT_EQ(stat(path_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST_F(AuditTest, OpenFailureNamesThePath) {
  auto log = AuditLog::Open(dir_ + "/missing/audit.jsonl", stats_, clock_);
  ASSERT_FALSE(log.ok());
  EXPECT_THAT(std::string(log.status().message()), HasSubstr(dir_ + "/missing/audit.jsonl"));
  EXPECT_FALSE(AuditLog::Open("", stats_, clock_).ok());
}

TEST_F(AuditTest, TwoLoggersOnOneFileAppendWholeLines) {
  {
    // Existing content must survive: the log appends, never truncates.
    std::ofstream(path_) << "{\"pre\":1}\n";
  }
  auto a = OpenLog(path_);
  auto b = OpenLog(path_);
  constexpr int kPerThread = 500;
  auto writer = [](AuditLog* log, const std::string& component) {
    AuditEvent e;
    e.component = component;
    e.event_type = EventType::kRpcCall;
    e.decision = Decision::kAllow;
    // Long enough that a torn write would show up as broken JSON.
    e.reason = std::string(3000, component[0]);
    for (int i = 0; i < kPerThread; ++i) {
      e.metadata = {{"i", std::to_string(i)}};
      ASSERT_TRUE(log->Write(e));
    }
  };
  std::thread ta(writer, a.get(), "aaaa");
  std::thread tb(writer, b.get(), "bbbb");
  ta.join();
  tb.join();

  auto lines = Lines(ReadFile(path_));
  ASSERT_EQ(lines.size(), 1u + 2 * kPerThread);
  EXPECT_EQ(lines[0], "{\"pre\":1}");
  std::set<std::string> seen;
  for (size_t i = 1; i < lines.size(); ++i) {
    auto j = nlohmann::json::parse(lines[i]);  // throws on a torn line
    const std::string component = j["component"];
    EXPECT_EQ(j["reason"].get<std::string>(), std::string(3000, component[0]));
    seen.insert(component + "/" + j["metadata"]["i"].get<std::string>());
  }
  EXPECT_EQ(seen.size(), 2u * kPerThread);
  EXPECT_EQ(stats_.Events(EventType::kRpcCall, Decision::kAllow).Value(), 2u * kPerThread);
}

TEST_F(AuditTest, WriteFailureIsCountedReportedRateLimitedAndNeverFatal) {
  const std::string log_path = dir_ + "/oplog";
  const int log_fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  ASSERT_GE(log_fd, 0);
  log::SetFdForTesting(log_fd);

  auto log = OpenLog("/dev/full");
  ASSERT_NE(log, nullptr);
  EXPECT_FALSE(log->Write(FullEvent()));
  EXPECT_FALSE(log->Write(FullEvent()));
  EXPECT_FALSE(log->Write(FullEvent()));
  EXPECT_EQ(stats_.write_errors().Value(), 3u);
  EXPECT_EQ(stats_.Events(EventType::kCapabilityDenied, Decision::kDeny).Value(), 0u);

  // Only the first failure of the minute reaches the operational log.
  auto reports = Lines(ReadFile(log_path));
  ASSERT_EQ(reports.size(), 1u);
  EXPECT_THAT(reports[0], HasSubstr("/dev/full"));

  clock_.Advance(std::chrono::seconds(61));
  EXPECT_FALSE(log->Write(FullEvent()));
  reports = Lines(ReadFile(log_path));
  ASSERT_EQ(reports.size(), 2u);
  EXPECT_THAT(reports[1], HasSubstr("2 more"));
  EXPECT_EQ(stats_.write_errors().Value(), 4u);
  log::SetFdForTesting(-1);
  ::close(log_fd);
}

TEST_F(AuditTest, WriteToClosedDescriptorIsCounted) {
  const int devnull = ::open("/dev/null", O_WRONLY);
  log::SetFdForTesting(devnull);
  auto log = OpenLog(path_);
  ASSERT_NE(log, nullptr);
  // Swap the log's descriptor (found through /proc) for a read-only one to get EBADF on write;
  // the number stays open, so the log's destructor still closes its own descriptor.
  int closed = -1;
  for (int fd = 3; fd < 1024 && closed < 0; ++fd) {
    char link[4096];
    const std::string proc = "/proc/self/fd/" + std::to_string(fd);
    const ssize_t n = ::readlink(proc.c_str(), link, sizeof(link) - 1);
    if (n > 0 && std::string(link, static_cast<size_t>(n)) == path_) closed = fd;
  }
  ASSERT_GE(closed, 0);
  const int read_only = ::open("/dev/null", O_RDONLY);
  ASSERT_GE(::dup2(read_only, closed), 0);
  ::close(read_only);
  EXPECT_FALSE(log->Write(FullEvent()));
  EXPECT_EQ(stats_.write_errors().Value(), 1u);
  log::SetFdForTesting(-1);
  ::close(devnull);
}

TEST_F(AuditTest, ExistingLogTightenedToOwnerOnly) {
  const int fd = ::open(path_.c_str(), O_WRONLY | O_CREAT, 0644);
  ASSERT_GE(fd, 0);
  ::fchmod(fd, 0644);
  ::close(fd);
  auto log = OpenLog(path_);
  ASSERT_NE(log, nullptr);
  struct stat st;
  ASSERT_EQ(::stat(path_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST_F(AuditTest, StdoutMode) {
  const std::string out_path = dir_ + "/stdout";
  fflush(stdout);
  const int saved = ::dup(STDOUT_FILENO);
  ASSERT_GE(saved, 0);
  const int fd = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_GE(::dup2(fd, STDOUT_FILENO), 0);
  ::close(fd);
  {
    auto log = OpenLog("-");
    ASSERT_NE(log, nullptr);
    EXPECT_EQ(log->path(), "-");
    EXPECT_TRUE(log->Write(FullEvent()));
  }
  // Destroying the log must leave standard output open.
  EXPECT_NE(::fcntl(STDOUT_FILENO, F_GETFD), -1);
  ASSERT_GE(::dup2(saved, STDOUT_FILENO), 0);
  ::close(saved);
  auto lines = Lines(ReadFile(out_path));
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(nlohmann::json::parse(lines[0])["event_type"], "capability_denied");
}

TEST_F(AuditTest, CountersPerEventTypeAndDecision) {
  auto log = OpenLog(path_);
  AuditEvent e = FullEvent();
  ASSERT_TRUE(log->Write(e));
  ASSERT_TRUE(log->Write(e));
  e.event_type = EventType::kConfigLoaded;
  e.decision = Decision::kInfo;
  ASSERT_TRUE(log->Write(e));
  EXPECT_EQ(stats_.Events(EventType::kCapabilityDenied, Decision::kDeny).Value(), 2u);
  EXPECT_EQ(stats_.Events(EventType::kConfigLoaded, Decision::kInfo).Value(), 1u);
  EXPECT_EQ(stats_.write_errors().Value(), 0u);

  const std::string text = registry_.Scrape({});
  EXPECT_THAT(text, HasSubstr("# TYPE oxg_audit_events_total counter"));
  EXPECT_THAT(
      text,
      HasSubstr("oxg_audit_events_total{event_type=\"capability_denied\",decision=\"deny\"} 2"));
  EXPECT_THAT(
      text, HasSubstr("oxg_audit_events_total{event_type=\"config_loaded\",decision=\"info\"} 1"));
  EXPECT_THAT(text, HasSubstr("oxg_audit_write_errors_total 0"));
  // Series appear only once used.
  EXPECT_THAT(text, Not(HasSubstr("event_type=\"plugin_load\"")));
}

TEST_F(AuditTest, InvalidEventIsRefusedAndCounted) {
  auto log = OpenLog(path_);
  const int devnull = ::open("/dev/null", O_WRONLY);
  log::SetFdForTesting(devnull);
  AuditEvent e = FullEvent();
  e.event_type = static_cast<EventType>(200);
  EXPECT_FALSE(log->Write(e));
  EXPECT_EQ(stats_.write_errors().Value(), 1u);
  EXPECT_EQ(ReadFile(path_), "");
  log::SetFdForTesting(-1);
  ::close(devnull);
}

TEST(AuditNamesTest, RoundTripEveryContractName) {
  const std::vector<std::string> names = {
      "plugin_load",       "plugin_disconnect", "plugin_restart",  "capability_grant",
      "capability_denied", "rpc_call",          "rpc_denied",      "scope_violation",
      "finding_received",  "finding_rejected",  "proxy_lifecycle", "network_denied",
      "network_request",   "config_loaded"};
  ASSERT_EQ(names.size(), kEventTypeCount);
  for (size_t i = 0; i < names.size(); ++i) {
    EventType t;
    ASSERT_TRUE(ParseEventType(names[i], &t)) << names[i];
    EXPECT_EQ(static_cast<size_t>(t), i);
    EXPECT_EQ(EventTypeName(t), names[i]);
  }
  EventType t;
  EXPECT_FALSE(ParseEventType("plugin_loaded", &t));
  EXPECT_FALSE(ParseEventType("", &t));
  for (std::string d : {"allow", "deny", "info"}) {
    Decision dec;
    ASSERT_TRUE(ParseDecision(d, &dec));
    EXPECT_EQ(DecisionName(dec), d);
  }
  Decision dec;
  EXPECT_FALSE(ParseDecision("maybe", &dec));
}

TEST(AuditFormatTest, FormatMatchesWriter) {
  AuditEvent e;
  e.component = "netgate";
  e.event_type = EventType::kNetworkDenied;
  e.decision = Decision::kDeny;
  e.reason = "quote \" and newline \n";
  const std::string line = FormatAuditLine(e, Clock::WallTime(std::chrono::seconds(0)), nullptr);
  EXPECT_EQ(line,
            "{\"timestamp\":\"1970-01-01T00:00:00.000000000Z\",\"component\":\"netgate\","
            "\"event_type\":\"network_denied\",\"decision\":\"deny\","
            "\"reason\":\"quote \\\" and newline \\n\"}\n");
}

}  // namespace
}  // namespace oxg::audit
