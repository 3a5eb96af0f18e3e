#include "proxy/flow/flow_pipeline.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "common/json_writer.h"
#include "common/log.h"
#include "common/redact.h"
#include "common/strings.h"
#include "common/write_all.h"
#include "proxy/http/http_head.h"

namespace oxg::proxy {
namespace {

constexpr std::string_view kComponent = "capture";
constexpr auto kReportInterval = std::chrono::seconds(10);
// A file's pending lines are written once they pass this size, so a batch of large flows does
// not pile up in memory before its single write.
constexpr size_t kFlushBytes = 4u << 20;
// How long the thread lingers for more exchanges after waking, and the batch that ends it.
constexpr auto kLinger = std::chrono::milliseconds(2);
constexpr size_t kLingerBatch = 256;
// A buffer that grew past this for one huge line is given back after its write.
constexpr size_t kKeepCapacity = 16u << 20;
// How far back Start looks for the flow log's last line to continue its sequence.
constexpr uint64_t kMaxTailScan = 64u << 20;

std::string ErrnoText(int err) {
  char buf[256];
  // GNU strerror_r: may return a static string instead of filling buf.
  return std::string(strerror_r(err, buf, sizeof(buf)));
}

uint64_t QueuedBytes(const CapturedExchange& e) {
  uint64_t n = e.request.head.size() + e.request.body.size() + e.url.size();
  if (e.response.has_value()) n += e.response->head.size() + e.response->body.size();
  return n;
}

// The number after `"sequence":` at the start of a flow log line, or 0.
uint64_t SequenceOf(std::string_view line) {
  constexpr std::string_view kKey = "\"sequence\":";
  const size_t at = line.find(kKey);
  if (at == std::string_view::npos) return 0;
  uint64_t v = 0;
  size_t i = at + kKey.size();
  const size_t start = i;
  while (i < line.size() && line[i] >= '0' && line[i] <= '9' && i - start < 19) {
    v = v * 10 + static_cast<uint64_t>(line[i] - '0');
    ++i;
  }
  return v;
}

// Reads the sequence of the last complete line of an existing flow log, so numbering goes on
// across restarts. *needs_newline tells whether the file ends in a fragment (a write cut short
// by a crash) that the next line must not be glued to.
uint64_t LastSequence(int fd, bool* needs_newline) {
  *needs_newline = false;
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size <= 0) return 0;
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  char last;
  if (::pread(fd, &last, 1, static_cast<off_t>(size - 1)) != 1) return 0;
  *needs_newline = last != '\n';
  // Walk back block by block to the newline that ends the last complete line, then to the one
  // before it (or the start of the file).
  std::vector<char> block(64 * 1024);
  uint64_t end = size;  // exclusive end of the region still to scan
  int newlines = 0;
  uint64_t line_start = 0;
  bool found_start = false;
  while (end > 0 && size - end < kMaxTailScan) {
    const uint64_t from = end > block.size() ? end - block.size() : 0;
    const size_t len = static_cast<size_t>(end - from);
    if (::pread(fd, block.data(), len, static_cast<off_t>(from)) != static_cast<ssize_t>(len)) {
      return 0;
    }
    for (size_t i = len; i-- > 0;) {
      if (block[i] != '\n') continue;
      if (++newlines == 2) {
        line_start = from + i + 1;
        found_start = true;
        break;
      }
    }
    if (found_start) break;
    end = from;
  }
  if (!found_start) {
    if (end != 0 || newlines == 0) return 0;  // gave up, or no complete line at all
    line_start = 0;
  }
  char head[160];
  const ssize_t n = ::pread(fd, head, sizeof(head), static_cast<off_t>(line_start));
  if (n <= 0) return 0;
  return SequenceOf(std::string_view(head, static_cast<size_t>(n)));
}

// Opens for appending; also readable when the file allows it, so the tail can be checked.
absl::StatusOr<int> OpenAppend(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0 && errno == EACCES) {
    fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  }
  if (fd < 0) {
    const int err = errno;
    return absl::Status(absl::ErrnoToStatusCode(err), Cat(path, ": ", ErrnoText(err)));
  }
  // A file left by an older run may be readable by others; it holds URLs and headers.
  struct stat st;
  if (::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 077) != 0) {
    ::fchmod(fd, st.st_mode & 0700);
  }
  return fd;
}

}  // namespace

