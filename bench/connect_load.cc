// connect_load: a small load client for intercepted HTTPS through a forward proxy.
//
// Each of N connections sends "CONNECT host:port" to the proxy, does a TLS handshake inside the
// tunnel that must verify against the given CA file for the requested name (the proxy's minted
// leaf, when it intercepts), then sends keep-alive GETs one after the other until the end of the
// run. A connection that fails is counted as an error and replaced. Requests that start after the
// warm-up and finish before the end are measured: req/s, latency percentiles, errors, non-2xx.
//
//   connect_load --proxy 127.0.0.1:8080 --target 127.0.0.1:8443 --ca ca.pem
//                [--path /1k] [--connections 32] [--threads 2] [--duration 10] [--warmup 1]
//                [--json]
//
// bench/proxy-compare runs it against 0xgend and mitmdump; it is a benchmark tool, not a test.

#include <openssl/ssl.h>

#include <algorithm>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

namespace {

namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;
using asio::ip::tcp;
using Clock = std::chrono::steady_clock;

struct Options {
  std::string proxy_host;
  std::string proxy_port;
  std::string target;       // host:port as sent in CONNECT and Host
  std::string target_host;  // host part, used for SNI and certificate verification
  std::string path = "/";
  std::string ca_file;
  int connections = 32;
  int threads = 2;
  double duration_s = 10;
  double warmup_s = 1;
  bool json = false;
};

struct Stats {
  std::vector<uint32_t> latency_us;
  std::vector<uint32_t> handshake_us;
  uint64_t requests = 0;
  uint64_t non_2xx = 0;
  uint64_t errors = 0;
  uint64_t reconnects = 0;  // orderly closes by the server (Connection: close), not errors
  std::string first_error;
};

struct Window {
  Clock::time_point measure_from;
  Clock::time_point end;
};

[[noreturn]] void Usage(const std::string& why) {
  std::cerr << "connect_load: " << why << "\n"
            << "usage: connect_load --proxy HOST:PORT --target HOST:PORT --ca FILE [--path /p]\n"
               "                    [--connections N] [--threads N] [--duration S] [--warmup S]\n"
               "                    [--json]\n";
  std::exit(2);
}

// "host:port" or "[v6]:port" -> (host, port).
std::pair<std::string, std::string> SplitHostPort(const std::string& s, const char* flag) {
  auto colon = s.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == s.size()) {
    Usage(std::string(flag) + " wants HOST:PORT, got '" + s + "'");
  }
  std::string host = s.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  return {host, s.substr(colon + 1)};
}

double ParseNumber(const std::string& s, const char* flag, double min) {
  char* end = nullptr;
  double v = std::strtod(s.c_str(), &end);
  if (s.empty() || *end != '\0' || !std::isfinite(v) || v < min) {
    Usage(std::string(flag) + ": bad value '" + s + "'");
  }
  return v;
}

Options ParseArgs(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "--json") {
      o.json = true;
      continue;
    }
    if (a == "-h" || a == "--help") Usage("help");
    if (i + 1 >= argc) Usage("missing value after " + std::string(a));
    std::string v = argv[++i];
    if (a == "--proxy") {
      std::tie(o.proxy_host, o.proxy_port) = SplitHostPort(v, "--proxy");
    } else if (a == "--target") {
      o.target = v;
      o.target_host = SplitHostPort(v, "--target").first;
    } else if (a == "--path") {
      if (v.empty() || v.front() != '/') Usage("--path must start with /");
      o.path = v;
    } else if (a == "--ca") {
      o.ca_file = v;
    } else if (a == "--connections") {
      o.connections = static_cast<int>(ParseNumber(v, "--connections", 1));
    } else if (a == "--threads") {
      o.threads = static_cast<int>(ParseNumber(v, "--threads", 1));
    } else if (a == "--duration") {
      o.duration_s = ParseNumber(v, "--duration", 0.1);
    } else if (a == "--warmup") {
      o.warmup_s = ParseNumber(v, "--warmup", 0);
    } else {
      Usage("unknown option " + std::string(a));
    }
  }
  if (o.proxy_host.empty()) Usage("--proxy is required");
  if (o.target.empty()) Usage("--target is required");
  if (o.ca_file.empty()) Usage("--ca is required");
  o.threads = std::min(o.threads, o.connections);
  return o;
}

