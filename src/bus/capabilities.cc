#include "bus/capabilities.h"

#include <openssl/sha.h>

#include <array>

#include "common/ids.h"

namespace oxg::bus {
namespace {

constexpr std::array<std::string_view, kCapabilityCount> kCapabilityNames = {
    "CAP_EMIT_FINDINGS", "CAP_FLOW_INSPECT", "CAP_FLOW_INSPECT_RAW", "CAP_HTTP_ACTIVE",
    "CAP_HTTP_PASSIVE",  "CAP_WS",           "CAP_SPIDER",           "CAP_REPORT",
    "CAP_STORAGE",       "CAP_AI_ANALYSIS"};

constexpr std::array<std::string_view, 4> kSubscriptionNames = {
    "FLOW_REQUEST", "FLOW_RESPONSE", "FLOW_REQUEST_RAW", "FLOW_RESPONSE_RAW"};

}  // namespace

std::optional<Capability> ParseCapability(std::string_view name) {
  for (size_t i = 0; i < kCapabilityNames.size(); ++i) {
    if (kCapabilityNames[i] == name) return static_cast<Capability>(i);
  }
  return std::nullopt;
}

std::string_view CapabilityName(Capability c) {
  return kCapabilityNames[static_cast<size_t>(c)];
}

std::vector<std::string_view> CapabilitySet::Names() const {
  std::vector<std::string_view> out;
  for (size_t i = 0; i < kCapabilityCount; ++i) {
    if (Has(static_cast<Capability>(i))) out.push_back(kCapabilityNames[i]);
  }
  return out;
}

std::optional<CapabilitySet> ParseCapabilities(std::span<const std::string> names,
                                               std::string* unknown) {
  CapabilitySet set;
  for (const std::string& name : names) {
    std::optional<Capability> c = ParseCapability(name);
    if (!c) {
      if (unknown != nullptr) *unknown = name;
      return std::nullopt;
    }
    set.Add(*c);
  }
  return set;
}

std::optional<Subscription> ParseSubscription(std::string_view name) {
  for (size_t i = 0; i < kSubscriptionNames.size(); ++i) {
    if (kSubscriptionNames[i] == name) return static_cast<Subscription>(i);
  }
  return std::nullopt;
}

std::string_view SubscriptionName(Subscription s) {
  return kSubscriptionNames[static_cast<size_t>(s)];
}

CapabilitySet RequiredCapabilities(Subscription s) {
  CapabilitySet need;
  need.Add(Capability::kFlowInspect);
  if (s == Subscription::kFlowRequestRaw || s == Subscription::kFlowResponseRaw) {
    need.Add(Capability::kFlowInspectRaw);
  }
  return need;
}

CapabilityTokens::CapabilityTokens(const Clock& clock, Options options)
    : clock_(clock), options_(options) {}

std::string CapabilityTokens::Digest(std::string_view token) {
  std::string out(SHA256_DIGEST_LENGTH, '\0');
  SHA256(reinterpret_cast<const unsigned char*>(token.data()), token.size(),
         reinterpret_cast<unsigned char*>(out.data()));
  return out;
}

void CapabilityTokens::PurgeLocked(Clock::MonoTime now) {
  while (!by_expiry_.empty() && by_expiry_.front().first <= now) {
    auto it = entries_.find(by_expiry_.front().second);
    if (it != entries_.end() && it->second.expires_at <= now) {
      if (!it->second.used) --unused_;
      entries_.erase(it);
    }
    by_expiry_.pop_front();
  }
}

std::optional<CapabilityTokens::Grant> CapabilityTokens::Issue(std::string_view plugin_name,
                                                                CapabilitySet granted) {
  const Clock::MonoTime now = clock_.MonoNow();
  std::lock_guard lock(mu_);
  PurgeLocked(now);
  // Redeemed tokens are remembered until they expire (to name a reuse); bound those too.
  if (unused_ >= options_.max_outstanding || entries_.size() >= 4 * options_.max_outstanding) {
    return std::nullopt;
  }
  // The wall-clock expiry is what the plugin is told; the monotonic one is what counts.
  Grant grant{NewSecretToken(), clock_.Now() + options_.ttl};
  const Clock::MonoTime expires_at = now + options_.ttl;
  std::string digest = Digest(grant.token);
  entries_[digest] = Entry{grant.token, std::string(plugin_name), granted, expires_at, false};
  by_expiry_.emplace_back(expires_at, std::move(digest));
  ++unused_;
  return grant;
}

CapabilityTokens::Redeemed CapabilityTokens::Redeem(std::string_view token,
                                                    std::string_view plugin_name) {
  const Clock::MonoTime now = clock_.MonoNow();
  const std::string digest = Digest(token);
  std::lock_guard lock(mu_);
  auto it = entries_.find(digest);
  if (it == entries_.end() || !ConstantTimeEquals(it->second.token, token)) {
    return {std::nullopt, RedeemError::kUnknown};
  }
  Entry& e = it->second;
  if (e.expires_at <= now) {
    PurgeLocked(now);
    return {std::nullopt, RedeemError::kExpired};
  }
  if (e.used) return {std::nullopt, RedeemError::kAlreadyUsed};
  e.used = true;
  --unused_;
  if (e.plugin != plugin_name) return {std::nullopt, RedeemError::kWrongPlugin};
  return {e.granted, RedeemError::kUnknown};
}

size_t CapabilityTokens::outstanding() const {
  std::lock_guard lock(mu_);
  return unused_;
}

}  // namespace oxg::bus
