#pragma once

// The 0xgen metrics core: counters, gauges and histograms with exemplars, and the registry that
// renders them in the Prometheus text 0.0.4 and OpenMetrics 1.0 formats.
//
// Use: each subsystem declares its families once at startup (a `stats.h` struct built from a
// Registry&) and resolves label sets to handles (`family.WithLabels({...})`) outside the hot
// path. Handles are lock-free: increments and observations are relaxed atomic adds on one of a
// few per-series shards picked by the calling thread, merged when scraped.
//
// Exemplars: families created with `exemplars = true` attach the active sampled span (taken
// from the hook set with SetActiveSpanProvider) to the counter or to the histogram bucket that
// holds the observed value. Only the latest exemplar per bucket is kept.
//
// Thread-safety: everything here is safe to call from any thread. Families and series live as
// long as their Registry; a handle stays valid until its series is removed with Family::Remove.

#include <atomic>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/clock.h"
#include "common/ids.h"

namespace oxg::metrics {

// ---- exemplar context --------------------------------------------------------------------

// What an exemplar records of the span that was active when a value was observed.
struct SpanContextRef {
  TraceId trace_id;
  SpanId span_id;
};

// Fills `out` and returns true when a sampled span is active on the calling thread.
using ActiveSpanProvider = bool (*)(SpanContextRef* out);

// Installs the process-wide provider (the tracing subsystem does this). nullptr restores the
// default, which reports no active span.
void SetActiveSpanProvider(ActiveSpanProvider provider);

// One label of an explicitly supplied exemplar.
struct ExemplarLabel {
  std::string_view name;
  std::string_view value;
};

// OpenMetrics caps an exemplar's label names plus values at 128 UTF-8 code points.
inline constexpr size_t kMaxExemplarCodePoints = 128;

// Checks an exemplar label set: valid label names, valid UTF-8 values, at most
// kMaxExemplarCodePoints code points in all names and values together.
bool ValidExemplarLabels(std::span<const ExemplarLabel> labels);

namespace internal {
struct ExemplarSlot;
struct ExemplarData;
class FamilyBase;
struct FamilyShape;
// Per-thread shards keep concurrent writers off each other's cache lines.
inline constexpr size_t kShards = 4;
struct alignas(64) CacheLine {
  std::atomic<uint64_t> cell[8];
};
// An exemplar cell: null until first used, then one slot reused in place.
class ExemplarCell {
 public:
  ExemplarCell() = default;
  ExemplarCell(const ExemplarCell&) = delete;
  ExemplarCell& operator=(const ExemplarCell&) = delete;
  ~ExemplarCell();
  bool Store(std::span<const ExemplarLabel> labels, double value, int64_t ts_nanos);
  void StoreSpan(const SpanContextRef& ctx, double value, int64_t ts_nanos);
  // Copies the latest exemplar; false when none was recorded.
  bool Read(ExemplarData* out) const;

 private:
  ExemplarSlot* Acquire();
  std::atomic<ExemplarSlot*> slot_{nullptr};
};
}  // namespace internal

template <class T>
class Family;

// ---- series ------------------------------------------------------------------------------

// A monotonically increasing count.
class Counter {
 public:
  explicit Counter(const internal::FamilyShape* shape);
  // Adds n; attaches the active span as exemplar when the family has exemplars.
  void Inc(uint64_t n = 1);
  // Adds n with an explicit exemplar. Returns false (the increment still counts) when the
  // labels are refused by ValidExemplarLabels or the family has no exemplars.
  bool IncWithExemplar(uint64_t n, std::span<const ExemplarLabel> labels);
  uint64_t Value() const;