uint32_t MicrosSince(Clock::time_point t0, Clock::time_point t1) {
  return static_cast<uint32_t>(std::chrono::duration_cast<std::chrono::microseconds>(t1 - t0).count());
}

bool IEquals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

// The parts of a response head this client needs.
struct Head {
  int status = 0;
  bool has_length = false;
  uint64_t content_length = 0;
  bool chunked = false;
  bool close = false;
};

Head ParseHead(std::string_view head) {
  Head h;
  auto eol = head.find("\r\n");
  std::string_view status_line = head.substr(0, eol);
  if (status_line.size() < 12 || status_line.substr(0, 5) != "HTTP/") {
    throw std::runtime_error("bad status line: " + std::string(status_line.substr(0, 80)));
  }
  auto sp = status_line.find(' ');
  h.status = std::atoi(std::string(status_line.substr(sp + 1, 3)).c_str());
  if (h.status < 100 || h.status > 999) {
    throw std::runtime_error("bad status line: " + std::string(status_line.substr(0, 80)));
  }
  if (status_line.substr(0, 8) == "HTTP/1.0") h.close = true;
  size_t pos = eol + 2;
  while (pos < head.size()) {
    auto next = head.find("\r\n", pos);
    if (next == std::string_view::npos) next = head.size();
    std::string_view line = head.substr(pos, next - pos);
    pos = next + 2;
    auto colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    std::string_view name = line.substr(0, colon);
    std::string_view value = Trim(line.substr(colon + 1));
    if (IEquals(name, "content-length")) {
      h.has_length = true;
      h.content_length = std::strtoull(std::string(value).c_str(), nullptr, 10);
    } else if (IEquals(name, "transfer-encoding")) {
      h.chunked = value.find("chunked") != std::string_view::npos;
    } else if (IEquals(name, "connection")) {
      if (IEquals(value, "close")) h.close = true;
      if (IEquals(value, "keep-alive")) h.close = false;
    }
  }
  return h;
}

template <typename Stream>
asio::awaitable<void> ReadAtLeast(Stream& s, std::string& buf, size_t want) {
  if (buf.size() < want) {
    co_await asio::async_read(s, asio::dynamic_buffer(buf), asio::transfer_exactly(want - buf.size()),
                              asio::use_awaitable);
  }
}

// Consumes one response body from buf (reading more as needed).
template <typename Stream>
asio::awaitable<void> ReadBody(Stream& s, std::string& buf, const Head& h) {
  if (h.chunked) {
    for (;;) {
      size_t n = co_await asio::async_read_until(s, asio::dynamic_buffer(buf), "\r\n",
                                                 asio::use_awaitable);
      uint64_t size = std::strtoull(buf.substr(0, n).c_str(), nullptr, 16);
      buf.erase(0, n);
      if (size == 0) {
        // Trailers end at an empty line.
        for (;;) {
          size_t t = co_await asio::async_read_until(s, asio::dynamic_buffer(buf), "\r\n",
                                                     asio::use_awaitable);
          buf.erase(0, t);
          if (t == 2) co_return;
        }
      }
      co_await ReadAtLeast(s, buf, size + 2);
      buf.erase(0, size + 2);
    }
  }
  if (!h.has_length) throw std::runtime_error("response has neither Content-Length nor chunked");
  co_await ReadAtLeast(s, buf, h.content_length);
  buf.erase(0, h.content_length);
}

class Worker {
 public:
  Worker(const Options& o, Window w, tcp::endpoint proxy)
      : options_(o), window_(w), proxy_(proxy), tls_(ssl::context::tls_client) {
    tls_.set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                     ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
    tls_.load_verify_file(o.ca_file);
    tls_.set_verify_mode(ssl::verify_peer);
    request_ = "GET " + o.path + " HTTP/1.1\r\nHost: " + o.target +
               "\r\nUser-Agent: connect_load\r\nAccept: */*\r\n\r\n";
    connect_ = "CONNECT " + o.target + " HTTP/1.1\r\nHost: " + o.target + "\r\n\r\n";
    boost::system::error_code ec;
    asio::ip::make_address(o.target_host, ec);
    send_sni_ = static_cast<bool>(ec);  // no SNI for IP literals (RFC 6066 §3)
  }

