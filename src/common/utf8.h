#pragma once

// Strict UTF-8 decoding helpers shared by the writers that must never emit invalid text.

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace oxg::utf8 {

// Length of the valid UTF-8 sequence starting at s[i], or 0 when the bytes there are not valid
// UTF-8 (overlong forms, surrogates, code points above U+10FFFF and truncation are invalid).
inline size_t SequenceLength(std::string_view s, size_t i) {
  const auto b = [&](size_t k) { return static_cast<uint8_t>(s[k]); };
  const uint8_t c = b(i);
  if (c < 0x80) return 1;
  const size_t left = s.size() - i;
  const auto cont = [&](size_t k) { return (b(k) & 0xC0) == 0x80; };
  if (c >= 0xC2 && c <= 0xDF) return left >= 2 && cont(i + 1) ? 2 : 0;
  if (c >= 0xE0 && c <= 0xEF) {
    if (left < 3 || !cont(i + 1) || !cont(i + 2)) return 0;
    if (c == 0xE0 && b(i + 1) < 0xA0) return 0;   // overlong
    if (c == 0xED && b(i + 1) >= 0xA0) return 0;  // UTF-16 surrogate
    return 3;
  }
  if (c >= 0xF0 && c <= 0xF4) {
    if (left < 4 || !cont(i + 1) || !cont(i + 2) || !cont(i + 3)) return 0;
    if (c == 0xF0 && b(i + 1) < 0x90) return 0;   // overlong
    if (c == 0xF4 && b(i + 1) >= 0x90) return 0;  // above U+10FFFF
    return 4;
  }
  return 0;
}

// Counts code points; false when `s` is not valid UTF-8.
inline bool CountCodePoints(std::string_view s, size_t* count) {
  size_t n = 0;
  for (size_t i = 0; i < s.size();) {
    const size_t len = SequenceLength(s, i);
    if (len == 0) return false;
    i += len;
    ++n;
  }
  *count = n;
  return true;
}

// Appends `s` to `out` with every invalid byte replaced by U+FFFD.
template <class String>
void AppendValid(String& out, std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const size_t len = SequenceLength(s, i);
    if (len == 0) {
      out.append("\xEF\xBF\xBD");
      ++i;
    } else {
      out.append(s.data() + i, len);
      i += len;
    }
  }
}

}  // namespace oxg::utf8
