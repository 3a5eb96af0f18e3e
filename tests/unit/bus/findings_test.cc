#include "bus/findings.h"

#include <gtest/gtest.h>

#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace oxg::bus {
namespace {

FindingInput Good() {
  FindingInput in;
  in.type = "missing-security-header";
  in.message = "Strict-Transport-Security is missing";
  in.target = "https://shop.example.com/";
  in.evidence = "HTTP/1.1 200 OK";
  in.severity = 3;  // MEDIUM
  in.metadata = {{"header", "Strict-Transport-Security"}, {"flow_id", "01J0000000000000000000000A"}};
  return in;
}

TEST(FindingsTest, ValidFindingBecomesAContractLine) {
  SimulatedClock clock;
  auto f = ValidateFinding(Good(), "passive-headers", "4bf92f3577b34da6a3ce929d0e0e4736", clock);
  ASSERT_TRUE(f.ok()) << f.status();
  std::string line;
  AppendFindingLine(line, *f);
  ASSERT_EQ(line.back(), '\n');
  auto j = nlohmann::ordered_json::parse(line);
  std::vector<std::string> keys;
  for (auto& [k, v] : j.items()) keys.push_back(k);
  EXPECT_EQ(keys, (std::vector<std::string>{"version", "id", "plugin", "type", "message", "target",
                                            "evidence", "severity", "ts", "meta", "trace_id"}));
  EXPECT_EQ(j["version"], "0.2");
  EXPECT_EQ(j["id"].get<std::string>().size(), 26u);
  EXPECT_EQ(j["plugin"], "passive-headers");
  EXPECT_EQ(j["severity"], "med");
  EXPECT_EQ(j["ts"], "2023-11-14T22:13:20.000000000Z");  // SimulatedClock's start
  EXPECT_EQ(j["meta"]["header"], "Strict-Transport-Security");
  EXPECT_EQ(j["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
}

TEST(FindingsTest, SeverityNames) {
  SimulatedClock clock;
  const char* names[] = {"info", "low", "med", "high", "crit"};
  for (int s = 1; s <= 5; ++s) {
    FindingInput in = Good();
    in.severity = s;
    auto f = ValidateFinding(in, "p", "", clock);
    ASSERT_TRUE(f.ok());
    EXPECT_EQ(SeverityName(f->severity), names[s - 1]);
  }
}

TEST(FindingsTest, HostileInputIsRefusedWithTheField) {
  SimulatedClock clock;
  struct Case {
    std::function<void(FindingInput&)> spoil;
    std::string error;
  };
  const std::vector<Case> cases = {
      {[](FindingInput& in) { in.type = ""; }, "type: must be 1 to 64 characters of [a-z0-9._-]"},
      {[](FindingInput& in) { in.type = "Has Space"; },
       "type: must be 1 to 64 characters of [a-z0-9._-]"},
      {[](FindingInput& in) { in.message = ""; }, "message: must not be empty"},
      {[](FindingInput& in) { in.message = std::string(4097, 'm'); },
       "message: longer than 4096 bytes"},
      {[](FindingInput& in) { in.message = "bad \xff\xfe bytes"; },
       "message: not valid UTF-8 text (or holds NUL)"},
      {[](FindingInput& in) { in.evidence = std::string("a\0b", 3); },
       "evidence: not valid UTF-8 text (or holds NUL)"},
      {[](FindingInput& in) { in.severity = 0; },
       "severity: must be one of INFO, LOW, MEDIUM, HIGH, CRITICAL"},
      {[](FindingInput& in) { in.severity = 9; },
       "severity: must be one of INFO, LOW, MEDIUM, HIGH, CRITICAL"},
      {[](FindingInput& in) {
         in.metadata.clear();
         for (int i = 0; i < 10000; ++i) in.metadata.emplace_back("k" + std::to_string(i), "v");
       },
       "metadata: more than 64 entries"},
      {[](FindingInput& in) { in.metadata = {{"bad key", "v"}}; },
       "metadata[0]: key must be 1 to 128 characters of [A-Za-z0-9._-]"},
      {[](FindingInput& in) { in.metadata = {{"k", "\xc3"}}; },
       "metadata[0]: not valid UTF-8 text (or holds NUL)"},
      {[](FindingInput& in) { in.metadata = {{"k", "1"}, {"k", "2"}}; },
       "metadata: a key appears twice"},
      {[](FindingInput& in) { in.evidence = std::string(70000, 'e'); },
       "finding: larger than 65536 bytes"},
  };
  for (const Case& c : cases) {
    FindingInput in = Good();
    c.spoil(in);
    auto f = ValidateFinding(in, "p", "", clock);
    ASSERT_FALSE(f.ok()) << c.error;
    EXPECT_EQ(f.status().message(), c.error);
  }
}

TEST(FindingsTest, SecretsAreRedactedBeforeStorage) {
  SimulatedClock clock;
  FindingInput in = Good();
  in.message = "token leaked: Authorization: Bearer abcdefghijklmnop";
  in.evidence = "password=hunter2-very-secret";
  in.metadata = {{"api_key", "AKIAABCDEFGHIJKLMNOP"}, {"where", "body"}};
  auto f = ValidateFinding(in, "seer", "", clock);
  ASSERT_TRUE(f.ok()) << f.status();
  std::string line;
  AppendFindingLine(line, *f);
  EXPECT_EQ(line.find("abcdefghijklmnop"), std::string::npos) << line;
  EXPECT_EQ(line.find("hunter2"), std::string::npos) << line;
  EXPECT_EQ(line.find("AKIAABCDEFGHIJKLMNOP"), std::string::npos) << line;
  EXPECT_NE(line.find("\"where\":\"body\""), std::string::npos) << line;
  EXPECT_NE(line.find("[REDACTED]"), std::string::npos);
}

}  // namespace
}  // namespace oxg::bus