  void Run(int connections) {
    for (int i = 0; i < connections; ++i) {
      ++active_;
      asio::co_spawn(io_, Connection(), asio::detached);
    }
    // Requests still in flight this long after the end are abandoned and counted as errors.
    asio::steady_timer watchdog(io_, window_.end + std::chrono::seconds(5));
    watchdog.async_wait([this](boost::system::error_code) { io_.stop(); });
    io_.run();
    stats_.errors += active_;
  }

  Stats& stats() { return stats_; }

 private:
  asio::awaitable<void> Connection() {
    while (Clock::now() < window_.end) {
      std::string error;
      try {
        co_await Session();
      } catch (const std::exception& e) {
        error = e.what();
      }
      if (!error.empty()) {
        if (Clock::now() < window_.end) {
          ++stats_.errors;
          if (stats_.first_error.empty()) stats_.first_error = error;
        }
        asio::steady_timer pause(io_, std::chrono::milliseconds(10));
        co_await pause.async_wait(asio::use_awaitable);
      }
    }
    if (--active_ == 0) io_.stop();
  }

  asio::awaitable<void> Session() {
    tcp::socket sock(io_);
    co_await sock.async_connect(proxy_, asio::use_awaitable);
    sock.set_option(tcp::no_delay(true));

    auto t0 = Clock::now();
    co_await asio::async_write(sock, asio::buffer(connect_), asio::use_awaitable);
    std::string buf;
    size_t n = co_await asio::async_read_until(sock, asio::dynamic_buffer(buf), "\r\n\r\n",
                                               asio::use_awaitable);
    Head connect_head = ParseHead(std::string_view(buf).substr(0, n));
    if (connect_head.status / 100 != 2) {
      throw std::runtime_error("CONNECT answered " + std::to_string(connect_head.status));
    }
    if (buf.size() != n) throw std::runtime_error("bytes after the CONNECT response");

    ssl::stream<tcp::socket> tls(std::move(sock), tls_);
    if (send_sni_ && !SSL_set_tlsext_host_name(tls.native_handle(), options_.target_host.c_str())) {
      throw std::runtime_error("cannot set SNI");
    }
    tls.set_verify_callback(ssl::host_name_verification(options_.target_host));
    co_await tls.async_handshake(ssl::stream_base::client, asio::use_awaitable);
    auto t1 = Clock::now();
    if (t0 >= window_.measure_from && t1 <= window_.end) {
      stats_.handshake_us.push_back(MicrosSince(t0, t1));
    }

    std::string rbuf;
    while (Clock::now() < window_.end) {
      auto start = Clock::now();
      co_await asio::async_write(tls, asio::buffer(request_), asio::use_awaitable);
      size_t hn = co_await asio::async_read_until(tls, asio::dynamic_buffer(rbuf), "\r\n\r\n",
                                                  asio::use_awaitable);
      Head h = ParseHead(std::string_view(rbuf).substr(0, hn));
      rbuf.erase(0, hn);
      co_await ReadBody(tls, rbuf, h);
      auto done = Clock::now();
      if (start >= window_.measure_from && done <= window_.end) {
        ++stats_.requests;
        stats_.latency_us.push_back(MicrosSince(start, done));
        if (h.status / 100 != 2) ++stats_.non_2xx;
      }
      if (h.close) {
        ++stats_.reconnects;
        co_return;
      }
    }
    boost::system::error_code ignored;
    tls.lowest_layer().shutdown(tcp::socket::shutdown_both, ignored);
  }

  const Options& options_;
  Window window_;
  tcp::endpoint proxy_;
  ssl::context tls_;
  std::string request_;
  std::string connect_;
  bool send_sni_ = true;
  int active_ = 0;
  Stats stats_;
  // Last, so that it goes first: its destructor destroys the coroutine frames still pending
  // after a watchdog stop, and those refer to the members above.
  asio::io_context io_{1};
};

double Percentile(const std::vector<uint32_t>& sorted, double p) {
  if (sorted.empty()) return 0;
  size_t rank = static_cast<size_t>(std::ceil(p / 100.0 * static_cast<double>(sorted.size())));
  return sorted[std::clamp<size_t>(rank, 1, sorted.size()) - 1] / 1000.0;  // ms
}

}  // namespace

