// Costs of the capture pipeline (proxy/flow/flow_pipeline.h) for a realistic exchange: a
// ~500-byte request head (browser headers, a cookie and a bearer token), a ~300-byte response
// head and a 1 KiB JSON body, written to real files in a temp dir.
// - BM_PipelineThread*: the pipeline thread's work per exchange (parse both heads, history line
//   with sanitized headers, payloads, flow log lines, the writes, the sink). Measured as the
//   wall time to submit and drain a batch of 256 prepared exchanges; Submit is a small part.
// - BM_Submit*: what a proxy thread pays to hand one exchange over.

#include <benchmark/benchmark.h>
#include <stdlib.h>
#include <time.h>

#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "proxy/flow/flow_pipeline.h"

namespace oxg::proxy {
namespace {

std::string RequestHead() {
  std::string h =
      "GET https://shop.example.com/api/v2/catalog/items?page=3&sort=price&lang=en HTTP/1.1\r\n"
      "Host: shop.example.com\r\n"
      "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n"
      "Accept: application/json, text/plain, */*\r\n"
      "Accept-Language: en-US,en;q=0.5\r\n"
      "Accept-Encoding: gzip, deflate, br\r\n"
      "Referer: https://shop.example.com/catalog?page=2\r\n"
      "Authorization: Bearer 4f9c2a7e1b8d4c6fa0e3b5d7c9f1a2e4\r\n"
      "Cookie: sid=8c1f0e2d9b7a4c3e; theme=dark; consent=1\r\n"
      "Sec-Fetch-Dest: empty\r\n"
      "Sec-Fetch-Mode: cors\r\n"
      "Connection: keep-alive\r\n"
      "\r\n";
  return h;
}

std::string ResponseHead() {
  return "HTTP/1.1 200 OK\r\n"
         "Date: Fri, 21 Nov 2026 05:07:16 GMT\r\n"
         "Content-Type: application/json; charset=utf-8\r\n"
         "Content-Length: 1024\r\n"
         "Cache-Control: private, max-age=0\r\n"
         "Set-Cookie: sid=8c1f0e2d9b7a4c3e; Path=/; Secure; HttpOnly; SameSite=Lax\r\n"
         "Vary: Accept-Encoding\r\n"
         "X-Request-Id: 6e0b1c4a-5f3d-4a2b-9c8e-7d6f5a4b3c2d\r\n"
         "\r\n";
}

std::string JsonBody() {
  std::string body = R"({"items":[)";
  for (int i = 0; body.size() < 1000; ++i) {
    if (i > 0) body += ',';
    body += R"({"id":)" + std::to_string(1000 + i) + R"(,"name":"item )" + std::to_string(i) +
            R"(","price":19.99})";
  }
  body += "]}";
  body.resize(1023, ' ');
  body += '}';
  return body;
}

CapturedExchange Prototype(bool sampled) {
  CapturedExchange e;
  e.flow_id = "01JD0000000000000000000000";
  e.client_address = "127.0.0.1:51000";
  e.scheme = "https";
  e.url = "https://shop.example.com/api/v2/catalog/items?page=3&sort=price&lang=en";
  e.method = "GET";
  e.sampled = sampled;
  e.request.head = RequestHead();
  e.request.wire_bytes = e.request.head.size();
  e.request.time_unix_nano = 1790000000000000000;
  CapturedMessage r;
  r.head = ResponseHead();
  r.body = JsonBody();
  r.body_length = r.body.size();
  r.wire_bytes = r.head.size() + r.body.size();
  r.time_unix_nano = 1790000000002000000;
  e.response = std::move(r);
  e.status = 200;
  e.duration_ms = 2.0;
  return e;
}

class CountingSink final : public FlowSink {
 public:
  void Publish(const FlowEvent& event) override {
    benchmark::DoNotOptimize(event.sanitized.data());
    ++events;
  }
  uint64_t events = 0;
};

// Holds the pipeline thread in Publish so Submit can be measured without a consumer.
class GateSink final : public FlowSink {
 public:
  void Publish(const FlowEvent&) override {
    std::unique_lock lock(mu_);
    entered_ = true;
    cv_.notify_all();
    cv_.wait(lock, [this] { return open_; });
  }
  void WaitEntered() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [this] { return entered_; });
  }
  void Close() {
    std::lock_guard lock(mu_);
    open_ = false;
    entered_ = false;
  }
  void Open() {
    std::lock_guard lock(mu_);
    open_ = true;
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool entered_ = false;
  bool open_ = true;
};

