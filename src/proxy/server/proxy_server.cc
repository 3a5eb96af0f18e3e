// The capture proxy's event loops, client sessions, upstream pool, CONNECT/TLS interception and
// WebSocket relay. One coroutine per client connection, pinned to one worker thread together
// with the upstream connections it borrows; one watchdog coroutine per connection enforces the
// deadlines (each I/O step stores its deadline; the timer is re-armed only when it fires or a
// deadline gets shorter, so a step costs a clock read, not a timer operation).
#include "proxy/proxy_server.h"

#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>

#include <array>
#include <atomic>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <condition_variable>
#include <limits>
#include <mutex>
#include <random>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "common/ids.h"
#include "common/log.h"
#include "common/redact.h"
#include "common/strings.h"
#include "proxy/http/http_head.h"
#include "proxy/server/internal/buffer.h"

namespace oxg::proxy {
namespace {

namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;
using tcp = asio::ip::tcp;
using asio::awaitable;
using boost::system::error_code;
using Mono = std::chrono::steady_clock;
using TlsStream = ssl::stream<tcp::socket&>;
constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);

constexpr size_t kInitialBuffer = 16 * 1024;
constexpr size_t kBodyBuffer = 64 * 1024;
constexpr auto kExpectWait = std::chrono::seconds(1);

// ---------------------------------------------------------------------------------------------
// Metrics (contract §4). Label sets are resolved lazily per worker so the hot path is an array
// lookup.

constexpr std::array<std::string_view, 10> kMethods = {
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "OTHER"};

size_t MethodIndex(std::string_view method) {
  for (size_t i = 0; i + 1 < kMethods.size(); ++i) {
    if (method == kMethods[i]) return i;
  }
  return kMethods.size() - 1;
}

enum class UpstreamError { kConnect, kTls, kTimeout, kProtocol, kReset };
constexpr std::array<std::string_view, 5> kUpstreamErrorNames = {"connect", "tls", "timeout",
                                                                 "protocol", "reset"};

struct ProxyMetrics {
  explicit ProxyMetrics(metrics::Registry& r)
      : requests(r.AddCounter("oxg_proxy_requests_total",
                              "Exchanges completed by the capture proxy, by method and status "
                              "code (code=\"error\" when the client got no response).",
                              {"method", "code"}, /*exemplars=*/true)),
        duration(r.AddHistogram("oxg_proxy_request_duration_seconds",
                                "Client-seen latency of exchanges through the capture proxy.",
                                {"method"}, metrics::DefaultLatencyBuckets(), /*exemplars=*/true)),
        active(r.AddGauge("oxg_proxy_active_connections", "Open client connections of the proxy.",
                          {})
                   .WithLabels({})),
        upstream_errors(r.AddCounter("oxg_proxy_upstream_errors_total",
                                     "Upstream failures seen by the capture proxy, by reason.",
                                     {"reason"})) {
    for (size_t i = 0; i < kUpstreamErrorNames.size(); ++i) {
      upstream_error[i] = &upstream_errors.WithLabels({kUpstreamErrorNames[i]});
    }
  }
  metrics::Family<metrics::Counter>& requests;
  metrics::Family<metrics::Histogram>& duration;
  metrics::Gauge& active;
  metrics::Family<metrics::Counter>& upstream_errors;
  std::array<metrics::Counter*, 5> upstream_error{};
};

// ---------------------------------------------------------------------------------------------
// A connection: a TCP socket, optionally wrapped in TLS.

struct Conn {
  explicit Conn(tcp::socket s) : sock(std::move(s)) {}
  explicit Conn(const asio::any_io_executor& ex) : sock(ex) {}

  awaitable<std::tuple<error_code, size_t>> ReadSome(char* data, size_t size) {
    if (tls) co_return co_await tls->async_read_some(asio::buffer(data, size), kTuple);
    co_return co_await sock.async_read_some(asio::buffer(data, size), kTuple);
  }
  template <typename Buffers>
  awaitable<std::tuple<error_code, size_t>> Write(const Buffers& buffers) {
    if (tls) co_return co_await asio::async_write(*tls, buffers, kTuple);
    co_return co_await asio::async_write(sock, buffers, kTuple);
  }
  void Close() {
    error_code ec;
    sock.shutdown(tcp::socket::shutdown_both, ec);
    sock.close(ec);
  }
  bool is_open() const { return sock.is_open(); }

  tcp::socket sock;
  std::unique_ptr<TlsStream> tls;
};

// An upstream connection and its read buffer (bytes of the next response).
struct Upstream {
  Upstream(const asio::any_io_executor& ex, std::string k)
      : conn(ex), key(std::move(k)), buf(kInitialBuffer) {}
  Conn conn;
  std::string key;  // "scheme://host:port"
  internal::ReadBuffer buf;
  std::string remote_ip;
  bool reused = false;
  std::chrono::steady_clock::time_point idle_since;
};

// Idle upstream connections of one worker, per "scheme://host:port". Worker-thread only.
class Pool {
 public:
  explicit Pool(size_t per_host) : per_host_(per_host) {}

  std::unique_ptr<Upstream> Take(const std::string& key) {
    auto it = idle_.find(key);
    if (it == idle_.end()) return nullptr;
    auto& list = it->second;
    while (!list.empty()) {
      std::unique_ptr<Upstream> u = std::move(list.back());
      list.pop_back();
      --total_;
      if (StillUsable(*u)) {
        u->reused = true;
        return u;
      }
      u->conn.Close();
    }
    return nullptr;
  }

  void Put(std::unique_ptr<Upstream> u) {
    auto& list = idle_[u->key];
    if (list.size() >= per_host_ || total_ >= kMaxIdlePerWorker) {
      u->conn.Close();
      return;
    }
    u->idle_since = Mono::now();
    list.push_back(std::move(u));
    ++total_;
  }

  // Drops idle connections the upstream has closed or that sat idle too long.
  void Sweep() {
    const auto oldest = Mono::now() - kMaxIdleAge;
    for (auto it = idle_.begin(); it != idle_.end();) {
      auto& list = it->second;
      std::erase_if(list, [&](std::unique_ptr<Upstream>& u) {
        if (u->idle_since > oldest && StillUsable(*u)) return false;
        u->conn.Close();
        --total_;
        return true;
      });
      it = list.empty() ? idle_.erase(it) : std::next(it);
    }
  }

  void Clear() {
    for (auto& [key, list] : idle_) {
      for (auto& u : list) u->conn.Close();
    }
    idle_.clear();
    total_ = 0;
  }

 private:
  // A pooled connection is usable when the peer has neither closed it nor sent unexpected
  // bytes (for TLS, bytes such as session tickets are expected and left to the engine).
  static bool StillUsable(Upstream& u) {
    if (!u.conn.is_open()) return false;
    char c;
    ssize_t n = ::recv(u.conn.sock.native_handle(), &c, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0) return false;
    if (n > 0) return u.conn.tls != nullptr;
    return errno == EAGAIN || errno == EWOULDBLOCK;
  }

