// Hot-path and scrape costs of the metrics core. Targets (issue 2): observe <= 25 ns
// single-threaded, <= 100 ns with an exemplar; a scrape of 10 000 series under 20 ms.

#include <benchmark/benchmark.h>

#include <string>

#include "common/ids.h"
#include "telemetry/metrics/metrics.h"

namespace oxg::metrics {
namespace {

SpanContextRef g_span;

bool ActiveSpan(SpanContextRef* out) {
  *out = g_span;
  return true;
}

Registry& SharedRegistry() {
  static Registry* reg = new Registry();
  return *reg;
}

void BM_CounterInc(benchmark::State& state) {
  static Counter& c = SharedRegistry().AddCounter("b_counter_total", "x").WithLabels({});
  for (auto _ : state) c.Inc();
}
BENCHMARK(BM_CounterInc)->Threads(1)->Threads(2);

void BM_HistogramObserve(benchmark::State& state) {
  static Histogram& h =
      SharedRegistry().AddHistogram("b_plain_seconds", "x", {"m"}).WithLabels({"GET"});
  double v = 0.0001;
  for (auto _ : state) {
    h.Observe(v);
    v = v > 8 ? 0.0001 : v * 1.7;  // walk across the buckets
  }
}
BENCHMARK(BM_HistogramObserve)->Threads(1)->Threads(2);

// An exemplar family with no active span: what most observations cost when tracing is off or
// the trace was not sampled.
void BM_HistogramObserveExemplarFamilyNoSpan(benchmark::State& state) {
  static Histogram& h =
      SharedRegistry()
          .AddHistogram("b_nospan_seconds", "x", {"m"}, DefaultLatencyBuckets(), true)
          .WithLabels({"GET"});
  SetActiveSpanProvider(nullptr);
  for (auto _ : state) h.Observe(0.003);
}
BENCHMARK(BM_HistogramObserveExemplarFamilyNoSpan);

void BM_HistogramObserveWithExemplar(benchmark::State& state) {
  static Histogram& h = SharedRegistry()
                            .AddHistogram("b_ex_seconds", "x", {"m"}, DefaultLatencyBuckets(), true)
                            .WithLabels({"GET"});
  if (state.thread_index() == 0) {
    g_span = {TraceId::Random(), SpanId::Random()};
    SetActiveSpanProvider(&ActiveSpan);
  }
  for (auto _ : state) h.Observe(0.003);
  if (state.thread_index() == 0) SetActiveSpanProvider(nullptr);
}
BENCHMARK(BM_HistogramObserveWithExemplar)->Threads(1)->Threads(2);

// Arg 0: text 0.0.4; 1: OpenMetrics; 2: OpenMetrics with an exemplar on every series.
void BM_Scrape10kSeries(benchmark::State& state) {
  const bool om = state.range(0) >= 1;
  if (state.range(0) == 2) {
    g_span = {TraceId::Random(), SpanId::Random()};
    SetActiveSpanProvider(&ActiveSpan);
  }
  Registry reg;
  RegisterProcessMetrics(reg);
  auto& counters = reg.AddCounter("oxg_plugin_queue_dropped_total", "x", {"plugin", "event"}, true);
  for (int i = 0; i < 10000; ++i) {
    counters.WithLabels({"plugin-" + std::to_string(i / 10), "event-" + std::to_string(i % 10)})
        .Inc(static_cast<uint64_t>(i));
  }
  SetActiveSpanProvider(nullptr);
  std::string out;
  for (auto _ : state) {
    out.clear();
    reg.Write({om ? Format::kOpenMetrics100 : Format::kText004, false}, out);
    benchmark::DoNotOptimize(out.data());
  }
  state.counters["bytes"] = static_cast<double>(out.size());
}
BENCHMARK(BM_Scrape10kSeries)->Arg(0)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond);

// 10 000 series as 625 histograms of 16 samples each, with aliases as the daemon serves them.
void BM_Scrape10kHistogramSamples(benchmark::State& state) {
  Registry reg;
  auto& fam =
      reg.AddHistogram("oxg_rpc_duration_seconds", "x", {"method"}, DefaultLatencyBuckets(), true);
  for (int i = 0; i < 625; ++i) fam.WithLabels({"m" + std::to_string(i)}).Observe(0.01 * i);
  std::string out;
  for (auto _ : state) {
    out.clear();
    reg.Write({Format::kOpenMetrics100, true}, out);
    benchmark::DoNotOptimize(out.data());
  }
  state.counters["bytes"] = static_cast<double>(out.size());
}
BENCHMARK(BM_Scrape10kHistogramSamples)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace oxg::metrics

BENCHMARK_MAIN();
