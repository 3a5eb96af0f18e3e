// A plugin that only counts: the far end of the plugin-bus benchmark. It subscribes to
// FLOW_REQUEST and FLOW_RESPONSE, records for each event how long after capture it arrived
// (now - captured_at_unix_nano, wall clock, so sender and sink must share a host) and, when
// stopped (SIGTERM/SIGINT, or EOF on stdin when stdin is a pipe or socket), prints one line:
//   {"name":"sink-1","events":N,"parse_errors":N,"p50_us":..,"p99_us":..,"first_ns":..,"last_ns":..}
// first_ns/last_ns: wall-clock arrival of the first and last event (0 when none).
// {"stall": true} as the manifest's config (OXG_PLUGIN_CONFIG): the first callback blocks until
// the stop, so the plugin stops reading after the welcome and one event (a slow plugin, for the
// daemon's drop accounting).
// Environment as for every plugin: OXG_PLUGIN_NAME, OXG_BUS_ADDR, OXG_AUTH_TOKEN_*.
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <bit>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <thread>

#include "oxg/sdk/plugin.h"

namespace {

// Latencies in microseconds: exact below 1024 us, then 64 buckets per power of two (about 1.6%
// resolution) up to 2^40 us. Fixed size, no allocation per event.
class Histogram {
 public:
  void Add(int64_t us) {
    if (us < 0) us = 0;  // clocks of sender and sink disagree by a little
    ++buckets_[Index(static_cast<uint64_t>(us))];
    ++count_;
  }
  // The lower bound of the bucket holding the q-quantile.
  double Quantile(double q) const {
    if (count_ == 0) return 0;
    const uint64_t rank = static_cast<uint64_t>(q * static_cast<double>(count_ - 1)) + 1;
    uint64_t seen = 0;
    for (size_t i = 0; i < buckets_.size(); ++i) {
      seen += buckets_[i];
      if (seen >= rank) return static_cast<double>(LowerBound(i));
    }
    return static_cast<double>(LowerBound(buckets_.size() - 1));
  }

 private:
  static constexpr int kMaxExp = 40;
  static constexpr size_t kSize = 1024 + (kMaxExp - 10 + 1) * 64;
  static size_t Index(uint64_t v) {
    if (v < 1024) return v;
    int e = std::bit_width(v) - 1;  // >= 10
    if (e > kMaxExp) return kSize - 1;
    const uint64_t m = (v >> (e - 6)) & 63;
    return 1024 + static_cast<size_t>(e - 10) * 64 + m;
  }
  static uint64_t LowerBound(size_t i) {
    if (i < 1024) return i;
    const int e = static_cast<int>((i - 1024) / 64) + 10;
    const uint64_t m = (i - 1024) % 64;
    return (64 + m) << (e - 6);
  }
  std::array<uint64_t, kSize> buckets_{};
  uint64_t count_ = 0;
};

int64_t NowUnixNano() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

bool StdinIsPipeOrSocket() {
  struct stat st;
  return ::fstat(STDIN_FILENO, &st) == 0 && (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode));
}

}  // namespace

int main() {
  oxg::sdk::BlockStopSignals();  // before any thread, including the stdin watcher
  oxg::sdk::Plugin plugin(
      {.capabilities = {"CAP_FLOW_INSPECT"}, .subscriptions = {"FLOW_REQUEST", "FLOW_RESPONSE"}});
  const std::string config = oxg::sdk::ProcessEnv("OXG_PLUGIN_CONFIG").value_or("");
  const bool stall = config.find("\"stall\":true") != std::string::npos;
  // Callback state: touched on the SDK's reader thread only, read after Run returned.
  Histogram histogram;
  int64_t first_ns = 0;
  int64_t last_ns = 0;
  auto on_event = [&](const oxg::sdk::HttpMessage& m) {
    const int64_t now = NowUnixNano();
    if (first_ns == 0) first_ns = now;
    last_ns = now;
    histogram.Add((now - m.captured_at_unix_nano) / 1000);
    if (stall) {
      while (!plugin.WaitForStop(std::chrono::hours(1))) {
      }
    }
  };
  plugin.OnRequest(on_event);
  plugin.OnResponse(on_event);

  if (StdinIsPipeOrSocket()) {
    // Detached: it may sit in read() until the process exits.
    std::thread([&plugin] {
      char buf[256];
      while (true) {
        const ssize_t n = ::read(STDIN_FILENO, buf, sizeof buf);
        if (n == 0 || (n < 0 && errno != EINTR)) break;
      }
      plugin.Stop();
    }).detach();
  }

  const int rc = oxg::sdk::RunMain(plugin);
  const oxg::sdk::PluginCounters c = plugin.counters();
  const std::string& name = plugin.options().name;
  std::string escaped;
  for (char ch : name) {
    if (ch == '"' || ch == '\\') escaped.push_back('\\');
    if (static_cast<unsigned char>(ch) >= 0x20) escaped.push_back(ch);
  }
  std::printf(
      "{\"name\":\"%s\",\"events\":%llu,\"parse_errors\":%llu,\"p50_us\":%.0f,\"p99_us\":%.0f,"
      "\"first_ns\":%lld,\"last_ns\":%lld}\n",
      escaped.c_str(), static_cast<unsigned long long>(c.events_received),
      static_cast<unsigned long long>(c.parse_errors), histogram.Quantile(0.50),
      histogram.Quantile(0.99), static_cast<long long>(first_ns), static_cast<long long>(last_ns));
  std::fflush(stdout);
  return rc;
}
