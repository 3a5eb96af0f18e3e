#include "telemetry/tracing/otlp_http_exporter.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zlib.h>

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <ctime>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "common/log.h"
#include "opentelemetry/proto/collector/trace/v1/trace_service.pb.h"
#include "telemetry/metrics/metrics.h"

namespace oxg::tracing {
namespace {

using std::chrono::milliseconds;
using std::chrono::nanoseconds;
using std::chrono::seconds;
using Action = RetryDecision::Action;

// ---- DecideRetry / ParseRetryAfter --------------------------------------------------------

// SimulatedClock's default start: Tue, 14 Nov 2023 22:13:20 GMT.
const Clock::WallTime kNow = Clock::WallTime(seconds(1700000000));

AttemptResult Status(long code, std::string retry_after = "") {
  AttemptResult r;
  r.http_status = code;
  r.retry_after = std::move(retry_after);
  return r;
}

AttemptResult Transport(TransportError e) {
  AttemptResult r;
  r.error = e;
  return r;
}

struct RetryRow {
  const char* name;
  AttemptResult result;
  int attempts;
  nanoseconds remaining;
  double random01;
  Action action;
  nanoseconds delay;  // checked for kRetry only
  bool retryable;     // checked for kGiveUp only
};

TEST(DecideRetryTest, Table) {
  const nanoseconds k30s = seconds(30);
  const RetryRow rows[] = {
      {"200", Status(200), 1, k30s, 0, Action::kSuccess, {}, false},
      {"204", Status(204), 1, k30s, 0, Action::kSuccess, {}, false},
      {"202 after retries", Status(202), 4, k30s, 0, Action::kSuccess, {}, false},
      {"400 not retried", Status(400), 1, k30s, 0, Action::kGiveUp, {}, false},
      {"401 not retried", Status(401), 1, k30s, 0, Action::kGiveUp, {}, false},
      {"403 not retried", Status(403), 1, k30s, 0, Action::kGiveUp, {}, false},
      {"404 not retried", Status(404), 1, k30s, 0, Action::kGiveUp, {}, false},
      {"408 not retried", Status(408), 1, k30s, 0, Action::kGiveUp, {}, false},
      {"413 not retried", Status(413), 1, k30s, 0, Action::kGiveUp, {}, false},
      {"500 not retried", Status(500), 1, k30s, 0, Action::kGiveUp, {}, false},
      {"501 not retried", Status(501), 1, k30s, 0, Action::kGiveUp, {}, false},
      {"500 ignores Retry-After", Status(500, "1"), 1, k30s, 0, Action::kGiveUp, {}, false},
      {"307 redirect not followed", Status(307), 1, k30s, 0, Action::kGiveUp, {}, false},
      {"100 is no answer", Status(100), 1, k30s, 0, Action::kGiveUp, {}, false},
      {"429 Retry-After seconds", Status(429, "1"), 1, k30s, 0.9, Action::kRetry, seconds(1),
       false},
      {"429 Retry-After 12", Status(429, "12"), 3, k30s, 0.9, Action::kRetry, seconds(12), false},
      {"429 Retry-After HTTP-date", Status(429, "Tue, 14 Nov 2023 22:13:25 GMT"), 1, k30s, 0,
       Action::kRetry, seconds(5), false},
      {"503 Retry-After RFC 850 date", Status(503, "Tuesday, 14-Nov-23 22:13:30 GMT"), 1, k30s, 0,
       Action::kRetry, seconds(10), false},
      {"503 Retry-After asctime date", Status(503, "Tue Nov 14 22:13:40 2023"), 1, k30s, 0,
       Action::kRetry, seconds(20), false},
      {"429 Retry-After 0 is floored", Status(429, "0"), 1, k30s, 0, Action::kRetry, kMinRetryDelay,
       false},
      {"429 Retry-After date in the past", Status(429, "Tue, 14 Nov 2023 22:00:00 GMT"), 1, k30s, 0,
       Action::kRetry, kMinRetryDelay, false},
      {"429 bad Retry-After falls back to backoff", Status(429, "soon"), 1, k30s, 0, Action::kRetry,
       milliseconds(500), false},
      {"429 without Retry-After", Status(429), 1, k30s, 0, Action::kRetry, milliseconds(500),
       false},
      {"502 backoff 1st", Status(502), 1, k30s, 0, Action::kRetry, milliseconds(500), false},
      {"503 backoff 2nd, jitter 0.5", Status(503), 2, k30s, 0.5, Action::kRetry, milliseconds(1500),
       false},
      {"504 backoff 3rd, top of jitter", Status(504), 3, k30s, 1.0, Action::kRetry, seconds(4),
       false},
      {"backoff capped at 30 s", Status(503), 12, seconds(100), 0, Action::kRetry, seconds(15),
       false},
      {"connection refused", Transport(TransportError::kConnectFailed), 1, k30s, 0, Action::kRetry,
       milliseconds(500), false},
      {"timeout", Transport(TransportError::kTimedOut), 2, k30s, 0, Action::kRetry, seconds(1),
       false},
      {"connection lost", Transport(TransportError::kConnectionLost), 1, k30s, 0, Action::kRetry,
       milliseconds(500), false},
      {"TLS or other failure not retried",
       Transport(TransportError::kOther),
       1,
       k30s,
       0,
       Action::kGiveUp,
       {},
       false},
      {"shutdown not retried",
       Transport(TransportError::kAborted),
       1,
       k30s,
       0,
       Action::kGiveUp,
       {},
       false},
      {"deadline: backoff longer than what is left",
       Status(503),
       1,
       milliseconds(400),
       0,
       Action::kGiveUp,
       {},
       true},
      {"deadline: Retry-After past the deadline",
       Status(429, "60"),
       1,
       k30s,
       0,
       Action::kGiveUp,
       {},
       true},
      {"deadline: Retry-After exactly the rest",
       Status(429, "30"),
       1,
       k30s,
       0,
       Action::kGiveUp,
       {},
       true},
      {"deadline: nothing left",
       Transport(TransportError::kTimedOut),
       5,
       nanoseconds(0),
       0,
       Action::kGiveUp,
       {},
       true},
  };
  for (const RetryRow& row : rows) {
    SCOPED_TRACE(row.name);
    const RetryDecision d =
        DecideRetry(row.result, row.attempts, row.remaining, kNow, BackoffPolicy{}, row.random01);
    EXPECT_EQ(d.action, row.action);
    if (row.action == Action::kRetry) {
      EXPECT_EQ(d.delay, row.delay);
      EXPECT_LT(d.delay, row.remaining);
    }
    if (row.action == Action::kGiveUp) {
      EXPECT_EQ(d.retryable, row.retryable);
    }
  }
}

TEST(DecideRetryTest, JitterStaysWithinHalfToFullBase) {
  for (int attempt = 1; attempt <= 8; ++attempt) {
    const double base = std::min(30.0, std::pow(2.0, attempt - 1));
    for (double r : {0.0, 0.25, 0.5, 0.75, 0.999999}) {
      const RetryDecision d =
          DecideRetry(Status(503), attempt, seconds(1000), kNow, BackoffPolicy{}, r);
      ASSERT_EQ(d.action, Action::kRetry);
      const double got = std::chrono::duration<double>(d.delay).count();
      EXPECT_GE(got, base / 2 - 1e-9);
      EXPECT_LT(got, base);
    }
  }
}

TEST(DecideRetryTest, CustomPolicy) {
  const BackoffPolicy p{.initial = milliseconds(100), .multiplier = 3, .max = seconds(1)};
  EXPECT_EQ(DecideRetry(Status(503), 1, seconds(10), kNow, p, 0).delay, milliseconds(50));
  EXPECT_EQ(DecideRetry(Status(503), 2, seconds(10), kNow, p, 0).delay, milliseconds(150));
  EXPECT_EQ(DecideRetry(Status(503), 5, seconds(10), kNow, p, 0).delay, milliseconds(500));
}

TEST(ParseRetryAfterTest, Table) {
  struct Row {
    const char* in;
    std::optional<nanoseconds> want;
  };
  const Row rows[] = {
      {"120", seconds(120)},
      {" 5 ", seconds(5)},
      {"0", seconds(0)},
      {"99999999999999999999999", seconds(86400)},
      {"Tue, 14 Nov 2023 22:13:25 GMT", seconds(5)},
      {"Wed, 15 Nov 2023 22:13:20 GMT", seconds(86400)},
      {"Tuesday, 14-Nov-23 22:13:30 GMT", seconds(10)},
      {"Tue Nov 14 22:13:40 2023", seconds(20)},
      {"Fri Dec  1 00:00:00 2023", seconds(16 * 86400 + 6400)},
      {"Sun, 06 Nov 1994 08:49:37 GMT", seconds(0)},  // the RFC's example: long past
      {"", std::nullopt},
      {"-1", std::nullopt},
      {"1.5", std::nullopt},
      {"5s", std::nullopt},
      {"soon", std::nullopt},
      {"Tue, 14 Nov 2023 22:13:25 UTC", std::nullopt},
      {"Tue, 14 Nov 2023 22:13:25 gmt", std::nullopt},
      {"Tue, 31 Nov 2023 22:13:25 GMT", std::nullopt},
      {"Tue, 14 Now 2023 22:13:25 GMT", std::nullopt},
      {"Tue, 14 Nov 2023 24:13:25 GMT", std::nullopt},
      {"Tue, 14 Nov 2023 22:13 GMT", std::nullopt},
      {"Xyz, 14 Nov 2023 22:13:25 GMT", std::nullopt},
      {"Tue,  14 Nov 2023 22:13:25 GMT", std::nullopt},
      {"Someday, 14-Nov-23 22:13:30 GMT", std::nullopt},
  };
  for (const Row& row : rows) {
    SCOPED_TRACE(row.in);
    EXPECT_EQ(ParseRetryAfter(row.in, kNow), row.want);
  }
}

TEST(ClassifyCurlErrorTest, Table) {
  EXPECT_EQ(ClassifyCurlError(CURLE_OK), TransportError::kNone);
  EXPECT_EQ(ClassifyCurlError(CURLE_COULDNT_CONNECT), TransportError::kConnectFailed);
  EXPECT_EQ(ClassifyCurlError(CURLE_COULDNT_RESOLVE_HOST), TransportError::kConnectFailed);
  EXPECT_EQ(ClassifyCurlError(CURLE_OPERATION_TIMEDOUT), TransportError::kTimedOut);
  EXPECT_EQ(ClassifyCurlError(CURLE_SEND_ERROR), TransportError::kConnectionLost);
  EXPECT_EQ(ClassifyCurlError(CURLE_RECV_ERROR), TransportError::kConnectionLost);
  EXPECT_EQ(ClassifyCurlError(CURLE_GOT_NOTHING), TransportError::kConnectionLost);
  EXPECT_EQ(ClassifyCurlError(CURLE_ABORTED_BY_CALLBACK), TransportError::kAborted);
  EXPECT_EQ(ClassifyCurlError(CURLE_PEER_FAILED_VERIFICATION), TransportError::kOther);
  EXPECT_EQ(ClassifyCurlError(CURLE_SSL_CONNECT_ERROR), TransportError::kOther);
  EXPECT_EQ(ClassifyCurlError(CURLE_URL_MALFORMAT), TransportError::kOther);
}

TEST(OtlpProtocolTest, Names) {
  OtlpProtocol p;
  ASSERT_TRUE(ParseOtlpProtocol("http/json", &p));
  EXPECT_EQ(p, OtlpProtocol::kHttpJson);
  ASSERT_TRUE(ParseOtlpProtocol("http/protobuf", &p));
  EXPECT_EQ(p, OtlpProtocol::kHttpProtobuf);
  EXPECT_FALSE(ParseOtlpProtocol("grpc", &p));
  EXPECT_STREQ(OtlpProtocolName(OtlpProtocol::kHttpJson), "http/json");
  EXPECT_STREQ(OtlpProtocolName(OtlpProtocol::kHttpProtobuf), "http/protobuf");
}

// ---- a scripted HTTP/1.1 receiver on 127.0.0.1:0 ------------------------------------------

struct Reply {
  enum Kind { kRespond, kHang, kClose };
  Kind kind = kRespond;
  int status = 200;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
};

Reply Respond(int status, std::vector<std::pair<std::string, std::string>> headers = {},
              std::string body = "") {
  return Reply{Reply::kRespond, status, std::move(headers), std::move(body)};
}
Reply Hang() { return Reply{Reply::kHang}; }
Reply CloseWithoutAnswer() { return Reply{Reply::kClose}; }

struct Received {
  std::string method;
  std::string target;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;
  int connection = 0;  // 1 for the first accepted connection, ...
};

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// A self-signed P-256 certificate for "localhost", for the TLS variant of the receiver.
struct TlsIdentity {
  TlsIdentity() {
    key = EVP_EC_gen("P-256");
    cert = X509_new();
    X509_set_version(cert, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
    X509_gmtime_adj(X509_getm_notBefore(cert), -3600);
    X509_gmtime_adj(X509_getm_notAfter(cert), 3600);
    X509_set_pubkey(cert, key);
    X509_NAME* name = X509_get_subject_name(cert);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                               reinterpret_cast<const unsigned char*>("localhost"), -1, -1, 0);
    X509_set_issuer_name(cert, name);
    X509_sign(cert, key, EVP_sha256());
    ctx = SSL_CTX_new(TLS_server_method());
    SSL_CTX_use_certificate(ctx, cert);
    SSL_CTX_use_PrivateKey(ctx, key);
  }
  ~TlsIdentity() {
    SSL_CTX_free(ctx);
    X509_free(cert);
    EVP_PKEY_free(key);
  }
  EVP_PKEY* key = nullptr;
  X509* cert = nullptr;
  SSL_CTX* ctx = nullptr;
};

// Answers requests in script order (200 once the script is used up), one thread per
// connection, keep-alive. Records every request before answering it.
class TestReceiver {
 public:
  explicit TestReceiver(std::vector<Reply> script, bool tls = false) : script_(std::move(script)) {
    signal(SIGPIPE, SIG_IGN);
    if (tls) tls_ = std::make_unique<TlsIdentity>();
    listen_fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    EXPECT_EQ(bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    EXPECT_EQ(listen(listen_fd_, 16), 0);
    socklen_t len = sizeof(addr);
    getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    accept_thread_ = std::thread([this] { AcceptLoop(); });
  }
  ~TestReceiver() { Stop(); }

  std::string Url(std::string_view scheme = "http") const {
    return std::string(scheme) + "://127.0.0.1:" + std::to_string(port_) + "/v1/traces";
  }
  uint16_t port() const { return port_; }

  std::vector<Received> requests() {
    std::lock_guard<std::mutex> lock(mu_);
    return requests_;
  }
  int connections() {
    std::lock_guard<std::mutex> lock(mu_);
    return connections_;
  }
  bool WaitForRequests(size_t n, milliseconds timeout = milliseconds(10000)) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return requests_.size() >= n; });
  }

