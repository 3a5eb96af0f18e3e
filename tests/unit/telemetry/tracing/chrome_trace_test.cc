#include "telemetry/tracing/chrome_trace.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "common/clock.h"
#include "common/log.h"
#include "common/strings.h"

namespace oxg::tracing {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;
using Json = nlohmann::json;

constexpr int64_t kBase = int64_t{1700000000} * 1000000000;  // 2023-11-14T22:13:20Z in ns

TraceId TraceOf(uint8_t n) {
  TraceId id;
  id.bytes[0] = 0xab;
  id.bytes[15] = n;
  return id;
}

SpanId SpanOf(uint32_t n) {
  SpanId id;
  id.bytes[0] = 0x10;
  id.bytes[4] = static_cast<uint8_t>(n >> 16);
  id.bytes[5] = static_cast<uint8_t>(n >> 8);
  id.bytes[7] = static_cast<uint8_t>(n);
  return id;
}

SpanData Span(std::string name, int64_t start_ns, int64_t end_ns, uint32_t thread = 100,
              uint32_t id = 1, uint32_t parent = 0) {
  SpanData s;
  s.trace_id = TraceOf(1);
  s.span_id = SpanOf(id);
  if (parent != 0) s.parent_span_id = SpanOf(parent);
  s.name = std::move(name);
  s.start_unix_nano = kBase + start_ns;
  s.end_unix_nano = kBase + end_ns;
  s.thread_id = thread;
  return s;
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  std::string line;
  std::istringstream in(text);
  while (std::getline(in, line)) lines.push_back(line);
  return lines;
}

// The file with its last comma dropped and the array closed: strict JSON.
Json ParseClosed(const std::string& text) {
  std::string closed = text;
  if (closed.size() >= 2 && closed.compare(closed.size() - 2, 2, ",\n") == 0) {
    closed.resize(closed.size() - 2);
  }
  closed += "\n]";
  return Json::parse(closed);
}

// What a viewer does with the file as it is (unterminated, trailing comma): find each event
// object after the "[" by bracket matching, ignoring line structure, and parse it strictly.
std::vector<Json> ParseTolerant(const std::string& text) {
  std::vector<Json> events;
  size_t i = text.find_first_not_of(" \t\r\n");
  if (i == std::string::npos || text[i] != '[') {
    ADD_FAILURE() << "does not start with [";
    return events;
  }
  ++i;
  while (true) {
    while (i < text.size() && (isspace(static_cast<unsigned char>(text[i])) || text[i] == ',')) ++i;
    if (i >= text.size() || text[i] == ']') break;
    if (text[i] != '{') {
      ADD_FAILURE() << "unexpected character at " << i;
      break;
    }
    const size_t begin = i;
    int depth = 0;
    bool in_string = false;
    bool escaped = false;
    for (; i < text.size(); ++i) {
      const char c = text[i];
      if (in_string) {
        if (escaped) {
          escaped = false;
        } else if (c == '\\') {
          escaped = true;
        } else if (c == '"') {
          in_string = false;
        }
      } else if (c == '"') {
        in_string = true;
      } else if (c == '{' || c == '[') {
        ++depth;
      } else if (c == '}' || c == ']') {
        if (--depth == 0) {
          ++i;
          break;
        }
      }
    }
    events.push_back(Json::parse(text.substr(begin, i - begin)));
  }
  return events;
}

// An independent nesting check, the way viewers build slice stacks: per (pid, tid), sort by
// start (longer first on ties) and keep a stack of open slices; a slice that starts inside the
// top one must end inside it too.
std::vector<std::string> NestingViolations(const std::vector<Json>& events) {
  std::map<std::pair<int64_t, int64_t>, std::vector<std::pair<int64_t, int64_t>>> by_track;
  for (const Json& e : events) {
    if (e.at("ph") != "X") continue;
    const int64_t ts = e.at("ts").get<int64_t>();
    by_track[{e.at("pid").get<int64_t>(), e.at("tid").get<int64_t>()}].emplace_back(
        ts, ts + e.at("dur").get<int64_t>());
  }
  std::vector<std::string> violations;
  for (auto& [track, slices] : by_track) {
    std::sort(slices.begin(), slices.end(), [](const auto& a, const auto& b) {
      return a.first != b.first ? a.first < b.first : a.second > b.second;
    });
    std::vector<std::pair<int64_t, int64_t>> open;
    for (const auto& s : slices) {
      while (!open.empty() && open.back().second <= s.first) open.pop_back();
      if (!open.empty() && s.second > open.back().second) {
        violations.push_back(Cat("tid ", track.second, ": [", s.first, ",", s.second,
                                 ") overlaps [", open.back().first, ",", open.back().second, ")"));
      }
      open.push_back(s);
    }
  }
  return violations;
}

class ChromeTraceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/oxg_chrome_trace_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/spans.json";
  }
  void TearDown() override {
    log::SetFdForTesting(-1);
    std::filesystem::remove_all(dir_);
  }

  std::unique_ptr<ChromeTraceFileExporter> Open(uint64_t max_bytes = uint64_t{256} << 20,
                                                int keep = 5) {
    ChromeTraceOptions o;
    o.path = path_;
    o.pid = 4242;
    o.max_file_bytes = max_bytes;
    o.max_rotated_files = keep;
    o.clock = &clock_;
    auto e = ChromeTraceFileExporter::Open(o);
    EXPECT_TRUE(e.ok()) << e.status();
    return e.ok() ? std::move(*e) : nullptr;
  }

  SimulatedClock clock_;
  std::string dir_;
  std::string path_;
};

