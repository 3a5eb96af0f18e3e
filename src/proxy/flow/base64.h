#pragma once

// Standard base64 (RFC 4648 §4, with padding) for flow payloads in the flow log. Pure
// functions, safe from any thread.

#include <optional>
#include <string>
#include <string_view>

namespace oxg::proxy {

// Appends the base64 encoding of `in` to `out`.
void AppendBase64(std::string& out, std::string_view in);

inline std::string Base64Encode(std::string_view in) {
  std::string out;
  AppendBase64(out, in);
  return out;
}

// Decodes padded standard base64; nullopt on any character outside the alphabet, a bad length
// or misplaced padding.
std::optional<std::string> Base64Decode(std::string_view in);

}  // namespace oxg::proxy
