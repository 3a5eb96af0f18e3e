#include "telemetry/tracing/otlp_encoding.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "opentelemetry/proto/collector/trace/v1/trace_service.pb.h"

namespace oxg::tracing {
namespace {

namespace otlp_collector = opentelemetry::proto::collector::trace::v1;
namespace otlp_common = opentelemetry::proto::common::v1;
namespace otlp_trace = opentelemetry::proto::trace::v1;
using nlohmann::json;

TraceId MakeTraceId(uint8_t first) {
  TraceId id;
  for (size_t i = 0; i < id.bytes.size(); ++i) id.bytes[i] = static_cast<uint8_t>(first + i);
  return id;
}

SpanId MakeSpanId(uint8_t first) {
  SpanId id;
  for (size_t i = 0; i < id.bytes.size(); ++i) id.bytes[i] = static_cast<uint8_t>(first + i);
  return id;
}

std::string Bytes(std::span<const uint8_t> b) {
  return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

Resource TestResource() {
  return Resource{{{"service.name", std::string("0xgend")},
                   {"service.version", std::string("0.1.0")},
                   {"process.pid", int64_t{4242}}}};
}

// A root SERVER span with every kind of attribute, an event and an OK status, and its INTERNAL
// child with an ERROR status, a trace state and flag bits beyond the W3C byte.
std::vector<SpanData> TestSpans() {
  SpanData root;
  root.trace_id = MakeTraceId(0xA0);
  root.span_id = MakeSpanId(0x10);
  root.name = "proxy.capture_flow";
  root.kind = SpanKind::kServer;
  root.start_unix_nano = 1'700'000'000'123'456'789;
  root.end_unix_nano = 1'700'000'000'223'456'789;
  root.attributes = {{"http.request.method", std::string("GET")},
                     {"http.response.status_code", int64_t{200}},
                     {"oxg.ratio", 0.25},
                     {"oxg.flow.sampled", true},
                     {"oxg.big", int64_t{-9'007'199'254'740'993}}};
  root.events = {{"flow.recorded", 1'700'000'000'200'000'000, {{"oxg.flow.id", std::string("f1")}}},
                 {"no.attributes", 1'700'000'000'210'000'000, {}}};
  root.status = StatusCode::kOk;
  root.flags = 1;

  SpanData child;
  child.trace_id = root.trace_id;
  child.span_id = MakeSpanId(0x20);
  child.parent_span_id = root.span_id;
  child.trace_state = "vendor=x,other=y";
  child.name = "proxy.publish_flow_event";
  child.kind = SpanKind::kInternal;
  child.start_unix_nano = 1'700'000'000'130'000'000;
  child.end_unix_nano = 1'700'000'000'140'000'000;
  child.status = StatusCode::kError;
  child.status_message = "upstream refused";
  child.flags = 0x301;  // only the low byte is W3C trace flags
  return {root, child};
}

otlp_collector::ExportTraceServiceRequest ParseProto(const std::string& body) {
  otlp_collector::ExportTraceServiceRequest req;
  EXPECT_TRUE(req.ParseFromString(body));
  return req;
}

void ExpectStringAttr(const otlp_common::KeyValue& kv, const std::string& key,
                      const std::string& value) {
  EXPECT_EQ(kv.key(), key);
  ASSERT_EQ(kv.value().value_case(), otlp_common::AnyValue::kStringValue) << key;
  EXPECT_EQ(kv.value().string_value(), value);
}

TEST(OtlpProtobuf, RoundTripsEveryField) {
  const std::vector<SpanData> spans = TestSpans();
  const std::string body =
      EncodeOtlpProtobuf(spans, TestResource(), InstrumentationScope{"0xgen", "0.1.0"});
  const auto req = ParseProto(body);

  ASSERT_EQ(req.resource_spans_size(), 1);
  const auto& rs = req.resource_spans(0);
  ASSERT_EQ(rs.resource().attributes_size(), 3);
  ExpectStringAttr(rs.resource().attributes(0), "service.name", "0xgend");
  ExpectStringAttr(rs.resource().attributes(1), "service.version", "0.1.0");
  EXPECT_EQ(rs.resource().attributes(2).key(), "process.pid");
  EXPECT_EQ(rs.resource().attributes(2).value().int_value(), 4242);
  EXPECT_EQ(rs.resource().dropped_attributes_count(), 0u);

  ASSERT_EQ(rs.scope_spans_size(), 1);
  const auto& ss = rs.scope_spans(0);
  EXPECT_EQ(ss.scope().name(), "0xgen");
  EXPECT_EQ(ss.scope().version(), "0.1.0");
  ASSERT_EQ(ss.spans_size(), 2);

  const auto& root = ss.spans(0);
  EXPECT_EQ(root.trace_id(), Bytes(spans[0].trace_id.bytes));
  EXPECT_EQ(root.trace_id().size(), 16u);
  EXPECT_EQ(root.span_id(), Bytes(spans[0].span_id.bytes));
  EXPECT_EQ(root.span_id().size(), 8u);
  EXPECT_TRUE(root.parent_span_id().empty());
  EXPECT_TRUE(root.trace_state().empty());
  EXPECT_EQ(root.name(), "proxy.capture_flow");
  EXPECT_EQ(root.kind(), otlp_trace::Span::SPAN_KIND_SERVER);
  EXPECT_EQ(root.start_time_unix_nano(), 1'700'000'000'123'456'789u);
  EXPECT_EQ(root.end_time_unix_nano(), 1'700'000'000'223'456'789u);
  EXPECT_EQ(root.flags(), 1u);
  ASSERT_EQ(root.attributes_size(), 5);
  ExpectStringAttr(root.attributes(0), "http.request.method", "GET");
  EXPECT_EQ(root.attributes(1).key(), "http.response.status_code");
  EXPECT_EQ(root.attributes(1).value().value_case(), otlp_common::AnyValue::kIntValue);
  EXPECT_EQ(root.attributes(1).value().int_value(), 200);
  EXPECT_EQ(root.attributes(2).key(), "oxg.ratio");
  EXPECT_EQ(root.attributes(2).value().value_case(), otlp_common::AnyValue::kDoubleValue);
  EXPECT_EQ(root.attributes(2).value().double_value(), 0.25);
  EXPECT_EQ(root.attributes(3).key(), "oxg.flow.sampled");
  EXPECT_EQ(root.attributes(3).value().value_case(), otlp_common::AnyValue::kBoolValue);
  EXPECT_TRUE(root.attributes(3).value().bool_value());
  EXPECT_EQ(root.attributes(4).value().int_value(), -9'007'199'254'740'993);
  ASSERT_EQ(root.events_size(), 2);
  EXPECT_EQ(root.events(0).name(), "flow.recorded");
  EXPECT_EQ(root.events(0).time_unix_nano(), 1'700'000'000'200'000'000u);
  ASSERT_EQ(root.events(0).attributes_size(), 1);
  ExpectStringAttr(root.events(0).attributes(0), "oxg.flow.id", "f1");
  EXPECT_EQ(root.events(1).name(), "no.attributes");
  EXPECT_EQ(root.events(1).attributes_size(), 0);
  EXPECT_EQ(root.status().code(), otlp_trace::Status::STATUS_CODE_OK);
  EXPECT_TRUE(root.status().message().empty());
  EXPECT_EQ(root.links_size(), 0);
  EXPECT_EQ(root.dropped_attributes_count(), 0u);

  const auto& child = ss.spans(1);
  EXPECT_EQ(child.trace_id(), root.trace_id());
  EXPECT_EQ(child.span_id(), Bytes(spans[1].span_id.bytes));
  EXPECT_EQ(child.parent_span_id(), root.span_id());
  EXPECT_EQ(child.trace_state(), "vendor=x,other=y");
  EXPECT_EQ(child.name(), "proxy.publish_flow_event");
  EXPECT_EQ(child.kind(), otlp_trace::Span::SPAN_KIND_INTERNAL);
  EXPECT_EQ(child.flags(), 1u) << "bits above the W3C trace flags byte are not sent";
  EXPECT_EQ(child.attributes_size(), 0);
  EXPECT_EQ(child.events_size(), 0);
  EXPECT_EQ(child.status().code(), otlp_trace::Status::STATUS_CODE_ERROR);
  EXPECT_EQ(child.status().message(), "upstream refused");
}

TEST(OtlpProtobuf, EveryKindKeepsItsNumber) {
  const SpanKind kinds[] = {SpanKind::kInternal, SpanKind::kServer, SpanKind::kClient,
                            SpanKind::kProducer, SpanKind::kConsumer};
  std::vector<SpanData> spans;
  for (SpanKind k : kinds) {
    SpanData s;
    s.trace_id = MakeTraceId(1);
    s.span_id = MakeSpanId(static_cast<uint8_t>(k));
    s.kind = k;
    spans.push_back(s);
  }
  const auto req = ParseProto(EncodeOtlpProtobuf(spans, {}, {}));
  const auto& out = req.resource_spans(0).scope_spans(0).spans();
  ASSERT_EQ(out.size(), 5);
  EXPECT_EQ(out[0].kind(), otlp_trace::Span::SPAN_KIND_INTERNAL);
  EXPECT_EQ(out[1].kind(), otlp_trace::Span::SPAN_KIND_SERVER);
  EXPECT_EQ(out[2].kind(), otlp_trace::Span::SPAN_KIND_CLIENT);
  EXPECT_EQ(out[3].kind(), otlp_trace::Span::SPAN_KIND_PRODUCER);
  EXPECT_EQ(out[4].kind(), otlp_trace::Span::SPAN_KIND_CONSUMER);
  // Unset status stays the default code, unsampled flags stay 0.
  EXPECT_EQ(out[0].status().code(), otlp_trace::Status::STATUS_CODE_UNSET);
}

TEST(OtlpProtobuf, InvalidUtf8IsReplacedSoReceiversCanParse) {
  SpanData s;
  s.trace_id = MakeTraceId(1);
  s.span_id = MakeSpanId(1);
  s.name = "bad\xFF name";
  s.attributes = {{"url.full", std::string("http://x/\xC3\x28")}};
  s.status_message = "\xE2\x82";
  const auto req = ParseProto(EncodeOtlpProtobuf(std::span(&s, 1), {}, {}));
  const auto& span = req.resource_spans(0).scope_spans(0).spans(0);
  EXPECT_EQ(span.name(), "bad\xEF\xBF\xBD name");
  EXPECT_EQ(span.attributes(0).value().string_value(), "http://x/\xEF\xBF\xBD(");
  EXPECT_EQ(span.status().message(), "\xEF\xBF\xBD\xEF\xBF\xBD");
}

TEST(OtlpProtobuf, NegativeTimesBecomeZeroAndEmptyBatchStillHasResource) {
  SpanData s;
  s.trace_id = MakeTraceId(1);
  s.span_id = MakeSpanId(1);
  s.start_unix_nano = -5;
  s.end_unix_nano = -1;
  auto req = ParseProto(EncodeOtlpProtobuf(std::span(&s, 1), {}, {}));
  EXPECT_EQ(req.resource_spans(0).scope_spans(0).spans(0).start_time_unix_nano(), 0u);
  EXPECT_EQ(req.resource_spans(0).scope_spans(0).spans(0).end_time_unix_nano(), 0u);

  req = ParseProto(EncodeOtlpProtobuf({}, TestResource(), {}));
  ASSERT_EQ(req.resource_spans_size(), 1);
  EXPECT_EQ(req.resource_spans(0).resource().attributes_size(), 3);
  EXPECT_EQ(req.resource_spans(0).scope_spans(0).scope().name(), "0xgen");
  EXPECT_EQ(req.resource_spans(0).scope_spans(0).spans_size(), 0);
}

std::vector<std::string> Keys(const json& object) {
  std::vector<std::string> keys;
  for (const auto& [k, v] : object.items()) keys.push_back(k);
  return keys;
}

using Strings = std::vector<std::string>;

TEST(OtlpJson, ExactKeysAndValues) {
  const std::vector<SpanData> spans = TestSpans();
  const json doc =
      json::parse(EncodeOtlpJson(spans, TestResource(), InstrumentationScope{"0xgen", "0.1.0"}));

  EXPECT_EQ(Keys(doc), Strings{"resourceSpans"});
  ASSERT_EQ(doc["resourceSpans"].size(), 1u);
  const json& rs = doc["resourceSpans"][0];
  EXPECT_EQ(Keys(rs), (Strings{"resource", "scopeSpans"}));
  EXPECT_EQ(rs["resource"], json::parse(R"({"attributes":[
      {"key":"service.name","value":{"stringValue":"0xgend"}},
      {"key":"service.version","value":{"stringValue":"0.1.0"}},
      {"key":"process.pid","value":{"intValue":"4242"}}]})"));
  ASSERT_EQ(rs["scopeSpans"].size(), 1u);
  const json& ss = rs["scopeSpans"][0];
  EXPECT_EQ(Keys(ss), (Strings{"scope", "spans"}));
  EXPECT_EQ(ss["scope"], json::parse(R"({"name":"0xgen","version":"0.1.0"})"));
  ASSERT_EQ(ss["spans"].size(), 2u);

  const json& root = ss["spans"][0];
  // nlohmann orders keys alphabetically; parentSpanId and traceState are absent on the root.
  EXPECT_EQ(Keys(root), (Strings{"attributes", "endTimeUnixNano", "events", "flags", "kind", "name",
                                 "spanId", "startTimeUnixNano", "status", "traceId"}));
  EXPECT_EQ(root["traceId"], "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf");
  EXPECT_EQ(root["spanId"], "1011121314151617");
  EXPECT_EQ(root["name"], "proxy.capture_flow");
  EXPECT_EQ(root["kind"], 2);
  EXPECT_TRUE(root["kind"].is_number_integer());
  EXPECT_EQ(root["flags"], 1);
  EXPECT_EQ(root["startTimeUnixNano"], "1700000000123456789");
  EXPECT_EQ(root["endTimeUnixNano"], "1700000000223456789");
  EXPECT_EQ(root["attributes"], json::parse(R"([
      {"key":"http.request.method","value":{"stringValue":"GET"}},
      {"key":"http.response.status_code","value":{"intValue":"200"}},
      {"key":"oxg.ratio","value":{"doubleValue":0.25}},
      {"key":"oxg.flow.sampled","value":{"boolValue":true}},
      {"key":"oxg.big","value":{"intValue":"-9007199254740993"}}])"));
  EXPECT_EQ(root["events"], json::parse(R"([
      {"timeUnixNano":"1700000000200000000","name":"flow.recorded",
       "attributes":[{"key":"oxg.flow.id","value":{"stringValue":"f1"}}]},
      {"timeUnixNano":"1700000000210000000","name":"no.attributes"}])"));
  EXPECT_EQ(root["status"], json::parse(R"({"code":1})"));

  const json& child = ss["spans"][1];
  EXPECT_EQ(Keys(child),
            (Strings{"endTimeUnixNano", "flags", "kind", "name", "parentSpanId", "spanId",
                     "startTimeUnixNano", "status", "traceId", "traceState"}));
  EXPECT_EQ(child["traceId"], root["traceId"]);
  EXPECT_EQ(child["spanId"], "2021222324252627");
  EXPECT_EQ(child["parentSpanId"], root["spanId"]);
  EXPECT_EQ(child["traceState"], "vendor=x,other=y");
  EXPECT_EQ(child["kind"], 1);
  EXPECT_EQ(child["flags"], 1);
  EXPECT_EQ(child["status"], json::parse(R"({"message":"upstream refused","code":2})"));
}

TEST(OtlpJson, NonFiniteDoublesAndEscapingFollowTheMapping) {
  SpanData s;
  s.trace_id = MakeTraceId(0xF0);
  s.span_id = MakeSpanId(0xF8);
  s.name = "quote\" backslash\\ newline\n bad\xFF";
  s.attributes = {{"nan", std::numeric_limits<double>::quiet_NaN()},
                  {"inf", std::numeric_limits<double>::infinity()},
                  {"-inf", -std::numeric_limits<double>::infinity()},
                  {"whole", 3.0},
                  {"min", std::numeric_limits<int64_t>::min()}};
  const std::string text = EncodeOtlpJson(std::span(&s, 1), {}, {});
  const json doc = json::parse(text);
  const json& span = doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
  EXPECT_EQ(span["traceId"], "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff");
  EXPECT_EQ(span["spanId"], "f8f9fafbfcfdfeff");
  EXPECT_EQ(span["name"], "quote\" backslash\\ newline\n bad\xEF\xBF\xBD");
  EXPECT_EQ(span["attributes"][0]["value"]["doubleValue"], "NaN");
  EXPECT_EQ(span["attributes"][1]["value"]["doubleValue"], "Infinity");
  EXPECT_EQ(span["attributes"][2]["value"]["doubleValue"], "-Infinity");
  EXPECT_EQ(span["attributes"][3]["value"]["doubleValue"], 3.0);
  EXPECT_EQ(span["attributes"][4]["value"]["intValue"], "-9223372036854775808");
  EXPECT_EQ(span["status"], json::parse(R"({"code":0})"));
  EXPECT_EQ(span["flags"], 1);
  // The resource is present even without attributes, and the default scope is named.
  EXPECT_EQ(doc["resourceSpans"][0]["resource"], json::object());
  EXPECT_EQ(doc["resourceSpans"][0]["scopeSpans"][0]["scope"], json::parse(R"({"name":"0xgen"})"));
}

TEST(OtlpJson, EmptyBatch) {
  const json doc = json::parse(EncodeOtlpJson({}, {}, {}));
  EXPECT_EQ(doc, json::parse(R"({"resourceSpans":[{"resource":{},
      "scopeSpans":[{"scope":{"name":"0xgen"},"spans":[]}]}]})"));
}

}  // namespace
}  // namespace oxg::tracing