TEST(ChromeTraceFormatTest, CategoryAndMicroseconds) {
  EXPECT_EQ(SpanCategory("proxy.capture_flow"), "proxy");
  EXPECT_EQ(SpanCategory("plugin_bus.EventStream"), "plugin_bus");
  EXPECT_EQ(SpanCategory("plugin.supervisor.task"), "plugin");
  EXPECT_EQ(SpanCategory("export"), "export");
  EXPECT_EQ(FloorMicros(1999), 1);
  EXPECT_EQ(FloorMicros(2000), 2);
  EXPECT_EQ(FloorMicros(0), 0);
  EXPECT_EQ(FloorMicros(-1), -1);
  EXPECT_EQ(FloorMicros(-1000), -1);
  EXPECT_EQ(FloorMicros(-1001), -2);
}

TEST_F(ChromeTraceTest, ExactLineFormat) {
  auto exporter = Open();
  ASSERT_NE(exporter, nullptr);
  EXPECT_STREQ(exporter->SuccessOutcome(), "written_file");
  SpanData s = Span("proxy.capture_flow", 123456, 373999, 77, 2, 1);
  s.kind = SpanKind::kServer;
  s.status = StatusCode::kError;
  s.status_message = "upstream \"timeout\"";
  s.attributes = {{"http.request.method", std::string("GET")},
                  {"http.response.status_code", int64_t{504}},
                  {"oxg.ratio", 0.5},
                  {"oxg.whole", 3.0},
                  {"oxg.flow.sampled", true}};
  s.events = {{"retry", kBase + 200000, {{"oxg.attempt", int64_t{2}}}}};
  SpanData root = Span("plugin.supervisor.task", 0, 5000000, 77, 1);
  const std::vector<SpanData> batch = {s, root};
  EXPECT_EQ(exporter->Export(batch), ExportResult::kSuccess);

  const std::vector<std::string> lines = Lines(ReadAll(path_));
  ASSERT_EQ(lines.size(), 5u);
  EXPECT_EQ(lines[0], "[");
  EXPECT_EQ(lines[1],
            R"({"name":"process_name","ph":"M","pid":4242,"tid":0,"args":{"name":"0xgend"}},)");
  EXPECT_EQ(
      lines[2],
      R"({"name":"thread_name","ph":"M","pid":4242,"tid":1,"args":{"name":"thread 77 #1"}},)");
  EXPECT_EQ(
      lines[3],
      R"({"name":"proxy.capture_flow","cat":"proxy","ph":"X","ts":1700000000000123,)"
      R"("dur":250,"pid":4242,"tid":1,"args":{"trace_id":"ab00000000000000000000000000000)"
      R"(1","span_id":"1000000000000002","parent_span_id":"1000000000000001","kind":"server",)"
      R"("status":"error","status_message":"upstream \"timeout\"","attributes":{)"
      R"("http.request.method":"GET","http.response.status_code":504,"oxg.ratio":0.5,)"
      R"("oxg.whole":3.0,"oxg.flow.sampled":true},"events":[{"name":"retry",)"
      R"("ts":1700000000000200,"attributes":{"oxg.attempt":2}}]}},)");
  EXPECT_EQ(lines[4],
            R"({"name":"plugin.supervisor.task","cat":"plugin","ph":"X","ts":1700000000000000,)"
            R"("dur":5000,"pid":4242,"tid":1,"args":{"trace_id":"ab00000000000000000000000000000)"
            R"(1","span_id":"1000000000000001","parent_span_id":"","kind":"internal",)"
            R"("status":"unset","attributes":{}}},)");
}

