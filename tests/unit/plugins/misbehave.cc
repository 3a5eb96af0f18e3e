// A deliberately misbehaving plugin for the runner's tests (issue 6). One binary; the mode is
// argv[1]:
//   exit0, exit3   exit with that code
//   crash          SIGSEGV at start
//   alloc          allocate and touch memory without bound
//   spin           busy loop
//   ignore-term    ignore SIGTERM, say "ready", sleep
//   fork-bomb      fork without bound; every process also tries setsid()/setpgid(0,0)
//   flood          write stdout lines as fast as it can
//   print-env      print environ, /proc/self/cmdline, the token from OXG_AUTH_TOKEN_FD, the
//                  working directory, open descriptors and the seccomp/no-new-privs state
//   escape         try the calls the deny-list refuses and print what they returned
//   orphan         leave a child behind (ignoring SIGTERM) and exit 0
//   long-line      one 10000-byte line, then "after"
//   sleep          say "ready", sleep until killed
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

extern char** environ;

namespace {

void SleepForever() {
  for (;;) pause();
}

void Say(const std::string& line) {
  std::cout << line << std::endl;  // flushed: the runner reads a pipe
}

std::string ErrName(int rc) { return rc == 0 ? "ok" : std::strerror(errno); }

int PrintEnv() {
  for (char** e = environ; *e != nullptr; ++e) Say(std::string("env: ") + *e);
  std::string args;
  {
    std::ifstream cmdline("/proc/self/cmdline", std::ios::binary);
    args.assign(std::istreambuf_iterator<char>(cmdline), std::istreambuf_iterator<char>());
  }
  for (char& c : args) {
    if (c == '\0') c = ' ';
  }
  Say("cmdline: " + args);
  const char* fd_text = std::getenv("OXG_AUTH_TOKEN_FD");
  if (fd_text != nullptr) {
    const int fd = std::atoi(fd_text);
    std::string token;
    char buf[256];
    ssize_t n;
    while ((n = read(fd, buf, sizeof(buf))) > 0) token.append(buf, static_cast<size_t>(n));
    close(fd);
    Say("token: " + token);
  }
  char cwd[4096];
  if (getcwd(cwd, sizeof(cwd)) != nullptr) Say(std::string("cwd: ") + cwd);
  // Open descriptors, without the one opendir uses to list them.
  DIR* dir = opendir("/proc/self/fd");
  std::string fds;
  if (dir != nullptr) {
    while (const dirent* d = readdir(dir)) {
      if (d->d_name[0] == '.' || std::atoi(d->d_name) == dirfd(dir)) continue;
      fds += std::string(fds.empty() ? "" : " ") + d->d_name;
    }
    closedir(dir);
  }
  Say("fds: " + fds);
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("Seccomp:", 0) == 0 || line.rfind("NoNewPrivs:", 0) == 0) Say(line);
  }
  return 0;
}

int Escape() {
  Say("setsid: " + ErrName(setsid() < 0 ? -1 : 0));
  Say("setpgid: " + ErrName(setpgid(0, 0)));
  Say("ptrace: " + ErrName(ptrace(PTRACE_TRACEME, 0, nullptr, nullptr) < 0 ? -1 : 0));
  Say("unshare: " + ErrName(unshare(CLONE_NEWUTS)));
  // The daemon (our parent) is out of reach: no signal, no limit change.
  Say("kill daemon: " + ErrName(kill(getppid(), 0)));
  Say("kill everyone: " + ErrName(kill(-1, 0)));
  rlimit old{};
  Say("prlimit daemon: " + ErrName(prlimit(getppid(), RLIMIT_CPU, nullptr, &old)));
  // No namespace through clone, and clone3 is not offered (libc falls back to clone).
  const long child = syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0);
  if (child == 0) _exit(0);
  Say("clone newuser: " + ErrName(child < 0 ? -1 : 0));
  Say("clone3: " + ErrName(syscall(SYS_clone3, nullptr, 0) < 0 ? -1 : 0));
  Say("kill self: " + ErrName(kill(getpid(), 0)));  // its own process is fine
  Say("getpid: " + ErrName(getpid() > 0 ? 0 : -1));  // allowed calls still work
  return 0;
}

int ForkBomb() {
  // The first process reports whether it could leave its group; the others just try.
  Say("setsid: " + ErrName(setsid() < 0 ? -1 : 0));
  Say("setpgid: " + ErrName(setpgid(0, 0)));
  for (;;) {
    const pid_t pid = fork();
    if (pid == 0) {
      (void)setsid();
      (void)setpgid(0, 0);
    } else if (pid < 0) {
      usleep(1000);
    }
  }
}

int Flood() {
  std::string chunk;
  for (int i = 0; i < 100; ++i) chunk += "flood flood flood flood flood flood flood flood\n";
  for (;;) {
    const char* p = chunk.data();
    size_t left = chunk.size();
    while (left > 0) {
      const ssize_t n = write(1, p, left);
      if (n <= 0) return 1;
      p += n;
      left -= static_cast<size_t>(n);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "exit0") return 0;
  if (mode == "exit3") return 3;
  if (mode == "crash") {
    volatile uintptr_t address = 0;
    *reinterpret_cast<volatile int*>(address) = 1;
    return 0;
  }
  if (mode == "alloc-headless") {
    // The main thread leaves, another allocates: /proc/<pid>/stat then reads 'Z' with rss 0.
    static pthread_t worker;
    pthread_create(&worker, nullptr, [](void*) -> void* {
      for (;;) {
        constexpr size_t kChunk = 1 << 20;
        char* p = static_cast<char*>(std::malloc(kChunk));
        if (p == nullptr) {
          usleep(10'000);
          continue;
        }
        std::memset(p, 0x5a, kChunk);
      }
    }, nullptr);
    pthread_exit(nullptr);
  }
  if (mode == "alloc") {
    for (;;) {
      constexpr size_t kChunk = 1 << 20;
      char* p = static_cast<char*>(std::malloc(kChunk));
      if (p == nullptr) {
        usleep(10'000);  // at the address-space backstop: stay, resident and over the limit
        continue;
      }
      std::memset(p, 0x5a, kChunk);
    }
  }
  if (mode == "spin") {
    volatile uint64_t n = 0;
    for (;;) n = n + 1;
  }
  if (mode == "ignore-term") {
    signal(SIGTERM, SIG_IGN);
    Say("ready");
    SleepForever();
  }
  if (mode == "fork-bomb") return ForkBomb();
  if (mode == "flood") return Flood();
  if (mode == "print-env") return PrintEnv();
  if (mode == "escape") return Escape();
  if (mode == "orphan") {
    const pid_t pid = fork();
    if (pid == 0) {
      signal(SIGTERM, SIG_IGN);
      SleepForever();
    }
    Say("child " + std::to_string(pid));
    return 0;
  }
  if (mode == "long-line") {
    Say(std::string(10000, 'x'));
    Say("after");
    return 0;
  }
  if (mode == "sleep") {
    Say("ready");
    SleepForever();
  }
  std::cerr << "misbehave: unknown mode \"" << mode << "\"" << std::endl;
  return 2;
}
