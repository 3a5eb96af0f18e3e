#pragma once

// Batches finished spans for one exporter (contract §6.3): a bounded queue (2048 spans) that
// drops, counted, when full and never makes the caller wait for space; batches of up to 512
// exported when full or every 5 s; exports never concurrent; a bounded flush on shutdown.
//
// Time comes from the injected Clock. With `start_thread = false` no thread runs and a test
// drives the processor with Tick() on simulated time.

#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>

#include "common/clock.h"
#include "telemetry/tracing/span_data.h"
#include "telemetry/tracing/stats.h"
#include "telemetry/tracing/tracer.h"

namespace oxg::tracing {

struct BatchOptions {
  size_t max_queue = 2048;
  size_t max_batch = 512;
  std::chrono::milliseconds schedule_delay{5000};
};

class BatchSpanProcessor final : public SpanProcessor {
 public:
  // `stats` may be null (no metrics).
  BatchSpanProcessor(std::unique_ptr<SpanExporter> exporter, BatchOptions options,
                     TracingStats* stats, const Clock& clock = Clock::Real(),
                     bool start_thread = true);
  ~BatchSpanProcessor() override;

  void OnEnd(SpanData&& span) override;
  void Shutdown(std::chrono::milliseconds timeout) override;

  // Exports one batch when one is due (the queue holds a full batch, or the schedule delay
  // has passed since the last export and the queue is not empty). Returns whether it exported.
  // The worker thread calls this; tests call it directly when no thread runs.
  bool Tick();

  size_t queued() const;

 private:
  void Run();
  bool Due(Clock::MonoTime now) const;  // requires mu_
  void ExportBatch(std::unique_lock<std::mutex>& lock);
  // Exports what is queued until the shutdown deadline, then drops (and counts) the rest.
  void Drain(std::unique_lock<std::mutex>& lock);

  std::unique_ptr<SpanExporter> exporter_;
  const BatchOptions options_;
  TracingStats* stats_;
  const Clock& clock_;

  mutable std::mutex mu_;
  std::condition_variable wake_;
  std::deque<SpanData> queue_;
  Clock::MonoTime last_export_;
  bool stopping_ = false;
  bool shut_down_ = false;
  Clock::MonoTime deadline_;  // of the shutdown flush
  std::mutex shutdown_mu_;
  std::mutex export_mu_;  // held for the whole of an export: exports never overlap
  std::thread thread_;
};

}  // namespace oxg::tracing
