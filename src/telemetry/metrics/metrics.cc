// Series, families and registration. Rendering lives in exposition.cc.

#include "telemetry/metrics/metrics.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <new>
#include <stdexcept>
#include <thread>

#include "common/utf8.h"
#include "telemetry/metrics/internal/exemplar_slot.h"
#include "telemetry/metrics/internal/render.h"

namespace oxg::metrics {
namespace {

bool NoActiveSpan(SpanContextRef*) { return false; }

std::atomic<ActiveSpanProvider> g_provider{&NoActiveSpan};

// Threads are spread over the shards round-robin in the order they first touch a metric.
size_t ShardIndex() {
  static std::atomic<size_t> next{0};
  thread_local const size_t index =
      next.fetch_add(1, std::memory_order_relaxed) & (internal::kShards - 1);
  return index;
}

// Attaches the active span, if any, to `cell`.
inline void RecordSpanExemplar(internal::ExemplarCell& cell, const internal::FamilyShape& shape,
                               double value) {
  SpanContextRef ctx;
  if (g_provider.load(std::memory_order_relaxed)(&ctx)) {
    cell.StoreSpan(ctx, value, shape.clock->NowUnixNanos());
  }
}

bool IsLabelName(std::string_view s) {
  if (s.empty()) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    if (!alpha && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  return true;
}

bool IsMetricName(std::string_view s) {
  if (s.empty()) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
    if (!alpha && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  return true;
}

void Invalid(const std::string& name, const std::string& why) {
  throw std::invalid_argument("metric " + name + ": " + why);
}

void CheckShape(const internal::FamilyShape& shape) {
  if (!IsMetricName(shape.name)) Invalid(shape.name, "invalid metric name");
  if (shape.type == MetricType::kCounter && !shape.name.ends_with("_total")) {
    Invalid(shape.name, "counter names end in _total");
  }
  for (size_t i = 0; i < shape.label_names.size(); ++i) {
    const std::string& l = shape.label_names[i];
    if (!IsLabelName(l) || l.starts_with("__")) Invalid(shape.name, "invalid label name " + l);
    if (shape.type == MetricType::kHistogram && l == "le") {
      Invalid(shape.name, "label le is reserved for histogram buckets");
    }
    for (size_t j = 0; j < i; ++j) {
      if (shape.label_names[j] == l) Invalid(shape.name, "duplicate label name " + l);
    }
  }
  if (shape.type == MetricType::kHistogram) {
    if (shape.bounds.empty()) Invalid(shape.name, "a histogram needs bucket bounds");
    for (size_t i = 0; i < shape.bounds.size(); ++i) {
      if (!std::isfinite(shape.bounds[i])) Invalid(shape.name, "bucket bounds must be finite");
      if (i > 0 && !(shape.bounds[i - 1] < shape.bounds[i])) {
        Invalid(shape.name, "bucket bounds must increase");
      }
    }
  }
}

// Series keys encode each value with its length so no separator can be forged by a value.
std::string SeriesKey(std::span<const std::string_view> values) {
  std::string key;
  for (std::string_view v : values) {
    key.append(std::to_string(v.size()));
    key.push_back(':');
    key.append(v);
  }
  return key;
}

}  // namespace

void SetActiveSpanProvider(ActiveSpanProvider provider) {
  g_provider.store(provider != nullptr ? provider : &NoActiveSpan, std::memory_order_release);
}

bool ValidExemplarLabels(std::span<const ExemplarLabel> labels) {
  size_t total = 0;
  for (size_t i = 0; i < labels.size(); ++i) {
    const ExemplarLabel& l = labels[i];
    if (!IsLabelName(l.name)) return false;
    for (size_t j = 0; j < i; ++j) {
      if (labels[j].name == l.name) return false;
    }
    size_t n = 0;
    if (!utf8::CountCodePoints(l.value, &n)) return false;
    total += l.name.size() + n;
  }
  return total <= kMaxExemplarCodePoints;
}

const std::vector<double>& DefaultLatencyBuckets() {
  static const std::vector<double> kBounds = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                              0.1,    0.25,  0.5,    1,     2.5,  5,     10};
  return kBounds;
}

// ---- exemplar cells ------------------------------------------------------------------------

namespace internal {

ExemplarCell::~ExemplarCell() { delete slot_.load(std::memory_order_acquire); }

ExemplarSlot* ExemplarCell::Acquire() {
  ExemplarSlot* slot = slot_.load(std::memory_order_acquire);
  if (slot != nullptr) return slot;
  // First exemplar of this cell: allocate once; the loser of a race frees its copy. Out of
  // memory, the exemplar is skipped rather than thrown at the caller.
  auto* fresh = new (std::nothrow) ExemplarSlot();
  if (fresh == nullptr) return nullptr;
  if (slot_.compare_exchange_strong(slot, fresh, std::memory_order_acq_rel)) return fresh;
  delete fresh;
  return slot;
}

void ExemplarCell::StoreSpan(const SpanContextRef& ctx, double value, int64_t ts_nanos) {
  ExemplarSlot* slot = Acquire();
  // A writer that finds the slot busy skips: only the latest exemplar matters and the hot path
  // must not wait.
  if (slot == nullptr || !slot->TryLock()) return;
  slot->data.kind = ExemplarData::Kind::kSpan;
  slot->data.span = ctx;
  slot->data.value = value;
  slot->data.ts_nanos = ts_nanos;
  slot->Unlock();
}

bool ExemplarCell::Store(std::span<const ExemplarLabel> labels, double value, int64_t ts_nanos) {
  if (!ValidExemplarLabels(labels)) return false;
  ExemplarSlot* slot = Acquire();
  if (slot == nullptr) return false;
  if (!slot->TryLock()) return true;  // accepted, superseded by a concurrent writer
  ExemplarData& d = slot->data;
  d.kind = ExemplarData::Kind::kLabels;
  d.len = 0;
  for (const ExemplarLabel& l : labels) {
    // Fits: names and values are at most 128 code points (512 bytes) plus two NULs a label.
    std::memcpy(d.text + d.len, l.name.data(), l.name.size());
    d.len += l.name.size();
    d.text[d.len++] = '\0';
    std::memcpy(d.text + d.len, l.value.data(), l.value.size());
    d.len += l.value.size();
    d.text[d.len++] = '\0';
  }
  d.value = value;
  d.ts_nanos = ts_nanos;
  slot->Unlock();
  return true;
}

bool ExemplarCell::Read(ExemplarData* out) const {
  ExemplarSlot* slot = slot_.load(std::memory_order_acquire);
  if (slot == nullptr) return false;
  slot->Lock();
  *out = slot->data;
  slot->Unlock();
  return out->kind != ExemplarData::Kind::kNone;
}

}  // namespace internal

// ---- counters ------------------------------------------------------------------------------

Counter::Counter(const internal::FamilyShape* shape)
    : shape_(shape), shards_(new internal::CacheLine[internal::kShards]()) {}

void Counter::Inc(uint64_t n) {
  shards_[ShardIndex()].cell[0].fetch_add(n, std::memory_order_relaxed);
  if (shape_->exemplars) RecordSpanExemplar(exemplar_, *shape_, static_cast<double>(n));
}

bool Counter::IncWithExemplar(uint64_t n, std::span<const ExemplarLabel> labels) {
  shards_[ShardIndex()].cell[0].fetch_add(n, std::memory_order_relaxed);
  if (!shape_->exemplars) return false;
  return exemplar_.Store(labels, static_cast<double>(n), shape_->clock->NowUnixNanos());
}

uint64_t Counter::Value() const {
  uint64_t total = 0;
  for (size_t s = 0; s < internal::kShards; ++s) {
    total += shards_[s].cell[0].load(std::memory_order_relaxed);
  }
  return total;
}

// ---- gauges --------------------------------------------------------------------------------

Gauge::Gauge(const internal::FamilyShape*) {}

// ---- histograms ----------------------------------------------------------------------------

Histogram::Histogram(const internal::FamilyShape* shape)
    : shape_(shape),
      lines_per_shard_((shape->bounds.size() + 2 + 7) / 8),
      cells_(new internal::CacheLine[internal::kShards * lines_per_shard_]()) {
  if (shape->exemplars) {
    exemplars_ = std::make_unique<internal::ExemplarCell[]>(shape->bounds.size() + 1);
  }
}

Histogram::~Histogram() = default;

size_t Histogram::BucketOf(double v) const {
  const std::vector<double>& b = shape_->bounds;
  // Short bucket lists are faster to scan than to bisect.
  if (b.size() <= 16) {
    size_t i = 0;
    while (i < b.size() && v > b[i]) ++i;
    return i;
  }
  return static_cast<size_t>(std::lower_bound(b.begin(), b.end(), v) - b.begin());
}

void Histogram::Add(size_t bucket, double v) {
  const size_t shard = ShardIndex();
  Cell(shard, bucket).fetch_add(1, std::memory_order_relaxed);
  std::atomic<uint64_t>& sum = Cell(shard, shape_->bounds.size() + 1);
  uint64_t old_bits = sum.load(std::memory_order_relaxed);
  while (!sum.compare_exchange_weak(old_bits,
                                    std::bit_cast<uint64_t>(std::bit_cast<double>(old_bits) + v),
                                    std::memory_order_relaxed)) {
  }
}

// Histograms here measure durations and sizes. A negative value (a wall-clock step during a
// timing, say) is counted as 0 so that `_sum` never goes negative or NaN: OpenMetrics parsers
// reject a whole scrape for either.
static inline bool Sanitize(double& v) {
  if (std::isnan(v)) return false;
  if (v < 0) v = 0;
  return true;
}

void Histogram::Observe(double v) {
  if (!Sanitize(v)) return;
  const size_t bucket = BucketOf(v);
  Add(bucket, v);
  if (exemplars_) RecordSpanExemplar(exemplars_[bucket], *shape_, v);
}

bool Histogram::ObserveWithExemplar(double v, std::span<const ExemplarLabel> labels) {
  if (!Sanitize(v)) return false;
  const size_t bucket = BucketOf(v);
  Add(bucket, v);
  if (!exemplars_) return false;
  return exemplars_[bucket].Store(labels, v, shape_->clock->NowUnixNanos());
}

Histogram::Snapshot Histogram::Collect() const {
  const size_t n = shape_->bounds.size() + 1;
  Snapshot snap;
  snap.cumulative.assign(n, 0);
  for (size_t s = 0; s < internal::kShards; ++s) {
    for (size_t b = 0; b < n; ++b) {
      snap.cumulative[b] += Cell(s, b).load(std::memory_order_relaxed);
    }
    snap.sum += std::bit_cast<double>(Cell(s, n).load(std::memory_order_relaxed));
  }
  for (size_t b = 1; b < n; ++b) snap.cumulative[b] += snap.cumulative[b - 1];
  // The count is the +Inf bucket by construction, so the two always agree in a scrape.
  snap.count = snap.cumulative.back();
  return snap;
}

// ---- families ------------------------------------------------------------------------------

namespace internal {

FamilyBase::FamilyBase(FamilyShape shape) : shape_(std::move(shape)) { CheckShape(shape_); }

// Label values may come from untrusted peers (plugin names). Invalid UTF-8 is replaced before
// a value identifies a series, so two values that render alike are one series, never two
// samples with the same labels. Valid input (the usual case) is used as it is, without copies.
class CleanValues {
 public:
  explicit CleanValues(std::span<const std::string_view> values) : values_(values) {
    size_t n = 0;
    bool valid = true;
    for (std::string_view v : values) valid = valid && utf8::CountCodePoints(v, &n);
    if (valid) return;
    owned_.resize(values.size());
    views_.resize(values.size());
    for (size_t i = 0; i < values.size(); ++i) {
      utf8::AppendValid(owned_[i], values[i]);
      views_[i] = owned_[i];
    }
    values_ = views_;
  }
  std::span<const std::string_view> get() const { return values_; }

