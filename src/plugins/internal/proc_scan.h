#pragma once
// What the runner's watchdog sees of a plugin's process group, read from /proc. The group, not
// the process tree, is what counts: a plugin's children stay in its group when their parent dies
// (they are re-parented elsewhere) and the seccomp filter keeps them from leaving it.
//
// Thread-safety: free functions, no state.
#include <sys/types.h>

#include <cstdint>
#include <vector>

namespace oxg::plugins::internal {

struct GroupUsage {
  int processes = 0;        // members that are not zombies
  int zombies = 0;          // members that exited and wait to be reaped
  uint64_t rss_bytes = 0;   // resident size summed over the live members
  std::vector<pid_t> pids;  // the live members
  bool partial = false;     // stopped early at a ScanStop bound
};

// Scans /proc once. A member that exits during the scan is simply not counted. The scan stops
// early (`partial` set) as soon as the live members number more than `max_processes` or their
// resident size exceeds `max_rss_bytes`: under a fork bomb, a full scan of a /proc with
// thousands of entries would starve while the group grows.
struct ScanStop {
  uint64_t max_processes = UINT64_MAX;
  uint64_t max_rss_bytes = UINT64_MAX;
};
GroupUsage ScanProcessGroup(pid_t pgid, ScanStop stop = {});

// Parses the text of /proc/<pid>/stat. False when it is malformed.
struct ProcStat {
  char state = '?';
  pid_t ppid = 0;
  pid_t pgrp = 0;
  int64_t rss_pages = 0;
};
bool ParseProcStat(const char* text, size_t len, ProcStat* out);

}  // namespace oxg::plugins::internal
