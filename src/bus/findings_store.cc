#include "bus/findings_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <optional>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "common/log.h"
#include "common/strings.h"
#include "common/write_all.h"

namespace oxg::bus {
namespace {

constexpr std::string_view kComponent = "findings";
constexpr auto kReportInterval = std::chrono::seconds(10);
// Pending lines are written once they pass this size, so a large batch does not pile up in
// memory before its write.
constexpr size_t kFlushBytes = 4u << 20;
// A buffer that grew past this for one huge batch is given back after its write.
constexpr size_t kKeepCapacity = 16u << 20;

std::string ErrnoText(int err) {
  char buf[256];
  // GNU strerror_r: may return a static string instead of filling buf.
  return std::string(strerror_r(err, buf, sizeof(buf)));
}

absl::Status ErrnoStatus(int err, std::string_view what) {
  return absl::Status(absl::ErrnoToStatusCode(err), Cat(what, ": ", ErrnoText(err)));
}

// Owns a descriptor.
class UniqueFd {
 public:
  explicit UniqueFd(int fd = -1) : fd_(fd) {}
  UniqueFd(UniqueFd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept {
    if (this != &o) Reset(std::exchange(o.fd_, -1));
    return *this;
  }
  ~UniqueFd() { Reset(); }
  int get() const { return fd_; }
  void Reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_;
};

// An open findings file and what the writer knows of it.
struct OpenedFile {
  UniqueFd fd;
  bool regular = false;        // only regular files are measured and rotated
  uint64_t size = 0;           // bytes in the file (regular files)
  bool needs_newline = false;  // the file ends in a fragment
};

absl::StatusOr<OpenedFile> OpenFindingsFile(const std::string& path) {
  OpenedFile f;
  f.fd.Reset(::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600));
  if (f.fd.get() < 0) return ErrnoStatus(errno, path);
  struct stat st;
  if (::fstat(f.fd.get(), &st) != 0) return ErrnoStatus(errno, path);
  f.regular = S_ISREG(st.st_mode);
  if (!f.regular) return f;  // a device or pipe: appended to as it is
  // A file left by an older run may be readable by others; it holds evidence.
  if ((st.st_mode & 077) != 0) ::fchmod(f.fd.get(), st.st_mode & 0700);
  f.size = static_cast<uint64_t>(st.st_size);
  if (f.size > 0) {
    // The append descriptor cannot read: look at the last byte through a second one. When it
    // cannot be read, assume a complete last line (as an unreadable file tells nothing).
    const int rfd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (rfd >= 0) {
      char last = '\n';
      if (::pread(rfd, &last, 1, static_cast<off_t>(f.size - 1)) == 1) {
        f.needs_newline = last != '\n';
      }
      ::close(rfd);
    }
  }
  return f;
}

}  // namespace

class FindingStore::Impl {
 public:
  Impl(Options options, OpenedFile file, metrics::Registry& registry, const Clock& clock)
      : fd_(std::move(file.fd)),
        options_(std::move(options)),
        clock_(clock),
        dropped_family_(registry.AddCounter(
            "oxg_findings_dropped_total",
            "Validated findings that did not reach findings.jsonl: queue_full (the bus handed "
            "one over while the store's queue was full or the store was stopping), write_error "
            "(a line that could not be written).",
            {"reason"})),
        dropped_queue_full_(dropped_family_.WithLabels({"queue_full"})),
        dropped_write_error_(dropped_family_.WithLabels({"write_error"})),
        written_total_(registry
                           .AddCounter("oxg_findings_written_total",
                                       "Finding lines written to findings.jsonl.")
                           .WithLabels({})),
        regular_(file.regular),
        size_(file.size),
        needs_newline_(file.needs_newline) {
    options_.queue_capacity = std::max<size_t>(options_.queue_capacity, 1);
    options_.keep = std::max(options_.keep, 1);
    // No reserve: findings are rare next to flows; the vectors keep what they grew to.
  }