TEST_F(ChromeTraceTest, ValidClosedAndWhileOpen) {
  auto exporter = Open();
  ASSERT_NE(exporter, nullptr);
  // Empty archive: just the header, already a valid (empty) trace.
  EXPECT_EQ(ReadAll(path_).substr(0, 2), "[\n");
  EXPECT_EQ(ParseClosed(ReadAll(path_)).size(), 1u);  // the process name

  for (int b = 0; b < 5; ++b) {
    std::vector<SpanData> batch;
    for (int i = 0; i < 20; ++i) {
      SpanData s = Span("netgate.http_request", (b * 20 + i) * 10000, (b * 20 + i) * 10000 + 5000,
                        static_cast<uint32_t>(100 + i % 3), static_cast<uint32_t>(b * 20 + i + 1));
      s.attributes = {{"url.full", std::string("http://x/\u00e9\n\"q\"")}};
      batch.push_back(s);
    }
    EXPECT_EQ(exporter->Export(batch), ExportResult::kSuccess);
    // After every batch the file is a viewer-valid trace as it stands.
    const std::string text = ReadAll(path_);
    EXPECT_EQ(text.substr(text.size() - 2), ",\n");
    const Json closed = ParseClosed(text);
    ASSERT_TRUE(closed.is_array());
    const std::vector<Json> tolerant = ParseTolerant(text);
    EXPECT_EQ(tolerant.size(), closed.size());
    size_t spans = 0;
    for (const Json& e : tolerant) spans += e.at("ph") == "X";
    EXPECT_EQ(spans, static_cast<size_t>((b + 1) * 20));
  }
  // Every line after the first is exactly one complete event followed by a comma.
  const std::vector<std::string> lines = Lines(ReadAll(path_));
  for (size_t i = 1; i < lines.size(); ++i) {
    ASSERT_EQ(lines[i].back(), ',') << i;
    const Json e = Json::parse(lines[i].substr(0, lines[i].size() - 1));
    EXPECT_TRUE(e.is_object());
  }
}

TEST_F(ChromeTraceTest, MicrosecondTimestampsAndDurations) {
  auto exporter = Open();
  ASSERT_NE(exporter, nullptr);
  const std::vector<SpanData> batch = {
      Span("a.whole", 5000, 8000),               // 5 µs .. 8 µs
      Span("a.sub", 5999, 6001, 100, 2),         // floor both ends: 5 .. 6
      Span("a.zero", 7400, 7900, 100, 3),        // within one microsecond: dur 0
      Span("a.backwards", 9000, 8000, 100, 4)};  // end before start: dur 0
  ASSERT_EQ(exporter->Export(batch), ExportResult::kSuccess);
  std::map<std::string, std::pair<int64_t, int64_t>> got;
  for (const Json& e : ParseTolerant(ReadAll(path_))) {
    if (e.at("ph") != "X") continue;
    ASSERT_TRUE(e.at("ts").is_number_integer());
    ASSERT_TRUE(e.at("dur").is_number_integer());
    got[e.at("name")] = {e.at("ts").get<int64_t>() - kBase / 1000, e.at("dur").get<int64_t>()};
  }
  EXPECT_EQ(got["a.whole"], std::make_pair(int64_t{5}, int64_t{3}));
  EXPECT_EQ(got["a.sub"], std::make_pair(int64_t{5}, int64_t{1}));
  EXPECT_EQ(got["a.zero"], std::make_pair(int64_t{7}, int64_t{0}));
  EXPECT_EQ(got["a.backwards"], std::make_pair(int64_t{9}, int64_t{0}));
}

