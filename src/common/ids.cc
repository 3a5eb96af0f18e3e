#include "common/ids.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <unistd.h>

#include <atomic>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>

namespace oxg {
namespace {

// Reads exactly `len` bytes from the kernel CSPRNG. getrandom may return short counts for large
// requests or be interrupted by a signal, so it loops. A failing CSPRNG is not recoverable:
// handing out predictable ids or tokens would be worse than stopping.
void FillFromKernel(uint8_t* out, size_t len) {
  while (len > 0) {
    const ssize_t n = getrandom(out, len, 0);
    if (n > 0) {
      out += n;
      len -= static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == ENOSYS) {
      // Kernels older than 3.17; /dev/urandom gives the same stream.
      const int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
      while (fd >= 0 && len > 0) {
        const ssize_t r = read(fd, out, len);
        if (r > 0) {
          out += r;
          len -= static_cast<size_t>(r);
        } else if (!(r < 0 && errno == EINTR)) {
          break;
        }
      }
      if (fd >= 0) close(fd);
      if (len == 0) return;
    }
    std::fputs("0xgen: fatal: the kernel random number generator failed\n", stderr);
    std::abort();
  }
}

// Output is generated in user space by ChaCha20 in the "fast key erasure" construction: the
// key comes from the kernel, each refill produces kPoolSize bytes whose first 32 become the
// next key (so a later memory disclosure cannot recover earlier output), and the key is
// drawn from the kernel again every kReseedRefills refills and after fork. One getrandom per
// 256 bytes cost ~150 ns per trace id on a VM; this costs a few ns.
constexpr size_t kPoolSize = 1024;
constexpr size_t kKeySize = 32;
constexpr uint32_t kReseedRefills = 1024;  // about 1 MiB of output per kernel key

inline uint32_t Rotl(uint32_t v, int n) { return (v << n) | (v >> (32 - n)); }

#define OXG_CHACHA_QR(a, b, c, d) \
  a += b;                         \
  d = Rotl(d ^ a, 16);            \
  c += d;                         \
  b = Rotl(b ^ c, 12);            \
  a += b;                         \
  d = Rotl(d ^ a, 8);             \
  c += d;                         \
  b = Rotl(b ^ c, 7)

}  // namespace

// One ChaCha20 block (RFC 8439 §2.3) for `key`, block `counter` and a zero nonce.
void internal::ChaChaBlock(const uint8_t key[kKeySize], uint32_t counter, uint8_t out[64]) {
  uint32_t in[16] = {0x61707865, 0x3320646e, 0x79622d32, 0x6b206574};
  for (int i = 0; i < 8; ++i) std::memcpy(&in[4 + i], key + 4 * i, 4);  // little-endian hosts
  in[12] = counter;
  uint32_t x[16];
  std::memcpy(x, in, sizeof x);
  for (int round = 0; round < 10; ++round) {
    OXG_CHACHA_QR(x[0], x[4], x[8], x[12]);
    OXG_CHACHA_QR(x[1], x[5], x[9], x[13]);
    OXG_CHACHA_QR(x[2], x[6], x[10], x[14]);
    OXG_CHACHA_QR(x[3], x[7], x[11], x[15]);
    OXG_CHACHA_QR(x[0], x[5], x[10], x[15]);
    OXG_CHACHA_QR(x[1], x[6], x[11], x[12]);
    OXG_CHACHA_QR(x[2], x[7], x[8], x[13]);
    OXG_CHACHA_QR(x[3], x[4], x[9], x[14]);
  }
  for (int i = 0; i < 16; ++i) {
    const uint32_t v = x[i] + in[i];
    std::memcpy(out + 4 * i, &v, 4);
  }
}
#undef OXG_CHACHA_QR

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "ChaChaBlock assumes little-endian");

