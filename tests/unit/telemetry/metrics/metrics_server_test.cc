#include "telemetry/metrics/metrics_server.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zlib.h>

#include <atomic>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace oxg::metrics {
namespace {

// Sends `request` verbatim and returns everything the server answers until it closes.
std::string Exchange(uint16_t port, const std::string& request) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  EXPECT_GE(fd, 0);
  timeval tv{10, 0};  // bounded: a hung server fails the test instead of hanging it
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  size_t sent = 0;
  while (sent < request.size()) {
    const ssize_t n = send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;  // the server may answer and close before reading everything
    sent += static_cast<size_t>(n);
  }
  std::string response;
  char buf[65536];
  for (;;) {
    const ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    response.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  return response;
}

std::string Get(uint16_t port, const std::string& path, const std::string& extra = "") {
  return Exchange(port, "GET " + path + " HTTP/1.1\r\nHost: t\r\nConnection: close\r\n" + extra +
                            "\r\n");
}

std::string StatusLine(const std::string& response) {
  return response.substr(0, response.find("\r\n"));
}

std::string Body(const std::string& response) {
  const size_t p = response.find("\r\n\r\n");
  return p == std::string::npos ? "" : response.substr(p + 4);
}

std::string Gunzip(const std::string& in) {
  z_stream zs{};
  EXPECT_EQ(inflateInit2(&zs, 15 + 16), Z_OK);
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  zs.avail_in = static_cast<uInt>(in.size());
  std::string out;
  char buf[16384];
  int rc;
  do {
    zs.next_out = reinterpret_cast<Bytef*>(buf);
    zs.avail_out = sizeof buf;
    rc = inflate(&zs, Z_NO_FLUSH);
    out.append(buf, sizeof buf - zs.avail_out);
  } while (rc == Z_OK);
  inflateEnd(&zs);
  EXPECT_EQ(rc, Z_STREAM_END);
  return out;
}

class MetricsServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    reg_.AddCounter("oxg_audit_events_total", "Audit events.", {"event_type", "decision"})
        .WithLabels({"config_loaded", "info"})
        .Inc();
    ServerOptions opts;
    opts.address = {"127.0.0.1", 0};
    opts.healthy = [this] { return healthy_.load(); };
    auto server = MetricsServer::Start(reg_, std::move(opts));
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    port_ = server_->bound_address().port;
    ASSERT_NE(port_, 0);
  }

  Registry reg_;
  std::atomic<bool> healthy_{true};
  std::unique_ptr<MetricsServer> server_;
  uint16_t port_ = 0;
};

TEST_F(MetricsServerTest, ServesTextByDefault) {
  const std::string r = Get(port_, "/metrics");
  EXPECT_EQ(StatusLine(r), "HTTP/1.1 200 OK");
  EXPECT_NE(r.find("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"),
            std::string::npos);
  EXPECT_NE(Body(r).find("# TYPE oxg_audit_events_total counter\n"), std::string::npos);
  EXPECT_NE(Body(r).find("glyph_audit_events_total{"), std::string::npos);  // aliases default on
}

TEST_F(MetricsServerTest, ServesOpenMetricsToPrometheus) {
  const std::string r = Get(port_, "/metrics?x=1",
                            "Accept: application/openmetrics-text;version=1.0.0,"
                            "text/plain;version=0.0.4;q=0.5,*/*;q=0.1\r\n");
  EXPECT_EQ(StatusLine(r), "HTTP/1.1 200 OK");
  EXPECT_NE(r.find("Content-Type: application/openmetrics-text; version=1.0.0; charset=utf-8"),
            std::string::npos);
  EXPECT_TRUE(Body(r).ends_with("# EOF\n"));
}

TEST_F(MetricsServerTest, GzipWhenAccepted) {
  const std::string r = Get(port_, "/metrics", "Accept-Encoding: gzip\r\n");
  EXPECT_NE(r.find("Content-Encoding: gzip\r\n"), std::string::npos);
  EXPECT_NE(Gunzip(Body(r)).find("oxg_audit_events_total{event_type=\"config_loaded\""),
            std::string::npos);
}

TEST_F(MetricsServerTest, HealthAndReadiness) {
  EXPECT_EQ(Body(Get(port_, "/healthz")), "ok\n");
  EXPECT_EQ(StatusLine(Get(port_, "/readyz")), "HTTP/1.1 200 OK");
  healthy_ = false;
  EXPECT_EQ(StatusLine(Get(port_, "/healthz")), "HTTP/1.1 503 Service Unavailable");
}