 private:
  std::span<const std::string_view> values_;
  std::vector<std::string> owned_;
  std::vector<std::string_view> views_;
};

std::shared_ptr<void> FamilyBase::Find(std::span<const std::string_view> values,
                                       const std::function<std::shared_ptr<void>()>& make) {
  if (values.size() != shape_.label_names.size()) {
    throw std::invalid_argument("metric " + shape_.name + ": expected " +
                                std::to_string(shape_.label_names.size()) + " label values, got " +
                                std::to_string(values.size()));
  }
  const CleanValues clean(values);
  values = clean.get();
  std::string key = SeriesKey(values);
  std::lock_guard lock(mu_);
  if (auto it = index_.find(key); it != index_.end()) return it->second->series;
  auto entry = std::make_shared<Entry>();
  entry->values.assign(values.begin(), values.end());
  entry->rendered = RenderLabels(values);
  entry->series = make();
  index_.emplace(std::move(key), entry);
  entries_.push_back(entry);
  return entry->series;
}

bool FamilyBase::Erase(std::span<const std::string_view> values) {
  const CleanValues clean(values);
  std::lock_guard lock(mu_);
  auto it = index_.find(SeriesKey(clean.get()));
  if (it == index_.end()) return false;
  std::erase(entries_, it->second);
  index_.erase(it);
  return true;
}

std::vector<std::shared_ptr<const FamilyBase::Entry>> FamilyBase::SnapshotEntries() const {
  std::lock_guard lock(mu_);
  return {entries_.begin(), entries_.end()};
}

// Families read at scrape time through a callback.
class CallbackFamily final : public FamilyBase {
 public:
  CallbackFamily(FamilyShape shape, std::function<double()> read)
      : FamilyBase(std::move(shape)), read_(std::move(read)) {
    static const std::string_view kNone[1] = {};
    Find(std::span<const std::string_view>(kNone, 0), [] { return std::make_shared<int>(0); });
  }

