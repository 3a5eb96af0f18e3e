// The metrics HTTP endpoint on Beast. One I/O thread owns the listener and every connection;
// scrapes render the registry on that thread, so nothing here touches a data-path thread.

#include "telemetry/metrics/metrics_server.h"

#include <zlib.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ip/v6_only.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <thread>

#include "common/log.h"
#include "telemetry/metrics/negotiate.h"

namespace oxg::metrics {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

constexpr size_t kHeaderLimit = 8 * 1024;
constexpr size_t kBodyLimit = 4 * 1024;  // nothing here takes a body; small ones are tolerated
// A request must arrive within 10 s of connecting or of the previous answer, so idle
// connections cannot hold the connection budget for long; answers get 30 s to be written.
constexpr auto kReadTimeout = std::chrono::seconds(10);
constexpr auto kWriteTimeout = std::chrono::seconds(30);
constexpr size_t kMaxConnections = 256;

// gzip (RFC 1952) of `in`; empty on failure.
std::string Gzip(std::string_view in) {
  z_stream zs{};
  if (deflateInit2(&zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) !=
      Z_OK) {
    return {};
  }
  std::string out;
  out.resize(deflateBound(&zs, in.size()));
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  zs.avail_in = static_cast<uInt>(in.size());
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = static_cast<uInt>(out.size());
  const int rc = deflate(&zs, Z_FINISH);
  const size_t produced = zs.total_out;
  deflateEnd(&zs);
  if (rc != Z_STREAM_END) return {};
  out.resize(produced);
  return out;
}

struct Shared {
  const Registry& registry;
  ServerOptions options;
  std::atomic<size_t> connections{0};
};

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, Shared& shared) : stream_(std::move(socket)), shared_(shared) {
    shared_.connections.fetch_add(1, std::memory_order_relaxed);
  }
  ~Session() { shared_.connections.fetch_sub(1, std::memory_order_relaxed); }

  void Start() { Read(); }

 private:
  void Read() {
    parser_.emplace();
    parser_->header_limit(kHeaderLimit);
    parser_->body_limit(kBodyLimit);
    stream_.expires_after(kReadTimeout);
    http::async_read(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, size_t) { self->OnRead(ec); });
  }

  void OnRead(beast::error_code ec) {
    if (ec == http::error::end_of_stream || ec == beast::error::timeout ||
        ec == asio::error::operation_aborted || ec == asio::error::connection_reset) {
      return Close();
    }
    if (ec == http::error::header_limit) return Reply(Error(431, "request header too large\n"));
    if (ec == http::error::body_limit) return Reply(Error(413, "request body too large\n"));
    if (ec) return Reply(Error(400, "malformed request\n"));
    // Nothing thrown while answering (a failing callback, memory exhaustion) may escape into
    // io_context::run, which would end the process.
    try {
      Reply(Handle(parser_->get()));
    } catch (const std::exception& e) {
      log::Error("metrics", std::string("failed to answer a request: ") + e.what());
      Reply(Error(500, "internal error\n"));
    }
  }

  http::response<http::string_body> Error(unsigned status, std::string_view body) {
    http::response<http::string_body> res{static_cast<http::status>(status), 11};
    res.set(http::field::content_type, "text/plain; charset=utf-8");
    res.body() = body;
    res.keep_alive(false);
    res.prepare_payload();
    return res;
  }

  http::response<http::string_body> Handle(const http::request<http::string_body>& req) {
    const bool head = req.method() == http::verb::head;
    if (req.method() != http::verb::get && !head) {
      auto res = Error(405, "only GET and HEAD are served here\n");
      res.set(http::field::allow, "GET, HEAD");
      res.keep_alive(req.keep_alive());
      return res;
    }
    std::string_view target = req.target();
    if (const size_t q = target.find('?'); q != std::string_view::npos)
      target = target.substr(0, q);

    http::response<http::string_body> res{http::status::ok, req.version()};
    res.keep_alive(req.keep_alive());
    res.set(http::field::cache_control, "no-store");
    if (target == "/metrics") {
      const Format format = NegotiateFormat(req[http::field::accept]);
      ExpositionOptions opts{format, shared_.options.legacy_aliases};
      std::string body = shared_.registry.Scrape(opts);
      res.set(http::field::content_type, ContentType(format));
      res.set(http::field::vary, "Accept, Accept-Encoding");
      if (AcceptsGzip(req[http::field::accept_encoding])) {
        if (std::string gz = Gzip(body); !gz.empty()) {
          body = std::move(gz);
          res.set(http::field::content_encoding, "gzip");
        }
      }
      res.body() = std::move(body);
    } else if (target == "/healthz" || target == "/readyz") {
      const auto& check = target == "/healthz" ? shared_.options.healthy : shared_.options.ready;
      const bool ok = !check || check();
      res.result(ok ? http::status::ok : http::status::service_unavailable);
      res.set(http::field::content_type, "text/plain; charset=utf-8");
      res.body() = ok ? "ok\n" : (target == "/healthz" ? "unhealthy\n" : "not ready\n");
    } else if (target == "/") {
      res.set(http::field::content_type, "text/plain; charset=utf-8");
      res.body() = "0xgend metrics endpoint: /metrics /healthz /readyz\n";
    } else {
      auto err = Error(404, "not found; try /metrics\n");
      err.keep_alive(req.keep_alive());
      return err;
    }
    res.prepare_payload();
    if (head) res.body().clear();  // keeps the Content-Length of the GET answer
    return res;
  }

  void Reply(http::response<http::string_body> res) {
    response_ = std::move(res);
    stream_.expires_after(kWriteTimeout);
    http::async_write(stream_, response_,
                      [self = shared_from_this()](beast::error_code ec, size_t) {
                        if (ec || !self->response_.keep_alive()) return self->Close();
                        self->Read();
                      });
  }

  void Close() {
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    stream_.close();
  }

  beast::tcp_stream stream_;
  Shared& shared_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  http::response<http::string_body> response_;
};