TEST_F(MetricsServerTest, RejectsOtherMethods) {
  for (const char* method : {"POST", "PUT", "DELETE", "PATCH", "OPTIONS"}) {
    const std::string r = Exchange(
        port_, std::string(method) +
                   " /metrics HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    EXPECT_EQ(StatusLine(r), "HTTP/1.1 405 Method Not Allowed") << method;
    EXPECT_NE(r.find("Allow: GET, HEAD\r\n"), std::string::npos) << method;
  }
}

TEST_F(MetricsServerTest, HeadHasNoBody) {
  const std::string r =
      Exchange(port_, "HEAD /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(StatusLine(r), "HTTP/1.1 200 OK");
  EXPECT_EQ(Body(r), "");
  EXPECT_NE(r.find("Content-Length: "), std::string::npos);
}

TEST_F(MetricsServerTest, UnknownPath404) {
  EXPECT_EQ(StatusLine(Get(port_, "/admin")), "HTTP/1.1 404 Not Found");
}

TEST_F(MetricsServerTest, HostileInput) {
  // An Accept header far beyond the header limit.
  EXPECT_EQ(StatusLine(Get(port_, "/metrics", "Accept: " + std::string(64 * 1024, 'a') + "\r\n")),
            "HTTP/1.1 431 Request Header Fields Too Large");
  // Thousands of small headers.
  std::string many;
  for (int i = 0; i < 5000; ++i) many += "X-H" + std::to_string(i) + ": v\r\n";
  EXPECT_EQ(StatusLine(Get(port_, "/metrics", many)),
            "HTTP/1.1 431 Request Header Fields Too Large");
  EXPECT_EQ(StatusLine(Exchange(port_, "\x16\x03\x01 garbage\r\n\r\n")),
            "HTTP/1.1 400 Bad Request");
  EXPECT_EQ(StatusLine(Exchange(port_, "GET /metrics HTTP/1.1\r\nHost t\r\n\r\n")),
            "HTTP/1.1 400 Bad Request");
  EXPECT_EQ(StatusLine(Exchange(port_, "GET /metrics HTTP/1.1\r\nContent-Length: 100000\r\n"
                                       "Connection: close\r\n\r\n")),
            "HTTP/1.1 413 Payload Too Large");
  // The server still works afterwards.
  EXPECT_EQ(StatusLine(Get(port_, "/metrics")), "HTTP/1.1 200 OK");
}

TEST_F(MetricsServerTest, KeepAliveServesSeveralRequests) {
  const std::string one = "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n";
  const std::string r = Exchange(port_, one + one + "GET /healthz HTTP/1.1\r\nHost: t\r\n"
                                                    "Connection: close\r\n\r\n");
  size_t count = 0;
  for (size_t p = r.find("HTTP/1.1 200 OK"); p != std::string::npos;
       p = r.find("HTTP/1.1 200 OK", p + 1)) {
    ++count;
  }
  EXPECT_EQ(count, 3u);
}

TEST_F(MetricsServerTest, ConcurrentScrapesWhileUpdating) {
  Counter& c = reg_.AddCounter("t_hot_total", "x").WithLabels({});
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    while (!stop.load()) c.Inc();
  });
  std::vector<std::thread> scrapers;
  std::atomic<int> good{0};
  for (int t = 0; t < 4; ++t) {
    scrapers.emplace_back([&] {
      for (int i = 0; i < 20; ++i) {
        const std::string r = Get(port_, "/metrics", "Accept: application/openmetrics-text\r\n");
        if (StatusLine(r) == "HTTP/1.1 200 OK" && Body(r).ends_with("# EOF\n")) ++good;
      }
    });
  }
  for (auto& t : scrapers) t.join();
  stop = true;
  writer.join();
  EXPECT_EQ(good.load(), 80);
  EXPECT_GT(c.Value(), 0u);
}

TEST_F(MetricsServerTest, ThrowingCollectorGets500AndServerSurvives) {
  std::atomic<bool> fail{true};
  reg_.AddCallback("t_flaky", "x", MetricType::kGauge, [&fail]() -> double {
    if (fail.load()) throw std::runtime_error("collector broke");
    return 1;
  });
  EXPECT_EQ(StatusLine(Get(port_, "/metrics")), "HTTP/1.1 500 Internal Server Error");
  fail = false;
  const std::string r = Get(port_, "/metrics");
  EXPECT_EQ(StatusLine(r), "HTTP/1.1 200 OK");
  EXPECT_NE(Body(r).find("t_flaky 1\n"), std::string::npos);
}

TEST(MetricsServer, PortInUseIsAClearError) {
  Registry reg;
  ServerOptions first;
  first.address = {"127.0.0.1", 0};
  auto a = MetricsServer::Start(reg, first);
  ASSERT_TRUE(a.ok());
  ServerOptions second;
  second.address = {"127.0.0.1", (*a)->bound_address().port};
  auto b = MetricsServer::Start(reg, second);
  ASSERT_FALSE(b.ok());
  EXPECT_NE(b.status().message().find("cannot listen on 127.0.0.1:" +
                                      std::to_string(second.address.port)),
            std::string::npos)
      << b.status();
  EXPECT_NE(b.status().message().find("in use"), std::string::npos) << b.status();
}

TEST(MetricsServer, UnresolvableHost) {
  Registry reg;
  ServerOptions opts;
  opts.address = {"no-such-host.invalid", 0};
  auto s = MetricsServer::Start(reg, opts);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("no-such-host.invalid"), std::string::npos);
}

}  // namespace
}  // namespace oxg::metrics