  void Stop() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) return;
      stopping_ = true;
      for (int fd : conn_fds_) shutdown(fd, SHUT_RDWR);
    }
    cv_.notify_all();
    shutdown(listen_fd_, SHUT_RDWR);
    accept_thread_.join();
    for (std::thread& t : conn_threads_) t.join();
    for (int fd : conn_fds_) close(fd);
    close(listen_fd_);
  }

 private:
  void AcceptLoop() {
    for (;;) {
      const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) return;
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) {
        close(fd);
        return;
      }
      conn_fds_.push_back(fd);
      const int id = ++connections_;
      conn_threads_.emplace_back([this, fd, id] { Serve(fd, id); });
    }
  }

  struct Conn {
    int fd;
    SSL* ssl = nullptr;
    ~Conn() {
      if (ssl != nullptr) SSL_free(ssl);
    }
    ssize_t Read(char* buf, size_t n) {
      if (ssl != nullptr) return SSL_read(ssl, buf, static_cast<int>(n));
      return recv(fd, buf, n, 0);
    }
    bool WriteAll(std::string_view data) {
      while (!data.empty()) {
        const ssize_t n = ssl != nullptr
                              ? SSL_write(ssl, data.data(), static_cast<int>(data.size()))
                              : send(fd, data.data(), data.size(), MSG_NOSIGNAL);
        if (n <= 0) return false;
        data.remove_prefix(static_cast<size_t>(n));
      }
      return true;
    }
  };

  void Serve(int fd, int id) {
    Conn conn{fd};
    if (tls_ != nullptr) {
      conn.ssl = SSL_new(tls_->ctx);
      SSL_set_fd(conn.ssl, fd);
      if (SSL_accept(conn.ssl) <= 0) {
        shutdown(fd, SHUT_RDWR);
        return;
      }
    }
    std::string buf;
    char chunk[16384];
    for (;;) {
      size_t head_end;
      while ((head_end = buf.find("\r\n\r\n")) == std::string::npos) {
        const ssize_t n = conn.Read(chunk, sizeof(chunk));
        if (n <= 0) return;
        buf.append(chunk, static_cast<size_t>(n));
      }
      Received req;
      req.connection = id;
      const std::string head = buf.substr(0, head_end);
      buf.erase(0, head_end + 4);
      size_t line_end = head.find("\r\n");
      const std::string request_line = head.substr(0, line_end);
      const size_t sp1 = request_line.find(' ');
      const size_t sp2 = request_line.find(' ', sp1 + 1);
      req.method = request_line.substr(0, sp1);
      req.target = request_line.substr(sp1 + 1, sp2 - sp1 - 1);
      while (line_end != std::string::npos) {
        const size_t start = line_end + 2;
        line_end = head.find("\r\n", start);
        const std::string line = head.substr(start, line_end - start);
        const size_t colon = line.find(':');
        if (colon == std::string::npos) continue;
        std::string value = line.substr(colon + 1);
        value.erase(0, value.find_first_not_of(' '));
        req.headers[Lower(line.substr(0, colon))] = value;
      }
      const size_t length =
          req.headers.count("content-length") != 0 ? std::stoul(req.headers["content-length"]) : 0;
      while (buf.size() < length) {
        const ssize_t n = conn.Read(chunk, sizeof(chunk));
        if (n <= 0) return;
        buf.append(chunk, static_cast<size_t>(n));
      }
      req.body = buf.substr(0, length);
      buf.erase(0, length);

      Reply reply;
      {
        std::lock_guard<std::mutex> lock(mu_);
        requests_.push_back(std::move(req));
        if (next_ < script_.size()) reply = script_[next_++];
      }
      cv_.notify_all();
      if (reply.kind == Reply::kHang) {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return stopping_; });
        return;
      }
      if (reply.kind == Reply::kClose) {
        shutdown(fd, SHUT_RDWR);
        return;
      }
      std::string out = "HTTP/1.1 " + std::to_string(reply.status) + " Scripted\r\n";
      out += "Content-Length: " + std::to_string(reply.body.size()) + "\r\n";
      for (const auto& [name, value] : reply.headers) out += name + ": " + value + "\r\n";
      out += "\r\n" + reply.body;
      if (!conn.WriteAll(out)) return;
    }
  }

  std::vector<Reply> script_;
  std::unique_ptr<TlsIdentity> tls_;
  int listen_fd_ = -1;
  uint16_t port_ = 0;
  std::thread accept_thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  size_t next_ = 0;
  int connections_ = 0;
  std::vector<Received> requests_;
  std::vector<int> conn_fds_;
  std::vector<std::thread> conn_threads_;
};