  ~Impl() { Stop(); }

  void StartThread() {
    thread_ = std::thread([this] { Run(); });
  }

  bool Submit(Finding&& finding) {
    bool wake = false;
    {
      std::lock_guard lock(mu_);
      ++submitted_;
      if (stopping_ || queue_.size() >= options_.queue_capacity) {
        ++dropped_;
        dropped_queue_full_.Inc();
        return false;
      }
      queue_.push_back(std::move(finding));
      ++accepted_;
      // The writer sleeps only on an empty queue; while it works it looks again when done.
      wake = waiting_ && queue_.size() == 1;
    }
    if (wake) work_cv_.notify_one();
    return true;
  }

  void Stop() {
    std::lock_guard join_lock(join_mu_);
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    work_cv_.notify_one();
    if (thread_.joinable()) thread_.join();
  }

  void Drain() {
    std::unique_lock lock(mu_);
    const uint64_t target = accepted_;
    drained_cv_.wait(lock, [&] { return handled_ >= target; });
  }

  Counts counts() const {
    std::lock_guard lock(mu_);
    Counts c = counts_;
    c.submitted = submitted_;
    c.dropped = dropped_;
    return c;
  }

 private:
  void Run() {
    for (;;) {
      {
        std::unique_lock lock(mu_);
        waiting_ = true;
        work_cv_.wait(lock, [this] { return !queue_.empty() || stopping_; });
        waiting_ = false;
        if (queue_.empty()) return;  // stopping, and everything is written
        queue_.swap(batch_);
      }
      if (options_.before_batch_for_testing) options_.before_batch_for_testing();
      for (const Finding& finding : batch_) {
        AppendFindingLine(pending_, finding);
        line_ends_.push_back(pending_.size());
        if (pending_.size() >= kFlushBytes) Flush();
      }
      Flush();
      const uint64_t n = batch_.size();
      batch_.clear();  // keeps the capacity for the next swap
      {
        std::lock_guard lock(mu_);
        handled_ += n;
        counts_.written += tally_.written;
        counts_.write_errors += tally_.lost;
        counts_.rotations += tally_.rotations;
        counts_.rotation_errors += tally_.rotation_errors;
      }
      tally_ = {};
      rotation_failed_ = false;
      drained_cv_.notify_all();
    }
  }

  // Writes the pending lines: one write per run of lines that fits in the current file,
  // rotating between runs.
  void Flush() {
    ReopenIfReplaced();
    const size_t n = line_ends_.size();
    size_t i = 0;
    while (i < n) {
      const size_t begin = i == 0 ? 0 : line_ends_[i - 1];
      size_t j = n;
      if (regular_ && options_.rotate_bytes > 0 && !rotation_failed_) {
        const uint64_t base = size_ + (needs_newline_ ? 1 : 0);
        j = i;
        while (j < n && base + (line_ends_[j] - begin) <= options_.rotate_bytes) ++j;
        if (j == i) {  // the next line does not fit
          if (size_ > 0) {
            if (Rotate()) continue;
            rotation_failed_ = true;
            j = n;
          } else {
            j = i + 1;  // larger than rotate_bytes on its own: alone in a fresh file
          }
        }
      }
      WriteLines(i, j);
      i = j;
    }
    pending_.clear();
    line_ends_.clear();
    if (pending_.capacity() > kKeepCapacity) pending_.shrink_to_fit();
  }

