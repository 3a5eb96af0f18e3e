#include "common/json_writer.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <limits>
#include <nlohmann/json.hpp>

namespace oxg {
namespace {

std::string Escaped(std::string_view s) {
  std::string out;
  AppendJsonEscaped(out, s);
  return out;
}

#define FFFD "\xEF\xBF\xBD"

struct EscapeCase {
  std::string_view in;
  std::string_view want;
};

TEST(AppendJsonEscapedTest, Table) {
  using namespace std::string_view_literals;
  const EscapeCase cases[] = {
      {"", ""},
      {"plain text 123", "plain text 123"},
      {"a\"b", "a\\\"b"},
      {"back\\slash", "back\\\\slash"},
      {"/path/ok", "/path/ok"},  // '/' may stay unescaped
      {"\n\r\t\b\f", "\\n\\r\\t\\b\\f"},
      {"\x01\x1f", "\\u0001\\u001f"},
      {"nul\0byte"sv, "nul\\u0000byte"},
      {"\x1b[31mred", "\\u001b[31mred"},
      {"del\x7f", "del\x7f"},  // DEL is not a JSON control character
      // Valid multi-byte UTF-8 passes through untouched.
      {"caf\xC3\xA9", "caf\xC3\xA9"},
      {"\xE2\x82\xAC 5", "\xE2\x82\xAC 5"},
      {"\xF0\x9F\x98\x80!", "\xF0\x9F\x98\x80!"},
      {"\xEF\xBF\xBF", "\xEF\xBF\xBF"},          // U+FFFF
      {"\xF4\x8F\xBF\xBF", "\xF4\x8F\xBF\xBF"},  // U+10FFFF
      {"\xED\x9F\xBF", "\xED\x9F\xBF"},          // U+D7FF, just below the surrogates
      // Invalid UTF-8: one U+FFFD per maximal ill-formed subsequence.
      {"\x80", FFFD},
      {"a\xBF"
       "b",
       "a" FFFD "b"},
      {"\xC0\xAF", FFFD FFFD},                    // overlong '/'
      {"\xC1\xBF", FFFD FFFD},                    // overlong
      {"\xE0\x80\xAF", FFFD FFFD FFFD},           // overlong 3-byte
      {"\xF0\x80\x80\xAF", FFFD FFFD FFFD FFFD},  // overlong 4-byte
      {"\xED\xA0\x80", FFFD FFFD FFFD},           // surrogate U+D800
      {"\xF4\x90\x80\x80", FFFD FFFD FFFD FFFD},  // above U+10FFFF
      {"\xF5\xFF", FFFD FFFD},
      {"\xE2\x82", FFFD},  // truncated at the end
      {"\xE2\x82"
       "A",
       FFFD "A"},  // truncated before ASCII
      {"\xF0\x9F\x98"
       "\"",
       FFFD "\\\""},                      // truncated before a quote
      {"\xC3\xC3\xA9", FFFD "\xC3\xA9"},  // broken lead, then a valid character
      {"ok\xFE", "ok" FFFD},
  };
  for (const EscapeCase& c : cases) {
    EXPECT_EQ(Escaped(c.in), c.want) << "input: " << ::testing::PrintToString(std::string(c.in));
  }
}

TEST(AppendJsonEscapedTest, AppendsWithoutClearing) {
  std::string out = "prefix:";
  AppendJsonEscaped(out, "a\nb");
  EXPECT_EQ(out, "prefix:a\\nb");
}

TEST(AppendJsonEscapedTest, EveryByteProducesParseableJson) {
  // All 256 single bytes and all two-byte pairs decode with a strict parser.
  for (int a = 0; a < 256; ++a) {
    for (int b = 0; b < 256; ++b) {
      const char raw[2] = {static_cast<char>(a), static_cast<char>(b)};
      const std::string doc = "\"" + Escaped(std::string_view(raw, 2)) + "\"";
      ASSERT_TRUE(nlohmann::json::accept(doc)) << a << " " << b;
    }
  }
}

TEST(AppendJsonEscapedTest, RoundTripsValidUtf8) {
  const std::string s = "mixed \"quotes\", \\ slashes, \t tabs, caf\xC3\xA9, \xF0\x9F\x98\x80";
  const auto parsed = nlohmann::json::parse("\"" + Escaped(s) + "\"");
  EXPECT_EQ(parsed.get<std::string>(), s);
}

TEST(JsonWriterTest, NestedDocument) {
  std::string out;
  JsonWriter w(out);
  w.BeginObject()
      .Key("name")
      .String("0xgen")
      .Key("n")
      .Int(-3)
      .Key("big")
      .Uint(18446744073709551615u)
      .Key("ok")
      .Bool(true)
      .Key("none")
      .Null()
      .Key("list")
      .BeginArray()
      .Int(1)
      .BeginObject()
      .Key("a")
      .BeginArray()
      .EndArray()
      .Key("b")
      .BeginObject()
      .EndObject()
      .EndObject()
      .String("x")
      .EndArray()
      .Key("raw")
      .Raw("{\"pre\":[1,2]}")
      .Key("after")
      .Bool(false)
      .EndObject();
  EXPECT_EQ(out,
            "{\"name\":\"0xgen\",\"n\":-3,\"big\":18446744073709551615,\"ok\":true,"
            "\"none\":null,\"list\":[1,{\"a\":[],\"b\":{}},\"x\"],\"raw\":{\"pre\":[1,2]},"
            "\"after\":false}");
  EXPECT_TRUE(nlohmann::json::accept(out));
}

TEST(JsonWriterTest, EscapesKeysAndValues) {
  std::string out;
  JsonWriter(out).BeginObject().Key("k\"\n").String("v\x01\xFF").EndObject();
  EXPECT_EQ(out, "{\"k\\\"\\n\":\"v\\u0001" FFFD "\"}");
}

TEST(JsonWriterTest, TopLevelArrayAndEmptyContainers) {
  std::string out;
  JsonWriter w(out);
  w.BeginArray().BeginArray().EndArray().BeginObject().EndObject().BeginArray().Null().EndArray();
  w.EndArray();
  EXPECT_EQ(out, "[[],{},[null]]");
}

TEST(JsonWriterTest, SiblingsAfterNestedContainersGetCommas) {
  std::string out;
  JsonWriter w(out);
  w.BeginArray();
  for (int i = 0; i < 3; ++i) w.BeginArray().Int(i).Int(i + 1).EndArray();
  w.EndArray();
  EXPECT_EQ(out, "[[0,1],[1,2],[2,3]]");
}

TEST(JsonWriterTest, IntegerLimits) {
  std::string out;
  JsonWriter(out)
      .BeginArray()
      .Int(std::numeric_limits<int64_t>::min())
      .Int(std::numeric_limits<int64_t>::max())
      .Int(0)
      .Uint(0)
      .Uint(std::numeric_limits<uint64_t>::max())
      .EndArray();
  EXPECT_EQ(out, "[-9223372036854775808,9223372036854775807,0,0,18446744073709551615]");
}

TEST(JsonWriterTest, DoublesAreShortestRoundTripAndNonFiniteIsNull) {
  std::string out;
  JsonWriter(out)
      .BeginArray()
      .Double(0.1)
      .Double(1.5)
      .Double(-0.0)
      .Double(1e21)
      .Double(1e-7)
      .Double(std::nan(""))
      .Double(std::numeric_limits<double>::infinity())
      .Double(-std::numeric_limits<double>::infinity())
      .Double(3)
      .EndArray();
  EXPECT_EQ(out, "[0.1,1.5,-0,1e+21,1e-07,null,null,null,3]");
  const auto parsed = nlohmann::json::parse(out);
  EXPECT_EQ(parsed[0].get<double>(), 0.1);
  EXPECT_EQ(parsed[3].get<double>(), 1e21);

  const double tricky[] = {0.30000000000000004, 5e-324, 1.7976931348623157e308, 123456.789};
  for (double d : tricky) {
    std::string s;
    JsonWriter(s).Double(d);
    EXPECT_EQ(std::strtod(s.c_str(), nullptr), d) << s;
    EXPECT_TRUE(nlohmann::json::accept(s)) << s;
  }
}

TEST(JsonWriterTest, NonFiniteValueOfAKey) {
  std::string out;
  JsonWriter(out).BeginObject().Key("a").Double(INFINITY).Key("b").Int(1).EndObject();
  EXPECT_EQ(out, "{\"a\":null,\"b\":1}");
}

TEST(JsonWriterTest, MaxDepthIsHonoredAndDeeperBecomesNull) {
  std::string ok;
  {
    JsonWriter w(ok);
    for (int i = 0; i < JsonWriter::kMaxDepth; ++i) w.BeginArray().Int(i);
    for (int i = JsonWriter::kMaxDepth - 1; i >= 0; --i) {
      w.EndArray();
      if (i > 0) w.Int(i);  // a sibling after the closed child needs that level's comma
    }
  }
  // 64 levels, each with commas tracked on its own bit.
  EXPECT_TRUE(nlohmann::json::accept(ok)) << ok;
  EXPECT_EQ(ok.substr(0, 6), "[0,[1,");
  EXPECT_EQ(ok.substr(ok.size() - 7), "],2],1]");

  std::string deep;
  JsonWriter w(deep);
  for (int i = 0; i < JsonWriter::kMaxDepth; ++i) w.BeginArray();
  w.BeginObject().Key("dropped").BeginArray().Int(1).EndArray().EndObject();  // level 65
  w.Int(7);
  for (int i = 0; i < JsonWriter::kMaxDepth; ++i) w.EndArray();
  EXPECT_EQ(deep, std::string(64, '[') + "null,7" + std::string(64, ']'));
  EXPECT_TRUE(nlohmann::json::accept(deep));
}

TEST(JsonWriterTest, AppendsToExistingBuffer) {
  std::string out = "line1\n";
  JsonWriter(out).BeginObject().Key("a").Int(1).EndObject();
  out.push_back('\n');
  JsonWriter(out).BeginObject().Key("b").Int(2).EndObject();
  EXPECT_EQ(out, "line1\n{\"a\":1}\n{\"b\":2}");
}

}  // namespace
}  // namespace oxg
