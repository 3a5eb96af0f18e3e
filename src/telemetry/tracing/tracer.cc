#include "telemetry/tracing/tracer.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <thread>

#include "telemetry/audit/audit.h"
#include "telemetry/metrics/metrics.h"

namespace oxg::tracing {
namespace internal {

struct SpanRecord {
  SpanData data;
};

void SpanRecordDeleter::operator()(SpanRecord* record) const { delete record; }

}  // namespace internal

namespace {

thread_local const SpanContext* g_current = nullptr;

uint32_t CurrentThreadId() {
  thread_local const uint32_t tid = static_cast<uint32_t>(::gettid());
  return tid;
}

uint64_t LowerEightBytes(const TraceId& id) {
  uint64_t v = 0;
  for (size_t i = 8; i < 16; ++i) v = (v << 8) | id.bytes[i];
  return v;
}

bool ActiveSampledSpan(metrics::SpanContextRef* out) {
  const SpanContext* ctx = g_current;
  if (ctx == nullptr || !ctx->sampled() || !ctx->IsValid()) return false;
  out->trace_id = ctx->trace_id;
  out->span_id = ctx->span_id;
  return true;
}

void SetOrReplace(std::vector<Attribute>& attributes, std::string_view key, AttributeValue value) {
  for (Attribute& a : attributes) {
    if (a.key == key) {
      a.value = std::move(value);
      return;
    }
  }
  attributes.push_back(Attribute{std::string(key), std::move(value)});
}

}  // namespace

// ---- sampling ----------------------------------------------------------------------------

uint64_t SamplingThreshold(double ratio) {
  if (!(ratio > 0)) return 0;  // also NaN
  if (ratio >= 1) return std::numeric_limits<uint64_t>::max();
  return static_cast<uint64_t>(std::ldexp(ratio, 64));
}

bool ShouldSample(const SpanContext* parent, const TraceId& trace_id, uint64_t threshold) {
  if (parent != nullptr && parent->IsValid()) return parent->sampled();
  if (threshold == std::numeric_limits<uint64_t>::max()) return true;
  return LowerEightBytes(trace_id) < threshold;
}

// ---- context -----------------------------------------------------------------------------

ScopedActivation::ScopedActivation(const SpanContext& context) : previous_(g_current) {
  g_current = &context;
}

ScopedActivation::~ScopedActivation() { g_current = previous_; }

const SpanContext* CurrentContext() { return g_current; }

void InstallContextHooks() {
  metrics::SetActiveSpanProvider(&ActiveSampledSpan);
  audit::SetAuditSpanProvider(&ActiveSampledSpan);
}

// ---- spans -------------------------------------------------------------------------------

Span::Span(Tracer* tracer, SpanContext context,
           std::unique_ptr<internal::SpanRecord, internal::SpanRecordDeleter> record)
    : tracer_(tracer), context_(std::move(context)), record_(std::move(record)) {}

Span::Span(Span&& other) noexcept
    : tracer_(std::exchange(other.tracer_, nullptr)),
      context_(std::move(other.context_)),
      record_(std::move(other.record_)) {}

Span& Span::operator=(Span&& other) noexcept {
  if (this != &other) {
    End();
    tracer_ = std::exchange(other.tracer_, nullptr);
    context_ = std::move(other.context_);
    record_ = std::move(other.record_);
  }
  return *this;
}

Span& Span::SetAttribute(std::string_view key, std::string_view value) {
  if (record_) SetOrReplace(record_->data.attributes, key, std::string(value));
  return *this;
}

Span& Span::SetAttribute(std::string_view key, int64_t value) {
  if (record_) SetOrReplace(record_->data.attributes, key, value);
  return *this;
}

Span& Span::SetAttribute(std::string_view key, double value) {
  if (record_) SetOrReplace(record_->data.attributes, key, value);
  return *this;
}

Span& Span::SetAttribute(std::string_view key, bool value) {
  if (record_) SetOrReplace(record_->data.attributes, key, value);
  return *this;
}

Span& Span::AddEvent(std::string_view name, std::vector<Attribute> attributes) {
  if (record_) {
    record_->data.events.push_back(
        SpanEvent{std::string(name), tracer_->clock().NowUnixNanos(), std::move(attributes)});
  }
  return *this;
}

Span& Span::SetStatus(StatusCode code, std::string_view description) {
  // OK is final; UNSET changes nothing; a description belongs to ERROR only.
  if (!record_ || code == StatusCode::kUnset || record_->data.status == StatusCode::kOk) {
    return *this;
  }
  record_->data.status = code;
  record_->data.status_message = code == StatusCode::kError ? std::string(description) : "";
  return *this;
}

void Span::End() {
  if (record_) {
    record_->data.end_unix_nano = tracer_->clock().NowUnixNanos();
    record_->data.thread_id = CurrentThreadId();
    tracer_->Finish(*this);
  }
  tracer_ = nullptr;
}

// ---- tracer ------------------------------------------------------------------------------

Tracer::Tracer(TracerOptions options, const Clock& clock)
    : clock_(clock), threshold_(SamplingThreshold(options.sample_ratio)) {}

Tracer::~Tracer() { Shutdown(std::chrono::milliseconds(0)); }

Tracer& Tracer::Noop() {
  static Tracer* noop = new Tracer(TracerOptions{0.0});
  return *noop;
}

void Tracer::AddProcessor(std::unique_ptr<SpanProcessor> processor) {
  processors_.push_back(std::move(processor));
  enabled_ = threshold_ > 0;
}

Span Tracer::StartSpan(std::string_view name, SpanKind kind, Parent parent) {
  const SpanContext* p = parent == Parent::kCurrent ? g_current : nullptr;
  static const SpanContext kNone;
  return StartSpan(name, kind, p != nullptr ? *p : kNone);
}

Span Tracer::StartSpan(std::string_view name, SpanKind kind, const SpanContext& parent) {
  if (!enabled_.load(std::memory_order_relaxed)) return Span();
  const bool has_parent = parent.IsValid();
  if (has_parent && !parent.sampled()) {
    // Not recorded: hand the parent's context on (flags 0) so downstream services keep the
    // trace id and the decision, at no cost.
    SpanContext ctx;
    ctx.trace_id = parent.trace_id;
    ctx.span_id = parent.span_id;
    if (!parent.trace_state.empty()) ctx.trace_state = parent.trace_state;  // passed through
    return Span(nullptr, std::move(ctx), nullptr);
  }
  SpanContext ctx;
  ctx.trace_id = has_parent ? parent.trace_id : TraceId::Random();
  if (!has_parent && !ShouldSample(nullptr, ctx.trace_id, threshold_)) {
    // Not recorded anywhere, so its span id only has to be non-zero for the traceparent it
    // hands on: the trace id's upper half (the sampler reads the lower half) saves a draw.
    std::copy_n(ctx.trace_id.bytes.begin(), 8, ctx.span_id.bytes.begin());
    if (!ctx.span_id.IsValid()) ctx.span_id = SpanId::Random();
    return Span(nullptr, std::move(ctx), nullptr);
  }
  ctx.span_id = SpanId::Random();
  ctx.flags = 1;
  if (has_parent) ctx.trace_state = parent.trace_state;
  std::unique_ptr<internal::SpanRecord, internal::SpanRecordDeleter> record(
      new internal::SpanRecord());
  SpanData& d = record->data;
  d.trace_id = ctx.trace_id;
  d.span_id = ctx.span_id;
  if (has_parent) d.parent_span_id = parent.span_id;
  d.trace_state = ctx.trace_state;
  d.name = std::string(name);
  d.attributes.reserve(8);  // the contract's spans carry up to about eight attributes
  d.kind = kind;
  d.flags = 1;
  d.start_unix_nano = clock_.NowUnixNanos();
  return Span(this, std::move(ctx), std::move(record));
}

void Tracer::Finish(Span& span) {
  auto record = std::move(span.record_);
  if (shut_down_.load(std::memory_order_acquire)) return;
  // Every processor but the last gets a copy; the last takes the record.
  for (size_t i = 0; i + 1 < processors_.size(); ++i) {
    SpanData copy = record->data;
    processors_[i]->OnEnd(std::move(copy));
  }
  if (!processors_.empty()) processors_.back()->OnEnd(std::move(record->data));
}

void Tracer::Shutdown(std::chrono::milliseconds timeout) {
  // A second caller waits for the first to finish rather than racing the processors' teardown.
  std::lock_guard lock(shutdown_mu_);
  if (shut_down_.exchange(true)) return;
  enabled_ = false;
  // All processors flush at once, each with the whole budget, so a slow destination (a hanging
  // collector) cannot eat the time of another (the span archive).
  std::vector<std::thread> flushes;
  flushes.reserve(processors_.size());
  for (auto& p : processors_) {
    flushes.emplace_back([&p, timeout] { p->Shutdown(timeout); });
  }
  for (std::thread& t : flushes) t.join();
}

}  // namespace oxg::tracing