int64_t CpuNanos(clockid_t clock) {
  timespec ts;
  clock_gettime(clock, &ts);
  return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

struct TempDir {
  TempDir() {
    char tmpl[] = "/tmp/oxg_pipeline_bench_XXXXXX";
    path = ::mkdtemp(tmpl);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  std::string path;
};

void RunPipelineThread(benchmark::State& state, bool sampled, bool raw) {
  TempDir dir;
  metrics::Registry registry;
  CountingSink sink;
  FlowPipelineOptions o;
  o.history_path = dir.path + "/proxy_history.jsonl";
  o.flow_log_path = dir.path + "/proxy_flows.jsonl";
  o.flow_log_raw = raw;
  o.sink = &sink;
  auto pipeline = FlowPipeline::Start(o, registry, tracing::Tracer::Noop(), Clock::Real());
  if (!pipeline.ok()) {
    state.SkipWithError(std::string(pipeline.status().message()).c_str());
    return;
  }
  constexpr int kBatch = 256;
  const CapturedExchange proto = Prototype(sampled);
  std::vector<CapturedExchange> batch;
  // The pipeline thread's CPU time: the process's minus this thread's (the only other one).
  const int64_t process_start = CpuNanos(CLOCK_PROCESS_CPUTIME_ID);
  const int64_t self_start = CpuNanos(CLOCK_THREAD_CPUTIME_ID);
  for (auto _ : state) {
    state.PauseTiming();
    batch.assign(kBatch, proto);
    state.ResumeTiming();
    for (CapturedExchange& e : batch) (*pipeline)->Submit(std::move(e));
    (*pipeline)->Drain();
  }
  const int64_t pipeline_cpu = (CpuNanos(CLOCK_PROCESS_CPUTIME_ID) - process_start) -
                               (CpuNanos(CLOCK_THREAD_CPUTIME_ID) - self_start);
  state.SetItemsProcessed(state.iterations() * kBatch);
  state.counters["pipeline_cpu_ns_per_exchange"] =
      static_cast<double>(pipeline_cpu) / static_cast<double>(state.iterations() * kBatch);
  (*pipeline)->Stop();
  const FlowPipeline::Counts c = (*pipeline)->counts();
  state.counters["dropped"] = static_cast<double>(c.dropped);
  state.counters["write_errors"] = static_cast<double>(c.write_errors);
}

void BM_PipelineThreadSampled(benchmark::State& state) { RunPipelineThread(state, true, false); }
BENCHMARK(BM_PipelineThreadSampled)->UseRealTime();

void BM_PipelineThreadSampledRaw(benchmark::State& state) { RunPipelineThread(state, true, true); }
BENCHMARK(BM_PipelineThreadSampledRaw)->UseRealTime();

void BM_PipelineThreadHistoryOnly(benchmark::State& state) {
  RunPipelineThread(state, false, false);
}
BENCHMARK(BM_PipelineThreadHistoryOnly)->UseRealTime();

// Submit with the pipeline thread parked in the sink, so the timed loop is the proxy thread's
// cost alone (move, lock, push) with no consumer competing for the lock; with 2 threads, two
// proxy threads contend. Exchanges are prepared before the loop; the queue holds them all.
constexpr int kSubmitsPerThread = 10000;

void BM_Submit(benchmark::State& state) {
  static TempDir* dir;
  static metrics::Registry* registry;
  static GateSink* gate;
  static std::unique_ptr<FlowPipeline> pipeline;
  if (state.thread_index() == 0) {
    dir = new TempDir;
    registry = new metrics::Registry;
    gate = new GateSink;
    FlowPipelineOptions o;
    o.history_path = dir->path + "/proxy_history.jsonl";
    o.sink = gate;
    o.queue_capacity = static_cast<size_t>(kSubmitsPerThread) * state.threads() + 1;
    o.queue_max_bytes = size_t{1} << 30;
    pipeline =
        std::move(*FlowPipeline::Start(o, *registry, tracing::Tracer::Noop(), Clock::Real()));
    gate->Close();
    pipeline->Submit(Prototype(true));  // parks the thread in Publish
    gate->WaitEntered();
  }
  std::vector<CapturedExchange> prepared(kSubmitsPerThread, Prototype(true));
  size_t next = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(pipeline->Submit(std::move(prepared[next++])));
  }
  state.SetItemsProcessed(state.iterations());
  if (state.thread_index() == 0) {
    gate->Open();
    pipeline->Drain();
    state.counters["dropped"] = static_cast<double>(pipeline->counts().dropped);
    pipeline.reset();
    delete gate;
    delete registry;
    delete dir;
  }
}
BENCHMARK(BM_Submit)->Iterations(kSubmitsPerThread)->Threads(1)->Threads(2)->UseRealTime();

}  // namespace
}  // namespace oxg::proxy

BENCHMARK_MAIN();
