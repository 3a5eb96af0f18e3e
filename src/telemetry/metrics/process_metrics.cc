// process_* families read from /proc at scrape time, and oxg_build_info.

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <charconv>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>

#include "common/build_info.h"
#include "telemetry/metrics/metrics.h"

namespace oxg::metrics {
namespace {

// Fields of /proc/self/stat after the command name, which may itself hold spaces and ')'.
std::vector<std::string> StatFields() {
  std::ifstream in("/proc/self/stat");
  std::string line;
  std::getline(in, line);
  std::vector<std::string> fields;
  const size_t close = line.rfind(')');
  if (close == std::string::npos) return fields;
  std::istringstream rest(line.substr(close + 1));
  for (std::string f; rest >> f;) fields.push_back(f);
  return fields;  // fields[0] is the state (field 3 of proc(5))
}

// /proc fields are decimal integers; anything else reads as 0 rather than throwing.
double Field(const std::string& text) {
  uint64_t v = 0;
  std::from_chars(text.data(), text.data() + text.size(), v);
  return static_cast<double>(v);
}

double CpuSeconds() {
  const std::vector<std::string> f = StatFields();
  if (f.size() < 13) return 0;
  const double ticks = Field(f[11]) + Field(f[12]);  // utime, stime
  return ticks / static_cast<double>(sysconf(_SC_CLK_TCK));
}

double ResidentBytes() {
  std::ifstream in("/proc/self/statm");
  uint64_t size = 0, resident = 0;
  in >> size >> resident;
  return static_cast<double>(resident) * static_cast<double>(sysconf(_SC_PAGESIZE));
}

double OpenFds() {
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return 0;
  double n = 0;
  while (dirent* e = readdir(dir)) {
    if (e->d_name[0] != '.') ++n;
  }
  closedir(dir);
  return n - 1;  // the directory stream's own descriptor
}

double MaxFds() {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return 0;
  return static_cast<double>(rl.rlim_cur);
}

double StartTimeSeconds() {
  const std::vector<std::string> f = StatFields();
  if (f.size() < 20) return 0;
  const double start_ticks = Field(f[19]);  // starttime, in ticks since boot
  std::ifstream in("/proc/stat");
  std::string key;
  double boot_time = 0;
  while (in >> key) {
    if (key == "btime") {
      in >> boot_time;
      break;
    }
    in.ignore(std::numeric_limits<std::streamsize>::max(), '\n');
  }
  return boot_time + start_ticks / static_cast<double>(sysconf(_SC_CLK_TCK));
}

}  // namespace

void RegisterProcessMetrics(Registry& registry) {
  registry.AddCallback("process_cpu_seconds_total",
                       "Total user and system CPU time spent in seconds.", MetricType::kCounter,
                       CpuSeconds);
  registry.AddCallback("process_resident_memory_bytes", "Resident memory size in bytes.",
                       MetricType::kGauge, ResidentBytes);
  registry.AddCallback("process_open_fds", "Number of open file descriptors.", MetricType::kGauge,
                       OpenFds);
  registry.AddCallback("process_max_fds", "Maximum number of open file descriptors.",
                       MetricType::kGauge, MaxFds);
  // Read once: the start time does not change.
  const double start = StartTimeSeconds();
  registry.AddCallback("process_start_time_seconds",
                       "Start time of the process since unix epoch in seconds.", MetricType::kGauge,
                       [start] { return start; });
}

void RegisterBuildInfo(Registry& registry) {
  registry
      .AddGauge("oxg_build_info", "Build of the running 0xgen; the value is always 1.",
                {"version", "revision"})
      .WithLabels({kVersion, kRevision})
      .Set(1);
}

}  // namespace oxg::metrics