TEST_F(ChromeTraceTest, OverlappingSpansGoToSeparateTracksOfTheirThread) {
  auto exporter = Open();
  ASSERT_NE(exporter, nullptr);
  // In end order, as a batch processor delivers them. Two children nest in their parent on
  // one track; a span overlapping the parent partially needs a second track of the same
  // thread; another thread gets its own track.
  const std::vector<SpanData> batch = {Span("proxy.publish_flow_event", 10000, 20000, 100, 2, 1),
                                       Span("proxy.publish_flow_event", 30000, 40000, 100, 3, 1),
                                       Span("proxy.capture_flow", 0, 50000, 100, 1),
                                       Span("proxy.capture_flow", 45000, 90000, 100, 4),
                                       Span("netgate.http_request", 45000, 90000, 200, 5)};
  ASSERT_EQ(exporter->Export(batch), ExportResult::kSuccess);
  const std::vector<Json> events = ParseTolerant(ReadAll(path_));
  EXPECT_THAT(NestingViolations(events), ::testing::IsEmpty());
  std::map<std::string, int64_t> tid_of;  // span id → tid
  std::map<int64_t, std::string> names;   // tid → track name
  for (const Json& e : events) {
    if (e.at("ph") == "X") tid_of[e.at("args").at("span_id")] = e.at("tid");
    if (e.at("name") == "thread_name") names[e.at("tid")] = e.at("args").at("name");
  }
  EXPECT_EQ(tid_of[SpanOf(1).ToHex()], tid_of[SpanOf(2).ToHex()]);
  EXPECT_EQ(tid_of[SpanOf(1).ToHex()], tid_of[SpanOf(3).ToHex()]);
  EXPECT_NE(tid_of[SpanOf(4).ToHex()], tid_of[SpanOf(1).ToHex()]);
  EXPECT_NE(tid_of[SpanOf(5).ToHex()], tid_of[SpanOf(1).ToHex()]);
  EXPECT_NE(tid_of[SpanOf(5).ToHex()], tid_of[SpanOf(4).ToHex()]);
  EXPECT_EQ(names[tid_of[SpanOf(1).ToHex()]], "thread 100 #1");
  EXPECT_EQ(names[tid_of[SpanOf(4).ToHex()]], "thread 100 #2");
  EXPECT_EQ(names[tid_of[SpanOf(5).ToHex()]], "thread 200 #1");
  // Every track used is named, and no tid is 0 (viewers read tid 0 as "the pid").
  for (const auto& [span, tid] : tid_of) {
    EXPECT_NE(tid, 0);
    EXPECT_TRUE(names.count(tid)) << tid;
  }
}

