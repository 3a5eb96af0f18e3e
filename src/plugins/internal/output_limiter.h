#pragma once
// A plugin's stdout/stderr on its way to the operational log: split into lines of bounded
// length, then rate-limited with a token bucket so a plugin that floods its output cannot flood
// the daemon's log (issue 6). Time is passed in, so both are tested without sleeping.
//
// Thread-safety: none; each is owned by one process's monitor thread.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

namespace oxg::plugins::internal {

inline constexpr size_t kMaxOutputLine = 4096;
inline constexpr std::string_view kCutMark = "\u2026";  // "…"

// Bytes in, lines out (without the '\n'; a '\r' before it is dropped too). A line longer than
// `max_line` bytes is cut there (never inside a UTF-8 sequence), marked with "…", and the rest
// of it up to the next '\n' is discarded.
class LineSplitter {
 public:
  using Emit = std::function<void(std::string_view line)>;
  explicit LineSplitter(size_t max_line = kMaxOutputLine) : max_line_(max_line) {}

  void Feed(std::string_view data, const Emit& emit);
  // The stream ended: a last line without '\n' is emitted.
  void Finish(const Emit& emit);

 private:
  void EmitCut(const Emit& emit);

  size_t max_line_;
  std::string pending_;
  bool discarding_ = false;  // inside the tail of a line that was already cut
};

// Token bucket: `per_second` lines a second, bursts of up to `burst`.
class LineRateLimiter {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;
  LineRateLimiter(double per_second, double burst, TimePoint now)
      : per_second_(per_second), burst_(burst), tokens_(burst), last_(now) {}

  // True: pass the line on. False: it is dropped and counted.
  bool Admit(TimePoint now);
  // Lines dropped since the last call (and resets that count).
  uint64_t TakeDropped() {
    const uint64_t n = dropped_;
    dropped_ = 0;
    return n;
  }
  uint64_t pending_dropped() const { return dropped_; }
  uint64_t total_dropped() const { return total_dropped_; }

 private:
  double per_second_;
  double burst_;
  double tokens_;
  TimePoint last_;
  uint64_t dropped_ = 0;
  uint64_t total_dropped_ = 0;
};

// The one line that stands for `n` dropped lines.
std::string DroppedSummary(uint64_t n);

}  // namespace oxg::plugins::internal