// One output file: the lines of the current batch and where each ends, written at once.
// Owns its descriptor.
struct OutputFile {
  OutputFile() = default;
  OutputFile(OutputFile&& o) noexcept { *this = std::move(o); }
  OutputFile& operator=(OutputFile&& o) noexcept {
    if (this != &o) {
      if (fd >= 0) ::close(fd);
      path = std::move(o.path);
      fd = std::exchange(o.fd, -1);
      pending = std::move(o.pending);
      line_ends = std::move(o.line_ends);
      needs_newline = o.needs_newline;
    }
    return *this;
  }
  ~OutputFile() {
    if (fd >= 0) ::close(fd);
  }

  std::string path;
  int fd = -1;
  std::string pending;
  std::vector<size_t> line_ends;  // offsets in `pending` just past each line's '\n'
  bool needs_newline = false;     // the file ends in a fragment

  bool enabled() const { return fd >= 0; }
  void EndLine() { line_ends.push_back(pending.size()); }
};

struct OpenedFiles {
  OutputFile history;
  OutputFile flows;
  uint64_t last_sequence = 0;
};

absl::StatusOr<OpenedFiles> OpenFiles(const FlowPipelineOptions& options) {
  OpenedFiles files;
  if (!options.history_path.empty()) {
    absl::StatusOr<int> fd = OpenAppend(options.history_path);
    if (!fd.ok()) return fd.status();
    files.history.path = options.history_path;
    files.history.fd = *fd;
    struct stat st;
    char last = '\n';
    if (::fstat(*fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0 &&
        ::pread(*fd, &last, 1, st.st_size - 1) == 1) {
      files.history.needs_newline = last != '\n';
    }
  }
  if (!options.flow_log_path.empty()) {
    absl::StatusOr<int> fd = OpenAppend(options.flow_log_path);
    if (!fd.ok()) return fd.status();
    files.flows.path = options.flow_log_path;
    files.flows.fd = *fd;
    files.last_sequence = LastSequence(*fd, &files.flows.needs_newline);
  }
  return files;
}

class FlowPipeline::Impl {
 public:
  Impl(FlowPipelineOptions options, OpenedFiles files, metrics::Registry& registry,
       tracing::Tracer& tracer, const Clock& clock)
      : options_(std::move(options)),
        tracer_(tracer),
        clock_(clock),
        flow_stats_(registry),
        dropped_family_(registry.AddCounter(
            "oxg_proxy_capture_dropped_total",
            "Captured exchanges or lines the capture pipeline lost: queue_full (the proxy "
            "handed over an exchange while the queue was full), write_error (a history or "
            "flow log line that could not be written).",
            {"reason"})),
        dropped_queue_full_(dropped_family_.WithLabels({"queue_full"})),
        dropped_write_error_(dropped_family_.WithLabels({"write_error"})) {
    options_.queue_capacity = std::max<size_t>(options_.queue_capacity, 1);
    queue_.reserve(options_.queue_capacity);
    batch_.reserve(options_.queue_capacity);
    history_ = std::move(files.history);
    flows_ = std::move(files.flows);
    sequence_ = files.last_sequence;
  }

  ~Impl() { Stop(); }

  void StartThread() {
    thread_ = std::thread([this] { Run(); });
  }

  bool Submit(CapturedExchange&& exchange) {
    const uint64_t bytes = QueuedBytes(exchange);
    bool wake = false;
    {
      std::lock_guard lock(mu_);
      ++submitted_;
      if (stopping_ || queue_.size() >= options_.queue_capacity ||
          queued_bytes_ + bytes > options_.queue_max_bytes) {
        ++dropped_;
        dropped_queue_full_.Inc();
        return false;
      }
      queue_.push_back(std::move(exchange));
      queued_bytes_ += bytes;
      ++accepted_;
      // Asleep on an empty queue: wake it. Lingering for a batch: wake it only once the batch
      // is full. Otherwise it is working and will look at the queue when done.
      wake = (waiting_ == Waiting::kEmpty && queue_.size() == 1) ||
             (waiting_ == Waiting::kLinger && queue_.size() == kLingerBatch);
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
    ++drain_waiters_;
    work_cv_.notify_one();  // no lingering while someone waits
    struct Done {
      uint64_t& n;
      ~Done() { --n; }
    } done{drain_waiters_};
    drained_cv_.wait(lock, [&] { return handled_ >= target; });
  }

  Counts counts() const {
    std::lock_guard lock(mu_);
    Counts c;
    c.submitted = submitted_;
    c.dropped = dropped_;
    c.written_history = written_history_;
    c.written_flows = written_flows_;
    c.write_errors = write_errors_;
    return c;
  }

 private:
  void Run() {
    for (;;) {
      {
        std::unique_lock lock(mu_);
        waiting_ = Waiting::kEmpty;
        work_cv_.wait(lock, [this] { return !queue_.empty() || stopping_; });
        if (queue_.empty()) {  // stopping, and everything is written
          waiting_ = Waiting::kNo;
          return;
        }
        // Under a steady stream of small batches, waking per exchange costs more than the
        // work: linger briefly so one wake-up and one write per file serve many exchanges.
        if (queue_.size() < kLingerBatch) {
          waiting_ = Waiting::kLinger;
          work_cv_.wait_for(lock, kLinger, [this] {
            return stopping_ || drain_waiters_ > 0 || queue_.size() >= kLingerBatch;
          });
        }
        waiting_ = Waiting::kNo;
        queue_.swap(batch_);
        queued_bytes_ = 0;
      }
      for (CapturedExchange& exchange : batch_) {
        Handle(exchange);
        if (history_.pending.size() >= kFlushBytes) Flush(history_, &batch_history_);
        if (flows_.pending.size() >= kFlushBytes) Flush(flows_, &batch_flows_);
      }
      Flush(history_, &batch_history_);
      Flush(flows_, &batch_flows_);
      const uint64_t n = batch_.size();
      batch_.clear();  // keeps the capacity for the next swap
      {
        std::lock_guard lock(mu_);
        handled_ += n;
        written_history_ += batch_history_.written;
        written_flows_ += batch_flows_.written;
        write_errors_ += batch_history_.lost + batch_flows_.lost;
      }
      batch_history_ = {};
      batch_flows_ = {};
      drained_cv_.notify_all();
    }
  }

  // Line counts of one file over one batch.
  struct Tally {
    uint64_t written = 0;
    uint64_t lost = 0;
  };

  void Handle(const CapturedExchange& e) {
    http::Limits limits;
    limits.max_head_bytes = std::max(limits.max_head_bytes, e.request.head.size());
    if (e.response.has_value()) {
      limits.max_head_bytes = std::max(limits.max_head_bytes, e.response->head.size());
    }
    limits.max_headers = 1u << 16;

    http::ParseError error;
    bool parsed = http::ParseRequestHead(e.request.head, limits, &request_, &error) ==
                  http::ParseStatus::kComplete;
    bool has_response = false;
    if (parsed && e.response.has_value()) {
      has_response = true;
      parsed = http::ParseResponseHead(e.response->head, e.method, limits, &response_, &error) ==
               http::ParseStatus::kComplete;
    }
    if (parsed) {
      ToFields(request_.headers, &request_fields_);
      if (has_response) ToFields(response_.headers, &response_fields_);
    } else {
      if (!parse_failure_logged_) {
        parse_failure_logged_ = true;
        log::Warn(kComponent,
                  Cat("cannot re-parse a captured head (flow ", e.flow_id, "): ", error.reason,
                      "; its history line has no headers and no flow is recorded (reported "
                      "once)"));
      }
      has_response = false;
    }

    char trace_hex[32];
    std::string_view trace_id;
    if (e.capture_span.trace_id.IsValid()) {
      e.capture_span.trace_id.WriteHex(trace_hex);
      trace_id = std::string_view(trace_hex, sizeof(trace_hex));
    }

    if (history_.enabled()) {
      AppendHistoryLine(e, parsed, has_response, trace_id);
    }
    if (!parsed || !e.sampled) return;

    PublishPhase(e, FlowType::kRequest, trace_id);
    if (has_response) PublishPhase(e, FlowType::kResponse, trace_id);
  }

  static void ToFields(const std::vector<http::Header>& headers, std::vector<HeaderField>* out) {
    out->clear();
    for (const http::Header& h : headers) out->push_back({h.name, h.value});
  }

  // The head's fields as a JSON object of sanitized values; a repeated name (compared without
  // case) becomes an array under its first spelling.
  void AppendHeaders(JsonWriter& w, const std::vector<HeaderField>& fields) {
    SanitizeHeaderValues(fields, Redactor::Default(), nullptr, &values_);
    w.BeginObject();
    done_.assign(fields.size(), 0);
    for (size_t i = 0; i < fields.size(); ++i) {
      if (done_[i] != 0) continue;
      const std::string_view name = fields[i].name;
      size_t repeats = 0;
      for (size_t j = i + 1; j < fields.size(); ++j) {
        if (done_[j] == 0 && http::EqualsIgnoreCase(fields[j].name, name)) {
          done_[j] = 1;
          ++repeats;
        }
      }
      w.Key(name);
      if (repeats == 0) {
        w.String(values_[i]);
        continue;
      }
      w.BeginArray();
      w.String(values_[i]);
      for (size_t j = i + 1; j < fields.size() && repeats > 0; ++j) {
        if (done_[j] == 1) {
          done_[j] = 2;
          --repeats;
          w.String(values_[j]);
        }
      }
      w.EndArray();
    }
    w.EndObject();
  }

  void AppendHistoryLine(const CapturedExchange& e, bool parsed, bool has_response,
                         std::string_view trace_id) {
    std::string& out = history_.pending;
    const auto when = std::chrono::system_clock::time_point(
        std::chrono::duration_cast<std::chrono::system_clock::duration>(
            std::chrono::nanoseconds(e.request.time_unix_nano)));
    JsonWriter w(out);
    w.BeginObject();
    w.Key("timestamp").String(FormatRfc3339Nanos(when));
    w.Key("flow_id").String(e.flow_id);
    w.Key("client_address").String(e.client_address);
    w.Key("scheme").String(e.scheme);
    w.Key("method").String(e.method);
    {
      std::optional<std::string> url = Redactor::Default().RedactIfNeeded(e.url);
      w.Key("url").String(url ? std::string_view(*url) : std::string_view(e.url));
    }
    w.Key("status").Int(e.status);
    w.Key("duration_ms").Double(e.duration_ms);
    w.Key("request_bytes").Uint(e.request.wire_bytes);
    w.Key("response_bytes").Uint(e.response.has_value() ? e.response->wire_bytes : 0);
    w.Key("request_headers");
    if (parsed) {
      AppendHeaders(w, request_fields_);
    } else {
      w.BeginObject().EndObject();
    }
    w.Key("response_headers");
    if (has_response) {
      AppendHeaders(w, response_fields_);
    } else {
      w.BeginObject().EndObject();
    }
    w.Key("trace_id").String(trace_id);
    w.EndObject();
    out.push_back('\n');
    history_.EndLine();
  }

  void PublishPhase(const CapturedExchange& e, FlowType type, std::string_view trace_id) {
    const bool is_request = type == FlowType::kRequest;
    const CapturedMessage& captured = is_request ? e.request : *e.response;
    HttpMessage message;
    message.headers.swap(is_request ? request_fields_ : response_fields_);  // lent for the call
    if (is_request) {
      message.kind = HttpMessage::Kind::kRequest;
      message.method = request_.method;
      message.target = request_.target;
      message.version = request_.version;
    } else {
      message.kind = HttpMessage::Kind::kResponse;
      message.status = response_.status;
      message.reason = response_.reason;
      message.version = response_.version;
    }
    message.body = captured.body;
    message.original_body_length = captured.body_length;
    const FlowPayloads payloads = BuildFlowPayloads(message, options_.flow, &flow_stats_);
    message.headers.swap(is_request ? request_fields_ : response_fields_);

    const uint64_t sequence = ++sequence_;
    if (flows_.enabled()) {
      FlowRecord record;
      record.id = e.flow_id;
      record.sequence = sequence;
      record.type = type;
      record.timestamp_unix_nano = captured.time_unix_nano;
      record.sanitized = payloads.sanitized;
      if (options_.flow_log_raw) record.raw = payloads.raw;
      record.raw_body_bytes = payloads.raw_body_bytes;
      record.raw_body_truncated = payloads.raw_body_truncated;
      record.trace_id = trace_id;
      AppendFlowLogLine(flows_.pending, record);
      flows_.EndLine();
    }

    // The flow event is published (to the flow log above and to the sink, when one is
    // attached) whether or not a plugin bus listens. Without a capture span (tracing off) no
    // orphan root is started for the publication.
    tracing::Span span;
    if (e.capture_span.IsValid()) {
      span = tracer_.StartSpan("proxy.publish_flow_event", tracing::SpanKind::kInternal,
                               e.capture_span);
      span.SetAttribute("oxg.flow.id", std::string_view(e.flow_id))
          .SetAttribute("oxg.flow.phase", is_request ? "request" : "response");
    }
    if (options_.sink == nullptr) return;
    FlowEvent event;
    event.flow_id = e.flow_id;
    event.scheme = e.scheme;
    event.sequence = sequence;
    event.type = type;
    event.timestamp_unix_nano = captured.time_unix_nano;
    event.sanitized = payloads.sanitized;
    event.raw = payloads.raw;
    event.raw_body_bytes = payloads.raw_body_bytes;
    event.raw_body_truncated = payloads.raw_body_truncated;
    event.context = span.context();
    options_.sink->Publish(event);
  }

  // Writes the file's pending lines with one write and counts them into *tally.
  void Flush(OutputFile& file, Tally* tally) {
    if (file.line_ends.empty()) return;
    std::string_view data = file.pending;
    size_t written = 0;
    int err = 0;
    if (file.needs_newline) {
      // The file ends in a fragment from an earlier crash: start our lines on a line of their
      // own (the fragment stays one bad line for readers to report).
      err = WriteAll(file.fd, "\n");
      if (err == 0) file.needs_newline = false;
    }
    if (err == 0) err = WriteAll(file.fd, data, &written);
    if (err == 0) {
      tally->written += file.line_ends.size();
    } else {
      // Lines wholly written count as written; a line cut short is ended so the next write
      // starts a fresh line.
      const size_t complete = static_cast<size_t>(
          std::upper_bound(file.line_ends.begin(), file.line_ends.end(), written) -
          file.line_ends.begin());
      if (written > 0 && (complete == 0 || file.line_ends[complete - 1] != written)) {
        if (WriteAll(file.fd, "\n") != 0) file.needs_newline = true;
      }
      const uint64_t lost = file.line_ends.size() - complete;
      tally->written += complete;
      tally->lost += lost;
      dropped_write_error_.Inc(lost);
      ReportWriteFailure(file, err, lost);
    }
    file.pending.clear();
    file.line_ends.clear();
    if (file.pending.capacity() > kKeepCapacity) file.pending.shrink_to_fit();
  }

  void ReportWriteFailure(const OutputFile& file, int err, uint64_t lost) {
    const Clock::MonoTime now = clock_.MonoNow();
    unreported_lost_ += lost;
    if (last_report_.has_value() && now - *last_report_ < kReportInterval) return;
    log::Error(kComponent, Cat("cannot write to ", file.path, ": ", ErrnoText(err), " (",
                               unreported_lost_, " lines lost since the last report)"));
    last_report_ = now;
    unreported_lost_ = 0;
  }

  FlowPipelineOptions options_;
  tracing::Tracer& tracer_;
  const Clock& clock_;
  FlowStats flow_stats_;
  metrics::Family<metrics::Counter>& dropped_family_;
  metrics::Counter& dropped_queue_full_;
  metrics::Counter& dropped_write_error_;

  // Shared with the proxy threads.
  mutable std::mutex mu_;
  std::condition_variable work_cv_;
  std::condition_variable drained_cv_;
  std::vector<CapturedExchange> queue_;
  uint64_t queued_bytes_ = 0;
  bool stopping_ = false;
  enum class Waiting { kNo, kEmpty, kLinger };
  Waiting waiting_ = Waiting::kNo;  // what the thread waits for (guarded by mu_)
  uint64_t drain_waiters_ = 0;      // Drain() calls in progress (guarded by mu_)
  uint64_t submitted_ = 0, accepted_ = 0, dropped_ = 0, handled_ = 0;
  uint64_t written_history_ = 0, written_flows_ = 0, write_errors_ = 0;

  std::mutex join_mu_;
  std::thread thread_;

  // The pipeline thread's own state.
  std::vector<CapturedExchange> batch_;
  OutputFile history_;
  OutputFile flows_;
  Tally batch_history_, batch_flows_;
  uint64_t sequence_ = 0;
  http::RequestHead request_;
  http::ResponseHead response_;
  std::vector<HeaderField> request_fields_;
  std::vector<HeaderField> response_fields_;
  std::vector<std::string> values_;  // sanitized header values of the head being written
  std::vector<uint8_t> done_;        // per header of a head: 0 not yet listed, 1 pending, 2 written
  bool parse_failure_logged_ = false;
  std::optional<Clock::MonoTime> last_report_;
  uint64_t unreported_lost_ = 0;
};

absl::StatusOr<std::unique_ptr<FlowPipeline>> FlowPipeline::Start(FlowPipelineOptions options,
                                                                  metrics::Registry& registry,
                                                                  tracing::Tracer& tracer,
                                                                  const Clock& clock) {
  // Files first: a failed start leaves nothing registered, so the caller may try again.
  absl::StatusOr<OpenedFiles> files = OpenFiles(options);
  if (!files.ok()) return files.status();
  auto impl =
      std::make_unique<Impl>(std::move(options), std::move(*files), registry, tracer, clock);
  impl->StartThread();
  return std::unique_ptr<FlowPipeline>(new FlowPipeline(std::move(impl)));
}

FlowPipeline::FlowPipeline(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

FlowPipeline::~FlowPipeline() = default;  // Impl's destructor stops and joins

bool FlowPipeline::Submit(CapturedExchange exchange) { return impl_->Submit(std::move(exchange)); }

void FlowPipeline::Stop() { impl_->Stop(); }

FlowPipeline::Counts FlowPipeline::counts() const { return impl_->counts(); }

void FlowPipeline::Drain() { impl_->Drain(); }

}  // namespace oxg::proxy