// A port with nothing listening: bound but never listen()ed, so connecting is refused and no
// other test can take the port while this lives.
class ClosedPort {
 public:
  ClosedPort() {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    socklen_t len = sizeof(addr);
    getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
  }
  ~ClosedPort() { close(fd_); }
  std::string Url() const { return "http://127.0.0.1:" + std::to_string(port_) + "/v1/traces"; }

 private:
  int fd_ = -1;
  uint16_t port_ = 0;
};

std::string Gunzip(std::string_view in) {
  z_stream zs{};
  EXPECT_EQ(inflateInit2(&zs, 15 + 16), Z_OK);
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  zs.avail_in = static_cast<uInt>(in.size());
  std::string out;
  char buf[16384];
  int rc;
  do {
    zs.next_out = reinterpret_cast<Bytef*>(buf);
    zs.avail_out = sizeof(buf);
    rc = inflate(&zs, Z_NO_FLUSH);
    out.append(buf, sizeof(buf) - zs.avail_out);
  } while (rc == Z_OK);
  EXPECT_EQ(rc, Z_STREAM_END);
  inflateEnd(&zs);
  return out;
}

std::string ImfFixdate(Clock::WallTime t) {
  const std::time_t tt = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[64];
  std::strftime(buf, sizeof(buf), "%a, %d %b %Y %H:%M:%S GMT", &tm);
  return buf;
}