// Random spans with random overlaps, in end order and also shuffled, across batches: whatever
// arrives, no track ever holds a partial overlap, and tracks stay few when spans nest.
TEST_F(ChromeTraceTest, RandomSpansAlwaysNestPerTrack) {
  for (const bool shuffled : {false, true}) {
    for (size_t max_top : {size_t{4}, size_t{256}}) {
      std::filesystem::remove(path_);
      ChromeTraceOptions o;
      o.path = path_;
      o.pid = 1;
      o.max_top_level_per_track = max_top;
      auto exporter = ChromeTraceFileExporter::Open(o);
      ASSERT_TRUE(exporter.ok());
      std::mt19937_64 rng(shuffled * 7 + max_top);
      std::vector<SpanData> spans;
      for (uint32_t i = 0; i < 3000; ++i) {
        const int64_t start = static_cast<int64_t>(rng() % 2000000);
        const int64_t len = (rng() % 4 == 0) ? static_cast<int64_t>(rng() % 400000)
                                             : static_cast<int64_t>(rng() % 5000);
        spans.push_back(Span("x.y", start, start + len, static_cast<uint32_t>(rng() % 3), i + 1));
      }
      if (shuffled) {
        std::shuffle(spans.begin(), spans.end(), rng);
      } else {
        std::sort(spans.begin(), spans.end(), [](const SpanData& a, const SpanData& b) {
          return a.end_unix_nano < b.end_unix_nano;
        });
      }
      for (size_t i = 0; i < spans.size(); i += 250) {
        const size_t n = std::min<size_t>(250, spans.size() - i);
        ASSERT_EQ((*exporter)->Export(std::span<const SpanData>(spans.data() + i, n)),
                  ExportResult::kSuccess);
      }
      const std::vector<Json> events = ParseTolerant(ReadAll(path_));
      const auto violations = NestingViolations(events);
      EXPECT_THAT(violations, ::testing::IsEmpty())
          << "shuffled=" << shuffled << " max_top=" << max_top << ": " << violations.size();
      size_t x = 0;
      for (const Json& e : events) x += e.at("ph") == "X";
      EXPECT_EQ(x, spans.size());
    }
  }
}

TEST(TrackAssignerTest, NestedSpansShareATrackInEndOrder) {
  TrackAssigner tracks;
  // A parent with children and grandchildren arriving children first.
  EXPECT_EQ(tracks.Assign(9, 2, 3), 0u);
  EXPECT_EQ(tracks.Assign(9, 4, 5), 0u);
  EXPECT_EQ(tracks.Assign(9, 1, 6), 0u);
  EXPECT_EQ(tracks.Assign(9, 7, 8), 0u);
  EXPECT_EQ(tracks.Assign(9, 0, 10), 0u);
  // Same start as its parent, and a zero-length one at the parent's end.
  EXPECT_EQ(tracks.Assign(9, 10, 12), 0u);
  EXPECT_EQ(tracks.Assign(9, 10, 15), 0u);
  EXPECT_EQ(tracks.Assign(9, 15, 15), 0u);
  // Crossing the end of [10,15): another track.
  EXPECT_EQ(tracks.Assign(9, 14, 20), 1u);
  EXPECT_EQ(tracks.track(1).name, "thread 9 #2");
  EXPECT_EQ(tracks.track(1).tid, 2u);
  // A late child inside a childless span is fine; a second one inside that span is not known
  // to be safe any more and moves on.
  EXPECT_EQ(tracks.Assign(9, 14, 16), 1u);
  EXPECT_EQ(tracks.Assign(9, 14, 17), 2u);
  // After everything: back to the first track.
  EXPECT_EQ(tracks.Assign(9, 21, 22), 0u);
  EXPECT_EQ(tracks.Assign(0, 0, 1), 3u);
  EXPECT_EQ(tracks.track(3).name, "unknown thread #1");
}

TEST(TrackAssignerTest, ForgottenIntervalsAreNeverOverlapped) {
  TrackAssigner tracks(2);
  EXPECT_EQ(tracks.Assign(1, 0, 10), 0u);
  EXPECT_EQ(tracks.Assign(1, 20, 30), 0u);
  EXPECT_EQ(tracks.Assign(1, 40, 50), 0u);  // forgets [0,10)
  // [5, 60) would partially overlap the forgotten [0,10): not on track 0.
  EXPECT_EQ(tracks.Assign(1, 5, 60), 1u);
  // Starting after what was forgotten is fine again.
  EXPECT_EQ(tracks.Assign(1, 15, 60), 0u);
}

