#include <gtest/gtest.h>

#include <cmath>

#include "telemetry/tracing/tracer.h"

namespace oxg::tracing {
namespace {

TraceId WithLowBits(uint64_t low) {
  TraceId id;
  id.bytes[0] = 0x42;  // upper half must not matter
  for (int i = 0; i < 8; ++i) id.bytes[15 - i] = static_cast<uint8_t>(low >> (8 * i));
  return id;
}

// A fixed pseudo-random sequence of trace ids (splitmix64), so the statistics are repeatable.
class IdSequence {
 public:
  TraceId Next() {
    TraceId id;
    for (int half = 0; half < 2; ++half) {
      uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
      z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
      z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
      z ^= z >> 31;
      for (int i = 0; i < 8; ++i) id.bytes[half * 8 + i] = static_cast<uint8_t>(z >> (8 * i));
    }
    return id;
  }

 private:
  uint64_t state_ = 20261121;
};

TEST(Sampler, RatioBoundaries) {
  EXPECT_EQ(SamplingThreshold(0), 0u);
  EXPECT_EQ(SamplingThreshold(-1), 0u);
  EXPECT_EQ(SamplingThreshold(NAN), 0u);
  EXPECT_EQ(SamplingThreshold(1), UINT64_MAX);
  EXPECT_EQ(SamplingThreshold(2), UINT64_MAX);
  EXPECT_EQ(SamplingThreshold(0.5), uint64_t{1} << 63);
  // Ratio 1 samples even the largest id; ratio 0 samples nothing.
  EXPECT_TRUE(ShouldSample(nullptr, WithLowBits(UINT64_MAX), SamplingThreshold(1)));
  EXPECT_FALSE(ShouldSample(nullptr, WithLowBits(0), SamplingThreshold(0)));
  // Half: the decision splits exactly at 2^63.
  EXPECT_TRUE(ShouldSample(nullptr, WithLowBits((uint64_t{1} << 63) - 1), SamplingThreshold(0.5)));
  EXPECT_FALSE(ShouldSample(nullptr, WithLowBits(uint64_t{1} << 63), SamplingThreshold(0.5)));
}

TEST(Sampler, DeterministicAndMonotonic) {
  const double ratios[] = {0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0};
  IdSequence ids;
  for (int i = 0; i < 2000; ++i) {
    const TraceId id = ids.Next();
    bool previous = false;
    for (double r : ratios) {
      const bool decision = ShouldSample(nullptr, id, SamplingThreshold(r));
      EXPECT_EQ(decision, ShouldSample(nullptr, id, SamplingThreshold(r)));  // same id, same answer
      EXPECT_TRUE(decision || !previous) << "sampled at a lower ratio but not at " << r;
      previous = decision;
    }
  }
}

TEST(Sampler, RatioIsRespectedStatistically) {
  // 20 000 well-spread ids at ratio 0.25: the sampled share is within 3 standard deviations.
  IdSequence ids;
  int sampled = 0;
  const uint64_t t = SamplingThreshold(0.25);
  for (int i = 0; i < 20000; ++i) sampled += ShouldSample(nullptr, ids.Next(), t);
  EXPECT_NEAR(sampled, 5000, 3 * 61);
}

TEST(Sampler, ParentDecides) {
  SpanContext parent;
  parent.trace_id = WithLowBits(UINT64_MAX);  // would never be sampled at ratio 0.1
  parent.span_id = SpanId::Random();
  parent.flags = 1;
  EXPECT_TRUE(ShouldSample(&parent, parent.trace_id, SamplingThreshold(0.1)));
  EXPECT_TRUE(ShouldSample(&parent, parent.trace_id, SamplingThreshold(0)));
  parent.flags = 0;
  parent.trace_id = WithLowBits(0);  // would always be sampled
  EXPECT_FALSE(ShouldSample(&parent, parent.trace_id, SamplingThreshold(1)));
  // An invalid parent is no parent: the ratio decides.
  SpanContext invalid;
  EXPECT_TRUE(ShouldSample(&invalid, WithLowBits(0), SamplingThreshold(0.1)));
}

}  // namespace
}  // namespace oxg::tracing
