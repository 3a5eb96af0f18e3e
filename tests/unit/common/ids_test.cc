#include "common/ids.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <set>
#include <thread>
#include <vector>

namespace oxg {
namespace {

using ::testing::MatchesRegex;

bool AllZero(std::span<const uint8_t> b) {
  return std::all_of(b.begin(), b.end(), [](uint8_t x) { return x == 0; });
}

TEST(RandomBytesTest, FillsAndDiffersBetweenDraws) {
  std::array<uint8_t, 32> a{}, b{};
  RandomBytes(a);
  RandomBytes(b);
  EXPECT_FALSE(AllZero(a));
  EXPECT_FALSE(AllZero(b));
  EXPECT_NE(a, b);
}

TEST(RandomBytesTest, LargeAndOddSizesSpanningRefills) {
  // Sizes around and above the per-thread pool, so draws straddle refills and the direct path.
  for (size_t n : {0u, 1u, 7u, 127u, 128u, 129u, 255u, 256u, 257u, 4096u}) {
    std::vector<uint8_t> buf(n, 0);
    RandomBytes(buf);
    if (n >= 16) {
      EXPECT_FALSE(AllZero(buf)) << n;
      // A 16-byte window repeating would mean the pool handed out the same bytes twice.
      std::set<std::vector<uint8_t>> windows;
      for (size_t i = 0; i + 16 <= n; i += 16) {
        EXPECT_TRUE(windows.emplace(buf.begin() + i, buf.begin() + i + 16).second) << n;
      }
    }
  }
}

TEST(RandomBytesTest, ByteValuesAreSpread) {
  std::vector<uint8_t> buf(1 << 16);
  RandomBytes(buf);
  std::array<int, 256> counts{};
  for (uint8_t b : buf) ++counts[b];
  // Expected 256 per value; a broken source (zeros, ASCII only, a repeating pool) fails this.
  for (int c : counts) {
    EXPECT_GT(c, 128);
    EXPECT_LT(c, 400);
  }
}

using Draw = std::array<uint8_t, 32>;

// Forks; the child runs `draw` and sends its 32 bytes back through a pipe.
template <typename Fn>
Draw DrawInChild(Fn draw) {
  Draw got{};
  int fds[2];
  if (pipe(fds) != 0) {
    ADD_FAILURE() << "pipe";
    return got;
  }
  const pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    const Draw d = draw();
    const ssize_t w = write(fds[1], d.data(), d.size());
    _exit(w == static_cast<ssize_t>(d.size()) ? 0 : 1);
  }
  close(fds[1]);
  size_t n = 0;
  while (pid > 0 && n < got.size()) {
    const ssize_t r = read(fds[0], got.data() + n, got.size() - n);
    if (r <= 0) break;
    n += static_cast<size_t>(r);
  }
  close(fds[0]);
  int status = 0;
  EXPECT_GT(pid, 0);
  if (pid > 0) {
    EXPECT_EQ(waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  EXPECT_EQ(n, got.size());
  return got;
}

Draw DrawHere() {
  Draw d{};
  RandomBytes(d);
  return d;
}

TEST(RandomBytesTest, ChildAfterForkDoesNotRepeatParent) {
  // Prime this thread's pool so the children inherit buffered bytes.
  uint8_t prime[1];
  RandomBytes(prime);

  const Draw child1 = DrawInChild(DrawHere);
  const Draw child2 = DrawInChild(DrawHere);
  // A grandchild inherits the child's state: it must not repeat the child either.
  const Draw nested = DrawInChild([] {
    uint8_t prime_child[1];
    RandomBytes(prime_child);  // the grandchild inherits this live pool
    const Draw grandchild = DrawInChild(DrawHere);
    const Draw child = DrawHere();
    Draw diff{};
    for (size_t i = 0; i < diff.size(); ++i) diff[i] = grandchild[i] ^ child[i];
    return diff;  // all zero if the two repeated each other
  });
  const Draw parent = DrawHere();

  EXPECT_FALSE(AllZero(child1));
  EXPECT_NE(parent, child1);
  EXPECT_NE(parent, child2);
  EXPECT_NE(child1, child2);
  EXPECT_FALSE(AllZero(nested));
}

TEST(RandomBytesTest, ForkingThreadPoolIsDiscardedEvenIfAnotherThreadDrawsFirst) {
  uint8_t prime[1];
  RandomBytes(prime);
  const Draw child = DrawInChild([] {
    // A new thread in the child draws before the thread that forked.
    std::thread([] { DrawHere(); }).join();
    return DrawHere();
  });
  EXPECT_NE(DrawHere(), child);
}

TEST(RandomBytesTest, ThreadsGetDistinctStreams) {
  std::vector<std::array<uint8_t, 16>> out(8);
  std::vector<std::thread> threads;
  for (auto& o : out) threads.emplace_back([&o] { RandomBytes(o); });
  for (auto& t : threads) t.join();
  std::set<std::array<uint8_t, 16>> unique(out.begin(), out.end());
  EXPECT_EQ(unique.size(), out.size());
}

TEST(TraceIdTest, DefaultIsInvalidRandomIsValidAndDistinct) {
  EXPECT_FALSE(TraceId{}.IsValid());
  std::set<std::string> seen;
  for (int i = 0; i < 1000; ++i) {
    const TraceId id = TraceId::Random();
    ASSERT_TRUE(id.IsValid());
    EXPECT_TRUE(seen.insert(id.ToHex()).second);
  }
}

TEST(TraceIdTest, HexIsLowerCaseAndMatchesBytes) {
  TraceId id;
  for (size_t i = 0; i < id.bytes.size(); ++i) id.bytes[i] = static_cast<uint8_t>(i * 17);
  EXPECT_EQ(id.ToHex(), "00112233445566778899aabbccddeeff");
  EXPECT_TRUE(id.IsValid());

  char buf[33];
  buf[32] = '#';
  id.WriteHex(buf);
  EXPECT_EQ(std::string_view(buf, 32), id.ToHex());
  EXPECT_EQ(buf[32], '#');  // writes exactly 32 characters

  TraceId one;
  one.bytes[15] = 1;
  EXPECT_TRUE(one.IsValid());
  EXPECT_EQ(one.ToHex(), "00000000000000000000000000000001");
  EXPECT_THAT(TraceId::Random().ToHex(), MatchesRegex("[0-9a-f]{32}"));
}

TEST(SpanIdTest, DefaultIsInvalidRandomIsValidAndDistinct) {
  EXPECT_FALSE(SpanId{}.IsValid());
  std::set<std::string> seen;
  for (int i = 0; i < 1000; ++i) {
    const SpanId id = SpanId::Random();
    ASSERT_TRUE(id.IsValid());
    EXPECT_TRUE(seen.insert(id.ToHex()).second);
  }
}

TEST(SpanIdTest, Hex) {
  SpanId id;
  id.bytes = {0xde, 0xad, 0xbe, 0xef, 0x00, 0x01, 0x7f, 0x80};
  EXPECT_EQ(id.ToHex(), "deadbeef00017f80");
  char buf[17];
  buf[16] = '#';
  id.WriteHex(buf);
  EXPECT_EQ(std::string_view(buf, 16), "deadbeef00017f80");
  EXPECT_EQ(buf[16], '#');
  EXPECT_THAT(SpanId::Random().ToHex(), MatchesRegex("[0-9a-f]{16}"));
}

TEST(HexTest, EncodeDecodeRoundTrip) {
  std::vector<uint8_t> all(256);
  for (int i = 0; i < 256; ++i) all[static_cast<size_t>(i)] = static_cast<uint8_t>(i);
  const std::string hex = HexEncode(all);
  ASSERT_EQ(hex.size(), 512u);
  EXPECT_EQ(hex.substr(0, 8), "00010203");
  EXPECT_EQ(hex.substr(504), "fcfdfeff");
  std::vector<uint8_t> back(256);
  ASSERT_TRUE(HexDecode(hex, back));
  EXPECT_EQ(back, all);

  EXPECT_EQ(HexEncode({}), "");
  std::array<uint8_t, 0> none{};
  EXPECT_TRUE(HexDecode("", none));
}

TEST(HexTest, DecodeAcceptsUpperCase) {
  std::array<uint8_t, 4> out{};
  ASSERT_TRUE(HexDecode("DeAdBEEF", out));
  EXPECT_EQ(out, (std::array<uint8_t, 4>{0xde, 0xad, 0xbe, 0xef}));
}

TEST(HexTest, DecodeIsStrict) {
  const std::string_view bad[] = {
      "",           // too short
      "0011223",    // odd length
      "001122334",  // too long
      "0011223g",   // not hex
      "0x112233",   // prefix
      " 0112233",   // whitespace
      "00112233 ",  // trailing whitespace with wrong length
      "0011-233",   // punctuation
      "0011\xc3\xa9"
      "33",  // non-ASCII
      std::string_view("00\0"
                       "12233",
                       8),  // embedded NUL
  };
  for (std::string_view hex : bad) {
    std::array<uint8_t, 4> out = {1, 2, 3, 4};
    EXPECT_FALSE(HexDecode(hex, out)) << hex;
    EXPECT_EQ(out, (std::array<uint8_t, 4>{1, 2, 3, 4})) << "output changed for " << hex;
  }
}

constexpr std::string_view kCrockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

uint64_t DecodeUlidTime(std::string_view ulid) {
  uint64_t v = 0;
  for (char c : ulid.substr(0, 10)) v = (v << 5) | kCrockford.find(c);
  return v;
}

TEST(UlidTest, ShapeAndAlphabet) {
  for (int i = 0; i < 200; ++i) {
    const std::string id = NewUlid();
    ASSERT_EQ(id.size(), 26u);
    for (char c : id) ASSERT_NE(kCrockford.find(c), std::string_view::npos) << id;
    EXPECT_LE(id[0], '7');  // 128 bits in 130: the top two bits are zero
  }
}

TEST(UlidTest, EncodesClockMilliseconds) {
  SimulatedClock clock(Clock::WallTime(std::chrono::milliseconds(1700000000123)));
  const std::string id = NewUlid(clock);
  EXPECT_EQ(DecodeUlidTime(id), 1700000000123u);

  SimulatedClock epoch(Clock::WallTime{});
  EXPECT_EQ(NewUlid(epoch).substr(0, 10), "0000000000");

  // The example of the ULID specification, 01ARZ3NDEKTSV4RRFFQ69G5FAV.
  SimulatedClock spec(Clock::WallTime(std::chrono::milliseconds(1469922850259)));
  EXPECT_EQ(NewUlid(spec).substr(0, 10), "01ARZ3NDEK");

  // Near the end of what a nanosecond system_clock can represent (year 2262).
  SimulatedClock late(Clock::WallTime(std::chrono::milliseconds(9223372036854)));
  EXPECT_EQ(NewUlid(late).substr(0, 10), "08CDXX0PQP");

  SimulatedClock before_epoch(Clock::WallTime(std::chrono::milliseconds(-5)));
  EXPECT_EQ(NewUlid(before_epoch).substr(0, 10), "0000000000");
}

TEST(UlidTest, SortsByCreationTimeAcrossMilliseconds) {
  SimulatedClock clock;
  std::vector<std::string> ids;
  for (int i = 0; i < 300; ++i) {
    ids.push_back(NewUlid(clock));
    clock.Advance(std::chrono::milliseconds(1 + i % 3));
  }
  EXPECT_TRUE(std::is_sorted(ids.begin(), ids.end()));
  EXPECT_EQ(std::set<std::string>(ids.begin(), ids.end()).size(), ids.size());
  // Crossing a power-of-32 boundary must still sort.
  SimulatedClock edge(Clock::WallTime(std::chrono::milliseconds(1023)));
  const std::string a = NewUlid(edge);
  edge.Advance(std::chrono::milliseconds(1));
  EXPECT_LT(a, NewUlid(edge));
}

TEST(UlidTest, RandomPartDiffersWithinOneMillisecond) {
  SimulatedClock clock;
  std::set<std::string> ids;
  for (int i = 0; i < 1000; ++i) ids.insert(NewUlid(clock));
  EXPECT_EQ(ids.size(), 1000u);
}

TEST(SecretTokenTest, SixtyFourLowerHexAndUnique) {
  std::set<std::string> seen;
  for (int i = 0; i < 100; ++i) {
    const std::string t = NewSecretToken();
    EXPECT_THAT(t, MatchesRegex("[0-9a-f]{64}"));
    EXPECT_TRUE(seen.insert(t).second);
  }
}

TEST(ConstantTimeEqualsTest, Correctness) {
  EXPECT_TRUE(ConstantTimeEquals("", ""));
  EXPECT_TRUE(ConstantTimeEquals("secret-token", "secret-token"));
  EXPECT_FALSE(ConstantTimeEquals("secret-token", "Secret-token"));  // first byte
  EXPECT_FALSE(ConstantTimeEquals("secret-token", "secret-tokeN"));  // last byte
  EXPECT_FALSE(ConstantTimeEquals("secret-token", "secret-toke"));   // prefix
  EXPECT_FALSE(ConstantTimeEquals("secret", "secret-token"));
  EXPECT_FALSE(ConstantTimeEquals("", "x"));
  EXPECT_TRUE(ConstantTimeEquals(std::string_view("a\0b", 3), std::string_view("a\0b", 3)));
  EXPECT_FALSE(ConstantTimeEquals(std::string_view("a\0b", 3), std::string_view("a\0c", 3)));
  // Every single-bit difference at every position is detected.
  const std::string base = NewSecretToken();
  for (size_t i = 0; i < base.size(); ++i) {
    for (int bit = 0; bit < 8; ++bit) {
      std::string other = base;
      other[i] = static_cast<char>(other[i] ^ (1 << bit));
      ASSERT_FALSE(ConstantTimeEquals(base, other)) << i << " " << bit;
    }
  }
}

}  // namespace
}  // namespace oxg

namespace oxg {
namespace {

// RFC 8439 / draft-agl-tls-chacha20poly1305 test vectors with an all-zero nonce.
TEST(ChaCha20, BlockTestVectors) {
  uint8_t key[32] = {};
  uint8_t out[64];
  internal::ChaChaBlock(key, 0, out);
  EXPECT_EQ(HexEncode(std::span<const uint8_t>(out, 64)),
            "76b8e0ada0f13d90405d6ae55386bd28bdd219b8a08ded1aa836efcc8b770dc7"
            "da41597c5157488d7724e03fb8d84a376a43b8f41518a11cc387b669b2ee6586");
  key[31] = 1;
  internal::ChaChaBlock(key, 0, out);
  EXPECT_EQ(HexEncode(std::span<const uint8_t>(out, 64)),
            "4540f05a9f1fb296d7736e7b208e3c96eb4fe1834688d2604f450952ed432d41"
            "bbe2a0b6ea7566d2a5d1e7e20d42af2c53d792b1c43fea817e9ad275ae546963");
}

TEST(ChaCha20, FourBlocksAtOnceMatchTheReference) {
  uint8_t key[32];
  for (int i = 0; i < 32; ++i) key[i] = static_cast<uint8_t>(i * 7 + 1);
  for (uint32_t counter : {0u, 1u, 12345u, 0xFFFFFFFEu}) {  // the last one wraps the counter
    uint8_t four[256], one[64];
    internal::ChaChaBlocks4(key, counter, four);
    for (uint32_t b = 0; b < 4; ++b) {
      internal::ChaChaBlock(key, counter + b, one);
      EXPECT_EQ(HexEncode(std::span<const uint8_t>(four + 64 * b, 64)),
                HexEncode(std::span<const uint8_t>(one, 64)))
          << "counter " << counter << " block " << b;
    }
  }
}

TEST(RandomBytes, ManyDrawsAcrossRefillsAreDistinct) {
  // 10 000 span ids cross several pool refills; a repeat would mean a broken stream.
  std::set<std::string> seen;
  for (int i = 0; i < 10000; ++i) seen.insert(SpanId::Random().ToHex());
  EXPECT_EQ(seen.size(), 10000u);
}

}  // namespace
}  // namespace oxg
