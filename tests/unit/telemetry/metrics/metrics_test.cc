#include "telemetry/metrics/metrics.h"

#include <gtest/gtest.h>

#include <cmath>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace oxg::metrics {
namespace {

TEST(Counter, SumsIncrementsAcrossThreads) {
  Registry reg;
  Counter& c = reg.AddCounter("t_events_total", "events").WithLabels({});
  constexpr int kThreads = 4, kPerThread = 100000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kPerThread; ++i) c.Inc();
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(c.Value(), uint64_t{kThreads} * kPerThread);
  c.Inc(5);
  EXPECT_EQ(c.Value(), uint64_t{kThreads} * kPerThread + 5);
}

TEST(Family, SameLabelsGiveSameSeries) {
  Registry reg;
  auto& fam = reg.AddCounter("t_req_total", "requests", {"method", "code"});
  Counter& a = fam.WithLabels({"GET", "200"});
  Counter& b = fam.WithLabels({"GET", "200"});
  Counter& c = fam.WithLabels({"GET", "404"});
  EXPECT_EQ(&a, &b);
  EXPECT_NE(&a, &c);
}

TEST(Family, ValueSeparatorsCannotCollide) {
  Registry reg;
  auto& fam = reg.AddCounter("t_pairs_total", "pairs", {"a", "b"});
  Counter& x = fam.WithLabels({"1:2", "3"});
  Counter& y = fam.WithLabels({"1", "2:3"});
  EXPECT_NE(&x, &y);
}

TEST(Family, WrongArityThrows) {
  Registry reg;
  auto& fam = reg.AddCounter("t_arity_total", "x", {"a", "b"});
  EXPECT_THROW(fam.WithLabels({"only-one"}), std::invalid_argument);
}

TEST(Family, RemoveDropsSeriesFromExposition) {
  Registry reg;
  auto& fam = reg.AddGauge("t_queue_length", "queue", {"plugin"});
  fam.WithLabels({"p1"}).Set(3);
  fam.WithLabels({"p2"}).Set(4);
  EXPECT_TRUE(fam.Remove({"p1"}));
  EXPECT_FALSE(fam.Remove({"p1"}));
  const std::string out = reg.Scrape({});
  EXPECT_EQ(out.find("plugin=\"p1\""), std::string::npos);
  EXPECT_NE(out.find("t_queue_length{plugin=\"p2\"} 4\n"), std::string::npos);
}

TEST(Registry, RejectsBadDeclarations) {
  Registry reg;
  EXPECT_THROW(reg.AddCounter("t_no_suffix", "x"), std::invalid_argument);
  EXPECT_THROW(reg.AddGauge("1bad", "x"), std::invalid_argument);
  EXPECT_THROW(reg.AddGauge("t_ok", "x", {"bad-label"}), std::invalid_argument);
  EXPECT_THROW(reg.AddGauge("t_ok2", "x", {"__reserved"}), std::invalid_argument);
  EXPECT_THROW(reg.AddGauge("t_ok3", "x", {"a", "a"}), std::invalid_argument);
  EXPECT_THROW(reg.AddHistogram("t_h", "x", {"le"}), std::invalid_argument);
  EXPECT_THROW(reg.AddHistogram("t_h2", "x", {}, {1, 1}), std::invalid_argument);
  EXPECT_THROW(reg.AddHistogram("t_h3", "x", {}, {}), std::invalid_argument);
  EXPECT_THROW(reg.AddHistogram("t_h4", "x", {}, {1, INFINITY}), std::invalid_argument);
  reg.AddGauge("t_twice", "x");
  EXPECT_THROW(reg.AddGauge("t_twice", "x"), std::invalid_argument);
}

TEST(Histogram, BucketsAreCumulativeAndUpperInclusive) {
  Registry reg;
  Histogram& h = reg.AddHistogram("t_latency_seconds", "x", {}, {0.1, 1, 10}).WithLabels({});
  h.Observe(0.05);  // le 0.1
  h.Observe(0.1);   // exactly on a bound: still le 0.1
  h.Observe(0.5);   // le 1
  h.Observe(20);    // +Inf only
  h.Observe(NAN);   // ignored
  const Histogram::Snapshot s = h.Collect();
  EXPECT_EQ(s.cumulative, (std::vector<uint64_t>{2, 3, 3, 4}));
  EXPECT_EQ(s.count, 4u);
  EXPECT_DOUBLE_EQ(s.sum, 20.65);
}

TEST(Histogram, ConcurrentObservationsAllCounted) {
  Registry reg;
  Histogram& h = reg.AddHistogram("t_conc_seconds", "x", {}).WithLabels({});
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 50000; ++i) h.Observe(0.002);
    });
  }
  for (auto& t : threads) t.join();
  const Histogram::Snapshot s = h.Collect();
  EXPECT_EQ(s.count, 200000u);
  EXPECT_NEAR(s.sum, 400.0, 1e-6);
}

