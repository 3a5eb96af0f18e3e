// The runner's pure parts: line splitting, the output rate limit, /proc/<pid>/stat parsing and
// the seccomp program's shape.
#include <gtest/gtest.h>
#include <linux/seccomp.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <vector>

#include "plugins/internal/output_limiter.h"
#include "plugins/internal/proc_scan.h"
#include "plugins/internal/seccomp_filter.h"

namespace oxg::plugins::internal {
namespace {

std::vector<std::string> Split(const std::vector<std::string>& chunks, size_t max = 8) {
  std::vector<std::string> lines;
  LineSplitter s(max);
  auto emit = [&](std::string_view l) { lines.emplace_back(l); };
  for (const auto& c : chunks) s.Feed(c, emit);
  s.Finish(emit);
  return lines;
}

TEST(LineSplitterTest, JoinsChunksAndSplitsLines) {
  EXPECT_EQ(Split({"ab", "c\nde", "f\r\n", "\n"}), (std::vector<std::string>{"abc", "def", ""}));
}

TEST(LineSplitterTest, UnterminatedTailAtEnd) {
  EXPECT_EQ(Split({"one\ntwo"}), (std::vector<std::string>{"one", "two"}));
}

TEST(LineSplitterTest, ExactlyMaxIsKept) {
  EXPECT_EQ(Split({"12345678\n"}), (std::vector<std::string>{"12345678"}));
  EXPECT_EQ(Split({"1234", "5678", "\nx\n"}), (std::vector<std::string>{"12345678", "x"}));
}

TEST(LineSplitterTest, LongLineIsCutAndItsTailDropped) {
  EXPECT_EQ(Split({"123456789abc\nnext\n"}), (std::vector<std::string>{"12345678\u2026", "next"}));
  // The tail may arrive in many chunks.
  EXPECT_EQ(Split({"12345", "6789", "abc", "def", "\nnext\n"}),
            (std::vector<std::string>{"12345678\u2026", "next"}));
}

TEST(LineSplitterTest, CutNeverSplitsUtf8) {
  // "1234567" + "é" (2 bytes) crosses the 8-byte limit: the cut falls before it.
  EXPECT_EQ(Split({"1234567\xc3\xa9zz\n"}), (std::vector<std::string>{"1234567\u2026"}));
  EXPECT_EQ(Split({"123456\xc3\xa9zz\n"}), (std::vector<std::string>{"123456\xc3\xa9\u2026"}));
}

TEST(LineSplitterTest, DefaultLimitIs4KiB) {
  std::vector<std::string> lines;
  LineSplitter s;
  s.Feed(std::string(10000, 'x') + "\nafter\n", [&](std::string_view l) { lines.emplace_back(l); });
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0], std::string(kMaxOutputLine, 'x') + "\u2026");
  EXPECT_EQ(lines[1], "after");
}

TEST(LineRateLimiterTest, BurstThenRate) {
  using std::chrono::milliseconds;
  const auto t0 = std::chrono::steady_clock::time_point{} + std::chrono::hours(1);
  LineRateLimiter limiter(10, 5, t0);
  int admitted = 0;
  for (int i = 0; i < 100; ++i) admitted += limiter.Admit(t0);
  EXPECT_EQ(admitted, 5);
  EXPECT_EQ(limiter.pending_dropped(), 95u);
  EXPECT_EQ(limiter.TakeDropped(), 95u);
  EXPECT_EQ(limiter.TakeDropped(), 0u);
  // 10 a second: half a second buys 5 more, never more than the burst.
  admitted = 0;
  for (int i = 0; i < 100; ++i) admitted += limiter.Admit(t0 + milliseconds(500));
  EXPECT_EQ(admitted, 5);
  admitted = 0;
  for (int i = 0; i < 100; ++i) admitted += limiter.Admit(t0 + std::chrono::hours(2));
  EXPECT_EQ(admitted, 5);
  EXPECT_EQ(limiter.total_dropped(), 95u + 95u + 95u);
}

TEST(LineRateLimiterTest, Summary) {
  EXPECT_EQ(DroppedSummary(1), "(1 line dropped: the plugin writes too fast)");
  EXPECT_EQ(DroppedSummary(1234), "(1234 lines dropped: the plugin writes too fast)");
}

TEST(ProcStatTest, ParsesFieldsAfterTheCommand) {
  // A command name with spaces and parentheses must not shift the fields.
  const std::string text =
      "4242 (we (i) rd) S 1 4240 4240 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 1 0 12345 "
      "1000000 777 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";
  ProcStat st;
  ASSERT_TRUE(ParseProcStat(text.data(), text.size(), &st));
  EXPECT_EQ(st.state, 'S');
  EXPECT_EQ(st.ppid, 1);
  EXPECT_EQ(st.pgrp, 4240);
  EXPECT_EQ(st.rss_pages, 777);
}

TEST(ProcStatTest, RejectsGarbage) {
  ProcStat st;
  for (const std::string bad : {"", "1 (x", "1 (x) S 1 2",
                                "1 (x) SS 1 2 3 4 5 6 7 8 9 10 11 "
                                "12 13 14 15 16 17 18 19 20 21"}) {
    EXPECT_FALSE(ParseProcStat(bad.data(), bad.size(), &st)) << bad;
  }
}

TEST(ProcScanTest, SeesOwnGroup) {
  const GroupUsage g = ScanProcessGroup(getpgrp());
  EXPECT_GE(g.processes, 1);
  EXPECT_GT(g.rss_bytes, 0u);
  EXPECT_EQ(ScanProcessGroup(0x7ffffff0).processes, 0);
}

TEST(SeccompFilterTest, ProgramShape) {
  const SeccompProgram* p = DenyFilter();
#if defined(__x86_64__) || defined(__aarch64__)
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(p->prog.len, p->code.size());
  EXPECT_EQ(p->prog.filter, p->code.data());
  EXPECT_EQ(p->code.back().k, static_cast<uint32_t>(SECCOMP_RET_ALLOW));
  EXPECT_GE(DeniedSyscallNames().size(), 28u);
#else
  EXPECT_EQ(p, nullptr);
#endif
}

}  // namespace
}  // namespace oxg::plugins::internal
