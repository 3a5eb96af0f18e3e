#include "bus/capabilities.h"

#include <gtest/gtest.h>

#include <set>
#include <string>
#include <thread>
#include <vector>

namespace oxg::bus {
namespace {

CapabilitySet Set(std::initializer_list<Capability> caps) {
  CapabilitySet s;
  for (Capability c : caps) s.Add(c);
  return s;
}

TEST(CapabilityTest, NamesRoundTripExactly) {
  for (size_t i = 0; i < kCapabilityCount; ++i) {
    const Capability c = static_cast<Capability>(i);
    EXPECT_EQ(ParseCapability(CapabilityName(c)), c);
  }
  EXPECT_EQ(CapabilityName(Capability::kEmitFindings), "CAP_EMIT_FINDINGS");
  EXPECT_EQ(CapabilityName(Capability::kAiAnalysis), "CAP_AI_ANALYSIS");
  EXPECT_FALSE(ParseCapability("cap_emit_findings").has_value());
  EXPECT_FALSE(ParseCapability("CAP_EMIT_FINDINGS ").has_value());
  EXPECT_FALSE(ParseCapability("").has_value());
}

TEST(CapabilityTest, ParseCapabilitiesNamesTheFirstUnknown) {
  std::string unknown;
  std::vector<std::string> ok = {"CAP_FLOW_INSPECT", "CAP_EMIT_FINDINGS", "CAP_FLOW_INSPECT"};
  auto set = ParseCapabilities(ok, &unknown);
  ASSERT_TRUE(set.has_value());
  EXPECT_EQ(*set, Set({Capability::kFlowInspect, Capability::kEmitFindings}));
  EXPECT_EQ(set->Names(), (std::vector<std::string_view>{"CAP_EMIT_FINDINGS", "CAP_FLOW_INSPECT"}));
  std::vector<std::string> bad = {"CAP_FLOW_INSPECT", "CAP_ROOT", "CAP_NOPE"};
  EXPECT_FALSE(ParseCapabilities(bad, &unknown).has_value());
  EXPECT_EQ(unknown, "CAP_ROOT");
}

TEST(CapabilityTest, SubsetAndSubscriptionRules) {
  const CapabilitySet inspect = Set({Capability::kFlowInspect});
  const CapabilitySet raw = Set({Capability::kFlowInspect, Capability::kFlowInspectRaw});
  EXPECT_TRUE(inspect.IsSubsetOf(raw));
  EXPECT_FALSE(raw.IsSubsetOf(inspect));
  EXPECT_TRUE(CapabilitySet().IsSubsetOf(inspect));
  EXPECT_TRUE(RequiredCapabilities(Subscription::kFlowRequest).IsSubsetOf(inspect));
  EXPECT_TRUE(RequiredCapabilities(Subscription::kFlowResponse).IsSubsetOf(inspect));
  EXPECT_FALSE(RequiredCapabilities(Subscription::kFlowRequestRaw).IsSubsetOf(inspect));
  EXPECT_TRUE(RequiredCapabilities(Subscription::kFlowResponseRaw).IsSubsetOf(raw));
  // CAP_FLOW_INSPECT_RAW alone is not enough for a raw subscription.
  EXPECT_FALSE(RequiredCapabilities(Subscription::kFlowRequestRaw)
                   .IsSubsetOf(Set({Capability::kFlowInspectRaw})));
  for (auto s : {Subscription::kFlowRequest, Subscription::kFlowResponse,
                 Subscription::kFlowRequestRaw, Subscription::kFlowResponseRaw}) {
    EXPECT_EQ(ParseSubscription(SubscriptionName(s)), s);
  }
  EXPECT_FALSE(ParseSubscription("FLOW_EVERYTHING").has_value());
}

struct TokensTest : ::testing::Test {
  SimulatedClock clock;
  CapabilityTokens tokens{clock};
  const CapabilitySet granted = Set({Capability::kEmitFindings, Capability::kFlowInspect});
};

TEST_F(TokensTest, RedeemOnceForTheRightPlugin) {
  auto grant = tokens.Issue("seer", granted);
  ASSERT_TRUE(grant.has_value());
  EXPECT_EQ(grant->token.size(), 64u);  // 256 bits in hex
  EXPECT_EQ(grant->expires_at, clock.Now() + std::chrono::seconds(60));
  EXPECT_EQ(tokens.outstanding(), 1u);
  auto r = tokens.Redeem(grant->token, "seer");
  ASSERT_TRUE(r.granted.has_value());
  EXPECT_EQ(*r.granted, granted);
  EXPECT_EQ(tokens.outstanding(), 0u);
  auto again = tokens.Redeem(grant->token, "seer");
  EXPECT_FALSE(again.granted.has_value());
  EXPECT_EQ(again.error, CapabilityTokens::RedeemError::kAlreadyUsed);
}

TEST_F(TokensTest, ExpiredAfterTheTtlOnTheClock) {
  auto grant = tokens.Issue("seer", granted);
  ASSERT_TRUE(grant.has_value());
  clock.Advance(std::chrono::seconds(59));
  auto early = tokens.Issue("seer", granted);
  ASSERT_TRUE(early.has_value());
  EXPECT_TRUE(tokens.Redeem(early->token, "seer").granted.has_value());
  clock.Advance(std::chrono::seconds(1));  // exactly 60 s after the first grant
  auto late = tokens.Redeem(grant->token, "seer");
  EXPECT_FALSE(late.granted.has_value());
  EXPECT_EQ(late.error, CapabilityTokens::RedeemError::kExpired);
}

TEST_F(TokensTest, BoundToThePluginNameAndConsumedByAMisuse) {
  auto grant = tokens.Issue("seer", granted);
  ASSERT_TRUE(grant.has_value());
  auto wrong = tokens.Redeem(grant->token, "passive-headers");
  EXPECT_EQ(wrong.error, CapabilityTokens::RedeemError::kWrongPlugin);
  // A stolen token tried under another name is burnt: the owner cannot use it either.
  EXPECT_EQ(tokens.Redeem(grant->token, "seer").error,
            CapabilityTokens::RedeemError::kAlreadyUsed);
}

TEST_F(TokensTest, UnknownTokens) {
  for (std::string_view t : {std::string_view(""), std::string_view("x"),
                             std::string_view(std::string(64, 'a'))}) {
    auto r = tokens.Redeem(t, "seer");
    EXPECT_FALSE(r.granted.has_value());
    EXPECT_EQ(r.error, CapabilityTokens::RedeemError::kUnknown);
  }
  auto grant = tokens.Issue("seer", granted);
  ASSERT_TRUE(grant.has_value());
  std::string altered = grant->token;
  altered[0] = altered[0] == 'a' ? 'b' : 'a';
  EXPECT_EQ(tokens.Redeem(altered, "seer").error, CapabilityTokens::RedeemError::kUnknown);
  EXPECT_TRUE(tokens.Redeem(grant->token, "seer").granted.has_value());
}

TEST_F(TokensTest, TokensAreDistinct) {
  std::set<std::string> seen;
  for (int i = 0; i < 200; ++i) {
    auto grant = tokens.Issue("seer", granted);
    ASSERT_TRUE(grant.has_value());
    EXPECT_TRUE(seen.insert(grant->token).second);
  }
}

TEST(CapabilityTokensLimitTest, OutstandingTokensAreBounded) {
  SimulatedClock clock;
  CapabilityTokens tokens(clock, CapabilityTokens::Options{.ttl = std::chrono::seconds(60),
                                                           .max_outstanding = 3});
  std::vector<std::string> issued;
  for (int i = 0; i < 3; ++i) issued.push_back(tokens.Issue("p", {})->token);
  EXPECT_FALSE(tokens.Issue("p", {}).has_value());
  EXPECT_TRUE(tokens.Redeem(issued[0], "p").granted.has_value());
  EXPECT_TRUE(tokens.Issue("p", {}).has_value());  // a slot came free
  // Redeemed tokens are remembered until they expire, but not forever: after the TTL every
  // slot is free again.
  clock.Advance(std::chrono::seconds(61));
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(tokens.Issue("p", {}).has_value());
  EXPECT_EQ(tokens.outstanding(), 3u);
}

TEST(CapabilityTokensLimitTest, RememberedTokensAreBoundedToo) {
  SimulatedClock clock;
  CapabilityTokens tokens(clock, CapabilityTokens::Options{.ttl = std::chrono::seconds(60),
                                                           .max_outstanding = 2});
  // Issue and redeem in a loop: redeemed entries pile up to four times the bound, no further.
  int issued = 0;
  for (int i = 0; i < 20; ++i) {
    auto g = tokens.Issue("p", {});
    if (!g) break;
    ++issued;
    EXPECT_TRUE(tokens.Redeem(g->token, "p").granted.has_value());
  }
  EXPECT_EQ(issued, 8);
}

TEST(CapabilityTokensThreadTest, ConcurrentRedeemsOfOneTokenSucceedOnce) {
  SimulatedClock clock;
  CapabilityTokens tokens(clock);
  for (int round = 0; round < 50; ++round) {
    auto grant = tokens.Issue("p", {});
    ASSERT_TRUE(grant.has_value());
    std::atomic<int> wins{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&] {
        if (tokens.Redeem(grant->token, "p").granted.has_value()) wins.fetch_add(1);
      });
    }
    for (auto& t : threads) t.join();
    EXPECT_EQ(wins.load(), 1);
  }
}

}  // namespace
}  // namespace oxg::bus

namespace oxg::bus {
namespace {

// Expiry follows the monotonic clock: a wall clock stepped back an hour (NTP, an operator)
// neither keeps a token alive past its 60 s nor stops expired ones from being forgotten.
TEST(CapabilityTokensMonotonicTest, WallClockStepsDoNotMoveExpiry) {
  class SteppedClock final : public Clock {
   public:
    WallTime Now() const override { return wall; }
    MonoTime MonoNow() const override { return mono; }
    WallTime wall = WallTime(std::chrono::seconds(1700000000));
    MonoTime mono{};
  } clock;
  CapabilityTokens tokens(clock);
  CapabilitySet caps;
  caps.Add(Capability::kFlowInspect);
  auto grant = tokens.Issue("p", caps);
  ASSERT_TRUE(grant.has_value());
  EXPECT_EQ(grant->expires_at, clock.wall + std::chrono::seconds(60));
  clock.wall -= std::chrono::hours(1);
  clock.mono += std::chrono::seconds(61);
  EXPECT_EQ(tokens.Redeem(grant->token, "p").error, CapabilityTokens::RedeemError::kExpired);
  EXPECT_EQ(tokens.outstanding(), 0u);
}

}  // namespace
}  // namespace oxg::bus