 private:
  void RenderSeries(std::string& out, std::string_view name, const Entry&, bool) const override {
    RenderCallbackSample(out, name, shape_.type, read_());
  }
  std::function<double()> read_;
};

}  // namespace internal

// ---- registry ------------------------------------------------------------------------------

Registry::Registry(const Clock& clock) : clock_(clock) {}
Registry::~Registry() = default;

void Registry::Insert(std::unique_ptr<internal::FamilyBase> family) {
  std::lock_guard lock(mu_);
  for (const auto& f : families_) {
    if (f->shape().name == family->shape().name) {
      Invalid(family->shape().name, "declared twice");
    }
  }
  families_.push_back(std::move(family));
}

template <class T>
static Family<T>& AddFamily(
    std::unique_ptr<Family<T>> family,
    const std::function<void(std::unique_ptr<internal::FamilyBase>)>& insert) {
  Family<T>& ref = *family;
  const bool unlabelled = ref.shape().label_names.empty();
  insert(std::move(family));
  if (unlabelled) ref.WithLabels(std::span<const std::string_view>());
  return ref;
}

Family<Counter>& Registry::AddCounter(std::string name, std::string help,
                                      std::vector<std::string> label_names, bool exemplars) {
  internal::FamilyShape shape{
      std::move(name), std::move(help), MetricType::kCounter, std::move(label_names), {},
      exemplars,       &clock_};
  return AddFamily(std::make_unique<Family<Counter>>(std::move(shape)),
                   [this](auto f) { Insert(std::move(f)); });
}

Family<Gauge>& Registry::AddGauge(std::string name, std::string help,
                                  std::vector<std::string> label_names) {
  internal::FamilyShape shape{
      std::move(name), std::move(help), MetricType::kGauge, std::move(label_names), {},
      false,           &clock_};
  return AddFamily(std::make_unique<Family<Gauge>>(std::move(shape)),
                   [this](auto f) { Insert(std::move(f)); });
}

Family<Histogram>& Registry::AddHistogram(std::string name, std::string help,
                                          std::vector<std::string> label_names,
                                          std::vector<double> bounds, bool exemplars) {
  internal::FamilyShape shape{std::move(name),
                              std::move(help),
                              MetricType::kHistogram,
                              std::move(label_names),
                              std::move(bounds),
                              exemplars,
                              &clock_};
  return AddFamily(std::make_unique<Family<Histogram>>(std::move(shape)),
                   [this](auto f) { Insert(std::move(f)); });
}

void Registry::AddCallback(std::string name, std::string help, MetricType type,
                           std::function<double()> read) {
  if (type == MetricType::kHistogram) Invalid(name, "callback families are counters or gauges");
  internal::FamilyShape shape{std::move(name), std::move(help), type, {}, {}, false, &clock_};
  Insert(std::make_unique<internal::CallbackFamily>(std::move(shape), std::move(read)));
}

}  // namespace oxg::metrics
