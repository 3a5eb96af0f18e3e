#pragma once

// Listener addresses as given on the command line: "host:port", ":port" (all interfaces),
// "[v6]:port". Ports 0-65535 (0 lets the OS choose).

#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.h"

namespace oxg {

struct HostPort {
  std::string host;  // empty means every interface; IPv6 without brackets
  uint16_t port = 0;
  // Re-joins as text, bracketing IPv6 literals.
  std::string ToString() const;
};

// Errors quote the input and name what is wrong, e.g.
//   invalid address "9090": expected host:port or :port
absl::StatusOr<HostPort> ParseHostPort(std::string_view text);

}  // namespace oxg
