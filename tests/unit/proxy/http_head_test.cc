#include "proxy/http/http_head.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace oxg::proxy::http {
namespace {

using Form = RequestHead::TargetForm;

ParseStatus ParseReq(std::string_view in, RequestHead* out, ParseError* err,
                     const Limits& limits = Limits()) {
  return ParseRequestHead(in, limits, out, err);
}

bool Inside(std::string_view buf, std::string_view v) {
  return v.empty() || (v.data() >= buf.data() && v.data() + v.size() <= buf.data() + buf.size());
}

void ExpectViewsInside(std::string_view buf, const RequestHead& h) {
  for (std::string_view v :
       {h.method, h.target, h.version, h.scheme, h.host, h.origin, h.host_header}) {
    EXPECT_TRUE(Inside(buf, v)) << v;
  }
  for (const Header& x : h.headers) {
    EXPECT_TRUE(Inside(buf, x.name));
    EXPECT_TRUE(Inside(buf, x.value));
  }
}

// ---- valid request lines and targets ---------------------------------------------------------

struct TargetCase {
  const char* name;
  std::string head;
  std::string method;
  Form form;
  std::string scheme;
  std::string host;
  uint16_t port;
  std::string origin;
};

class RequestTargetTest : public ::testing::TestWithParam<TargetCase> {};

TEST_P(RequestTargetTest, Parses) {
  const TargetCase& c = GetParam();
  RequestHead h;
  ParseError e;
  ASSERT_EQ(ParseReq(c.head, &h, &e), ParseStatus::kComplete) << e.reason;
  EXPECT_EQ(h.method, c.method);
  EXPECT_EQ(h.form, c.form);
  EXPECT_EQ(h.scheme, c.scheme);
  EXPECT_EQ(h.host, c.host);
  EXPECT_EQ(h.port, c.port);
  EXPECT_EQ(h.origin, c.origin);
  EXPECT_EQ(h.head_size, c.head.size());
  ExpectViewsInside(c.head, h);
}

INSTANTIATE_TEST_SUITE_P(
    Targets, RequestTargetTest,
    ::testing::Values(
        TargetCase{"origin", "GET /a/b?c=d HTTP/1.1\r\nHost: example.com\r\n\r\n", "GET",
                   Form::kOrigin, "", "", 0, "/a/b?c=d"},
        TargetCase{"abs_http", "GET http://example.com/x?y HTTP/1.1\r\nHost: example.com\r\n\r\n",
                   "GET", Form::kAbsolute, "http", "example.com", 0, "/x?y"},
        TargetCase{"abs_http_port", "GET http://example.com:8080/x HTTP/1.1\r\n\r\n", "GET",
                   Form::kAbsolute, "http", "example.com", 8080, "/x"},
        TargetCase{"abs_https", "POST https://api.example.com/v2 HTTP/1.1\r\n\r\n", "POST",
                   Form::kAbsolute, "https", "api.example.com", 0, "/v2"},
        TargetCase{"abs_https_port", "GET https://h.example:8443/ HTTP/1.1\r\n\r\n", "GET",
                   Form::kAbsolute, "https", "h.example", 8443, "/"},
        TargetCase{"abs_no_path", "GET http://example.com HTTP/1.1\r\n\r\n", "GET", Form::kAbsolute,
                   "http", "example.com", 0, "/"},
        TargetCase{"abs_no_path_port", "GET http://example.com:81 HTTP/1.1\r\n\r\n", "GET",
                   Form::kAbsolute, "http", "example.com", 81, "/"},
        TargetCase{"abs_upper_scheme", "GET HTTP://Example.COM/ HTTP/1.1\r\n\r\n", "GET",
                   Form::kAbsolute, "HTTP", "Example.COM", 0, "/"},
        TargetCase{"abs_ipv6", "GET http://[::1]:8080/p HTTP/1.1\r\n\r\n", "GET", Form::kAbsolute,
                   "http", "::1", 8080, "/p"},
        TargetCase{"abs_ipv6_noport", "GET http://[2001:db8::1]/ HTTP/1.1\r\n\r\n", "GET",
                   Form::kAbsolute, "http", "2001:db8::1", 0, "/"},
        TargetCase{"abs_ipv4", "GET http://10.0.0.1:3128/a HTTP/1.1\r\n\r\n", "GET",
                   Form::kAbsolute, "http", "10.0.0.1", 3128, "/a"},
        TargetCase{"abs_ws", "GET ws://chat.example/s HTTP/1.1\r\n\r\n", "GET", Form::kAbsolute,
                   "ws", "chat.example", 0, "/s"},
        TargetCase{"connect", "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
                   "CONNECT", Form::kAuthority, "", "example.com", 443, ""},
        TargetCase{"connect_ipv6", "CONNECT [::1]:8080 HTTP/1.1\r\n\r\n", "CONNECT",
                   Form::kAuthority, "", "::1", 8080, ""},
        TargetCase{"connect_port_max", "CONNECT h:65535 HTTP/1.1\r\n\r\n", "CONNECT",
                   Form::kAuthority, "", "h", 65535, ""},
        TargetCase{"connect_port_min", "CONNECT h:1 HTTP/1.1\r\n\r\n", "CONNECT", Form::kAuthority,
                   "", "h", 1, ""},
        TargetCase{"options_star", "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n", "OPTIONS",
                   Form::kAsterisk, "", "", 0, ""},
        TargetCase{"options_origin", "OPTIONS /x HTTP/1.1\r\n\r\n", "OPTIONS", Form::kOrigin, "",
                   "", 0, "/x"},
        TargetCase{"custom_method", "PROPFIND /dav HTTP/1.1\r\n\r\n", "PROPFIND", Form::kOrigin, "",
                   "", 0, "/dav"},
        TargetCase{"obs_text_target", "GET /caf\xc3\xa9 HTTP/1.1\r\n\r\n", "GET", Form::kOrigin, "",
                   "", 0, "/caf\xc3\xa9"},
        TargetCase{"bare_lf", "GET / HTTP/1.1\nHost: a\n\n", "GET", Form::kOrigin, "", "", 0, "/"},
        TargetCase{"mixed_line_ends", "GET / HTTP/1.1\r\nHost: a\n\r\n", "GET", Form::kOrigin, "",
                   "", 0, "/"},
        TargetCase{"leading_empty_lines", "\r\n\r\nGET / HTTP/1.1\r\n\r\n", "GET", Form::kOrigin,
                   "", "", 0, "/"}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(RequestHead, FieldsAndHeaders) {
  const std::string in =
      "GET /index.html HTTP/1.1\r\n"
      "Host: example.com\r\n"
      "User-Agent:\tcurl/8.0 \t\r\n"
      "X-Empty:\r\n"
      "X-Spaces:    a b   \r\n"
      "\r\n"
      "BODY";
  RequestHead h;
  ParseError e;
  ASSERT_EQ(ParseReq(in, &h, &e), ParseStatus::kComplete) << e.reason;
  EXPECT_EQ(h.version, "HTTP/1.1");
  EXPECT_EQ(h.version_minor, 1);
  EXPECT_EQ(h.target, "/index.html");
  ASSERT_EQ(h.headers.size(), 4u);
  EXPECT_EQ(h.headers[0].name, "Host");
  EXPECT_EQ(h.headers[0].value, "example.com");
  EXPECT_EQ(h.headers[1].value, "curl/8.0");
  EXPECT_EQ(h.headers[2].name, "X-Empty");
  EXPECT_EQ(h.headers[2].value, "");
  EXPECT_EQ(h.headers[3].value, "a b");
  EXPECT_EQ(h.head_size, in.size() - 4);
  EXPECT_EQ(h.host_header, "example.com");
  EXPECT_EQ(h.body, BodyKind::kNone);
  EXPECT_TRUE(h.keep_alive);
  ExpectViewsInside(in, h);
}

TEST(RequestHead, ReusedStructIsReset) {
  RequestHead h;
  ParseError e;
  ASSERT_EQ(ParseReq("POST http://a:1/ HTTP/1.1\r\nContent-Length: 3\r\nExpect: 100-continue\r\n"
                     "Host: a\r\n\r\n",
                     &h, &e),
            ParseStatus::kComplete);
  ASSERT_EQ(ParseReq("GET / HTTP/1.1\r\n\r\n", &h, &e), ParseStatus::kComplete);
  EXPECT_EQ(h.headers.size(), 0u);
  EXPECT_EQ(h.body, BodyKind::kNone);
  EXPECT_EQ(h.content_length, 0u);
  EXPECT_EQ(h.host, "");
  EXPECT_EQ(h.port, 0);
  EXPECT_EQ(h.host_header, "");
  EXPECT_FALSE(h.expect_continue);
  EXPECT_EQ(h.form, Form::kOrigin);
}

// ---- request errors ----------------------------------------------------------------------------

struct ErrorCase {
  const char* name;
  std::string head;
  int status;
};

class RequestErrorTest : public ::testing::TestWithParam<ErrorCase> {};

TEST_P(RequestErrorTest, Rejects) {
  const ErrorCase& c = GetParam();
  RequestHead h;
  ParseError e;
  ASSERT_EQ(ParseReq(c.head, &h, &e), ParseStatus::kError);
  EXPECT_EQ(e.status, c.status);
  EXPECT_FALSE(e.reason.empty());
}

INSTANTIATE_TEST_SUITE_P(
    Errors, RequestErrorTest,
    ::testing::Values(
        // line ends and whitespace
        ErrorCase{"bare_cr_in_value", "GET / HTTP/1.1\r\nX: a\rb\r\n\r\n", 400},
        ErrorCase{"bare_cr_line_end", "GET / HTTP/1.1\r\nX: a\rX\r\n\r\n", 400},
        ErrorCase{"bare_cr_request_line", "GET / HTTP/1.1\rHost: a\r\n\r\n", 400},
        ErrorCase{"bare_cr_in_target", "GET /a\rb HTTP/1.1\r\n\r\n", 400},
        ErrorCase{"bare_cr_final_line", "GET / HTTP/1.1\r\nX: a\r\n\rX", 400},
        ErrorCase{"bare_cr_after_name", "GET / HTTP/1.1\r\nX\rY: a\r\n\r\n", 400},
        ErrorCase{"obs_fold", "GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n", 400},
        ErrorCase{"obs_fold_tab", "GET / HTTP/1.1\r\nX: a\r\n\tb\r\n\r\n", 400},
        ErrorCase{"space_first_header", "GET / HTTP/1.1\r\n Host: a\r\n\r\n", 400},
        ErrorCase{"space_before_colon", "GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400},
        ErrorCase{"tab_before_colon", "GET / HTTP/1.1\r\nHost\t: a\r\n\r\n", 400},
        ErrorCase{"no_colon", "GET / HTTP/1.1\r\nHost\r\n\r\n", 400},
        ErrorCase{"empty_name", "GET / HTTP/1.1\r\n: a\r\n\r\n", 400},
        ErrorCase{"bad_name_char", "GET / HTTP/1.1\r\nX(y): a\r\n\r\n", 400},
        ErrorCase{"bad_name_slash", "GET / HTTP/1.1\r\nX/y: a\r\n\r\n", 400},
        ErrorCase{"bad_name_8bit", "GET / HTTP/1.1\r\nX\xc3\xa9: a\r\n\r\n", 400},
        ErrorCase{"nul_in_value", std::string("GET / HTTP/1.1\r\nX: a\0b\r\n\r\n", 27), 400},
        ErrorCase{"ctl_in_value",
                  "GET / HTTP/1.1\r\nX: a\x01"
                  "b\r\n\r\n",
                  400},
        ErrorCase{"del_in_value", "GET / HTTP/1.1\r\nX: a\x7f\r\n\r\n", 400},
        ErrorCase{"esc_in_long_value",
                  "GET / HTTP/1.1\r\nX: abcdefghijklmnop\x1bqrstuvwxyz\r\n\r\n", 400},
        // request line
        ErrorCase{"bad_method_char", "G(T / HTTP/1.1\r\n\r\n", 400},
        ErrorCase{"empty_method", " / HTTP/1.1\r\n\r\n", 400},
        ErrorCase{"tab_after_method", "GET\t/ HTTP/1.1\r\n\r\n", 400},
        ErrorCase{"double_space", "GET  / HTTP/1.1\r\n\r\n", 400},
        ErrorCase{"http09", "GET /\r\n\r\n", 400},
        ErrorCase{"space_in_target", "GET /a b HTTP/1.1\r\n\r\n", 400},
        ErrorCase{"trailing_space", "GET / HTTP/1.1 \r\n\r\n", 400},
        ErrorCase{"nul_in_target", std::string("GET /\0 HTTP/1.1\r\n\r\n", 19), 400},
        ErrorCase{"http2", "GET / HTTP/2.0\r\n\r\n", 505},
        ErrorCase{"http3", "GET / HTTP/3.0\r\n\r\n", 505},
        ErrorCase{"http0", "GET / HTTP/0.9\r\n\r\n", 505},
        ErrorCase{"garbage_version", "GET / FOO/1.1\r\n\r\n", 505},
        ErrorCase{"lower_version", "GET / http/1.1\r\n\r\n", 505},
        ErrorCase{"long_version", "GET / HTTP/1.11\r\n\r\n", 505},
        ErrorCase{"short_version", "GET / HTTP/1\r\n\r\n", 505},
        // targets
        ErrorCase{"star_not_options", "GET * HTTP/1.1\r\n\r\n", 400},
        ErrorCase{"connect_no_port", "CONNECT example.com HTTP/1.1\r\n\r\n", 400},
        ErrorCase{"connect_empty_port", "CONNECT example.com: HTTP/1.1\r\n\r\n", 400},
        ErrorCase{"connect_port_0", "CONNECT example.com:0 HTTP/1.1\r\n\r\n", 400},
        ErrorCase{"connect_port_65536", "CONNECT example.com:65536 HTTP/1.1\r\n\r\n", 400},
        ErrorCase{"connect_port_long", "CONNECT example.com:000443 HTTP/1.1\r\n\r\n", 400},
        ErrorCase{"connect_port_alpha", "CONNECT example.com:44a HTTP/1.1\r\n\r\n", 400},
        ErrorCase{"connect_origin", "CONNECT / HTTP/1.1\r\n\r\n", 400},
        ErrorCase{"connect_url", "CONNECT http://a:443/ HTTP/1.1\r\n\r\n", 400},
        ErrorCase{"connect_ipv6_unclosed", "CONNECT [::1:443 HTTP/1.1\r\n\r\n", 400},
        ErrorCase{"connect_userinfo", "CONNECT u@h:443 HTTP/1.1\r\n\r\n", 400},
        ErrorCase{"authority_for_get", "GET example.com:443 HTTP/1.1\r\n\r\n", 400},
        ErrorCase{"relative_path", "GET a/b HTTP/1.1\r\n\r\n", 400},
        ErrorCase{"ftp_scheme", "GET ftp://h/ HTTP/1.1\r\n\r\n", 400},
        ErrorCase{"scheme_no_slashes", "GET http:h/ HTTP/1.1\r\n\r\n", 400},
        ErrorCase{"abs_empty_host", "GET http:///x HTTP/1.1\r\n\r\n", 400},
        ErrorCase{"abs_userinfo", "GET http://user@evil/ HTTP/1.1\r\n\r\n", 400},
        ErrorCase{"abs_query_no_path", "GET http://h?q HTTP/1.1\r\n\r\n", 400},
        ErrorCase{"abs_port_0", "GET http://h:0/ HTTP/1.1\r\n\r\n", 400},
        ErrorCase{"abs_port_big", "GET http://h:70000/ HTTP/1.1\r\n\r\n", 400},
        ErrorCase{"abs_bad_ipv6", "GET http://[zz::1]/ HTTP/1.1\r\n\r\n", 400},
        ErrorCase{"abs_ipv6_junk", "GET http://[::1]x/ HTTP/1.1\r\n\r\n", 400},
        // framing
        ErrorCase{"cl_differs", "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
                  400},
        ErrorCase{"cl_list_differs", "POST / HTTP/1.1\r\nContent-Length: 5, 6\r\n\r\n", 400},
        ErrorCase{"cl_empty", "POST / HTTP/1.1\r\nContent-Length:\r\n\r\n", 400},
        ErrorCase{"cl_empty_element", "POST / HTTP/1.1\r\nContent-Length: 5,,5\r\n\r\n", 400},
        ErrorCase{"cl_sign", "POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n", 400},
        ErrorCase{"cl_negative", "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400},
        ErrorCase{"cl_hex", "POST / HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n", 400},
        ErrorCase{"cl_inner_space", "POST / HTTP/1.1\r\nContent-Length: 1 2\r\n\r\n", 400},
        ErrorCase{"cl_19_digits", "POST / HTTP/1.1\r\nContent-Length: 1000000000000000000\r\n\r\n",
                  400},
        ErrorCase{"cl_and_te",
                  "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
                  400},
        ErrorCase{"te_and_cl",
                  "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
                  400},
        ErrorCase{"te_gzip", "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 400},
        ErrorCase{"te_chunked_then_gzip",
                  "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400},
        ErrorCase{
            "te_two_headers_last_gzip",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n",
            400},
        ErrorCase{"te_chunked_twice",
                  "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", 400},
        ErrorCase{"te_xchunked", "POST / HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\n", 400},
        ErrorCase{"te_chunked_param", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked;a=b\r\n\r\n",
                  400},
        ErrorCase{"te_empty", "POST / HTTP/1.1\r\nTransfer-Encoding:\r\n\r\n", 400},
        ErrorCase{"te_http10", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
        ErrorCase{"two_hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400}),
    [](const auto& info) { return std::string(info.param.name); });

// ---- incomplete input, limits ----------------------------------------------------------------

const char kBrowserHead[] =
    "GET http://www.example.com:8080/path/to/page.html?q=1&r=%20 HTTP/1.1\r\n"
    "Host: www.example.com:8080\r\n"
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n"
    "Accept: text/html,application/xhtml+xml;q=0.9,*/*;q=0.8\r\n"
    "Accept-Language: en-US,en;q=0.5\r\n"
    "Connection: keep-alive\r\n"
    "Cookie: a=b; c=d\r\n"
    "X-Tab:\tv\t\r\n"
    "X-Empty:\r\n"
    "Content-Length: 0\r\n"
    "\r\n";

TEST(RequestHead, EveryPrefixIsIncomplete) {
  for (const std::string& full :
       {std::string(kBrowserHead), std::string("GET / HTTP/1.1\nHost: a\nX:\n\n"),
        std::string("\r\nCONNECT [::1]:443 HTTP/1.0\r\n\r\n")}) {
    RequestHead h;
    ParseError e;
    ASSERT_EQ(ParseReq(full, &h, &e), ParseStatus::kComplete) << e.reason;
    ASSERT_EQ(h.head_size, full.size());
    for (size_t n = 0; n < full.size(); ++n) {
      EXPECT_EQ(ParseReq(std::string_view(full).substr(0, n), &h, &e), ParseStatus::kIncomplete)
          << "prefix " << n << ": " << e.reason;
    }
  }
}

TEST(ResponseHead, EveryPrefixIsIncomplete) {
  const std::string full =
      "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 10\r\nX:\r\n\r\n";
  ResponseHead h;
  ParseError e;
  ASSERT_EQ(ParseResponseHead(full, "GET", Limits(), &h, &e), ParseStatus::kComplete);
  for (size_t n = 0; n < full.size(); ++n) {
    EXPECT_EQ(ParseResponseHead(std::string_view(full).substr(0, n), "GET", Limits(), &h, &e),
              ParseStatus::kIncomplete)
        << "prefix " << n;
  }
}

TEST(RequestHead, HeadTooLargeBeforeCompletion) {
  Limits limits;
  limits.max_head_bytes = 64;
  RequestHead h;
  ParseError e;
  std::string in = "GET / HTTP/1.1\r\nX: " + std::string(40, 'a');
  ASSERT_LT(in.size(), 64u);
  EXPECT_EQ(ParseReq(in, &h, &e, limits), ParseStatus::kIncomplete);
  in += std::string(64 - in.size(), 'a');  // exactly the limit, still no end: can only grow
  EXPECT_EQ(ParseReq(in, &h, &e, limits), ParseStatus::kError);
  EXPECT_EQ(e.status, 431);
  in += "aaaa";
  EXPECT_EQ(ParseReq(in, &h, &e, limits), ParseStatus::kError);
  EXPECT_EQ(e.status, 431);
  // A request line alone longer than the limit.
  EXPECT_EQ(ParseReq("GET /" + std::string(100, 'x'), &h, &e, limits), ParseStatus::kError);
  EXPECT_EQ(e.status, 431);
}

TEST(RequestHead, HeadExactlyAtLimitIsAccepted) {
  const std::string in = "GET / HTTP/1.1\r\nX: abc\r\n\r\n";
  Limits limits;
  limits.max_head_bytes = in.size();
  RequestHead h;
  ParseError e;
  EXPECT_EQ(ParseReq(in + "NEXT", &h, &e, limits), ParseStatus::kComplete);
  limits.max_head_bytes = in.size() - 1;
  EXPECT_EQ(ParseReq(in, &h, &e, limits), ParseStatus::kError);
  EXPECT_EQ(e.status, 431);
}

TEST(RequestHead, TooManyHeaders) {
  Limits limits;
  limits.max_headers = 3;
  RequestHead h;
  ParseError e;
  EXPECT_EQ(ParseReq("GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", &h, &e, limits),
            ParseStatus::kComplete);
  EXPECT_EQ(ParseReq("GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n", &h, &e, limits),
            ParseStatus::kError);
  EXPECT_EQ(e.status, 431);
  // Known as soon as the fourth header line is complete.
  EXPECT_EQ(ParseReq("GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n", &h, &e, limits),
            ParseStatus::kError);
  EXPECT_EQ(e.status, 431);
}

TEST(RequestHead, ErrorReportedBeforeHeadIsComplete) {
  RequestHead h;
  ParseError e;
  EXPECT_EQ(ParseReq("GET / HTTP/1.1\r\nBad Name: x\r\n", &h, &e), ParseStatus::kError);
  EXPECT_EQ(ParseReq("GET / HTTP/2.0\r\n", &h, &e), ParseStatus::kError);
  EXPECT_EQ(e.status, 505);
}

// ---- request semantics ------------------------------------------------------------------------

struct SemanticsCase {
  const char* name;
  std::string head;
  BodyKind body;
  uint64_t content_length;
  bool keep_alive;
  bool expect_continue;
  bool upgrade;
};

class RequestSemanticsTest : public ::testing::TestWithParam<SemanticsCase> {};

TEST_P(RequestSemanticsTest, Derives) {
  const SemanticsCase& c = GetParam();
  RequestHead h;
  ParseError e;
  ASSERT_EQ(ParseReq(c.head, &h, &e), ParseStatus::kComplete) << e.reason;
  EXPECT_EQ(h.body, c.body);
  EXPECT_EQ(h.content_length, c.content_length);
  EXPECT_EQ(h.keep_alive, c.keep_alive);
  EXPECT_EQ(h.expect_continue, c.expect_continue);
  EXPECT_EQ(h.upgrade, c.upgrade);
}

INSTANTIATE_TEST_SUITE_P(
    Semantics, RequestSemanticsTest,
    ::testing::Values(
        SemanticsCase{"http11_default", "GET / HTTP/1.1\r\n\r\n", BodyKind::kNone, 0, true, false,
                      false},
        SemanticsCase{"http11_close", "GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
                      BodyKind::kNone, 0, false, false, false},
        SemanticsCase{"http11_close_in_list", "GET / HTTP/1.1\r\nConnection: foo, CLOSE\r\n\r\n",
                      BodyKind::kNone, 0, false, false, false},
        SemanticsCase{"http11_close_second_header",
                      "GET / HTTP/1.1\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n",
                      BodyKind::kNone, 0, false, false, false},
        SemanticsCase{"http11_closed_not_token", "GET / HTTP/1.1\r\nConnection: closed\r\n\r\n",
                      BodyKind::kNone, 0, true, false, false},
        SemanticsCase{"http10_default", "GET / HTTP/1.0\r\n\r\n", BodyKind::kNone, 0, false, false,
                      false},
        SemanticsCase{"http10_keep_alive", "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
                      BodyKind::kNone, 0, true, false, false},
        SemanticsCase{"http10_keep_alive_and_close",
                      "GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n", BodyKind::kNone, 0,
                      false, false, false},
        SemanticsCase{"http1x_reads_as_11", "GET / HTTP/1.7\r\n\r\n", BodyKind::kNone, 0, true,
                      false, false},
        SemanticsCase{"content_length", "POST / HTTP/1.1\r\nContent-Length: 42\r\n\r\n",
                      BodyKind::kLength, 42, true, false, false},
        SemanticsCase{"content_length_zero", "POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
                      BodyKind::kLength, 0, true, false, false},
        SemanticsCase{"content_length_18_digits",
                      "POST / HTTP/1.1\r\nContent-Length: 999999999999999999\r\n\r\n",
                      BodyKind::kLength, 999999999999999999ULL, true, false, false},
        SemanticsCase{"content_length_repeated_equal",
                      "POST / HTTP/1.1\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\n",
                      BodyKind::kLength, 5, true, false, false},
        SemanticsCase{"content_length_list_equal",
                      "POST / HTTP/1.1\r\nContent-Length: 5, 5 ,5\r\n\r\n", BodyKind::kLength, 5,
                      true, false, false},
        SemanticsCase{"chunked", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                      BodyKind::kChunked, 0, true, false, false},
        SemanticsCase{"gzip_chunked", "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n",
                      BodyKind::kChunked, 0, true, false, false},
        SemanticsCase{"te_two_headers",
                      "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n"
                      "\r\n",
                      BodyKind::kChunked, 0, true, false, false},
        SemanticsCase{"expect_continue",
                      "PUT / HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n",
                      BodyKind::kLength, 1, true, true, false},
        SemanticsCase{"expect_other", "PUT / HTTP/1.1\r\nExpect: something\r\n\r\n",
                      BodyKind::kNone, 0, true, false, false},
        SemanticsCase{"expect_ignored_http10",
                      "PUT / HTTP/1.0\r\nExpect: 100-continue\r\nConnection: keep-alive\r\n\r\n",
                      BodyKind::kNone, 0, true, false, false},
        SemanticsCase{"upgrade",
                      "GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
                      BodyKind::kNone, 0, true, false, true},
        SemanticsCase{"upgrade_in_list",
                      "GET / HTTP/1.1\r\nConnection: keep-alive, upgrade\r\nupgrade: h2c\r\n\r\n",
                      BodyKind::kNone, 0, true, false, true},
        SemanticsCase{"upgrade_header_only", "GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
                      BodyKind::kNone, 0, true, false, false},
        SemanticsCase{"upgrade_connection_only", "GET / HTTP/1.1\r\nConnection: upgrade\r\n\r\n",
                      BodyKind::kNone, 0, true, false, false},
        SemanticsCase{"upgrade_ignored_http10",
                      "GET / HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
                      BodyKind::kNone, 0, false, false, false}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(RequestHead, HostHeader) {
  RequestHead h;
  ParseError e;
  ASSERT_EQ(ParseReq("GET / HTTP/1.1\r\nhOsT:  example.com:8080 \r\n\r\n", &h, &e),
            ParseStatus::kComplete);
  EXPECT_EQ(h.host_header, "example.com:8080");
  EXPECT_EQ(h.host, "");  // origin-form: the proxy takes host and port from the Host header
  ASSERT_EQ(ParseReq("GET / HTTP/1.1\r\n\r\n", &h, &e), ParseStatus::kComplete);
  EXPECT_EQ(h.host_header, "");
  ASSERT_EQ(ParseReq("GET http://a/ HTTP/1.1\r\nHost: b\r\n\r\n", &h, &e), ParseStatus::kComplete);
  EXPECT_EQ(h.host, "a");
  EXPECT_EQ(h.host_header, "b");
}

// ---- responses -----------------------------------------------------------------------------

struct ResponseCase {
  const char* name;
  std::string head;
  std::string method;
  int status;
  BodyKind body;
  uint64_t content_length;
  bool keep_alive;
};

class ResponseTest : public ::testing::TestWithParam<ResponseCase> {};

TEST_P(ResponseTest, Frames) {
  const ResponseCase& c = GetParam();
  ResponseHead h;
  ParseError e;
  ASSERT_EQ(ParseResponseHead(c.head, c.method, Limits(), &h, &e), ParseStatus::kComplete)
      << e.reason;
  EXPECT_EQ(h.status, c.status);
  EXPECT_EQ(h.body, c.body);
  EXPECT_EQ(h.content_length, c.content_length);
  EXPECT_EQ(h.keep_alive, c.keep_alive);
  EXPECT_EQ(h.head_size, c.head.size());
}

INSTANTIATE_TEST_SUITE_P(
    Responses, ResponseTest,
    ::testing::Values(
        ResponseCase{"length", "HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n", "GET", 200,
                     BodyKind::kLength, 12, true},
        ResponseCase{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "GET", 200,
                     BodyKind::kChunked, 0, true},
        ResponseCase{"te_wins_over_cl",
                     "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
                     "GET", 200, BodyKind::kChunked, 0, false},
        ResponseCase{"te_not_chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "GET",
                     200, BodyKind::kUntilClose, 0, false},
        ResponseCase{"te_chunked_not_last",
                     "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", "GET", 200,
                     BodyKind::kUntilClose, 0, false},
        ResponseCase{"no_framing", "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n", "GET",
                     200, BodyKind::kUntilClose, 0, false},
        ResponseCase{"head_method", "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", "HEAD", 200,
                     BodyKind::kNone, 0, true},
        ResponseCase{"head_chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                     "HEAD", 200, BodyKind::kNone, 0, true},
        ResponseCase{"s100", "HTTP/1.1 100 Continue\r\n\r\n", "POST", 100, BodyKind::kNone, 0,
                     true},
        ResponseCase{"s101", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
                     "GET", 101, BodyKind::kNone, 0, true},
        ResponseCase{"s204", "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", "GET", 204,
                     BodyKind::kNone, 0, true},
        ResponseCase{"s304", "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n", "GET", 304,
                     BodyKind::kNone, 0, true},
        ResponseCase{"connect_200", "HTTP/1.1 200 Connection established\r\n\r\n", "CONNECT", 200,
                     BodyKind::kNone, 0, true},
        ResponseCase{"connect_407", "HTTP/1.1 407 Auth\r\nContent-Length: 0\r\n\r\n", "CONNECT",
                     407, BodyKind::kLength, 0, true},
        ResponseCase{"close", "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n",
                     "GET", 200, BodyKind::kLength, 1, false},
        ResponseCase{"http10", "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", "GET", 200,
                     BodyKind::kLength, 1, false},
        ResponseCase{"http10_keep_alive",
                     "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n",
                     "GET", 200, BodyKind::kLength, 1, true},
        ResponseCase{"no_reason", "HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n", "GET", 200,
                     BodyKind::kLength, 0, true},
        ResponseCase{"no_reason_no_space", "HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", "GET", 200,
                     BodyKind::kLength, 0, true},
        ResponseCase{"bare_lf", "HTTP/1.1 404 Not Found\nContent-Length: 0\n\n", "GET", 404,
                     BodyKind::kLength, 0, true},
        ResponseCase{"status_999", "HTTP/1.1 999 Odd\r\nContent-Length: 0\r\n\r\n", "GET", 999,
                     BodyKind::kLength, 0, true}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(ResponseHead, Fields) {
  const std::string in = "HTTP/1.1 404 Not  Found\r\nServer: x\r\nContent-Length: 0\r\n\r\nrest";
  ResponseHead h;
  ParseError e;
  ASSERT_EQ(ParseResponseHead(in, "GET", Limits(), &h, &e), ParseStatus::kComplete);
  EXPECT_EQ(h.version, "HTTP/1.1");
  EXPECT_EQ(h.reason, "Not  Found");
  ASSERT_EQ(h.headers.size(), 2u);
  EXPECT_EQ(FindHeader(h.headers, "server"), "x");
  EXPECT_EQ(h.head_size, in.size() - 4);
}

class ResponseErrorTest : public ::testing::TestWithParam<ErrorCase> {};

TEST_P(ResponseErrorTest, Rejects) {
  const ErrorCase& c = GetParam();
  ResponseHead h;
  ParseError e;
  ASSERT_EQ(ParseResponseHead(c.head, "GET", Limits(), &h, &e), ParseStatus::kError);
  EXPECT_EQ(e.status, c.status);
}

INSTANTIATE_TEST_SUITE_P(
    Errors, ResponseErrorTest,
    ::testing::Values(ErrorCase{"http2", "HTTP/2.0 200 OK\r\n\r\n", 505},
                      ErrorCase{"garbage_version", "HTTX/1.1 200 OK\r\n\r\n", 505},
                      ErrorCase{"status_2_digits", "HTTP/1.1 20 OK\r\n\r\n", 400},
                      ErrorCase{"status_4_digits", "HTTP/1.1 2000 OK\r\n\r\n", 400},
                      ErrorCase{"status_099", "HTTP/1.1 099 OK\r\n\r\n", 400},
                      ErrorCase{"status_alpha", "HTTP/1.1 2x0 OK\r\n\r\n", 400},
                      ErrorCase{"ctl_in_reason", "HTTP/1.1 200 O\x01K\r\n\r\n", 400},
                      ErrorCase{"bare_cr_reason", "HTTP/1.1 200 O\rK\r\n\r\n", 400},
                      ErrorCase{"cl_differs",
                                "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                                400},
                      ErrorCase{"cl_bad", "HTTP/1.1 200 OK\r\nContent-Length: 1a\r\n\r\n", 400},
                      ErrorCase{"obs_fold", "HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n", 400},
                      ErrorCase{"space_before_colon", "HTTP/1.1 200 OK\r\nX : a\r\n\r\n", 400}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(ResponseHead, TooLarge) {
  Limits limits;
  limits.max_head_bytes = 32;
  ResponseHead h;
  ParseError e;
  EXPECT_EQ(
      ParseResponseHead("HTTP/1.1 200 OK\r\nX: " + std::string(40, 'a'), "GET", limits, &h, &e),
      ParseStatus::kError);
  EXPECT_EQ(e.status, 431);
}

// ---- helpers ------------------------------------------------------------------------------------

TEST(Helpers, FindHeader) {
  const std::vector<Header> hs = {{"Host", "a"}, {"X-Y", "1"}, {"x-y", "2"}};
  EXPECT_EQ(FindHeader(hs, "host"), "a");
  EXPECT_EQ(FindHeader(hs, "X-y"), "1");
  EXPECT_EQ(FindHeader(hs, "missing"), "");
  EXPECT_EQ(FindHeader({}, "host"), "");
}

TEST(Helpers, EqualsIgnoreCase) {
  EXPECT_TRUE(EqualsIgnoreCase("Content-Length", "content-LENGTH"));
  EXPECT_TRUE(EqualsIgnoreCase("", ""));
  EXPECT_FALSE(EqualsIgnoreCase("abc", "abd"));
  EXPECT_FALSE(EqualsIgnoreCase("abc", "ab"));
  EXPECT_FALSE(EqualsIgnoreCase("\r", "-"));  // no |0x20 aliasing of non-letters
  EXPECT_FALSE(EqualsIgnoreCase("@", "`"));
}

struct TokenCase {
  const char* list;
  const char* token;
  bool want;
};

TEST(Helpers, HasToken) {
  const TokenCase cases[] = {
      {"keep-alive, Upgrade", "upgrade", true},
      {"keep-alive, Upgrade", "keep-alive", true},
      {"close", "close", true},
      {"  close  ", "close", true},
      {"\tclose\t,", "close", true},
      {",,close,,", "close", true},
      {"closed", "close", false},
      {"xclose", "close", false},
      {"clo se", "close", false},
      {"", "close", false},
      {"a, b, c", "", false},
      {"a,b,c", "C", true},
  };
  for (const TokenCase& c : cases) {
    EXPECT_EQ(HasToken(c.list, c.token), c.want) << c.list << " / " << c.token;
  }
}

TEST(Helpers, IsHopByHop) {
  for (const char* h : {"Connection", "keep-alive", "Proxy-Connection", "Proxy-Authorization",
                        "proxy-authenticate", "TE", "Trailer", "Transfer-Encoding", "UPGRADE"}) {
    EXPECT_TRUE(IsHopByHop(h, "")) << h;
  }
  for (const char* h : {"Host", "Content-Length", "Trailers", "Cookie", "Authorization"}) {
    EXPECT_FALSE(IsHopByHop(h, "")) << h;
  }
  EXPECT_TRUE(IsHopByHop("X-Secret", "close, x-secret"));
  EXPECT_FALSE(IsHopByHop("X-Secret", "close, x-secrets"));
}

// ---- ChunkedDecoder -----------------------------------------------------------------------------

struct Decoded {
  ChunkedDecoder::Result result;
  size_t consumed;
  std::string payload;
  uint64_t payload_bytes;
  std::string error;
};

Decoded DecodeOneShot(std::string_view in, ChunkedDecoder::Limits limits = {}) {
  ChunkedDecoder d(limits);
  Decoded out;
  out.result = d.Feed(in, &out.consumed, [&](std::string_view piece) {
    EXPECT_GE(piece.data(), in.data());
    EXPECT_LE(piece.data() + piece.size(), in.data() + in.size());
    out.payload.append(piece);
  });
  out.payload_bytes = d.payload_bytes();
  out.error = std::string(d.error());
  return out;
}

// Feeds one byte per call, as the slowest peer would send it.
Decoded DecodeByteByByte(std::string_view in, ChunkedDecoder::Limits limits = {}) {
  ChunkedDecoder d(limits);
  Decoded out{ChunkedDecoder::Result::kNeedMore, 0, "", 0, ""};
  for (size_t i = 0; i < in.size(); ++i) {
    size_t consumed = 0;
    out.result = d.Feed(in.substr(i, 1), &consumed,
                        [&](std::string_view piece) { out.payload.append(piece); });
    out.consumed += consumed;
    if (out.result != ChunkedDecoder::Result::kNeedMore) break;
  }
  out.payload_bytes = d.payload_bytes();
  out.error = std::string(d.error());
  return out;
}

struct ChunkCase {
  const char* name;
  std::string body;  // a complete chunked body (possibly followed by other bytes)
  std::string payload;
  size_t body_size;  // where the body ends
};

class ChunkedValidTest : public ::testing::TestWithParam<ChunkCase> {};

TEST_P(ChunkedValidTest, OneShotAndByteByByteAgree) {
  const ChunkCase& c = GetParam();
  const Decoded one = DecodeOneShot(c.body);
  EXPECT_EQ(one.result, ChunkedDecoder::Result::kDone) << one.error;
  EXPECT_EQ(one.payload, c.payload);
  EXPECT_EQ(one.payload_bytes, c.payload.size());
  EXPECT_EQ(one.consumed, c.body_size);
  const Decoded slow = DecodeByteByByte(c.body);
  EXPECT_EQ(slow.result, ChunkedDecoder::Result::kDone) << slow.error;
  EXPECT_EQ(slow.payload, c.payload);
  EXPECT_EQ(slow.payload_bytes, c.payload.size());
  EXPECT_EQ(slow.consumed, c.body_size);
  // Every split point in two feeds gives the same result too.
  for (size_t cut = 0; cut <= c.body_size; ++cut) {
    ChunkedDecoder d;
    std::string payload;
    size_t a = 0, b = 0;
    auto on = [&](std::string_view p) { payload.append(p); };
    const std::string_view in(c.body);
    auto r = d.Feed(in.substr(0, cut), &a, on);
    if (r == ChunkedDecoder::Result::kNeedMore) r = d.Feed(in.substr(cut), &b, on);
    EXPECT_EQ(r, ChunkedDecoder::Result::kDone) << cut;
    EXPECT_EQ(a + b, c.body_size) << cut;
    EXPECT_EQ(payload, c.payload) << cut;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Valid, ChunkedValidTest,
    ::testing::Values(
        ChunkCase{"simple", "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", "hello world", 26},
        ChunkCase{"empty", "0\r\n\r\n", "", 5},
        ChunkCase{"lower_hex", "a\r\n0123456789\r\n0\r\n\r\n", "0123456789", 20},
        ChunkCase{"upper_hex", "A\r\n0123456789\r\n0\r\n\r\n", "0123456789", 20},
        ChunkCase{"mixed_hex_leading_zeros", "00000000000000B\r\nhello world\r\n000\r\n\r\n",
                  "hello world", 37},
        ChunkCase{"extensions", "5;name=value;flag\r\nhello\r\n0;last\r\n\r\n", "hello", 36},
        ChunkCase{"quoted_extension", "5 ; a=\"x y\"\r\nhello\r\n0\r\n\r\n", "hello", 25},
        ChunkCase{"trailers", "3\r\nabc\r\n0\r\nX-Sum: 1\r\nX-Other: two\r\n\r\n", "abc", 37},
        ChunkCase{"followed_by_next_message", "2\r\nhi\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n", "hi",
                  12},
        ChunkCase{"crlf_inside_data", "4\r\n\r\n\r\n\r\n0\r\n\r\n", "\r\n\r\n", 14}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(ChunkedDecoder, BytesAfterFinalChunkNotConsumed) {
  ChunkedDecoder d;
  size_t consumed = 0;
  const std::string in = "1\r\nx\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n";
  EXPECT_EQ(d.Feed(in, &consumed, [](std::string_view) {}), ChunkedDecoder::Result::kDone);
  EXPECT_EQ(consumed, 11u);
  EXPECT_TRUE(d.done());
  // Feeding again after the end consumes nothing.
  EXPECT_EQ(d.Feed("more", &consumed, [](std::string_view) {}), ChunkedDecoder::Result::kDone);
  EXPECT_EQ(consumed, 0u);
}

TEST(ChunkedDecoder, LargeChunkAcrossFeeds) {
  ChunkedDecoder d;
  size_t consumed = 0;
  uint64_t seen = 0;
  auto on = [&](std::string_view p) { seen += p.size(); };
  EXPECT_EQ(d.Feed("10000\r\n", &consumed, on), ChunkedDecoder::Result::kNeedMore);
  const std::string block(4096, 'z');
  for (int i = 0; i < 16; ++i) {
    EXPECT_EQ(d.Feed(block, &consumed, on), ChunkedDecoder::Result::kNeedMore);
    EXPECT_EQ(consumed, block.size());
  }
  EXPECT_EQ(d.Feed("\r\n0\r\n\r\n", &consumed, on), ChunkedDecoder::Result::kDone);
  EXPECT_EQ(seen, 65536u);
  EXPECT_EQ(d.payload_bytes(), 65536u);
}

TEST(ChunkedDecoder, SixteenHexDigitsAccepted) {
  ChunkedDecoder d;
  size_t consumed = 0;
  EXPECT_EQ(d.Feed("FFFFFFFFFFFFFFFF\r\nabc", &consumed, [](std::string_view) {}),
            ChunkedDecoder::Result::kNeedMore);
  EXPECT_EQ(d.payload_bytes(), 3u);
}

struct ChunkErrorCase {
  const char* name;
  std::string body;
};

class ChunkedErrorTest : public ::testing::TestWithParam<ChunkErrorCase> {};

TEST_P(ChunkedErrorTest, Rejects) {
  const ChunkErrorCase& c = GetParam();
  ChunkedDecoder::Limits limits;
  limits.max_line_bytes = 32;
  limits.max_trailer_bytes = 32;
  const Decoded one = DecodeOneShot(c.body, limits);
  EXPECT_EQ(one.result, ChunkedDecoder::Result::kError);
  EXPECT_FALSE(one.error.empty());
  const Decoded slow = DecodeByteByByte(c.body, limits);
  EXPECT_EQ(slow.result, ChunkedDecoder::Result::kError);
  EXPECT_EQ(slow.error, one.error);
}

INSTANTIATE_TEST_SUITE_P(
    Errors, ChunkedErrorTest,
    ::testing::Values(
        ChunkErrorCase{"overflow_17_digits", "10000000000000000\r\n"},
        ChunkErrorCase{"too_many_zeros", "00000000000000000\r\n"},
        ChunkErrorCase{"no_digits", "\r\n"}, ChunkErrorCase{"ext_without_size", ";a\r\n"},
        ChunkErrorCase{"not_hex", "g\r\n"}, ChunkErrorCase{"sign", "+5\r\nhello\r\n"},
        ChunkErrorCase{"hex_prefix", "0x5\r\nhello\r\n"},
        ChunkErrorCase{"space_between_digits", "1 0\r\n"},
        ChunkErrorCase{"bare_lf_size", "5\nhello\r\n0\r\n\r\n"},
        ChunkErrorCase{"bare_cr_size", "5\rhello\r\n"},
        ChunkErrorCase{"lf_in_ext", "5;a\nb\r\nhello\r\n"},
        ChunkErrorCase{"nul_in_ext", std::string("5;a\0\r\nhello\r\n", 13)},
        ChunkErrorCase{"missing_crlf_after_data", "5\r\nhelloX\r\n0\r\n\r\n"},
        ChunkErrorCase{"lf_only_after_data", "5\r\nhello\n0\r\n\r\n"},
        ChunkErrorCase{"cr_only_after_data", "5\r\nhello\rX"},
        ChunkErrorCase{"data_longer_than_size", "3\r\nhello\r\n0\r\n\r\n"},
        ChunkErrorCase{"line_too_long", "5;" + std::string(40, 'a') + "\r\nhello\r\n"},
        ChunkErrorCase{"trailer_too_big", "0\r\nX: " + std::string(40, 'a') + "\r\n\r\n"},
        ChunkErrorCase{"many_small_trailers_too_big",
                       "0\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\nF: 6\r\n\r\n"},
        ChunkErrorCase{"trailer_obs_fold", "0\r\nX: 1\r\n 2\r\n\r\n"},
        ChunkErrorCase{"trailer_bare_lf", "0\r\nX: 1\n\r\n"},
        ChunkErrorCase{"trailer_ctl", "0\r\nX: \x01\r\n\r\n"},
        ChunkErrorCase{"final_bare_lf", "0\r\n\n"}, ChunkErrorCase{"final_bare_cr", "0\r\n\rX"}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(ChunkedDecoder, ErrorIsSticky) {
  ChunkedDecoder d;
  size_t consumed = 0;
  EXPECT_EQ(d.Feed("zz", &consumed, [](std::string_view) {}), ChunkedDecoder::Result::kError);
  EXPECT_EQ(consumed, 0u);
  EXPECT_EQ(d.Feed("0\r\n\r\n", &consumed, [](std::string_view) {}),
            ChunkedDecoder::Result::kError);
  EXPECT_FALSE(d.done());
}

TEST(ChunkedDecoder, LineLimitCountsWholeLine) {
  ChunkedDecoder::Limits limits;
  limits.max_line_bytes = 8;
  // "5;abcd\r" is 7 bytes of size line: fine.
  EXPECT_EQ(DecodeOneShot("5;abcd\r\nhello\r\n0\r\n\r\n", limits).result,
            ChunkedDecoder::Result::kDone);
  // Each size line is measured on its own, not summed over chunks.
  EXPECT_EQ(DecodeOneShot("1;abcd\r\nx\r\n1;abcd\r\ny\r\n0;abcd\r\n\r\n", limits).result,
            ChunkedDecoder::Result::kDone);
  EXPECT_EQ(DecodeOneShot("5;abcdefgh\r\nhello\r\n0\r\n\r\n", limits).result,
            ChunkedDecoder::Result::kError);
}

}  // namespace
}  // namespace oxg::proxy::http