std::vector<SpanData> SampleSpans() {
  std::vector<SpanData> spans(2);
  for (size_t i = 0; i < spans.size(); ++i) {
    SpanData& s = spans[i];
    s.trace_id.bytes.fill(0x11);
    s.span_id.bytes.fill(static_cast<uint8_t>(0x21 + i));
    if (i > 0) s.parent_span_id = spans[0].span_id;
    s.name = i == 0 ? "proxy.exchange" : "plugin.event";
    s.kind = i == 0 ? SpanKind::kServer : SpanKind::kClient;
    s.start_unix_nano = 1700000000000000000 + static_cast<int64_t>(i) * 1000;
    s.end_unix_nano = s.start_unix_nano + 5000000;
    s.attributes.push_back({"http.request.method", std::string("GET")});
    s.attributes.push_back({"http.response.status_code", int64_t{200}});
  }
  return spans;
}

const std::vector<SpanData> kSpans = SampleSpans();

// ---- the exporter against the receiver, on simulated time ---------------------------------

class ExporterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // A proxy from the environment would carry loopback requests elsewhere.
    for (const char* v : {"http_proxy", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"}) {
      unsetenv(v);
    }
    ASSERT_EQ(pipe2(log_fds_, O_CLOEXEC), 0);
    ASSERT_EQ(fcntl(log_fds_[0], F_SETFL, O_NONBLOCK), 0);
    log::SetFdForTesting(log_fds_[1]);
    resource_.attributes.push_back({"service.name", std::string("0xgend")});
    scope_.version = "0.1.0";
  }
  void TearDown() override {
    log::SetFdForTesting(-1);
    close(log_fds_[0]);
    close(log_fds_[1]);
  }

  // Options on the simulated clock: waits advance it and are recorded; jitter draws 0.
  OtlpHttpExporterOptions Options(std::string url) {
    OtlpHttpExporterOptions o;
    o.endpoint = std::move(url);
    o.resource = resource_;
    o.scope = scope_;
    o.stats = &stats_;
    o.wait = [this](nanoseconds d) {
      waits_.push_back(d);
      clock_.Advance(d);
      return true;
    };
    o.random = [] { return 0.0; };
    return o;
  }

  std::unique_ptr<OtlpHttpExporter> Make(OtlpHttpExporterOptions o) {
    auto made = OtlpHttpExporter::Create(std::move(o), clock_);
    EXPECT_TRUE(made.ok()) << made.status();
    return made.ok() ? std::move(made).value() : nullptr;
  }

  metrics::Histogram::Snapshot Durations(const char* protocol, const char* result) {
    return stats_.export_duration.WithLabels({protocol, result}).Collect();
  }

  std::string DrainLog() {
    std::string out;
    char buf[4096];
    for (;;) {
      const ssize_t n = read(log_fds_[0], buf, sizeof(buf));
      if (n <= 0) break;
      out.append(buf, static_cast<size_t>(n));
    }
    return out;
  }

  static int CountLines(std::string_view text, std::string_view needle) {
    int n = 0;
    for (size_t pos = 0; (pos = text.find(needle, pos)) != std::string_view::npos; ++pos) ++n;
    return n;
  }

  SimulatedClock clock_;
  metrics::Registry registry_{clock_};
  TracingStats stats_{registry_};
  std::vector<nanoseconds> waits_;
  Resource resource_;
  InstrumentationScope scope_;
  int log_fds_[2] = {-1, -1};
};