int main(int argc, char** argv) {
  Options o = ParseArgs(argc, argv);

  tcp::endpoint proxy;
  try {
    asio::io_context resolve_io;
    tcp::resolver resolver(resolve_io);
    proxy = *resolver.resolve(o.proxy_host, o.proxy_port).begin();
  } catch (const std::exception& e) {
    std::cerr << "connect_load: cannot resolve proxy " << o.proxy_host << ":" << o.proxy_port
              << ": " << e.what() << "\n";
    return 2;
  }

  auto start = Clock::now();
  auto to_duration = [](double s) {
    return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
  };
  Window window{start + to_duration(o.warmup_s), start + to_duration(o.warmup_s + o.duration_s)};

  std::vector<std::unique_ptr<Worker>> workers;
  try {
    for (int t = 0; t < o.threads; ++t) workers.push_back(std::make_unique<Worker>(o, window, proxy));
  } catch (const std::exception& e) {
    std::cerr << "connect_load: cannot load CA file " << o.ca_file << ": " << e.what() << "\n";
    return 2;
  }
  std::vector<std::thread> threads;
  for (int t = 0; t < o.threads; ++t) {
    int share = o.connections / o.threads + (t < o.connections % o.threads ? 1 : 0);
    threads.emplace_back([w = workers[t].get(), share] { w->Run(share); });
  }
  for (auto& th : threads) th.join();

  Stats total;
  for (auto& w : workers) {
    Stats& s = w->stats();
    total.latency_us.insert(total.latency_us.end(), s.latency_us.begin(), s.latency_us.end());
    total.handshake_us.insert(total.handshake_us.end(), s.handshake_us.begin(),
                              s.handshake_us.end());
    total.requests += s.requests;
    total.non_2xx += s.non_2xx;
    total.errors += s.errors;
    total.reconnects += s.reconnects;
    if (total.first_error.empty()) total.first_error = s.first_error;
  }
  std::sort(total.latency_us.begin(), total.latency_us.end());
  std::sort(total.handshake_us.begin(), total.handshake_us.end());
  double rps = static_cast<double>(total.requests) / o.duration_s;

  char line[512];
  if (o.json) {
    std::snprintf(line, sizeof line,
                  "{\"requests\":%llu,\"rps\":%.1f,\"p50_ms\":%.3f,\"p90_ms\":%.3f,"
                  "\"p99_ms\":%.3f,\"max_ms\":%.3f,\"errors\":%llu,\"non_2xx\":%llu,"
                  "\"reconnects\":%llu,\"handshakes\":%zu,\"handshake_p50_ms\":%.3f}",
                  static_cast<unsigned long long>(total.requests), rps,
                  Percentile(total.latency_us, 50), Percentile(total.latency_us, 90),
                  Percentile(total.latency_us, 99), Percentile(total.latency_us, 100),
                  static_cast<unsigned long long>(total.errors),
                  static_cast<unsigned long long>(total.non_2xx),
                  static_cast<unsigned long long>(total.reconnects), total.handshake_us.size(),
                  Percentile(total.handshake_us, 50));
  } else {
    std::snprintf(line, sizeof line,
                  "connect_load: %d connections, %d threads, CONNECT %s via %s:%s, %.1f s "
                  "(+%.1f s warm-up)\n"
                  "  requests %llu  req/s %.1f  p50 %.3f ms  p90 %.3f ms  p99 %.3f ms  max %.3f "
                  "ms\n  errors %llu  non-2xx %llu  reconnects %llu  handshakes in window %zu "
                  "(p50 %.3f ms)",
                  o.connections, o.threads, o.target.c_str(), o.proxy_host.c_str(),
                  o.proxy_port.c_str(), o.duration_s, o.warmup_s,
                  static_cast<unsigned long long>(total.requests), rps,
                  Percentile(total.latency_us, 50), Percentile(total.latency_us, 90),
                  Percentile(total.latency_us, 99), Percentile(total.latency_us, 100),
                  static_cast<unsigned long long>(total.errors),
                  static_cast<unsigned long long>(total.non_2xx),
                  static_cast<unsigned long long>(total.reconnects), total.handshake_us.size(),
                  Percentile(total.handshake_us, 50));
  }
  std::cout << line << std::endl;
  if (!total.first_error.empty()) {
    std::cerr << "connect_load: first error: " << total.first_error << "\n";
  }
  return total.requests > 0 ? 0 : 1;
}
