#include "proxy/flow/base64.h"

#include <array>
#include <cstdint>
#include <cstring>

namespace oxg::proxy {
namespace {

constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

constexpr std::array<int8_t, 256> MakeDecodeTable() {
  std::array<int8_t, 256> t{};
  for (auto& v : t) v = -1;
  for (int i = 0; i < 64; ++i) t[static_cast<unsigned char>(kAlphabet[i])] = static_cast<int8_t>(i);
  return t;
}

constexpr std::array<int8_t, 256> kDecode = MakeDecodeTable();

// Two output characters per 12 input bits: half the table lookups of the 6-bit alphabet, and
// the flow log base64-encodes every captured payload.
struct PairTable {
  std::array<char, 4096 * 2> chars{};
  constexpr PairTable() {
    for (int i = 0; i < 4096; ++i) {
      chars[2 * i] = kAlphabet[i >> 6];
      chars[2 * i + 1] = kAlphabet[i & 63];
    }
  }
};
constexpr PairTable kPairs;

}  // namespace

void AppendBase64(std::string& out, std::string_view in) {
  const size_t start = out.size();
  out.resize(start + (in.size() + 2) / 3 * 4);
  char* dst = out.data() + start;
  const auto* src = reinterpret_cast<const unsigned char*>(in.data());
  size_t i = 0;
  for (; i + 3 <= in.size(); i += 3) {
    const uint32_t v = (uint32_t{src[i]} << 16) | (uint32_t{src[i + 1]} << 8) | src[i + 2];
    std::memcpy(dst, &kPairs.chars[2 * (v >> 12)], 2);
    std::memcpy(dst + 2, &kPairs.chars[2 * (v & 4095)], 2);
    dst += 4;
  }
  const size_t rest = in.size() - i;
  if (rest != 0) {
    uint32_t v = uint32_t{src[i]} << 16;
    if (rest == 2) v |= uint32_t{src[i + 1]} << 8;
    *dst++ = kAlphabet[v >> 18];
    *dst++ = kAlphabet[(v >> 12) & 63];
    *dst++ = rest == 2 ? kAlphabet[(v >> 6) & 63] : '=';
    *dst++ = '=';
  }
}

std::optional<std::string> Base64Decode(std::string_view in) {
  if (in.size() % 4 != 0) return std::nullopt;
  size_t pad = 0;
  if (!in.empty() && in.back() == '=') pad = in[in.size() - 2] == '=' ? 2 : 1;
  std::string out;
  out.reserve(in.size() / 4 * 3);
  for (size_t i = 0; i < in.size(); i += 4) {
    const bool last = i + 4 == in.size();
    uint32_t v = 0;
    for (size_t k = 0; k < 4; ++k) {
      const unsigned char c = static_cast<unsigned char>(in[i + k]);
      int8_t d = kDecode[c];
      if (c == '=' && last && k >= 4 - pad) d = 0;
      if (d < 0) return std::nullopt;
      v = (v << 6) | static_cast<uint32_t>(d);
    }
    out.push_back(static_cast<char>(v >> 16));
    if (!last || pad < 2) out.push_back(static_cast<char>((v >> 8) & 0xff));
    if (!last || pad < 1) out.push_back(static_cast<char>(v & 0xff));
  }
  return out;
}

}  // namespace oxg::proxy