TEST_F(ChromeTraceTest, RotationKeepsNamingAndEveryFileIsATrace) {
  auto exporter = Open(/*max_bytes=*/4096, /*keep=*/3);
  ASSERT_NE(exporter, nullptr);
  uint32_t id = 1;
  for (int b = 0; b < 40; ++b) {
    std::vector<SpanData> batch;
    for (int i = 0; i < 5; ++i, ++id) {
      batch.push_back(Span("plugin_bus.dispatch_event", id * 1000, id * 1000 + 500, 100, id));
    }
    ASSERT_EQ(exporter->Export(batch), ExportResult::kSuccess);
  }
  EXPECT_GT(exporter->rotations(), 3u);
  EXPECT_TRUE(std::filesystem::exists(path_));
  EXPECT_TRUE(std::filesystem::exists(path_ + ".1"));
  EXPECT_TRUE(std::filesystem::exists(path_ + ".2"));
  EXPECT_TRUE(std::filesystem::exists(path_ + ".3"));
  EXPECT_FALSE(std::filesystem::exists(path_ + ".4"));

  std::vector<uint64_t> first_ids;
  for (const std::string& file : {path_ + ".3", path_ + ".2", path_ + ".1", path_}) {
    const std::string text = ReadAll(file);
    EXPECT_LE(text.size(), 4096u) << file;
    const std::vector<std::string> lines = Lines(text);
    ASSERT_GE(lines.size(), 4u) << file;
    EXPECT_EQ(lines[0], "[") << file;
    EXPECT_THAT(lines[1], StartsWith(R"({"name":"process_name","ph":"M","pid":4242,)")) << file;
    EXPECT_THAT(lines[2], StartsWith(R"({"name":"thread_name","ph":"M","pid":4242,"tid":1,)"))
        << file;
    const std::vector<Json> events = ParseTolerant(text);
    EXPECT_EQ(ParseClosed(text).size(), events.size()) << file;
    EXPECT_THAT(NestingViolations(events), ::testing::IsEmpty());
    for (const Json& e : events) {
      if (e.at("ph") == "X") {
        first_ids.push_back(
            std::stoull(e.at("args").at("span_id").get<std::string>(), nullptr, 16));
        break;
      }
    }
  }
  // Oldest file first: .3, .2, .1, then the current one.
  EXPECT_TRUE(std::is_sorted(first_ids.begin(), first_ids.end()));
  // The newest span is in the current file.
  EXPECT_THAT(ReadAll(path_), HasSubstr(SpanOf(id - 1).ToHex()));
}

TEST_F(ChromeTraceTest, LargeEventGetsAFileOfItsOwn) {
  auto exporter = Open(/*max_bytes=*/512, /*keep=*/2);
  ASSERT_NE(exporter, nullptr);
  SpanData big = Span("export.write", 0, 1000);
  big.attributes = {{"blob", std::string(2000, 'x')}};
  ASSERT_EQ(exporter->Export(std::vector<SpanData>{big}), ExportResult::kSuccess);
  ASSERT_EQ(exporter->Export(std::vector<SpanData>{Span("export.write", 2000, 3000, 100, 2)}),
            ExportResult::kSuccess);
  EXPECT_EQ(ParseTolerant(ReadAll(path_ + ".1")).size(), 3u);  // process, thread, big
  EXPECT_EQ(ParseTolerant(ReadAll(path_)).size(), 3u);
}

TEST_F(ChromeTraceTest, ContinuesACleanFileAndRotatesAwayABrokenOne) {
  {
    auto exporter = Open();
    ASSERT_NE(exporter, nullptr);
    ASSERT_EQ(exporter->Export(std::vector<SpanData>{Span("a.b", 0, 10)}), ExportResult::kSuccess);
    exporter->Shutdown();
    EXPECT_EQ(exporter->Export(std::vector<SpanData>{Span("a.b", 0, 10)}), ExportResult::kFailure);
  }
  {
    auto exporter = Open();  // a second run appends, naming its process again
    ASSERT_NE(exporter, nullptr);
    ASSERT_EQ(exporter->Export(std::vector<SpanData>{Span("a.c", 20, 30)}), ExportResult::kSuccess);
  }
  EXPECT_FALSE(std::filesystem::exists(path_ + ".1"));
  std::vector<Json> events = ParseTolerant(ReadAll(path_));
  EXPECT_EQ(events.size(), 6u);  // 2 × (process, thread, span)

  // A crash in the middle of a line (not something we write, but a full disk on another
  // writer or a truncated copy) leaves a file no viewer reads: it is rotated away.
  {
    std::ofstream out(path_, std::ios::app);
    out << R"({"name":"half)";
  }
  auto exporter = Open();
  ASSERT_NE(exporter, nullptr);
  EXPECT_THAT(ReadAll(path_ + ".1"), HasSubstr(R"({"name":"half)"));
  ASSERT_EQ(exporter->Export(std::vector<SpanData>{Span("a.d", 40, 50)}), ExportResult::kSuccess);
  EXPECT_EQ(ParseTolerant(ReadAll(path_)).size(), 3u);
}

