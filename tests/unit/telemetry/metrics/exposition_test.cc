#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <string>

#include "common/clock.h"
#include "common/ids.h"
#include "telemetry/metrics/internal/render.h"
#include "telemetry/metrics/metrics.h"

namespace oxg::metrics {
namespace {

using std::chrono::milliseconds;

SpanContextRef g_span;
bool g_span_active = false;

bool FakeProvider(SpanContextRef* out) {
  if (!g_span_active) return false;
  *out = g_span;
  return true;
}

class ExpositionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    HexDecode("0af7651916cd43dd8448eb211c80319c", g_span.trace_id.bytes);
    HexDecode("b7ad6b7169203331", g_span.span_id.bytes);
    g_span_active = false;
    SetActiveSpanProvider(&FakeProvider);
  }
  void TearDown() override { SetActiveSpanProvider(nullptr); }

  std::string Text() { return reg_.Scrape({Format::kText004, false}); }
  std::string Om() { return reg_.Scrape({Format::kOpenMetrics100, false}); }

  SimulatedClock clock_;
  Registry reg_{clock_};
};

TEST_F(ExpositionTest, CounterNamingInBothFormats) {
  reg_.AddCounter("oxg_rpc_requests_total", "RPC calls handled.", {"method"})
      .WithLabels({"Fetch"})
      .Inc(3);
  EXPECT_EQ(Text(),
            "# HELP oxg_rpc_requests_total RPC calls handled.\n"
            "# TYPE oxg_rpc_requests_total counter\n"
            "oxg_rpc_requests_total{method=\"Fetch\"} 3\n");
  EXPECT_EQ(Om(),
            "# TYPE oxg_rpc_requests counter\n"
            "# HELP oxg_rpc_requests RPC calls handled.\n"
            "oxg_rpc_requests_total{method=\"Fetch\"} 3\n"
            "# EOF\n");
}

TEST_F(ExpositionTest, EmptyFamilyStillListed) {
  reg_.AddGauge("oxg_plugin_queue_length", "Depth.", {"plugin"});
  reg_.AddGauge("oxg_active_plugins", "Connected plugins.");
  EXPECT_EQ(Text(),
            "# HELP oxg_plugin_queue_length Depth.\n"
            "# TYPE oxg_plugin_queue_length gauge\n"
            "# HELP oxg_active_plugins Connected plugins.\n"
            "# TYPE oxg_active_plugins gauge\n"
            "oxg_active_plugins 0\n");
  EXPECT_TRUE(Om().ends_with("oxg_active_plugins 0\n# EOF\n"));
}

