#include "telemetry/tracing/otlp_encoding.h"

#include <array>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <string_view>
#include <type_traits>
#include <variant>
#include <vector>

#include "common/json_writer.h"
#include "common/utf8.h"
#include "opentelemetry/proto/collector/trace/v1/trace_service.pb.h"

namespace oxg::tracing {
namespace {

namespace otlp_collector = opentelemetry::proto::collector::trace::v1;
namespace otlp_common = opentelemetry::proto::common::v1;
namespace otlp_trace = opentelemetry::proto::trace::v1;

// Span.flags carries the W3C trace flags in its low byte (SpanFlags' TRACE_FLAGS_MASK); the
// upper bits are reserved or mean something else (is-remote), so nothing else leaks into them.
constexpr uint32_t kTraceFlagsMask = 0xFF;

// OTLP times are unsigned (fixed64). A negative time can only come from a broken clock; 0 reads
// as "unknown" to a receiver, where a wrapped-around value would read as the far future.
uint64_t UnixNanos(int64_t t) { return t < 0 ? 0 : static_cast<uint64_t>(t); }

// proto3 `string` fields must hold valid UTF-8: the C++ runtime refuses to parse anything else
// and so do collectors. Attribute values come from untrusted traffic (url.full, headers), so
// invalid bytes become U+FFFD here, as the JSON writer does for the JSON encoding.
void SetUtf8(std::string_view in, std::string* out) {
  out->clear();
  out->reserve(in.size());
  utf8::AppendValid(*out, in);
}

template <size_t N>
void SetBytes(const std::array<uint8_t, N>& id, std::string* out) {
  out->assign(reinterpret_cast<const char*>(id.data()), N);
}

void FillKeyValue(const Attribute& attr, otlp_common::KeyValue* kv) {
  SetUtf8(attr.key, kv->mutable_key());
  otlp_common::AnyValue* value = kv->mutable_value();
  std::visit(
      [&](const auto& v) {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, std::string>) {
          SetUtf8(v, value->mutable_string_value());
        } else if constexpr (std::is_same_v<T, int64_t>) {
          value->set_int_value(v);
        } else if constexpr (std::is_same_v<T, double>) {
          value->set_double_value(v);
        } else {
          static_assert(std::is_same_v<T, bool>);
          value->set_bool_value(v);
        }
      },
      attr.value);
}

void FillAttributes(const std::vector<Attribute>& attrs,
                    google::protobuf::RepeatedPtrField<otlp_common::KeyValue>* out) {
  out->Reserve(static_cast<int>(attrs.size()));
  for (const Attribute& attr : attrs) FillKeyValue(attr, out->Add());
}

void FillSpan(const SpanData& span, otlp_trace::Span* out) {
  SetBytes(span.trace_id.bytes, out->mutable_trace_id());
  SetBytes(span.span_id.bytes, out->mutable_span_id());
  // A root span has no parent: the field stays empty rather than eight zero bytes.
  if (span.parent_span_id.IsValid())
    SetBytes(span.parent_span_id.bytes, out->mutable_parent_span_id());
  if (!span.trace_state.empty()) SetUtf8(span.trace_state, out->mutable_trace_state());
  out->set_flags(span.flags & kTraceFlagsMask);
  SetUtf8(span.name, out->mutable_name());
  // SpanKind's values are OTLP's (span_data.h), so the number carries over as it is.
  out->set_kind(static_cast<otlp_trace::Span::SpanKind>(span.kind));
  out->set_start_time_unix_nano(UnixNanos(span.start_unix_nano));
  out->set_end_time_unix_nano(UnixNanos(span.end_unix_nano));
  FillAttributes(span.attributes, out->mutable_attributes());
  out->mutable_events()->Reserve(static_cast<int>(span.events.size()));
  for (const SpanEvent& event : span.events) {
    otlp_trace::Span::Event* e = out->add_events();
    e->set_time_unix_nano(UnixNanos(event.time_unix_nano));
    SetUtf8(event.name, e->mutable_name());
    FillAttributes(event.attributes, e->mutable_attributes());
  }
  otlp_trace::Status* status = out->mutable_status();
  status->set_code(static_cast<otlp_trace::Status::StatusCode>(span.status));
  if (!span.status_message.empty()) SetUtf8(span.status_message, status->mutable_message());
}

// ---- OTLP/JSON ---------------------------------------------------------------------------
//
// The protobuf JSON mapping with OTLP's deviations: trace and span ids are hex strings (not
// base64), enums are integers (not names), keys are lowerCamelCase. 64-bit integers are decimal
// strings as the mapping says, so JavaScript receivers keep them exact. Empty and default fields
// are left out except the ones every span has (kind, times, flags, status code), which keeps the
// body self-describing for a human reading it.

void WriteUint64String(JsonWriter& w, uint64_t v) {
  char buf[24];
  const auto r = std::to_chars(buf, buf + sizeof(buf), v);
  w.String(std::string_view(buf, static_cast<size_t>(r.ptr - buf)));
}

void WriteInt64String(JsonWriter& w, int64_t v) {
  char buf[24];
  const auto r = std::to_chars(buf, buf + sizeof(buf), v);
  w.String(std::string_view(buf, static_cast<size_t>(r.ptr - buf)));
}

// The mapping writes non-finite doubles as the strings "NaN", "Infinity" and "-Infinity"
// (JsonWriter::Double would write null, which a receiver reads as "no value").
void WriteDouble(JsonWriter& w, double v) {
  if (std::isnan(v)) {
    w.String("NaN");
  } else if (std::isinf(v)) {
    w.String(v > 0 ? "Infinity" : "-Infinity");
  } else {
    w.Double(v);
  }
}

void WriteAnyValue(JsonWriter& w, const AttributeValue& value) {
  w.BeginObject();
  std::visit(
      [&](const auto& v) {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, std::string>) {
          w.Key("stringValue").String(v);
        } else if constexpr (std::is_same_v<T, int64_t>) {
          w.Key("intValue");
          WriteInt64String(w, v);
        } else if constexpr (std::is_same_v<T, double>) {
          w.Key("doubleValue");
          WriteDouble(w, v);
        } else {
          static_assert(std::is_same_v<T, bool>);
          w.Key("boolValue").Bool(v);
        }
      },
      value);
  w.EndObject();
}