  // Writes lines [first, last) of pending_ with one write.
  void WriteLines(size_t first, size_t last) {
    const size_t begin = first == 0 ? 0 : line_ends_[first - 1];
    const std::string_view data =
        std::string_view(pending_).substr(begin, line_ends_[last - 1] - begin);
    int err = 0;
    if (needs_newline_) {
      // The file ends in a fragment from an earlier crash: start on a line of our own.
      err = WriteAll(fd_.get(), "\n");
      if (err == 0) {
        needs_newline_ = false;
        ++size_;
      }
    }
    size_t written = 0;
    if (err == 0) err = WriteAll(fd_.get(), data, &written);
    size_ += written;
    if (err == 0) {
      tally_.written += last - first;
      written_total_.Inc(last - first);
      return;
    }
    // Lines wholly written count as written; a line cut short is ended so the next write starts
    // a fresh line.
    const auto ends_begin = line_ends_.begin() + static_cast<ptrdiff_t>(first);
    const auto ends_end = line_ends_.begin() + static_cast<ptrdiff_t>(last);
    const size_t complete =
        static_cast<size_t>(std::upper_bound(ends_begin, ends_end, begin + written) - ends_begin);
    if (written > 0 && (complete == 0 || line_ends_[first + complete - 1] != begin + written)) {
      if (WriteAll(fd_.get(), "\n") == 0) {
        ++size_;
      } else {
        needs_newline_ = true;
      }
    }
    const uint64_t lost = (last - first) - complete;
    tally_.written += complete;
    tally_.lost += lost;
    written_total_.Inc(complete);
    dropped_write_error_.Inc(lost);
    unreported_lost_ += lost;
    if (Due(last_write_report_)) {
      log::Error(kComponent, Cat("cannot write to ", options_.path, ": ", ErrnoText(err), " (",
                                 unreported_lost_, " findings lost since the last report)"));
      unreported_lost_ = 0;
    }
  }

  // path.N -> path.N+1 (N = keep-1 .. 1), path -> path.1, then a fresh path. On failure the
  // current descriptor stays in use (whatever name it has now), so no line is lost.
  // An operator may delete or move findings.jsonl while the daemon runs: lines written to the
  // old inode would be lost and rotating it would push history out for nothing. One stat per
  // batch notices; a new file is started at the path.
  void ReopenIfReplaced() {
    if (!regular_) return;
    struct stat ours, named;
    if (::fstat(fd_.get(), &ours) != 0) return;
    if (::stat(options_.path.c_str(), &named) == 0 && named.st_ino == ours.st_ino &&
        named.st_dev == ours.st_dev) {
      return;
    }
    absl::StatusOr<OpenedFile> reopened = OpenFindingsFile(options_.path);
    if (!reopened.ok()) return;  // the write below reports the trouble, if any
    log::Warn(kComponent, Cat(options_.path, " was deleted or replaced; writing a new one"));
    fd_ = std::move(reopened->fd);
    regular_ = reopened->regular;
    size_ = reopened->size;
    needs_newline_ = reopened->needs_newline;
  }

  bool Rotate() {
    const std::string& path = options_.path;
    auto numbered = [&path](int n) { return Cat(path, ".", n); };
    auto adopt = [this](OpenedFile&& f) {
      fd_ = std::move(f.fd);
      regular_ = f.regular;
      size_ = f.size;
      needs_newline_ = f.needs_newline;
    };
    std::string failure;
    // The new file exists before anything is renamed, so a failure to create it (no inodes, no
    // descriptors) leaves every rotated file where it was.
    const std::string fresh_path = Cat(path, ".new");
    absl::StatusOr<OpenedFile> fresh = absl::InternalError("not opened");
    if (failure.empty()) {
      ::unlink(fresh_path.c_str());  // left by a crash between its creation and its rename
      fresh = OpenFindingsFile(fresh_path);
      if (!fresh.ok()) failure = Cat("create ", fresh.status().message());
    }
    for (int n = options_.keep - 1; n >= 1 && failure.empty(); --n) {
      const std::string from = numbered(n);
      const std::string to = numbered(n + 1);
      if (::rename(from.c_str(), to.c_str()) != 0) {
        const int err = errno;
        if (err != ENOENT) failure = Cat("rename ", from, " -> ", to, ": ", ErrnoText(err));
      }
    }
    if (failure.empty()) {
      const std::string to = numbered(1);
      if (::rename(path.c_str(), to.c_str()) != 0) {
        failure = Cat("rename ", path, " -> ", to, ": ", ErrnoText(errno));
      }
    }
    if (failure.empty()) {
      if (::rename(fresh_path.c_str(), path.c_str()) != 0) {
        // The current file is already .1: write to the new one under its temporary name
        // rather than lose the batch, and say so.
        failure = Cat("rename ", fresh_path, " -> ", path, ": ", ErrnoText(errno));
        adopt(*std::move(fresh));
      } else {
        adopt(*std::move(fresh));
        ++tally_.rotations;
        return true;
      }
    } else if (fresh.ok()) {
      ::unlink(fresh_path.c_str());
    }
    ++tally_.rotation_errors;
    ++unreported_rotation_errors_;
    if (Due(last_rotation_report_)) {
      log::Error(kComponent,
                 Cat("cannot rotate ", path, ": ", failure, "; appending to the current file (",
                     unreported_rotation_errors_, " failed rotations since the last report)"));
      unreported_rotation_errors_ = 0;
    }
    return false;
  }

