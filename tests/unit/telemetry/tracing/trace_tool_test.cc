#include "telemetry/tracing/trace_tool.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "telemetry/tracing/chrome_trace.h"

namespace oxg::tracing {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using Json = nlohmann::json;

constexpr int64_t kBase = int64_t{1700000000} * 1000000000;  // 2023-11-14T22:13:20Z

constexpr char kTrace[] = "0af7651916cd43dd8448eb211c80319c";

TraceId Trace(const char* hex = kTrace) {
  TraceId id;
  EXPECT_TRUE(HexDecode(hex, id.bytes));
  return id;
}

SpanId Id(uint8_t n) {
  SpanId id;
  id.bytes[0] = 0xb7;
  id.bytes[7] = n;
  return id;
}

SpanData Span(std::string name, int64_t start_us, int64_t end_us, uint8_t id, uint8_t parent = 0,
              SpanKind kind = SpanKind::kInternal) {
  SpanData s;
  s.trace_id = Trace();
  s.span_id = Id(id);
  if (parent != 0) s.parent_span_id = Id(parent);
  s.name = std::move(name);
  s.kind = kind;
  s.start_unix_nano = kBase + start_us * 1000;
  s.end_unix_nano = kBase + end_us * 1000;
  s.thread_id = 7;
  return s;
}

// Fields that survive the archive (times at microsecond precision).
void ExpectSame(const SpanData& a, const SpanData& b) {
  EXPECT_EQ(a.trace_id, b.trace_id);
  EXPECT_EQ(a.span_id, b.span_id);
  EXPECT_EQ(a.parent_span_id, b.parent_span_id);
  EXPECT_EQ(a.name, b.name);
  EXPECT_EQ(a.kind, b.kind);
  EXPECT_EQ(a.status, b.status);
  EXPECT_EQ(a.status_message, b.status_message);
  EXPECT_EQ(a.trace_state, b.trace_state);
  EXPECT_EQ(a.start_unix_nano, b.start_unix_nano);
  EXPECT_EQ(a.end_unix_nano, b.end_unix_nano);
  ASSERT_EQ(a.attributes.size(), b.attributes.size());
  for (size_t i = 0; i < a.attributes.size(); ++i) {
    EXPECT_EQ(a.attributes[i].key, b.attributes[i].key);
    EXPECT_EQ(a.attributes[i].value, b.attributes[i].value) << a.attributes[i].key;
  }
  ASSERT_EQ(a.events.size(), b.events.size());
  for (size_t i = 0; i < a.events.size(); ++i) {
    EXPECT_EQ(a.events[i].name, b.events[i].name);
    EXPECT_EQ(a.events[i].time_unix_nano, b.events[i].time_unix_nano);
    EXPECT_EQ(a.events[i].attributes.size(), b.events[i].attributes.size());
  }
}

long LineCount(const std::string& text) { return std::count(text.begin(), text.end(), '\n'); }

class TraceToolTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/oxg_trace_tool_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/spans.json";
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  void WriteArchive(const std::vector<SpanData>& spans, uint64_t max_bytes = 1 << 20) {
    ChromeTraceOptions o;
    o.path = path_;
    o.pid = 99;
    o.process_name = "0xgend-test";
    o.max_file_bytes = max_bytes;
    auto e = ChromeTraceFileExporter::Open(o);
    ASSERT_TRUE(e.ok()) << e.status();
    for (const SpanData& s : spans) {
      ASSERT_EQ((*e)->Export(std::span<const SpanData>(&s, 1)), ExportResult::kSuccess);
    }
    (*e)->Shutdown();
  }

  void WriteText(const std::string& text) { std::ofstream(path_, std::ios::binary) << text; }

  int Run(int (*fn)(const std::string&, const TraceToolOptions&, std::ostream&, std::ostream&),
          TraceToolOptions options = {}) {
    out_.str("");
    err_.str("");
    return fn(path_, options, out_, err_);
  }
  int Tree(std::string_view id, TraceToolOptions options = {}) {
    out_.str("");
    err_.str("");
    return TraceTree(id, path_, options, out_, err_);
  }

  std::string dir_;
  std::string path_;
  std::ostringstream out_;
  std::ostringstream err_;
};

