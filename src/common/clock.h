#pragma once

// Injectable time source. Everything that waits, retries, batches or stamps goes through a
// Clock& so tests can drive time by hand (SimulatedClock) instead of sleeping.

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>

namespace oxg {

class Clock {
 public:
  using WallTime = std::chrono::system_clock::time_point;
  using MonoTime = std::chrono::steady_clock::time_point;

  virtual ~Clock() = default;
  // Wall-clock time, for timestamps that leave the process.
  virtual WallTime Now() const = 0;
  // Monotonic time, for durations and deadlines.
  virtual MonoTime MonoNow() const = 0;

  // Nanoseconds since the Unix epoch of Now().
  int64_t NowUnixNanos() const;

  // The process-wide real clock. Thread-safe; lives forever.
  static Clock& Real();
};

// The real clocks of the OS. Thread-safe.
class SystemClock final : public Clock {
 public:
  WallTime Now() const override { return std::chrono::system_clock::now(); }
  MonoTime MonoNow() const override { return std::chrono::steady_clock::now(); }
};

// A clock that moves only when told to. Thread-safe.
class SimulatedClock final : public Clock {
 public:
  explicit SimulatedClock(WallTime start = WallTime(std::chrono::seconds(1700000000)));
  WallTime Now() const override;
  MonoTime MonoNow() const override;
  void Advance(std::chrono::nanoseconds d);

 private:
  mutable std::mutex mu_;
  WallTime wall_;
  MonoTime mono_;
};

// RFC 3339 UTC with nanoseconds, e.g. "2026-11-21T05:07:16.123456789Z".
std::string FormatRfc3339Nanos(Clock::WallTime t);

}  // namespace oxg
