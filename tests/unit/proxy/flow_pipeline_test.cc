#include "proxy/flow/flow_pipeline.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include "common/log.h"
#include "proxy/flow/base64.h"
#include "telemetry/tracing/batch_processor.h"
#include "telemetry/tracing/in_memory_exporter.h"
#include "unit/testing.h"

namespace oxg::proxy {
namespace {

using nlohmann::ordered_json;

constexpr std::string_view kRequestHead =
    "GET http://example.com/a?b=1 HTTP/1.1\r\n"
    "Host: example.com\r\n"
    "User-Agent: test/1.0\r\n"
    "Accept: */*\r\n"
    "\r\n";
constexpr std::string_view kResponseHead =
    "HTTP/1.1 200 OK\r\n"
    "Content-Type: text/plain\r\n"
    "Content-Length: 5\r\n"
    "\r\n";
constexpr int64_t kRequestTime = 1700000000123456789;

CapturedExchange Exchange(std::string flow_id = "01HZZZZZZZZZZZZZZZZZZZZZZZ", bool sampled = true) {
  CapturedExchange e;
  e.flow_id = std::move(flow_id);
  e.client_address = "127.0.0.1:51000";
  e.scheme = "http";
  e.url = "http://example.com/a?b=1";
  e.method = "GET";
  e.sampled = sampled;
  e.request.head = std::string(kRequestHead);
  e.request.wire_bytes = kRequestHead.size();
  e.request.time_unix_nano = kRequestTime;
  CapturedMessage response;
  response.head = std::string(kResponseHead);
  response.body = "hello";
  response.body_length = 5;
  response.wire_bytes = kResponseHead.size() + 5;
  response.time_unix_nano = kRequestTime + 2'000'000;
  e.response = std::move(response);
  e.status = 200;
  e.duration_ms = 2.5;
  return e;
}

// Keeps copies of every event (the views die when Publish returns).
struct RecordedEvent {
  std::string flow_id;
  uint64_t sequence;
  FlowType type;
  int64_t timestamp;
  std::string sanitized;
  std::string raw;
  uint64_t raw_body_bytes;
  bool raw_body_truncated;
  tracing::SpanContext context;
};

class RecordingSink : public FlowSink {
 public:
  void Publish(const FlowEvent& e) override {
    std::lock_guard lock(mu);
    events.push_back({std::string(e.flow_id), e.sequence, e.type, e.timestamp_unix_nano,
                      std::string(e.sanitized), std::string(e.raw), e.raw_body_bytes,
                      e.raw_body_truncated, e.context});
  }
  std::vector<RecordedEvent> Events() {
    std::lock_guard lock(mu);
    return events;
  }
  std::mutex mu;
  std::vector<RecordedEvent> events;
};

// Holds the pipeline thread inside Publish until released.
class BlockingSink : public FlowSink {
 public:
  void Publish(const FlowEvent&) override { gate_.Pass(); }
  void WaitEntered() { gate_.WaitEntered(); }
  void Release() { gate_.Release(); }

 private:
  oxg::testing::Gate gate_;
};

using oxg::testing::ReadFile;

std::vector<ordered_json> ReadLines(const std::string& path) {
  std::vector<ordered_json> out;
  std::istringstream in(ReadFile(path));
  std::string line;
  while (std::getline(in, line)) out.push_back(ordered_json::parse(line));
  return out;
}

std::vector<std::string> Keys(const ordered_json& j) {
  std::vector<std::string> keys;
  for (auto it = j.begin(); it != j.end(); ++it) keys.push_back(it.key());
  return keys;
}

std::string Decode(const ordered_json& j, const char* key) {
  const std::optional<std::string> d = Base64Decode(j.at(key).get<std::string>());
  EXPECT_TRUE(d.has_value()) << key;
  return d.value_or("");
}

class FlowPipelineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/oxg_pipeline_XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    history_ = dir_ + "/proxy_history.jsonl";
    flows_ = dir_ + "/proxy_flows.jsonl";
  }
  void TearDown() override {
    pipeline_.reset();
    std::filesystem::remove_all(dir_);
  }

