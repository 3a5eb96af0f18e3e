#pragma once
// The seccomp deny-list every plugin runs under (issue 6): system calls a scanner plugin has no
// business making (debugging other processes, mounting, loading kernel code, leaving its process
// group or namespaces, changing the clock) fail with EPERM. A deny-list, not an allow-list,
// because plugins are written in any language and their runtimes' needs are not ours to know.
//
// Written by hand on <linux/seccomp.h>/<linux/filter.h>; the program is built before fork so
// the child only hands it to prctl.
//
// Thread-safety: DenyFilter() builds its program once (static local) and is then read-only.
#include <linux/filter.h>

#include <string_view>
#include <vector>

namespace oxg::plugins::internal {

struct SeccompProgram {
  std::vector<sock_filter> code;
  sock_fprog prog{};  // points into `code`
};

// Null on architectures the filter does not know (then plugins run without it).
const SeccompProgram* DenyFilter();

// The names of the denied system calls (for logs and tests).
std::vector<std::string_view> DeniedSyscallNames();

}  // namespace oxg::plugins::internal