#if defined(__SSE2__)
// Four consecutive ChaCha20 blocks at once (counters counter..counter+3): SSE2 lane j of word
// vector i holds word i of block j. Same output as four ChaChaBlock calls, about 4x faster;
// SSE2 is part of the x86-64 baseline.
void internal::ChaChaBlocks4(const uint8_t key[kKeySize], uint32_t counter, uint8_t out[256]) {
  uint32_t words[16] = {0x61707865, 0x3320646e, 0x79622d32, 0x6b206574};
  for (int i = 0; i < 8; ++i) std::memcpy(&words[4 + i], key + 4 * i, 4);
  __m128i in[16];
  for (int i = 0; i < 16; ++i) in[i] = _mm_set1_epi32(static_cast<int>(words[i]));
  in[12] = _mm_add_epi32(_mm_set1_epi32(static_cast<int>(counter)), _mm_set_epi32(3, 2, 1, 0));
  __m128i x[16];
  for (int i = 0; i < 16; ++i) x[i] = in[i];
  const auto rotl = [](__m128i v, int n) {
    return _mm_or_si128(_mm_slli_epi32(v, n), _mm_srli_epi32(v, 32 - n));
  };
  const auto qr = [&](int a, int b, int c, int d) {
    x[a] = _mm_add_epi32(x[a], x[b]);
    x[d] = rotl(_mm_xor_si128(x[d], x[a]), 16);
    x[c] = _mm_add_epi32(x[c], x[d]);
    x[b] = rotl(_mm_xor_si128(x[b], x[c]), 12);
    x[a] = _mm_add_epi32(x[a], x[b]);
    x[d] = rotl(_mm_xor_si128(x[d], x[a]), 8);
    x[c] = _mm_add_epi32(x[c], x[d]);
    x[b] = rotl(_mm_xor_si128(x[b], x[c]), 7);
  };
  for (int round = 0; round < 10; ++round) {
    qr(0, 4, 8, 12);
    qr(1, 5, 9, 13);
    qr(2, 6, 10, 14);
    qr(3, 7, 11, 15);
    qr(0, 5, 10, 15);
    qr(1, 6, 11, 12);
    qr(2, 7, 8, 13);
    qr(3, 4, 9, 14);
  }
  alignas(16) uint32_t lanes[16][4];
  for (int i = 0; i < 16; ++i) {
    _mm_store_si128(reinterpret_cast<__m128i*>(lanes[i]), _mm_add_epi32(x[i], in[i]));
  }
  for (int block = 0; block < 4; ++block) {
    for (int i = 0; i < 16; ++i) std::memcpy(out + 64 * block + 4 * i, &lanes[i][block], 4);
  }
}
#else
void internal::ChaChaBlocks4(const uint8_t key[kKeySize], uint32_t counter, uint8_t out[256]) {
  for (uint32_t b = 0; b < 4; ++b) ChaChaBlock(key, counter + b, out + 64 * b);
}
#endif

