#pragma once

// A finished span as exporters see it, and the exporter interface. Plain data: exporters
// (OTLP/HTTP, the Chrome-trace archive, the in-memory one tests use) depend only on this file.

#include <cstdint>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "common/ids.h"

namespace oxg::tracing {

// Values follow OTLP's enums so encoders can write them as they are.
enum class SpanKind : uint8_t {
  kInternal = 1,
  kServer = 2,
  kClient = 3,
  kProducer = 4,
  kConsumer = 5
};
enum class StatusCode : uint8_t { kUnset = 0, kOk = 1, kError = 2 };

// "internal", "server", ... (lower case), and back; false for an unknown name.
const char* SpanKindName(SpanKind kind);
bool ParseSpanKind(std::string_view name, SpanKind* out);
const char* StatusCodeName(StatusCode code);  // "unset", "ok", "error"
bool ParseStatusCode(std::string_view name, StatusCode* out);

using AttributeValue = std::variant<std::string, int64_t, double, bool>;

struct Attribute {
  std::string key;
  AttributeValue value;
};

struct SpanEvent {
  std::string name;
  int64_t time_unix_nano = 0;
  std::vector<Attribute> attributes;
};

struct SpanData {
  TraceId trace_id;
  SpanId span_id;
  SpanId parent_span_id;  // all-zero for a root span
  std::string trace_state;
  std::string name;
  SpanKind kind = SpanKind::kInternal;
  int64_t start_unix_nano = 0;
  int64_t end_unix_nano = 0;
  std::vector<Attribute> attributes;
  std::vector<SpanEvent> events;
  StatusCode status = StatusCode::kUnset;
  std::string status_message;
  uint32_t flags = 1;      // W3C trace flags; bit 0 = sampled
  uint32_t thread_id = 0;  // OS thread that ended the span (the archive's default track)
};

// What every span of this process shares (service.name, host.name, ...).
struct Resource {
  std::vector<Attribute> attributes;
};

enum class ExportResult {
  kSuccess,
  kFailure,  // not retryable, or retries exhausted within the deadline
};

// Receives batches from one batch processor thread; never called concurrently with itself.
class SpanExporter {
 public:
  virtual ~SpanExporter() = default;
  // Exports one batch. Must return within the processor's export timeout.
  virtual ExportResult Export(std::span<const SpanData> batch) = 0;
  // Outcome label for oxg_trace_spans_total when Export succeeds: "exported" or "written_file".
  virtual const char* SuccessOutcome() const { return "exported"; }
  // Flushes and releases resources. May be called from another thread while Export runs, to
  // interrupt it (the shutdown budget ran out); later Export calls fail at once. Idempotent.
  virtual void Shutdown() {}
};

}  // namespace oxg::tracing
