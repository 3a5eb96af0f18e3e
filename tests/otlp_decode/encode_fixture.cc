// Records a batch of spans shaped like 0xgen's (contract §5), encodes it with the OTLP encoders
// and writes, into OUT_DIR:
//   body.pb        EncodeOtlpProtobuf (application/x-protobuf)
//   body.json      EncodeOtlpJson (application/json)
//   expected.json  what was recorded, straight from the SpanData and Resource (not from either
//                  encoding), in the shape decode_otlp.js prints
// The ids are fixed so failures are reproducible.

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "telemetry/tracing/otlp_encoding.h"

namespace oxg::tracing {
namespace {

using nlohmann::json;

TraceId Trace(uint8_t seed) {
  TraceId id;
  for (size_t i = 0; i < id.bytes.size(); ++i) id.bytes[i] = static_cast<uint8_t>(seed * 17 + i);
  return id;
}

SpanId Span(uint8_t seed) {
  SpanId id;
  for (size_t i = 0; i < id.bytes.size(); ++i) id.bytes[i] = static_cast<uint8_t>(seed + i * 29);
  return id;
}

constexpr int64_t kT0 = 1'717'171'717'000'000'000;  // 2024-05-31, nanoseconds

SpanData MakeSpan(const TraceId& trace, const SpanId& id, const SpanId& parent, std::string name,
                  SpanKind kind, int64_t start_us, int64_t dur_us) {
  SpanData s;
  s.trace_id = trace;
  s.span_id = id;
  s.parent_span_id = parent;
  s.name = std::move(name);
  s.kind = kind;
  s.start_unix_nano = kT0 + start_us * 1000 + 7;  // odd nanoseconds: no rounding to µs
  s.end_unix_nano = s.start_unix_nano + dur_us * 1000 + 3;
  return s;
}

std::vector<SpanData> RecordedSpans() {
  const TraceId flow_trace = Trace(1);
  const TraceId replay_trace = Trace(9);
  const SpanId none;  // all-zero: root
  const SpanId capture = Span(0x11), publish = Span(0x22), dispatch = Span(0x33),
               event = Span(0x44), receive = Span(0x55), fetch = Span(0x66), wait = Span(0x77),
               load = Span(0x88);

  std::vector<SpanData> spans;

  SpanData s =
      MakeSpan(flow_trace, capture, none, "proxy.capture_flow", SpanKind::kServer, 0, 5000);
  s.attributes = {{"http.request.method", std::string("GET")},
                  {"url.full", std::string("https://example.test/a?q=1")},
                  {"http.response.status_code", int64_t{200}},
                  {"oxg.flow.id", std::string("01HZX5V8Y3K2J7Q9W4E6R1T0PA")},
                  {"oxg.flow.sampled", true},
                  {"oxg.flow.in_scope", true}};
  s.status = StatusCode::kOk;
  spans.push_back(s);

  s = MakeSpan(flow_trace, publish, capture, "proxy.publish_flow_event", SpanKind::kInternal, 100,
               50);
  s.attributes = {{"oxg.flow.id", std::string("01HZX5V8Y3K2J7Q9W4E6R1T0PA")},
                  {"oxg.flow.phase", std::string("request")}};
  spans.push_back(s);

  s = MakeSpan(flow_trace, dispatch, publish, "plugin_bus.dispatch_flow", SpanKind::kInternal, 120,
               30);
  s.attributes = {{"oxg.flow.variant", std::string("sanitized")},
                  {"oxg.flow.delivered", int64_t{2}},
                  {"oxg.flow.dropped", int64_t{0}}};
  spans.push_back(s);

  s = MakeSpan(flow_trace, event, dispatch, "plugin_bus.dispatch_event", SpanKind::kProducer, 125,
               10);
  s.attributes = {{"oxg.plugin.id", std::string("passive-headers")},
                  {"oxg.event.type", std::string("flow")}};
  spans.push_back(s);

  s = MakeSpan(flow_trace, receive, event, "plugin_bus.receive_event", SpanKind::kConsumer, 900,
               40);
  s.trace_state = "oxg=p1,vendor=x";
  s.attributes = {{"oxg.event.type", std::string("finding")}};
  spans.push_back(s);

  s = MakeSpan(flow_trace, fetch, receive, "netgate.http_request", SpanKind::kClient, 950, 3000);
  s.attributes = {{"http.request.method", std::string("POST")},
                  {"url.full", std::string("https://target.test/login")},
                  {"oxg.plugin.id", std::string("passive-headers")},
                  {"oxg.capability", std::string("CAP_HTTP_ACTIVE")},
                  {"oxg.attempt", int64_t{2}},
                  {"error.type", std::string("connection_refused")}};
  s.events = {{"retry", kT0 + 2'000'000'011, {{"oxg.retry.delay_ms", 250.5}}},
              {"gave_up", kT0 + 3'900'000'013, {}}};
  s.status = StatusCode::kError;
  s.status_message = "upstream refused: connection refused";
  spans.push_back(s);

  s = MakeSpan(flow_trace, wait, fetch, "netgate.rate_limit_wait", SpanKind::kInternal, 951, 12);
  s.attributes = {{"oxg.rate.scope", std::string("host")},
                  {"oxg.rate.key", std::string("target.test")},
                  {"oxg.rate.delay_ms", 12.5}};
  spans.push_back(s);

  // A second trace: a root on another trace id, text that needs escaping, 64-bit extremes,
  // negative numbers, and an unsampled-flag span (flags 0).
  s = MakeSpan(replay_trace, load, none, "replay.load_flows", SpanKind::kInternal, 10000, 800);
  s.attributes = {{"oxg.path", std::string("/data/caf\xC3\xA9 \xE2\x98\x95/flows \"1\".jsonl\t\\")},
                  {"oxg.record.count", int64_t{9'007'199'254'740'993}},  // 2^53 + 1
                  {"oxg.min", int64_t{-9'223'372'036'854'775'807 - 1}},
                  {"oxg.ratio", -0.125},
                  {"oxg.partial", false}};
  s.flags = 0;
  spans.push_back(s);
  return spans;
}

Resource RecordedResource() {
  return Resource{{{"service.name", std::string("0xgend")},
                   {"service.version", std::string("0.1.0")},
                   {"service.instance.id", std::string("01HZX5V8Y3K2J7Q9W4E6R1T0PB")},
                   {"host.name", std::string("fixture-host")},
                   {"process.pid", int64_t{4242}},
                   {"telemetry.sdk.name", std::string("0xgen")},
                   {"telemetry.sdk.language", std::string("cpp")},
                   {"telemetry.sdk.version", std::string("0.1.0")}}};
}

// ---- expected.json: the recording, described without going through any encoder ----------

const char* OtlpKindName(SpanKind kind) {
  switch (kind) {
    case SpanKind::kInternal:
      return "SPAN_KIND_INTERNAL";
    case SpanKind::kServer:
      return "SPAN_KIND_SERVER";
    case SpanKind::kClient:
      return "SPAN_KIND_CLIENT";
    case SpanKind::kProducer:
      return "SPAN_KIND_PRODUCER";
    case SpanKind::kConsumer:
      return "SPAN_KIND_CONSUMER";
  }
  return "?";
}

const char* OtlpStatusName(StatusCode code) {
  switch (code) {
    case StatusCode::kUnset:
      return "STATUS_CODE_UNSET";
    case StatusCode::kOk:
      return "STATUS_CODE_OK";
    case StatusCode::kError:
      return "STATUS_CODE_ERROR";
  }
  return "?";
}

json Describe(const std::vector<Attribute>& attrs) {
  json out = json::array();
  for (const Attribute& a : attrs) {
    json entry = {{"key", a.key}};
    if (const auto* s = std::get_if<std::string>(&a.value)) {
      entry["type"] = "string";
      entry["value"] = *s;
    } else if (const auto* i = std::get_if<int64_t>(&a.value)) {
      entry["type"] = "int";
      entry["value"] = std::to_string(*i);  // exact, as the decoder prints 64-bit values
    } else if (const auto* d = std::get_if<double>(&a.value)) {
      entry["type"] = "double";
      entry["value"] = *d;
    } else {
      entry["type"] = "bool";
      entry["value"] = std::get<bool>(a.value);
    }
    out.push_back(std::move(entry));
  }
  return out;
}

json Describe(const SpanData& s) {
  json events = json::array();
  for (const SpanEvent& e : s.events) {
    events.push_back({{"name", e.name},
                      {"timeUnixNano", std::to_string(e.time_unix_nano)},
                      {"attributes", Describe(e.attributes)}});
  }
  return {{"traceId", s.trace_id.ToHex()},
          {"spanId", s.span_id.ToHex()},
          {"parentSpanId", s.parent_span_id.IsValid() ? s.parent_span_id.ToHex() : ""},
          {"traceState", s.trace_state},
          {"name", s.name},
          {"kind", static_cast<int>(s.kind)},
          {"kindName", OtlpKindName(s.kind)},
          {"startTimeUnixNano", std::to_string(s.start_unix_nano)},
          {"endTimeUnixNano", std::to_string(s.end_unix_nano)},
          {"flags", s.flags & 0xFF},
          {"traceFlags", s.flags & 0xFF},
          {"attributes", Describe(s.attributes)},
          {"droppedAttributesCount", 0},
          {"events", std::move(events)},
          {"links", 0},
          {"status",
           {{"code", static_cast<int>(s.status)},
            {"codeName", OtlpStatusName(s.status)},
            {"message", s.status_message}}}};
}

bool WriteFile(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
  out.close();
  if (!out) {
    std::cerr << "otlp_encode_fixture: cannot write " << path << "\n";
    return false;
  }
  return true;
}

int Main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: otlp_encode_fixture OUT_DIR\n";
    return 2;
  }
  const std::string dir = argv[1];
  const std::vector<SpanData> spans = RecordedSpans();
  const Resource resource = RecordedResource();
  const InstrumentationScope scope{"0xgen", "0.1.0"};

  json scope_spans = json::object();
  scope_spans["scope"] = {{"name", scope.name}, {"version", scope.version}};
  scope_spans["spans"] = json::array();
  for (const SpanData& s : spans) scope_spans["spans"].push_back(Describe(s));
  json resource_spans = json::object();
  resource_spans["resource"] = json::object({{"attributes", Describe(resource.attributes)}});
  resource_spans["scopeSpans"] = json::array({scope_spans});
  json expected = json::object();
  expected["resourceSpans"] = json::array({resource_spans});

  const bool ok = WriteFile(dir + "/body.pb", EncodeOtlpProtobuf(spans, resource, scope)) &&
                  WriteFile(dir + "/body.json", EncodeOtlpJson(spans, resource, scope)) &&
                  WriteFile(dir + "/expected.json", expected.dump(1) + "\n");
  return ok ? 0 : 1;
}

}  // namespace
}  // namespace oxg::tracing

int main(int argc, char** argv) { return oxg::tracing::Main(argc, argv); }