 private:
  template <class>
  friend class Family;
  void Render(std::string& out, std::string_view name, std::string_view labels, bool om) const;
  const internal::FamilyShape* shape_;
  std::unique_ptr<internal::CacheLine[]> shards_;  // cell[0] of each line
  internal::ExemplarCell exemplar_;
};

// A value that goes up and down. Never carries exemplars.
class Gauge {
 public:
  explicit Gauge(const internal::FamilyShape* shape);
  void Set(double v) { value_.store(v, std::memory_order_relaxed); }
  void Inc(double d = 1) { value_.fetch_add(d, std::memory_order_relaxed); }
  void Dec(double d = 1) { value_.fetch_sub(d, std::memory_order_relaxed); }
  double Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  template <class>
  friend class Family;
  void Render(std::string& out, std::string_view name, std::string_view labels, bool om) const;
  std::atomic<double> value_{0};
};

// Counts observations into fixed buckets, with their sum.
class Histogram {
 public:
  explicit Histogram(const internal::FamilyShape* shape);
  ~Histogram();
  // Records v (NaN is ignored, negative values count as 0); attaches the active span as
  // exemplar of v's bucket when the family has exemplars.
  void Observe(double v);
  // Records v with an explicit exemplar; false (v still counts) when the labels are refused.
  bool ObserveWithExemplar(double v, std::span<const ExemplarLabel> labels);

  struct Snapshot {
    std::vector<uint64_t> cumulative;  // one per bound, then +Inf
    double sum = 0;
    uint64_t count = 0;
  };
  Snapshot Collect() const;

 private:
  template <class>
  friend class Family;
  size_t BucketOf(double v) const;
  void Add(size_t bucket, double v);
  void Render(std::string& out, std::string_view name, std::string_view labels, bool om) const;
  const internal::FamilyShape* shape_;
  std::atomic<uint64_t>& Cell(size_t shard, size_t k) const {
    return cells_[shard * lines_per_shard_ + k / 8].cell[k % 8];
  }
  size_t lines_per_shard_;  // cells per shard: bucket counts, then the sum's bits
  std::unique_ptr<internal::CacheLine[]> cells_;
  std::unique_ptr<internal::ExemplarCell[]> exemplars_;  // one per bucket, or null
};

// ---- families ----------------------------------------------------------------------------

enum class MetricType { kCounter, kGauge, kHistogram };

namespace internal {

struct FamilyShape {
  std::string name;  // as declared, counters ending in _total
  std::string help;
  MetricType type;
  std::vector<std::string> label_names;
  std::vector<double> bounds;  // histograms only, ascending, without +Inf
  bool exemplars = false;
  const Clock* clock = nullptr;
};

class FamilyBase {
 public:
  explicit FamilyBase(FamilyShape shape);
  virtual ~FamilyBase() = default;
  const FamilyShape& shape() const { return shape_; }
  // Appends HELP/TYPE/UNIT and every series; `alias` replaces the name when non-empty.
  void Render(std::string& out, bool open_metrics, std::string_view alias) const;