TEST(ExemplarLabels, CodePointLimit) {
  // 128 code points in names and values together is the most OpenMetrics allows.
  const std::string v120(120, 'a');
  ExemplarLabel ok[] = {{"trace_id", v120}};  // 8 + 120 = 128
  EXPECT_TRUE(ValidExemplarLabels(ok));
  const std::string v121(121, 'a');
  ExemplarLabel too_long[] = {{"trace_id", v121}};
  EXPECT_FALSE(ValidExemplarLabels(too_long));
  // Code points, not bytes: 120 two-byte characters still fit.
  std::string wide;
  for (int i = 0; i < 120; ++i) wide += "\xC3\xA9";
  ExemplarLabel multibyte[] = {{"trace_id", wide}};
  EXPECT_TRUE(ValidExemplarLabels(multibyte));
  ExemplarLabel bad_name[] = {{"trace-id", "x"}};
  EXPECT_FALSE(ValidExemplarLabels(bad_name));
  ExemplarLabel bad_utf8[] = {{"a", "\xFF"}};
  EXPECT_FALSE(ValidExemplarLabels(bad_utf8));
  ExemplarLabel dup[] = {{"a", "1"}, {"a", "2"}};
  EXPECT_FALSE(ValidExemplarLabels(dup));
}

TEST(Histogram, OversizedExemplarRefusedButValueCounted) {
  Registry reg;
  Histogram& h = reg.AddHistogram("t_ex_seconds", "x", {}, {1}, true).WithLabels({});
  const std::string huge(200, 'x');
  ExemplarLabel labels[] = {{"trace_id", huge}};
  EXPECT_FALSE(h.ObserveWithExemplar(0.5, labels));
  EXPECT_EQ(h.Collect().count, 1u);
  const std::string om = reg.Scrape({Format::kOpenMetrics100});
  EXPECT_EQ(om.find(" # {"), std::string::npos) << om;
}

TEST(Counter, ExemplarOnlyWhenFamilyHasThem) {
  Registry reg;
  Counter& plain = reg.AddCounter("t_plain_total", "x").WithLabels({});
  ExemplarLabel labels[] = {{"trace_id", "abc"}};
  EXPECT_FALSE(plain.IncWithExemplar(1, labels));
  EXPECT_EQ(plain.Value(), 1u);
  Counter& ex = reg.AddCounter("t_ex_total", "x", {}, true).WithLabels({});
  EXPECT_TRUE(ex.IncWithExemplar(2, labels));
  EXPECT_EQ(ex.Value(), 2u);
}

}  // namespace
}  // namespace oxg::metrics

namespace oxg::metrics {
namespace {

TEST(Histogram, NegativeValuesCountAsZeroSoSumStaysValid) {
  Registry reg;
  Histogram& h = reg.AddHistogram("t_neg_seconds", "x", {}, {0.1, 1}).WithLabels({});
  h.Observe(-5);
  h.Observe(-INFINITY);
  h.Observe(0.5);
  const Histogram::Snapshot s = h.Collect();
  EXPECT_EQ(s.cumulative, (std::vector<uint64_t>{2, 3, 3}));
  EXPECT_DOUBLE_EQ(s.sum, 0.5);
  h.Observe(INFINITY);  // a real (if odd) observation: +Inf bucket, sum +Inf, never NaN
  EXPECT_TRUE(std::isinf(h.Collect().sum));
  h.Observe(-INFINITY);
  EXPECT_FALSE(std::isnan(h.Collect().sum));
}

TEST(Family, InvalidUtf8ValuesThatRenderAlikeAreOneSeries) {
  Registry reg;
  auto& fam = reg.AddCounter("t_plugin_errors_total", "x", {"plugin"});
  Counter& a = fam.WithLabels({"p\xFF"});
  Counter& b = fam.WithLabels({"p\xFE"});
  EXPECT_EQ(&a, &b);
  a.Inc();
  b.Inc();
  const std::string text = reg.Scrape({});
  EXPECT_NE(text.find("t_plugin_errors_total{plugin=\"p\xEF\xBF\xBD\"} 2\n"), std::string::npos)
      << text;
  EXPECT_TRUE(fam.Remove({"p\xFD"}));
}

TEST(Family, SharedHandleOutlivesRemove) {
  Registry reg;
  auto& fam = reg.AddGauge("t_shared_length", "x", {"plugin"});
  std::shared_ptr<Gauge> g = fam.Shared({"p1"});
  EXPECT_EQ(g.get(), &fam.WithLabels({"p1"}));
  g->Set(3);
  ASSERT_TRUE(fam.Remove({"p1"}));
  g->Set(4);  // still a live object, just no longer exported
  EXPECT_EQ(g->Value(), 4);
  EXPECT_EQ(reg.Scrape({}).find("p1"), std::string::npos);
  // A new series under the same labels starts fresh.
  EXPECT_EQ(fam.WithLabels({"p1"}).Value(), 0);
}

}  // namespace
}  // namespace oxg::metrics