  // True (and remembers now) when a report of this kind may be written.
  bool Due(std::optional<Clock::MonoTime>& last) {
    const Clock::MonoTime now = clock_.MonoNow();
    if (last.has_value() && now - *last < kReportInterval) return false;
    last = now;
    return true;
  }

  // First, so the descriptor is closed even when declaring the metrics throws.
  UniqueFd fd_;  // the writer thread's
  Options options_;
  const Clock& clock_;
  metrics::Family<metrics::Counter>& dropped_family_;
  metrics::Counter& dropped_queue_full_;
  metrics::Counter& dropped_write_error_;
  metrics::Counter& written_total_;

  // Shared with the submitting threads.
  mutable std::mutex mu_;
  std::condition_variable work_cv_;
  std::condition_variable drained_cv_;
  std::vector<Finding> queue_;
  bool stopping_ = false;
  bool waiting_ = false;  // the writer sleeps on an empty queue
  uint64_t submitted_ = 0, accepted_ = 0, dropped_ = 0, handled_ = 0;
  Counts counts_;  // written, write_errors, rotations, rotation_errors

  std::mutex join_mu_;
  std::thread thread_;

  // The writer thread's own state.
  struct Tally {
    uint64_t written = 0, lost = 0, rotations = 0, rotation_errors = 0;
  };
  std::vector<Finding> batch_;
  std::string pending_;
  std::vector<size_t> line_ends_;  // offsets in pending_ just past each line's '\n'
  bool regular_;
  uint64_t size_;
  bool needs_newline_;
  Tally tally_;
  bool rotation_failed_ = false;  // the rest of this batch goes to the current file
  std::optional<Clock::MonoTime> last_write_report_, last_rotation_report_;
  uint64_t unreported_lost_ = 0, unreported_rotation_errors_ = 0;
};

absl::StatusOr<std::unique_ptr<FindingStore>> FindingStore::Open(Options options,
                                                                 metrics::Registry& registry,
                                                                 const Clock& clock) {
  if (options.path.empty()) {
    return absl::InvalidArgumentError("findings store: empty path");
  }
  // The file first: a failed open leaves nothing registered, so the caller may try again.
  absl::StatusOr<OpenedFile> file = OpenFindingsFile(options.path);
  if (!file.ok()) return file.status();
  auto impl = std::make_unique<Impl>(std::move(options), std::move(*file), registry, clock);
  impl->StartThread();
  return std::unique_ptr<FindingStore>(new FindingStore(std::move(impl)));
}

FindingStore::FindingStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

FindingStore::~FindingStore() = default;  // Impl's destructor stops, joins and closes

bool FindingStore::Submit(Finding finding) { return impl_->Submit(std::move(finding)); }

void FindingStore::Drain() { impl_->Drain(); }

void FindingStore::Stop() { impl_->Stop(); }

FindingStore::Counts FindingStore::counts() const { return impl_->counts(); }

}  // namespace oxg::bus
