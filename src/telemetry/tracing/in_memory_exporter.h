#pragma once

// A SpanExporter that keeps every exported span in memory, for tests of any subsystem that
// asserts on its spans. It can be told to fail or to block, to exercise processors.

#include <condition_variable>
#include <mutex>
#include <vector>

#include "telemetry/tracing/span_data.h"

namespace oxg::tracing {

class InMemoryExporter final : public SpanExporter {
 public:
  // Shared state, so a test keeps access after handing the exporter to a processor.
  struct State {
    std::mutex mu;
    std::condition_variable cv;
    std::vector<SpanData> spans;
    std::vector<size_t> batch_sizes;
    int active_exports = 0;
    int max_concurrent_exports = 0;
    bool fail = false;
    bool block = false;  // Export waits until unblocked or Shutdown
    bool shut_down = false;
  };

  explicit InMemoryExporter(std::shared_ptr<State> state) : state_(std::move(state)) {}

  ExportResult Export(std::span<const SpanData> batch) override {
    std::unique_lock lock(state_->mu);
    if (state_->shut_down) return ExportResult::kFailure;
    ++state_->active_exports;
    state_->max_concurrent_exports =
        std::max(state_->max_concurrent_exports, state_->active_exports);
    state_->cv.notify_all();
    state_->cv.wait(lock, [this] { return !state_->block || state_->shut_down; });
    --state_->active_exports;
    if (state_->fail || state_->shut_down) return ExportResult::kFailure;
    state_->batch_sizes.push_back(batch.size());
    state_->spans.insert(state_->spans.end(), batch.begin(), batch.end());
    return ExportResult::kSuccess;
  }

  void Shutdown() override {
    std::lock_guard lock(state_->mu);
    state_->shut_down = true;
    state_->cv.notify_all();
  }

 private:
  std::shared_ptr<State> state_;
};

}  // namespace oxg::tracing
