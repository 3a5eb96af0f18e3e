#include "telemetry/tracing/tracer.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "telemetry/audit/audit.h"
#include "telemetry/metrics/metrics.h"

namespace oxg::tracing {
namespace {

using std::chrono::milliseconds;

// Collects ended spans synchronously.
class CollectingProcessor final : public SpanProcessor {
 public:
  explicit CollectingProcessor(std::vector<SpanData>* out) : out_(out) {}
  void OnEnd(SpanData&& span) override { out_->push_back(std::move(span)); }
  void Shutdown(milliseconds) override { ++shutdowns; }
  int shutdowns = 0;

 private:
  std::vector<SpanData>* out_;
};

class TracerTest : public ::testing::Test {
 protected:
  Tracer& MakeTracer(double ratio = 1.0) {
    tracer_ = std::make_unique<Tracer>(TracerOptions{ratio}, clock_);
    tracer_->AddProcessor(std::make_unique<CollectingProcessor>(&spans_));
    return *tracer_;
  }
  const Attribute* Find(const SpanData& s, std::string_view key) {
    for (const Attribute& a : s.attributes) {
      if (a.key == key) return &a;
    }
    return nullptr;
  }

  SimulatedClock clock_;
  std::vector<SpanData> spans_;
  std::unique_ptr<Tracer> tracer_;
};

TEST_F(TracerTest, TracerWithoutProcessorsRecordsNothing) {
  Tracer tracer;
  Span s = tracer.StartSpan("x");
  EXPECT_FALSE(s.recording());
  EXPECT_FALSE(s.context().IsValid());
  EXPECT_FALSE(Tracer::Noop().StartSpan("y").recording());
}

TEST_F(TracerTest, RecordsNameKindTimesAttributesEventsStatus) {
  Tracer& tracer = MakeTracer();
  {
    Span s = tracer.StartSpan("proxy.capture_flow", SpanKind::kServer);
    ASSERT_TRUE(s.recording());
    EXPECT_TRUE(s.context().sampled());
    clock_.Advance(milliseconds(3));
    s.SetAttribute("http.request.method", "GET")
        .SetAttribute("http.response.status_code", 200)
        .SetAttribute("oxg.flow.sampled", true)
        .SetAttribute("ratio", 0.5)
        .SetAttribute("http.request.method", "POST");  // replaces, not duplicates
    s.AddEvent("headers_done", {{"n", int64_t{3}}});
    s.SetStatus(StatusCode::kError, "upstream refused");
    clock_.Advance(milliseconds(2));
  }
  ASSERT_EQ(spans_.size(), 1u);
  const SpanData& d = spans_[0];
  EXPECT_EQ(d.name, "proxy.capture_flow");
  EXPECT_EQ(d.kind, SpanKind::kServer);
  EXPECT_EQ(d.end_unix_nano - d.start_unix_nano, 5'000'000);
  EXPECT_EQ(d.start_unix_nano, 1'700'000'000'000'000'000);
  EXPECT_FALSE(d.parent_span_id.IsValid());
  ASSERT_EQ(d.attributes.size(), 4u);
  EXPECT_EQ(std::get<std::string>(Find(d, "http.request.method")->value), "POST");
  EXPECT_EQ(std::get<int64_t>(Find(d, "http.response.status_code")->value), 200);
  EXPECT_EQ(std::get<bool>(Find(d, "oxg.flow.sampled")->value), true);
  EXPECT_EQ(std::get<double>(Find(d, "ratio")->value), 0.5);
  ASSERT_EQ(d.events.size(), 1u);
  EXPECT_EQ(d.events[0].name, "headers_done");
  EXPECT_EQ(d.events[0].time_unix_nano, d.start_unix_nano + 3'000'000);
  EXPECT_EQ(d.status, StatusCode::kError);
  EXPECT_EQ(d.status_message, "upstream refused");
  EXPECT_NE(d.thread_id, 0u);
}

TEST_F(TracerTest, StatusOkIsFinal) {
  Tracer& tracer = MakeTracer();
  {
    Span s = tracer.StartSpan("a");
    s.SetStatus(StatusCode::kOk, "ignored description");
    s.SetStatus(StatusCode::kError, "too late");
  }
  EXPECT_EQ(spans_[0].status, StatusCode::kOk);
  EXPECT_EQ(spans_[0].status_message, "");
}

TEST_F(TracerTest, ActiveSpanBecomesParent) {
  Tracer& tracer = MakeTracer();
  {
    Span parent = tracer.StartSpan("parent");
    ScopedActivation active(parent);
    EXPECT_EQ(CurrentContext(), &parent.context());
    Span child = tracer.StartSpan("child");
    Span root = tracer.StartSpan("root", SpanKind::kInternal, Parent::kRoot);
    EXPECT_EQ(child.context().trace_id, parent.context().trace_id);
    EXPECT_NE(child.context().span_id, parent.context().span_id);
    EXPECT_NE(root.context().trace_id, parent.context().trace_id);
  }
  EXPECT_EQ(CurrentContext(), nullptr);
  ASSERT_EQ(spans_.size(), 3u);  // root, child, parent: in end order
  EXPECT_EQ(spans_[1].name, "child");
  EXPECT_EQ(spans_[1].parent_span_id, spans_[2].span_id);
  EXPECT_FALSE(spans_[0].parent_span_id.IsValid());
}

TEST_F(TracerTest, RemoteParentFromTraceparent) {
  Tracer& tracer = MakeTracer(0.0001);  // the remote decision wins over the ratio
  SpanContext remote;
  ASSERT_TRUE(ParseTraceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", &remote));
  ASSERT_TRUE(ParseTracestate("congo=t61rcWkgMzE", &remote.trace_state));
  { Span s = tracer.StartSpan("server", SpanKind::kServer, remote); }
  ASSERT_EQ(spans_.size(), 1u);
  EXPECT_EQ(spans_[0].trace_id.ToHex(), "0af7651916cd43dd8448eb211c80319c");
  EXPECT_EQ(spans_[0].parent_span_id.ToHex(), "b7ad6b7169203331");
  EXPECT_EQ(spans_[0].trace_state, "congo=t61rcWkgMzE");
}

TEST_F(TracerTest, UnsampledParentPropagatesWithoutRecording) {
  Tracer& tracer = MakeTracer(1.0);
  SpanContext remote;
  ASSERT_TRUE(ParseTraceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00", &remote));
  ASSERT_TRUE(ParseTracestate("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7", &remote.trace_state));
  Span s = tracer.StartSpan("server", SpanKind::kServer, remote);
  EXPECT_FALSE(s.recording());
  EXPECT_EQ(s.context().trace_state, "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7");
  EXPECT_EQ(FormatTraceparent(s.context()),
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00");
  s.SetAttribute("k", "v").AddEvent("e").SetStatus(StatusCode::kError, "x");  // harmless no-ops
  s.End();
  EXPECT_TRUE(spans_.empty());
}

TEST_F(TracerTest, UnsampledRootStillHasIdsForPropagation) {
  Tracer& tracer = MakeTracer(1e-12);  // practically never samples
  Span s = tracer.StartSpan("root");
  EXPECT_FALSE(s.recording());
  EXPECT_TRUE(s.context().IsValid());
  EXPECT_FALSE(s.context().sampled());
}

TEST_F(TracerTest, MovedSpanEndsOnce) {
  Tracer& tracer = MakeTracer();
  {
    Span a = tracer.StartSpan("a");
    Span b = std::move(a);
    EXPECT_FALSE(a.recording());  // NOLINT(bugprone-use-after-move): checking the moved-from state
    b.End();
    b.End();
  }
  EXPECT_EQ(spans_.size(), 1u);
}

TEST_F(TracerTest, ShutdownStopsRecording) {
  Tracer& tracer = MakeTracer();
  Span open = tracer.StartSpan("open");
  tracer.Shutdown(milliseconds(100));
  open.End();
  EXPECT_FALSE(tracer.StartSpan("late").recording());
  EXPECT_TRUE(spans_.empty());
}

TEST_F(TracerTest, ExemplarsAndAuditCarryTheActiveSampledSpan) {
  Tracer& tracer = MakeTracer();
  InstallContextHooks();
  metrics::Registry registry(clock_);
  metrics::Histogram& h =
      registry.AddHistogram("t_lat_seconds", "x", {}, {1.0}, /*exemplars=*/true).WithLabels({});
  audit::AuditStats stats(registry);
  char path[] = "/tmp/oxg_tracer_audit_XXXXXX";
  const int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  close(fd);
  auto log = audit::AuditLog::Open(path, stats, clock_);
  ASSERT_TRUE(log.ok());
  std::string trace_hex, span_hex;
  {
    Span s = tracer.StartSpan("op");
    ScopedActivation active(s);
    trace_hex = s.context().trace_id.ToHex();
    span_hex = s.context().span_id.ToHex();
    h.Observe(0.5);
    (*log)->Write(audit::AuditEvent{"test", "", audit::EventType::kRpcCall});
  }
  (*log)->Write(audit::AuditEvent{"test", "", audit::EventType::kRpcCall});  // no span now
  const std::string om = registry.Scrape({metrics::Format::kOpenMetrics100});
  EXPECT_NE(om.find("trace_id=\"" + trace_hex + "\",span_id=\"" + span_hex + "\""),
            std::string::npos)
      << om;
  std::ifstream in(path);
  std::string first, second;
  std::getline(in, first);
  std::getline(in, second);
  EXPECT_NE(first.find("\"trace_id\":\"" + trace_hex + "\",\"span_id\":\"" + span_hex + "\""),
            std::string::npos)
      << first;
  EXPECT_EQ(second.find("trace_id"), std::string::npos) << second;
  unlink(path);
  metrics::SetActiveSpanProvider(nullptr);
  audit::SetAuditSpanProvider(nullptr);
}

}  // namespace
}  // namespace oxg::tracing
