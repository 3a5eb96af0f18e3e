// Fuzzes the scope policy loader: policy files are operator input but may come from anywhere
// (shared configs, tickets). Any bytes must give a policy or a `file:line: reason` error, and a
// loaded policy must decide fixed targets without crashing.

#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "proxy/scope.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const auto policy = oxg::proxy::ParseScopePolicy(input, "fuzz.yaml");
  if (!policy.ok()) {
    if (policy.status().code() != absl::StatusCode::kInvalidArgument) std::abort();
    if (policy.status().message().substr(0, 10) != "fuzz.yaml:") std::abort();
    return 0;
  }
  static const oxg::proxy::ScopeTarget kTargets[] = {
      {"https", "example.com", 443, "/", "https://example.com/", std::nullopt},
      {"https", "api.example.com", 443, "/v2/users?id=1", "https://api.example.com/v2/users?id=1",
       "93.184.216.34"},
      {"http", "10.1.2.3", 80, "/logout", "http://10.1.2.3/logout", std::nullopt},
      {"http", "::1", 8080, "/", "http://[::1]:8080/", std::nullopt},
      {"http", "localhost", 80, "/admin", "http://localhost/admin", "127.0.0.1"},
      {"https", "fe80::1%eth0", 443, "", "https://[fe80::1%25eth0]/", std::nullopt},
      {"http", "", 0, "", "", "not an ip"},
  };
  for (const auto& t : kTargets) {
    const auto d = policy->Decide(t);
    if (d.rule.empty()) std::abort();
  }
  return 0;
}
