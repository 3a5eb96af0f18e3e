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

  // Digits written by hand: this runs once per history line and audit line, and snprintf's
  // format parsing cost more than the rest of the line's timestamp work.
  const int year = static_cast<int>(ymd.year());
  if (year < 0 || year > 9999) {
    char buf[64];
    const int n = std::snprintf(
        buf, sizeof(buf), "%04d-%02u-%02uT%02d:%02d:%02d.%09lldZ", year,
        static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day()),
        static_cast<int>(tod.hours().count()), static_cast<int>(tod.minutes().count()),
        static_cast<int>(tod.seconds().count()), static_cast<long long>(tod.subseconds().count()));
    return std::string(buf, n > 0 ? static_cast<size_t>(n) : 0);
  }
  std::string out(30, '0');  // YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ
  auto put = [&out](size_t end, uint64_t v, size_t digits) {
    for (size_t i = 0; i < digits; ++i) {
      out[end - 1 - i] = static_cast<char>('0' + v % 10);
      v /= 10;
    }
  };
  put(4, static_cast<uint64_t>(year), 4);
  out[4] = '-';
  put(7, static_cast<unsigned>(ymd.month()), 2);
  out[7] = '-';
  put(10, static_cast<unsigned>(ymd.day()), 2);
  out[10] = 'T';
  put(13, static_cast<uint64_t>(tod.hours().count()), 2);
  out[13] = ':';
  put(16, static_cast<uint64_t>(tod.minutes().count()), 2);
  out[16] = ':';
  put(19, static_cast<uint64_t>(tod.seconds().count()), 2);
  out[19] = '.';
  put(29, static_cast<uint64_t>(tod.subseconds().count()), 9);
  out[29] = 'Z';
  return out;
}

}  // namespace oxg
