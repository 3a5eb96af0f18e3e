#include "common/log.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <unistd.h>

#include <atomic>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "common/clock.h"
#include "common/redact.h"

namespace oxg::log {
namespace {

// Captures log output through a pipe; restores stderr and the default level afterwards.
class LogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(pipe2(fds_, O_CLOEXEC), 0);
    ASSERT_EQ(fcntl(fds_[0], F_SETFL, O_NONBLOCK), 0);
    SetFdForTesting(fds_[1]);
    SetLevel(Level::kInfo);
  }
  void TearDown() override {
    SetFdForTesting(-1);
    SetLevel(Level::kInfo);
    close(fds_[0]);
    close(fds_[1]);
  }

  // Everything written so far (the writes are synchronous, so nothing is in flight).
  std::string Drain() {
    std::string out;
    char buf[4096];
    for (;;) {
      const ssize_t n = read(fds_[0], buf, sizeof(buf));
      if (n <= 0) break;
      out.append(buf, static_cast<size_t>(n));
    }
    return out;
  }

  int fds_[2] = {-1, -1};
};

const std::regex kLine(
    R"(^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z (DEBUG|INFO |WARN |ERROR) \[([^\]]*)\] (.*)\n$)");

// The log's millisecond stamp, derived from the nanosecond formatter (both round down).
std::string MillisStamp(Clock::WallTime t) { return FormatRfc3339Nanos(t).substr(0, 23) + "Z"; }

TEST_F(LogTest, LineFormat) {
  const std::string before = MillisStamp(Clock::Real().Now());
  Info("proxy", "listening on 127.0.0.1:8080");
  const std::string after = MillisStamp(Clock::Real().Now());
  const std::string out = Drain();
  std::smatch m;
  ASSERT_TRUE(std::regex_match(out, m, kLine)) << out;
  EXPECT_EQ(m[1], "INFO ");
  EXPECT_EQ(m[2], "proxy");
  EXPECT_EQ(m[3], "listening on 127.0.0.1:8080");
  // Fixed-width UTC stamps compare as text.
  const std::string stamp = out.substr(0, 24);
  EXPECT_LE(before, stamp);
  EXPECT_LE(stamp, after);
}

TEST_F(LogTest, LevelsArePaddedToFive) {
  SetLevel(Level::kDebug);
  Debug("c", "d");
  Info("c", "i");
  Warn("c", "w");
  Error("c", "e");
  const std::string out = Drain();
  const std::regex levels(R"(Z (DEBUG|INFO |WARN |ERROR) \[c\] ([diwe])\n)");
  std::vector<std::string> seen;
  for (auto it = std::sregex_iterator(out.begin(), out.end(), levels); it != std::sregex_iterator();
       ++it) {
    seen.push_back((*it)[1].str() + (*it)[2].str());
  }
  EXPECT_EQ(seen, (std::vector<std::string>{"DEBUGd", "INFO i", "WARN w", "ERRORe"})) << out;
}

TEST_F(LogTest, ThresholdFiltersLowerLevels) {
  SetLevel(Level::kWarn);
  EXPECT_FALSE(Enabled(Level::kDebug));
  EXPECT_FALSE(Enabled(Level::kInfo));
  EXPECT_TRUE(Enabled(Level::kWarn));
  EXPECT_TRUE(Enabled(Level::kError));
  Debug("c", "dropped-debug");
  Info("c", "dropped-info");
  Warn("c", "kept-warn");
  Error("c", "kept-error");
  const std::string out = Drain();
  EXPECT_EQ(out.find("dropped"), std::string::npos) << out;
  EXPECT_NE(out.find("kept-warn\n"), std::string::npos) << out;
  EXPECT_NE(out.find("kept-error\n"), std::string::npos) << out;

  SetLevel(Level::kError);
  Warn("c", "now-dropped");
  EXPECT_EQ(Drain(), "");
}

