// Costs of the tracing API. Targets (issue 3): unsampled span start+end <= 50 ns; sampled span
// with four attributes <= 500 ns; enqueue into the batch processor under contention.

#include <benchmark/benchmark.h>

#include "telemetry/tracing/batch_processor.h"
#include "telemetry/tracing/tracer.h"

namespace oxg::tracing {
namespace {

// Takes spans and throws them away: measures the span itself, not a queue.
class DiscardProcessor final : public SpanProcessor {
 public:
  void OnEnd(SpanData&& span) override { benchmark::DoNotOptimize(span.name.data()); }
  void Shutdown(std::chrono::milliseconds) override {}
};

class DiscardExporter final : public SpanExporter {
 public:
  ExportResult Export(std::span<const SpanData> batch) override {
    benchmark::DoNotOptimize(batch.data());
    return ExportResult::kSuccess;
  }
};

void BM_SpanTracingOff(benchmark::State& state) {
  Tracer& tracer = Tracer::Noop();
  for (auto _ : state) {
    Span s = tracer.StartSpan("proxy.capture_flow", SpanKind::kServer);
    s.SetAttribute("http.request.method", "GET");
    benchmark::DoNotOptimize(s.context());
  }
}
BENCHMARK(BM_SpanTracingOff);

void BM_SpanChildOfUnsampledParent(benchmark::State& state) {
  Tracer tracer(TracerOptions{1.0});
  tracer.AddProcessor(std::make_unique<DiscardProcessor>());
  SpanContext parent;
  ParseTraceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00", &parent);
  for (auto _ : state) {
    Span s = tracer.StartSpan("proxy.capture_flow", SpanKind::kServer, parent);
    s.SetAttribute("http.request.method", "GET");
    benchmark::DoNotOptimize(s.context());
  }
}
BENCHMARK(BM_SpanChildOfUnsampledParent);

// A new root that the ratio does not pick: it still needs ids so the decision propagates.
void BM_SpanUnsampledRoot(benchmark::State& state) {
  Tracer tracer(TracerOptions{1e-12});
  tracer.AddProcessor(std::make_unique<DiscardProcessor>());
  for (auto _ : state) {
    Span s = tracer.StartSpan("proxy.capture_flow", SpanKind::kServer);
    benchmark::DoNotOptimize(s.context());
  }
}
BENCHMARK(BM_SpanUnsampledRoot);

void BM_SpanSampledFourAttributes(benchmark::State& state) {
  Tracer tracer(TracerOptions{1.0});
  tracer.AddProcessor(std::make_unique<DiscardProcessor>());
  for (auto _ : state) {
    Span s = tracer.StartSpan("proxy.capture_flow", SpanKind::kServer);
    s.SetAttribute("http.request.method", "GET")
        .SetAttribute("url.full", "http://example.com/index.html")
        .SetAttribute("http.response.status_code", 200)
        .SetAttribute("oxg.flow.sampled", true);
  }
}
BENCHMARK(BM_SpanSampledFourAttributes);

// Sampled spans into a real batch processor whose worker exports (and discards) batches;
// threads contend on the queue. Drops, when the worker falls behind, are part of the cost.
void BM_SpanSampledIntoBatchProcessor(benchmark::State& state) {
  static Tracer* tracer = nullptr;
  if (state.thread_index() == 0) {
    tracer = new Tracer(TracerOptions{1.0});
    tracer->AddProcessor(std::make_unique<BatchSpanProcessor>(std::make_unique<DiscardExporter>(),
                                                              BatchOptions{}, nullptr));
  }
  for (auto _ : state) {
    Span s = tracer->StartSpan("plugin_bus.dispatch_event", SpanKind::kProducer);
    s.SetAttribute("oxg.plugin.id", "passive-headers").SetAttribute("oxg.event.type", "flow");
  }
  if (state.thread_index() == 0) {
    tracer->Shutdown(std::chrono::milliseconds(1000));
    delete tracer;
  }
}
BENCHMARK(BM_SpanSampledIntoBatchProcessor)->Threads(1)->Threads(2);

}  // namespace
}  // namespace oxg::tracing

BENCHMARK_MAIN();
