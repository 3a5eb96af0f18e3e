#include "common/net.h"

#include <arpa/inet.h>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace oxg {
namespace {

// Debian's Abseil has its own string_view type, distinct from std::string_view.
absl::string_view AbslView(std::string_view s) { return absl::string_view(s.data(), s.size()); }

absl::Status Invalid(std::string_view text, std::string_view why) {
  // CHexEscape keeps control characters from a bad flag value out of the terminal.
  return absl::InvalidArgumentError(
      absl::StrCat("invalid address \"", absl::CHexEscape(AbslView(text)), "\": ", AbslView(why)));
}

// DNS names and IPv4 literals: letters, digits, '-', '_' (seen in container and service
// names), dot-separated non-empty labels of at most 63 bytes; one trailing dot is allowed.
bool ValidHostName(std::string_view host) {
  if (host.size() > 253) return false;
  if (host.back() == '.') host.remove_suffix(1);
  if (host.empty()) return false;
  size_t label = 0;
  for (char c : host) {
    if (c == '.') {
      if (label == 0) return false;
      label = 0;
      continue;
    }
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_') return false;
    if (++label > 63) return false;
  }
  return label != 0;
}

// An IPv6 literal, optionally with a zone ("fe80::1%eth0").
bool ValidIpv6(std::string_view host) {
  const size_t pct = host.find('%');
  std::string_view addr = host.substr(0, pct);
  if (pct != std::string_view::npos) {
    const std::string_view zone = host.substr(pct + 1);
    if (zone.empty() || zone.size() > 64) return false;
    for (char c : zone) {
      if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') {
        return false;
      }
    }
  }
  if (addr.size() >= INET6_ADDRSTRLEN) return false;
  char buf[INET6_ADDRSTRLEN];
  addr.copy(buf, addr.size());
  buf[addr.size()] = '\0';
  in6_addr parsed;
  return inet_pton(AF_INET6, buf, &parsed) == 1;
}

absl::StatusOr<uint16_t> ParsePort(std::string_view text, std::string_view port) {
  if (port.empty()) return Invalid(text, "missing port after \":\"");
  uint32_t value = 0;
  for (char c : port) {
    if (c < '0' || c > '9') return Invalid(text, "port must be a number from 0 to 65535");
    value = value * 10 + static_cast<uint32_t>(c - '0');
    if (value > 65535) return Invalid(text, "port must be a number from 0 to 65535");
  }
  return static_cast<uint16_t>(value);
}

}  // namespace

std::string HostPort::ToString() const {
  if (host.find(':') != std::string::npos) return absl::StrCat("[", host, "]:", port);
  return absl::StrCat(host, ":", port);
}

absl::StatusOr<HostPort> ParseHostPort(std::string_view text) {
  if (text.empty()) return Invalid(text, "empty; expected host:port or :port");
  for (char c : text) {
    if (absl::ascii_isspace(static_cast<unsigned char>(c)) ||
        absl::ascii_iscntrl(static_cast<unsigned char>(c))) {
      return Invalid(text, "contains whitespace or control characters");
    }
  }

  HostPort hp;
  if (text.front() == '[') {
    const size_t close = text.find(']');
    if (close == std::string_view::npos) return Invalid(text, "missing \"]\" after IPv6 address");
    const std::string_view host = text.substr(1, close - 1);
    if (host.empty()) return Invalid(text, "empty IPv6 address in brackets");
    if (!ValidIpv6(host)) return Invalid(text, "not a valid IPv6 address in brackets");
    const std::string_view rest = text.substr(close + 1);
    if (rest.empty() || rest.front() != ':') {
      return Invalid(text, "expected \":port\" after \"]\"");
    }
    OXG_ASSIGN_OR_RETURN(hp.port, ParsePort(text, rest.substr(1)));
    hp.host = std::string(host);
    return hp;
  }

  const size_t colon = text.rfind(':');
  if (colon == std::string_view::npos) return Invalid(text, "expected host:port or :port");
  const std::string_view host = text.substr(0, colon);
  if (host.find(':') != std::string_view::npos) {
    return Invalid(text, "IPv6 addresses must be in brackets, e.g. \"[::1]:9090\"");
  }
  if (host.find_first_of("[]") != std::string_view::npos) {
    return Invalid(text, "misplaced \"[\" or \"]\"");
  }
  if (!host.empty() && !ValidHostName(host)) {
    return Invalid(text, "host must be a DNS name or an IP address");
  }
  OXG_ASSIGN_OR_RETURN(hp.port, ParsePort(text, text.substr(colon + 1)));
  hp.host = std::string(host);
  return hp;
}

}  // namespace oxg