TEST_F(ExporterTest, ProtobufGzipWithHeaders) {
  TestReceiver receiver({});
  auto o = Options(receiver.Url());
  o.headers = {{"api-key", "s3cr3t-header-value"}, {"X-Tenant", "blue"}, {"x-empty", ""}};
  auto exporter = Make(std::move(o));
  ASSERT_EQ(exporter->Export(kSpans), ExportResult::kSuccess);
  EXPECT_EQ(exporter->last_attempts(), 1);

  const std::vector<Received> got = receiver.requests();
  ASSERT_EQ(got.size(), 1u);
  const Received& r = got[0];
  EXPECT_EQ(r.method, "POST");
  EXPECT_EQ(r.target, "/v1/traces");
  EXPECT_EQ(r.headers.at("content-type"), "application/x-protobuf");
  EXPECT_EQ(r.headers.at("content-encoding"), "gzip");
  EXPECT_EQ(r.headers.at("api-key"), "s3cr3t-header-value");
  EXPECT_EQ(r.headers.at("x-tenant"), "blue");
  EXPECT_EQ(r.headers.count("x-empty"), 1u);
  EXPECT_EQ(r.headers.count("expect"), 0u);
  EXPECT_EQ(r.headers.at("user-agent").rfind("0xgen/", 0), 0u) << r.headers.at("user-agent");
  ASSERT_GE(r.body.size(), 2u);
  EXPECT_EQ(static_cast<uint8_t>(r.body[0]), 0x1f);  // gzip magic
  EXPECT_EQ(static_cast<uint8_t>(r.body[1]), 0x8b);
  const std::string body = Gunzip(r.body);
  EXPECT_EQ(body, EncodeOtlpProtobuf(kSpans, resource_, scope_));
  // And it is an ExportTraceServiceRequest carrying what was exported.
  opentelemetry::proto::collector::trace::v1::ExportTraceServiceRequest req;
  ASSERT_TRUE(req.ParseFromString(body));
  ASSERT_EQ(req.resource_spans_size(), 1);
  ASSERT_EQ(req.resource_spans(0).scope_spans_size(), 1);
  const auto& ss = req.resource_spans(0).scope_spans(0);
  EXPECT_EQ(ss.scope().name(), "0xgen");
  ASSERT_EQ(ss.spans_size(), 2);
  EXPECT_EQ(ss.spans(0).name(), "proxy.exchange");
  EXPECT_EQ(ss.spans(1).name(), "plugin.event");
  EXPECT_EQ(ss.spans(1).parent_span_id(),
            std::string(kSpans[0].span_id.bytes.begin(), kSpans[0].span_id.bytes.end()));

  EXPECT_EQ(Durations("http/protobuf", "success").count, 1u);
  EXPECT_EQ(Durations("http/protobuf", "failure").count, 0u);
  EXPECT_TRUE(waits_.empty());
  // A success says nothing, and header values are never logged anyway.
  EXPECT_EQ(DrainLog(), "");
}

