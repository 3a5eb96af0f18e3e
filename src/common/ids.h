#pragma once

// Identifiers: random bytes from the kernel CSPRNG, W3C trace and span ids, ULIDs.

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "common/clock.h"

namespace oxg {

// Fills `out` with cryptographically secure random bytes: small draws from a per-thread
// ChaCha20 generator keyed (and regularly re-keyed) from the kernel CSPRNG, with fast key
// erasure; large ones straight from getrandom. The state is discarded after fork, so two
// processes never share output. Thread-safe.
void RandomBytes(std::span<uint8_t> out);

namespace internal {
// The ChaCha20 block function behind RandomBytes (zero nonce), exposed for its test vectors.
void ChaChaBlock(const uint8_t key[32], uint32_t counter, uint8_t out[64]);
// Blocks counter..counter+3 at once (SIMD where available); what the generator uses.
void ChaChaBlocks4(const uint8_t key[32], uint32_t counter, uint8_t out[256]);
}  // namespace internal

// A 128-bit W3C trace id. All-zero is invalid.
struct TraceId {
  std::array<uint8_t, 16> bytes{};
  static TraceId Random();  // never all-zero
  bool IsValid() const;
  std::string ToHex() const;  // 32 lower-case hex digits
  // Writes 32 lower-case hex digits to out[0..31].
  void WriteHex(char* out) const;
  friend bool operator==(const TraceId&, const TraceId&) = default;
};

// A 64-bit W3C span id. All-zero is invalid.
struct SpanId {
  std::array<uint8_t, 8> bytes{};
  static SpanId Random();  // never all-zero
  bool IsValid() const;
  std::string ToHex() const;  // 16 lower-case hex digits
  void WriteHex(char* out) const;
  friend bool operator==(const SpanId&, const SpanId&) = default;
};

// Lower-case hex of arbitrary bytes.
std::string HexEncode(std::span<const uint8_t> bytes);

// Parses exactly 2*out.size() lower- or upper-case hex digits; false on anything else.
bool HexDecode(std::string_view hex, std::span<uint8_t> out);

// A ULID: 48-bit millisecond timestamp + 80 random bits, 26 Crockford base32 characters.
// Lexicographic order follows creation time across milliseconds.
std::string NewUlid(const Clock& clock = Clock::Real());

// A 256-bit secret as 64 lower-case hex digits (plugin auth tokens).
std::string NewSecretToken();

// Compares two secrets in time that depends only on their lengths.
bool ConstantTimeEquals(std::string_view a, std::string_view b);

}  // namespace oxg