TEST_F(ExpositionTest, LabelValueEscaping) {
  auto& fam = reg_.AddGauge("t_escape", "Help with \\ and\nnewline and \"quotes\".", {"v"});
  fam.WithLabels({"a,b"}).Set(1);
  fam.WithLabels({"say \"hi\""}).Set(2);
  fam.WithLabels({"back\\slash"}).Set(3);
  fam.WithLabels({"two\nlines"}).Set(4);
  fam.WithLabels({"ünïcødé ✓ 日本"}).Set(5);
  fam.WithLabels({"bad\xFFutf8"}).Set(6);
  const std::string text = Text();
  EXPECT_NE(text.find("# HELP t_escape Help with \\\\ and\\nnewline and \"quotes\".\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("t_escape{v=\"a,b\"} 1\n"), std::string::npos);
  EXPECT_NE(text.find("t_escape{v=\"say \\\"hi\\\"\"} 2\n"), std::string::npos);
  EXPECT_NE(text.find("t_escape{v=\"back\\\\slash\"} 3\n"), std::string::npos);
  EXPECT_NE(text.find("t_escape{v=\"two\\nlines\"} 4\n"), std::string::npos);
  EXPECT_NE(text.find("t_escape{v=\"ünïcødé ✓ 日本\"} 5\n"), std::string::npos);
  EXPECT_NE(text.find("t_escape{v=\"bad\xEF\xBF\xBDutf8\"} 6\n"), std::string::npos);
  // OpenMetrics escapes double quotes in HELP too.
  EXPECT_NE(Om().find("# HELP t_escape Help with \\\\ and\\nnewline and \\\"quotes\\\".\n"),
            std::string::npos);
}

TEST_F(ExpositionTest, HistogramBucketsUnitAndExemplarInHoldingBucket) {
  Histogram& h = reg_.AddHistogram("oxg_rpc_duration_seconds", "Latency.", {"method"},
                                   {0.001, 0.01, 0.1}, true)
                     .WithLabels({"Fetch"});
  h.Observe(0.0005);  // no span active: no exemplar
  clock_.Advance(milliseconds(1500));
  g_span_active = true;
  h.Observe(0.05);  // bucket le=0.1
  g_span_active = false;
  h.Observe(3);
  EXPECT_EQ(Text(),
            "# HELP oxg_rpc_duration_seconds Latency.\n"
            "# TYPE oxg_rpc_duration_seconds histogram\n"
            "oxg_rpc_duration_seconds_bucket{method=\"Fetch\",le=\"0.001\"} 1\n"
            "oxg_rpc_duration_seconds_bucket{method=\"Fetch\",le=\"0.01\"} 1\n"
            "oxg_rpc_duration_seconds_bucket{method=\"Fetch\",le=\"0.1\"} 2\n"
            "oxg_rpc_duration_seconds_bucket{method=\"Fetch\",le=\"+Inf\"} 3\n"
            "oxg_rpc_duration_seconds_count{method=\"Fetch\"} 3\n"
            "oxg_rpc_duration_seconds_sum{method=\"Fetch\"} 3.0505\n");
  EXPECT_EQ(Om(),
            "# TYPE oxg_rpc_duration_seconds histogram\n"
            "# UNIT oxg_rpc_duration_seconds seconds\n"
            "# HELP oxg_rpc_duration_seconds Latency.\n"
            "oxg_rpc_duration_seconds_bucket{method=\"Fetch\",le=\"0.001\"} 1\n"
            "oxg_rpc_duration_seconds_bucket{method=\"Fetch\",le=\"0.01\"} 1\n"
            "oxg_rpc_duration_seconds_bucket{method=\"Fetch\",le=\"0.1\"} 2 # "
            "{trace_id=\"0af7651916cd43dd8448eb211c80319c\",span_id=\"b7ad6b7169203331\"} 0.05 "
            "1700000001.5\n"
            "oxg_rpc_duration_seconds_bucket{method=\"Fetch\",le=\"+Inf\"} 3\n"
            "oxg_rpc_duration_seconds_count{method=\"Fetch\"} 3\n"
            "oxg_rpc_duration_seconds_sum{method=\"Fetch\"} 3.0505\n"
            "# EOF\n");
}

TEST_F(ExpositionTest, LatestExemplarWinsPerBucket) {
  Histogram& h =
      reg_.AddHistogram("t_h_seconds", "x", {}, {1}, true).WithLabels({});
  g_span_active = true;
  h.Observe(0.2);
  HexDecode("00000000000000000000000000000042", g_span.trace_id.bytes);
  h.Observe(0.3);
  const std::string om = Om();
  EXPECT_NE(om.find("trace_id=\"00000000000000000000000000000042\""), std::string::npos);
  EXPECT_EQ(om.find("0af7651916cd43dd8448eb211c80319c"), std::string::npos);
  EXPECT_NE(om.find("} 0.3 1700000000\n"), std::string::npos) << om;
}

TEST_F(ExpositionTest, CounterExemplarOnlyInOpenMetrics) {
  Counter& c =
      reg_.AddCounter("oxg_proxy_requests_total", "Exchanges.", {"code"}, true).WithLabels({"200"});
  g_span_active = true;
  c.Inc();
  EXPECT_EQ(Text().find('#', Text().find("oxg_proxy_requests_total{")), std::string::npos);
  EXPECT_NE(Om().find("oxg_proxy_requests_total{code=\"200\"} 1 # {trace_id=\"0af7651916cd43dd"
                      "8448eb211c80319c\",span_id=\"b7ad6b7169203331\"} 1 1700000000\n"),
            std::string::npos)
      << Om();
}

TEST_F(ExpositionTest, ExplicitExemplarLabelsEscaped) {
  Counter& c = reg_.AddCounter("t_c_total", "x", {}, true).WithLabels({});
  ExemplarLabel labels[] = {{"note", "a\"b\\c"}, {"id", "7"}};
  ASSERT_TRUE(c.IncWithExemplar(2, labels));
  EXPECT_NE(Om().find("t_c_total 2 # {note=\"a\\\"b\\\\c\",id=\"7\"} 2 1700000000\n"),
            std::string::npos)
      << Om();
}

TEST_F(ExpositionTest, LegacyAliases) {
  reg_.AddCounter("oxg_http_throttle_total", "Delayed requests.", {"scope"})
      .WithLabels({"host"})
      .Inc();
  reg_.AddGauge("process_open_fds", "fds.");
  const std::string text = reg_.Scrape({Format::kText004, true});
  EXPECT_NE(text.find("# HELP glyph_http_throttle_total (DEPRECATED: use "
                      "oxg_http_throttle_total) Delayed requests.\n"
                      "# TYPE glyph_http_throttle_total counter\n"
                      "glyph_http_throttle_total{scope=\"host\"} 1\n"),
            std::string::npos)
      << text;
  EXPECT_EQ(text.find("glyph_process"), std::string::npos);
  const std::string om = reg_.Scrape({Format::kOpenMetrics100, true});
  EXPECT_NE(om.find("# TYPE glyph_http_throttle counter\n"), std::string::npos);
  EXPECT_NE(om.find("glyph_http_throttle_total{scope=\"host\"} 1\n"), std::string::npos);
  EXPECT_TRUE(om.ends_with("# EOF\n"));
  EXPECT_EQ(om.find("# EOF"), om.size() - 6);  // exactly once, at the end
}

TEST_F(ExpositionTest, CallbackFamiliesAndUnits) {
  reg_.AddCallback("process_cpu_seconds_total", "CPU.", MetricType::kCounter, [] { return 1.25; });
  reg_.AddCallback("process_resident_memory_bytes", "RSS.", MetricType::kGauge,
                   [] { return 4096.0; });
  const std::string om = Om();
  EXPECT_NE(om.find("# TYPE process_cpu_seconds counter\n# UNIT process_cpu_seconds seconds\n"),
            std::string::npos)
      << om;
  EXPECT_NE(om.find("process_cpu_seconds_total 1.25\n"), std::string::npos);
  EXPECT_NE(om.find("# UNIT process_resident_memory_bytes bytes\n"), std::string::npos);
  EXPECT_NE(Text().find("process_resident_memory_bytes 4096\n"), std::string::npos);
}

TEST_F(ExpositionTest, SpecialGaugeValues) {
  auto& fam = reg_.AddGauge("t_special", "x", {"k"});
  fam.WithLabels({"inf"}).Set(INFINITY);
  fam.WithLabels({"ninf"}).Set(-INFINITY);
  fam.WithLabels({"nan"}).Set(NAN);
  fam.WithLabels({"neg"}).Set(-2.5);
  const std::string text = Text();
  EXPECT_NE(text.find("t_special{k=\"inf\"} +Inf\n"), std::string::npos);
  EXPECT_NE(text.find("t_special{k=\"ninf\"} -Inf\n"), std::string::npos);
  EXPECT_NE(text.find("t_special{k=\"nan\"} NaN\n"), std::string::npos);
  EXPECT_NE(text.find("t_special{k=\"neg\"} -2.5\n"), std::string::npos);
}

TEST(NumberFormat, GoStyleShortestAndCanonical) {
  const struct {
    double v;
    const char* plain;
    const char* canonical;
  } cases[] = {
      {0.0005, "0.0005", "0.0005"},
      {0.00001, "1e-05", "1e-05"},
      {1, "1", "1.0"},
      {10, "10", "10.0"},
      {2.5, "2.5", "2.5"},
      {0.1, "0.1", "0.1"},
      {-3.25, "-3.25", "-3.25"},
      {123456, "123456", "123456.0"},
      {1234.5678, "1234.5678", "1234.5678"},
      {1e20, "100000000000000000000", "100000000000000000000.0"},
      {1e21, "1e+21", "1e+21"},
      {1.5e-300, "1.5e-300", "1.5e-300"},
      {0, "0", "0.0"},
      {INFINITY, "+Inf", "+Inf"},
  };
  for (const auto& c : cases) {
    std::string plain, canonical;
    internal::AppendDouble(plain, c.v);
    internal::AppendCanonicalDouble(canonical, c.v);
    EXPECT_EQ(plain, c.plain) << c.v;
    EXPECT_EQ(canonical, c.canonical) << c.v;
  }
}

TEST_F(ExpositionTest, DefaultBucketsUseCanonicalLe) {
  reg_.AddHistogram("t_default_seconds", "x", {}).WithLabels({}).Observe(0.3);
  const std::string om = Om();
  for (const char* le : {"0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1",
                         "0.25", "0.5", "1.0", "2.5", "5.0", "10.0", "+Inf"}) {
    EXPECT_NE(om.find(std::string("le=\"") + le + "\"}"), std::string::npos) << le;
  }
  EXPECT_EQ(om.find("e-04"), std::string::npos);
}

TEST(ProcessMetrics, ReadFromProc) {
  Registry reg;
  RegisterProcessMetrics(reg);
  RegisterBuildInfo(reg);
  const std::string text = reg.Scrape({});
  for (const char* name : {"process_cpu_seconds_total ", "process_resident_memory_bytes ",
                           "process_open_fds ", "process_max_fds ", "process_start_time_seconds ",
                           "oxg_build_info{version=\""}) {
    EXPECT_NE(text.find(std::string("\n") + name), std::string::npos) << name;
  }
  // Resident memory of a running test is at least a megabyte; start time is after 2020.
  const size_t rss = text.find("\nprocess_resident_memory_bytes ");
  EXPECT_GT(std::stod(text.substr(rss + 31)), 1e6);
  const size_t start = text.find("\nprocess_start_time_seconds ");
  EXPECT_GT(std::stod(text.substr(start + 28)), 1.5e9);
}

}  // namespace
}  // namespace oxg::metrics