TEST_F(ExporterTest, JsonWithoutGzip) {
  TestReceiver receiver({});
  auto o = Options(receiver.Url());
  o.protocol = OtlpProtocol::kHttpJson;
  o.gzip = false;
  auto exporter = Make(std::move(o));
  ASSERT_EQ(exporter->Export(kSpans), ExportResult::kSuccess);
  const std::vector<Received> got = receiver.requests();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].headers.at("content-type"), "application/json");
  EXPECT_EQ(got[0].headers.count("content-encoding"), 0u);
  EXPECT_EQ(got[0].body, EncodeOtlpJson(kSpans, resource_, scope_));
  const auto json = nlohmann::json::parse(got[0].body, nullptr, /*allow_exceptions=*/false);
  EXPECT_FALSE(json.is_discarded());
  EXPECT_TRUE(json.contains("resourceSpans"));
  EXPECT_EQ(Durations("http/json", "success").count, 1u);
}

TEST_F(ExporterTest, EmptyBatchSendsNothing) {
  TestReceiver receiver({});
  auto exporter = Make(Options(receiver.Url()));
  EXPECT_EQ(exporter->Export({}), ExportResult::kSuccess);
  EXPECT_EQ(exporter->last_attempts(), 0);
  EXPECT_TRUE(receiver.requests().empty());
}

TEST_F(ExporterTest, ReusesOneConnection) {
  TestReceiver receiver({});
  auto exporter = Make(Options(receiver.Url()));
  for (int i = 0; i < 3; ++i) ASSERT_EQ(exporter->Export(kSpans), ExportResult::kSuccess);
  ASSERT_EQ(receiver.requests().size(), 3u);
  EXPECT_EQ(receiver.connections(), 1);
}

TEST_F(ExporterTest, RetriesServiceUnavailableWithBackoff) {
  TestReceiver receiver({Respond(503), Respond(503), Respond(200)});
  auto exporter = Make(Options(receiver.Url()));
  ASSERT_EQ(exporter->Export(kSpans), ExportResult::kSuccess);
  EXPECT_EQ(exporter->last_attempts(), 3);
  ASSERT_EQ(receiver.requests().size(), 3u);
  // Equal jitter drawing 0: half of 1 s, then half of 2 s.
  EXPECT_EQ(waits_, (std::vector<nanoseconds>{milliseconds(500), seconds(1)}));
  // Every attempt sends the same body, over the same connection.
  const std::vector<Received> got = receiver.requests();
  EXPECT_EQ(got[0].body, got[2].body);
  EXPECT_EQ(receiver.connections(), 1);
  // The recorded duration is the simulated time, waits included.
  const auto d = Durations("http/protobuf", "success");
  EXPECT_EQ(d.count, 1u);
  EXPECT_DOUBLE_EQ(d.sum, 1.5);
}

TEST_F(ExporterTest, RetriesEachRetryableStatus) {
  TestReceiver receiver({Respond(502), Respond(504), Respond(429), Respond(200)});
  auto exporter = Make(Options(receiver.Url()));
  ASSERT_EQ(exporter->Export(kSpans), ExportResult::kSuccess);
  EXPECT_EQ(exporter->last_attempts(), 4);
  EXPECT_EQ(waits_, (std::vector<nanoseconds>{milliseconds(500), seconds(1), seconds(2)}));
}

TEST_F(ExporterTest, HonoursRetryAfterSeconds) {
  TestReceiver receiver({Respond(429, {{"Retry-After", "1"}}), Respond(200)});
  auto exporter = Make(Options(receiver.Url()));
  ASSERT_EQ(exporter->Export(kSpans), ExportResult::kSuccess);
  EXPECT_EQ(receiver.requests().size(), 2u);
  EXPECT_EQ(waits_, (std::vector<nanoseconds>{seconds(1)}));
  EXPECT_DOUBLE_EQ(Durations("http/protobuf", "success").sum, 1.0);
}

TEST_F(ExporterTest, HonoursRetryAfterHttpDate) {
  const std::string date = ImfFixdate(clock_.Now() + seconds(7));
  TestReceiver receiver({Respond(503, {{"retry-after", date}}), Respond(200)});
  auto exporter = Make(Options(receiver.Url()));
  ASSERT_EQ(exporter->Export(kSpans), ExportResult::kSuccess);
  EXPECT_EQ(waits_, (std::vector<nanoseconds>{seconds(7)}));
}

TEST_F(ExporterTest, RetryAfterBeyondTheBudgetGivesUpAtOnce) {
  TestReceiver receiver({Respond(429, {{"Retry-After", "120"}})});
  auto exporter = Make(Options(receiver.Url()));
  EXPECT_EQ(exporter->Export(kSpans), ExportResult::kFailure);
  EXPECT_EQ(receiver.requests().size(), 1u);
  EXPECT_TRUE(waits_.empty());
  EXPECT_EQ(Durations("http/protobuf", "failure").count, 1u);
  EXPECT_NE(DrainLog().find("export timeout reached"), std::string::npos);
}

TEST_F(ExporterTest, BackoffNeverWaitsPastTheDeadline) {
  std::vector<Reply> script(20, Respond(503));
  TestReceiver receiver(script);
  auto o = Options(receiver.Url());
  o.timeout = seconds(5);
  auto exporter = Make(std::move(o));
  EXPECT_EQ(exporter->Export(kSpans), ExportResult::kFailure);
  // 0.5 + 1 + 2 = 3.5 s waited; the next wait (4 s) would end past the 5 s budget.
  EXPECT_EQ(waits_, (std::vector<nanoseconds>{milliseconds(500), seconds(1), seconds(2)}));
  EXPECT_EQ(exporter->last_attempts(), 4);
  EXPECT_EQ(receiver.requests().size(), 4u);
  const auto d = Durations("http/protobuf", "failure");
  EXPECT_EQ(d.count, 1u);
  EXPECT_LE(d.sum, 5.0);
}