// The sample trace: a server span with two children, one of them with a child, and an error.
std::vector<SpanData> Sample() {
  SpanData grandchild = Span("plugin_bus.dispatch_event", 150, 400, 4, 3, SpanKind::kProducer);
  grandchild.attributes = {{"oxg.plugin.id", std::string("p1")}};
  SpanData child1 = Span("proxy.publish_flow_event", 100, 500, 3, 1);
  child1.attributes = {{"oxg.flow.phase", std::string("request")}};
  SpanData child2 = Span("proxy.publish_flow_event", 600, 900, 2, 1);
  child2.status = StatusCode::kError;
  child2.status_message = "queue full";
  SpanData root = Span("proxy.capture_flow", 0, 1250, 1, 0, SpanKind::kServer);
  root.status = StatusCode::kOk;
  root.attributes = {{"http.request.method", std::string("GET")},
                     {"http.response.status_code", int64_t{200}},
                     {"oxg.flow.sampled", true},
                     {"oxg.ratio", 0.25}};
  SpanData other = Span("netgate.http_request", 2000, 2100, 9, 0, SpanKind::kClient);
  other.trace_id = Trace("11111111111111111111111111111111");
  return {grandchild, child1, child2, root, other};
}

TEST(ParseArchiveLineTest, PunctuationAndMetadata) {
  for (const char* line : {"[", "]", "", "  ", "\r", "[\r", "],"}) {
    auto parsed = ParseArchiveLine(line);
    ASSERT_TRUE(parsed.ok()) << line << ": " << parsed.status();
    EXPECT_EQ(parsed->kind, ArchiveLine::Kind::kNone) << line;
  }
  auto process = ParseArchiveLine(
      R"({"name":"process_name","ph":"M","pid":12,"tid":0,"args":{"name":"0xgend"}},)");
  ASSERT_TRUE(process.ok());
  EXPECT_EQ(process->kind, ArchiveLine::Kind::kProcessName);
  EXPECT_EQ(process->process_name, "0xgend");
  EXPECT_EQ(process->pid, 12u);
  auto thread = ParseArchiveLine(
      R"({"name":"thread_name","ph":"M","pid":12,"tid":3,"args":{"name":"thread 5 #1"}},)");
  ASSERT_TRUE(thread.ok());
  EXPECT_EQ(thread->kind, ArchiveLine::Kind::kNone);
}

TEST(ParseArchiveLineTest, CompleteEventWithEveryField) {
  auto parsed = ParseArchiveLine(
      R"([{"name":"a.b","cat":"a","ph":"X","ts":1.5,"dur":2,"pid":3,"tid":1,)"
      R"("args":{"trace_id":"0AF7651916CD43DD8448EB211C80319C","span_id":"b700000000000001",)"
      R"("parent_span_id":"b700000000000002","kind":"consumer","status":"error",)"
      R"("status_message":"boom","trace_state":"k=v","attributes":{"s":"x","i":-3,)"
      R"("big":9223372036854775807,"d":1.0,"b":false,"nan":null},)"
      R"("events":[{"name":"e","ts":1700000000000002,"attributes":{"n":1}}]}}])");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  ASSERT_EQ(parsed->kind, ArchiveLine::Kind::kSpan);
  const SpanData& s = parsed->span;
  EXPECT_EQ(s.name, "a.b");
  EXPECT_EQ(s.start_unix_nano, 1500);  // fractional microseconds from other writers
  EXPECT_EQ(s.end_unix_nano, 3500);
  EXPECT_EQ(s.trace_id.ToHex(), kTrace);
  EXPECT_EQ(s.span_id, Id(1));
  EXPECT_EQ(s.parent_span_id, Id(2));
  EXPECT_EQ(s.kind, SpanKind::kConsumer);
  EXPECT_EQ(s.status, StatusCode::kError);
  EXPECT_EQ(s.status_message, "boom");
  EXPECT_EQ(s.trace_state, "k=v");
  EXPECT_EQ(parsed->pid, 3u);
  ASSERT_EQ(s.attributes.size(), 5u);  // the null one is dropped
  EXPECT_EQ(s.attributes[0].value, AttributeValue(std::string("x")));
  EXPECT_EQ(s.attributes[1].value, AttributeValue(int64_t{-3}));
  EXPECT_EQ(s.attributes[2].value, AttributeValue(int64_t{9223372036854775807}));
  EXPECT_EQ(s.attributes[3].value, AttributeValue(1.0));
  EXPECT_EQ(s.attributes[4].value, AttributeValue(false));
  ASSERT_EQ(s.events.size(), 1u);
  EXPECT_EQ(s.events[0].time_unix_nano, kBase + 2000);
}

TEST(ParseArchiveLineTest, BadLinesSayWhy) {
  const std::string args =
      R"("args":{"trace_id":"0af7651916cd43dd8448eb211c80319c","span_id":"b700000000000001",)"
      R"("parent_span_id":"","kind":"server","status":"ok","attributes":{}})";
  const auto event = [&](const std::string& fields) {
    return R"({"name":"a","ph":"X",)" + fields + "},";
  };
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"garbage", "not a trace event"},
      {"{\"name\":", "invalid JSON"},
      {"{\"name\":\"a\"}", "missing \"ph\""},
      {R"({"name":"a","ph":"B","ts":1},)", "unsupported event phase \"B\""},
      {event(R"("dur":1,)" + args), "missing \"ts\""},
      {event(R"("ts":"1","dur":1,)" + args), "\"ts\" is not a number"},
      {event(R"("ts":1,"dur":-1,)" + args), "\"dur\" is negative"},
      {event(R"("ts":1e300,"dur":1,)" + args), "\"ts\" is out of range"},
      {event(R"("ts":9223372036854775807,"dur":1,)" + args), "\"ts\" is out of range"},
      {event(R"("ts":1,"dur":1)"), "missing \"args\""},
      {R"({"name":"a","ph":"X","ts":1,"dur":1,"args":{"trace_id":"0af7","span_id":"b7"}},)",
       "\"trace_id\" is not 32 hex digits"},
      {R"({"name":"a","ph":"X","ts":1,"dur":1,"args":{"trace_id":")" + std::string(32, '0') +
           R"(","span_id":"b7"}},)",
       "\"trace_id\" is all zeros"},
      {event(R"("ts":1,"dur":1,)" + std::string(args).replace(args.find("server"), 6, "sideways")),
       "unknown kind \"sideways\""},
      {event(R"("ts":1,"dur":1,)" + std::string(args).replace(args.find("{}"), 2, "{\"o\":[1]}")),
       "attribute \"o\" is not a string, number or boolean"},
      {std::string(100, '[') + std::string(100, ']'), "not a trace event"},
      {"{\"a\":" + std::string(100, '[') + std::string(100, ']') + "}", "nested too deeply"},
  };
  for (const auto& [line, reason] : cases) {
    auto parsed = ParseArchiveLine(line);
    ASSERT_FALSE(parsed.ok()) << line;
    EXPECT_THAT(std::string(parsed.status().message()), HasSubstr(reason)) << line;
  }
}

