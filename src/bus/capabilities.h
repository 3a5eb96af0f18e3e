#pragma once
// Plugin capabilities and the single-use capability tokens of the plugin bus (contract §10).
//
// A plugin first calls GrantCapabilities with the daemon token and the capabilities it wants;
// the bus checks them against the plugin's manifest and issues a capability token that is
// - single use: redeeming it (in the EventStream hello) consumes it;
// - short-lived: 60 s by default, on the injected clock;
// - bound to the plugin name it was issued for;
// - worth exactly the capabilities granted, never more.
// Tokens are 256-bit random values from the kernel; they are never logged. Lookups go through a
// SHA-256 digest of the presented token and the final comparison is constant-time.
#include <chrono>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/clock.h"

namespace oxg::bus {

enum class Capability : uint8_t {
  kEmitFindings,
  kFlowInspect,
  kFlowInspectRaw,
  kHttpActive,
  kHttpPassive,
  kWs,
  kSpider,
  kReport,
  kStorage,
  kAiAnalysis,
};
inline constexpr size_t kCapabilityCount = 10;

// "CAP_EMIT_FINDINGS" <-> Capability::kEmitFindings. Names are exact (upper case).
std::optional<Capability> ParseCapability(std::string_view name);
std::string_view CapabilityName(Capability c);

// A set of capabilities, as a bit mask.
class CapabilitySet {
 public:
  CapabilitySet() = default;
  void Add(Capability c) { bits_ |= Bit(c); }
  bool Has(Capability c) const { return (bits_ & Bit(c)) != 0; }
  bool IsSubsetOf(CapabilitySet other) const { return (bits_ & ~other.bits_) == 0; }
  bool empty() const { return bits_ == 0; }
  // Names in enum order, for audit metadata and span attributes.
  std::vector<std::string_view> Names() const;
  bool operator==(const CapabilitySet&) const = default;

 private:
  static uint32_t Bit(Capability c) { return uint32_t{1} << static_cast<unsigned>(c); }
  uint32_t bits_ = 0;
};

// Parses capability names; the first unknown name is reported in *unknown and nullopt returned.
std::optional<CapabilitySet> ParseCapabilities(std::span<const std::string> names,
                                               std::string* unknown);

// The flow subscriptions of contract §10 and what each needs.
enum class Subscription : uint8_t { kFlowRequest, kFlowResponse, kFlowRequestRaw, kFlowResponseRaw };
std::optional<Subscription> ParseSubscription(std::string_view name);
std::string_view SubscriptionName(Subscription s);
// FLOW_REQUEST/FLOW_RESPONSE need CAP_FLOW_INSPECT; the _RAW ones need CAP_FLOW_INSPECT_RAW too.
CapabilitySet RequiredCapabilities(Subscription s);

class CapabilityTokens {
 public:
  struct Options {
    std::chrono::seconds ttl{60};
    // Tokens issued and not yet redeemed or expired; beyond it Issue refuses (a plugin asking
    // for tokens in a loop cannot grow the daemon's memory).
    size_t max_outstanding = 4096;
  };
  explicit CapabilityTokens(const Clock& clock, Options options);
  explicit CapabilityTokens(const Clock& clock) : CapabilityTokens(clock, Options()) {}

  struct Grant {
    std::string token;
    Clock::WallTime expires_at;
  };
  // Issues a token worth `granted` for `plugin_name`; nullopt when too many are outstanding
  // (max_outstanding unredeemed, or four times that remembered in all).
  std::optional<Grant> Issue(std::string_view plugin_name, CapabilitySet granted);

  enum class RedeemError {
    kUnknown,      // never issued (or long forgotten)
    kExpired,      // issued, but its time is up
    kAlreadyUsed,  // redeemed before (single use)
    kWrongPlugin,  // issued for another plugin name; the token is consumed all the same
  };
  struct Redeemed {
    std::optional<CapabilitySet> granted;  // set on success
    RedeemError error = RedeemError::kUnknown;
  };
  // Consumes the token. Thread-safe.
  Redeemed Redeem(std::string_view token, std::string_view plugin_name);

  size_t outstanding() const;

 private:
  struct Entry {
    std::string token;  // kept to compare in constant time
    std::string plugin;
    CapabilitySet granted;
    Clock::MonoTime expires_at;  // monotonic: a wall clock step neither revives nor kills tokens
    bool used = false;
  };
  static std::string Digest(std::string_view token);
  void PurgeLocked(Clock::MonoTime now);

  const Clock& clock_;
  const Options options_;
  mutable std::mutex mu_;
  // Keyed by the SHA-256 of the token. Used entries stay until their expiry, so a reuse is
  // reported as such rather than as an unknown token.
  std::unordered_map<std::string, Entry> entries_;
  std::deque<std::pair<Clock::MonoTime, std::string>> by_expiry_;  // (expires_at, digest)
  size_t unused_ = 0;
};

}  // namespace oxg::bus
