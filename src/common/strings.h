#pragma once

// Small string helpers for the whole project. Debian's Abseil has its own string_view type,
// distinct from std::string_view, so absl::StrCat and friends refuse std::string_view
// arguments; these accept both.

#include <charconv>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace oxg {

template <class T>
void AppendPart(std::string& out, const T& part) {
  if constexpr (std::is_same_v<T, absl::string_view>) {
    out.append(part.data(), part.size());
  } else if constexpr (std::is_convertible_v<const T&, std::string_view>) {
    out.append(std::string_view(part));
  } else {
    static_assert(std::is_arithmetic_v<T>, "Cat takes text and numbers");
    out.append(absl::StrCat(part));
  }
}

// Concatenates text (std or absl string views, strings, literals) and numbers.
template <class... T>
std::string Cat(const T&... parts) {
  std::string out;
  (AppendPart(out, parts), ...);
  return out;
}

inline std::string_view TrimAscii(std::string_view s) {
  constexpr std::string_view kSpace = " \t\r\n\f\v";
  const size_t first = s.find_first_not_of(kSpace);
  if (first == std::string_view::npos) return {};
  return s.substr(first, s.find_last_not_of(kSpace) - first + 1);
}

// Whole-string decimal integer: no sign other than a leading '-', no spaces, no suffix.
template <class Int>
bool ParseInt(std::string_view text, Int* out) {
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, *out);
  return !text.empty() && ec == std::errc() && ptr == end;
}

}  // namespace oxg