TEST_F(TraceToolTest, ReadsBackWhatTheExporterWrote) {
  std::vector<SpanData> spans = Sample();
  spans[0].trace_state = "vendor=1";
  spans[0].events = {{"sent", kBase + 200000, {{"bytes", int64_t{42}}}}};
  spans[0].attributes.push_back({"whole", 2.0});
  spans[0].attributes.push_back({"text", std::string("tab\there \u00e9 \"quoted\"")});
  WriteArchive(spans);
  std::vector<SpanData> read;
  ArchiveReader reader({});
  ASSERT_TRUE(reader.ReadFile(path_, [&](SpanData&& s) { read.push_back(std::move(s)); }).ok());
  EXPECT_EQ(reader.process_name(), "0xgend-test");
  ASSERT_EQ(read.size(), spans.size());
  for (size_t i = 0; i < spans.size(); ++i) ExpectSame(spans[i], read[i]);
}

TEST_F(TraceToolTest, AcceptsAClosedArrayAndAnyLineLength) {
  SpanData big = Span("export.write", 0, 10, 1);
  big.attributes = {{"blob", std::string(3 << 20, 'x')}};
  WriteArchive({big, Span("export.write", 20, 30, 2)}, /*max_bytes=*/16 << 20);
  std::string text;
  {
    std::ifstream in(path_);
    std::stringstream ss;
    ss << in.rdbuf();
    text = ss.str();
  }
  // Closed the way a tool would: the last comma dropped and "]" appended, on the same line.
  WriteText(text.substr(0, text.size() - 2) + "]\n");
  ASSERT_EQ(Run(TraceCat), 0) << err_.str();
  EXPECT_EQ(LineCount(out_.str()), 2);
  // And with "]" on a line of its own.
  WriteText(text + "]\n");
  ASSERT_EQ(Run(TraceCat), 0) << err_.str();
  EXPECT_EQ(LineCount(out_.str()), 2);
}

