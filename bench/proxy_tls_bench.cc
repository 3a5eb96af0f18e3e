// Leaf minting (cache miss, unique hosts) and cache hits. Targets (issue 4): minting at most
// 2 ms, cache hit at most 10 µs.

#include <benchmark/benchmark.h>

#include <cstdlib>
#include <string>

#include "common/clock.h"
#include "common/strings.h"
#include "proxy/tls/ca.h"
#include "proxy/tls/leaf_cache.h"

namespace {

using oxg::proxy::tls::CertificateAuthority;
using oxg::proxy::tls::LeafCertificateMinter;

const CertificateAuthority& Ca() {
  static const CertificateAuthority* ca = [] {
    auto r = oxg::proxy::tls::GenerateCa(oxg::Clock::Real());
    if (!r.ok()) std::abort();
    return new CertificateAuthority(std::move(*r));
  }();
  return *ca;
}

void BM_MintLeaf(benchmark::State& state) {
  LeafCertificateMinter minter(Ca(), oxg::Clock::Real(), {.capacity = 64});
  uint64_t i = 0;
  for (auto _ : state) {
    auto leaf = minter.Get(oxg::Cat("host", i++, ".example.com"));
    if (!leaf.ok()) state.SkipWithError("mint failed");
    benchmark::DoNotOptimize(leaf);
  }
}
BENCHMARK(BM_MintLeaf)->Unit(benchmark::kMicrosecond);

void BM_MintLeafIp(benchmark::State& state) {
  LeafCertificateMinter minter(Ca(), oxg::Clock::Real(), {.capacity = 64});
  uint64_t i = 0;
  for (auto _ : state) {
    ++i;
    auto leaf = minter.Get(oxg::Cat("10.", (i >> 16) & 255, ".", (i >> 8) & 255, ".", i & 255));
    if (!leaf.ok()) state.SkipWithError("mint failed");
    benchmark::DoNotOptimize(leaf);
  }
}
BENCHMARK(BM_MintLeafIp)->Unit(benchmark::kMicrosecond);

void BM_CacheHit(benchmark::State& state) {
  LeafCertificateMinter minter(Ca(), oxg::Clock::Real());
  for (int i = 0; i < 1000; ++i) (void)minter.Get(oxg::Cat("host", i, ".example.com"));
  const std::string host = "host500.example.com";
  for (auto _ : state) {
    auto leaf = minter.Get(host);
    benchmark::DoNotOptimize(leaf);
  }
}
BENCHMARK(BM_CacheHit);

void BM_CacheHitContended(benchmark::State& state) {
  static LeafCertificateMinter* minter = new LeafCertificateMinter(Ca(), oxg::Clock::Real());
  const std::string host = oxg::Cat("host", state.thread_index() % 4, ".example.com");
  for (auto _ : state) {
    auto leaf = minter->Get(host);
    benchmark::DoNotOptimize(leaf);
  }
}
BENCHMARK(BM_CacheHitContended)->Threads(2);

}  // namespace

BENCHMARK_MAIN();
