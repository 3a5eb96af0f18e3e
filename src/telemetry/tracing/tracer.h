#pragma once

// The tracing API subsystems use: spans with attributes, events, status and kind; the active
// span of the calling thread; W3C trace context. Exporters are chosen in daemon/, never here.
//
// Cost model: a span that is not sampled (tracing off, ratio not hit, or an unsampled parent)
// is a Span holding no record: starting, annotating and ending it allocate nothing and touch
// no lock. Only sampled spans build a record, handed to the processors when they end.
//
// Thread-safety: a Tracer is safe to use from any thread. A Span is owned by one thread at a
// time (move it to hand it over); its context may be copied freely and passed across async hops.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "common/clock.h"
#include "common/ids.h"
#include "telemetry/tracing/span_data.h"

namespace oxg::tracing {

// W3C trace context of one span.
struct SpanContext {
  TraceId trace_id;
  SpanId span_id;
  uint8_t flags = 0;        // bit 0: sampled
  std::string trace_state;  // passed through untouched (already validated)
  bool remote = false;      // came from another process

  bool IsValid() const { return trace_id.IsValid() && span_id.IsValid(); }
  bool sampled() const { return (flags & 1) != 0; }
};

// Parses a `traceparent` header strictly (W3C Trace Context level 1): version 00 exactly
// 55 characters; a higher version may carry more fields after a '-'; version ff, upper-case
// hex, all-zero ids, bad lengths or separators are rejected. Only bit 0 of the flags is kept.
bool ParseTraceparent(std::string_view header, SpanContext* out);
// Validates a `tracestate` header (at most 32 list members, 512 characters, well-formed keys
// and values); an invalid one is dropped (returns false), as the spec asks.
bool ParseTracestate(std::string_view header, std::string* out);
// "00-<trace id>-<span id>-<flags>", 55 characters.
std::string FormatTraceparent(const SpanContext& ctx);

class Tracer;
namespace internal {
struct SpanRecord;
// Defined where SpanRecord is complete, so Span's destructor can stay inline.
struct SpanRecordDeleter {
  void operator()(SpanRecord* record) const;
};
}  // namespace internal

// An RAII span: ends when destroyed unless End() was called. Move-only.
class Span {
 public:
  Span() = default;  // a no-op span with an invalid context
  Span(Span&& other) noexcept;
  Span& operator=(Span&& other) noexcept;
  Span(const Span&) = delete;
  Span& operator=(const Span&) = delete;
  // Inline so a span that records nothing costs no call to end.
  ~Span() {
    if (record_) End();
  }

  // True when the span is sampled and still open: attributes will be exported.
  bool recording() const { return record_ != nullptr; }
  const SpanContext& context() const { return context_; }

  // Each setter is a no-op on a span that is not recording, so call sites need no checks;
  // guard only the work of computing an expensive value with recording().
  Span& SetAttribute(std::string_view key, std::string_view value);
  Span& SetAttribute(std::string_view key, const char* value) {
    return SetAttribute(key, std::string_view(value));
  }
  Span& SetAttribute(std::string_view key, int64_t value);
  Span& SetAttribute(std::string_view key, int value) {
    return SetAttribute(key, static_cast<int64_t>(value));
  }
  Span& SetAttribute(std::string_view key, double value);
  Span& SetAttribute(std::string_view key, bool value);
  Span& AddEvent(std::string_view name, std::vector<Attribute> attributes = {});
  // Status ERROR carries a short description; OK and UNSET carry none.
  Span& SetStatus(StatusCode code, std::string_view description = {});
  void End();

 private:
  friend class Tracer;
  Span(Tracer* tracer, SpanContext context,
       std::unique_ptr<internal::SpanRecord, internal::SpanRecordDeleter> record);
  Tracer* tracer_ = nullptr;
  SpanContext context_;
  std::unique_ptr<internal::SpanRecord, internal::SpanRecordDeleter> record_;
};

// Makes a span context the active one of the calling thread for its lifetime; restores the
// previous one when destroyed. Nest them like scopes.
class ScopedActivation {
 public:
  explicit ScopedActivation(const SpanContext& context);
  explicit ScopedActivation(const Span& span) : ScopedActivation(span.context()) {}
  // The activation points at the context: a temporary would be gone at the end of the statement.
  explicit ScopedActivation(Span&&) = delete;
  explicit ScopedActivation(SpanContext&&) = delete;
  ~ScopedActivation();
  ScopedActivation(const ScopedActivation&) = delete;
  ScopedActivation& operator=(const ScopedActivation&) = delete;

 private:
  const SpanContext* previous_;
};

// The active span context of the calling thread, or nullptr.
const SpanContext* CurrentContext();

// Receives every sampled span when it ends. Must not block (see BatchSpanProcessor).
class SpanProcessor {
 public:
  virtual ~SpanProcessor() = default;
  virtual void OnEnd(SpanData&& span) = 0;
  // Exports what is queued, waiting at most `timeout`; then stops accepting spans.
  virtual void Shutdown(std::chrono::milliseconds timeout) = 0;
};

struct TracerOptions {
  // Probability of sampling a new root trace; 0 turns tracing off entirely.
  double sample_ratio = 1.0;
};

// Which parent a new span takes.
enum class Parent {
  kCurrent,  // the thread's active span, if any, else a new root
  kRoot,     // always a new root
};

class Tracer {
 public:
  // A tracer with no processors records nothing (every span is a no-op).
  explicit Tracer(TracerOptions options = {}, const Clock& clock = Clock::Real());
  ~Tracer();
  Tracer(const Tracer&) = delete;
  Tracer& operator=(const Tracer&) = delete;

  // A process-wide tracer that never records; what subsystems use when none is configured.
  static Tracer& Noop();

  // Adds a processor before the first span starts (not thread-safe against StartSpan).
  void AddProcessor(std::unique_ptr<SpanProcessor> processor);
  bool enabled() const { return enabled_.load(std::memory_order_relaxed); }

  // Starts a span under an explicit parent context (from a traceparent header, gRPC metadata
  // or an async hop). An invalid parent starts a new root.
  Span StartSpan(std::string_view name, SpanKind kind, const SpanContext& parent);
  Span StartSpan(std::string_view name, SpanKind kind = SpanKind::kInternal,
                 Parent parent = Parent::kCurrent);

  // Shuts every processor down, sharing `timeout` among them. Later spans are dropped.
  void Shutdown(std::chrono::milliseconds timeout = std::chrono::seconds(5));

  const Clock& clock() const { return clock_; }

 private:
  friend class Span;
  void Finish(Span& span);
  const Clock& clock_;
  uint64_t threshold_;  // sampling threshold on the trace id's lower 8 bytes
  std::atomic<bool> enabled_{false};
  std::atomic<bool> shut_down_{false};
  std::mutex shutdown_mu_;
  std::vector<std::unique_ptr<SpanProcessor>> processors_;
};

// ParentBased(TraceIdRatio): a valid parent's sampled flag decides; a root is sampled when the
// trace id's lower 8 bytes (big-endian) fall below ratio * 2^64. Deterministic in the trace id
// and monotonic in the ratio.
bool ShouldSample(const SpanContext* parent, const TraceId& trace_id, uint64_t threshold);
uint64_t SamplingThreshold(double ratio);

// Installs the metrics exemplar and audit hooks so both read the calling thread's active
// sampled span.
void InstallContextHooks();

}  // namespace oxg::tracing