  FlowPipelineOptions Options() {
    FlowPipelineOptions o;
    o.history_path = history_;
    o.flow_log_path = flows_;
    o.sink = &sink_;
    return o;
  }

  FlowPipeline& StartPipeline(FlowPipelineOptions options,
                              tracing::Tracer& tracer = tracing::Tracer::Noop()) {
    auto p = FlowPipeline::Start(std::move(options), registry_, tracer, clock_);
    EXPECT_TRUE(p.ok()) << p.status();
    pipeline_ = std::move(*p);
    return *pipeline_;
  }

  std::string Metric(std::string_view series) {
    const std::string text = registry_.Scrape({});
    const size_t at = text.find(std::string(series) + " ");
    if (at == std::string::npos) return "absent";
    const size_t start = at + series.size() + 1;
    return text.substr(start, text.find('\n', start) - start);
  }

  std::string dir_, history_, flows_;
  SimulatedClock clock_;
  metrics::Registry registry_{clock_};
  RecordingSink sink_;
  std::unique_ptr<FlowPipeline> pipeline_;
};

TEST_F(FlowPipelineTest, HistoryLineHasContractKeysInOrderAndValues) {
  FlowPipeline& p = StartPipeline(Options());
  CapturedExchange e = Exchange();
  e.capture_span.trace_id.bytes[15] = 0xab;
  e.capture_span.span_id.bytes[7] = 1;
  e.capture_span.flags = 0;  // unsampled trace: trace id still recorded
  ASSERT_TRUE(p.Submit(std::move(e)));
  p.Drain();

  const std::vector<ordered_json> lines = ReadLines(history_);
  ASSERT_EQ(lines.size(), 1u);
  const ordered_json& h = lines[0];
  EXPECT_EQ(Keys(h), (std::vector<std::string>{"timestamp", "flow_id", "client_address", "scheme",
                                               "method", "url", "status", "duration_ms",
                                               "request_bytes", "response_bytes", "request_headers",
                                               "response_headers", "trace_id"}));
  EXPECT_EQ(h["timestamp"], "2023-11-14T22:13:20.123456789Z");
  EXPECT_EQ(h["flow_id"], "01HZZZZZZZZZZZZZZZZZZZZZZZ");
  EXPECT_EQ(h["client_address"], "127.0.0.1:51000");
  EXPECT_EQ(h["scheme"], "http");
  EXPECT_EQ(h["method"], "GET");
  EXPECT_EQ(h["url"], "http://example.com/a?b=1");
  EXPECT_EQ(h["status"], 200);
  EXPECT_TRUE(h["duration_ms"].is_number());
  EXPECT_DOUBLE_EQ(h["duration_ms"].get<double>(), 2.5);
  EXPECT_EQ(h["request_bytes"], kRequestHead.size());
  EXPECT_EQ(h["response_bytes"], kResponseHead.size() + 5);
  EXPECT_EQ(h["request_headers"].dump(),
            R"({"Host":"example.com","User-Agent":"test/1.0","Accept":"*/*"})");
  EXPECT_EQ(h["response_headers"].dump(), R"({"Content-Type":"text/plain","Content-Length":"5"})");
  EXPECT_EQ(h["trace_id"], "000000000000000000000000000000ab");

  const FlowPipeline::Counts c = p.counts();
  EXPECT_EQ(c.submitted, 1u);
  EXPECT_EQ(c.dropped, 0u);
  EXPECT_EQ(c.written_history, 1u);
  EXPECT_EQ(c.written_flows, 2u);
  EXPECT_EQ(c.write_errors, 0u);
}

TEST_F(FlowPipelineTest, FilesAreOwnerOnly) {
  StartPipeline(Options());
  struct stat st;
  ASSERT_EQ(::stat(history_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_EQ(::stat(flows_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST_F(FlowPipelineTest, RepeatedHeadersBecomeArraysUnderTheFirstSpelling) {
  FlowPipeline& p = StartPipeline(Options());
  CapturedExchange e = Exchange();
  e.request.head =
      "GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\nAccept: a\r\nX-Trace: 1\r\n"
      "accept: b\r\nACCEPT: c\r\n\r\n";
  e.response->head = "HTTP/1.1 200 OK\r\nVary: Accept\r\nContent-Length: 5\r\nvary: Origin\r\n\r\n";
  ASSERT_TRUE(p.Submit(std::move(e)));
  p.Drain();
  const std::vector<ordered_json> lines = ReadLines(history_);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0]["request_headers"].dump(),
            R"({"Host":"example.com","Accept":["a","b","c"],"X-Trace":"1"})");
  EXPECT_EQ(lines[0]["response_headers"].dump(),
            R"({"Vary":["Accept","Origin"],"Content-Length":"5"})");
}

TEST_F(FlowPipelineTest, CredentialsNeverReachHistoryOrSanitizedPayloads) {
  FlowPipeline& p = StartPipeline(Options());
  CapturedExchange e = Exchange();
  e.url = "https://example.com/api?token=tok-SECRET-1&x=1";
  e.scheme = "https";
  e.request.head =
      "GET /api?token=tok-SECRET-1&x=1 HTTP/1.1\r\n"
      "Host: example.com\r\n"
      "Authorization: Bearer bearer-SECRET-2\r\n"
      "Cookie: sid=cookie-SECRET-3; theme=dark-SECRET-4\r\n"
      "X-Api-Key: apikey-SECRET-5\r\n"
      "Referer: https://user:pw-SECRET-6@example.com/\r\n"
      "\r\n";
  e.response->head =
      "HTTP/1.1 200 OK\r\n"
      "Set-Cookie: session=setcookie-SECRET-7; Path=/; HttpOnly\r\n"
      "Content-Length: 5\r\n"
      "\r\n";
  ASSERT_TRUE(p.Submit(std::move(e)));
  p.Drain();

  const std::string history = ReadFile(history_);
  EXPECT_EQ(history.find("SECRET"), std::string::npos) << history;
  const std::vector<ordered_json> h = ReadLines(history_);
  ASSERT_EQ(h.size(), 1u);
  // What survives: the scheme word, cookie names, attributes, the query's other fields.
  EXPECT_EQ(h[0]["url"], "https://example.com/api?token=[REDACTED]&x=1");
  EXPECT_EQ(h[0]["request_headers"]["Authorization"], "Bearer [REDACTED]");
  EXPECT_EQ(h[0]["request_headers"]["Cookie"], "sid=[REDACTED]; theme=[REDACTED]");
  EXPECT_EQ(h[0]["request_headers"]["X-Api-Key"], "[REDACTED]");
  EXPECT_EQ(h[0]["response_headers"]["Set-Cookie"], "session=[REDACTED]; Path=/; HttpOnly");

  const std::vector<ordered_json> flows = ReadLines(flows_);
  ASSERT_EQ(flows.size(), 2u);
  for (const ordered_json& f : flows) {
    EXPECT_FALSE(f.contains("raw_base64"));
    const std::string sanitized = Decode(f, "sanitized_base64");
    EXPECT_EQ(sanitized.find("SECRET"), std::string::npos) << sanitized;
  }
  EXPECT_EQ(ReadFile(flows_).find("SECRET"), std::string::npos);
  for (const RecordedEvent& ev : sink_.Events()) {
    EXPECT_EQ(ev.sanitized.find("SECRET"), std::string::npos) << ev.sanitized;
    EXPECT_NE(ev.raw.find("SECRET"), std::string::npos);  // the raw view is exact
  }
}

TEST_F(FlowPipelineTest, FlowLogSequenceTypesAndNoRawByDefault) {
  FlowPipeline& p = StartPipeline(Options());
  ASSERT_TRUE(p.Submit(Exchange("01AAAAAAAAAAAAAAAAAAAAAAAA")));
  ASSERT_TRUE(p.Submit(Exchange("01BBBBBBBBBBBBBBBBBBBBBBBB")));
  p.Drain();
  const std::vector<ordered_json> f = ReadLines(flows_);
  ASSERT_EQ(f.size(), 4u);
  const char* ids[] = {"01AAAAAAAAAAAAAAAAAAAAAAAA", "01AAAAAAAAAAAAAAAAAAAAAAAA",
                       "01BBBBBBBBBBBBBBBBBBBBBBBB", "01BBBBBBBBBBBBBBBBBBBBBBBB"};
  for (size_t i = 0; i < f.size(); ++i) {
    EXPECT_EQ(Keys(f[i]), (std::vector<std::string>{"id", "sequence", "type", "timestamp_unix_nano",
                                                    "sanitized_base64", "raw_body_bytes",
                                                    "raw_body_truncated", "trace_id"}));
    EXPECT_EQ(f[i]["id"], ids[i]);
    EXPECT_EQ(f[i]["sequence"], i + 1);
    EXPECT_EQ(f[i]["type"], i % 2 == 0 ? "FLOW_REQUEST" : "FLOW_RESPONSE");
    EXPECT_EQ(f[i]["timestamp_unix_nano"], i % 2 == 0 ? kRequestTime : kRequestTime + 2'000'000);
    EXPECT_EQ(f[i]["trace_id"], "");
  }
  EXPECT_EQ(Decode(f[0], "sanitized_base64"),
            "GET http://example.com/a?b=1 HTTP/1.1\r\nHost: example.com\r\n"
            "User-Agent: test/1.0\r\nAccept: */*\r\n\r\n");
  EXPECT_EQ(Decode(f[1], "sanitized_base64"),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello");
  EXPECT_EQ(f[1]["raw_body_bytes"], 5);
  EXPECT_EQ(f[1]["raw_body_truncated"], false);
}

TEST_F(FlowPipelineTest, RawPayloadOnlyWithFlowLogRawAndTruncationFlags) {
  FlowPipelineOptions o = Options();
  o.flow_log_raw = true;
  o.flow.max_body_kb = 1;
  FlowPipeline& p = StartPipeline(std::move(o));
  CapturedExchange e = Exchange();
  const std::string body(3000, 'x');
  e.response->head = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3000\r\n\r\n";
  e.response->body = body;
  e.response->body_length = body.size();
  ASSERT_TRUE(p.Submit(std::move(e)));
  p.Drain();
  const std::vector<ordered_json> f = ReadLines(flows_);
  ASSERT_EQ(f.size(), 2u);
  ASSERT_TRUE(f[0].contains("raw_base64"));
  EXPECT_EQ(Decode(f[0], "raw_base64"), kRequestHead);
  EXPECT_EQ(f[0]["raw_body_truncated"], false);
  const std::string raw = Decode(f[1], "raw_base64");
  EXPECT_EQ(raw,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1024\r\n"
            "X-0xgen-Raw-Body-Truncated: 3000\r\n\r\n" +
                std::string(1024, 'x'));
  EXPECT_EQ(f[1]["raw_body_bytes"], 3000);
  EXPECT_EQ(f[1]["raw_body_truncated"], true);
  EXPECT_EQ(Keys(f[1])[5], "raw_base64");
  EXPECT_EQ(Metric("oxg_flow_redactions_total{kind=\"raw_truncated\"}"), "1");
}

TEST_F(FlowPipelineTest, UnsampledExchangeGoesToHistoryOnly) {
  FlowPipeline& p = StartPipeline(Options());
  ASSERT_TRUE(p.Submit(Exchange("01CCCCCCCCCCCCCCCCCCCCCCCC", /*sampled=*/false)));
  p.Drain();
  EXPECT_EQ(ReadLines(history_).size(), 1u);
  EXPECT_EQ(ReadFile(flows_), "");
  EXPECT_TRUE(sink_.Events().empty());
  EXPECT_EQ(p.counts().written_flows, 0u);
}

TEST_F(FlowPipelineTest, ExchangeWithoutResponseRecordsRequestOnly) {
  FlowPipeline& p = StartPipeline(Options());
  CapturedExchange e = Exchange();
  e.response.reset();
  e.status = 502;
  ASSERT_TRUE(p.Submit(std::move(e)));
  p.Drain();
  const std::vector<ordered_json> h = ReadLines(history_);
  ASSERT_EQ(h.size(), 1u);
  EXPECT_EQ(h[0]["status"], 502);
  EXPECT_EQ(h[0]["response_bytes"], 0);
  EXPECT_EQ(h[0]["response_headers"].dump(), "{}");
  const std::vector<ordered_json> f = ReadLines(flows_);
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(f[0]["type"], "FLOW_REQUEST");
  ASSERT_EQ(sink_.Events().size(), 1u);
}

TEST_F(FlowPipelineTest, SinkGetsEventsInOrderWithTheirViews) {
  FlowPipelineOptions o = Options();
  o.flow_log_path.clear();  // the sink and the sequence work without a flow log
  FlowPipeline& p = StartPipeline(std::move(o));
  ASSERT_TRUE(p.Submit(Exchange("01AAAAAAAAAAAAAAAAAAAAAAAA")));
  CapturedExchange second = Exchange("01BBBBBBBBBBBBBBBBBBBBBBBB");
  second.request.head =
      "POST http://example.com/f HTTP/1.1\r\nHost: example.com\r\nContent-Length: 3\r\n\r\n";
  second.method = "POST";
  second.request.body = "a=1";
  second.request.body_length = 3;
  ASSERT_TRUE(p.Submit(std::move(second)));
  p.Drain();

  const std::vector<RecordedEvent> ev = sink_.Events();
  ASSERT_EQ(ev.size(), 4u);
  for (size_t i = 0; i < ev.size(); ++i) {
    EXPECT_EQ(ev[i].sequence, i + 1);
    EXPECT_EQ(ev[i].type, i % 2 == 0 ? FlowType::kRequest : FlowType::kResponse);
    EXPECT_EQ(ev[i].flow_id, i < 2 ? "01AAAAAAAAAAAAAAAAAAAAAAAA" : "01BBBBBBBBBBBBBBBBBBBBBBBB");
    EXPECT_FALSE(ev[i].context.IsValid());  // no capture span, no publish span
  }
  EXPECT_EQ(ev[0].timestamp, kRequestTime);
  EXPECT_EQ(ev[1].timestamp, kRequestTime + 2'000'000);
  EXPECT_EQ(ev[0].raw, kRequestHead);
  EXPECT_EQ(ev[2].raw,
            "POST http://example.com/f HTTP/1.1\r\nHost: example.com\r\nContent-Length: 3\r\n\r\n"
            "a=1");
  EXPECT_EQ(ev[2].sanitized, ev[2].raw);
  EXPECT_EQ(ev[2].raw_body_bytes, 3u);
  EXPECT_FALSE(ev[2].raw_body_truncated);
  EXPECT_EQ(ev[3].raw,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello");
}

TEST_F(FlowPipelineTest, FullQueueDropsAndCounts) {
  BlockingSink blocking;
  FlowPipelineOptions o = Options();
  o.sink = &blocking;
  o.queue_capacity = 2;
  FlowPipeline& p = StartPipeline(std::move(o));
  EXPECT_EQ(Metric("oxg_proxy_capture_dropped_total{reason=\"queue_full\"}"), "0");
  EXPECT_EQ(Metric("oxg_proxy_capture_dropped_total{reason=\"write_error\"}"), "0");

  ASSERT_TRUE(p.Submit(Exchange("01AAAAAAAAAAAAAAAAAAAAAAAA")));
  blocking.WaitEntered();  // the thread holds the first exchange; the queue is empty again
  EXPECT_TRUE(p.Submit(Exchange("01BBBBBBBBBBBBBBBBBBBBBBBB")));
  EXPECT_TRUE(p.Submit(Exchange("01CCCCCCCCCCCCCCCCCCCCCCCC")));
  EXPECT_FALSE(p.Submit(Exchange("01DDDDDDDDDDDDDDDDDDDDDDDD")));
  EXPECT_EQ(Metric("oxg_proxy_capture_dropped_total{reason=\"queue_full\"}"), "1");
  blocking.Release();
  p.Drain();

  const FlowPipeline::Counts c = p.counts();
  EXPECT_EQ(c.submitted, 4u);
  EXPECT_EQ(c.dropped, 1u);
  EXPECT_EQ(c.written_history, 3u);
  EXPECT_EQ(c.written_flows, 6u);
  const std::string history = ReadFile(history_);
  EXPECT_EQ(history.find("01DDDDDDDDDDDDDDDDDDDDDDDD"), std::string::npos);
}

TEST_F(FlowPipelineTest, QueueBytesLimitDrops) {
  BlockingSink blocking;
  FlowPipelineOptions o = Options();
  o.sink = &blocking;
  o.queue_max_bytes = 4096;
  FlowPipeline& p = StartPipeline(std::move(o));
  ASSERT_TRUE(p.Submit(Exchange()));
  blocking.WaitEntered();
  CapturedExchange big = Exchange("01BBBBBBBBBBBBBBBBBBBBBBBB");
  big.request.body.assign(5000, 'b');
  EXPECT_FALSE(p.Submit(std::move(big)));
  EXPECT_TRUE(p.Submit(Exchange("01CCCCCCCCCCCCCCCCCCCCCCCC")));
  blocking.Release();
  p.Drain();
  EXPECT_EQ(p.counts().dropped, 1u);
  EXPECT_EQ(Metric("oxg_proxy_capture_dropped_total{reason=\"queue_full\"}"), "1");
}

TEST_F(FlowPipelineTest, UnwritablePathFailsStartNamingIt) {
  FlowPipelineOptions o = Options();
  o.history_path = dir_ + "/missing/proxy_history.jsonl";
  auto p = FlowPipeline::Start(std::move(o), registry_, tracing::Tracer::Noop(), clock_);
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.status().message().find(dir_ + "/missing/proxy_history.jsonl"), std::string::npos)
      << p.status();
  EXPECT_NE(p.status().message().find("No such file or directory"), std::string::npos);

  o = Options();
  o.flow_log_path = dir_;  // a directory
  p = FlowPipeline::Start(std::move(o), registry_, tracing::Tracer::Noop(), clock_);
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.status().message().find(dir_ + ": "), std::string::npos) << p.status();

  // Nothing was registered by the failed starts: a later one succeeds on the same registry.
  StartPipeline(Options());
}

TEST_F(FlowPipelineTest, EmptyPathsDisableFiles) {
  FlowPipelineOptions o;
  o.sink = &sink_;
  FlowPipeline& p = StartPipeline(std::move(o));
  ASSERT_TRUE(p.Submit(Exchange()));
  p.Drain();
  EXPECT_EQ(sink_.Events().size(), 2u);
  EXPECT_EQ(p.counts().written_history, 0u);
  EXPECT_EQ(p.counts().written_flows, 0u);
}

TEST_F(FlowPipelineTest, WriteErrorsAreCountedAndReportedAtMostEveryTenSeconds) {
  const std::string log_path = dir_ + "/log";
  const int log_fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  ASSERT_GE(log_fd, 0);
  log::SetFdForTesting(log_fd);

  FlowPipelineOptions o = Options();
  o.flow_log_path = "/dev/full";  // a character device: Start accepts it, every write fails
  FlowPipeline& p = StartPipeline(std::move(o));
  ASSERT_TRUE(p.Submit(Exchange()));
  p.Drain();
  ASSERT_TRUE(p.Submit(Exchange()));
  p.Drain();
  clock_.Advance(std::chrono::seconds(11));
  ASSERT_TRUE(p.Submit(Exchange()));
  p.Drain();
  log::SetFdForTesting(-1);
  ::close(log_fd);

  const FlowPipeline::Counts c = p.counts();
  EXPECT_EQ(c.write_errors, 6u);
  EXPECT_EQ(c.written_flows, 0u);
  EXPECT_EQ(c.written_history, 3u);  // the other file is unaffected
  EXPECT_EQ(Metric("oxg_proxy_capture_dropped_total{reason=\"write_error\"}"), "6");
  EXPECT_EQ(sink_.Events().size(), 6u);  // the sink does not depend on the disk

  const std::string log = ReadFile(log_path);
  size_t reports = 0;
  for (size_t at = log.find("cannot write to /dev/full: No space left on device");
       at != std::string::npos;
       at = log.find("cannot write to /dev/full: No space left on device", at + 1)) {
    ++reports;
  }
  EXPECT_EQ(reports, 2u) << log;
  EXPECT_NE(log.find("(4 lines lost since the last report)"), std::string::npos) << log;
}

TEST_F(FlowPipelineTest, PublishSpansAreChildrenOfTheCaptureSpan) {
  auto state = std::make_shared<tracing::InMemoryExporter::State>();
  tracing::Tracer tracer(tracing::TracerOptions{1.0}, Clock::Real());
  tracer.AddProcessor(std::make_unique<tracing::BatchSpanProcessor>(
      std::make_unique<tracing::InMemoryExporter>(state), tracing::BatchOptions{}, nullptr));
  FlowPipeline& p = StartPipeline(Options(), tracer);

  tracing::Span capture =
      tracer.StartSpan("proxy.capture_flow", tracing::SpanKind::kServer, tracing::Parent::kRoot);
  ASSERT_TRUE(capture.recording());
  CapturedExchange e = Exchange();
  e.capture_span = capture.context();
  ASSERT_TRUE(p.Submit(std::move(e)));
  p.Drain();
  capture.End();
  tracer.Shutdown();

  std::vector<tracing::SpanData> publish;
  {
    std::lock_guard lock(state->mu);
    for (const tracing::SpanData& s : state->spans) {
      if (s.name == "proxy.publish_flow_event") publish.push_back(s);
    }
  }
  ASSERT_EQ(publish.size(), 2u);
  const std::vector<RecordedEvent> ev = sink_.Events();
  ASSERT_EQ(ev.size(), 2u);
  const char* phases[] = {"request", "response"};
  for (size_t i = 0; i < 2; ++i) {
    const tracing::SpanData& s = publish[i];
    EXPECT_EQ(s.kind, tracing::SpanKind::kInternal);
    EXPECT_EQ(s.trace_id, capture.context().trace_id);
    EXPECT_EQ(s.parent_span_id, capture.context().span_id);
    std::map<std::string, std::string> attrs;
    for (const tracing::Attribute& a : s.attributes) {
      if (const auto* v = std::get_if<std::string>(&a.value)) attrs[a.key] = *v;
    }
    EXPECT_EQ(attrs["oxg.flow.id"], "01HZZZZZZZZZZZZZZZZZZZZZZZ");
    EXPECT_EQ(attrs["oxg.flow.phase"], phases[i]);
    // The event carries the publish span's context, for the plugin bus's child spans.
    EXPECT_EQ(ev[i].context.span_id, s.span_id);
    EXPECT_EQ(ev[i].context.trace_id, s.trace_id);
    EXPECT_TRUE(ev[i].context.sampled());
  }
  const std::string trace_hex = capture.context().trace_id.ToHex();
  for (const ordered_json& f : ReadLines(flows_)) EXPECT_EQ(f["trace_id"], trace_hex);
  EXPECT_EQ(ReadLines(history_)[0]["trace_id"], trace_hex);
}

TEST_F(FlowPipelineTest, StopWritesEverythingQueuedThenRefuses) {
  FlowPipeline& p = StartPipeline(Options());
  for (int i = 0; i < 50; ++i) ASSERT_TRUE(p.Submit(Exchange()));
  p.Stop();
  p.Stop();  // idempotent
  EXPECT_EQ(ReadLines(history_).size(), 50u);
  EXPECT_EQ(ReadLines(flows_).size(), 100u);
  EXPECT_FALSE(p.Submit(Exchange()));
  EXPECT_EQ(p.counts().dropped, 1u);
  p.Drain();  // nothing pending: returns at once
}

TEST_F(FlowPipelineTest, DestructorStopsAndFlushes) {
  {
    FlowPipeline& p = StartPipeline(Options());
    for (int i = 0; i < 20; ++i) ASSERT_TRUE(p.Submit(Exchange()));
    pipeline_.reset();
  }
  EXPECT_EQ(ReadLines(history_).size(), 20u);
}

TEST_F(FlowPipelineTest, SequenceContinuesAcrossRestartsAndAfterAFragment) {
  StartPipeline(Options()).Submit(Exchange());
  pipeline_.reset();
  {
    // A crash left half a line behind.
    std::ofstream out(flows_, std::ios::app | std::ios::binary);
    out << R"({"id":"01XXXXXXXXXXXXXXXXXXXXXXXX","sequence":3,"ty)";
  }
  metrics::Registry second_registry{clock_};
  auto p = FlowPipeline::Start(Options(), second_registry, tracing::Tracer::Noop(), clock_);
  ASSERT_TRUE(p.ok()) << p.status();
  (*p)->Submit(Exchange());
  (*p)->Stop();

  std::istringstream in(ReadFile(flows_));
  std::string line;
  std::vector<uint64_t> sequences;
  int bad = 0;
  while (std::getline(in, line)) {
    const ordered_json j = ordered_json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) {
      ++bad;
      continue;
    }
    sequences.push_back(j["sequence"].get<uint64_t>());
  }
  EXPECT_EQ(bad, 1);  // the fragment stays one bad line; nothing was glued to it
  EXPECT_EQ(sequences, (std::vector<uint64_t>{1, 2, 3, 4}));
}