TEST_F(ExporterTest, NonRetryableStatusesFailAtOnce) {
  for (int status : {400, 401, 404, 413, 500, 501}) {
    SCOPED_TRACE(status);
    waits_.clear();
    TestReceiver receiver({Respond(status, {{"Retry-After", "1"}}, "bad batch")});
    auto exporter = Make(Options(receiver.Url()));
    EXPECT_EQ(exporter->Export(kSpans), ExportResult::kFailure);
    EXPECT_EQ(exporter->last_attempts(), 1);
    EXPECT_EQ(receiver.requests().size(), 1u);
    EXPECT_TRUE(waits_.empty());
    const std::string log = DrainLog();
    EXPECT_NE(log.find("HTTP " + std::to_string(status) + " (bad batch)"), std::string::npos)
        << log;
  }
}

TEST_F(ExporterTest, RedirectsAreNotFollowed) {
  TestReceiver target({});
  TestReceiver receiver({Respond(307, {{"Location", target.Url()}})});
  auto exporter = Make(Options(receiver.Url()));
  EXPECT_EQ(exporter->Export(kSpans), ExportResult::kFailure);
  EXPECT_EQ(receiver.requests().size(), 1u);
  EXPECT_TRUE(target.requests().empty());
}

TEST_F(ExporterTest, ConnectionRefusedIsRetriedUntilTheDeadline) {
  ClosedPort closed;
  auto o = Options(closed.Url());
  o.timeout = seconds(4);
  auto exporter = Make(std::move(o));
  EXPECT_EQ(exporter->Export(kSpans), ExportResult::kFailure);
  EXPECT_EQ(waits_, (std::vector<nanoseconds>{milliseconds(500), seconds(1), seconds(2)}));
  EXPECT_EQ(exporter->last_attempts(), 4);
  const std::string log = DrainLog();
  EXPECT_NE(log.find("connection failed"), std::string::npos) << log;
}

TEST_F(ExporterTest, ConnectionClosedWithoutAnswerIsRetried) {
  TestReceiver receiver({CloseWithoutAnswer(), Respond(200)});
  auto exporter = Make(Options(receiver.Url()));
  EXPECT_EQ(exporter->Export(kSpans), ExportResult::kSuccess);
  EXPECT_EQ(receiver.requests().size(), 2u);
  EXPECT_EQ(waits_.size(), 1u);
  EXPECT_EQ(receiver.connections(), 2);
}

TEST_F(ExporterTest, FailuresAreLoggedRateLimitedWithoutSecrets) {
  std::vector<Reply> script(5, Respond(400, {}, "rejected"));
  TestReceiver receiver(script);
  auto o = Options("http://tracer:pa55word-in-url@127.0.0.1:" + std::to_string(receiver.port()) +
                   "/v1/traces");
  o.headers = {{"authorization", "Bearer s3cr3t-header-value"},
               {"x-api-key", "another-s3cr3t-value"}};
  auto exporter = Make(std::move(o));
  for (int i = 0; i < 3; ++i) EXPECT_EQ(exporter->Export(kSpans), ExportResult::kFailure);
  std::string log = DrainLog();
  EXPECT_EQ(CountLines(log, "\n"), 1) << log;
  EXPECT_NE(log.find("WARN"), std::string::npos);
  EXPECT_NE(log.find("OTLP export of 2 spans to http://tracer:"), std::string::npos) << log;
  EXPECT_NE(log.find("HTTP 400 (rejected)"), std::string::npos) << log;

  clock_.Advance(seconds(29));
  EXPECT_EQ(exporter->Export(kSpans), ExportResult::kFailure);
  EXPECT_EQ(DrainLog(), "");
  clock_.Advance(seconds(1));
  EXPECT_EQ(exporter->Export(kSpans), ExportResult::kFailure);
  const std::string second = DrainLog();
  EXPECT_EQ(CountLines(second, "\n"), 1) << second;
  EXPECT_NE(second.find("3 more failed exports since the last report"), std::string::npos)
      << second;
  log += second;

  // The receiver is out of script: it answers 200 now. Recovery is reported once 30 s passed.
  clock_.Advance(seconds(31));
  EXPECT_EQ(exporter->Export(kSpans), ExportResult::kSuccess);
  const std::string recovered = DrainLog();
  EXPECT_NE(recovered.find("recovered after 5 failed exports"), std::string::npos) << recovered;
  log += recovered;

  for (std::string_view secret : {"pa55word-in-url", "s3cr3t-header-value", "another-s3cr3t"}) {
    EXPECT_EQ(log.find(secret), std::string::npos) << secret << " leaked: " << log;
  }
  // The credentials still reached the collector (curl sends them as basic auth).
  EXPECT_EQ(receiver.requests()[0].headers.count("authorization"), 1u);
}