namespace {
using internal::ChaChaBlock;

// Fork detection. A page marked MADV_WIPEONFORK (Linux 4.14+) reads as zeros in a child, whatever
// way the child was created (fork, _Fork, clone), so a non-zero epoch stored there changes to 0
// after a fork and one atomic load per draw detects it. Where the kernel refuses the advice, the
// pid is compared instead, which costs a getpid system call per draw.
struct ForkEpoch {
  std::atomic<uint64_t>* page_epoch = nullptr;  // null: fall back to getpid()
  // Not wiped: carried into children, so every new epoch differs from all earlier ones.
  std::atomic<uint64_t> last_epoch{1};
};

ForkEpoch& Epoch() {
  static ForkEpoch* const epoch = [] {
    auto* e = new ForkEpoch();
    const long page_size = sysconf(_SC_PAGESIZE);
    void* page = mmap(nullptr, static_cast<size_t>(page_size), PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (page != MAP_FAILED) {
      if (madvise(page, static_cast<size_t>(page_size), MADV_WIPEONFORK) == 0) {
        e->page_epoch = new (page) std::atomic<uint64_t>(1);
      } else {
        munmap(page, static_cast<size_t>(page_size));
      }
    }
    return e;
  }();
  return *epoch;
}

// The epoch of this process; a fresh one after each fork.
uint64_t CurrentEpoch(ForkEpoch& e) {
  uint64_t cur = e.page_epoch->load(std::memory_order_acquire);
  if (cur != 0) return cur;
  // First draw in a child: claim a new epoch. Several threads may race here; the CAS makes
  // them agree on one.
  const uint64_t fresh = e.last_epoch.fetch_add(1, std::memory_order_relaxed) + 1;
  if (e.page_epoch->compare_exchange_strong(cur, fresh, std::memory_order_acq_rel)) return fresh;
  return cur;
}

// Plain data so the thread_local needs no constructor or destructor hook (cheaper access, and
// usable while a thread is being torn down). An owner of 0 means "never filled"; it is an epoch
// or, in the fallback, a pid.
struct RandomPool {
  uint8_t bytes[kPoolSize];
  size_t available;  // unread bytes at the end of `bytes`
  uint64_t owner;
  uint8_t key[kKeySize];
  uint32_t refills_left;  // until the key is drawn from the kernel again
};

// Refills the pool from ChaCha20 and replaces the key with the first 32 output bytes.
void Refill(RandomPool& pool) {
  if (pool.refills_left == 0) {
    FillFromKernel(pool.key, kKeySize);
    pool.refills_left = kReseedRefills;
  }
  --pool.refills_left;
  for (uint32_t block = 0; block < kPoolSize / 64; block += 4) {
    internal::ChaChaBlocks4(pool.key, block, pool.bytes + 64 * block);
  }
  std::memcpy(pool.key, pool.bytes, kKeySize);
  std::memset(pool.bytes, 0, kKeySize);
  pool.available = kPoolSize - kKeySize;
}
thread_local RandomPool tls_pool;

constexpr char kHexDigits[] = "0123456789abcdef";

// "00".."ff" laid out as pairs so one byte becomes one 2-byte copy.
struct HexPairs {
  char text[512];
  constexpr HexPairs() : text() {
    for (int i = 0; i < 256; ++i) {
      text[2 * i] = kHexDigits[i >> 4];
      text[2 * i + 1] = kHexDigits[i & 0xf];
    }
  }
};
constexpr HexPairs kHexPairs;

void WriteHexBytes(const uint8_t* bytes, size_t n, char* out) {
  for (size_t i = 0; i < n; ++i) std::memcpy(out + 2 * i, &kHexPairs.text[2 * bytes[i]], 2);
}

// -1 for anything that is not a hex digit.
struct HexValues {
  int8_t value[256];
  constexpr HexValues() : value() {
    for (int i = 0; i < 256; ++i) value[i] = -1;
    for (int i = 0; i < 10; ++i) value['0' + i] = static_cast<int8_t>(i);
    for (int i = 0; i < 6; ++i) {
      value['a' + i] = static_cast<int8_t>(10 + i);
      value['A' + i] = static_cast<int8_t>(10 + i);
    }
  }
};
constexpr HexValues kHexValues;

template <size_t N>
bool AllZero(const std::array<uint8_t, N>& bytes) {
  uint8_t acc = 0;
  for (uint8_t b : bytes) acc |= b;
  return acc == 0;
}

constexpr char kCrockford[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

}  // namespace

namespace {

// This process's generation for the fork check: the epoch page, or the pid where the kernel
// refused MADV_WIPEONFORK.
inline uint64_t CurrentOwner() {
  ForkEpoch& epoch = Epoch();
  return epoch.page_epoch != nullptr ? CurrentEpoch(epoch) : static_cast<uint64_t>(getpid());
}

// Ids are drawn millions of times a second: a fixed-size copy straight out of the pool when it
// holds enough, otherwise the general path.
template <size_t N>
inline void DrawId(std::array<uint8_t, N>& out) {
  RandomPool& pool = tls_pool;
  if (pool.owner == CurrentOwner() && pool.available >= N) {
    uint8_t* src = pool.bytes + (kPoolSize - pool.available);
    std::memcpy(out.data(), src, N);
    std::memset(src, 0, N);
    pool.available -= N;
    return;
  }
  RandomBytes(out);
}

}  // namespace

void RandomBytes(std::span<uint8_t> out) {
  if (out.size() > kPoolSize / 4) {
    // Large draws (keys, tokens) come straight from the kernel.
    FillFromKernel(out.data(), out.size());
    return;
  }
  RandomPool& pool = tls_pool;
  // After fork the child inherits this thread's pool; reusing it would make parent and child
  // hand out the same "random" ids and tokens.
  const uint64_t owner = CurrentOwner();
  if (pool.owner != owner) {
    // A new thread, or a child after fork: forget the inherited stream and key entirely.
    std::memset(pool.bytes, 0, kPoolSize);
    pool.available = 0;
    pool.refills_left = 0;
    pool.owner = owner;
  }
  uint8_t* dst = out.data();
  size_t need = out.size();
  while (need > 0) {
    if (pool.available == 0) Refill(pool);
    const size_t take = need < pool.available ? need : pool.available;
    uint8_t* src = pool.bytes + (kPoolSize - pool.available);
    std::memcpy(dst, src, take);
    // Wipe what was handed out so a later memory disclosure cannot reveal past tokens.
    std::memset(src, 0, take);
    pool.available -= take;
    dst += take;
    need -= take;
  }
}

TraceId TraceId::Random() {
  TraceId id;
  do {
    DrawId(id.bytes);
  } while (!id.IsValid());
  return id;
}

bool TraceId::IsValid() const { return !AllZero(bytes); }

std::string TraceId::ToHex() const {
  std::string s(32, '\0');
  WriteHex(s.data());
  return s;
}

void TraceId::WriteHex(char* out) const { WriteHexBytes(bytes.data(), bytes.size(), out); }

SpanId SpanId::Random() {
  SpanId id;
  do {
    DrawId(id.bytes);
  } while (!id.IsValid());
  return id;
}

bool SpanId::IsValid() const { return !AllZero(bytes); }

std::string SpanId::ToHex() const {
  std::string s(16, '\0');
  WriteHex(s.data());
  return s;
}

void SpanId::WriteHex(char* out) const { WriteHexBytes(bytes.data(), bytes.size(), out); }

std::string HexEncode(std::span<const uint8_t> bytes) {
  std::string s(bytes.size() * 2, '\0');
  WriteHexBytes(bytes.data(), bytes.size(), s.data());
  return s;
}

bool HexDecode(std::string_view hex, std::span<uint8_t> out) {
  if (hex.size() != out.size() * 2) return false;
  // Validate everything first so `out` is untouched on failure.
  for (char c : hex) {
    if (kHexValues.value[static_cast<uint8_t>(c)] < 0) return false;
  }
  for (size_t i = 0; i < out.size(); ++i) {
    const int hi = kHexValues.value[static_cast<uint8_t>(hex[2 * i])];
    const int lo = kHexValues.value[static_cast<uint8_t>(hex[2 * i + 1])];
    out[i] = static_cast<uint8_t>((hi << 4) | lo);
  }
  return true;
}

std::string NewUlid(const Clock& clock) {
  const auto since_epoch = clock.Now().time_since_epoch();
  int64_t ms = std::chrono::duration_cast<std::chrono::milliseconds>(since_epoch).count();
  if (ms < 0) ms = 0;  // ULIDs cannot express times before 1970
  const uint64_t time48 = static_cast<uint64_t>(ms) & ((uint64_t{1} << 48) - 1);

  uint8_t rnd[10];
  RandomBytes(rnd);

  std::string s(26, '\0');
  // 10 characters carry the 48-bit time (top 2 bits of the first character are zero) ...
  for (int i = 9; i >= 0; --i) s[static_cast<size_t>(9 - i)] = kCrockford[(time48 >> (5 * i)) & 31];
  // ... and 16 characters carry the 80 random bits, split into two 40-bit halves.
  for (int half = 0; half < 2; ++half) {
    uint64_t v = 0;
    for (int j = 0; j < 5; ++j) v = (v << 8) | rnd[half * 5 + j];
    for (int i = 7; i >= 0; --i) {
      s[static_cast<size_t>(10 + half * 8 + (7 - i))] = kCrockford[(v >> (5 * i)) & 31];
    }
  }
  return s;
}

std::string NewSecretToken() {
  uint8_t raw[32];
  FillFromKernel(raw, sizeof(raw));  // long-lived secrets come from the kernel directly
  std::string token = HexEncode(raw);
  std::memset(raw, 0, sizeof(raw));
  return token;
}

bool ConstantTimeEquals(std::string_view a, std::string_view b) {
  // Lengths of tokens are public (they are fixed-format); only content must not leak.
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff |= static_cast<unsigned char>(a[i] ^ b[i]);
    // Keeps the optimizer from turning the loop into an early-exit comparison.
    __asm__ __volatile__("" : "+r"(diff));
  }
  return diff == 0;
}

}  // namespace oxg
