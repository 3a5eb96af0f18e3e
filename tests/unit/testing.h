#pragma once
// Small helpers shared by the unit tests (header-only; tests include it as "unit/testing.h").
#include <condition_variable>
#include <fstream>
#include <mutex>
#include <sstream>
#include <string>

namespace oxg::testing {

// The whole file, bytes as they are ("" when it cannot be read).
inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Holds the first thread that calls Pass() until Release(); later calls go straight through.
// The test waits with WaitEntered() until that thread is held: a deterministic way to keep a
// writer or pipeline thread busy while the test fills its queue.
class Gate {
 public:
  void Pass() {
    std::unique_lock lock(mu_);
    if (used_) return;
    used_ = true;
    entered_ = true;
    cv_.notify_all();
    cv_.wait(lock, [this] { return released_; });
  }
  void WaitEntered() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [this] { return entered_; });
  }
  void Release() {
    std::lock_guard lock(mu_);
    released_ = true;
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool used_ = false, entered_ = false, released_ = false;
};

}  // namespace oxg::testing
