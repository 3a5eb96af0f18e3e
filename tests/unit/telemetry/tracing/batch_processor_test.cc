#include "telemetry/tracing/batch_processor.h"

#include <gtest/gtest.h>

#include <chrono>
#include <thread>
#include <vector>

#include "telemetry/tracing/in_memory_exporter.h"

namespace oxg::tracing {
namespace {

using std::chrono::milliseconds;

SpanData Named(int i) {
  SpanData d;
  d.name = "s" + std::to_string(i);
  return d;
}

class BatchTest : public ::testing::Test {
 protected:
  std::unique_ptr<BatchSpanProcessor> Make(BatchOptions opts, bool thread = false) {
    return std::make_unique<BatchSpanProcessor>(std::make_unique<InMemoryExporter>(state_), opts,
                                                &stats_, clock_, thread);
  }
  SimulatedClock clock_;
  metrics::Registry registry_{clock_};
  TracingStats stats_{registry_};
  std::shared_ptr<InMemoryExporter::State> state_ = std::make_shared<InMemoryExporter::State>();
};

TEST_F(BatchTest, SizeTrigger) {
  auto p = Make({.max_queue = 100, .max_batch = 4, .schedule_delay = milliseconds(5000)});
  for (int i = 0; i < 3; ++i) p->OnEnd(Named(i));
  EXPECT_FALSE(p->Tick());
  p->OnEnd(Named(3));
  EXPECT_TRUE(p->Tick());
  EXPECT_EQ(state_->batch_sizes, std::vector<size_t>{4});
  EXPECT_EQ(state_->spans[0].name, "s0");
  EXPECT_EQ(stats_.exported.Value(), 4u);
}

TEST_F(BatchTest, TimerTrigger) {
  auto p = Make({.max_queue = 100, .max_batch = 512, .schedule_delay = milliseconds(5000)});
  p->OnEnd(Named(0));
  EXPECT_FALSE(p->Tick());
  clock_.Advance(milliseconds(4999));
  EXPECT_FALSE(p->Tick());
  clock_.Advance(milliseconds(1));
  EXPECT_TRUE(p->Tick());
  EXPECT_EQ(state_->batch_sizes, std::vector<size_t>{1});
  // Nothing queued: the timer alone exports nothing.
  clock_.Advance(milliseconds(10000));
  EXPECT_FALSE(p->Tick());
}

TEST_F(BatchTest, BatchesAreCappedAtMaxBatch) {
  auto p = Make({.max_queue = 100, .max_batch = 4, .schedule_delay = milliseconds(5000)});
  for (int i = 0; i < 10; ++i) p->OnEnd(Named(i));
  EXPECT_TRUE(p->Tick());
  EXPECT_TRUE(p->Tick());
  EXPECT_FALSE(p->Tick());  // 2 left: not a full batch and the delay has not passed
  clock_.Advance(milliseconds(5000));
  EXPECT_TRUE(p->Tick());
  EXPECT_EQ(state_->batch_sizes, (std::vector<size_t>{4, 4, 2}));
}

TEST_F(BatchTest, FullQueueDropsAndCounts) {
  auto p = Make({.max_queue = 5, .max_batch = 512, .schedule_delay = milliseconds(5000)});
  for (int i = 0; i < 8; ++i) p->OnEnd(Named(i));
  EXPECT_EQ(p->queued(), 5u);
  EXPECT_EQ(stats_.dropped_queue_full.Value(), 3u);
  clock_.Advance(milliseconds(5000));
  EXPECT_TRUE(p->Tick());
  EXPECT_EQ(state_->spans.back().name, "s4");  // the first five were kept
}

TEST_F(BatchTest, FailedExportsCounted) {
  state_->fail = true;
  auto p = Make({.max_queue = 100, .max_batch = 2, .schedule_delay = milliseconds(5000)});
  p->OnEnd(Named(0));
  p->OnEnd(Named(1));
  EXPECT_TRUE(p->Tick());
  EXPECT_EQ(stats_.dropped_export_failed.Value(), 2u);
  EXPECT_EQ(stats_.exported.Value(), 0u);
}

TEST_F(BatchTest, FlushOnShutdown) {
  auto p = Make({.max_queue = 100, .max_batch = 4, .schedule_delay = milliseconds(5000)});
  for (int i = 0; i < 10; ++i) p->OnEnd(Named(i));
  p->Shutdown(milliseconds(5000));
  EXPECT_EQ(state_->batch_sizes, (std::vector<size_t>{4, 4, 2}));
  EXPECT_TRUE(state_->shut_down);
  p->OnEnd(Named(99));  // after shutdown: dropped, counted as never exported
  EXPECT_EQ(stats_.dropped_export_failed.Value(), 1u);
  EXPECT_EQ(stats_.dropped_queue_full.Value(), 0u);
}

TEST_F(BatchTest, ExportsNeverConcurrent) {
  // A worker thread plus two threads calling Tick, with many producers: at most one export at
  // any moment.
  auto p = Make({.max_queue = 100000, .max_batch = 8, .schedule_delay = milliseconds(1)}, true);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 2000; ++i) p->OnEnd(Named(t * 10000 + i));
    });
  }
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 2000; ++i) p->Tick();
    });
  }
  for (auto& t : threads) t.join();
  p->Shutdown(milliseconds(5000));
  EXPECT_EQ(state_->max_concurrent_exports, 1);
  EXPECT_EQ(state_->spans.size(), 8000u);
  EXPECT_EQ(stats_.exported.Value(), 8000u);
}

TEST_F(BatchTest, WorkerExportsFullBatchWithoutWaitingForTimer) {
  auto p = Make({.max_queue = 100, .max_batch = 3, .schedule_delay = milliseconds(3600000)}, true);
  for (int i = 0; i < 3; ++i) p->OnEnd(Named(i));
  std::unique_lock lock(state_->mu);
  // Bounded wait for the worker to pick the batch up; the hour-long timer never fires.
  EXPECT_TRUE(state_->cv.wait_for(lock, std::chrono::seconds(10),
                                  [&] { return state_->batch_sizes.size() == 1; }));
  lock.unlock();
  p->Shutdown(milliseconds(1000));
}

TEST_F(BatchTest, ShutdownIsBoundedWhenExporterHangs) {
  state_->block = true;
  auto p = Make({.max_queue = 100, .max_batch = 1, .schedule_delay = milliseconds(5000)}, true);
  p->OnEnd(Named(0));
  {
    std::unique_lock lock(state_->mu);
    ASSERT_TRUE(state_->cv.wait_for(lock, std::chrono::seconds(10),
                                    [&] { return state_->active_exports == 1; }));
  }
  p->OnEnd(Named(1));  // queued behind the hanging export
  const auto start = std::chrono::steady_clock::now();
  p->Shutdown(milliseconds(200));
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_LT(took, std::chrono::seconds(3));
  EXPECT_TRUE(state_->shut_down);
  // The interrupted export failed and the queued span was not exported.
  EXPECT_EQ(stats_.dropped_export_failed.Value(), 2u);
  EXPECT_TRUE(state_->spans.empty());
}

}  // namespace
}  // namespace oxg::tracing
