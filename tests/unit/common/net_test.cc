#include "common/net.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace oxg {
namespace {

using ::testing::HasSubstr;

TEST(ParseHostPortTest, Accepts) {
  struct Case {
    std::string_view text;
    std::string host;
    uint16_t port;
  };
  const Case cases[] = {
      {"127.0.0.1:8080", "127.0.0.1", 8080},
      {":9090", "", 9090},
      {":0", "", 0},
      {"localhost:0", "localhost", 0},
      {"example.com:65535", "example.com", 65535},
      {"example.com.:443", "example.com.", 443},
      {"my_service-1.internal:80", "my_service-1.internal", 80},
      {"[::1]:443", "::1", 443},
      {"[::]:1", "::", 1},
      {"[2001:db8::8a2e:370:7334]:8443", "2001:db8::8a2e:370:7334", 8443},
      {"[::ffff:192.0.2.1]:80", "::ffff:192.0.2.1", 80},
      {"[fe80::1%eth0]:80", "fe80::1%eth0", 80},
      {"host:00080", "host", 80},
  };
  for (const Case& c : cases) {
    auto hp = ParseHostPort(c.text);
    ASSERT_TRUE(hp.ok()) << c.text << ": " << hp.status();
    EXPECT_EQ(hp->host, c.host) << c.text;
    EXPECT_EQ(hp->port, c.port) << c.text;
  }
}

TEST(ParseHostPortTest, Rejects) {
  struct Case {
    std::string_view text;
    std::string_view why;
  };
  const Case cases[] = {
      {"9090", "expected host:port or :port"},
      {"localhost", "expected host:port or :port"},
      {"", "empty"},
      {"host:", "missing port"},
      {":", "missing port"},
      {"host:http", "port must be a number"},
      {"host:80a", "port must be a number"},
      {"host:-1", "port must be a number"},
      {"host:+80", "port must be a number"},
      {"host:65536", "0 to 65535"},
      {"host:99999999999999999999999", "0 to 65535"},
      {"::1:80", "IPv6 addresses must be in brackets"},
      {"::1", "IPv6 addresses must be in brackets"},
      {"[]:80", "empty IPv6 address"},
      {"[::1]80", "expected \":port\" after \"]\""},
      {"[::1]", "expected \":port\" after \"]\""},
      {"[::1]:", "missing port"},
      {"[::1:80", "missing \"]\""},
      {"[not-ipv6]:80", "not a valid IPv6 address"},
      {"[127.0.0.1]:80", "not a valid IPv6 address"},
      {"[fe80::1%]:80", "not a valid IPv6 address"},
      {"host]:80", "misplaced"},
      {" :80", "whitespace"},
      {"host :80", "whitespace"},
      {"host: 80", "whitespace"},
      {"host:80\n", "whitespace"},
      {"ho$t:80", "host must be"},
      {"a..b:80", "host must be"},
      {".a:80", "host must be"},
      {"h/x:80", "host must be"},
      {"user@host:80", "host must be"},
  };
  for (const Case& c : cases) {
    auto hp = ParseHostPort(c.text);
    ASSERT_FALSE(hp.ok()) << "accepted " << c.text;
    EXPECT_EQ(hp.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(hp.status().message()), HasSubstr(std::string(c.why))) << c.text;
  }
}

TEST(ParseHostPortTest, ErrorQuotesTheInput) {
  auto hp = ParseHostPort("9090");
  ASSERT_FALSE(hp.ok());
  EXPECT_EQ(hp.status().message(), "invalid address \"9090\": expected host:port or :port");

  // Control characters are shown escaped, not sent raw to the terminal.
  hp = ParseHostPort("a\x1b:1");
  ASSERT_FALSE(hp.ok());
  EXPECT_THAT(std::string(hp.status().message()), HasSubstr("\"a\\x1b:1\""));
}

TEST(ParseHostPortTest, OverlongLabelRejected) {
  EXPECT_TRUE(ParseHostPort(std::string(63, 'a') + ".example:1").ok());
  EXPECT_FALSE(ParseHostPort(std::string(64, 'a') + ".example:1").ok());
}

TEST(HostPortTest, ToString) {
  EXPECT_EQ((HostPort{"", 9090}).ToString(), ":9090");
  EXPECT_EQ((HostPort{"127.0.0.1", 80}).ToString(), "127.0.0.1:80");
  EXPECT_EQ((HostPort{"::1", 443}).ToString(), "[::1]:443");
  EXPECT_EQ((HostPort{"example.com", 0}).ToString(), "example.com:0");
}

TEST(HostPortTest, RoundTrip) {
  for (std::string_view text : {":1", "localhost:8080", "[::1]:443", "[fe80::1%eth0]:65535"}) {
    auto hp = ParseHostPort(text);
    ASSERT_TRUE(hp.ok()) << text;
    EXPECT_EQ(hp->ToString(), text);
    auto again = ParseHostPort(hp->ToString());
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(again->host, hp->host);
    EXPECT_EQ(again->port, hp->port);
  }
}

}  // namespace
}  // namespace oxg
