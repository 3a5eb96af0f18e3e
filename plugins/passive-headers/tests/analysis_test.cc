// passive-headers' checks on tables of responses, and its pairing and deduplication state.
#include "analysis.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>

namespace oxg::passive_headers {
namespace {

using sdk::HttpMessage;

HttpMessage Parse(const std::string& data, bool is_request, const std::string& flow = "F") {
  HttpMessage m;
  std::string error;
  EXPECT_TRUE(sdk::ParseHttpMessage(data, is_request, &m, &error)) << error;
  m.flow_id = flow;
  return m;
}

const RequestInfo kHttps{"https://shop.test/cart", "shop.test", true};
const RequestInfo kHttp{"http://shop.test/cart", "shop.test", false};

// The fully hardened HTML response; each row of the tables below removes or changes something.
const std::string kGoodHead =
    "HTTP/1.1 200 OK\r\n"
    "Content-Type: text/html; charset=utf-8\r\n"
    "Content-Security-Policy: default-src 'self'\r\n"
    "X-Content-Type-Options: nosniff\r\n"
    "X-Frame-Options: DENY\r\n"
    "Strict-Transport-Security: max-age=31536000\r\n"
    "Referrer-Policy: no-referrer\r\n"
    "Server: nginx\r\n";

std::string Without(std::string head, const std::string& header) {
  const size_t pos = head.find(header + ":");
  EXPECT_NE(pos, std::string::npos) << header;
  head.erase(pos, head.find("\r\n", pos) + 2 - pos);
  return head;
}

std::vector<std::string> Summaries(const std::vector<Issue>& issues) {
  std::vector<std::string> out;
  for (const Issue& i : issues) {
    std::string subject;
    for (const auto& [k, v] : i.finding.metadata) {
      if (k == "header" || k == "cookie") subject = v;
    }
    out.push_back(i.finding.type + " " + subject);
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<std::string> Check(const RequestInfo& req, const std::string& response,
                               const Config& config = {}) {
  return Summaries(Analyze(req, Parse(response, false), config));
}

TEST(PassiveHeadersAnalysis, HardenedResponseIsClean) {
  EXPECT_TRUE(Check(kHttps, kGoodHead + "\r\n").empty());
}

TEST(PassiveHeadersAnalysis, MissingSecurityHeaders) {
  struct Row {
    std::string response;
    const RequestInfo* request;
    std::vector<std::string> expected;
  };
  const std::vector<Row> rows = {
      {Without(kGoodHead, "Content-Security-Policy") + "\r\n",
       &kHttps,
       {"missing-security-header Content-Security-Policy"}},
      {Without(kGoodHead, "X-Content-Type-Options") + "\r\n",
       &kHttps,
       {"missing-security-header X-Content-Type-Options"}},
      {kGoodHead + "X-Content-Type-Options: sniff-away\r\n\r\n", &kHttps, {}},  // first one wins
      {Without(kGoodHead, "X-Content-Type-Options") + "X-Content-Type-Options: nope\r\n\r\n",
       &kHttps,
       {"missing-security-header X-Content-Type-Options"}},
      {Without(kGoodHead, "X-Frame-Options") + "\r\n",
       &kHttps,
       {"missing-security-header X-Frame-Options"}},
      // CSP frame-ancestors replaces X-Frame-Options.
      {Without(Without(kGoodHead, "X-Frame-Options"), "Content-Security-Policy") +
           "Content-Security-Policy: frame-ancestors 'none'\r\n\r\n",
       &kHttps,
       {}},
      {Without(kGoodHead, "Strict-Transport-Security") + "\r\n",
       &kHttps,
       {"missing-security-header Strict-Transport-Security"}},
      // HSTS is meaningless over plain HTTP.
      {Without(kGoodHead, "Strict-Transport-Security") + "\r\n", &kHttp, {}},
      {Without(kGoodHead, "Referrer-Policy") + "\r\n",
       &kHttps,
       {"missing-security-header Referrer-Policy"}},
      // Only HTML: JSON, images and redirects are not pages.
      {"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n", &kHttps, {}},
      {"HTTP/1.1 302 Found\r\nContent-Type: text/html\r\nLocation: /\r\n\r\n", &kHttps, {}},
      {"HTTP/1.1 304 Not Modified\r\n\r\n", &kHttps, {}},
      // Sniffed HTML without a Content-Type; XHTML.
      {"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n  <!DOCTYPE html><p>",
       &kHttp,
       {"missing-security-header Content-Security-Policy",
        "missing-security-header Referrer-Policy", "missing-security-header X-Content-Type-Options",
        "missing-security-header X-Frame-Options"}},
      {"HTTP/1.1 200 OK\r\nContent-Type: Application/XHTML+xml\r\n\r\n",
       &kHttps,
       {"missing-security-header Content-Security-Policy",
        "missing-security-header Referrer-Policy",
        "missing-security-header Strict-Transport-Security",
        "missing-security-header X-Content-Type-Options",
        "missing-security-header X-Frame-Options"}},
  };
  for (const Row& row : rows) {
    SCOPED_TRACE(row.response);
    EXPECT_EQ(Check(*row.request, row.response), row.expected);
  }
}

TEST(PassiveHeadersAnalysis, InsecureCookies) {
  struct Row {
    std::string set_cookie;
    const RequestInfo* request;
    std::string missing;  // "" = no finding
  };
  const std::vector<Row> rows = {
      {"sid=[REDACTED]; Path=/; Secure; HttpOnly; SameSite=Lax", &kHttps, ""},
      {"sid=[REDACTED]; Path=/; HttpOnly; SameSite=Strict", &kHttps, "Secure"},
      {"sid=[REDACTED]; Path=/; HttpOnly; SameSite=Strict", &kHttp, ""},  // Secure needs https
      {"sid=[REDACTED]; secure; samesite=none", &kHttps, "HttpOnly"},
      {"sid=[REDACTED]; Secure; HttpOnly", &kHttps, "SameSite"},
      {"sid=[REDACTED]; Secure; HttpOnly; SameSite=", &kHttps, "SameSite"},
      {"sid=[REDACTED]", &kHttps, "Secure, HttpOnly, SameSite"},
      {"sid=[REDACTED]", &kHttp, "HttpOnly, SameSite"},
      {"sid=; Max-Age=0", &kHttps, ""},  // being deleted
      {"sid=; Expires=Thu, 01 Jan 1970 00:00:00 GMT", &kHttps, ""},
      {"=[REDACTED]", &kHttps, ""},  // no name to report
      {"", &kHttps, ""},
  };
  for (const Row& row : rows) {
    SCOPED_TRACE(row.set_cookie);
    const std::vector<Issue> issues = Analyze(
        *row.request,
        Parse("HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nSet-Cookie: " + row.set_cookie +
                  "\r\n\r\n",
              false),
        Config{});
    if (row.missing.empty()) {
      EXPECT_TRUE(issues.empty());
      continue;
    }
    ASSERT_EQ(issues.size(), 1u);
    const sdk::Finding& f = issues[0].finding;
    EXPECT_EQ(f.type, "insecure-cookie");
    EXPECT_EQ(f.target, row.request->url);
    EXPECT_NE(f.message.find(row.missing), std::string::npos) << f.message;
    EXPECT_EQ(f.evidence.rfind("Set-Cookie: sid=[REDACTED]", 0), 0u) << f.evidence;
    EXPECT_EQ(f.severity, row.missing.find("Secure") != std::string::npos ? sdk::Severity::kMedium
                                                                          : sdk::Severity::kLow);
    bool has_missing = false;
    for (const auto& [k, v] : f.metadata) has_missing |= (k == "missing" && v == row.missing);
    EXPECT_TRUE(has_missing);
  }
}

TEST(PassiveHeadersAnalysis, CookieValueNeverInFinding) {
  // Even a raw variant's real value stays out of the finding.
  const auto issues = Analyze(
      kHttps, Parse("HTTP/1.1 200 OK\r\nSet-Cookie: sid=s3cr3t-value; Path=/\r\n\r\n", false), {});
  ASSERT_EQ(issues.size(), 1u);
  EXPECT_EQ(issues[0].finding.evidence, "Set-Cookie: sid=[REDACTED]; Path=/");
  EXPECT_EQ(issues[0].finding.message.find("s3cr3t"), std::string::npos);
}

TEST(PassiveHeadersAnalysis, VerboseBanners) {
  struct Row {
    std::string header;
    std::vector<std::string> expected;
  };
  const std::vector<Row> rows = {
      {"Server: Apache/2.4.41 (Ubuntu)", {"verbose-server-banner Server"}},
      {"Server: Microsoft-IIS/10.0", {"verbose-server-banner Server"}},
      {"Server: nginx/1", {"verbose-server-banner Server"}},
      {"Server: nginx", {}},
      {"Server: AmazonS3", {}},
      {"Server: cloudflare", {}},
      {"X-Powered-By: PHP/7.4.3", {"verbose-server-banner X-Powered-By"}},
      {"X-Powered-By: Express", {}},
      {"X-Powered-By: ASP.NET", {}},
      {"X-AspNet-Version: 4.0.30319", {"verbose-server-banner X-AspNet-Version"}},
      {"X-AspNetMvc-Version: 5.2", {"verbose-server-banner X-AspNetMvc-Version"}},
      {"X-AspNet-Version:", {}},
  };
  for (const Row& row : rows) {
    SCOPED_TRACE(row.header);
    EXPECT_EQ(Check(kHttps, "HTTP/1.1 404 Not Found\r\n" + row.header + "\r\n\r\n"), row.expected);
  }
  const auto issues = Analyze(
      kHttps, Parse("HTTP/1.1 200 OK\r\nServer: Apache/2.4.41 (Ubuntu)\r\n\r\n", false), {});
  ASSERT_EQ(issues.size(), 1u);
  EXPECT_EQ(issues[0].finding.evidence, "Server: Apache/2.4.41 (Ubuntu)");
  EXPECT_EQ(issues[0].finding.severity, sdk::Severity::kLow);
}

TEST(PassiveHeadersAnalysis, FindingsStayWithinBusLimits) {
  // Non-ASCII bytes and a huge banner: printable ASCII only, evidence bounded, valid type.
  const std::string banner = "Apache/2.4 " + std::string("\xff\xfe") + std::string(5000, 'x');
  const auto issues =
      Analyze(kHttps, Parse("HTTP/1.1 200 OK\r\nServer: " + banner + "\r\n\r\n", false), {});
  ASSERT_EQ(issues.size(), 1u);
  const sdk::Finding& f = issues[0].finding;
  EXPECT_LE(f.evidence.size(), 600u);
  EXPECT_LE(f.message.size(), 4096u);
  for (const std::string* s : {&f.evidence, &f.message}) {
    for (char c : *s) EXPECT_TRUE(c >= 0x20 && c < 0x7f);
  }
  for (const auto& [k, v] : f.metadata) {
    EXPECT_LE(v.size(), 260u);
    for (char c : k)
      EXPECT_TRUE(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-');
  }
}

TEST(PassiveHeadersAnalysis, DescribeRequest) {
  RequestInfo r = DescribeRequest(Parse("GET http://User@Shop.Test:8080/a HTTP/1.1\r\n\r\n", true));
  EXPECT_EQ(r.url, "http://User@Shop.Test:8080/a");
  EXPECT_EQ(r.host, "shop.test:8080");
  EXPECT_FALSE(r.https);
  r = DescribeRequest(Parse("GET /login?x=1 HTTP/1.1\r\nHost: Shop.Test\r\n\r\n", true));
  EXPECT_EQ(r.url, "https://Shop.Test/login?x=1");
  EXPECT_EQ(r.host, "shop.test");
  EXPECT_TRUE(r.https);
  r = DescribeRequest(Parse("GET /x HTTP/1.1\r\n\r\n", true));
  EXPECT_EQ(r.host, "");
}

TEST(PassiveHeadersAnalysis, Config) {
  Config c;
  EXPECT_TRUE(ParseConfig("", &c).ok());
  EXPECT_TRUE(ParseConfig("{}", &c).ok());
  ASSERT_TRUE(ParseConfig(R"({"disabled_checks": ["referrer-policy", "server-banner"]})", &c).ok());
  EXPECT_FALSE(c.Enabled("referrer-policy"));
  EXPECT_TRUE(c.Enabled("x-frame-options"));
  EXPECT_EQ(Check(kHttps, Without(kGoodHead, "Referrer-Policy") + "Server: Apache/2.4\r\n\r\n", c),
            std::vector<std::string>{});
  Config bad;
  EXPECT_FALSE(ParseConfig(R"({"disabled_checks": ["nope"]})", &bad).ok());
  EXPECT_FALSE(ParseConfig(R"({"disable": []})", &bad).ok());
  EXPECT_FALSE(ParseConfig(R"({"disabled_checks": "server-banner"})", &bad).ok());
  EXPECT_FALSE(ParseConfig("[", &bad).ok());
  EXPECT_FALSE(ParseConfig("[]", &bad).ok());
}

TEST(PassiveHeadersState, PairsByFlowAndReportsOncePerHost) {
  PassiveHeaders p{Config{}};
  const std::string response =
      "HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nServer: Apache/2.4.41\r\n"
      "Set-Cookie: a=[REDACTED]; Secure; HttpOnly\r\n\r\n";
  p.OnRequest(Parse("GET /1 HTTP/1.1\r\nHost: a.test\r\n\r\n", true, "F1"));
  p.OnRequest(Parse("GET /2 HTTP/1.1\r\nHost: a.test\r\n\r\n", true, "F2"));
  p.OnRequest(Parse("GET /3 HTTP/1.1\r\nHost: b.test\r\n\r\n", true, "F3"));
  EXPECT_EQ(p.pending(), 3u);
  auto f1 = p.OnResponse(Parse(response, false, "F1"));
  ASSERT_EQ(f1.size(), 2u);  // banner + cookie (SameSite)
  EXPECT_EQ(f1[0].target, "https://a.test/1");
  EXPECT_TRUE(p.OnResponse(Parse(response, false, "F2")).empty());  // same host: suppressed
  EXPECT_EQ(p.suppressed(), 2u);
  EXPECT_EQ(p.OnResponse(Parse(response, false, "F3")).size(), 2u);  // another host
  EXPECT_TRUE(p.OnResponse(Parse(response, false, "F9")).empty());   // never seen
  EXPECT_EQ(p.unpaired_responses(), 1u);
  EXPECT_EQ(p.pending(), 0u);
}

TEST(PassiveHeadersState, PendingRequestsAreBounded) {
  PassiveHeaders p{Config{}};
  for (size_t i = 0; i < PassiveHeaders::kMaxPending + 10; ++i) {
    p.OnRequest(Parse("GET / HTTP/1.1\r\nHost: h" + std::to_string(i) + ".test\r\n\r\n", true,
                      "F" + std::to_string(i)));
  }
  EXPECT_EQ(p.pending(), PassiveHeaders::kMaxPending);
  const std::string response = "HTTP/1.1 200 OK\r\nServer: Apache/2.4\r\n\r\n";
  EXPECT_TRUE(p.OnResponse(Parse(response, false, "F0")).empty());  // evicted, oldest first
  EXPECT_EQ(p.unpaired_responses(), 1u);
  EXPECT_EQ(p.OnResponse(Parse(response, false, "F10")).size(), 1u);
}

TEST(PassiveHeadersState, ReportedSetIsBounded) {
  PassiveHeaders p{Config{}};
  const std::string response = "HTTP/1.1 200 OK\r\nServer: Apache/2.4\r\n\r\n";
  auto once = [&](size_t host) {
    const std::string id = "F" + std::to_string(host);
    p.OnRequest(Parse("GET / HTTP/1.1\r\nHost: h" + std::to_string(host) + "\r\n\r\n", true, id));
    return p.OnResponse(Parse(response, false, id)).size();
  };
  EXPECT_EQ(once(0), 1u);
  EXPECT_EQ(once(0), 0u);
  for (size_t i = 1; i <= PassiveHeaders::kMaxReported; ++i) once(i);
  EXPECT_EQ(once(0), 1u);  // forgotten after kMaxReported newer keys
}

}  // namespace
}  // namespace oxg::passive_headers
