#pragma once
// The findings store: validated findings (findings.h) appended to <data-dir>/findings.jsonl
// (contract §8) by one writer thread, with size-based rotation.
//
// The bus thread that accepted a finding hands it over with Submit and returns at once; the
// writer formats the lines (AppendFindingLine) and writes each batch with one write(2). When the
// queue is full the finding is dropped and counted; nothing on the bus waits for the disk.
//
// Files: opened O_WRONLY|O_APPEND|O_CREAT|O_CLOEXEC, mode 0600 (an existing file readable by
// others is narrowed to its owner: findings hold evidence). An existing file is appended to and
// its size counts towards rotation; when it ends in a fragment (a write cut short by a crash)
// the next line starts on a line of its own, so the fragment stays one bad line for readers.
//
// Rotation: before a write that would make the file exceed rotate_bytes, and only when the file
// is a non-empty regular file, path.N is renamed to path.N+1 for N = keep-1 .. 1 (the old
// path.keep is replaced, so exactly `keep` rotated files remain), path becomes path.1 and a
// fresh path is opened. A batch is split only between lines, never inside one; a single line
// larger than rotate_bytes is still written, alone, to a fresh file. A failed rotation is
// counted and reported on the operational log (at most once per 10 s) and the batch goes on to
// the current file; the next batch tries again.
//
// Write errors (disk full, file system gone): the lines not written are counted
// (oxg_findings_dropped_total{reason="write_error"}) and reported on the operational log at most
// once per 10 s (clock time); the daemon goes on. A line cut short is ended with a newline so
// the next line starts fresh.
//
// Metric families (additions to contract §4, see docs/observability.md):
//   oxg_findings_dropped_total{reason="queue_full"|"write_error"}, oxg_findings_written_total.
//
// Thread-safety: Submit, Drain, Stop and counts may be called from any thread.
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "bus/findings.h"
#include "common/clock.h"
#include "telemetry/metrics/metrics.h"

namespace oxg::bus {

// Receives validated findings from the bus; Submit never blocks on I/O.
class FindingSink {
 public:
  virtual ~FindingSink() = default;
  // Takes the finding; false when it was dropped (and counted) instead of stored.
  virtual bool Submit(Finding finding) = 0;
};

class FindingStore final : public FindingSink {
 public:
  struct Options {
    std::string path;                     // <data-dir>/findings.jsonl
    uint64_t rotate_bytes = 64ull << 20;  // 0: never rotate
    int keep = 5;                         // findings.jsonl.1 newest .. .5 oldest; at least 1
    size_t queue_capacity = 4096;         // findings waiting for the writer; at least 1
    // Tests only: runs on the writer thread after it took a batch off the queue and before it
    // writes it (the queue is empty again), so a test can hold the writer deterministically.
    std::function<void()> before_batch_for_testing;
  };

  // Opens (or creates) the file and starts the writer. The error names the path. Declares the
  // metric families on `registry` (once per registry); nothing is declared when opening fails.
  // `registry` and `clock` must outlive the store.
  static absl::StatusOr<std::unique_ptr<FindingStore>> Open(Options options,
                                                            metrics::Registry& registry,
                                                            const Clock& clock);
  ~FindingStore() override;  // Stop()s
  FindingStore(const FindingStore&) = delete;
  FindingStore& operator=(const FindingStore&) = delete;

  // Thread-safe, never blocks on I/O. False, and counted with reason "queue_full", when the
  // queue is full or the store is stopped.
  bool Submit(Finding finding) override;
  // Blocks until everything accepted so far has been written (or counted as lost).
  void Drain();
  // Writes everything queued, then stops the writer thread. Idempotent.
  void Stop();

  struct Counts {
    uint64_t submitted = 0;        // Submit calls
    uint64_t written = 0;          // lines wholly written
    uint64_t dropped = 0;          // refused by Submit (queue full or stopped)
    uint64_t write_errors = 0;     // lines lost to failed writes
    uint64_t rotations = 0;        // completed rotations
    uint64_t rotation_errors = 0;  // rotations that failed (their lines went to the current file)
  };
  Counts counts() const;

  class Impl;

 private:
  explicit FindingStore(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace oxg::bus
