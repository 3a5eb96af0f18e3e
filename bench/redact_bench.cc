// Cost of the secret redactor on the texts the capture pipeline hands it: a browser's header
// block, a JSON body without secrets, and the same body with one.
#include <benchmark/benchmark.h>

#include <string>

#include "common/redact.h"

namespace {

const std::string kHeaders =
    "Host: shop.example.com\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) "
    "Gecko/20100101 Firefox/128.0\r\nAccept: text/html,application/xhtml+xml,application/"
    "xml;q=0.9,*/*;q=0.8\r\nAccept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, "
    "deflate, br\r\nReferer: https://shop.example.com/cart?step=2\r\nConnection: keep-alive\r\n"
    "Upgrade-Insecure-Requests: 1\r\nSec-Fetch-Dest: document\r\nSec-Fetch-Mode: navigate\r\n"
    "Sec-Fetch-Site: same-origin\r\nPriority: u=0, i\r\n";

std::string JsonBody(bool with_secret) {
  std::string body = "{\"items\":[";
  for (int i = 0; i < 12; ++i) {
    body += "{\"sku\":\"A-" + std::to_string(1000 + i) +
            "\",\"name\":\"Widget number " + std::to_string(i) + "\",\"qty\":2,\"price\":19.99},";
  }
  body += with_secret ? "{\"password\":\"hunter2-very-secret\"}]}" : "{\"note\":\"none\"}]}";
  return body;
}

void BM_RedactHeaders(benchmark::State& state) {
  const oxg::Redactor& r = oxg::Redactor::Default();
  for (auto _ : state) benchmark::DoNotOptimize(r.Redact(kHeaders));
  state.SetBytesProcessed(state.iterations() * kHeaders.size());
}
BENCHMARK(BM_RedactHeaders);

void BM_RedactJsonClean(benchmark::State& state) {
  const oxg::Redactor& r = oxg::Redactor::Default();
  const std::string body = JsonBody(false);
  for (auto _ : state) benchmark::DoNotOptimize(r.Redact(body));
  state.SetBytesProcessed(state.iterations() * body.size());
}
BENCHMARK(BM_RedactJsonClean);

void BM_RedactJsonSecret(benchmark::State& state) {
  const oxg::Redactor& r = oxg::Redactor::Default();
  const std::string body = JsonBody(true);
  for (auto _ : state) benchmark::DoNotOptimize(r.Redact(body));
  state.SetBytesProcessed(state.iterations() * body.size());
}
BENCHMARK(BM_RedactJsonSecret);

void BM_IsSecretKey(benchmark::State& state) {
  static const char* kNames[] = {"Host", "User-Agent", "Accept", "Accept-Language",
                                 "Content-Type", "X-Api-Key", "Cookie", "Sec-Fetch-Mode"};
  for (auto _ : state) {
    for (const char* n : kNames) benchmark::DoNotOptimize(oxg::Redactor::IsSecretKey(n));
  }
  state.SetItemsProcessed(state.iterations() * 8);
}
BENCHMARK(BM_IsSecretKey);

}  // namespace
BENCHMARK_MAIN();
