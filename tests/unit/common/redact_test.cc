#include "common/redact.h"

#include <gtest/gtest.h>

#include <atomic>
#include <span>
#include <thread>
#include <vector>

namespace oxg {
namespace {

struct Case {
  std::string_view in;
  std::string_view want;
};

void ExpectTable(const Redactor& r, std::span<const Case> cases) {
  for (const Case& c : cases) {
    const std::string got = r.Redact(c.in);
    EXPECT_EQ(got, c.want) << "input: " << c.in;
    // Redacting again changes nothing: "[REDACTED]" is not itself a secret.
    EXPECT_EQ(r.Redact(got), got) << "input: " << c.in;
  }
}

TEST(RedactTest, AuthorizationHeadersKeepTheScheme) {
  const Case cases[] = {
      {"Authorization: Bearer abc.def-123", "Authorization: Bearer [REDACTED]"},
      {"authorization: basic dXNlcjpwYXNz", "authorization: basic [REDACTED]"},
      {"GET / HTTP/1.1\r\nProxy-Authorization: Basic dXNlcjpwYXNz\r\nHost: x\r\n",
       "GET / HTTP/1.1\r\nProxy-Authorization: Basic [REDACTED]\r\nHost: x\r\n"},
      {"{\"Authorization\":\"Bearer abc\",\"x\":1}",
       "{\"Authorization\":\"Bearer [REDACTED]\",\"x\":1}"},
      {"{\"authorization\": \"tok\\\"en\"}", "{\"authorization\": \"[REDACTED]\"}"},
      {"Authorization: Digest username=\"bob\", realm=\"r\", response=\"6629fae49393a053\"",
       "Authorization: Digest [REDACTED]"},
      {"Authorization: AWS4-HMAC-SHA256 Credential=x/20240101, Signature=fe5f80f7",
       "Authorization: AWS4-HMAC-SHA256 [REDACTED]"},
      {"Authorization: rawtoken123", "Authorization: [REDACTED]"},
      {"authorization=Bearer xyz", "authorization=Bearer [REDACTED]"},
  };
  ExpectTable(Redactor(), cases);
}

TEST(RedactTest, SecretAssignmentsKeepKeyAndSeparator) {
  const Case cases[] = {
      {"password=hunter2&user=bob", "password=[REDACTED]&user=bob"},
      {"?user=bob&passwd=x1&next=/", "?user=bob&passwd=[REDACTED]&next=/"},
      {"pwd=abc", "pwd=[REDACTED]"},
      {"db_password: s3cr3t", "db_password: [REDACTED]"},
      {"PASSWORD = hunter2", "PASSWORD = [REDACTED]"},
      {"secret=xyz;other=1", "secret=[REDACTED]"},
      // Unquoted values run to whitespace or '&': a password's tail never leaks.
      {"password=abc,def;ghi next", "password=[REDACTED] next"},
      {"user=a&password=p,w;d\"x&next=1", "user=a&password=[REDACTED]&next=1"},
      {"session_id=abc123", "session_id=[REDACTED]"},
      {"PHPSESSID=abc123", "PHPSESSID=[REDACTED]"},
      {"access_token=ya29.a0Af", "access_token=[REDACTED]"},
      {"refresh_token: 1//0g", "refresh_token: [REDACTED]"},
      {"api_key=AbC123", "api_key=[REDACTED]"},
      {"API-KEY=k123", "API-KEY=[REDACTED]"},
      {"apikey=k123", "apikey=[REDACTED]"},
      {"X-Api-Key: abcdef", "X-Api-Key: [REDACTED]"},
      {"aws_secret_access_key = wJalrXUtnFEMI/K7MDENG", "aws_secret_access_key = [REDACTED]"},
      {"accessKey: abc", "accessKey: [REDACTED]"},
      {"client_secret=abc", "client_secret=[REDACTED]"},
      {"clientSecret: abc", "clientSecret: [REDACTED]"},
      {"auth=xyz", "auth=[REDACTED]"},
      {"X-Auth-Token: Bearer abc", "X-Auth-Token: Bearer [REDACTED]"},
      {"token='abc def'", "token='[REDACTED]'"},
      {"password=\"quoted value\"", "password=\"[REDACTED]\""},
      {"{\"password\":\"hunter2\",\"user\":\"bob\"}",
       "{\"password\":\"[REDACTED]\",\"user\":\"bob\"}"},
      {"{\"client_secret\": \"ab\\\"c\", \"name\": \"x\"}",
       "{\"client_secret\": \"[REDACTED]\", \"name\": \"x\"}"},
      {"{\"apiKey\":\"k\",\"token\":\"t\"}",
       "{\"apiKey\":\"[REDACTED]\",\"token\":\"[REDACTED]\"}"},
      {"a password=one and token=two", "a password=[REDACTED] and token=[REDACTED]"},
      // Non-ASCII and invalid UTF-8 inside a secret do not cut the redaction short.
      {"password=h\xC3\xA9llo\xFFx\x80y rest", "password=[REDACTED] rest"},
      {"{\"token\":\"\xE2\x82\xAC\xFE\"}", "{\"token\":\"[REDACTED]\"}"},
      {"Authorization: Bearer \xFF\xFEzz", "Authorization: Bearer [REDACTED]"},
  };
  ExpectTable(Redactor(), cases);
}

TEST(RedactTest, KnownTokenFormats) {
  const Case cases[] = {
      // JWT (header.payload.signature), also unsigned.
      {"jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk "
       "end",
       "jwt [REDACTED] end"},
      {"id=eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", "id=[REDACTED]"},
      // AWS access key ids.
      {"key AKIAIOSFODNN7EXAMPLE used", "key [REDACTED] used"},
      {"ASIAY34FZKBOKMUTVV7A,", "[REDACTED],"},
      // GitHub.
      {"ghp_16C7e42F292c6912E7710c838347Ae178B4a x", "[REDACTED] x"},
      {"gho_16C7e42F292c6912E7710c838347Ae178B4a", "[REDACTED]"},
      {"github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz0123", "[REDACTED]"},
      // Slack.
      {"slack xoxb-123456789012-123456789012-abcdefABCDEF done", "slack [REDACTED] done"},
      {"xoxp-1234567890-abcd", "[REDACTED]"},
      // Stripe-like.
      {"sk_live_4eC39HqLyjWDarjtT1zdp7dc", "[REDACTED]"},
      {"(rk_live_51H8abcdEFGHijkl)", "([REDACTED])"},
      // Passwords in URLs.
      {"postgres://app:s3cret@db:5432/x", "postgres://app:[REDACTED]@db:5432/x"},
      {"redis://:pw@cache:6379", "redis://:[REDACTED]@cache:6379"},
      {"fetch https://user:p%40ss@example.com/a?b=1 ok",
       "fetch https://user:[REDACTED]@example.com/a?b=1 ok"},
  };
  ExpectTable(Redactor(), cases);
}

TEST(RedactTest, PrivateKeyBlocks) {
  const Case cases[] = {
      {"before\n-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7\nabc+/=\n-----END RSA PRIVATE "
       "KEY-----\nafter",
       "before\n-----BEGIN RSA PRIVATE KEY-----[REDACTED]-----END RSA PRIVATE KEY-----\nafter"},
      {"-----BEGIN PRIVATE KEY-----\nMC4CAQ\n-----END PRIVATE KEY-----",
       "-----BEGIN PRIVATE KEY-----[REDACTED]-----END PRIVATE KEY-----"},
      {"-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA",  // truncated
       "-----BEGIN OPENSSH PRIVATE KEY-----[REDACTED]"},
      // Public material is not a secret.
      {"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",
       "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"},
  };
  ExpectTable(Redactor(), cases);
}

TEST(RedactTest, CookiesKeepNames) {
  const Case cases[] = {
      {"Cookie: sid=abc123; theme=dark", "Cookie: sid=[REDACTED]; theme=[REDACTED]"},
      {"cookie: lonevalue", "cookie: [REDACTED]"},
      {"Set-Cookie: sid=abc; Path=/; HttpOnly; Secure",
       "Set-Cookie: sid=[REDACTED]; Path=/; HttpOnly; Secure"},
      {"HTTP/1.1 200 OK\r\nset-cookie: a=1; Max-Age=60\r\nX: y\r\n",
       "HTTP/1.1 200 OK\r\nset-cookie: a=[REDACTED]; Max-Age=60\r\nX: y\r\n"},
  };
  ExpectTable(Redactor(), cases);
}

TEST(RedactTest, OrdinaryTextIsUntouched) {
  const std::string_view texts[] = {
      "",
      "Hello world, no secrets here.",
      "GET /index.html HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n",
      "the author=bob wrote it",
      "max_tokens=100&tokens: 5",
      "passwords are hard to remember",
      "http://example.com:8080/path@x",
      "see https://example.com/login?next=/home",
      "ghp_short and AKIA123 and xoxb- and sk_live_x",
      "eyJhbGciOiJIUzI1NiJ9 alone",
      "status=200 method=GET duration_ms=12.5",
      "{\"name\":\"scanner\",\"severity\":\"high\",\"empty_token\":\"\"}",
      "-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----",
      "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80",
  };
  const Redactor r;
  for (std::string_view t : texts) EXPECT_EQ(r.Redact(t), t);
}

TEST(RedactTest, LargeInputs) {
  const Redactor r;
  std::string big;
  while (big.size() < (2 << 20)) big += "the quick brown fox jumps over the lazy dog 0123456789\n";
  EXPECT_EQ(r.Redact(big), big);
  const std::string with_secret = big + "password=tail-secret\n";
  const std::string out = r.Redact(with_secret);
  EXPECT_EQ(out, big + "password=[REDACTED]\n");
}

TEST(RedactTest, Literals) {
  Redactor r;
  const std::string secret = "d2b9f0a1c3e4-daemon-token";
  EXPECT_EQ(r.Redact("token " + secret), "token " + secret);  // not registered yet
  r.AddLiteral(secret);
  EXPECT_EQ(r.Redact("x" + secret + "y " + secret), "x[REDACTED]y [REDACTED]");
  EXPECT_EQ(r.Redact("unrelated"), "unrelated");

  r.AddLiteral("short");  // under 8 bytes: ignored
  EXPECT_EQ(r.Redact("a short word"), "a short word");
  r.AddLiteral("");
  EXPECT_EQ(r.Redact("abc"), "abc");

  // A registered secret that contains another registered one is removed whole.
  r.AddLiteral("outer-1234-d2b9f0a1c3e4-daemon-token-5678");
  EXPECT_EQ(r.Redact("[outer-1234-d2b9f0a1c3e4-daemon-token-5678]"), "[[REDACTED]]");

  // Literals are per instance.
  EXPECT_EQ(Redactor().Redact(secret), secret);
}

TEST(RedactTest, DefaultIsOneInstance) {
  EXPECT_EQ(&Redactor::Default(), &Redactor::Default());
  EXPECT_EQ(Redactor::Default().Redact("password=x"), "password=[REDACTED]");
}

TEST(RedactTest, ConcurrentRedactAndAddLiteral) {
  Redactor r;
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&r, &failures, t] {
      for (int i = 0; i < 200; ++i) {
        if (t == 0) r.AddLiteral("literal-secret-" + std::to_string(i));
        if (r.Redact("password=abc") != "password=[REDACTED]") ++failures;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(r.Redact("literal-secret-199"), "[REDACTED]");
}

TEST(IsSecretKeyTest, Table) {
  const std::string_view secret[] = {
      "authorization",
      "Authorization",
      "proxy-authorization",
      "Proxy-Authorization",
      "cookie",
      "Set-Cookie",
      "x-api-key",
      "X-API-KEY",
      "api_key",
      "apiKey",
      "x-auth-token",
      "X-Csrf-Token",
      "password",
      "db_password",
      "userPassword",
      "passwd",
      "client_secret",
      "clientSecret",
      "private_key",
      "privateKey",
      "access_token",
      "accessToken",
      "refresh_token",
      "aws_secret_access_key",
      "x-amz-security-token",
      "session_id",
      "auth",
      "secret",
      "TOKEN",
      "authtoken",
  };
  const std::string_view plain[] = {
      "",
      "host",
      "content-type",
      "user-agent",
      "accept",
      "author",
      ":authority",
      "www-authenticate",
      "max_tokens",
      "tokenizer",
      "keyboard",
      "key",
      "session",
      "id",
      "x-request-id",
      "content-length",
      "cache-control",
      "passage",
  };
  for (std::string_view k : secret) EXPECT_TRUE(Redactor::IsSecretKey(k)) << k;
  for (std::string_view k : plain) EXPECT_FALSE(Redactor::IsSecretKey(k)) << k;
}

}  // namespace
// RedactIfNeeded agrees with Redact on every text: nothing when Redact would change nothing,
// Redact's result otherwise (patterns and literals alike).
TEST(RedactTest, RedactIfNeededAgreesWithRedact) {
  Redactor r;
  r.AddLiteral("literal-secret-12345");
  const std::string texts[] = {
      "",
      "Host: example.com\r\nAccept: */*\r\n",
      "{\"items\":[1,2,3],\"note\":\"nothing here\"}",
      "Authorization: Bearer abc.def.ghi",
      "password=hunter2&user=bob",
      "see literal-secret-12345 here",
      "token: [REDACTED]",
      "AKIAABCDEFGHIJKLMNOP",
  };
  for (const std::string& text : texts) {
    const std::string full = r.Redact(text);
    const std::optional<std::string> maybe = r.RedactIfNeeded(text);
    if (full == text) {
      EXPECT_FALSE(maybe.has_value()) << text;
    } else {
      ASSERT_TRUE(maybe.has_value()) << text;
      EXPECT_EQ(*maybe, full) << text;
    }
  }
  EXPECT_FALSE(r.RedactIfNeeded("plain words only").has_value());
  EXPECT_TRUE(r.RedactIfNeeded("password=hunter2").has_value());
}

}  // namespace oxg
