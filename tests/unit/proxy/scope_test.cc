#include "proxy/scope.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

namespace oxg::proxy {
namespace {

using ::testing::HasSubstr;

// Builds a target from "scheme://host[:port]/path?query" the way the proxy would: host
// lower-case, IPv6 without brackets.
ScopeTarget Target(std::string url, std::optional<std::string> resolved = std::nullopt) {
  ScopeTarget t;
  t.url = url;
  t.resolved_ip = std::move(resolved);
  const size_t colon = url.find("://");
  t.scheme = url.substr(0, colon);
  std::string rest = url.substr(colon + 3);
  const size_t slash = rest.find('/');
  std::string authority = rest.substr(0, slash);
  t.path = slash == std::string::npos ? "/" : rest.substr(slash);
  if (!authority.empty() && authority[0] == '[') {
    const size_t close = authority.find(']');
    t.host = authority.substr(1, close - 1);
    authority = authority.substr(close + 1);
  } else {
    const size_t c = authority.find(':');
    t.host = authority.substr(0, c);
    authority = c == std::string::npos ? "" : authority.substr(c);
  }
  t.port = authority.empty() ? (t.scheme == "https" ? 443 : 80)
                             : static_cast<uint16_t>(std::stoi(authority.substr(1)));
  for (char& ch : t.host) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return t;
}

ScopePolicy MustParse(const std::string& yaml) {
  auto p = ParseScopePolicy(yaml, "scope.yaml");
  EXPECT_TRUE(p.ok()) << p.status() << "\n" << yaml;
  if (!p.ok()) std::abort();
  return *std::move(p);
}

struct DecideCase {
  const char* name;
  std::string policy;
  std::string url;
  std::optional<std::string> resolved;
  bool in_scope;
  std::string rule;  // expected description, or a substring of it
};

TEST(ScopePolicyTest, DecisionTable) {
  const std::string contract =
      "version: 1\n"
      "private_networks: block\n"
      "allow:   [{type: domain, value: example.com}, {type: url_prefix, value: "
      "\"https://api.example.com/v2\"}]\n"
      "deny:    [{type: path, value: /logout}, {type: cidr, value: 10.0.0.0/8}]\n";
  const std::string open = "version: 1\nprivate_networks: allow\n";
  const std::string blocked = "version: 1\n";  // private_networks defaults to block
  const DecideCase cases[] = {
      // Contract example: deny wins over allow.
      {"allowed domain",
       contract,
       "https://example.com/",
       {},
       true,
       "allow[0] domain \"example.com\" (scope.yaml:3)"},
      {"subdomain", contract, "https://www.shop.example.com/a", {}, true, "allow[0] domain"},
      {"deny path wins",
       contract,
       "https://example.com/logout",
       {},
       false,
       "deny[0] path \"/logout\" (scope.yaml:4)"},
      {"deny path with query",
       contract,
       "https://example.com/logout?next=/",
       {},
       false,
       "deny[0] path"},
      {"deny path subtree", contract, "https://example.com/logout/all", {}, false, "deny[0] path"},
      {"path is segment prefix",
       contract,
       "https://example.com/logouts",
       {},
       true,
       "allow[0] domain"},
      {"deny cidr on resolved ip", contract, "https://example.com/", "10.9.8.7", false,
       "deny[1] cidr \"10.0.0.0/8\""},
      {"deny cidr on literal", contract, "http://10.0.0.1/", {}, false, "deny[1] cidr"},
      {"partial label", contract, "https://badexample.com/", {}, false, "allow: no rule matched"},
      {"suffix not domain",
       contract,
       "https://example.com.evil.net/",
       {},
       false,
       "allow: no rule matched"},
      {"other domain", contract, "https://other.org/", {}, false, "allow: no rule matched"},

      // Empty allow list: everything not denied.
      {"empty allow", open, "https://anything.test/x", {}, true, "allow: empty list"},
      {"empty allow explicit",
       open + "allow: []\ndeny:\n",
       "https://anything.test/x",
       {},
       true,
       "allow: empty list"},
      {"empty allow with deny",
       open + "deny: [{type: domain, value: ads.test}]\n",
       "http://x.ads.test/",
       {},
       false,
       "deny[0] domain"},

      // domain: case-insensitive, trailing dot.
      {"domain case",
       open + "allow: [{type: domain, value: Example.COM.}]\n",
       "https://WWW.EXAMPLE.com./",
       {},
       true,
       "allow[0] domain \"Example.COM.\""},

      // wildcard: one or more whole labels, never the apex.
      {"wildcard one label",
       open + "allow: [{type: wildcard, value: \"*.example.com\"}]\n",
       "https://a.example.com/",
       {},
       true,
       "allow[0] wildcard"},
      {"wildcard two labels",
       open + "allow: [{type: wildcard, value: \"*.example.com\"}]\n",
       "https://a.b.example.com/",
       {},
       true,
       "allow[0] wildcard"},
      {"wildcard not apex",
       open + "allow: [{type: wildcard, value: \"*.example.com\"}]\n",
       "https://example.com/",
       {},
       false,
       "allow: no rule matched"},
      {"wildcard partial label",
       open + "allow: [{type: wildcard, value: \"*.example.com\"}]\n",
       "https://aexample.com/",
       {},
       false,
       "allow: no rule matched"},

      // url: exact.
      {"url exact",
       open + "allow: [{type: url, value: \"https://e.com/a?b=1\"}]\n",
       "https://e.com/a?b=1",
       {},
       true,
       "allow[0] url"},
      {"url not prefix",
       open + "allow: [{type: url, value: \"https://e.com/a\"}]\n",
       "https://e.com/a?b=1",
       {},
       false,
       "allow: no rule matched"},

      // url_prefix: on a boundary.
      {"url_prefix path",
       contract,
       "https://api.example.com/v2/users",
       {},
       true,
       "allow[0] domain"},
      {"url_prefix only",
       open + "allow: [{type: url_prefix, value: \"https://api.e.com/v2\"}]\n",
       "https://api.e.com/v2/users?x=1",
       {},
       true,
       "allow[0] url_prefix"},
      {"url_prefix exact",
       open + "allow: [{type: url_prefix, value: \"https://api.e.com/v2\"}]\n",
       "https://api.e.com/v2",
       {},
       true,
       "allow[0] url_prefix"},
      {"url_prefix query",
       open + "allow: [{type: url_prefix, value: \"https://api.e.com/v2\"}]\n",
       "https://api.e.com/v2?x",
       {},
       true,
       "allow[0] url_prefix"},
      {"url_prefix boundary",
       open + "allow: [{type: url_prefix, value: \"https://api.e.com/v2\"}]\n",
       "https://api.e.com/v2beta",
       {},
       false,
       "allow: no rule matched"},
      {"url_prefix host boundary",
       open + "allow: [{type: url_prefix, value: \"https://e.com\"}]\n",
       "https://e.com.evil.net/",
       {},
       false,
       "allow: no rule matched"},
      {"url_prefix trailing slash",
       open + "allow: [{type: url_prefix, value: \"https://e.com/a/\"}]\n",
       "https://e.com/a/b",
       {},
       true,
       "allow[0] url_prefix"},

      // path.
      {"path root",
       open + "allow: [{type: path, value: /}]\n",
       "https://e.com/anything",
       {},
       true,
       "allow[0] path"},
      {"path dir",
       open + "allow: [{type: path, value: /api/}]\n",
       "https://e.com/api/x",
       {},
       true,
       "allow[0] path"},
      {"path dir not sibling",
       open + "allow: [{type: path, value: /api/}]\n",
       "https://e.com/apix",
       {},
       false,
       "allow: no rule matched"},
      {"path case",
       open + "allow: [{type: path, value: /Admin}]\n",
       "https://e.com/admin",
       {},
       false,
       "allow: no rule matched"},

      // cidr and ip, IPv4 and IPv6.
      {"cidr v4",
       open + "allow: [{type: cidr, value: 203.0.113.0/24}]\n",
       "http://203.0.113.9/",
       {},
       true,
       "allow[0] cidr"},
      {"cidr v4 outside",
       open + "allow: [{type: cidr, value: 203.0.113.0/24}]\n",
       "http://203.0.114.9/",
       {},
       false,
       "allow: no rule matched"},
      {"cidr v4 resolved", open + "allow: [{type: cidr, value: 203.0.113.0/25}]\n",
       "https://e.com/", "203.0.113.127", true, "allow[0] cidr"},
      {"cidr v4 odd prefix", open + "allow: [{type: cidr, value: 203.0.113.0/25}]\n",
       "https://e.com/", "203.0.113.128", false, "allow: no rule matched"},
      {"cidr v4 matches mapped v6",
       open + "allow: [{type: cidr, value: 203.0.113.0/24}]\n",
       "http://[::ffff:203.0.113.5]/",
       {},
       true,
       "allow[0] cidr"},
      {"cidr v6",
       open + "allow: [{type: cidr, value: \"2001:db8::/32\"}]\n",
       "http://[2001:db8:1::5]/",
       {},
       true,
       "allow[0] cidr"},
      {"cidr v6 outside",
       open + "allow: [{type: cidr, value: \"2001:db8::/32\"}]\n",
       "http://[2001:db9::5]/",
       {},
       false,
       "allow: no rule matched"},
      {"cidr zero",
       open + "deny: [{type: cidr, value: \"0.0.0.0/0\"}]\n",
       "http://1.2.3.4/",
       {},
       false,
       "deny[0] cidr"},
      {"cidr v4 not v6",
       open + "deny: [{type: cidr, value: \"0.0.0.0/0\"}]\n",
       "http://[2001:db8::1]/",
       {},
       true,
       "allow: empty list"},
      {"ip v4",
       open + "allow: [{type: ip, value: 198.51.100.7}]\n",
       "http://198.51.100.7:8080/",
       {},
       true,
       "allow[0] ip"},
      {"ip v4 other",
       open + "allow: [{type: ip, value: 198.51.100.7}]\n",
       "http://198.51.100.8/",
       {},
       false,
       "allow: no rule matched"},
      {"ip v6 numeric",
       open + "allow: [{type: ip, value: \"2001:db8::1\"}]\n",
       "http://[2001:0db8:0:0:0:0:0:0001]/",
       {},
       true,
       "allow[0] ip"},
      {"ip resolved", open + "deny: [{type: ip, value: \"2001:db8::1\"}]\n", "https://e.com/",
       "2001:db8::1", false, "deny[0] ip"},

      // pattern: RE2 searched in the full URL.
      {"pattern",
       open + "allow: [{type: pattern, value: \"\\\\.example\\\\.com/api/v[0-9]+/\"}]\n",
       "https://x.example.com/api/v12/users",
       {},
       true,
       "allow[0] pattern"},
      {"pattern no match",
       open + "allow: [{type: pattern, value: \"\\\\.example\\\\.com/api/v[0-9]+/\"}]\n",
       "https://x.example.com/api/vx/users",
       {},
       false,
       "allow: no rule matched"},
      {"pattern anchored",
       open + "deny: [{type: pattern, value: \"^http://\"}]\n",
       "https://e.com/http://",
       {},
       true,
       "allow: empty list"},

      // private_networks: block.
      {"block 10/8", blocked, "http://10.1.2.3/", {}, false, "private_networks: block"},
      {"block 127/8", blocked, "http://127.0.0.1:8080/", {}, false, "private_networks: block"},
      {"block 127 short form", blocked, "http://127.1/", {}, false, "private_networks: block"},
      {"block 127 decimal", blocked, "http://2130706433/", {}, false, "private_networks: block"},
      {"block 192.168", blocked, "http://192.168.1.1/", {}, false, "private_networks: block"},
      {"block 172.16/12", blocked, "http://172.31.255.255/", {}, false, "private_networks: block"},
      {"not 172.32", blocked, "http://172.32.0.1/", {}, true, "allow: empty list"},
      {"block 169.254",
       blocked,
       "http://169.254.169.254/latest/meta-data",
       {},
       false,
       "private_networks: block"},
      {"block ::1", blocked, "http://[::1]:8080/", {}, false, "private_networks: block"},
      {"block fc00::/7", blocked, "http://[fd12:3456::1]/", {}, false, "private_networks: block"},
      {"block fc00::", blocked, "http://[fc00::]/", {}, false, "private_networks: block"},
      {"block fe80", blocked, "http://[fe80::1%25eth0]/", {}, false, "private_networks: block"},
      {"block mapped v4",
       blocked,
       "http://[::ffff:10.0.0.1]/",
       {},
       false,
       "private_networks: block"},
      {"block resolved", blocked, "http://localhost/", "127.0.0.1", false,
       "private_networks: block"},
      {"block resolved v6", blocked, "https://intranet.test/", "fd00::5", false,
       "private_networks: block"},
      {"name without resolution", blocked, "http://localhost/", {}, true, "allow: empty list"},
      {"public passes", blocked, "https://93.184.216.34/", {}, true, "allow: empty list"},
      {"public resolved passes", blocked, "https://example.com/", "93.184.216.34", true,
       "allow: empty list"},
      {"domain allow does not lift block", blocked + "allow: [{type: domain, value: localhost}]\n",
       "http://localhost/", "127.0.0.1", false, "private_networks: block"},
      {"cidr allow lifts block",
       blocked + "allow: [{type: cidr, value: 10.1.0.0/16}]\n",
       "http://10.1.2.3/",
       {},
       true,
       "allow[0] cidr"},
      {"cidr allow lifts only its range",
       blocked + "allow: [{type: cidr, value: 10.1.0.0/16}]\n",
       "http://10.2.2.3/",
       {},
       false,
       "private_networks: block"},
      {"ip allow lifts block",
       blocked + "allow: [{type: ip, value: \"::1\"}]\n",
       "http://[::1]:3000/",
       {},
       true,
       "allow[0] ip"},
      {"ip allow lifts resolved",
       blocked + "allow: [{type: ip, value: 127.0.0.1}, {type: domain, "
                 "value: localhost}]\n",
       "http://localhost/", "127.0.0.1", true, "allow[0] ip"},
      {"deny beats lifted block",
       blocked + "allow: [{type: cidr, value: 10.0.0.0/8}]\ndeny: [{type: ip, value: 10.0.0.1}]\n",
       "http://10.0.0.1/",
       {},
       false,
       "deny[0] ip"},

      // private_networks: allow.
      {"allow private", open, "http://10.1.2.3/", {}, true, "allow: empty list"},
      {"allow loopback v6", open, "http://[::1]/", {}, true, "allow: empty list"},
      {"allow private but not in list",
       open + "allow: [{type: domain, value: e.com}]\n",
       "http://192.168.0.1/",
       {},
       false,
       "allow: no rule matched"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    const ScopePolicy policy = MustParse(c.policy);
    const ScopeDecision d = policy.Decide(Target(c.url, c.resolved));
    EXPECT_EQ(d.in_scope, c.in_scope) << c.url;
    EXPECT_THAT(std::string(d.rule), HasSubstr(c.rule)) << c.url;
  }
}

TEST(ScopePolicyTest, DecisionOutlivesOriginalCopy) {
  std::optional<ScopePolicy> first =
      MustParse("version: 1\nallow: [{type: domain, value: e.com}]\n");
  const ScopePolicy second = *first;
  first.reset();
  const ScopeDecision d = second.Decide(Target("https://e.com/"));
  EXPECT_TRUE(d.in_scope);
  EXPECT_EQ(d.rule, "allow[0] domain \"e.com\" (scope.yaml:2)");
}

struct ErrorCase {
  const char* name;
  std::string yaml;
  std::string message;
};

TEST(ScopePolicyTest, ErrorTable) {
  const ErrorCase cases[] = {
      {"empty", "", "scope.yaml:1: empty policy: expected a mapping with version: 1"},
      {"comment only", "# nothing\n",
       "scope.yaml:1: empty policy: expected a mapping with version: 1"},
      {"not a mapping", "- version: 1\n", "scope.yaml:1: policy must be a mapping, got a list"},
      {"missing version", "\nallow: []\n",
       "scope.yaml:2: missing required key \"version\" (version: 1)"},
      {"bad version", "version: 2\n", "scope.yaml:1: unsupported version \"2\" (expected 1)"},
      {"version text", "version:\n  one\n",
       "scope.yaml:2: unsupported version \"one\" (expected 1)"},
      {"version empty", "version:\nallow: []\n",
       "scope.yaml:1: unsupported version nothing (expected 1)"},
      {"version list", "version: [1]\n", "scope.yaml:1: unsupported version a list (expected 1)"},
      {"unknown key", "version: 1\nscope: all\n",
       "scope.yaml:2: unknown key \"scope\" (expected version, private_networks, allow, deny)"},
      {"duplicate key", "version: 1\nversion: 1\n", "scope.yaml:2: duplicate key \"version\""},
      {"private_networks value", "version: 1\nprivate_networks: maybe\n",
       "scope.yaml:2: private_networks must be block or allow, got \"maybe\""},
      {"private_networks type", "version: 1\nprivate_networks: {a: 1}\n",
       "scope.yaml:2: private_networks must be block or allow, got a mapping"},
      {"allow wrong type", "version: 1\nallow: example.com\n",
       "scope.yaml:2: allow must be a list of rules, got a scalar"},
      {"rule not mapping", "version: 1\ndeny:\n  - example.com\n",
       "scope.yaml:3: deny[0]: rule must be a mapping with type and value, got a scalar"},
      {"rule unknown key", "version: 1\nallow:\n  - type: domain\n    value: e.com\n    note: x\n",
       "scope.yaml:5: allow[0]: unknown key \"note\" (expected type, value)"},
      {"rule missing type", "version: 1\nallow:\n  - {value: e.com}\n",
       "scope.yaml:3: allow[0]: missing key \"type\""},
      {"rule missing value", "version: 1\nallow:\n  - {type: domain}\n",
       "scope.yaml:3: allow[0]: missing key \"value\""},
      {"rule empty value", "version: 1\nallow:\n  - {type: domain, value: \"\"}\n",
       "scope.yaml:3: allow[0]: value must be a non-empty string, got an empty string"},
      {"rule null value", "version: 1\nallow:\n  - type: domain\n    value:\n",
       "scope.yaml:4: allow[0]: value must be a non-empty string, got nothing"},
      {"rule list value", "version: 1\nallow:\n  - type: domain\n    value: [a]\n",
       "scope.yaml:4: allow[0]: value must be a non-empty string, got a list"},
      {"unknown rule type",
       "version: 1\nallow:\n  - {type: domain, value: a.com}\n  - type: regex\n"
       "    value: x\n",
       "scope.yaml:4: allow[1]: unknown rule type \"regex\" (expected domain, wildcard, url, "
       "url_prefix, path, cidr, ip, pattern)"},
      {"bad domain", "version: 1\nallow:\n  - {type: domain, value: \"exa mple.com\"}\n",
       "scope.yaml:3: allow[0]: invalid domain \"exa mple.com\": character \" \" not allowed"},
      {"domain with star", "version: 1\nallow:\n  - {type: domain, value: \"*.e.com\"}\n",
       "scope.yaml:3: allow[0]: invalid domain \"*.e.com\": \"*\" is only allowed as the first "
       "label of a wildcard"},
      {"domain empty label", "version: 1\nallow:\n  - {type: domain, value: \"a..com\"}\n",
       "scope.yaml:3: allow[0]: invalid domain \"a..com\": empty label"},
      {"bad wildcard", "version: 1\nallow:\n  - {type: wildcard, value: \"a*.e.com\"}\n",
       "scope.yaml:3: allow[0]: invalid wildcard \"a*.e.com\": expected \"*.\" followed by a "
       "domain"},
      {"wildcard inner star", "version: 1\nallow:\n  - {type: wildcard, value: \"*.*.e.com\"}\n",
       "scope.yaml:3: allow[0]: invalid wildcard \"*.*.e.com\": \"*\" is only allowed as the "
       "first label of a wildcard"},
      {"bad url", "version: 1\nallow:\n  - {type: url, value: /just/a/path}\n",
       "scope.yaml:3: allow[0]: invalid url \"/just/a/path\": expected an absolute URL like "
       "https://host/path"},
      {"bad url_prefix", "version: 1\nallow:\n  - {type: url_prefix, value: \"e.com/\"}\n",
       "scope.yaml:3: allow[0]: invalid url_prefix \"e.com/\": expected an absolute URL like "
       "https://host/path"},
      {"bad path", "version: 1\ndeny:\n  - {type: path, value: logout}\n",
       "scope.yaml:3: deny[0]: invalid path \"logout\": must start with \"/\""},
      {"cidr prefix too long", "version: 1\ndeny:\n  - type: cidr\n    value: 10.0.0.0/33\n",
       "scope.yaml:4: deny[0]: invalid cidr \"10.0.0.0/33\": prefix length must be 0-32"},
      {"cidr v6 prefix", "version: 1\ndeny:\n  - {type: cidr, value: \"fc00::/129\"}\n",
       "scope.yaml:3: deny[0]: invalid cidr \"fc00::/129\": prefix length must be 0-128"},
      {"cidr no prefix", "version: 1\ndeny:\n  - {type: cidr, value: 10.0.0.0}\n",
       "scope.yaml:3: deny[0]: invalid cidr \"10.0.0.0\": expected address/prefix-length"},
      {"cidr bad address", "version: 1\ndeny:\n  - {type: cidr, value: 10.0.0/8}\n",
       "scope.yaml:3: deny[0]: invalid cidr \"10.0.0/8\": not an IPv4 or IPv6 address"},
      {"cidr host bits", "version: 1\ndeny:\n  - {type: cidr, value: 10.0.0.1/8}\n",
       "scope.yaml:3: deny[0]: invalid cidr \"10.0.0.1/8\": host bits set after the prefix"},
      {"cidr negative", "version: 1\ndeny:\n  - {type: cidr, value: 10.0.0.0/-1}\n",
       "scope.yaml:3: deny[0]: invalid cidr \"10.0.0.0/-1\": prefix length must be 0-32"},
      {"bad ip", "version: 1\ndeny:\n  - {type: ip, value: 256.1.1.1}\n",
       "scope.yaml:3: deny[0]: invalid ip \"256.1.1.1\": not an IPv4 or IPv6 address"},
      {"ip with zone", "version: 1\ndeny:\n  - {type: ip, value: \"fe80::1%eth0\"}\n",
       "scope.yaml:3: deny[0]: invalid ip \"fe80::1%eth0\": not an IPv4 or IPv6 address"},
      {"bad pattern", "version: 1\ndeny:\n  - {type: pattern, value: \"(unclosed\"}\n",
       "scope.yaml:3: deny[0]: invalid pattern \"(unclosed\": missing ): (unclosed"},
      {"syntax error", "version: 1\nallow: [{type: domain, value: e.com}\n",
       "scope.yaml:3: YAML syntax error: end of sequence flow not found"},
      {"bad indentation", "version: 1\n  allow: []\n",
       "scope.yaml:2: YAML syntax error: illegal map value"},
      {"two documents", "version: 1\n---\nversion: 1\n",
       "scope.yaml:3: only one YAML document allowed"},
      {"non-string key", "version: 1\n[a]: b\n", "scope.yaml:2: keys must be strings"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    const auto p = ParseScopePolicy(c.yaml, "scope.yaml");
    ASSERT_FALSE(p.ok()) << c.yaml;
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(p.status().message(), c.message) << c.yaml;
  }
}

TEST(ScopePolicyTest, Limits) {
  // Too large.
  std::string big = "version: 1\n# " + std::string(kMaxScopePolicyBytes, 'x') + "\n";
  auto p = ParseScopePolicy(big, "scope.yaml");
  ASSERT_FALSE(p.ok());
  EXPECT_THAT(std::string(p.status().message()), HasSubstr("scope.yaml:1: policy too large: "));

  // Too many rules.
  std::string many = "version: 1\ndeny:\n";
  for (size_t i = 0; i <= kMaxScopeRules; ++i) many += "  - {type: path, value: /a}\n";
  p = ParseScopePolicy(many, "scope.yaml");
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().message(), "scope.yaml:3: too many rules: at most 10000");

  // Exactly the limit is fine.
  std::string limit = "version: 1\nallow:\n";
  for (size_t i = 0; i < kMaxScopeRules; ++i) limit += "  - {type: path, value: /a}\n";
  EXPECT_TRUE(ParseScopePolicy(limit, "scope.yaml").ok());

  // Value too long.
  const std::string longv = "version: 1\ndeny:\n  - {type: path, value: /" +
                            std::string(kMaxScopeValueBytes, 'a') + "}\n";
  p = ParseScopePolicy(longv, "scope.yaml");
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().message(),
            "scope.yaml:3: deny[0]: value too long: 4097 bytes, at most 4096");

  // Deep nesting is a syntax error, not a stack overflow.
  const std::string deep = "version: 1\nallow: " + std::string(100000, '[');
  p = ParseScopePolicy(deep, "scope.yaml");
  ASSERT_FALSE(p.ok());
  EXPECT_THAT(std::string(p.status().message()), HasSubstr("YAML syntax error"));
}

TEST(ScopePolicyTest, LoadFromFile) {
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("scope_test_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string good = (dir / "good.yaml").string();
  const std::string bad = (dir / "bad.yaml").string();
  std::ofstream(good) << "version: 1\nallow:\n  - {type: domain, value: example.com}\n";
  std::ofstream(bad) << "version: 1\nallow:\n  - {type: domain, value: example.com}\n"
                        "  - {type: cidr, value: 10.0.0.0/40}\n";

  auto p = LoadScopePolicy(good);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_TRUE(p->Decide(Target("https://example.com/")).in_scope);

  p = LoadScopePolicy(bad);
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().message(),
            bad + ":4: allow[1]: invalid cidr \"10.0.0.0/40\": prefix length must be 0-32");

  p = LoadScopePolicy((dir / "missing.yaml").string());
  ASSERT_FALSE(p.ok());
  EXPECT_THAT(std::string(p.status().message()), HasSubstr("missing.yaml: cannot open"));
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace oxg::proxy

namespace oxg::proxy {
namespace {

// Aliases that multiply ("billion laughs") must not make loading a policy explode in time or
// memory: the document is small, whatever its expansion would be.
TEST(ScopePolicyTest, AliasExpansionStaysCheap) {
  std::string yaml =
      "version: 1\nl0: &l0 [\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\"]\n";
  for (int i = 1; i < 9; ++i) {
    const std::string prev = "*l" + std::to_string(i - 1);
    yaml += "l" + std::to_string(i) + ": &l" + std::to_string(i) + " [" + prev;
    for (int j = 0; j < 8; ++j) yaml += "," + prev;
    yaml += "]\n";
  }
  const auto p = ParseScopePolicy(yaml, "scope.yaml");
  ASSERT_FALSE(p.ok());  // l0..l8 are unknown keys
  EXPECT_NE(std::string(p.status().message()).find("scope.yaml:2:"), std::string::npos)
      << p.status();
}

}  // namespace
}  // namespace oxg::proxy
