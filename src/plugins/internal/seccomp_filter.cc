#include "plugins/internal/seccomp_filter.h"

#include <linux/audit.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <sys/syscall.h>

#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstddef>

namespace oxg::plugins::internal {
namespace {

#if defined(__x86_64__)
constexpr uint32_t kArch = AUDIT_ARCH_X86_64;
constexpr bool kKnownArch = true;
#elif defined(__aarch64__)
constexpr uint32_t kArch = AUDIT_ARCH_AARCH64;
constexpr bool kKnownArch = true;
#else
constexpr uint32_t kArch = 0;
constexpr bool kKnownArch = false;
#endif

struct Denied {
  std::string_view name;
  long nr;
};

#define OXG_DENY(name) \
  { #name, __NR_##name }
// Not every call exists on every architecture; #ifdef keeps the list buildable everywhere.
// clang-format off
constexpr Denied kDenied[] = {
#ifdef __NR_ptrace
    OXG_DENY(ptrace),
#endif
#ifdef __NR_process_vm_readv
    OXG_DENY(process_vm_readv),
#endif
#ifdef __NR_process_vm_writev
    OXG_DENY(process_vm_writev),
#endif
#ifdef __NR_mount
    OXG_DENY(mount),
#endif
#ifdef __NR_umount2
    OXG_DENY(umount2),
#endif
#ifdef __NR_pivot_root
    OXG_DENY(pivot_root),
#endif
#ifdef __NR_swapon
    OXG_DENY(swapon),
#endif
#ifdef __NR_swapoff
    OXG_DENY(swapoff),
#endif
#ifdef __NR_reboot
    OXG_DENY(reboot),
#endif
#ifdef __NR_kexec_load
    OXG_DENY(kexec_load),
#endif
#ifdef __NR_kexec_file_load
    OXG_DENY(kexec_file_load),
#endif
#ifdef __NR_init_module
    OXG_DENY(init_module),
#endif
#ifdef __NR_finit_module
    OXG_DENY(finit_module),
#endif
#ifdef __NR_delete_module
    OXG_DENY(delete_module),
#endif
#ifdef __NR_setsid
    OXG_DENY(setsid),
#endif
#ifdef __NR_setpgid
    OXG_DENY(setpgid),
#endif
#ifdef __NR_setns
    OXG_DENY(setns),
#endif
#ifdef __NR_unshare
    OXG_DENY(unshare),
#endif
#ifdef __NR_bpf
    OXG_DENY(bpf),
#endif
#ifdef __NR_perf_event_open
    OXG_DENY(perf_event_open),
#endif
#ifdef __NR_keyctl
    OXG_DENY(keyctl),
#endif
#ifdef __NR_add_key
    OXG_DENY(add_key),
#endif
#ifdef __NR_request_key
    OXG_DENY(request_key),
#endif
#ifdef __NR_acct
    OXG_DENY(acct),
#endif
#ifdef __NR_settimeofday
    OXG_DENY(settimeofday),
#endif
#ifdef __NR_clock_settime
    OXG_DENY(clock_settime),
#endif
#ifdef __NR_clock_adjtime
    OXG_DENY(clock_adjtime),
#endif
#ifdef __NR_adjtimex
    OXG_DENY(adjtimex),
#endif
#ifdef __NR_open_by_handle_at
    OXG_DENY(open_by_handle_at),
#endif
#ifdef __NR_userfaultfd
    OXG_DENY(userfaultfd),
#endif
#ifdef __NR_tkill
    OXG_DENY(tkill),  // obsolete; tgkill is what libc uses, and it is checked below
#endif
#ifdef __NR_fsopen
    OXG_DENY(fsopen),
#endif
#ifdef __NR_fsconfig
    OXG_DENY(fsconfig),
#endif
#ifdef __NR_fsmount
    OXG_DENY(fsmount),
#endif
#ifdef __NR_fspick
    OXG_DENY(fspick),
#endif
#ifdef __NR_move_mount
    OXG_DENY(move_mount),
#endif
#ifdef __NR_open_tree
    OXG_DENY(open_tree),
#endif
#ifdef __NR_mount_setattr
    OXG_DENY(mount_setattr),
#endif
#ifdef __NR_pidfd_getfd
    OXG_DENY(pidfd_getfd),
#endif
#ifdef __NR_process_madvise
    OXG_DENY(process_madvise),
#endif
#ifdef __NR_kcmp
    OXG_DENY(kcmp),
#endif
};
// clang-format on
#undef OXG_DENY

sock_filter Stmt(uint16_t code, uint32_t k) { return BPF_STMT(code, k); }
sock_filter Jump(uint16_t code, uint32_t k, uint8_t jt, uint8_t jf) {
  return BPF_JUMP(code, k, jt, jf);
}

SeccompProgram* Build() {
  auto* p = new SeccompProgram;
  auto& c = p->code;
  constexpr uint32_t kDeny = SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA);
  // A system call made through another ABI (i386 `int 0x80` on x86_64) has other numbers and
  // would walk around the list: refuse those outright.
  c.push_back(Stmt(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch)));
  c.push_back(Jump(BPF_JMP | BPF_JEQ | BPF_K, kArch, 1, 0));
  c.push_back(Stmt(BPF_RET | BPF_K, kDeny));
  c.push_back(Stmt(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)));
#if defined(__x86_64__)
  // The x32 ABI shares AUDIT_ARCH_X86_64 and sets bit 30 of the number.
  c.push_back(Jump(BPF_JMP | BPF_JGE | BPF_K, 0x40000000u, 0, 1));
  c.push_back(Stmt(BPF_RET | BPF_K, kDeny));
#endif
#ifdef __NR_clone3
  // clone3 passes its flags in memory, out of the filter's sight: ENOSYS makes the C library
  // fall back to clone, whose flags are checked below.
  c.push_back(Jump(BPF_JMP | BPF_JEQ | BPF_K, __NR_clone3, 0, 1));
  c.push_back(Stmt(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (ENOSYS & SECCOMP_RET_DATA)));
#endif
  // Plugins run under the daemon's uid: keep them from signalling it, its process group or every
  // process at once, and from changing its limits or scheduling. The program is built in the
  // daemon, so getpid()/getpgrp() are the daemon's.
  const uint32_t daemon = static_cast<uint32_t>(getpid());
  const uint32_t daemon_group = static_cast<uint32_t>(-getpgrp());
  const uint32_t everyone = static_cast<uint32_t>(-1);
  struct ArgRule {
    long nr;
    int arg;
    std::array<uint32_t, 3> refused;  // a zero entry is not a value (pid 0 is "self")
  };
  const ArgRule rules[] = {
      {__NR_kill, 0, {daemon, daemon_group, everyone}},
      {__NR_tgkill, 0, {daemon, 0, 0}},
      {__NR_pidfd_open, 0, {daemon, 0, 0}},
      {__NR_prlimit64, 0, {daemon, 0, 0}},
      {__NR_setpriority, 1, {daemon, 0, 0}},
      {__NR_sched_setaffinity, 0, {daemon, 0, 0}},
      {__NR_sched_setscheduler, 0, {daemon, 0, 0}},
      {__NR_sched_setparam, 0, {daemon, 0, 0}},
  };
  for (const ArgRule& r : rules) {
    int values = 0;
    for (uint32_t v : r.refused) values += v != 0;
    // nr? then load the argument, refuse each listed value, allow the rest.
    c.push_back(Jump(BPF_JMP | BPF_JEQ | BPF_K, static_cast<uint32_t>(r.nr), 0,
                     static_cast<uint8_t>(values * 2 + 2)));
    c.push_back(Stmt(BPF_LD | BPF_W | BPF_ABS,
                     static_cast<uint32_t>(offsetof(seccomp_data, args) + 8 * r.arg)));  // low word
    for (uint32_t v : r.refused) {
      if (v == 0) continue;
      c.push_back(Jump(BPF_JMP | BPF_JEQ | BPF_K, v, 0, 1));
      c.push_back(Stmt(BPF_RET | BPF_K, kDeny));
    }
    c.push_back(Stmt(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
  }
  // clone may create processes and threads, but not new namespaces, and not children of the
  // daemon (CLONE_PARENT would leave zombies the runner never reaps).
  constexpr uint32_t kCloneDenied = CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC |
                                    CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET | CLONE_PARENT;
  c.push_back(Jump(BPF_JMP | BPF_JEQ | BPF_K, __NR_clone, 0, 4));
  c.push_back(Stmt(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, args[0])));  // low word
  c.push_back(Jump(BPF_JMP | BPF_JSET | BPF_K, kCloneDenied, 0, 1));
  c.push_back(Stmt(BPF_RET | BPF_K, kDeny));
  c.push_back(Stmt(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
  for (const Denied& d : kDenied) {
    c.push_back(Jump(BPF_JMP | BPF_JEQ | BPF_K, static_cast<uint32_t>(d.nr), 0, 1));
    c.push_back(Stmt(BPF_RET | BPF_K, kDeny));
  }
  c.push_back(Stmt(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
  p->prog.len = static_cast<unsigned short>(c.size());
  p->prog.filter = c.data();
  return p;
}

}  // namespace

const SeccompProgram* DenyFilter() {
  if constexpr (!kKnownArch) return nullptr;
  static const SeccompProgram* const program = Build();  // never freed: read by every launch
  return program;
}

std::vector<std::string_view> DeniedSyscallNames() {
  std::vector<std::string_view> names;
  for (const Denied& d : kDenied) names.push_back(d.name);
  return names;
}

}  // namespace oxg::plugins::internal
