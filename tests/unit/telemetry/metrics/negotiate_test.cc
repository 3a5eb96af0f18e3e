#include "telemetry/metrics/negotiate.h"

#include <gtest/gtest.h>

#include <string>

namespace oxg::metrics {
namespace {

constexpr Format kOm = Format::kOpenMetrics100;
constexpr Format kText = Format::kText004;

struct AcceptCase {
  const char* name;
  std::string accept;
  Format want;
};

TEST(NegotiateFormat, AcceptTable) {
  const AcceptCase cases[] = {
      {"prometheus 2.x",
       "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
       "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
       kOm},
      {"prometheus 3.x with escaping params",
       "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
       "application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;"
       "escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
       kOm},
      {"text preferred by q", "application/openmetrics-text;q=0.3, text/plain;q=0.9", kText},
      {"openmetrics preferred by q", "text/plain;q=0.2, application/openmetrics-text;q=0.9", kOm},
      {"equal q, openmetrics explicit vs wildcard", "application/openmetrics-text, */*", kOm},
      {"equal q both explicit", "text/plain, application/openmetrics-text", kText},
      {"only openmetrics 0.0.1, which we do not produce",
       "application/openmetrics-text;version=0.0.1", kText},
      {"openmetrics refused with q=0", "application/openmetrics-text;q=0, */*;q=0.1", kText},
      {"plain text", "text/plain", kText},
      {"text 0.0.4", "text/plain; version=0.0.4", kText},
      {"any", "*/*", kText},
      {"empty", "", kText},
      {"garbage", "\x01\x02garbage;;;,,,==", kText},
      {"bad q ignored", "application/openmetrics-text;q=2", kText},
      {"bad q letters", "application/openmetrics-text;q=abc, text/plain;q=0.1", kText},
      {"case-insensitive", "Application/OpenMetrics-Text; Version=1.0.0; Q=1", kOm},
      {"quoted version", "application/openmetrics-text;version=\"1.0.0\"", kOm},
      {"quoted comma inside parameter", "application/openmetrics-text;foo=\"a,b\";q=0.9", kOm},
      {"application wildcard", "application/*;q=0.8, text/plain;q=0.5", kOm},
      {"json only", "application/json", kText},
      {"whitespace", "  application/openmetrics-text  ;  q=1.000 ,text/plain;q=0.999", kOm},
  };
  for (const AcceptCase& c : cases) {
    EXPECT_EQ(NegotiateFormat(c.accept), c.want) << c.name << ": " << c.accept;
  }
}

TEST(NegotiateFormat, HugeHostileHeaderIsBounded) {
  std::string accept;
  for (int i = 0; i < 100000; ++i) accept += "text/plain;q=0.1,";
  accept += "application/openmetrics-text";  // beyond the element cap: never looked at
  EXPECT_EQ(NegotiateFormat(accept), kText);
  EXPECT_EQ(NegotiateFormat(std::string(1 << 20, '"')), kText);
  EXPECT_EQ(NegotiateFormat(std::string(1 << 20, ';')), kText);
}

TEST(AcceptsGzip, Table) {
  EXPECT_TRUE(AcceptsGzip("gzip"));
  EXPECT_TRUE(AcceptsGzip("deflate, gzip;q=0.5"));
  EXPECT_TRUE(AcceptsGzip("GZIP"));
  EXPECT_TRUE(AcceptsGzip("x-gzip"));
  EXPECT_TRUE(AcceptsGzip("*"));
  EXPECT_FALSE(AcceptsGzip(""));
  EXPECT_FALSE(AcceptsGzip("identity"));
  EXPECT_FALSE(AcceptsGzip("gzip;q=0"));
  EXPECT_FALSE(AcceptsGzip("gzip;q=0, *"));  // explicit refusal beats the wildcard
  EXPECT_FALSE(AcceptsGzip("br"));
  EXPECT_FALSE(AcceptsGzip("gzip;q=nonsense"));
}

TEST(ContentType, MatchesContract) {
  EXPECT_EQ(ContentType(kOm), "application/openmetrics-text; version=1.0.0; charset=utf-8");
  EXPECT_EQ(ContentType(kText), "text/plain; version=0.0.4; charset=utf-8");
}

}  // namespace
}  // namespace oxg::metrics
