#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "proxy/flow/base64.h"
#include "proxy/flow/flow_builder.h"
#include "telemetry/metrics/metrics.h"

namespace oxg::proxy {
namespace {

HttpMessage Request(std::string_view method, std::string_view target,
                    std::vector<HeaderField> headers, std::string_view body = {}) {
  HttpMessage m;
  m.kind = HttpMessage::Kind::kRequest;
  m.method = method;
  m.target = target;
  m.headers = std::move(headers);
  m.body = body;
  m.original_body_length = body.size();
  return m;
}

HttpMessage Response(int status, std::string_view reason, std::vector<HeaderField> headers,
                     std::string_view body = {}) {
  HttpMessage m;
  m.kind = HttpMessage::Kind::kResponse;
  m.status = status;
  m.reason = reason;
  m.headers = std::move(headers);
  m.body = body;
  m.original_body_length = body.size();
  return m;
}

struct Fixture : ::testing::Test {
  metrics::Registry registry;
  FlowStats stats{registry};
  FlowOptions options;
};

TEST(Base64Test, RoundTripsAndRejectsGarbage) {
  EXPECT_EQ(Base64Encode(""), "");
  EXPECT_EQ(Base64Encode("f"), "Zg==");
  EXPECT_EQ(Base64Encode("fo"), "Zm8=");
  EXPECT_EQ(Base64Encode("foo"), "Zm9v");
  EXPECT_EQ(Base64Encode("foobar"), "Zm9vYmFy");
  std::string all;
  for (int i = 0; i < 256; ++i) all.push_back(static_cast<char>(i));
  for (size_t n = 0; n < all.size(); n += 7) {
    EXPECT_EQ(Base64Decode(Base64Encode(all.substr(0, n))), all.substr(0, n));
  }
  EXPECT_EQ(Base64Decode("Zg=="), "f");
  EXPECT_FALSE(Base64Decode("Zg=").has_value());
  EXPECT_FALSE(Base64Decode("Z*==").has_value());
  EXPECT_FALSE(Base64Decode("Zg==Zm9v").has_value());
}

TEST_F(Fixture, RequestRawAndSanitizedWireText) {
  const std::string body = R"({"user":"bob","password":"hunter2","n":1})";
  const HttpMessage m = Request("POST", "http://api.example.com/login?x=1",
                                {{"Host", "api.example.com"},
                                 {"authorization", "Bearer abc.def-123"},
                                 {"Cookie", "sid=s3cr3t; theme=dark"},
                                 {"X-Api-Key", "k-123456"},
                                 {"Content-Type", "application/json"},
                                 {"Content-Length", std::to_string(body.size())},
                                 {"Connection", "keep-alive"}},
                                body);
  const FlowPayloads p = BuildFlowPayloads(m, options, &stats);
  EXPECT_EQ(p.raw,
            "POST http://api.example.com/login?x=1 HTTP/1.1\r\n"
            "Host: api.example.com\r\n"
            "authorization: Bearer abc.def-123\r\n"
            "Cookie: sid=s3cr3t; theme=dark\r\n"
            "X-Api-Key: k-123456\r\n"
            "Content-Type: application/json\r\n"
            "Content-Length: 41\r\n"
            "Connection: keep-alive\r\n"
            "\r\n" +
                body);
  const std::string san_body = R"({"user":"bob","password":"[REDACTED]","n":1})";
  EXPECT_EQ(p.sanitized,
            "POST http://api.example.com/login?x=1 HTTP/1.1\r\n"
            "Host: api.example.com\r\n"
            "authorization: Bearer [REDACTED]\r\n"
            "Cookie: sid=[REDACTED]; theme=[REDACTED]\r\n"
            "X-Api-Key: [REDACTED]\r\n"
            "Content-Type: application/json\r\n"
            "Content-Length: " +
                std::to_string(san_body.size()) +
                "\r\n"
                "Connection: keep-alive\r\n"
                "\r\n" +
                san_body);
  EXPECT_EQ(p.raw_body_bytes, body.size());
  EXPECT_FALSE(p.raw_body_truncated);
  EXPECT_EQ(stats.header.Value(), 2u);
  EXPECT_EQ(stats.cookie.Value(), 2u);
  EXPECT_EQ(stats.body_secret.Value(), 1u);
  EXPECT_EQ(stats.raw_truncated.Value(), 0u);
}

TEST_F(Fixture, ResponseWireTextWithSetCookie) {
  const HttpMessage m = Response(200, "OK",
                                 {{"Content-Type", "text/html; charset=utf-8"},
                                  {"Set-Cookie", "sid=abc123; Path=/; HttpOnly; Secure"},
                                  {"Set-Cookie", "lang=en"},
                                  {"Content-Length", "5"}},
                                 "hello");
  const FlowPayloads p = BuildFlowPayloads(m, options, &stats);
  EXPECT_EQ(p.raw,
            "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n"
            "Set-Cookie: sid=abc123; Path=/; HttpOnly; Secure\r\nSet-Cookie: lang=en\r\n"
            "Content-Length: 5\r\n\r\nhello");
  EXPECT_EQ(p.sanitized,
            "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n"
            "Set-Cookie: sid=[REDACTED]; Path=/; HttpOnly; Secure\r\n"
            "Set-Cookie: lang=[REDACTED]\r\nContent-Length: 5\r\n\r\nhello");
  EXPECT_EQ(stats.cookie.Value(), 2u);
  EXPECT_EQ(stats.header.Value(), 0u);
}

TEST_F(Fixture, CredentialsNeverInSanitizedVariant) {
  const std::string form = "user=bob&token=tok-98765&next=%2Fhome";
  const HttpMessage m = Request("POST", "/submit",
                                {{"Host", "h.example"},
                                 {"Authorization", "Basic dXNlcjpwYXNzd29yZA=="},
                                 {"Proxy-Authorization", "Bearer prox-55555"},
                                 {"Cookie", "a=cookieA1; b=cookieB2"},
                                 {"X-Auth-Token", "xauth-77777"},
                                 {"X-Api-Key", "apikey-66666"},
                                 {"Content-Type", "application/x-www-form-urlencoded"},
                                 {"User-Agent", "curl/8.0"}},
                                form);
  const FlowPayloads p = BuildFlowPayloads(m, options, &stats);
  for (std::string_view secret : {"dXNlcjpwYXNzd29yZA", "prox-55555", "cookieA1", "cookieB2",
                                  "xauth-77777", "apikey-66666", "tok-98765"}) {
    EXPECT_EQ(p.sanitized.find(secret), std::string::npos) << secret;
    EXPECT_NE(p.raw.find(secret), std::string::npos) << secret;
  }
  EXPECT_NE(p.sanitized.find("Authorization: Basic [REDACTED]\r\n"), std::string::npos);
  EXPECT_NE(p.sanitized.find("Proxy-Authorization: Bearer [REDACTED]\r\n"), std::string::npos);
  EXPECT_NE(p.sanitized.find("Cookie: a=[REDACTED]; b=[REDACTED]\r\n"), std::string::npos);
  EXPECT_NE(p.sanitized.find("X-Auth-Token: [REDACTED]\r\n"), std::string::npos);
  EXPECT_NE(p.sanitized.find("User-Agent: curl/8.0\r\nContent-Length: 38\r\n\r\n"
                             "user=bob&token=[REDACTED]&next=%2Fhome"),
            std::string::npos)
      << p.sanitized;
  EXPECT_EQ(stats.header.Value(), 4u);
  EXPECT_EQ(stats.cookie.Value(), 2u);
  EXPECT_EQ(stats.body_secret.Value(), 1u);
}

TEST_F(Fixture, SecretInTargetIsMasked) {
  const HttpMessage m = Request("GET", "http://h/cb?access_token=abcdef123&x=1", {{"Host", "h"}});
  const FlowPayloads p = BuildFlowPayloads(m, options, &stats);
  EXPECT_EQ(p.raw, "GET http://h/cb?access_token=abcdef123&x=1 HTTP/1.1\r\nHost: h\r\n\r\n");
  EXPECT_EQ(p.sanitized, "GET http://h/cb?access_token=[REDACTED]&x=1 HTTP/1.1\r\nHost: h\r\n\r\n");
  EXPECT_EQ(stats.header.Value(), 1u);
}

TEST_F(Fixture, BinaryAndCompressedBodiesUntouched) {
  const std::string secret_text = "password=hunter2";
  for (const auto& headers : std::vector<std::vector<HeaderField>>{
           {{"Content-Type", "application/octet-stream"}},
           {{"Content-Type", "text/plain"}, {"Content-Encoding", "gzip"}},
           {{"Content-Type", "image/png"}}}) {
    const FlowPayloads p =
        BuildFlowPayloads(Response(200, "OK", headers, secret_text), options, &stats);
    EXPECT_EQ(p.sanitized, p.raw);
  }
  EXPECT_EQ(stats.body_secret.Value(), 0u);
  // No Content-Type: text unless it holds a NUL byte.
  const FlowPayloads p = BuildFlowPayloads(Response(200, "OK", {}, secret_text), options, &stats);
  EXPECT_EQ(p.sanitized, "HTTP/1.1 200 OK\r\nContent-Length: 19\r\n\r\npassword=[REDACTED]");
}

TEST_F(Fixture, TruncationAtTheLimit) {
  options.max_body_kb = 1;
  const std::string body(3000, 'x');
  HttpMessage m =
      Response(200, "OK", {{"Content-Type", "text/plain"}, {"Content-Length", "3000"}}, body);
  FlowPayloads p = BuildFlowPayloads(m, options, &stats);
  EXPECT_EQ(p.raw,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1024\r\n"
            "X-0xgen-Raw-Body-Truncated: 3000\r\n\r\n" +
                std::string(1024, 'x'));
  EXPECT_EQ(p.sanitized, p.raw);
  EXPECT_TRUE(p.raw_body_truncated);
  EXPECT_EQ(p.raw_body_bytes, 3000u);
  EXPECT_EQ(stats.raw_truncated.Value(), 1u);

  // The proxy captured only what fits; the original length comes from the transfer.
  m.body = std::string_view(body).substr(0, 1024);
  m.original_body_length = 5000;
  m.headers = {{"X-0xgen-Raw-Body-Truncated", "1"}};  // a peer cannot forge the marker
  p = BuildFlowPayloads(m, options, &stats);
  EXPECT_EQ(p.raw,
            "HTTP/1.1 200 OK\r\nContent-Length: 1024\r\n"
            "X-0xgen-Raw-Body-Truncated: 5000\r\n\r\n" +
                std::string(1024, 'x'));
  EXPECT_EQ(stats.raw_truncated.Value(), 2u);

  // Exactly at the limit: not truncated.
  m.original_body_length = 1024;
  p = BuildFlowPayloads(m, options, &stats);
  EXPECT_FALSE(p.raw_body_truncated);
  EXPECT_EQ(p.raw.find("Truncated"), std::string::npos);
}

TEST_F(Fixture, MaxBodyZeroAndUnlimited) {
  const std::string body(200 * 1024, 'y');
  const HttpMessage m = Request("PUT", "/up", {{"Content-Length", "204800"}}, body);
  options.max_body_kb = 0;
  FlowPayloads p = BuildFlowPayloads(m, options, &stats);
  EXPECT_EQ(p.raw,
            "PUT /up HTTP/1.1\r\nContent-Length: 0\r\nX-0xgen-Raw-Body-Truncated: 204800\r\n\r\n");
  EXPECT_TRUE(p.raw_body_truncated);
  options.max_body_kb = -1;
  p = BuildFlowPayloads(m, options, &stats);
  EXPECT_EQ(p.raw, "PUT /up HTTP/1.1\r\nContent-Length: 204800\r\n\r\n" + body);
  EXPECT_FALSE(p.raw_body_truncated);
  options.max_body_kb = 128;  // the default cuts it
  p = BuildFlowPayloads(m, options, &stats);
  EXPECT_EQ(p.raw.size(), p.raw.find("\r\n\r\n") + 4 + 128 * 1024);
  EXPECT_TRUE(p.raw_body_truncated);
  EXPECT_EQ(stats.raw_truncated.Value(), 2u);
}

TEST_F(Fixture, ChunkedRemovedAndBodyless) {
  const HttpMessage m = Response(
      200, "OK", {{"Transfer-Encoding", "chunked"}, {"Connection", "close"}}, "hello world");
  FlowPayloads p = BuildFlowPayloads(m, options, &stats);
  EXPECT_EQ(p.raw, "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 11\r\n\r\nhello world");
  const HttpMessage gz = Response(200, "OK", {{"Transfer-Encoding", "gzip, Chunked"}}, "zz");
  p = BuildFlowPayloads(gz, options, &stats);
  EXPECT_EQ(p.raw, "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 2\r\n\r\nzz");
  // No body and no framing: no Content-Length is invented; duplicates collapse to one.
  p = BuildFlowPayloads(Request("GET", "/", {{"Host", "h"}}), options, &stats);
  EXPECT_EQ(p.raw, "GET / HTTP/1.1\r\nHost: h\r\n\r\n");
  p = BuildFlowPayloads(Response(204, "", {{"Content-Length", "0"}, {"content-length", "0"}}),
                        options, &stats);
  EXPECT_EQ(p.raw, "HTTP/1.1 204 \r\nContent-Length: 0\r\n\r\n");
}

TEST_F(Fixture, HeaderValuesCannotForgeLines) {
  const HttpMessage m = Request("GET", "/", {{"X-A", "a\r\nInjected: 1"}});
  const FlowPayloads p = BuildFlowPayloads(m, options, nullptr);
  EXPECT_EQ(p.raw, "GET / HTTP/1.1\r\nX-A: a  Injected: 1\r\n\r\n");
}

TEST_F(Fixture, CountersExportedPerKind) {
  BuildFlowPayloads(Request("GET", "/", {{"Authorization", "Bearer x1234567"}}), options, &stats);
  const std::string text = registry.Scrape({});
  EXPECT_NE(text.find("oxg_flow_redactions_total{kind=\"header\"} 1"), std::string::npos) << text;
  EXPECT_NE(text.find("oxg_flow_redactions_total{kind=\"cookie\"} 0"), std::string::npos);
  EXPECT_NE(text.find("oxg_flow_redactions_total{kind=\"body_secret\"} 0"), std::string::npos);
  EXPECT_NE(text.find("oxg_flow_redactions_total{kind=\"raw_truncated\"} 0"), std::string::npos);
}

TEST_F(Fixture, FlowLogLineMatchesContract) {
  const HttpMessage m = Request("GET", "/", {{"Host", "h"}, {"Cookie", "a=1"}});
  const FlowPayloads p = BuildFlowPayloads(m, options, &stats);
  FlowRecord r;
  r.id = "01HZY3M5Q6W8E2R4T6Y8U0I2O4";
  r.sequence = 7;
  r.type = FlowType::kRequest;
  r.timestamp_unix_nano = 1700000000123456789;
  r.sanitized = p.sanitized;
  r.raw = p.raw;
  r.raw_body_bytes = p.raw_body_bytes;
  r.raw_body_truncated = p.raw_body_truncated;
  r.trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
  const std::string line = FlowLogLine(r);
  ASSERT_FALSE(line.empty());
  EXPECT_EQ(line.back(), '\n');
  EXPECT_EQ(line.find('\n'), line.size() - 1);
  const auto j = nlohmann::ordered_json::parse(line);
  std::vector<std::string> keys;
  for (const auto& [k, v] : j.items()) keys.push_back(k);
  EXPECT_EQ(keys, (std::vector<std::string>{"id", "sequence", "type", "timestamp_unix_nano",
                                            "sanitized_base64", "raw_base64", "raw_body_bytes",
                                            "raw_body_truncated", "trace_id"}));
  EXPECT_EQ(j["id"], r.id);
  EXPECT_EQ(j["sequence"], 7);
  EXPECT_EQ(j["type"], "FLOW_REQUEST");
  EXPECT_EQ(j["timestamp_unix_nano"], 1700000000123456789);
  EXPECT_EQ(Base64Decode(j["sanitized_base64"].get<std::string>()), p.sanitized);
  EXPECT_EQ(Base64Decode(j["raw_base64"].get<std::string>()), p.raw);
  EXPECT_EQ(j["raw_body_bytes"], 0);
  EXPECT_EQ(j["raw_body_truncated"], false);
  EXPECT_EQ(j["trace_id"], r.trace_id);

  // Without raw logging the key is absent.
  r.raw.reset();
  r.type = FlowType::kResponse;
  const auto j2 = nlohmann::ordered_json::parse(FlowLogLine(r));
  EXPECT_FALSE(j2.contains("raw_base64"));
  EXPECT_EQ(j2["type"], "FLOW_RESPONSE");
  EXPECT_EQ(j2.size(), 8u);
}

TEST_F(Fixture, InvalidUtf8InHeadersKeepsTheLineValid) {
  const std::string bad = "caf\xc3(\xff\xfe";
  const HttpMessage m = Request("GET", "/\xff", {{"X-Bad", bad}, {"Cookie", "n\xff=v\xfe"}});
  const FlowPayloads p = BuildFlowPayloads(m, options, &stats);
  EXPECT_NE(p.raw.find(bad), std::string::npos);
  FlowRecord r;
  r.id = "id\xff";
  r.sanitized = p.sanitized;
  r.raw = p.raw;
  r.trace_id = "\xc0\x80";
  const std::string line = FlowLogLine(r);
  nlohmann::json j;
  ASSERT_NO_THROW(j = nlohmann::json::parse(line));
  EXPECT_EQ(Base64Decode(j["raw_base64"].get<std::string>()), p.raw);
  EXPECT_EQ(Base64Decode(j["sanitized_base64"].get<std::string>()), p.sanitized);
}

}  // namespace
}  // namespace oxg::proxy
