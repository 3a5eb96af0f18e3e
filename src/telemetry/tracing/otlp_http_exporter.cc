#include "telemetry/tracing/otlp_http_exporter.h"

#include <curl/curl.h>
#include <zlib.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <mutex>
#include <random>

#include "common/build_info.h"
#include "common/log.h"
#include "common/redact.h"
#include "common/strings.h"

namespace oxg::tracing {
namespace {

using std::chrono::nanoseconds;

constexpr std::string_view kLogComponent = "tracing";
constexpr auto kLogInterval = std::chrono::seconds(30);
// Enough of an error response to say why the collector refused a batch.
constexpr size_t kMaxResponseKept = 1024;
constexpr size_t kMaxResponseLogged = 200;

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

bool StartsWithIgnoreCase(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && EqualsIgnoreCase(s.substr(0, prefix.size()), prefix);
}

// RFC 9110 token characters (header field names).
bool IsTokenChar(char c) {
  if (std::isalnum(static_cast<unsigned char>(c))) return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

// gzip (RFC 1952) of `in`; false on a zlib failure.
bool Gzip(std::string_view in, std::string* out) {
  z_stream zs{};
  if (deflateInit2(&zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) !=
      Z_OK) {
    return false;
  }
  out->resize(deflateBound(&zs, static_cast<uLong>(in.size())));
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  zs.avail_in = static_cast<uInt>(in.size());
  zs.next_out = reinterpret_cast<Bytef*>(out->data());
  zs.avail_out = static_cast<uInt>(out->size());
  const int rc = deflate(&zs, Z_FINISH);
  out->resize(zs.total_out);
  deflateEnd(&zs);
  return rc == Z_STREAM_END;
}

// A log-safe excerpt of a response body: printable ASCII only, bounded.
std::string Excerpt(std::string_view body) {
  std::string out;
  for (char c : body) {
    if (out.size() >= kMaxResponseLogged) {
      out += "...";
      break;
    }
    const auto u = static_cast<unsigned char>(c);
    out += (u >= 0x20 && u < 0x7f) ? c : (c == '\n' || c == '\r' || c == '\t') ? ' ' : '.';
  }
  return std::string(TrimAscii(out));
}

// ---- HTTP-date (RFC 9110 §5.6.7) ----------------------------------------------------------

constexpr std::string_view kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                        "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
constexpr std::string_view kDays[] = {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"};
constexpr std::string_view kLongDays[] = {"Monday", "Tuesday",  "Wednesday", "Thursday",
                                          "Friday", "Saturday", "Sunday"};

bool Digits(std::string_view s, int* out) {
  if (s.empty()) return false;
  int v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
  }
  *out = v;
  return true;
}

bool Month(std::string_view s, int* out) {
  for (int i = 0; i < 12; ++i) {
    if (s == kMonths[i]) {
      *out = i + 1;
      return true;
    }
  }
  return false;
}

template <size_t N>
bool OneOf(std::string_view s, const std::string_view (&names)[N]) {
  return std::find(std::begin(names), std::end(names), s) != std::end(names);
}

// "hh:mm:ss"
bool TimeOfDay(std::string_view s, int* h, int* m, int* sec) {
  return s.size() == 8 && s[2] == ':' && s[5] == ':' && Digits(s.substr(0, 2), h) &&
         Digits(s.substr(3, 2), m) && Digits(s.substr(6, 2), sec) && *h <= 23 && *m <= 59 &&
         *sec <= 60;
}

std::optional<Clock::WallTime> MakeTime(int y, int mon, int d, int h, int m, int s) {
  using namespace std::chrono;
  const year_month_day ymd{year{y}, month{static_cast<unsigned>(mon)},
                           day{static_cast<unsigned>(d)}};
  if (!ymd.ok()) return std::nullopt;
  return Clock::WallTime(sys_days(ymd).time_since_epoch() + hours(h) + minutes(m) + seconds(s));
}

std::optional<Clock::WallTime> ParseHttpDate(std::string_view v) {
  int y = 0, mon = 0, d = 0, h = 0, m = 0, s = 0;
  // IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT"
  if (v.size() == 29 && v.substr(3, 2) == ", " && v[7] == ' ' && v[11] == ' ' && v[16] == ' ' &&
      v.substr(25) == " GMT" && OneOf(v.substr(0, 3), kDays) && Digits(v.substr(5, 2), &d) &&
      Month(v.substr(8, 3), &mon) && Digits(v.substr(12, 4), &y) &&
      TimeOfDay(v.substr(17, 8), &h, &m, &s)) {
    return MakeTime(y, mon, d, h, m, s);
  }
  // Obsolete RFC 850: "Sunday, 06-Nov-94 08:49:37 GMT"
  if (const size_t comma = v.find(", ");
      comma != std::string_view::npos && OneOf(v.substr(0, comma), kLongDays)) {
    const std::string_view rest = v.substr(comma + 2);  // "06-Nov-94 08:49:37 GMT"
    if (rest.size() == 22 && rest[2] == '-' && rest[6] == '-' && rest[9] == ' ' &&
        rest.substr(18) == " GMT" && Digits(rest.substr(0, 2), &d) &&
        Month(rest.substr(3, 3), &mon) && Digits(rest.substr(7, 2), &y) &&
        TimeOfDay(rest.substr(10, 8), &h, &m, &s)) {
      // RFC 9110: a two-digit year more than 50 years ahead is in the past century; for
      // Retry-After, which names the near future, 20yy is always right except for 1970-1999.
      y += y >= 70 ? 1900 : 2000;
      return MakeTime(y, mon, d, h, m, s);
    }
    return std::nullopt;
  }
  // asctime: "Sun Nov  6 08:49:37 1994"
  if (v.size() == 24 && v[3] == ' ' && v[7] == ' ' && v[10] == ' ' && v[19] == ' ' &&
      OneOf(v.substr(0, 3), kDays) && Month(v.substr(4, 3), &mon) &&
      Digits(v[8] == ' ' ? v.substr(9, 1) : v.substr(8, 2), &d) &&
      TimeOfDay(v.substr(11, 8), &h, &m, &s) && Digits(v.substr(20, 4), &y)) {
    return MakeTime(y, mon, d, h, m, s);
  }
  return std::nullopt;
}

const char* TransportErrorText(TransportError e) {
  switch (e) {
    case TransportError::kNone:
      return "ok";
    case TransportError::kConnectFailed:
      return "connection failed";
    case TransportError::kTimedOut:
      return "timed out";
    case TransportError::kConnectionLost:
      return "connection lost";
    case TransportError::kAborted:
      return "aborted by shutdown";
    case TransportError::kOther:
      return "transfer failed";
  }
  return "?";
}

std::string Describe(const AttemptResult& r) {
  std::string out = r.error == TransportError::kNone ? Cat("HTTP ", r.http_status)
                                                     : std::string(TransportErrorText(r.error));
  if (!r.detail.empty()) out += Cat(" (", r.detail, ")");
  return out;
}

std::once_flag curl_init_once;

}  // namespace

// ---- public helpers -----------------------------------------------------------------------

const char* OtlpProtocolName(OtlpProtocol protocol) {
  return protocol == OtlpProtocol::kHttpJson ? "http/json" : "http/protobuf";
}

bool ParseOtlpProtocol(std::string_view name, OtlpProtocol* out) {
  if (name == "http/protobuf") {
    *out = OtlpProtocol::kHttpProtobuf;
  } else if (name == "http/json") {
    *out = OtlpProtocol::kHttpJson;
  } else {
    return false;
  }
  return true;
}

TransportError ClassifyCurlError(int curl_code) {
  switch (static_cast<CURLcode>(curl_code)) {
    case CURLE_OK:
      return TransportError::kNone;
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
      return TransportError::kConnectFailed;
    case CURLE_OPERATION_TIMEDOUT:
      return TransportError::kTimedOut;
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
      return TransportError::kConnectionLost;
    case CURLE_ABORTED_BY_CALLBACK:
      return TransportError::kAborted;
    default:
      return TransportError::kOther;
  }
}

std::optional<nanoseconds> ParseRetryAfter(std::string_view value, Clock::WallTime now) {
  value = TrimAscii(value);
  if (value.empty()) return std::nullopt;
  if (std::all_of(value.begin(), value.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    // delay-seconds; anything beyond a day is as good as "not within this export".
    constexpr uint64_t kCap = 86400;
    uint64_t seconds = 0;
    for (char c : value) {
      seconds = std::min<uint64_t>(kCap, seconds * 10 + static_cast<uint64_t>(c - '0'));
    }
    return std::chrono::seconds(seconds);
  }
  const std::optional<Clock::WallTime> date = ParseHttpDate(value);
  if (!date) return std::nullopt;
  if (*date <= now) return nanoseconds(0);
  return std::chrono::duration_cast<nanoseconds>(*date - now);
}

RetryDecision DecideRetry(const AttemptResult& result, int attempts, nanoseconds remaining,
                          Clock::WallTime now, const BackoffPolicy& policy, double random01) {
  RetryDecision d;
  bool retryable = false;
  switch (result.error) {
    case TransportError::kNone:
      if (result.http_status >= 200 && result.http_status <= 299) {
        d.action = RetryDecision::Action::kSuccess;
        return d;
      }
      retryable = result.http_status == 429 || result.http_status == 502 ||
                  result.http_status == 503 || result.http_status == 504;
      break;
    case TransportError::kConnectFailed:
    case TransportError::kTimedOut:
    case TransportError::kConnectionLost:
      retryable = true;
      break;
    case TransportError::kAborted:
    case TransportError::kOther:
      break;
  }
  if (!retryable) return d;  // kGiveUp, not retryable

  std::optional<nanoseconds> delay;
  if (result.error == TransportError::kNone && !result.retry_after.empty()) {
    delay = ParseRetryAfter(result.retry_after, now);
    if (delay) delay = std::max(*delay, kMinRetryDelay);
  }
  if (!delay) {
    const double initial = std::chrono::duration<double>(policy.initial).count();
    const double cap = std::chrono::duration<double>(policy.max).count();
    const double base =
        std::min(cap, initial * std::pow(std::max(1.0, policy.multiplier),
                                         static_cast<double>(std::max(attempts, 1) - 1)));
    const double r = std::clamp(std::isfinite(random01) ? random01 : 0.0, 0.0, 1.0);
    delay = std::chrono::duration_cast<nanoseconds>(
        std::chrono::duration<double>(base * (0.5 + 0.5 * r)));
  }
  d.retryable = true;
  d.delay = *delay;
  if (*delay >= remaining) return d;  // kGiveUp: the wait would outlast the export budget
  d.action = RetryDecision::Action::kRetry;
  return d;
}

// ---- the exporter -------------------------------------------------------------------------

struct OtlpHttpExporter::Curl {
  CURL* easy = nullptr;
  CURLM* multi = nullptr;  // owns the connection cache that keeps the collector connection
  curl_slist* headers = nullptr;
  std::string response;     // first kMaxResponseKept bytes of the body
  std::string retry_after;  // of the final response (interim 1xx responses reset it)
  char error[CURL_ERROR_SIZE] = {};
  const std::atomic<bool>* shutdown = nullptr;

  ~Curl() {
    if (easy != nullptr) curl_easy_cleanup(easy);
    if (multi != nullptr) curl_multi_cleanup(multi);
    curl_slist_free_all(headers);
  }

  static size_t OnBody(char* data, size_t size, size_t n, void* self) {
    auto* c = static_cast<Curl*>(self);
    const size_t len = size * n;
    const size_t keep =
        std::min(len, kMaxResponseKept - std::min(kMaxResponseKept, c->response.size()));
    c->response.append(data, keep);
    return len;
  }

  static size_t OnHeader(char* data, size_t size, size_t n, void* self) {
    auto* c = static_cast<Curl*>(self);
    const std::string_view line(data, size * n);
    if (StartsWithIgnoreCase(line, "HTTP/")) {
      c->retry_after.clear();
    } else if (StartsWithIgnoreCase(line, "retry-after:")) {
      c->retry_after = std::string(TrimAscii(line.substr(12)));
    }
    return size * n;
  }

  // Backs up curl_multi_wakeup: curl also polls this during long transfers.
  static int OnProgress(void* self, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
    return static_cast<Curl*>(self)->shutdown->load() ? 1 : 0;
  }
};

absl::StatusOr<std::unique_ptr<OtlpHttpExporter>> OtlpHttpExporter::Create(
    OtlpHttpExporterOptions options, const Clock& clock) {
  std::call_once(curl_init_once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  const std::string shown = Redactor::Default().Redact(options.endpoint);

  std::unique_ptr<CURLU, decltype(&curl_url_cleanup)> url(curl_url(), &curl_url_cleanup);
  if (url == nullptr) return absl::ResourceExhaustedError("out of memory");
  if (curl_url_set(url.get(), CURLUPART_URL, options.endpoint.c_str(), 0) != CURLUE_OK) {
    return absl::InvalidArgumentError(Cat("trace endpoint is not a valid URL: ", shown));
  }
  char* scheme = nullptr;
  char* host = nullptr;
  curl_url_get(url.get(), CURLUPART_SCHEME, &scheme, 0);
  curl_url_get(url.get(), CURLUPART_HOST, &host, 0);
  const std::string scheme_s = scheme != nullptr ? scheme : "";
  const bool has_host = host != nullptr && host[0] != '\0';
  curl_free(scheme);
  curl_free(host);
  if (scheme_s != "http" && scheme_s != "https") {
    return absl::InvalidArgumentError(
        Cat("trace endpoint must be an http:// or https:// URL: ", shown));
  }
  if (!has_host) return absl::InvalidArgumentError(Cat("trace endpoint has no host: ", shown));

  for (const auto& [name, value] : options.headers) {
    if (name.empty() || !std::all_of(name.begin(), name.end(), IsTokenChar)) {
      return absl::InvalidArgumentError(
          Cat("trace header name is not a valid HTTP token: \"", Excerpt(name), "\""));
    }
    for (std::string_view managed : {"content-type", "content-encoding", "content-length",
                                     "transfer-encoding", "host", "expect", "connection"}) {
      if (EqualsIgnoreCase(name, managed)) {
        return absl::InvalidArgumentError(
            Cat("trace header ", name, " is set by the exporter and cannot be overridden"));
      }
    }
    // The value is not echoed: it may be an API key.
    if (value.find_first_of(std::string_view("\r\n\0", 3)) != std::string::npos) {
      return absl::InvalidArgumentError(
          Cat("trace header ", name, " has a value with a line break or NUL"));
    }
  }
  if (options.timeout <= nanoseconds(0)) {
    return absl::InvalidArgumentError("trace export timeout must be positive");
  }

  std::unique_ptr<OtlpHttpExporter> exporter(new OtlpHttpExporter(std::move(options), clock));
  if (exporter->curl_ == nullptr) return absl::InternalError("cannot initialise libcurl");
  return exporter;
}

OtlpHttpExporter::OtlpHttpExporter(OtlpHttpExporterOptions options, const Clock& clock)
    : options_(std::move(options)),
      clock_(clock),
      redacted_endpoint_(Redactor::Default().Redact(options_.endpoint)),
      random_(options_.random) {
  if (!random_) {
    random_ = [engine = std::mt19937_64(std::random_device{}()),
               dist = std::uniform_real_distribution<double>(0.0, 1.0)]() mutable {
      return dist(engine);
    };
  }
  if (options_.stats != nullptr) {
    const char* protocol = OtlpProtocolName(options_.protocol);
    success_duration_ = &options_.stats->export_duration.WithLabels({protocol, "success"});
    failure_duration_ = &options_.stats->export_duration.WithLabels({protocol, "failure"});
  }

  auto c = std::make_unique<Curl>();
  c->shutdown = &shutdown_;
  c->easy = curl_easy_init();
  c->multi = curl_multi_init();
  if (c->easy == nullptr || c->multi == nullptr) return;  // Create reports it

  c->headers = curl_slist_append(c->headers, options_.protocol == OtlpProtocol::kHttpJson
                                                 ? "Content-Type: application/json"
                                                 : "Content-Type: application/x-protobuf");
  if (options_.gzip) c->headers = curl_slist_append(c->headers, "Content-Encoding: gzip");
  // No "Expect: 100-continue" round trip before large batches.
  c->headers = curl_slist_append(c->headers, "Expect:");
  for (const auto& [name, value] : options_.headers) {
    // curl sends "Name;" as a header with an empty value.
    const std::string line = value.empty() ? Cat(name, ";") : Cat(name, ": ", value);
    c->headers = curl_slist_append(c->headers, line.c_str());
  }

  CURL* e = c->easy;
  static const std::string user_agent = Cat("0xgen/", kVersion);
  curl_easy_setopt(e, CURLOPT_URL, options_.endpoint.c_str());
  curl_easy_setopt(e, CURLOPT_POST, 1L);
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(e, CURLOPT_USERAGENT, user_agent.c_str());
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, c->headers);
  curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, c->error);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, &Curl::OnBody);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, c.get());
  curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, &Curl::OnHeader);
  curl_easy_setopt(e, CURLOPT_HEADERDATA, c.get());
  curl_easy_setopt(e, CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt(e, CURLOPT_XFERINFOFUNCTION, &Curl::OnProgress);
  curl_easy_setopt(e, CURLOPT_XFERINFODATA, c.get());
  if (options_.insecure_skip_verify) {
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
  }
  curl_ = std::move(c);
}

