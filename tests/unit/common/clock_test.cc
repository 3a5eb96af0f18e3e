#include "common/clock.h"

#include <gtest/gtest.h>

#include <thread>
#include <vector>

namespace oxg {
namespace {

using std::chrono::nanoseconds;
using std::chrono::seconds;

Clock::WallTime At(int64_t unix_seconds, int64_t nanos = 0) {
  return Clock::WallTime(seconds(unix_seconds)) +
         std::chrono::duration_cast<Clock::WallTime::duration>(nanoseconds(nanos));
}

TEST(SimulatedClockTest, StartsAtGivenTimeAndOnlyMovesWhenAdvanced) {
  SimulatedClock clock;
  EXPECT_EQ(clock.Now(), At(1700000000));
  EXPECT_EQ(clock.NowUnixNanos(), int64_t{1700000000} * 1000000000);
  const Clock::MonoTime mono0 = clock.MonoNow();
  EXPECT_EQ(clock.Now(), At(1700000000));
  EXPECT_EQ(clock.MonoNow(), mono0);

  clock.Advance(std::chrono::milliseconds(1500));
  EXPECT_EQ(clock.Now(), At(1700000001, 500000000));
  EXPECT_EQ(clock.MonoNow() - mono0, std::chrono::milliseconds(1500));
  EXPECT_EQ(clock.NowUnixNanos(), int64_t{1700000001500000000});

  clock.Advance(nanoseconds(1));
  EXPECT_EQ(clock.NowUnixNanos(), int64_t{1700000001500000001});
}

TEST(SimulatedClockTest, CustomStart) {
  SimulatedClock clock(At(42, 7));
  EXPECT_EQ(clock.NowUnixNanos(), 42000000007);
}

TEST(SimulatedClockTest, ConcurrentAdvancesAreAllApplied) {
  SimulatedClock clock(At(0));
  const Clock::MonoTime mono0 = clock.MonoNow();
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&clock] {
      for (int i = 0; i < 1000; ++i) clock.Advance(nanoseconds(3));
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(clock.NowUnixNanos(), 4 * 1000 * 3);
  EXPECT_EQ(clock.MonoNow() - mono0, nanoseconds(4 * 1000 * 3));
}

TEST(RealClockTest, IsASingletonTrackingSystemTime) {
  Clock& a = Clock::Real();
  Clock& b = Clock::Real();
  EXPECT_EQ(&a, &b);
  EXPECT_NE(dynamic_cast<SystemClock*>(&a), nullptr);

  const auto before = std::chrono::system_clock::now();
  const auto now = a.Now();
  const auto after = std::chrono::system_clock::now();
  EXPECT_LE(before, now);
  EXPECT_LE(now, after);

  const auto m1 = a.MonoNow();
  const auto m2 = a.MonoNow();
  EXPECT_LE(m1, m2);

  const int64_t nanos = a.NowUnixNanos();
  EXPECT_GT(nanos, int64_t{1700000000} * 1000000000);  // after Nov 2023
}

TEST(FormatRfc3339NanosTest, Table) {
  struct Case {
    Clock::WallTime t;
    const char* want;
  };
  const Case cases[] = {
      {At(0), "1970-01-01T00:00:00.000000000Z"},
      {At(1700000000), "2023-11-14T22:13:20.000000000Z"},
      {At(1700000000, 123456789), "2023-11-14T22:13:20.123456789Z"},
      {At(1795237636, 1), "2026-11-21T05:07:16.000000001Z"},
      {At(1709251199, 999999999), "2024-02-29T23:59:59.999999999Z"},  // leap day
      {At(0, -1), "1969-12-31T23:59:59.999999999Z"},                  // before the epoch
  };
  for (const Case& c : cases) {
    EXPECT_EQ(FormatRfc3339Nanos(c.t), c.want);
  }
}

TEST(FormatRfc3339NanosTest, AlwaysNineFractionalDigits) {
  SimulatedClock clock(At(1700000000));
  for (int i = 0; i < 20; ++i) {
    const std::string s = FormatRfc3339Nanos(clock.Now());
    ASSERT_EQ(s.size(), 30u) << s;
    EXPECT_EQ(s[19], '.');
    EXPECT_EQ(s.back(), 'Z');
    clock.Advance(nanoseconds(100000007));
  }
}

}  // namespace
}  // namespace oxg