TEST_F(FlowPipelineTest, UnparsableHeadWritesHistoryWithoutHeadersAndNoFlow) {
  const std::string log_path = dir_ + "/log";
  const int log_fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  ASSERT_GE(log_fd, 0);
  log::SetFdForTesting(log_fd);
  FlowPipeline& p = StartPipeline(Options());
  for (int i = 0; i < 2; ++i) {
    CapturedExchange e = Exchange();
    e.request.head = "NOT A HEAD\r\n\r\n";
    ASSERT_TRUE(p.Submit(std::move(e)));
  }
  ASSERT_TRUE(p.Submit(Exchange()));
  p.Drain();
  log::SetFdForTesting(-1);
  ::close(log_fd);

  const std::vector<ordered_json> h = ReadLines(history_);
  ASSERT_EQ(h.size(), 3u);
  EXPECT_EQ(h[0]["request_headers"].dump(), "{}");
  EXPECT_EQ(h[0]["response_headers"].dump(), "{}");
  EXPECT_EQ(h[0]["status"], 200);
  EXPECT_EQ(ReadLines(flows_).size(), 2u);  // only the third exchange's flow
  EXPECT_EQ(p.counts().dropped, 0u);
  const std::string log = ReadFile(log_path);
  const size_t first = log.find("cannot re-parse a captured head");
  EXPECT_NE(first, std::string::npos) << log;
  EXPECT_EQ(log.find("cannot re-parse a captured head", first + 1), std::string::npos) << log;
}

TEST_F(FlowPipelineTest, ConcurrentSubmittersLoseNothing) {
  FlowPipeline& p = StartPipeline(Options());
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&p] {
      for (int i = 0; i < 250; ++i) EXPECT_TRUE(p.Submit(Exchange()));
    });
  }
  for (std::thread& t : threads) t.join();
  p.Drain();
  EXPECT_EQ(ReadLines(history_).size(), 1000u);
  const std::vector<ordered_json> f = ReadLines(flows_);
  ASSERT_EQ(f.size(), 2000u);
  for (size_t i = 0; i < f.size(); ++i) ASSERT_EQ(f[i]["sequence"], i + 1);
}

}  // namespace
}  // namespace oxg::proxy