TEST_F(ChromeTraceTest, UnopenablePathIsAnErrorNamingIt) {
  ChromeTraceOptions o;
  o.path = dir_ + "/no/such/dir/spans.json";
  auto missing = ChromeTraceFileExporter::Open(o);
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr(o.path));

  o.path = dir_;  // a directory
  auto directory = ChromeTraceFileExporter::Open(o);
  ASSERT_FALSE(directory.ok());
  EXPECT_THAT(std::string(directory.status().message()), HasSubstr(dir_));

  o.path = "";
  EXPECT_FALSE(ChromeTraceFileExporter::Open(o).ok());
}

TEST_F(ChromeTraceTest, FullDiskFailsTheBatchReportsRateLimitedAndNeverCrashes) {
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  log::SetFdForTesting(fds[1]);
  ChromeTraceOptions o;
  o.path = "/dev/full";
  o.clock = &clock_;
  auto exporter = ChromeTraceFileExporter::Open(o);
  ASSERT_TRUE(exporter.ok()) << exporter.status();  // opening works; writing does not
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ((*exporter)->Export(std::vector<SpanData>{Span("a.b", 0, 10)}),
              ExportResult::kFailure);
  }
  EXPECT_GE((*exporter)->write_errors(), 5u);
  clock_.Advance(std::chrono::seconds(11));
  EXPECT_EQ((*exporter)->Export(std::vector<SpanData>{Span("a.b", 0, 10)}), ExportResult::kFailure);
  (*exporter)->Shutdown();
  log::SetFdForTesting(-1);
  ::close(fds[1]);
  std::string logged;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fds[0], buf, sizeof(buf))) > 0) logged.append(buf, static_cast<size_t>(n));
  ::close(fds[0]);
  const std::vector<std::string> lines = Lines(logged);
  // One report at the first failure, one after the 10 s interval (counting the others).
  ASSERT_EQ(lines.size(), 2u) << logged;
  EXPECT_THAT(lines[0], HasSubstr("cannot write /dev/full: No space left on device"));
  EXPECT_THAT(lines[1], HasSubstr("more trace file failures since the last report"));
}

TEST_F(ChromeTraceTest, FileRemovedUnderneathIsRecreatedByTheNextRotation) {
  auto exporter = Open(/*max_bytes=*/2048, /*keep=*/1);
  ASSERT_NE(exporter, nullptr);
  uint32_t id = 1;
  for (int b = 0; b < 10; ++b, ++id) {
    ASSERT_EQ(exporter->Export(std::vector<SpanData>{Span("a.b", id * 100, id * 100 + 50, 1, id)}),
              ExportResult::kSuccess);
  }
  std::filesystem::remove(path_ + ".1");
  for (int b = 0; b < 30; ++b, ++id) {
    ASSERT_EQ(exporter->Export(std::vector<SpanData>{Span("a.b", id * 100, id * 100 + 50, 1, id)}),
              ExportResult::kSuccess);
  }
  EXPECT_TRUE(std::filesystem::exists(path_ + ".1"));
  EXPECT_FALSE(std::filesystem::exists(path_ + ".2"));
  EXPECT_THAT(ReadAll(path_), StartsWith("[\n"));
}