  static constexpr size_t kMaxIdlePerWorker = 512;
  static constexpr auto kMaxIdleAge = std::chrono::seconds(60);
  size_t per_host_;
  size_t total_ = 0;
  std::unordered_map<std::string, std::vector<std::unique_ptr<Upstream>>> idle_;
};

class Session;

// Member order matters for destruction: the pool and timer go before the event loop, and the
// session set outlives the event loop, whose destruction may still end suspended sessions.
struct Worker {
  explicit Worker(size_t per_host) : pool(per_host), sweep(ioc) {}
  std::unordered_set<Session*> sessions;  // worker thread only
  // Lazily resolved label sets: [method][status 0..599] (0 = "error").
  std::array<std::array<metrics::Counter*, 600>, kMethods.size()> requests{};
  std::array<metrics::Histogram*, kMethods.size()> durations{};
  asio::io_context ioc{1};
  Pool pool;
  asio::steady_timer sweep;
  std::thread thread;
};

// What a CONNECT handshake's SNI callback needs.
struct SniState {
  tls::LeafCertificateMinter* minter = nullptr;
  std::string connect_host;
  std::string error;
};

int SniStateIndex() {
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

int OnServerName(SSL* ssl, int* alert, void*) {
  auto* state = static_cast<SniState*>(SSL_get_ex_data(ssl, SniStateIndex()));
  if (state == nullptr) return SSL_TLSEXT_ERR_ALERT_FATAL;
  const char* sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  std::string_view host = sni != nullptr && *sni != '\0' ? sni : state->connect_host;
  auto leaf = state->minter->Get(host);
  if (!leaf.ok() && host != state->connect_host) leaf = state->minter->Get(state->connect_host);
  if (!leaf.ok()) {
    state->error = std::string(leaf.status().message());
    *alert = SSL_AD_INTERNAL_ERROR;
    return SSL_TLSEXT_ERR_ALERT_FATAL;
  }
  // SSL_set_SSL_CTX takes its own reference: the leaf may leave the cache meanwhile.
  if (SSL_set_SSL_CTX(ssl, (*leaf)->ctx()) == nullptr) {
    *alert = SSL_AD_INTERNAL_ERROR;
    return SSL_TLSEXT_ERR_ALERT_FATAL;
  }
  return SSL_TLSEXT_ERR_OK;
}

int OnAlpnSelect(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
                 unsigned int inlen, void*) {
  static const unsigned char kHttp11[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
  unsigned char* selected = nullptr;
  if (SSL_select_next_proto(&selected, outlen, kHttp11, sizeof(kHttp11), in, inlen) ==
      OPENSSL_NPN_NEGOTIATED) {
    *out = selected;
    return SSL_TLSEXT_ERR_OK;
  }
  return SSL_TLSEXT_ERR_NOACK;
}

std::string LowerAscii(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

bool IsIpLiteral(std::string_view host) {
  error_code ec;
  asio::ip::make_address(std::string(host), ec);
  return !ec;
}

// An IPv4-mapped IPv6 address (::ffff:1.2.3.4, what a dual-stack socket reports) as IPv4.
asio::ip::address Unmapped(asio::ip::address addr) {
  if (addr.is_v6() && addr.to_v6().is_v4_mapped()) {
    return asio::ip::make_address_v4(asio::ip::v4_mapped, addr.to_v6());
  }
  return addr;
}

std::string FormatEndpoint(const tcp::endpoint& ep) {
  const auto addr = Unmapped(ep.address());
  if (addr.is_v6()) return oxg::Cat("[", addr.to_string(), "]:", std::to_string(ep.port()));
  return oxg::Cat(addr.to_string(), ":", std::to_string(ep.port()));
}

std::string Authority(std::string_view host, uint16_t port, std::string_view scheme) {
  bool v6 = host.find(':') != std::string_view::npos;
  std::string out = v6 ? oxg::Cat("[", host, "]") : std::string(host);
  bool default_port = (port == 80 && (scheme == "http" || scheme == "ws")) ||
                      (port == 443 && (scheme == "https" || scheme == "wss"));
  if (!default_port) out += oxg::Cat(":", std::to_string(port));
  return out;
}

const char* ReasonPhrase(int status) {
  switch (status) {
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 408: return "Request Timeout";
    case 431: return "Request Header Fields Too Large";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Error";
  }
}

// A response the proxy itself sends. `kind` goes into X-0xgen-Error for tools.
std::string ErrorResponse(int status, std::string_view kind, std::string_view message,
                          bool keep_alive) {
  std::string body = oxg::Cat("0xgen proxy: ", message, "\n");
  return oxg::Cat("HTTP/1.1 ", std::to_string(status), " ", ReasonPhrase(status),
                  "\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ",
                  std::to_string(body.size()), "\r\nX-0xgen-Error: ", kind,
                  keep_alive ? "\r\n\r\n" : "\r\nConnection: close\r\n\r\n", body);
}

// Where a head ends, if it already has; scanning only from `from` so a slow client sending a
// head byte by byte costs linear, not quadratic, time.
bool HeadComplete(std::string_view data, size_t from) {
  size_t start = from >= 3 ? from - 3 : 0;
  for (size_t i = start; i < data.size(); ++i) {
    if (data[i] != '\n') continue;
    if (i + 1 < data.size() && data[i + 1] == '\n') return true;
    if (i + 2 < data.size() && data[i + 1] == '\r' && data[i + 2] == '\n') return true;
  }
  return false;
}

// Counts what passed through and keeps the capture prefix of a body.
struct Tally {
  uint64_t wire = 0;
  uint64_t body = 0;
  std::string* capture = nullptr;  // null: not captured
  size_t limit = 0;
  void Payload(std::string_view piece) {
    body += piece.size();
    if (capture != nullptr && capture->size() < limit) {
      capture->append(piece.substr(0, std::min(piece.size(), limit - capture->size())));
    }
  }
};

}  // namespace

// ---------------------------------------------------------------------------------------------

class ProxyServer::Impl {
 public:
  Impl(ProxyOptions options, ProxyDeps deps)
      : options_(std::move(options)),
        deps_(deps),
        clock_(deps.clock != nullptr ? *deps.clock : Clock::Real()),
        tracer_(deps.tracer != nullptr ? *deps.tracer : tracing::Tracer::Noop()),
        metrics_(*deps.registry),
        server_tls_(ssl::context::tls_server),
        client_tls_(ssl::context::tls_client) {
    limits_.max_head_bytes = options_.max_head_bytes;
    capture_limit_ = options_.max_body_kb < 0
                         ? std::numeric_limits<size_t>::max()
                         : static_cast<size_t>(options_.max_body_kb) * 1024;
    sample_threshold_ = options_.flow_sample_rate >= 1.0
                            ? std::numeric_limits<uint64_t>::max()
                            : static_cast<uint64_t>(options_.flow_sample_rate * 18446744073709551615.0);
  }

  absl::Status Init();
  void Run();
  void Stop();
  uint16_t port() const { return port_; }

  // Shared by sessions.
  const ProxyOptions options_;
  const ProxyDeps deps_;
  const Clock& clock_;
  tracing::Tracer& tracer_;
  ProxyMetrics metrics_;
  http::Limits limits_;
  size_t capture_limit_ = 0;
  uint64_t sample_threshold_ = 0;
  ssl::context server_tls_;
  ssl::context client_tls_;
  std::atomic<size_t> live_{0};
  std::atomic<bool> stopping_{false};
  std::mutex live_mu_;
  std::condition_variable live_cv_;

  bool Sampled() {
    if (sample_threshold_ == 0) return false;
    if (sample_threshold_ == std::numeric_limits<uint64_t>::max()) return true;
    uint64_t r;
    RandomBytes(std::span<uint8_t>(reinterpret_cast<uint8_t*>(&r), sizeof r));
    return r < sample_threshold_;
  }

  metrics::Counter& RequestCounter(Worker& w, size_t method, int status) {
    size_t code = status >= 100 && status < 600 ? static_cast<size_t>(status) : 0;
    metrics::Counter*& slot = w.requests[method][code];
    if (slot == nullptr) {
      std::string code_text = code == 0 ? "error" : std::to_string(code);
      slot = &metrics_.requests.WithLabels({kMethods[method], code_text});
    }
    return *slot;
  }
  metrics::Histogram& Duration(Worker& w, size_t method) {
    metrics::Histogram*& slot = w.durations[method];
    if (slot == nullptr) slot = &metrics_.duration.WithLabels({kMethods[method]});
    return *slot;
  }
  void CountUpstreamError(UpstreamError e) {
    metrics_.upstream_error[static_cast<size_t>(e)]->Inc();
  }

  void SessionEnded() {
    metrics_.active.Inc(-1);
    if (live_.fetch_sub(1) == 1) {
      std::lock_guard lock(live_mu_);
      live_cv_.notify_all();
    }
  }

 private:
  awaitable<void> Accept();
  void ScheduleSweep(Worker& w);

  std::vector<std::unique_ptr<Worker>> workers_;
  std::unique_ptr<tcp::acceptor> acceptor_;
  uint16_t port_ = 0;
  size_t next_worker_ = 0;
  bool stopped_ = false;
};

namespace {

// ---------------------------------------------------------------------------------------------
// One client connection.

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(ProxyServer::Impl& server, Worker& worker, tcp::socket socket)
      : srv_(server),
        w_(worker),
        client_(std::move(socket)),
        cbuf_(kInitialBuffer),
        timer_(worker.ioc) {
    srv_.live_.fetch_add(1);
    srv_.metrics_.active.Inc(1);
    error_code ec;
    client_.sock.set_option(tcp::no_delay(true), ec);
    auto ep = client_.sock.remote_endpoint(ec);
    if (!ec) client_address_ = FormatEndpoint(ep);
    w_.sessions.insert(this);
  }
  ~Session() {
    w_.sessions.erase(this);
    srv_.SessionEnded();
  }

  static void Launch(ProxyServer::Impl& server, Worker& worker, tcp::socket socket) {
    auto s = std::make_shared<Session>(server, worker, std::move(socket));
    asio::co_spawn(worker.ioc, s->Watchdog(s), asio::detached);
    asio::co_spawn(worker.ioc, s->Run(s), asio::detached);
  }

  // Called on the worker thread at shutdown.
  void Abort() {
    client_.Close();
    if (up_) up_->conn.Close();
    closed_ = true;
    timer_.cancel();
  }

 private:
  enum class Side { kClient, kUpstream, kBoth, kExpect };
  enum class Outcome { kContinue, kClose };
  enum class PumpResult { kOk, kFromFailed, kToFailed, kProtocol };

  // --- deadlines -------------------------------------------------------------------------------
  void Arm(std::chrono::milliseconds timeout, Side side) {
    waiting_ = side;
    deadline_ = Mono::now() + timeout;
    if (deadline_ < timer_.expiry()) timer_.cancel();  // the watchdog re-arms sooner
  }

  awaitable<void> Watchdog(std::shared_ptr<Session> /*keep_alive*/) {
    while (!closed_) {
      timer_.expires_at(deadline_);
      co_await timer_.async_wait(kTuple);
      if (closed_) break;
      if (Mono::now() < deadline_) continue;
      deadline_ = Mono::time_point::max();
      switch (waiting_) {
        case Side::kClient:
          client_.Close();
          break;
        case Side::kUpstream:
          upstream_timed_out_ = true;
          if (resolver_) resolver_->cancel();
          if (up_) up_->conn.Close();
          break;
        case Side::kExpect:
          expect_timed_out_ = true;
          if (up_) {
            error_code ec;
            up_->conn.sock.cancel(ec);
          }
          break;
        case Side::kBoth:
          client_.Close();
          if (up_) up_->conn.Close();
          break;
      }
    }
  }

  awaitable<void> Run(std::shared_ptr<Session> /*keep_alive*/) {
    deadline_ = Mono::now() + srv_.options_.client_idle_timeout;
    co_await Serve();
    closed_ = true;
    timer_.cancel();
    client_.Close();
    if (up_) up_->conn.Close();
  }

  // --- reading heads ---------------------------------------------------------------------------
  // Reads into `buf` from `conn` until a complete head is present. False on EOF/error/timeout
  // (and *got_bytes says whether any byte of the head had arrived), or when the buffer is full.
  // A client's whole head must arrive within `wait` (a slow-drip client cannot hold the
  // connection by sending a byte now and then); an upstream gets `wait` for each read.
  awaitable<bool> ReadHead(Conn& conn, internal::ReadBuffer& buf, Side side,
                           std::chrono::milliseconds wait, bool* got_bytes) {
    size_t scanned = 0;
    *got_bytes = !buf.empty();
    if (side == Side::kClient) Arm(wait, side);
    while (!HeadComplete(buf.view(), scanned)) {
      scanned = buf.size();
      if (buf.size() > srv_.limits_.max_head_bytes) co_return true;  // the parser says 431
      auto [space, len] = buf.Prepare(srv_.limits_.max_head_bytes + 4096);
      if (len == 0) co_return true;
      if (side != Side::kClient) Arm(wait, side);
      auto [ec, n] = co_await conn.ReadSome(space, len);
      if (ec || n == 0) co_return false;
      buf.Commit(n);
      *got_bytes = true;
    }
    co_return true;
  }

  std::chrono::milliseconds IoTimeout(Side side) const {
    return side == Side::kUpstream ? srv_.options_.upstream_timeout
                                   : srv_.options_.client_io_timeout;
  }

  // Answers and ends the connection. Unread request bytes would make the kernel reset the
  // connection, and the client could lose the answer: so the sending side is shut first and
  // what the client still sends is read and dropped, for at most a second and 1 MiB.
  awaitable<void> SendAndClose(std::string response) {
    Arm(srv_.options_.client_io_timeout, Side::kClient);
    auto [ec, n] = co_await client_.Write(asio::buffer(response));
    if (ec || client_.tls) co_return;
    error_code ignored;
    client_.sock.shutdown(tcp::socket::shutdown_send, ignored);
    Arm(std::chrono::seconds(1), Side::kClient);
    size_t drained = 0;
    while (drained < (1u << 20)) {
      cbuf_.Consume(cbuf_.size());
      auto [space, len] = cbuf_.Prepare(kInitialBuffer);
      auto [rec, rn] = co_await client_.ReadSome(space, len);
      if (rec || rn == 0) break;
      drained += rn;
    }
  }

  // --- the connection loop ---------------------------------------------------------------------
  awaitable<void> Serve() {
    for (;;) {
      bool got_bytes = false;
      bool ok = co_await ReadHead(client_, cbuf_, Side::kClient, srv_.options_.client_idle_timeout,
                                  &got_bytes);
      if (!ok) co_return;  // closed, idle or timed out: nothing to answer
      http::RequestHead req;
      http::ParseError perr;
      auto st = http::ParseRequestHead(cbuf_.view(), srv_.limits_, &req, &perr);
      if (st != http::ParseStatus::kComplete) {
        int status = st == http::ParseStatus::kError ? perr.status : 431;
        std::string_view why = st == http::ParseStatus::kError ? perr.reason : "head too large";
        CountRequest(req.method, status, 0);
        co_await SendAndClose(ErrorResponse(status, "bad_request", why, false));
        co_return;
      }
      if (req.form == http::RequestHead::TargetForm::kAuthority) {
        if (in_tunnel_) {
          co_await SendAndClose(
              ErrorResponse(400, "bad_request", "CONNECT inside a tunnel", false));
          co_return;
        }
        co_await Connect(req);
        co_return;
      }
      Outcome out = co_await Exchange(req);
      if (out == Outcome::kClose) co_return;
    }
  }

  void CountRequest(std::string_view method, int status, double seconds,
                    const tracing::Span* span = nullptr) {
    size_t m = MethodIndex(method);
    std::optional<tracing::ScopedActivation> active;
    if (span != nullptr && span->recording()) active.emplace(*span);
    srv_.RequestCounter(w_, m, status).Inc();
    if (seconds > 0) srv_.Duration(w_, m).Observe(seconds);
  }

  // --- one request/response exchange -----------------------------------------------------------
  awaitable<Outcome> Exchange(http::RequestHead& req) {
    const auto started = Mono::now();
    const int64_t started_wall =
        std::chrono::duration_cast<std::chrono::nanoseconds>(srv_.clock_.Now().time_since_epoch())
            .count();

    // Where the request goes.
    std::string scheme, host;
    uint16_t port = 0;
    if (req.form == http::RequestHead::TargetForm::kAbsolute) {
      scheme = LowerAscii(req.scheme);
      host = LowerAscii(req.host);
      port = req.port;
    } else if (in_tunnel_) {
      scheme = tunnel_scheme_;
      host = tunnel_host_;
      port = tunnel_port_;
    } else {
      CountRequest(req.method, 400, 0);
      co_await SendAndClose(ErrorResponse(
          400, "not_a_proxy_request",
          "this is a forward proxy; send absolute-form requests (GET http://host/path) or CONNECT",
          false));
      co_return Outcome::kClose;
    }
    bool upstream_tls = scheme == "https" || scheme == "wss";
    if (!upstream_tls && scheme != "http" && scheme != "ws") {
      CountRequest(req.method, 400, 0);
      co_await SendAndClose(ErrorResponse(400, "bad_request", "unsupported URL scheme", false));
      co_return Outcome::kClose;
    }
    if (port == 0) port = upstream_tls ? 443 : 80;
    std::string origin(req.form == http::RequestHead::TargetForm::kAbsolute ? req.origin
                                                                             : req.target);
    std::string authority = Authority(host, port, scheme);
    std::string url = oxg::Cat(scheme, "://", authority, origin);

    // The span continues an incoming trace context.
    tracing::SpanContext parent;
    if (auto tp = http::FindHeader(req.headers, "traceparent"); !tp.empty()) {
      tracing::ParseTraceparent(tp, &parent);
    }
    tracing::Span span = srv_.tracer_.StartSpan("proxy.capture_flow", tracing::SpanKind::kServer,
                                                parent);
    if (span.recording()) {
      span.SetAttribute("http.request.method", req.method);
      span.SetAttribute("url.full", Redactor::Default().Redact(url));
      span.SetAttribute("server.address", host);
      span.SetAttribute("server.port", static_cast<int64_t>(port));
      span.SetAttribute("client.address", client_address_);
    }

    // Capture state. Whether the exchange is in scope is settled once the upstream address is
    // known; bodies are kept only for sampled exchanges.
    const bool capturing = srv_.deps_.pipeline != nullptr;
    scope_decided_ = false;
    in_scope_ = true;
    CapturedExchange ex;
    if (capturing) {
      ex.sampled = srv_.Sampled();
      ex.request.head.assign(cbuf_.view().substr(0, req.head_size));
      ex.request.time_unix_nano = started_wall;
      ex.method = std::string(req.method);
    }
    Tally req_tally{.wire = req.head_size,
                    .capture = capturing && ex.sampled ? &ex.request.body : nullptr,
                    .limit = srv_.capture_limit_};

    // Request facts needed after the buffer moves on.
    const std::string method(req.method);
    const bool is_head = method == "HEAD";
    const http::BodyKind req_body = req.body;
    const uint64_t req_length = req.content_length;
    const bool req_keep_alive = req.keep_alive;
    const bool expect_continue = req.expect_continue && req_body != http::BodyKind::kNone;
    const bool wants_upgrade = req.upgrade;
    upgrade_requested_ = wants_upgrade;
    const bool client_http10 = req.version_minor == 0;
    std::string& forward = forward_head_;  // reused: no allocation once it has grown
    ForwardRequestHead(forward, req, origin, authority,
                       req.form == http::RequestHead::TargetForm::kAbsolute);
    cbuf_.Consume(req.head_size);

    int status = 0;
    std::string error_kind;
    Outcome outcome = Outcome::kContinue;
    std::optional<http::ResponseHead> resp_head;
    Tally resp_tally{.capture = nullptr, .limit = srv_.capture_limit_};
    bool request_done = req_body == http::BodyKind::kNone;
    bool response_done = false;

    auto finish = [&](int final_status) {
      status = final_status;
      span.SetAttribute("http.response.status_code", static_cast<int64_t>(final_status));
    };

    // A pooled connection the upstream closed meanwhile fails at once; a request that can be
    // sent again safely (idempotent method, no body, nothing of the answer received) then
    // gets one more try on a new connection (RFC 9110 §9.2.2).
    const bool retryable = req_body == http::BodyKind::kNone &&
                           (method == "GET" || method == "HEAD" || method == "OPTIONS" ||
                            method == "TRACE" || method == "PUT" || method == "DELETE");
    for (int attempt = 0;; ++attempt) {
      // Upstream connection: pooled or new.
      std::string& key = upstream_key_;
      key.assign(upstream_tls ? "https://" : "http://").append(host).append(":");
      key.append(std::to_string(port));
      upstream_timed_out_ = false;
      // A retry never takes another pooled connection: it may be just as stale.
      up_ = attempt == 0 ? w_.pool.Take(key) : nullptr;
      if (!up_) {
        auto err = co_await ConnectUpstream(key, host, port, upstream_tls);
        if (err) {
          int code = err->first == UpstreamError::kTimeout ? 504 : 502;
          srv_.CountUpstreamError(err->first);
          error_kind = kUpstreamErrorNames[static_cast<size_t>(err->first)];
          span.SetStatus(tracing::StatusCode::kError, error_kind);
          span.SetAttribute("error.type", error_kind);
          finish(code);
          // The request body was not read: the connection cannot carry another request.
          bool keep = request_done && req_keep_alive;
          Arm(srv_.options_.client_io_timeout, Side::kClient);
          auto msg = ErrorResponse(code, error_kind, err->second, keep);
          co_await client_.Write(asio::buffer(msg));
          if (!keep) outcome = Outcome::kClose;
          break;
        }
      }

      // Scope, now that the upstream address is known.
      if (capturing) {
        bool in_scope = InScope(scheme, host, port, origin, url, up_->remote_ip, span);
        ex.sampled = ex.sampled && in_scope;
        if (!ex.sampled) req_tally.capture = nullptr;
      }

      // Send the head (plus whatever body bytes already arrived) and the body.
      PumpResult pr = co_await SendRequest(method, forward, req_body, req_length, expect_continue,
                                           &req_tally, &resp_head, &request_done);
      if (pr == PumpResult::kFromFailed) {  // the client went away mid-body
        error_kind = "client_closed";
        outcome = Outcome::kClose;
        break;
      }
      if (pr == PumpResult::kProtocol) {
        finish(400);
        co_await SendAndClose(ErrorResponse(400, "bad_request", "malformed chunked body", false));
        outcome = Outcome::kClose;
        break;
      }
      if (pr == PumpResult::kToFailed && !resp_head) {
        // Writing to the upstream failed; a reused connection may simply have gone stale.
        if (retryable && attempt == 0 && up_->reused && !upstream_timed_out_) {
          up_->conn.Close();
          continue;
        }
        UpstreamError e = upstream_timed_out_ ? UpstreamError::kTimeout : UpstreamError::kReset;
        co_await UpstreamFailed(e, "the upstream closed the connection while receiving the request",
                                request_done && req_keep_alive, &span, &error_kind, &outcome);
        finish(e == UpstreamError::kTimeout ? 504 : 502);
        break;
      }

      // The response head (after any interim responses).
      if (!resp_head) {
        auto got = co_await ReadFinalResponse(method, &resp_head, &resp_tally);
        if (!got && retryable && attempt == 0 && up_->reused && !upstream_timed_out_ &&
            !resp_protocol_error_ && up_->buf.empty() && resp_tally.wire == 0) {
          up_->conn.Close();
          continue;
        }
        if (!got && client_gone_) {
          error_kind = "client_closed";
          outcome = Outcome::kClose;
          break;
        }
        if (!got) {
          UpstreamError e = upstream_timed_out_ ? UpstreamError::kTimeout
                            : resp_protocol_error_ ? UpstreamError::kProtocol
                                                   : UpstreamError::kReset;
          std::string why = e == UpstreamError::kTimeout
                                ? "the upstream did not answer in time"
                                : e == UpstreamError::kProtocol
                                      ? oxg::Cat("malformed response from the upstream: ",
                                                 resp_error_reason_)
                                      : "the upstream closed the connection without answering";
          co_await UpstreamFailed(e, why, request_done && req_keep_alive, &span, &error_kind,
                                  &outcome);
          finish(e == UpstreamError::kTimeout ? 504 : 502);
          break;
        }
      }
      const http::ResponseHead& resp = *resp_head;
      finish(resp.status);
      if (capturing) {
        ex.response.emplace();
        ex.response->head.assign(up_->buf.view().substr(0, resp.head_size));
        ex.response->time_unix_nano =
            std::chrono::duration_cast<std::chrono::nanoseconds>(
                srv_.clock_.Now().time_since_epoch())
                .count();
        if (ex.sampled) resp_tally.capture = &ex.response->body;
      }
      resp_tally.wire += resp.head_size;

      const bool switching = resp.status == 101 && wants_upgrade;
      // An HTTP/1.0 client cannot read chunked framing (RFC 9112 §6.1): it gets the payload
      // alone, delimited by the end of the connection.
      const bool dechunk = client_http10 && !is_head && resp.body == http::BodyKind::kChunked;
      bool client_keep = req_keep_alive && request_done && resp.body != http::BodyKind::kUntilClose &&
                         !switching && !dechunk && !srv_.stopping_;
      std::string& head = response_head_;
      ForwardResponseHead(head, resp, client_keep, client_http10, switching,
                          dechunk ? http::BodyKind::kUntilClose : resp.body);
      http::BodyKind body = is_head ? http::BodyKind::kNone : resp.body;
      uint64_t length = resp.content_length;
      const bool upstream_keep = resp.keep_alive;
      up_->buf.Consume(resp.head_size);

      PumpResult rp = co_await Pump(up_->conn, up_->buf, Side::kUpstream, client_, Side::kClient,
                                    body, length, &resp_tally, head, dechunk);
      if (rp == PumpResult::kOk) response_done = true;
      if (rp == PumpResult::kToFailed) {
        error_kind = "client_closed";
        outcome = Outcome::kClose;
      } else if (rp == PumpResult::kFromFailed || rp == PumpResult::kProtocol) {
        if (body == http::BodyKind::kLength) {
          resp_tally.body = std::max(resp_tally.body, length);  // the body was cut short
        }
        UpstreamError e = upstream_timed_out_ ? UpstreamError::kTimeout
                          : rp == PumpResult::kProtocol ? UpstreamError::kProtocol
                                                        : UpstreamError::kReset;
        srv_.CountUpstreamError(e);
        error_kind = kUpstreamErrorNames[static_cast<size_t>(e)];
        span.SetStatus(tracing::StatusCode::kError, error_kind);
        outcome = Outcome::kClose;
      }

      if (switching && response_done) {
        // The handshake is the flow; the frames are relayed, not captured.
        FinishExchange(std::move(ex), capturing, method, scheme, host, port, origin, url, status,
                       status, started, req_tally, resp_tally, span);
        co_await Relay();
        co_return Outcome::kClose;
      }
      if (response_done && request_done && upstream_keep && up_->buf.empty() &&
          !srv_.stopping_) {
        w_.pool.Put(std::move(up_));
      }
      if (!client_keep) outcome = Outcome::kClose;
      break;
    }

    if (up_) {
      up_->conn.Close();
      up_.reset();
    }
    if (status >= 500 || !error_kind.empty()) {
      if (!error_kind.empty()) span.SetAttribute("error.type", error_kind);
    } else {
      span.SetStatus(tracing::StatusCode::kOk);
    }
    // Metrics say `error` when the client did not get a whole response; the history keeps
    // the status the client saw.
    if (!request_done && req_body == http::BodyKind::kLength) {
      req_tally.body = std::max(req_tally.body, req_length);  // the body was cut short
    }
    FinishExchange(std::move(ex), capturing, method, scheme, host, port, origin, url,
                   response_done || status >= 400 ? status : 0, status, started, req_tally,
                   resp_tally, span);
    co_return outcome;
  }

  // Answers a failed upstream step with 502/504 when nothing of the response went out yet.
  awaitable<void> UpstreamFailed(UpstreamError e, std::string_view why, bool keep,
                                 tracing::Span* span, std::string* error_kind, Outcome* outcome) {
    srv_.CountUpstreamError(e);
    *error_kind = kUpstreamErrorNames[static_cast<size_t>(e)];
    span->SetStatus(tracing::StatusCode::kError, *error_kind);
    int code = e == UpstreamError::kTimeout ? 504 : 502;
    Arm(srv_.options_.client_io_timeout, Side::kClient);
    auto msg = ErrorResponse(code, *error_kind, why, keep);
    auto [ec, n] = co_await client_.Write(asio::buffer(msg));
    if (ec || !keep) *outcome = Outcome::kClose;
  }

  void FinishExchange(CapturedExchange ex, bool capturing, const std::string& method,
                      const std::string& scheme, const std::string& host, uint16_t port,
                      const std::string& origin, std::string& url, int status,
                      int seen_status, Mono::time_point started, const Tally& req_tally,
                      const Tally& resp_tally, tracing::Span& span) {
    double seconds = std::chrono::duration<double>(Mono::now() - started).count();
    CountRequest(method, status, seconds, &span);
    if (capturing && !scope_decided_) InScope(scheme, host, port, origin, url, {}, span);
    if (!capturing || !in_scope_) {
      span.End();
      return;
    }
    ex.flow_id = NewUlid(srv_.clock_);
    ex.client_address = client_address_;
    ex.scheme = scheme == "wss" ? "https" : scheme == "ws" ? "http" : scheme;
    ex.url = std::move(url);  // the exchange's last use of it
    ex.status = seen_status;
    ex.duration_ms = seconds * 1000.0;
    ex.request.body_length = req_tally.body;
    ex.request.wire_bytes = req_tally.wire;
    if (ex.response) {
      ex.response->body_length = resp_tally.body;
      ex.response->wire_bytes = resp_tally.wire;
    }
    ex.capture_span = span.context();
    if (span.recording()) {
      span.SetAttribute("oxg.flow.id", ex.flow_id);
      span.SetAttribute("oxg.flow.sampled", ex.sampled);
      span.SetAttribute("oxg.flow.in_scope", true);
    }
    span.End();
    srv_.deps_.pipeline->Submit(std::move(ex));
  }

  bool InScope(const std::string& scheme, const std::string& host, uint16_t port,
               const std::string& origin, const std::string& url, const std::string& remote_ip,
               tracing::Span& span) {
    scope_decided_ = true;
    in_scope_ = true;
    if (srv_.options_.scope) {
      ScopeTarget t;
      t.scheme = scheme;
      t.host = host;
      t.port = port;
      t.path = origin.substr(0, origin.find_first_of("?#"));
      t.url = url;
      if (!remote_ip.empty()) t.resolved_ip = remote_ip;
      in_scope_ = srv_.options_.scope->Decide(t).in_scope;
    }
    if (!in_scope_ && span.recording()) span.SetAttribute("oxg.flow.in_scope", false);
    return in_scope_;
  }

  // Appends the end-to-end fields of a head: hop-by-hop fields dropped (those named in any
  // Connection field too), except Upgrade when `keep_upgrade`; framing restated so the next
  // hop cannot read the body differently: one `Content-Length: N` where the first stood for a
  // length-delimited body (a "5, 5" list collapses), none at all for chunked or close-delimited
  // bodies (then `Transfer-Encoding: chunked` is added back for chunked ones). Heads without a
  // body (HEAD, 304) keep their Content-Length as received. `host`, when
  // set, replaces the first Host field (or is added).
  static void AppendEndToEnd(std::string& out, const std::vector<http::Header>& headers,
                             bool keep_upgrade, http::BodyKind body, uint64_t length,
                             std::optional<std::string_view> host) {
    auto hop_by_hop = [&](std::string_view name) {
      if (keep_upgrade && http::EqualsIgnoreCase(name, "upgrade")) return false;
      bool named = false;
      for (const auto& c : headers) {
        if (http::EqualsIgnoreCase(c.name, "connection") && http::IsHopByHop(name, c.value)) {
          named = true;
          break;
        }
      }
      return named || http::IsHopByHop(name, {});
    };
    bool host_written = false;
    bool length_written = false;
    for (const auto& h : headers) {
      if (host && http::EqualsIgnoreCase(h.name, "host")) {
        if (host_written) continue;
        host_written = true;
        out.append(h.name).append(": ").append(*host).append("\r\n");
        continue;
      }
      if (http::EqualsIgnoreCase(h.name, "content-length")) {
        // Without a body (HEAD, 304) the field describes the representation: kept as is.
        if (body == http::BodyKind::kNone) {
          out.append(h.name).append(": ").append(h.value).append("\r\n");
          continue;
        }
        if (body != http::BodyKind::kLength || length_written) continue;
        length_written = true;
        out.append(h.name).append(": ").append(std::to_string(length)).append("\r\n");
        continue;
      }
      if (hop_by_hop(h.name)) continue;
      out.append(h.name).append(": ").append(h.value).append("\r\n");
    }
    if (host && !host_written) out.append("Host: ").append(*host).append("\r\n");
    if (body == http::BodyKind::kChunked) out.append("Transfer-Encoding: chunked\r\n");
  }

  // The head sent upstream: origin-form target, Host set to the target's authority for
  // absolute-form requests, end-to-end fields only.
  static void ForwardRequestHead(std::string& out, const http::RequestHead& req,
                                 std::string_view origin, std::string_view authority,
                                 bool replace_host) {
    out.clear();
    out.reserve(req.head_size + 64);
    out.append(req.method).append(" ").append(origin).append(" HTTP/1.1\r\n");
    std::string_view host = replace_host || req.host_header.empty() ? authority : req.host_header;
    AppendEndToEnd(out, req.headers, req.upgrade, req.body, req.content_length, host);
    if (req.upgrade) out.append("Connection: Upgrade\r\n");
    out.append("\r\n");
  }

  static std::string ForwardResponseHead(const http::ResponseHead& resp, bool keep_alive,
                                         bool client_http10, bool switching) {
    std::string out;
    ForwardResponseHead(out, resp, keep_alive, client_http10, switching, resp.body);
    return out;
  }
  // `framing` is how the body goes to the client (the upstream's, or kUntilClose when the
  // proxy removes chunked framing for an HTTP/1.0 client).
  static void ForwardResponseHead(std::string& out, const http::ResponseHead& resp,
                                  bool keep_alive, bool client_http10, bool switching,
                                  http::BodyKind framing) {
    out.clear();
    out.reserve(resp.head_size + 64);
    out.append("HTTP/1.1 ").append(std::to_string(resp.status)).append(" ").append(resp.reason);
    out.append("\r\n");
    AppendEndToEnd(out, resp.headers, switching, framing, resp.content_length, std::nullopt);
    if (switching) {
      out.append("Connection: Upgrade\r\n");
    } else if (!keep_alive) {
      out.append("Connection: close\r\n");
    } else if (client_http10) {
      out.append("Connection: keep-alive\r\n");
    }
    out.append("\r\n");
  }

  // --- upstream --------------------------------------------------------------------------------
  // Connects (and for https, handshakes) a new upstream into up_. On failure returns the reason
  // and a message for the client.
  awaitable<std::optional<std::pair<UpstreamError, std::string>>> ConnectUpstream(
      const std::string& key, const std::string& host, uint16_t port, bool use_tls) {
    using Failure = std::optional<std::pair<UpstreamError, std::string>>;
    up_ = std::make_unique<Upstream>(w_.ioc.get_executor(), key);
    upstream_timed_out_ = false;
    std::vector<tcp::endpoint> endpoints;
    error_code ec;
    auto literal = asio::ip::make_address(host, ec);
    if (!ec) {
      endpoints.emplace_back(literal, port);
    } else {
      resolver_.emplace(w_.ioc);
      Arm(srv_.options_.upstream_timeout, Side::kUpstream);
      auto [rec, results] = co_await resolver_->async_resolve(host, std::to_string(port), kTuple);
      resolver_.reset();
      if (upstream_timed_out_) {
        co_return Failure({UpstreamError::kTimeout,
                           oxg::Cat("resolving ", host, " timed out")});
      }
      if (rec) {
        co_return Failure({UpstreamError::kConnect,
                           oxg::Cat("cannot resolve ", host, ": ", rec.message())});
      }
      for (const auto& r : results) endpoints.push_back(r.endpoint());
    }
    Arm(srv_.options_.upstream_timeout, Side::kUpstream);
    auto [cec, ep] = co_await asio::async_connect(up_->conn.sock, endpoints, kTuple);
    if (cec) {
      if (upstream_timed_out_) {
        co_return Failure({UpstreamError::kTimeout,
                           oxg::Cat("connecting to ", host, ":", std::to_string(port),
                                    " timed out")});
      }
      co_return Failure({UpstreamError::kConnect,
                         oxg::Cat("cannot connect to ", host, ":", std::to_string(port), ": ",
                                  cec.message())});
    }
    up_->conn.sock.set_option(tcp::no_delay(true), ec);
    up_->remote_ip = Unmapped(ep.address()).to_string();
    if (!use_tls) co_return std::nullopt;

    up_->conn.tls = std::make_unique<TlsStream>(up_->conn.sock, srv_.client_tls_);
    SSL* ssl = up_->conn.tls->native_handle();
    bool is_ip = IsIpLiteral(host);
    if (!is_ip) SSL_set_tlsext_host_name(ssl, host.c_str());
    if (!srv_.options_.upstream_insecure_skip_verify) {
      SSL_set_verify(ssl, SSL_VERIFY_PEER, nullptr);
      X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
      if (is_ip) {
        X509_VERIFY_PARAM_set1_ip_asc(param, host.c_str());
      } else {
        X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        X509_VERIFY_PARAM_set1_host(param, host.c_str(), host.size());
      }
    }
    Arm(srv_.options_.upstream_timeout, Side::kUpstream);
    auto [hec] = co_await up_->conn.tls->async_handshake(ssl::stream_base::client, kTuple);
    if (hec) {
      if (upstream_timed_out_) {
        co_return Failure({UpstreamError::kTimeout, oxg::Cat("TLS handshake with ", host,
                                                             " timed out")});
      }
      std::string why = hec.message();
      long verify = SSL_get_verify_result(ssl);
      if (verify != X509_V_OK) why = X509_verify_cert_error_string(verify);
      ERR_clear_error();
      co_return Failure({UpstreamError::kTls,
                         oxg::Cat("TLS with ", host, ":", std::to_string(port), " failed: ", why)});
    }
    co_return std::nullopt;
  }

  // Sends the request head and body upstream. With Expect: 100-continue the body waits for the
  // upstream's 100 (at most kExpectWait); a final answer instead ends up in *early_response.
  awaitable<PumpResult> SendRequest(const std::string& method, const std::string& head,
                                    http::BodyKind body, uint64_t length,
                                    bool expect_continue, Tally* tally,
                                    std::optional<http::ResponseHead>* early_response,
                                    bool* request_done) {
    if (!expect_continue) {
      PumpResult r = co_await Pump(client_, cbuf_, Side::kClient, up_->conn, Side::kUpstream, body,
                                   length, tally, head);
      if (r == PumpResult::kOk) *request_done = true;
      co_return r;
    }
    Arm(srv_.options_.upstream_timeout, Side::kUpstream);
    auto [ec, n] = co_await up_->conn.Write(asio::buffer(head));
    if (ec) co_return PumpResult::kToFailed;
    // Wait briefly for the upstream's interim or final answer.
    expect_timed_out_ = false;
    for (;;) {
      size_t scanned = 0;
      bool complete = HeadComplete(up_->buf.view(), 0);
      while (!complete) {
        auto [space, len] = up_->buf.Prepare(srv_.limits_.max_head_bytes + 4096);
        if (len == 0) break;
        Arm(kExpectWait, Side::kExpect);
        auto [rec, rn] = co_await up_->conn.ReadSome(space, len);
        if (rec) {
          if (expect_timed_out_) break;  // no answer yet: send the body anyway
          co_return PumpResult::kToFailed;
        }
        up_->buf.Commit(rn);
        complete = HeadComplete(up_->buf.view(), scanned);
        scanned = up_->buf.size();
      }
      if (!complete) break;
      http::ResponseHead resp;
      http::ParseError perr;
      if (http::ParseResponseHead(up_->buf.view(), method, srv_.limits_, &resp, &perr) !=
          http::ParseStatus::kComplete) {
        co_return PumpResult::kToFailed;
      }
      if (resp.status >= 200) {
        // A final answer before the body: the body is never sent, the client connection closes.
        *early_response = std::move(resp);
        co_return PumpResult::kOk;
      }
      // An interim response: pass it on; after the 100 the body goes, after others keep waiting.
      if (!co_await RelayInterim(resp, nullptr)) co_return PumpResult::kFromFailed;
      if (resp.status == 100) break;
    }
    PumpResult r = co_await Pump(client_, cbuf_, Side::kClient, up_->conn, Side::kUpstream, body,
                                 length, tally, {});
    if (r == PumpResult::kOk) *request_done = true;
    co_return r;
  }

  // Passes an interim (1xx) response on to the client and drops it from the upstream buffer.
  // False when the client is gone.
  awaitable<bool> RelayInterim(const http::ResponseHead& resp, Tally* tally) {
    std::string interim = ForwardResponseHead(resp, true, false, false);
    if (tally != nullptr) tally->wire += resp.head_size;
    up_->buf.Consume(resp.head_size);
    Arm(srv_.options_.client_io_timeout, Side::kClient);
    auto [ec, n] = co_await client_.Write(asio::buffer(interim));
    if (ec) client_gone_ = true;  // the client's fault, not the upstream's
    co_return !ec;
  }

  // Reads responses until a final one (2xx-5xx, or 101), passing interim ones to the client.
  awaitable<bool> ReadFinalResponse(const std::string& method,
                                    std::optional<http::ResponseHead>* out, Tally* tally) {
    resp_protocol_error_ = false;
    client_gone_ = false;
    for (;;) {
      bool got_bytes = false;
      bool ok = co_await ReadHead(up_->conn, up_->buf, Side::kUpstream,
                                  srv_.options_.upstream_timeout, &got_bytes);
      if (!ok) {
        if (got_bytes && !upstream_timed_out_) {
          // Bytes came, then the upstream closed: what it sent was not a response.
          http::ResponseHead partial;
          http::ParseError perr;
          auto st = http::ParseResponseHead(up_->buf.view(), method, srv_.limits_, &partial,
                                            &perr);
          resp_protocol_error_ = true;
          resp_error_reason_ = st == http::ParseStatus::kError ? perr.reason
                                                                : "response head cut short";
        }
        co_return false;
      }
      http::ResponseHead resp;
      http::ParseError perr;
      auto st = http::ParseResponseHead(up_->buf.view(), method, srv_.limits_, &resp, &perr);
      if (st != http::ParseStatus::kComplete) {
        resp_protocol_error_ = true;
        resp_error_reason_ = st == http::ParseStatus::kError ? perr.reason : "head too large";
        co_return false;
      }
      if (resp.status == 101 && !upgrade_requested_) {
        // Switching protocols nobody asked for: the connection is no longer HTTP.
        resp_protocol_error_ = true;
        resp_error_reason_ = "101 Switching Protocols without an upgrade request";
        co_return false;
      }
      if (resp.status >= 200 || resp.status == 101) {
        *out = std::move(resp);
        co_return true;
      }
      if (!co_await RelayInterim(resp, tally)) co_return false;
    }
  }

  // Moves one message body from `from` to `to`, `prefix` (a head) written first together with
  // the first body bytes. Bytes after the body stay in `buf`.
  awaitable<PumpResult> Pump(Conn& from, internal::ReadBuffer& buf, Side from_side, Conn& to,
                             Side to_side, http::BodyKind kind, uint64_t length, Tally* tally,
                             std::string_view prefix, bool dechunk = false) {
    http::ChunkedDecoder chunked;
    uint64_t left = kind == http::BodyKind::kLength ? length : 0;
    bool done = kind == http::BodyKind::kNone || (kind == http::BodyKind::kLength && left == 0);
    for (;;) {
      // How much of the buffer belongs to this body.
      size_t take = 0;
      bool finished_now = false;
      if (!done && !buf.empty()) {
        std::string_view avail = buf.view();
        switch (kind) {
          case http::BodyKind::kLength:
            take = static_cast<size_t>(std::min<uint64_t>(left, avail.size()));
            tally->Payload(avail.substr(0, take));
            left -= take;
            finished_now = left == 0;
            break;
          case http::BodyKind::kChunked: {
            dechunked_.clear();
            auto r = chunked.Feed(avail, &take, [&](std::string_view piece) {
              tally->Payload(piece);
              if (dechunk) dechunked_.append(piece);
            });
            if (r == http::ChunkedDecoder::Result::kError) co_return PumpResult::kProtocol;
            finished_now = r == http::ChunkedDecoder::Result::kDone;
            break;
          }
          case http::BodyKind::kUntilClose:
            take = avail.size();
            tally->Payload(avail);
            break;
          case http::BodyKind::kNone:
            break;
        }
      }
      if (take > 0 || !prefix.empty()) {
        tally->wire += take;
        Arm(IoTimeout(to_side), to_side);
        std::array<asio::const_buffer, 2> out = {
            asio::buffer(prefix),
            dechunk ? asio::const_buffer(dechunked_.data(), dechunked_.size())
                    : asio::const_buffer(buf.view().data(), take)};
        auto [ec, n] = co_await to.Write(out);
        if (ec) co_return PumpResult::kToFailed;
        buf.Consume(take);
        prefix = {};
      }
      if (finished_now) done = true;
      if (done) co_return PumpResult::kOk;
      // Read more of the body.
      auto [space, len] = buf.Prepare(kBodyBuffer);
      Arm(IoTimeout(from_side), from_side);
      auto [ec, n] = co_await from.ReadSome(space, len);
      if (ec || n == 0) {
        if (kind == http::BodyKind::kUntilClose &&
            (ec == asio::error::eof || ec == ssl::error::stream_truncated || n == 0) &&
            !upstream_timed_out_) {
          co_return PumpResult::kOk;
        }
        co_return PumpResult::kFromFailed;
      }
      buf.Commit(n);
    }
  }

  // --- CONNECT ---------------------------------------------------------------------------------
  awaitable<void> Connect(http::RequestHead& req) {
    const auto started = Mono::now();
    tunnel_host_ = LowerAscii(req.host);
    tunnel_port_ = req.port;
    const bool keep_in_buffer = cbuf_.size() > req.head_size;
    cbuf_.Consume(req.head_size);
    static constexpr std::string_view kEstablished =
        "HTTP/1.1 200 Connection Established\r\n\r\n";
    Arm(srv_.options_.client_io_timeout, Side::kClient);
    auto [ec, n] = co_await client_.Write(asio::buffer(kEstablished));
    CountRequest("CONNECT", ec ? 0 : 200, std::chrono::duration<double>(Mono::now() - started).count());
    if (ec) co_return;

    // What does the client speak inside the tunnel? Peek at its first byte.
    unsigned char first = 0;
    if (keep_in_buffer) {
      first = static_cast<unsigned char>(cbuf_.view()[0]);
    } else {
      Arm(srv_.options_.client_idle_timeout, Side::kClient);
      auto [wec] = co_await client_.sock.async_wait(tcp::socket::wait_read, kTuple);
      if (wec) co_return;
      ssize_t got = ::recv(client_.sock.native_handle(), &first, 1, MSG_PEEK | MSG_DONTWAIT);
      if (got <= 0) co_return;
    }
    in_tunnel_ = true;
    if (first == 0x16 && srv_.deps_.minter != nullptr && !keep_in_buffer) {
      // TLS: intercept with a leaf for the SNI name (or the CONNECT host).
      client_.tls = std::make_unique<TlsStream>(client_.sock, srv_.server_tls_);
      SniState sni{.minter = srv_.deps_.minter, .connect_host = tunnel_host_, .error = {}};
      SSL_set_ex_data(client_.tls->native_handle(), SniStateIndex(), &sni);
      Arm(srv_.options_.client_io_timeout, Side::kClient);
      auto [hec] = co_await client_.tls->async_handshake(ssl::stream_base::server, kTuple);
      SSL_set_ex_data(client_.tls->native_handle(), SniStateIndex(), nullptr);
      ERR_clear_error();
      if (hec) {
        if (!sni.error.empty()) {
          log::Warn("proxy", oxg::Cat("cannot mint a certificate for ", tunnel_host_, ": ",
                                      sni.error));
        }
        co_return;  // clients that do not trust the CA end up here
      }
      tunnel_scheme_ = "https";
      co_await Serve();
      co_return;
    }
    if (first >= 'A' && first <= 'Z') {
      // Plain HTTP inside the tunnel (e.g. ws:// through CONNECT): serve it as such.
      tunnel_scheme_ = "http";
      co_await Serve();
      co_return;
    }
    // Anything else (or TLS without interception): relay the bytes blindly.
    std::string key = oxg::Cat("tcp://", tunnel_host_, ":", std::to_string(tunnel_port_));
    auto err = co_await ConnectUpstream(key, tunnel_host_, tunnel_port_, false);
    if (err) {
      srv_.CountUpstreamError(err->first);
      co_return;
    }
    co_await Relay();
  }

  // --- byte relay (WebSocket after 101, blind tunnels) -------------------------------------------
  awaitable<void> Relay() {
    using namespace asio::experimental::awaitable_operators;
    // Bytes already buffered on either side go first.
    if (!up_->buf.empty()) {
      Arm(srv_.options_.client_io_timeout, Side::kBoth);
      auto [ec, n] = co_await client_.Write(asio::buffer(up_->buf.view().data(), up_->buf.size()));
      if (ec) co_return;
      up_->buf.Consume(up_->buf.size());
    }
    if (!cbuf_.empty()) {
      Arm(srv_.options_.upstream_timeout, Side::kBoth);
      auto [ec, n] = co_await up_->conn.Write(asio::buffer(cbuf_.view().data(), cbuf_.size()));
      if (ec) co_return;
      cbuf_.Consume(cbuf_.size());
    }
    Arm(srv_.options_.client_idle_timeout, Side::kBoth);
    co_await (Forward(client_, up_->conn, cbuf_) || Forward(up_->conn, client_, up_->buf));
  }

  awaitable<void> Forward(Conn& from, Conn& to, internal::ReadBuffer& buf) {
    for (;;) {
      auto [space, len] = buf.Prepare(kBodyBuffer);
      auto [ec, n] = co_await from.ReadSome(space, len);
      if (ec || n == 0) co_return;
      Arm(srv_.options_.client_idle_timeout, Side::kBoth);
      auto [wec, wn] = co_await to.Write(asio::buffer(space, n));
      if (wec) co_return;
    }
  }

  ProxyServer::Impl& srv_;
  Worker& w_;
  Conn client_;
  internal::ReadBuffer cbuf_;
  std::unique_ptr<Upstream> up_;
  std::string client_address_;
  // Per-exchange scratch kept for its capacity.
  std::string forward_head_;
  std::string response_head_;
  std::string upstream_key_;
  std::string dechunked_;  // payload of chunked bytes, for HTTP/1.0 clients

  std::optional<tcp::resolver> resolver_;  // while a name is being resolved
  asio::steady_timer timer_;
  Mono::time_point deadline_ = Mono::time_point::max();
  Side waiting_ = Side::kClient;
  bool closed_ = false;
  bool upstream_timed_out_ = false;
  bool expect_timed_out_ = false;
  bool resp_protocol_error_ = false;
  bool upgrade_requested_ = false;  // the current request asked for an Upgrade
  bool client_gone_ = false;        // a write to the client failed while reading the answer
  std::string_view resp_error_reason_;
  bool in_scope_ = true;       // of the current exchange
  bool scope_decided_ = false;  // in_scope_ was decided for the current exchange

  bool in_tunnel_ = false;
  std::string tunnel_scheme_;
  std::string tunnel_host_;
  uint16_t tunnel_port_ = 0;
};

}  // namespace

// ---------------------------------------------------------------------------------------------

absl::Status ProxyServer::Impl::Init() {
  // TLS contexts: the server side switches to a minted leaf in the SNI callback; the client
  // side verifies upstreams against the system store (plus an optional extra file).
  SSL_CTX* sctx = server_tls_.native_handle();
  SSL_CTX_set_min_proto_version(sctx, TLS1_2_VERSION);
  SSL_CTX_set_tlsext_servername_callback(sctx, OnServerName);
  SSL_CTX_set_alpn_select_cb(sctx, OnAlpnSelect, nullptr);
  SSL_CTX_set_session_cache_mode(sctx, SSL_SESS_CACHE_OFF);
  SniStateIndex();

  SSL_CTX* cctx = client_tls_.native_handle();
  SSL_CTX_set_min_proto_version(cctx, TLS1_2_VERSION);
  static const unsigned char kAlpn[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
  SSL_CTX_set_alpn_protos(cctx, kAlpn, sizeof(kAlpn));
  if (SSL_CTX_set_default_verify_paths(cctx) != 1) ERR_clear_error();
  if (!options_.upstream_ca_file.empty() &&
      SSL_CTX_load_verify_locations(cctx, options_.upstream_ca_file.c_str(), nullptr) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(
        oxg::Cat(options_.upstream_ca_file, ": cannot load CA certificates"));
  }

  int n = std::max(1, options_.workers);
  for (int i = 0; i < n; ++i) {
    workers_.push_back(std::make_unique<Worker>(options_.upstream_idle_per_host));
  }
  // One listener (so a busy port is an error, never a silent share); accepted sockets are
  // handed to the workers in turn.
  error_code ec;
  auto addr = asio::ip::make_address(options_.listen.host.empty() ? "0.0.0.0"
                                                                  : options_.listen.host,
                                     ec);
  if (ec) {
    return absl::InvalidArgumentError(
        oxg::Cat(options_.listen.host, ": not an IP address (", ec.message(), ")"));
  }
  tcp::endpoint ep(addr, options_.listen.port);
  acceptor_ = std::make_unique<tcp::acceptor>(workers_[0]->ioc);
  acceptor_->open(ep.protocol(), ec);
  if (!ec) acceptor_->set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) acceptor_->bind(ep, ec);
  if (!ec) acceptor_->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return absl::UnavailableError(
        oxg::Cat("cannot listen on ", FormatEndpoint(ep), ": ", ec.message()));
  }
  port_ = acceptor_->local_endpoint().port();
  return absl::OkStatus();
}

awaitable<void> ProxyServer::Impl::Accept() {
  asio::steady_timer backoff(workers_[0]->ioc);
  for (;;) {
    Worker& w = *workers_[next_worker_];
    next_worker_ = (next_worker_ + 1) % workers_.size();
    auto [ec, accepted] = co_await acceptor_->async_accept(w.ioc, kTuple);
    tcp::socket socket(std::move(accepted));
    if (ec) {
      if (ec == asio::error::operation_aborted || !acceptor_->is_open()) co_return;
      // Out of descriptors or similar: wait a little instead of spinning.
      backoff.expires_after(std::chrono::milliseconds(100));
      co_await backoff.async_wait(kTuple);
      continue;
    }
    if (live_.load() >= options_.max_connections || stopping_) {
      error_code ignored;
      socket.close(ignored);
      continue;
    }
    asio::post(w.ioc, [this, &w, s = std::move(socket)]() mutable {
      if (stopping_) return;  // the socket closes with the lambda
      Session::Launch(*this, w, std::move(s));
    });
  }
}

void ProxyServer::Impl::ScheduleSweep(Worker& w) {
  w.sweep.expires_after(std::chrono::seconds(15));
  w.sweep.async_wait([this, &w](error_code ec) {
    if (ec) return;
    w.pool.Sweep();
    ScheduleSweep(w);
  });
}

void ProxyServer::Impl::Run() {
  asio::co_spawn(workers_[0]->ioc, Accept(), asio::detached);
  for (auto& w : workers_) {
    ScheduleSweep(*w);
    Worker* wp = w.get();
    wp->thread = std::thread([wp] {
      auto guard = asio::make_work_guard(wp->ioc);
      wp->ioc.run();
    });
  }
}

void ProxyServer::Impl::Stop() {
  if (stopped_) return;
  stopped_ = true;
  stopping_ = true;
  // Stop accepting and close every connection on its own thread.
  asio::post(workers_[0]->ioc, [this] {
    error_code ec;
    acceptor_->close(ec);
  });
  for (auto& w : workers_) {
    Worker* wp = w.get();
    asio::post(wp->ioc, [wp] {
      for (Session* s : std::vector<Session*>(wp->sessions.begin(), wp->sessions.end())) {
        s->Abort();
      }
      wp->pool.Clear();
      wp->sweep.cancel();
    });
  }
  {
    std::unique_lock lock(live_mu_);
    live_cv_.wait_for(lock, std::chrono::seconds(3), [this] { return live_.load() == 0; });
  }
  for (auto& w : workers_) w->ioc.stop();
  for (auto& w : workers_) {
    if (w->thread.joinable()) w->thread.join();
  }
  // Coroutines still suspended are destroyed with their io_context (sessions end there).
  acceptor_.reset();
  workers_.clear();
}

// ---------------------------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<ProxyServer>> ProxyServer::Start(ProxyOptions options,
                                                                ProxyDeps deps) {
  if (deps.registry == nullptr) return absl::InvalidArgumentError("proxy: no metrics registry");
  auto impl = std::make_unique<Impl>(std::move(options), deps);
  OXG_RETURN_IF_ERROR(impl->Init());
  impl->Run();
  if (deps.audit != nullptr) {
    audit::AuditEvent e;
    e.component = "proxy";
    e.event_type = audit::EventType::kProxyLifecycle;
    e.decision = audit::Decision::kInfo;
    e.reason = "started";
    e.metadata = {{"listen", oxg::Cat(impl->options_.listen.host, ":",
                                      std::to_string(impl->port()))},
                  {"workers", std::to_string(std::max(1, impl->options_.workers))},
                  {"interception", deps.minter != nullptr ? "on" : "off"},
                  {"flow_sample_rate", std::to_string(impl->options_.flow_sample_rate)}};
    deps.audit->Write(e);
  }
  return std::unique_ptr<ProxyServer>(new ProxyServer(std::move(impl)));
}

ProxyServer::ProxyServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

ProxyServer::~ProxyServer() { Stop(); }

uint16_t ProxyServer::port() const { return impl_->port(); }

void ProxyServer::Stop() {
  if (!impl_ || impl_->stopping_) return;
  impl_->Stop();
  if (impl_->deps_.audit != nullptr) {
    audit::AuditEvent e;
    e.component = "proxy";
    e.event_type = audit::EventType::kProxyLifecycle;
    e.decision = audit::Decision::kInfo;
    e.reason = "stopped";
    impl_->deps_.audit->Write(e);
  }
}

}  // namespace oxg::proxy
