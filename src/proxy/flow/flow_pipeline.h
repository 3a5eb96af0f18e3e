#pragma once
// The capture pipeline behind the proxy: proxy threads hand over completed exchanges (copied
// bytes, nothing borrowed) and return at once; one pipeline thread builds the flow payloads
// (flow_builder.h), writes proxy_history.jsonl and proxy_flows.jsonl, and publishes flow events
// to the FlowSink (the plugin bus subscribes there). A proxy thread never waits for the disk,
// the sink or the builder: when the queue is full the exchange is dropped and counted.
//
// Files (contract §8):
// - History: one line per in-scope completed exchange, sampled or not, keys in contract order:
//   timestamp (RFC 3339 ns, when the request head arrived), flow_id, client_address, scheme,
//   method, url, status (0 when no response came), duration_ms (number), request_bytes,
//   response_bytes (wire bytes of each side including heads), request_headers,
//   response_headers (sanitized, as JSON objects: name as first received -> string value; a
//   repeated field becomes an array of its values in order), trace_id (32 hex or "").
// - Flow log: for sampled exchanges only, one FLOW_REQUEST line then one FLOW_RESPONSE line
//   (when a response came), sequence numbers increasing by one per line across the file,
//   raw_base64 only with flow_log_raw.
// An empty path disables that file. Files are opened O_APPEND|O_CREAT|O_CLOEXEC, mode 0600.
// A failed write is counted (reason "write_error") and reported on stderr at most once per
// 10 s; the line is lost, the daemon goes on.
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "common/clock.h"
#include "proxy/flow/flow_builder.h"
#include "telemetry/metrics/metrics.h"
#include "telemetry/tracing/tracer.h"

namespace oxg::proxy {

// One message as the proxy saw it.
struct CapturedMessage {
  std::string head;              // the raw head bytes as received, through the empty line
  std::string body;              // de-chunked body bytes, at most the capture limit
  uint64_t body_length = 0;      // the whole de-chunked body length seen on the wire
  uint64_t wire_bytes = 0;       // head + body bytes as transmitted (chunk framing included)
  int64_t time_unix_nano = 0;    // when the head was complete
};

// One exchange, owned; moved into the pipeline.
struct CapturedExchange {
  std::string flow_id;         // 26-char ULID
  std::string client_address;  // "ip:port" ("[v6]:port")
  std::string scheme;          // "http" or "https"
  std::string url;             // full URL, e.g. "https://example.com/a?b"
  std::string method;
  bool sampled = false;        // capture as a flow (bodies present), or history only
  CapturedMessage request;
  std::optional<CapturedMessage> response;  // unset when no response head came from upstream
  int status = 0;              // the status the client got (upstream's, or the proxy's 502/504)
  double duration_ms = 0;      // request head to the end of the response
  tracing::SpanContext capture_span;  // proxy.capture_flow, invalid when tracing is off
};

// A flow event handed to the sink. Views are valid during Publish only.
struct FlowEvent {
  std::string_view flow_id;
  std::string_view scheme;  // "http" or "https"
  uint64_t sequence = 0;
  FlowType type = FlowType::kRequest;
  int64_t timestamp_unix_nano = 0;
  std::string_view sanitized;
  std::string_view raw;
  uint64_t raw_body_bytes = 0;
  bool raw_body_truncated = false;
  tracing::SpanContext context;  // proxy.publish_flow_event (parent for plugin_bus spans)
};

// Receives flow events on the pipeline thread. Publish must not block (enqueue and return).
class FlowSink {
 public:
  virtual ~FlowSink() = default;
  virtual void Publish(const FlowEvent& event) = 0;
};

struct FlowPipelineOptions {
  std::string history_path;   // empty: no history file
  std::string flow_log_path;  // empty: no flow log
  bool flow_log_raw = false;
  FlowOptions flow;            // body limit for the payloads
  size_t queue_capacity = 8192;           // exchanges waiting
  size_t queue_max_bytes = 256u << 20;    // bytes waiting (heads + bodies)
  FlowSink* sink = nullptr;    // may be null; must outlive the pipeline
};

// Contract §4 additions documented in docs/observability.md:
// oxg_proxy_capture_dropped_total{reason="queue_full"|"write_error"}.
class FlowPipeline {
 public:
  // Opens the files (error naming the path when one cannot be opened) and starts the thread.
  static absl::StatusOr<std::unique_ptr<FlowPipeline>> Start(FlowPipelineOptions options,
                                                             metrics::Registry& registry,
                                                             tracing::Tracer& tracer,
                                                             const Clock& clock);
  ~FlowPipeline();  // Stop()s
  FlowPipeline(const FlowPipeline&) = delete;
  FlowPipeline& operator=(const FlowPipeline&) = delete;

  // Thread-safe, never blocks on I/O. False (and counted) when the queue is full.
  bool Submit(CapturedExchange exchange);
  // Writes everything queued, then stops the thread. Idempotent.
  void Stop();

  struct Counts {
    uint64_t submitted = 0, dropped = 0, written_history = 0, written_flows = 0,
             write_errors = 0;
  };
  Counts counts() const;
  // Blocks until every exchange submitted so far has been handled (tests, shutdown).
  void Drain();

  class Impl;

 private:
  explicit FlowPipeline(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace oxg::proxy
