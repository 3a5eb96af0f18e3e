// The wire-text parser sees bytes from the daemon but treats them as untrusted: good messages
// parse exactly, anything malformed is refused with a reason and never crashes.
#include "oxg/sdk/http_message.h"

#include <gtest/gtest.h>

#include <string>

namespace oxg::sdk {
namespace {

HttpMessage MustParse(std::string_view data, bool is_request) {
  HttpMessage m;
  std::string error;
  EXPECT_TRUE(ParseHttpMessage(data, is_request, &m, &error)) << error << "\n" << data;
  return m;
}

std::string ParseError(std::string_view data, bool is_request) {
  HttpMessage m;
  std::string error;
  EXPECT_FALSE(ParseHttpMessage(data, is_request, &m, &error)) << data;
  EXPECT_FALSE(error.empty());
  return error;
}

TEST(SdkHttpParse, RequestAbsoluteForm) {
  const HttpMessage m = MustParse(
      "GET http://example.com/a?b=1 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n", true);
  EXPECT_TRUE(m.is_request);
  EXPECT_EQ(m.method, "GET");
  EXPECT_EQ(m.target, "http://example.com/a?b=1");
  EXPECT_EQ(m.version, "HTTP/1.1");
  ASSERT_EQ(m.headers.size(), 2u);
  EXPECT_EQ(m.headers[0].name, "Host");
  EXPECT_EQ(m.headers[1].value, "*/*");
  EXPECT_EQ(m.body, "");
  EXPECT_FALSE(m.body_truncated);
  EXPECT_EQ(m.Url(), "http://example.com/a?b=1");
}

TEST(SdkHttpParse, RequestOriginFormUrl) {
  HttpMessage m = MustParse("POST /login HTTP/1.1\r\nhost: shop.test\r\n\r\n", true);
  EXPECT_EQ(m.Url(), "https://shop.test/login");
  m = MustParse("GET /x HTTP/1.1\r\nHost: shop.test:80\r\n\r\n", true);
  EXPECT_EQ(m.Url(), "http://shop.test:80/x");
  m = MustParse("GET /x HTTP/1.1\r\nHost: [::1]:8443\r\n\r\n", true);
  EXPECT_EQ(m.Url(), "https://[::1]:8443/x");
  // The scheme the daemon sends wins over the guess: plain HTTP inside a CONNECT tunnel.
  m = MustParse("GET /x HTTP/1.1\r\nHost: shop.test:8080\r\n\r\n", true);
  m.scheme = "http";
  EXPECT_EQ(m.Url(), "http://shop.test:8080/x");
  m = MustParse("GET /x HTTP/1.1\r\n\r\n", true);
  EXPECT_EQ(m.Url(), "");  // no host anywhere
  m = MustParse("GET /p?u=http://x/ HTTP/1.1\r\nHost: h\r\n\r\n", true);
  EXPECT_EQ(m.Url(), "https://h/p?u=http://x/");
}

TEST(SdkHttpParse, ResponseWithBody) {
  const HttpMessage m = MustParse(
      "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 5\r\n\r\nhello", false);
  EXPECT_FALSE(m.is_request);
  EXPECT_EQ(m.status, 200);
  EXPECT_EQ(m.reason, "OK");
  EXPECT_EQ(m.body, "hello");
  EXPECT_EQ(m.Header("content-type").value_or(""), "text/html");
  EXPECT_FALSE(m.Header("X-Missing").has_value());
}

TEST(SdkHttpParse, ResponseReasonMayBeEmptyOrHaveSpaces) {
  EXPECT_EQ(MustParse("HTTP/1.1 204 \r\n\r\n", false).reason, "");
  EXPECT_EQ(MustParse("HTTP/1.1 204\r\n\r\n", false).status, 204);
  EXPECT_EQ(MustParse("HTTP/1.1 404 Not  Found\r\n\r\n", false).reason, "Not  Found");
}

TEST(SdkHttpParse, RepeatedHeadersKeepOrder) {
  const HttpMessage m = MustParse(
      "HTTP/1.1 200 OK\r\nSet-Cookie: a=[REDACTED]; Secure\r\nX-A: 1\r\n"
      "set-cookie: b=[REDACTED]; HttpOnly\r\n\r\n",
      false);
  const auto cookies = m.Headers("SET-COOKIE");
  ASSERT_EQ(cookies.size(), 2u);
  EXPECT_EQ(cookies[0], "a=[REDACTED]; Secure");
  EXPECT_EQ(cookies[1], "b=[REDACTED]; HttpOnly");
  EXPECT_EQ(m.Header("set-cookie").value_or(""), "a=[REDACTED]; Secure");
  EXPECT_EQ(m.headers[2].name, "set-cookie");  // case as received
}

TEST(SdkHttpParse, ValuesTrimmedAndEmptyValuesKept) {
  const HttpMessage m = MustParse("GET / HTTP/1.1\r\nX-A:   spaced \t\r\nX-Empty:\r\n\r\n", true);
  EXPECT_EQ(m.Header("x-a").value_or("?"), "spaced");
  EXPECT_EQ(m.Header("x-empty").value_or("?"), "");
}

TEST(SdkHttpParse, BareLfAccepted) {
  const HttpMessage m = MustParse("HTTP/1.1 200 OK\nContent-Length: 2\n\nok", false);
  EXPECT_EQ(m.body, "ok");
}

TEST(SdkHttpParse, BinaryBodyKept) {
  const std::string body("\0\x01\xff\r\n\r\n", 7);
  const HttpMessage m = MustParse("HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n" + body, false);
  EXPECT_EQ(m.body, body);
}

TEST(SdkHttpParse, TruncationHeader) {
  const HttpMessage m = MustParse(
      "HTTP/1.1 200 OK\r\nContent-Length: 4\r\nX-0xgen-Raw-Body-Truncated: 3000\r\n\r\nxxxx",
      false);
  EXPECT_TRUE(m.body_truncated);
  EXPECT_EQ(m.raw_body_bytes, 3000u);
  EXPECT_EQ(m.body, "xxxx");
  EXPECT_NE(ParseError("HTTP/1.1 200 OK\r\nX-0xgen-Raw-Body-Truncated: lots\r\n\r\n", false)
                .find("Truncated"),
            std::string::npos);
}

TEST(SdkHttpParse, MalformedInputsRefused) {
  struct Case {
    const char* data;
    bool is_request;
  };
  const Case cases[] = {
      {"", true},
      {"", false},
      {"GET / HTTP/1.1", true},                         // no line end
      {"GET / HTTP/1.1\r\nHost: h\r\n", true},          // no empty line
      {"GET /HTTP/1.1\r\n\r\n", true},                  // two fields
      {"GET / x HTTP/1.1\r\n\r\n", true},               // four fields
      {"G(T / HTTP/1.1\r\n\r\n", true},                 // bad method
      {"GET / HTTP/x.1\r\n\r\n", true},                 // bad version
      {"GET  HTTP/1.1\r\n\r\n", true},                  // empty target
      {"GET / HTTP/1.1\r\nNoColon\r\n\r\n", true},      // header without colon
      {"GET / HTTP/1.1\r\nBad Name: v\r\n\r\n", true},  // space in name
      {"GET / HTTP/1.1\r\n: v\r\n\r\n", true},          // empty name
      {"GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n", true},
      {"GET / HTTP/1.1\r\nA: b\x01\r\n\r\n", true},  // control character
      {"HTTP/1.1 2000 OK\r\n\r\n", false},
      {"HTTP/1.1 20 OK\r\n\r\n", false},
      {"HTTP/1.1 099 Low\r\n\r\n", false},
      {"HTTP/1.1 abc OK\r\n\r\n", false},
      {"HTTP/1.1200 OK\r\n\r\n", false},
      {"HTTX/1.1 200 OK\r\n\r\n", false},
      {"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", false},
      {"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nlonger", false},
      {"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", false},
      {"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n", false},
      {"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n", false},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.data);
    ParseError(c.data, c.is_request);
  }
}

TEST(SdkHttpParse, TooManyHeaders) {
  std::string data = "GET / HTTP/1.1\r\n";
  for (size_t i = 0; i <= kMaxHeaderFields; ++i) data += "A: b\r\n";
  data += "\r\n";
  EXPECT_EQ(ParseError(data, true), "too many header fields");
}

TEST(SdkHttpParse, EveryPrefixOfAGoodMessageIsHandled) {
  // Cut anywhere: either a clean parse or a clean error, never a crash or a wrong body.
  const std::string full = "HTTP/1.1 200 OK\r\nSet-Cookie: a=b\r\nContent-Length: 4\r\n\r\nbody";
  for (size_t n = 0; n < full.size(); ++n) {
    HttpMessage m;
    std::string error;
    EXPECT_FALSE(ParseHttpMessage(full.substr(0, n), false, &m, &error)) << n;
  }
  EXPECT_EQ(MustParse(full, false).body, "body");
}

}  // namespace
}  // namespace oxg::sdk