 protected:
  struct Entry {
    std::vector<std::string> values;
    std::string rendered;  // `a="x",b="y"` escaped, ready to print
    std::shared_ptr<void> series;
  };
  std::shared_ptr<void> Find(std::span<const std::string_view> values,
                             const std::function<std::shared_ptr<void>()>& make);
  bool Erase(std::span<const std::string_view> values);
  // The series as they are now; entries stay alive while a scrape renders them.
  std::vector<std::shared_ptr<const Entry>> SnapshotEntries() const;
  std::string RenderLabels(std::span<const std::string_view> values) const;
  virtual void RenderSeries(std::string& out, std::string_view name, const Entry& e,
                            bool om) const = 0;
  FamilyShape shape_;
  mutable std::mutex mu_;
  std::vector<std::shared_ptr<Entry>> entries_;  // in creation order
  std::unordered_map<std::string, std::shared_ptr<Entry>> index_;
};

}  // namespace internal

// A family of series of one type, one series per label value set.
template <class T>
class Family final : public internal::FamilyBase {
 public:
  using internal::FamilyBase::FamilyBase;
  // Returns the series for these label values (in label-name order), creating it on first
  // use. Takes a lock: resolve once and keep the reference. Throws std::invalid_argument when
  // the number of values differs from the number of label names.
  T& WithLabels(std::initializer_list<std::string_view> values) {
    return WithLabels(std::span<const std::string_view>(values.begin(), values.size()));
  }
  T& WithLabels(std::span<const std::string_view> values) { return *Shared(values); }
  // The same series with shared ownership, for holders that may outlive a Remove (a plugin
  // session's series, removed when it disconnects while a scrape or a sender still runs).
  std::shared_ptr<T> Shared(std::initializer_list<std::string_view> values) {
    return Shared(std::span<const std::string_view>(values.begin(), values.size()));
  }
  std::shared_ptr<T> Shared(std::span<const std::string_view> values) {
    return std::static_pointer_cast<T>(
        Find(values, [this] { return std::make_shared<T>(&shape_); }));
  }
  // Removes a series (e.g. a disconnected plugin's) from the exposition. A reference from
  // WithLabels becomes invalid; a handle from Shared stays usable (its updates are no longer
  // exported), and a scrape in progress still renders it safely.
  bool Remove(std::initializer_list<std::string_view> values) {
    return Erase(std::span<const std::string_view>(values.begin(), values.size()));
  }

 private:
  void RenderSeries(std::string& out, std::string_view name, const Entry& e,
                    bool om) const override {
    static_cast<const T*>(e.series.get())->Render(out, name, e.rendered, om);
  }
};

// ---- registry and exposition -------------------------------------------------------------

enum class Format { kText004, kOpenMetrics100 };

struct ExpositionOptions {
  Format format = Format::kText004;
  // Also write each `oxg_X` family as `glyph_X` with a deprecation note in its HELP.
  bool legacy_aliases = false;
};

// The contract's default latency buckets, in seconds.
const std::vector<double>& DefaultLatencyBuckets();

class Registry {
 public:
  explicit Registry(const Clock& clock = Clock::Real());
  ~Registry();
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // Declares a family. Names and label names are validated (programming errors throw
  // std::invalid_argument): counter names must end in `_total`, `le` is reserved for
  // histograms, and a name may be declared once. Unlabelled families get their single series
  // at once so they are exported (as 0) before the first update.
  Family<Counter>& AddCounter(std::string name, std::string help,
                              std::vector<std::string> label_names = {}, bool exemplars = false);
  Family<Gauge>& AddGauge(std::string name, std::string help,
                          std::vector<std::string> label_names = {});
  Family<Histogram>& AddHistogram(std::string name, std::string help,
                                  std::vector<std::string> label_names,
                                  std::vector<double> bounds = DefaultLatencyBuckets(),
                                  bool exemplars = false);
  // A family whose single value is read at scrape time (process metrics and the like). The
  // callback runs on the scraping thread and must be thread-safe.
  void AddCallback(std::string name, std::string help, MetricType type,
                   std::function<double()> read);

  // Renders every family. Safe to call concurrently with updates and with other scrapes; it
  // never blocks a hot-path update.
  void Write(const ExpositionOptions& options, std::string& out) const;
  std::string Scrape(const ExpositionOptions& options) const {
    std::string out;
    Write(options, out);
    return out;
  }

  const Clock& clock() const { return clock_; }

 private:
  void Insert(std::unique_ptr<internal::FamilyBase> family);
  const Clock& clock_;
  mutable std::mutex mu_;
  std::vector<std::unique_ptr<internal::FamilyBase>> families_;
};

// Registers process_cpu_seconds_total, process_resident_memory_bytes, process_open_fds,
// process_max_fds, process_start_time_seconds (read from /proc at scrape time).
void RegisterProcessMetrics(Registry& registry);

// Registers oxg_build_info{version,revision} = 1.
void RegisterBuildInfo(Registry& registry);

}  // namespace oxg::metrics
