// HTTP/1.x head parsing on the proxy's hot path: a typical ~400-byte browser request head (as a
// forward proxy sees it, absolute-form) and a ~300-byte response head, plus chunked decoding.
// The head structs are reused across iterations, as a connection does, so the numbers show the
// steady state with no allocation.

#include <benchmark/benchmark.h>

#include <cstdlib>
#include <string>

#include "proxy/http/http_head.h"

namespace {

using oxg::proxy::http::ChunkedDecoder;
using oxg::proxy::http::Limits;
using oxg::proxy::http::ParseError;
using oxg::proxy::http::ParseStatus;

const char kRequest[] =
    "GET http://www.example.com/articles/2024/http-parsing.html?ref=home&lang=en HTTP/1.1\r\n"
    "Host: www.example.com\r\n"
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n"
    "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
    "Accept-Language: en-US,en;q=0.5\r\n"
    "Accept-Encoding: gzip, deflate, br\r\n"
    "Connection: keep-alive\r\n"
    "Cookie: session=3f9a1c2e7b; theme=dark\r\n"
    "Upgrade-Insecure-Requests: 1\r\n"
    "\r\n";

const char kResponse[] =
    "HTTP/1.1 200 OK\r\n"
    "Date: Mon, 02 Sep 2024 10:00:00 GMT\r\n"
    "Server: nginx/1.22.1\r\n"
    "Content-Type: text/html; charset=utf-8\r\n"
    "Content-Length: 13872\r\n"
    "Last-Modified: Sun, 01 Sep 2024 18:30:00 GMT\r\n"
    "Connection: keep-alive\r\n"
    "ETag: \"66d4b2a8-3630\"\r\n"
    "Cache-Control: max-age=600\r\n"
    "Accept-Ranges: bytes\r\n"
    "\r\n";

void BM_ParseRequestHead(benchmark::State& state) {
  const std::string in(kRequest);
  oxg::proxy::http::RequestHead head;
  ParseError error;
  const Limits limits;
  for (auto _ : state) {
    const ParseStatus s = oxg::proxy::http::ParseRequestHead(in, limits, &head, &error);
    if (s != ParseStatus::kComplete) std::abort();
    benchmark::DoNotOptimize(head.head_size);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * in.size()));
  state.counters["head_bytes"] = static_cast<double>(in.size());
}
BENCHMARK(BM_ParseRequestHead);

void BM_ParseResponseHead(benchmark::State& state) {
  const std::string in(kResponse);
  oxg::proxy::http::ResponseHead head;
  ParseError error;
  const Limits limits;
  for (auto _ : state) {
    const ParseStatus s = oxg::proxy::http::ParseResponseHead(in, "GET", limits, &head, &error);
    if (s != ParseStatus::kComplete) std::abort();
    benchmark::DoNotOptimize(head.head_size);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * in.size()));
  state.counters["head_bytes"] = static_cast<double>(in.size());
}
BENCHMARK(BM_ParseResponseHead);

// A 64 KiB body in 8 KiB chunks, fed in one buffer.
void BM_ChunkedDecode(benchmark::State& state) {
  std::string body;
  for (int i = 0; i < 8; ++i) body += "2000\r\n" + std::string(8192, 'x') + "\r\n";
  body += "0\r\n\r\n";
  for (auto _ : state) {
    ChunkedDecoder d;
    size_t consumed = 0;
    uint64_t seen = 0;
    const auto r = d.Feed(body, &consumed, [&](std::string_view p) { seen += p.size(); });
    if (r != ChunkedDecoder::Result::kDone) std::abort();
    benchmark::DoNotOptimize(seen);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * body.size()));
}
BENCHMARK(BM_ChunkedDecode);

}  // namespace

BENCHMARK_MAIN();
