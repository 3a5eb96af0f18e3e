#include "plugins/internal/proc_scan.h"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string_view>

namespace oxg::plugins::internal {
namespace {

bool ParseNumber(std::string_view field, int64_t* out) {
  if (field.empty()) return false;
  bool negative = false;
  if (field[0] == '-') {
    negative = true;
    field.remove_prefix(1);
    if (field.empty()) return false;
  }
  int64_t v = 0;
  for (char c : field) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
  }
  *out = negative ? -v : v;
  return true;
}

}  // namespace

bool ParseProcStat(const char* text, size_t len, ProcStat* out) {
  // "pid (comm) state ppid pgrp ..."; comm may hold spaces and parentheses, so the fields
  // start after the last ')'.
  std::string_view s(text, len);
  const size_t close = s.rfind(')');
  if (close == std::string_view::npos) return false;
  s.remove_prefix(close + 1);
  // Field 3 is the state; rss is field 24.
  int field = 2;
  ProcStat st;
  while (!s.empty() && field < 24) {
    const size_t start = s.find_first_not_of(' ');
    if (start == std::string_view::npos) break;
    s.remove_prefix(start);
    const size_t end = s.find_first_of(" \n");
    const std::string_view token = s.substr(0, end);
    s.remove_prefix(end == std::string_view::npos ? s.size() : end);
    ++field;
    int64_t v = 0;
    if (field == 3) {
      if (token.size() != 1) return false;
      st.state = token[0];
    } else if (field == 4 || field == 5 || field == 24) {
      if (!ParseNumber(token, &v)) return false;
      if (field == 4) st.ppid = static_cast<pid_t>(v);
      if (field == 5) st.pgrp = static_cast<pid_t>(v);
      if (field == 24) st.rss_pages = v;
    }
  }
  if (field < 24) return false;
  *out = st;
  return true;
}

namespace {

// Reads and parses <dir_fd>/<name>/stat.
bool ReadStat(int dir_fd, const char* name, ProcStat* st) {
  char path[sizeof("/stat") + sizeof(dirent::d_name)];
  std::snprintf(path, sizeof(path), "%s/stat", name);
  const int fd = openat(dir_fd, path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  char buf[1024];
  const ssize_t n = read(fd, buf, sizeof(buf));
  close(fd);
  return n > 0 && ParseProcStat(buf, static_cast<size_t>(n), st);
}

bool Gone(const ProcStat& st) { return st.state == 'Z' || st.state == 'X'; }

// A process whose main thread has exited while others run shows as 'Z' with an rss of 0 in
// /proc/<pid>/stat; its live threads still hold the memory. True (and their rss) when one of
// its other threads is alive.
bool LiveThreadRss(int proc_fd, const char* pid, int64_t* rss_pages) {
  char path[sizeof("/task") + sizeof(dirent::d_name)];
  std::snprintf(path, sizeof(path), "%s/task", pid);
  const int task_fd = openat(proc_fd, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (task_fd < 0) return false;
  DIR* tasks = fdopendir(task_fd);
  if (tasks == nullptr) {
    close(task_fd);
    return false;
  }
  bool live = false;
  while (const dirent* t = readdir(tasks)) {
    if (t->d_name[0] < '1' || t->d_name[0] > '9' || std::strcmp(t->d_name, pid) == 0) continue;
    ProcStat st;
    if (!ReadStat(dirfd(tasks), t->d_name, &st) || Gone(st)) continue;
    live = true;
    *rss_pages = st.rss_pages;
    break;
  }
  closedir(tasks);
  return live;
}

}  // namespace

GroupUsage ScanProcessGroup(pid_t pgid, ScanStop stop) {
  GroupUsage usage;
  static const uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  DIR* dir = opendir("/proc");
  if (dir == nullptr) return usage;
  while (const dirent* e = readdir(dir)) {
    if (e->d_name[0] < '1' || e->d_name[0] > '9') continue;
    ProcStat st;
    if (!ReadStat(dirfd(dir), e->d_name, &st) || st.pgrp != pgid) continue;
    if (Gone(st) && !LiveThreadRss(dirfd(dir), e->d_name, &st.rss_pages)) {
      ++usage.zombies;
      continue;
    }
    ++usage.processes;
    if (st.rss_pages > 0) usage.rss_bytes += static_cast<uint64_t>(st.rss_pages) * page;
    usage.pids.push_back(static_cast<pid_t>(std::atoi(e->d_name)));
    if (static_cast<uint64_t>(usage.processes) > stop.max_processes ||
        usage.rss_bytes > stop.max_rss_bytes) {
      usage.partial = true;
      break;
    }
  }
  closedir(dir);
  return usage;
}

}  // namespace oxg::plugins::internal
