#include "common/clock.h"

#include <cstdio>

namespace oxg {

int64_t Clock::NowUnixNanos() const {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Now().time_since_epoch()).count();
}

Clock& Clock::Real() {
  // Leaked on purpose: loggers and exporters may stamp times during static destruction.
  static SystemClock* const clock = new SystemClock();
  return *clock;
}

SimulatedClock::SimulatedClock(WallTime start) : wall_(start), mono_() {}

Clock::WallTime SimulatedClock::Now() const {
  std::lock_guard<std::mutex> lock(mu_);
  return wall_;
}

Clock::MonoTime SimulatedClock::MonoNow() const {
  std::lock_guard<std::mutex> lock(mu_);
  return mono_;
}

void SimulatedClock::Advance(std::chrono::nanoseconds d) {
  std::lock_guard<std::mutex> lock(mu_);
  wall_ += std::chrono::duration_cast<WallTime::duration>(d);
  mono_ += std::chrono::duration_cast<MonoTime::duration>(d);
}

std::string FormatRfc3339Nanos(Clock::WallTime t) {
  using std::chrono::floor;
  const auto since_epoch =
      std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch());
  // floor (not truncation) so instants before 1970 still get a non-negative fraction.
  const auto day = floor<std::chrono::days>(since_epoch);
  const std::chrono::year_month_day ymd{std::chrono::sys_days(day)};
  const std::chrono::hh_mm_ss<std::chrono::nanoseconds> tod(since_epoch - day);

  char buf[64];
  const int n = std::snprintf(
      buf, sizeof(buf), "%04d-%02u-%02uT%02d:%02d:%02d.%09lldZ", static_cast<int>(ymd.year()),
      static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day()),
      static_cast<int>(tod.hours().count()), static_cast<int>(tod.minutes().count()),
      static_cast<int>(tod.seconds().count()), static_cast<long long>(tod.subseconds().count()));
  return std::string(buf, n > 0 ? static_cast<size_t>(n) : 0);
}

}  // namespace oxg