class ServerImpl final : public MetricsServer {
 public:
  ServerImpl(const Registry& registry, ServerOptions options)
      : shared_{registry, std::move(options)}, acceptor_(ioc_) {}

  ~ServerImpl() override { Stop(); }

  absl::Status Listen() {
    const HostPort& addr = shared_.options.address;
    beast::error_code ec;
    tcp::endpoint endpoint;
    if (addr.host.empty()) {
      endpoint = tcp::endpoint(asio::ip::address_v6::any(), addr.port);
    } else {
      tcp::resolver resolver(ioc_);
      auto results = resolver.resolve(addr.host, std::to_string(addr.port),
                                      tcp::resolver::numeric_service, ec);
      if (ec || results.empty()) {
        return absl::InvalidArgumentError("cannot resolve metrics address " + addr.ToString() +
                                          ": " + ec.message());
      }
      endpoint = results.begin()->endpoint();
    }
    if (!Open(endpoint, ec) && addr.host.empty()) {
      // No IPv6 on this host: every IPv4 interface instead.
      endpoint = tcp::endpoint(asio::ip::address_v4::any(), addr.port);
      acceptor_.close(ec);
      Open(endpoint, ec);
    }
    if (ec) {
      return absl::UnavailableError("cannot listen on " + addr.ToString() +
                                    " for metrics: " + ec.message());
    }
    const tcp::endpoint local = acceptor_.local_endpoint(ec);
    bound_.host = addr.host.empty() ? std::string() : local.address().to_string();
    bound_.port = local.port();
    Accept();
    thread_ = std::thread([this] { ioc_.run(); });
    return absl::OkStatus();
  }

  HostPort bound_address() const override { return bound_; }

  void Stop() override {
    std::call_once(stopped_, [this] {
      asio::post(ioc_, [this] {
        beast::error_code ignored;
        acceptor_.close(ignored);
        retry_timer_.cancel();
      });
      ioc_.stop();
      if (thread_.joinable()) thread_.join();
    });
  }

 private:
  bool Open(const tcp::endpoint& endpoint, beast::error_code& ec) {
    acceptor_.open(endpoint.protocol(), ec);
    if (ec) return false;
    acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
    if (endpoint.address().is_v6()) acceptor_.set_option(asio::ip::v6_only(false), ec);
    acceptor_.bind(endpoint, ec);
    if (ec) return false;
    acceptor_.listen(asio::socket_base::max_listen_connections, ec);
    return !ec;
  }

  void Accept() {
    acceptor_.async_accept(
        asio::make_strand(ioc_), [this](beast::error_code ec, tcp::socket socket) {
          if (ec == asio::error::operation_aborted) return;
          if (ec) return AcceptFailed(ec);
          accept_backoff_ = std::chrono::milliseconds(0);
          if (shared_.connections.load(std::memory_order_relaxed) >= kMaxConnections) {
            beast::error_code ignored;
            socket.close(ignored);  // shed load rather than grow without bound
          } else {
            std::make_shared<Session>(std::move(socket), shared_)->Start();
          }
          Accept();
        });
  }

  // Out of descriptors (EMFILE) the listener stays readable, so retrying at once would spin.
  // Back off from 50 ms up to 1 s and log once per streak of failures.
  void AcceptFailed(beast::error_code ec) {
    if (accept_backoff_.count() == 0) {
      log::Warn("metrics", "accept failed: " + ec.message() + "; retrying with backoff");
      accept_backoff_ = std::chrono::milliseconds(50);
    } else {
      accept_backoff_ = std::min(accept_backoff_ * 2, std::chrono::milliseconds(1000));
    }
    retry_timer_.expires_after(accept_backoff_);
    retry_timer_.async_wait([this](beast::error_code wait_ec) {
      if (!wait_ec) Accept();
    });
  }

  Shared shared_;
  asio::io_context ioc_{1};
  tcp::acceptor acceptor_;
  asio::steady_timer retry_timer_{ioc_};
  std::chrono::milliseconds accept_backoff_{0};
  HostPort bound_;
  std::thread thread_;
  std::once_flag stopped_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(const Registry& registry,
                                                                    ServerOptions options) {
  auto server = std::make_unique<ServerImpl>(registry, std::move(options));
  OXG_RETURN_IF_ERROR(server->Listen());
  return std::unique_ptr<MetricsServer>(std::move(server));
}

}  // namespace oxg::metrics