// Writes "attributes":[...] unless there are none.
void WriteAttributes(JsonWriter& w, const std::vector<Attribute>& attrs) {
  if (attrs.empty()) return;
  w.Key("attributes").BeginArray();
  for (const Attribute& attr : attrs) {
    w.BeginObject().Key("key").String(attr.key).Key("value");
    WriteAnyValue(w, attr.value);
    w.EndObject();
  }
  w.EndArray();
}

void WriteSpan(JsonWriter& w, const SpanData& span) {
  char trace_hex[32];
  char span_hex[16];
  span.trace_id.WriteHex(trace_hex);
  w.BeginObject();
  w.Key("traceId").String(std::string_view(trace_hex, sizeof(trace_hex)));
  span.span_id.WriteHex(span_hex);
  w.Key("spanId").String(std::string_view(span_hex, sizeof(span_hex)));
  if (!span.trace_state.empty()) w.Key("traceState").String(span.trace_state);
  if (span.parent_span_id.IsValid()) {
    span.parent_span_id.WriteHex(span_hex);
    w.Key("parentSpanId").String(std::string_view(span_hex, sizeof(span_hex)));
  }
  w.Key("flags").Uint(span.flags & kTraceFlagsMask);
  w.Key("name").String(span.name);
  w.Key("kind").Uint(static_cast<uint8_t>(span.kind));
  w.Key("startTimeUnixNano");
  WriteUint64String(w, UnixNanos(span.start_unix_nano));
  w.Key("endTimeUnixNano");
  WriteUint64String(w, UnixNanos(span.end_unix_nano));
  WriteAttributes(w, span.attributes);
  if (!span.events.empty()) {
    w.Key("events").BeginArray();
    for (const SpanEvent& event : span.events) {
      w.BeginObject().Key("timeUnixNano");
      WriteUint64String(w, UnixNanos(event.time_unix_nano));
      w.Key("name").String(event.name);
      WriteAttributes(w, event.attributes);
      w.EndObject();
    }
    w.EndArray();
  }
  w.Key("status").BeginObject();
  if (!span.status_message.empty()) w.Key("message").String(span.status_message);
  w.Key("code").Uint(static_cast<uint8_t>(span.status));
  w.EndObject();
  w.EndObject();
}

}  // namespace

std::string EncodeOtlpProtobuf(std::span<const SpanData> spans, const Resource& resource,
                               const InstrumentationScope& scope) {
  otlp_collector::ExportTraceServiceRequest request;
  otlp_trace::ResourceSpans* resource_spans = request.add_resource_spans();
  FillAttributes(resource.attributes, resource_spans->mutable_resource()->mutable_attributes());
  otlp_trace::ScopeSpans* scope_spans = resource_spans->add_scope_spans();
  SetUtf8(scope.name, scope_spans->mutable_scope()->mutable_name());
  if (!scope.version.empty())
    SetUtf8(scope.version, scope_spans->mutable_scope()->mutable_version());
  scope_spans->mutable_spans()->Reserve(static_cast<int>(spans.size()));
  for (const SpanData& span : spans) FillSpan(span, scope_spans->add_spans());
  return request.SerializeAsString();
}

std::string EncodeOtlpJson(std::span<const SpanData> spans, const Resource& resource,
                           const InstrumentationScope& scope) {
  std::string out;
  // Rough size of a span with a few attributes, so a batch rarely reallocates.
  out.reserve(256 + spans.size() * 512);
  JsonWriter w(out);
  w.BeginObject().Key("resourceSpans").BeginArray().BeginObject();
  w.Key("resource").BeginObject();
  WriteAttributes(w, resource.attributes);
  w.EndObject();
  w.Key("scopeSpans").BeginArray().BeginObject();
  w.Key("scope").BeginObject().Key("name").String(scope.name);
  if (!scope.version.empty()) w.Key("version").String(scope.version);
  w.EndObject();
  w.Key("spans").BeginArray();
  for (const SpanData& span : spans) WriteSpan(w, span);
  w.EndArray();
  w.EndObject().EndArray();  // scopeSpans
  w.EndObject().EndArray();  // resourceSpans
  w.EndObject();
  return out;
}

}  // namespace oxg::tracing