TEST_F(ExporterTest, CreateRejectsBadOptions) {
  struct Case {
    const char* name;
    std::string endpoint;
    std::vector<std::pair<std::string, std::string>> headers;
  };
  const Case cases[] = {
      {"no scheme", "collector:4318/v1/traces", {}},
      {"ftp", "ftp://collector/v1/traces", {}},
      {"garbage", "http://[::1/v1", {}},
      {"empty", "", {}},
      {"bad header name", "http://c/v1/traces", {{"bad name", "x"}}},
      {"empty header name", "http://c/v1/traces", {{"", "x"}}},
      {"header injection", "http://c/v1/traces", {{"x-key", "s3cr3t\r\nEvil: 1"}}},
      {"managed header", "http://c/v1/traces", {{"Content-Type", "text/plain"}}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    OtlpHttpExporterOptions o;
    o.endpoint = c.endpoint;
    o.headers = c.headers;
    const auto made = OtlpHttpExporter::Create(std::move(o), clock_);
    ASSERT_FALSE(made.ok());
    EXPECT_EQ(made.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(std::string(made.status().message()).find("s3cr3t"), std::string::npos);
  }
  OtlpHttpExporterOptions o;
  o.endpoint = "https://user:pa55word-in-url@/v1/traces";
  const auto made = OtlpHttpExporter::Create(std::move(o), clock_);
  ASSERT_FALSE(made.ok());
  EXPECT_EQ(std::string(made.status().message()).find("pa55word-in-url"), std::string::npos)
      << made.status();
}

// ---- TLS ------------------------------------------------------------------------------------

TEST_F(ExporterTest, InsecureSkipVerifyAcceptsASelfSignedCollector) {
  TestReceiver receiver({}, /*tls=*/true);
  {
    auto exporter = Make(Options(receiver.Url("https")));
    EXPECT_EQ(exporter->Export(kSpans), ExportResult::kFailure);
    EXPECT_EQ(exporter->last_attempts(), 1);  // a verification failure is not retried
    EXPECT_TRUE(receiver.requests().empty());
  }
  auto o = Options(receiver.Url("https"));
  o.insecure_skip_verify = true;
  auto exporter = Make(std::move(o));
  ASSERT_EQ(exporter->Export(kSpans), ExportResult::kSuccess);
  ASSERT_EQ(receiver.requests().size(), 1u);
  EXPECT_EQ(Gunzip(receiver.requests()[0].body), EncodeOtlpProtobuf(kSpans, resource_, scope_));
}

// ---- real time: timeouts and Shutdown -------------------------------------------------------

// Options on the real clock with the exporter's own (interruptible) wait.
OtlpHttpExporterOptions RealTimeOptions(std::string url) {
  OtlpHttpExporterOptions o;
  o.endpoint = std::move(url);
  return o;
}

TEST_F(ExporterTest, HangingCollectorTimesOutWithinTheBudget) {
  TestReceiver receiver({Hang()});
  auto o = RealTimeOptions(receiver.Url());
  o.timeout = milliseconds(300);
  auto exporter = OtlpHttpExporter::Create(std::move(o)).value();
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(exporter->Export(kSpans), ExportResult::kFailure);
  const auto elapsed = std::chrono::steady_clock::now() - start;
  EXPECT_GE(elapsed, milliseconds(250));
  EXPECT_LT(elapsed, seconds(3));
  EXPECT_EQ(exporter->last_attempts(), 1);
  const std::string log = DrainLog();
  EXPECT_NE(log.find("timed out"), std::string::npos) << log;
}

TEST_F(ExporterTest, ShutdownAbortsAnInFlightExport) {
  TestReceiver receiver({Hang()});
  auto exporter = OtlpHttpExporter::Create(RealTimeOptions(receiver.Url())).value();
  ExportResult result = ExportResult::kSuccess;
  std::thread t([&] { result = exporter->Export(kSpans); });
  ASSERT_TRUE(receiver.WaitForRequests(1));
  const auto start = std::chrono::steady_clock::now();
  exporter->Shutdown();
  t.join();
  EXPECT_LT(std::chrono::steady_clock::now() - start, seconds(1));
  EXPECT_EQ(result, ExportResult::kFailure);
  // Later exports fail at once without a request.
  EXPECT_EQ(exporter->Export(kSpans), ExportResult::kFailure);
  EXPECT_EQ(receiver.requests().size(), 1u);
}

TEST_F(ExporterTest, ShutdownAbortsARetryWait) {
  TestReceiver receiver({Respond(503, {{"Retry-After", "20"}})});
  auto exporter = OtlpHttpExporter::Create(RealTimeOptions(receiver.Url())).value();
  log::SetLevel(log::Level::kDebug);
  ExportResult result = ExportResult::kSuccess;
  std::thread t([&] { result = exporter->Export(kSpans); });
  // The debug line is written just before the wait starts.
  std::string log;
  const auto give_up = std::chrono::steady_clock::now() + seconds(10);
  while (log.find("retrying in 20 s") == std::string::npos &&
         std::chrono::steady_clock::now() < give_up) {
    pollfd pfd{log_fds_[0], POLLIN, 0};
    poll(&pfd, 1, 100);
    log += DrainLog();
  }
  log::SetLevel(log::Level::kInfo);
  ASSERT_NE(log.find("OTLP export attempt 1: HTTP 503; retrying in 20 s"), std::string::npos)
      << log;
  const auto start = std::chrono::steady_clock::now();
  exporter->Shutdown();
  t.join();
  EXPECT_LT(std::chrono::steady_clock::now() - start, seconds(1));
  EXPECT_EQ(result, ExportResult::kFailure);
  EXPECT_EQ(receiver.requests().size(), 1u);
}

TEST_F(ExporterTest, ShutdownIsIdempotentAndTheDestructorShutsDown) {
  TestReceiver receiver({});
  auto exporter = Make(Options(receiver.Url()));
  ASSERT_EQ(exporter->Export(kSpans), ExportResult::kSuccess);
  exporter->Shutdown();
  exporter->Shutdown();
  EXPECT_EQ(exporter->Export(kSpans), ExportResult::kFailure);
  exporter.reset();
  EXPECT_EQ(receiver.requests().size(), 1u);
}

}  // namespace
}  // namespace oxg::tracing