TEST_F(TraceToolTest, Cat) {
  WriteArchive(Sample());
  ASSERT_EQ(Run(TraceCat), 0) << err_.str();
  const std::string t = kTrace;
  EXPECT_EQ(out_.str(),
            "2023-11-14T22:13:20.000150Z 250us " + t +
                " b700000000000004 parent=b700000000000003 producer unset "
                "plugin_bus.dispatch_event oxg.plugin.id=\"p1\"\n"
                "2023-11-14T22:13:20.000100Z 400us " +
                t +
                " b700000000000003 parent=b700000000000001 internal unset "
                "proxy.publish_flow_event oxg.flow.phase=\"request\"\n"
                "2023-11-14T22:13:20.000600Z 300us " +
                t +
                " b700000000000002 parent=b700000000000001 internal error(\"queue full\") "
                "proxy.publish_flow_event\n"
                "2023-11-14T22:13:20.000000Z 1.250ms " +
                t +
                " b700000000000001 parent=- server ok proxy.capture_flow "
                "http.request.method=\"GET\" http.response.status_code=200 "
                "oxg.flow.sampled=true oxg.ratio=0.25\n"
                "2023-11-14T22:13:20.002000Z 100us 11111111111111111111111111111111 "
                "b700000000000009 parent=- client unset netgate.http_request\n");
  EXPECT_EQ(err_.str(), "");
}

TEST_F(TraceToolTest, Tree) {
  WriteArchive(Sample());
  ASSERT_EQ(Tree(kTrace), 0) << err_.str();
  EXPECT_EQ(out_.str(),
            "trace 0af7651916cd43dd8448eb211c80319c: 4 spans, 2023-11-14T22:13:20.000000Z, "
            "1.250ms\n"
            "proxy.capture_flow  1.250ms  +0us  server ok  span=b700000000000001\n"
            "  proxy.publish_flow_event  400us  +100us  internal unset  span=b700000000000003\n"
            "    plugin_bus.dispatch_event  250us  +150us  producer unset  "
            "span=b700000000000004\n"
            "  proxy.publish_flow_event  300us  +600us  internal error(\"queue full\")  "
            "span=b700000000000002\n");
  // Upper-case ids are the same id.
  ASSERT_EQ(Tree("0AF7651916CD43DD8448EB211C80319C"), 0);
}

TEST_F(TraceToolTest, TreeShowsOrphansAndSurvivesCycles) {
  SpanData orphan = Span("replay.dispatch", 10, 20, 5, 77);
  SpanData a = Span("a.a", 30, 40, 6, 7);
  SpanData b = Span("a.b", 31, 39, 7, 6);  // a and b name each other as parent
  WriteArchive({orphan, a, b});
  ASSERT_EQ(Tree(kTrace), 0) << err_.str();
  EXPECT_THAT(out_.str(), HasSubstr("replay.dispatch  10us  +0us  internal unset  "
                                    "span=b700000000000005  (parent b70000000000004d not in the "
                                    "archive)\n"));
  EXPECT_THAT(out_.str(), HasSubstr("a.a  10us"));
  EXPECT_THAT(out_.str(), HasSubstr("a.b  8us"));
}

TEST_F(TraceToolTest, TreeErrors) {
  WriteArchive(Sample());
  EXPECT_EQ(Tree("22222222222222222222222222222222"), 1);
  EXPECT_THAT(err_.str(), HasSubstr("trace 22222222222222222222222222222222 is not in " + path_));
  for (const char* bad :
       {"xyz", "0af7651916cd43dd8448eb211c80319", "0af7651916cd43dd8448eb211c80319cc",
        "0af7651916cd43dd8448eb211c80319g", "00000000000000000000000000000000"}) {
    EXPECT_EQ(Tree(bad), 2) << bad;
    EXPECT_THAT(err_.str(), HasSubstr("is not a trace id")) << bad;
  }
  std::filesystem::remove(path_);
  EXPECT_EQ(Tree(kTrace), 2);
  EXPECT_THAT(err_.str(), HasSubstr(path_ + ": No such file or directory"));
}

TEST_F(TraceToolTest, BadLinesStopWithFileAndLineUnlessSkipped) {
  WriteArchive(Sample());
  std::vector<std::string> lines;
  {
    std::ifstream in(path_);
    std::string line;
    while (std::getline(in, line)) lines.push_back(line);
  }
  lines.insert(lines.begin() + 4, "{\"name\":\"broken\",");
  lines.insert(lines.begin() + 6, "not json at all,");
  std::string text;
  for (const std::string& l : lines) text += l + "\n";
  WriteText(text);

  EXPECT_EQ(Run(TraceCat), 1);
  EXPECT_THAT(err_.str(), HasSubstr(path_ + ":5: invalid JSON"));
  EXPECT_EQ(LineCount(out_.str()), 1);  // the span before it

  EXPECT_EQ(Run(TraceCat, {.skip_bad_lines = true}), 0);
  EXPECT_THAT(err_.str(), HasSubstr(path_ + ":5: invalid JSON"));
  EXPECT_THAT(err_.str(), HasSubstr(path_ + ":7: not a trace event (a JSON object) (skipped)"));
  EXPECT_THAT(err_.str(), HasSubstr("skipped 2 bad line(s)"));
  EXPECT_EQ(LineCount(out_.str()), 5);

  EXPECT_EQ(Run(TraceToOtlpJson), 1);
  EXPECT_EQ(Tree(kTrace), 1);
  EXPECT_EQ(Tree(kTrace, {.skip_bad_lines = true}), 0);
}