#ifdef OXG_TRACE_VIEWER_DIR
// The archive loaded by a real viewer's parser: the trace engine of the Chrome DevTools
// performance panel (npm @paulirish/trace_engine), fed the file the way the viewers load an
// unterminated array. Every complete event must land in its thread's slice tree (the engine
// leaves out events that do not nest), under the right thread and process names.
TEST(ViewerTest, DevToolsTraceEngineAcceptsEverySlice) {
  char tmpl[] = "/tmp/oxg_trace_viewer_XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  ChromeTraceOptions o;
  o.path = dir + "/spans.json";
  o.pid = 777;
  o.max_file_bytes = 64 * 1024;
  auto exporter = ChromeTraceFileExporter::Open(o);
  ASSERT_TRUE(exporter.ok());
  std::mt19937_64 rng(42);
  std::vector<SpanData> spans;
  for (uint32_t i = 0; i < 400; ++i) {
    const int64_t start = static_cast<int64_t>(rng() % 200000000);
    const int64_t len = static_cast<int64_t>(rng() % (i % 5 == 0 ? 50000000 : 2000000));
    spans.push_back(Span("proxy.capture_flow", start, start + len, 10 + i % 2, i + 1));
  }
  std::sort(spans.begin(), spans.end(),
            [](const SpanData& a, const SpanData& b) { return a.end_unix_nano < b.end_unix_nano; });
  for (size_t i = 0; i < spans.size(); i += 50) {
    ASSERT_EQ((*exporter)->Export(std::span<const SpanData>(spans.data() + i, 50)),
              ExportResult::kSuccess);
  }
  (*exporter)->Shutdown();
  ASSERT_TRUE(std::filesystem::exists(o.path + ".1"));  // rotated at least once

  const std::string script = dir + "/check.mjs";
  std::ofstream(script) << R"JS(
import fs from 'node:fs';
import {createRequire} from 'node:module';
const require = createRequire(process.env.VIEWER_DIR + '/');
const Trace = await import(require.resolve('@paulirish/trace_engine'));
globalThis.DOMRect ??= class { constructor(x, y, w, h) { Object.assign(this, {x, y, width: w, height: h}); } };
for (const file of process.argv.slice(2)) {
  // What the viewers do with an unterminated JSON array: drop a trailing comma, close it.
  let text = fs.readFileSync(file, 'utf8').trimEnd();
  if (text.endsWith(',')) text = text.slice(0, -1);
  if (!text.endsWith(']')) text += ']';
  const events = JSON.parse(text);
  const model = Trace.TraceModel.Model.createWithAllHandlers();
  await model.parse(events);
  const renderer = model.parsedTrace().data.Renderer;
  const proc = renderer.processes.get(777);
  if (!proc) throw new Error(file + ': process 777 missing');
  if (proc.name !== undefined && proc.name !== '0xgend') throw new Error('process name ' + proc.name);
  const want = new Map();
  for (const e of events) if (e.ph === 'X') want.set(e.tid, (want.get(e.tid) ?? 0) + 1);
  for (const [tid, count] of want) {
    const thread = proc.threads.get(tid);
    if (!thread) throw new Error(file + ': thread ' + tid + ' missing');
    if (!/^thread 1[01] #\d+$/.test(thread.name)) throw new Error('thread name ' + thread.name);
    let inTree = 0;
    const walk = (n) => { inTree++; for (const c of n.children) walk(c); };
    for (const r of thread.tree.roots) walk(r);
    if (inTree !== count) throw new Error(`${file}: tid ${tid}: ${count} slices, ${inTree} in the tree`);
  }
  console.log(file + ': ' + events.length + ' events ok');
}
)JS";
  const std::string command = std::string("VIEWER_DIR='") + OXG_TRACE_VIEWER_DIR + "' '" +
                              OXG_NODE + "' '" + script + "' '" + o.path + ".1' '" + o.path +
                              "' 2>&1";
  FILE* p = ::popen(command.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string output;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) output.append(buf, n);
  const int status = ::pclose(p);
  EXPECT_EQ(status, 0) << output;
  EXPECT_THAT(output, HasSubstr("events ok")) << output;
  std::filesystem::remove_all(dir);
}
#endif

}  // namespace
}  // namespace oxg::tracing
