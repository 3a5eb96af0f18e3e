#include "telemetry/tracing/batch_processor.h"

#include <functional>
#include <vector>

#include "common/log.h"

namespace oxg::tracing {

BatchSpanProcessor::BatchSpanProcessor(std::unique_ptr<SpanExporter> exporter, BatchOptions options,
                                       TracingStats* stats, const Clock& clock, bool start_thread)
    : exporter_(std::move(exporter)),
      options_(options),
      stats_(stats),
      clock_(clock),
      last_export_(clock.MonoNow()) {
  if (start_thread) thread_ = std::thread([this] { Run(); });
}

BatchSpanProcessor::~BatchSpanProcessor() { Shutdown(std::chrono::milliseconds(0)); }

void BatchSpanProcessor::OnEnd(SpanData&& span) {
  bool wake = false;
  {
    std::lock_guard lock(mu_);
    if (stopping_) {
      // Ended after shutdown began: never flushed, and not a sign of a queue too small.
      if (stats_) stats_->dropped_export_failed.Inc();
      return;
    }
    if (queue_.size() >= options_.max_queue) {
      if (stats_) stats_->dropped_queue_full.Inc();
      return;
    }
    queue_.push_back(std::move(span));
    wake = queue_.size() >= options_.max_batch;
  }
  if (wake) wake_.notify_one();
}

size_t BatchSpanProcessor::queued() const {
  std::lock_guard lock(mu_);
  return queue_.size();
}

bool BatchSpanProcessor::Due(Clock::MonoTime now) const {
  if (queue_.empty()) return false;
  return queue_.size() >= options_.max_batch || now - last_export_ >= options_.schedule_delay;
}

bool BatchSpanProcessor::Tick() {
  std::unique_lock lock(mu_);
  if (!Due(clock_.MonoNow())) return false;
  ExportBatch(lock);
  return true;
}

// Takes up to one batch off the queue and exports it with mu_ released, so producers keep
// enqueueing (or dropping) while a slow collector holds the export.
void BatchSpanProcessor::ExportBatch(std::unique_lock<std::mutex>& lock) {
  std::vector<SpanData> batch;
  const size_t n = std::min(queue_.size(), options_.max_batch);
  batch.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    batch.push_back(std::move(queue_.front()));
    queue_.pop_front();
  }
  last_export_ = clock_.MonoNow();
  lock.unlock();
  ExportResult result;
  {
    std::lock_guard export_lock(export_mu_);
    result = exporter_->Export(batch);
  }
  if (stats_) {
    metrics::Counter& c = result == ExportResult::kSuccess
                              ? stats_->Success(exporter_->SuccessOutcome())
                              : stats_->dropped_export_failed;
    c.Inc(batch.size());
  }
  lock.lock();
  last_export_ = clock_.MonoNow();
}

void BatchSpanProcessor::Run() {
  std::unique_lock lock(mu_);
  while (!stopping_) {
    const Clock::MonoTime now = clock_.MonoNow();
    if (Due(now)) {
      ExportBatch(lock);
      continue;
    }
    // Sleep until the schedule delay runs out, a full batch is queued, or shutdown.
    const auto wait = queue_.empty() ? options_.schedule_delay
                                     : std::chrono::duration_cast<std::chrono::milliseconds>(
                                           last_export_ + options_.schedule_delay - now);
    wake_.wait_for(lock, std::max(wait, std::chrono::milliseconds(1)),
                   [this] { return stopping_ || queue_.size() >= options_.max_batch; });
  }
  Drain(lock);
}

void BatchSpanProcessor::Drain(std::unique_lock<std::mutex>& lock) {
  while (!queue_.empty() && clock_.MonoNow() < deadline_) ExportBatch(lock);
  if (queue_.empty()) return;
  if (stats_) stats_->dropped_export_failed.Inc(queue_.size());
  log::Warn("tracing", "dropped " + std::to_string(queue_.size()) +
                           " spans that could not be flushed before the shutdown deadline");
  queue_.clear();
}

namespace {

// Runs `fire` if not cancelled within `timeout` (real time: it bounds real waits on a peer).
class Watchdog {
 public:
  Watchdog(std::chrono::milliseconds timeout, std::function<void()> fire)
      : thread_([this, timeout, fire = std::move(fire)] {
          std::unique_lock lock(mu_);
          if (!cv_.wait_for(lock, timeout, [this] { return cancelled_; })) fire();
        }) {}
  ~Watchdog() {
    {
      std::lock_guard lock(mu_);
      cancelled_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool cancelled_ = false;
  std::thread thread_;
};

}  // namespace

void BatchSpanProcessor::Shutdown(std::chrono::milliseconds timeout) {
  // Later callers (the destructor after an explicit Shutdown) wait for the first to finish.
  std::lock_guard shutdown_lock(shutdown_mu_);
  {
    std::lock_guard lock(mu_);
    if (shut_down_) return;
    shut_down_ = true;
    stopping_ = true;
    deadline_ = clock_.MonoNow() + timeout;
  }
  wake_.notify_all();
  {
    // An export in flight when the budget runs out (a hanging collector) is interrupted.
    Watchdog watchdog(timeout, [this] { exporter_->Shutdown(); });
    if (thread_.joinable()) {
      thread_.join();
    } else {
      std::unique_lock lock(mu_);
      Drain(lock);
    }
  }
  exporter_->Shutdown();
}

}  // namespace oxg::tracing