TEST_F(TraceToolTest, UnfinishedLastLineIsAWriteInProgress) {
  WriteArchive(Sample());
  {
    std::ofstream out(path_, std::ios::app);
    out << R"({"name":"proxy.capture_flow","cat":"pro)";
  }
  EXPECT_EQ(Run(TraceCat), 0);
  EXPECT_THAT(err_.str(), HasSubstr(":9: invalid JSON"));
  EXPECT_THAT(err_.str(), HasSubstr("(unfinished last line ignored)"));
  EXPECT_EQ(LineCount(out_.str()), 5);
}

TEST_F(TraceToolTest, RotatedFilesOldestFirst) {
  std::vector<SpanData> spans;
  for (uint8_t i = 1; i <= 60; ++i) spans.push_back(Span("a.b", i * 10, i * 10 + 5, i));
  WriteArchive(spans, /*max_bytes=*/2048);
  ASSERT_TRUE(std::filesystem::exists(path_ + ".2"));
  const std::vector<std::string> files = ArchiveFiles(path_, true);
  ASSERT_GE(files.size(), 3u);
  EXPECT_EQ(files.back(), path_);
  EXPECT_EQ(files[files.size() - 2], path_ + ".1");
  EXPECT_EQ(files[files.size() - 3], path_ + ".2");
  EXPECT_THAT(ArchiveFiles(path_, false), ElementsAre(path_));

  ASSERT_EQ(Run(TraceCat, {.rotated = true}), 0) << err_.str();
  std::vector<std::string> ids;
  std::istringstream in(out_.str());
  for (std::string line; std::getline(in, line);)
    ids.push_back(line.substr(line.find(" b7") + 1, 16));
  // Five files kept at most: the newest spans, in order.
  ASSERT_FALSE(ids.empty());
  EXPECT_EQ(ids.back(), Id(60).ToHex());
  EXPECT_TRUE(std::is_sorted(ids.begin(), ids.end()));
  ASSERT_EQ(Run(TraceCat), 0);
  EXPECT_LT(LineCount(out_.str()), static_cast<long>(ids.size()));
}

TEST_F(TraceToolTest, ToOtlpJson) {
  WriteArchive(Sample());
  ASSERT_EQ(Run(TraceToOtlpJson), 0) << err_.str();
  const Json request = Json::parse(out_.str());
  ASSERT_EQ(request.at("resourceSpans").size(), 1u);
  const Json& rs = request.at("resourceSpans")[0];
  bool service = false;
  for (const Json& a : rs.at("resource").at("attributes")) {
    if (a.at("key") == "service.name") {
      EXPECT_EQ(a.at("value").at("stringValue"), "0xgend-test");
      service = true;
    }
  }
  EXPECT_TRUE(service);
  std::vector<Json> spans;
  for (const Json& ss : rs.at("scopeSpans")) {
    for (const Json& s : ss.at("spans")) spans.push_back(s);
  }
  ASSERT_EQ(spans.size(), 5u);
  const Json* root = nullptr;
  for (const Json& s : spans) {
    if (s.at("name") == "proxy.capture_flow") root = &s;
  }
  ASSERT_NE(root, nullptr);
  EXPECT_EQ(root->at("traceId"), kTrace);
  EXPECT_EQ(root->at("spanId"), "b700000000000001");
  EXPECT_EQ(root->at("kind"), 2);
  EXPECT_EQ(root->at("startTimeUnixNano"), std::to_string(kBase));
  EXPECT_EQ(root->at("endTimeUnixNano"), std::to_string(kBase + 1250000));
  EXPECT_EQ(root->at("status").at("code"), 1);
}

TEST(FormatTest, Durations) {
  EXPECT_EQ(FormatDuration(0), "0us");
  EXPECT_EQ(FormatDuration(999000), "999us");
  EXPECT_EQ(FormatDuration(1500), "1.500us");
  EXPECT_EQ(FormatDuration(1000000), "1.000ms");
  EXPECT_EQ(FormatDuration(1234567000), "1.234s");
  EXPECT_EQ(FormatDuration(-2000), "-2us");
  EXPECT_FALSE(FormatDuration(std::numeric_limits<int64_t>::min()).empty());
}

}  // namespace
}  // namespace oxg::tracing
