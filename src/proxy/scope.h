#pragma once

// Scope policy of the capture proxy (contract §9): decides whether an exchange is in scope
// (captured) or out of scope (proxied but not captured).
//
// Policy file:
//   version: 1                    # required, only 1 is known
//   private_networks: block       # block (default) | allow
//   allow: [{type: domain, value: example.com}, ...]
//   deny:  [{type: cidr, value: 10.0.0.0/8}, ...]
//
// Decision order:
//   1. Any matching deny rule: out of scope.
//   2. private_networks: block and a candidate address of the target (the host when it is an IP
//      literal, and the resolved IP when known) is private (0/8, 10/8, 100.64/10, 127/8,
//      169.254/16, 172.16/12, 192.168/16, ::, ::1, fc00::/7, fe80::/10; IPv4-mapped IPv6 counts
//      as IPv4): out of scope, unless that very address is matched by an `ip` or `cidr` allow
//      rule. Host names are not resolved here: "localhost" is only blocked through its resolved IP.
//      IPv4 host literals are read as the resolver reads them ("127.1" and "2130706433" are
//      127.0.0.1).
//   3. Empty allow list: in scope. Otherwise in scope iff some allow rule matches.
//
// Rule types:
//   domain      host equals the value or is a subdomain of it; case-insensitive, a trailing dot
//               ignored; whole labels only ("example.com" does not match "badexample.com").
//   wildcard    "*.<domain>": `*` stands for one or more whole labels at the start, so
//               "*.example.com" matches "a.example.com" and "a.b.example.com" but not
//               "example.com". `*` anywhere else is an error.
//   url         the full URL, byte for byte.
//   url_prefix  the full URL starts with the value on a boundary: the value ends with one of
//               "/?#&=" or the URL continues with "/", "?", "#" or ends there
//               ("https://a.com" matches "https://a.com/x" but not "https://a.com.evil.net/").
//   path        the path (query and fragment ignored) starts with the value (which must start
//               with "/") on a segment boundary: "/logout" matches "/logout", "/logout/x" and
//               "/logout?y" but not "/logouts". Case-sensitive.
//   cidr        an IPv4 or IPv6 network ("10.0.0.0/8", "fc00::/7"; host bits must be zero),
//               matched against the candidate addresses (host literal, resolved IP).
//   ip          one address, compared numerically ("::1" equals "0:0::1").
//   pattern     RE2, compiled once, searched (unanchored: use ^...$ for a whole match) in the
//               full URL.
//
// Thread-safety: a ScopePolicy is immutable after loading; Decide may be called concurrently.
// Copies are cheap and share the compiled rules.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "common/status.h"

namespace oxg::proxy {

// Limits against hostile policy files.
inline constexpr size_t kMaxScopePolicyBytes = 1 << 20;
inline constexpr size_t kMaxScopeRules = 10000;  // allow and deny together
inline constexpr size_t kMaxScopeValueBytes = 4096;

struct ScopeTarget {
  std::string scheme;  // "http", "https", "ws", ...
  std::string host;    // lower-case, IPv6 without brackets
  uint16_t port = 0;
  std::string path;                        // as on the request line; query/fragment ignored
  std::string url;                         // full URL, e.g. "https://example.com/a?b"
  std::optional<std::string> resolved_ip;  // textual address the host resolved to, if known
};

struct ScopeDecision {
  bool in_scope = false;
  // Why, for logs and audit, e.g. `deny[0] path "/logout" (scope.yaml:5)`. Points into the
  // policy (or a static string): valid while any copy of the policy lives.
  std::string_view rule;
};

class ScopePolicy {
 public:
  ScopeDecision Decide(const ScopeTarget& target) const;

  struct Rules;  // internal

 private:
  friend absl::StatusOr<ScopePolicy> ParseScopePolicy(std::string_view yaml,
                                                      std::string_view file_name_for_errors);
  explicit ScopePolicy(std::shared_ptr<const Rules> rules) : rules_(std::move(rules)) {}
  std::shared_ptr<const Rules> rules_;
};

// Errors are absl::InvalidArgumentError("file:line: reason"), line 1-based.
absl::StatusOr<ScopePolicy> ParseScopePolicy(std::string_view yaml,
                                             std::string_view file_name_for_errors);
absl::StatusOr<ScopePolicy> LoadScopePolicy(const std::string& path);

}  // namespace oxg::proxy