TEST_F(LogTest, MessagesAreRedacted) {
  Info("auth", "login for bob password=hunter2 header Authorization: Bearer abc.def.ghi");
  const std::string out = Drain();
  EXPECT_EQ(out.find("hunter2"), std::string::npos) << out;
  EXPECT_EQ(out.find("abc.def.ghi"), std::string::npos) << out;
  EXPECT_NE(out.find("password=[REDACTED]"), std::string::npos) << out;
  EXPECT_NE(out.find("Authorization: Bearer [REDACTED]\n"), std::string::npos) << out;
}

TEST_F(LogTest, RegisteredLiteralsAreRedacted) {
  Redactor::Default().AddLiteral("log-test-literal-0123456789");
  Info("daemon", "token is log-test-literal-0123456789, do not print");
  const std::string out = Drain();
  EXPECT_EQ(out.find("log-test-literal"), std::string::npos) << out;
  EXPECT_NE(out.find("token is [REDACTED], do not print"), std::string::npos) << out;
}

TEST_F(LogTest, OneMessageIsOneLine) {
  Warn("proxy", "bad request\nINFO  [fake] forged line\r\n\x1b[31mred\ttab");
  const std::string out = Drain();
  std::smatch m;
  ASSERT_TRUE(std::regex_match(out, m, kLine)) << out;
  EXPECT_EQ(m[3], "bad request\\nINFO  [fake] forged line\\r\\n\\x1b[31mred\ttab");
}

TEST_F(LogTest, ComponentCannotBreakTheLine) {
  Info("a\nb", "m");
  std::smatch m;
  const std::string out = Drain();
  ASSERT_TRUE(std::regex_match(out, m, kLine)) << out;
  EXPECT_EQ(m[2], "a\\nb");
}

TEST_F(LogTest, ConcurrentWritersNeverInterleave) {
  constexpr int kThreads = 4;
  constexpr int kLines = 300;
  std::string out;
  std::atomic<bool> done{false};
  std::thread reader([&] {
    // Keep draining so writers never block on a full pipe.
    while (!done.load()) {
      pollfd p{fds_[0], POLLIN, 0};
      poll(&p, 1, 50);
      out += Drain();
    }
    out += Drain();
  });
  std::vector<std::thread> writers;
  for (int t = 0; t < kThreads; ++t) {
    writers.emplace_back([t] {
      const std::string payload(100, static_cast<char>('a' + t));
      for (int i = 0; i < kLines; ++i) Info("t" + std::to_string(t), payload);
    });
  }
  for (auto& w : writers) w.join();
  done.store(true);
  reader.join();

  size_t lines = 0;
  size_t start = 0;
  while (start < out.size()) {
    const size_t nl = out.find('\n', start);
    ASSERT_NE(nl, std::string::npos);
    const std::string line = out.substr(start, nl + 1 - start);
    std::smatch m;
    ASSERT_TRUE(std::regex_match(line, m, kLine)) << line;
    const int t = m[2].str()[1] - '0';
    EXPECT_EQ(m[3], std::string(100, static_cast<char>('a' + t)));
    ++lines;
    start = nl + 1;
  }
  EXPECT_EQ(lines, static_cast<size_t>(kThreads * kLines));
}

TEST(ParseLevelTest, Table) {
  struct Case {
    const char* text;
    bool ok;
    Level want;
  };
  const Case cases[] = {
      {"debug", true, Level::kDebug}, {"DEBUG", true, Level::kDebug},
      {"info", true, Level::kInfo},   {"Info", true, Level::kInfo},
      {"warn", true, Level::kWarn},   {"WARNING", true, Level::kWarn},
      {"error", true, Level::kError}, {"ErRoR", true, Level::kError},
      {"", false, Level::kInfo},      {"trace", false, Level::kInfo},
      {"info ", false, Level::kInfo}, {"err", false, Level::kInfo},
      {"fatal", false, Level::kInfo},
  };
  for (const Case& c : cases) {
    Level got = Level::kInfo;
    EXPECT_EQ(ParseLevel(c.text, &got), c.ok) << c.text;
    if (c.ok) {
      EXPECT_EQ(got, c.want) << c.text;
    }
  }
}

}  // namespace
}  // namespace oxg::log