OtlpHttpExporter::~OtlpHttpExporter() { Shutdown(); }

void OtlpHttpExporter::Shutdown() {
  shutdown_.store(true);
  {
    std::lock_guard<std::mutex> lock(wake_mu_);
    if (curl_ != nullptr && curl_->multi != nullptr) curl_multi_wakeup(curl_->multi);
  }
  wake_cv_.notify_all();
  // Wait for an in-flight Export to notice, then release the connection.
  std::lock_guard<std::mutex> export_lock(export_mu_);
  std::unique_ptr<Curl> released;
  {
    std::lock_guard<std::mutex> lock(wake_mu_);
    released = std::move(curl_);
  }
}

AttemptResult OtlpHttpExporter::Attempt(const std::string& body, nanoseconds remaining) {
  using std::chrono::milliseconds;
  AttemptResult r;
  Curl& c = *curl_;
  const auto ms = [](nanoseconds d) {
    return static_cast<long>(std::max<int64_t>(1, std::chrono::ceil<milliseconds>(d).count()));
  };
  curl_easy_setopt(c.easy, CURLOPT_POSTFIELDS, body.data());
  curl_easy_setopt(c.easy, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
  curl_easy_setopt(c.easy, CURLOPT_TIMEOUT_MS, ms(remaining));
  curl_easy_setopt(c.easy, CURLOPT_CONNECTTIMEOUT_MS,
                   ms(std::min(remaining, options_.connect_timeout)));
  c.response.clear();
  c.retry_after.clear();
  c.error[0] = '\0';

  CURLcode code = CURLE_OK;
  if (curl_multi_add_handle(c.multi, c.easy) != CURLM_OK) {
    r.error = TransportError::kOther;
    r.detail = "curl_multi_add_handle failed";
    return r;
  }
  bool done = false;
  while (!done) {
    int running = 0;
    if (curl_multi_perform(c.multi, &running) != CURLM_OK) {
      code = CURLE_FAILED_INIT;
      break;
    }
    int queued = 0;
    while (CURLMsg* msg = curl_multi_info_read(c.multi, &queued)) {
      if (msg->msg == CURLMSG_DONE) {
        code = msg->data.result;
        done = true;
      }
    }
    if (done) break;
    if (shutdown_.load()) {
      code = CURLE_ABORTED_BY_CALLBACK;
      break;
    }
    // Returns on socket activity, curl's own timers, or curl_multi_wakeup from Shutdown.
    curl_multi_poll(c.multi, nullptr, 0, 1000, nullptr);
  }
  curl_multi_remove_handle(c.multi, c.easy);

  r.error = ClassifyCurlError(code);
  if (r.error == TransportError::kNone) {
    curl_easy_getinfo(c.easy, CURLINFO_RESPONSE_CODE, &r.http_status);
    r.retry_after = c.retry_after;
    if (r.http_status < 200 || r.http_status > 299) r.detail = Excerpt(c.response);
  } else {
    r.detail = c.error[0] != '\0' ? std::string(c.error) : curl_easy_strerror(code);
  }
  return r;
}

bool OtlpHttpExporter::Wait(nanoseconds d) {
  if (options_.wait) return options_.wait(d) && !shutdown_.load();
  std::unique_lock<std::mutex> lock(wake_mu_);
  return !wake_cv_.wait_for(lock, d, [this] { return shutdown_.load(); });
}

void OtlpHttpExporter::Record(bool success, Clock::MonoTime start) {
  metrics::Histogram* h = success ? success_duration_ : failure_duration_;
  if (h != nullptr) h->Observe(std::chrono::duration<double>(clock_.MonoNow() - start).count());
}

void OtlpHttpExporter::ReportFailure(size_t spans, const AttemptResult& last, bool deadline) {
  ++consecutive_failures_;
  const Clock::MonoTime now = clock_.MonoNow();
  if (logged_any_ && now - last_log_ < kLogInterval) {
    ++suppressed_;
    return;
  }
  std::string message =
      Cat("OTLP export of ", spans, " spans to ", redacted_endpoint_, " failed after ",
          last_attempts_, last_attempts_ == 1 ? " attempt: " : " attempts: ", Describe(last));
  if (deadline) message += "; export timeout reached";
  if (suppressed_ > 0) {
    message += Cat("; ", suppressed_, " more failed exports since the last report");
  }
  log::Warn(kLogComponent, message);
  logged_any_ = true;
  last_log_ = now;
  suppressed_ = 0;
}

void OtlpHttpExporter::ReportSuccess() {
  if (consecutive_failures_ == 0) return;
  const uint64_t failures = consecutive_failures_;
  consecutive_failures_ = 0;
  const Clock::MonoTime now = clock_.MonoNow();
  if (logged_any_ && now - last_log_ < kLogInterval) return;  // the next report says it all
  std::string message =
      Cat("OTLP export to ", redacted_endpoint_, " recovered after ", failures, " failed exports");
  log::Info(kLogComponent, message);
  logged_any_ = true;
  last_log_ = now;
  suppressed_ = 0;
}

ExportResult OtlpHttpExporter::Export(std::span<const SpanData> batch) {
  std::lock_guard<std::mutex> lock(export_mu_);
  const Clock::MonoTime start = clock_.MonoNow();
  last_attempts_ = 0;
  if (batch.empty()) return ExportResult::kSuccess;
  if (shutdown_.load() || curl_ == nullptr) {
    Record(false, start);
    return ExportResult::kFailure;
  }

  std::string body = options_.protocol == OtlpProtocol::kHttpJson
                         ? EncodeOtlpJson(batch, options_.resource, options_.scope)
                         : EncodeOtlpProtobuf(batch, options_.resource, options_.scope);
  if (options_.gzip) {
    std::string compressed;
    if (!Gzip(body, &compressed)) {
      AttemptResult r;
      r.error = TransportError::kOther;
      r.detail = "gzip failed";
      ReportFailure(batch.size(), r, false);
      Record(false, start);
      return ExportResult::kFailure;
    }
    body = std::move(compressed);
  }

  const Clock::MonoTime deadline = start + options_.timeout;
  AttemptResult result;
  bool deadline_reached = false;
  for (int attempt = 1;; ++attempt) {
    const nanoseconds remaining = deadline - clock_.MonoNow();
    if (remaining <= nanoseconds(0)) {
      deadline_reached = true;
      break;
    }
    result = Attempt(body, remaining);
    last_attempts_ = attempt;
    if (shutdown_.load()) break;
    const RetryDecision decision = DecideRetry(result, attempt, deadline - clock_.MonoNow(),
                                               clock_.Now(), options_.backoff, random_());
    if (decision.action == RetryDecision::Action::kSuccess) {
      ReportSuccess();
      Record(true, start);
      return ExportResult::kSuccess;
    }
    if (decision.action == RetryDecision::Action::kGiveUp) {
      deadline_reached = decision.retryable;
      break;
    }
    if (log::Enabled(log::Level::kDebug)) {
      log::Debug(kLogComponent,
                 Cat("OTLP export attempt ", attempt, ": ", Describe(result), "; retrying in ",
                     std::chrono::duration<double>(decision.delay).count(), " s"));
    }
    if (!Wait(decision.delay)) break;
  }
  if (!shutdown_.load()) ReportFailure(batch.size(), result, deadline_reached);
  Record(false, start);
  return ExportResult::kFailure;
}

}  // namespace oxg::tracing
