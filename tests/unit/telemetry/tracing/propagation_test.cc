#include <gtest/gtest.h>

#include <string>

#include "telemetry/tracing/tracer.h"

namespace oxg::tracing {
namespace {

constexpr const char* kTrace = "0af7651916cd43dd8448eb211c80319c";
constexpr const char* kSpan = "b7ad6b7169203331";

std::string Tp(std::string version, std::string trace, std::string span, std::string flags) {
  return version + "-" + trace + "-" + span + "-" + flags;
}

TEST(Traceparent, Table) {
  const struct {
    const char* name;
    std::string header;
    bool valid;
    uint8_t flags;
  } cases[] = {
      {"valid sampled", Tp("00", kTrace, kSpan, "01"), true, 1},
      {"valid unsampled", Tp("00", kTrace, kSpan, "00"), true, 0},
      {"unknown flag bits masked", Tp("00", kTrace, kSpan, "ff"), true, 1},
      {"unknown flag bits masked, unsampled", Tp("00", kTrace, kSpan, "fe"), true, 0},
      {"version ff", Tp("ff", kTrace, kSpan, "01"), false, 0},
      {"all-zero trace id", Tp("00", std::string(32, '0'), kSpan, "01"), false, 0},
      {"all-zero span id", Tp("00", kTrace, std::string(16, '0'), "01"), false, 0},
      {"upper-case trace id", Tp("00", "0AF7651916CD43DD8448EB211C80319C", kSpan, "01"), false, 0},
      {"upper-case version", Tp("0A", kTrace, kSpan, "01"), false, 0},
      {"upper-case flags", Tp("00", kTrace, kSpan, "0F"), false, 0},
      {"short trace id", Tp("00", std::string(kTrace).substr(1), kSpan, "01"), false, 0},
      {"long span id", Tp("00", kTrace, std::string(kSpan) + "0", "01"), false, 0},
      {"one-digit flags", Tp("00", kTrace, kSpan, "1"), false, 0},
      {"version 00 with extra field", Tp("00", kTrace, kSpan, "01") + "-extra", false, 0},
      {"version 00 with trailing space", Tp("00", kTrace, kSpan, "01") + " ", false, 0},
      {"future version with extra fields", Tp("cc", kTrace, kSpan, "01") + "-what-ever", true, 1},
      {"future version, exact length", Tp("01", kTrace, kSpan, "01"), true, 1},
      {"future version, junk without separator", Tp("cc", kTrace, kSpan, "01") + "xyz", false, 0},
      {"wrong separator", "00_" + std::string(kTrace) + "-" + kSpan + "-01", false, 0},
      {"non-hex", Tp("00", "0af7651916cd43dd8448eb211c80319g", kSpan, "01"), false, 0},
      {"empty", "", false, 0},
      {"garbage", std::string(200, '-'), false, 0},
  };
  for (const auto& c : cases) {
    SpanContext ctx;
    EXPECT_EQ(ParseTraceparent(c.header, &ctx), c.valid) << c.name;
    if (c.valid) {
      EXPECT_EQ(ctx.trace_id.ToHex(), kTrace) << c.name;
      EXPECT_EQ(ctx.span_id.ToHex(), kSpan) << c.name;
      EXPECT_EQ(ctx.flags, c.flags) << c.name;
      EXPECT_TRUE(ctx.remote) << c.name;
    } else {
      EXPECT_FALSE(ctx.IsValid()) << c.name << ": a rejected header leaves the context alone";
    }
  }
}

TEST(Traceparent, FormatRoundTrip) {
  SpanContext ctx;
  ASSERT_TRUE(ParseTraceparent(Tp("00", kTrace, kSpan, "01"), &ctx));
  EXPECT_EQ(FormatTraceparent(ctx), Tp("00", kTrace, kSpan, "01"));
  ctx.flags = 0;
  EXPECT_EQ(FormatTraceparent(ctx), Tp("00", kTrace, kSpan, "00"));
}

TEST(Tracestate, Table) {
  const struct {
    std::string header;
    bool valid;
    std::string kept;
  } cases[] = {
      {"congo=t61rcWkgMzE", true, "congo=t61rcWkgMzE"},
      {"rojo=00f067aa0ba902b7, congo=t61rcWkgMzE", true, "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"},
      {"tenant@vendor=value", true, "tenant@vendor=value"},
      {" , a=1 ,, b=2 ", true, "a=1,b=2"},
      {"", true, ""},
      {"Upper=1", false, ""},
      {"a=1,a=2", false, ""},
      {"a", false, ""},
      {"a=", false, ""},
      {"a=b,c", false, ""},
      {"a=x=y", false, ""},
      {"a=va\x01lue", false, ""},
      {"a=" + std::string(600, 'x'), false, ""},
  };
  for (const auto& c : cases) {
    std::string out = "unchanged";
    EXPECT_EQ(ParseTracestate(c.header, &out), c.valid) << c.header;
    EXPECT_EQ(out, c.valid ? c.kept : "unchanged") << c.header;
  }
  std::string many;
  for (int i = 0; i < 33; ++i) many += "k" + std::to_string(i) + "=v,";
  std::string out;
  EXPECT_FALSE(ParseTracestate(many, &out)) << "more than 32 members";
}

}  // namespace
}  // namespace oxg::tracing
