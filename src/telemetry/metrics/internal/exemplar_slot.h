#pragma once

// Storage behind an ExemplarCell. Private to the metrics core.

#include <atomic>
#include <cstdint>
#include <thread>

#include "telemetry/metrics/metrics.h"

namespace oxg::metrics::internal {

struct ExemplarData {
  enum class Kind : uint8_t { kNone, kSpan, kLabels };
  Kind kind = Kind::kNone;
  SpanContextRef span;  // kSpan: rendered as trace_id / span_id
  double value = 0;
  int64_t ts_nanos = 0;
  // kLabels: name\0value\0 pairs. 128 code points are at most 512 bytes, plus two NULs per
  // label (a label has at least one code point in its name).
  uint16_t len = 0;
  char text[kMaxExemplarCodePoints * 4 + kMaxExemplarCodePoints * 2];
};

// A slot guarded by a tiny lock: writers only try it (and skip on contention), scrapes wait.
struct ExemplarSlot {
  bool TryLock() { return !busy.exchange(true, std::memory_order_acquire); }
  void Lock() {
    while (busy.exchange(true, std::memory_order_acquire)) std::this_thread::yield();
  }
  void Unlock() { busy.store(false, std::memory_order_release); }

  std::atomic<bool> busy{false};
  ExemplarData data;
};

}  // namespace oxg::metrics::internal
