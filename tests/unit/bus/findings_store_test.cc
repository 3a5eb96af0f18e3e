#include "bus/findings_store.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/log.h"
#include "unit/testing.h"

namespace oxg::bus {
namespace {

using nlohmann::ordered_json;

// A finding whose message carries `n` (fixed width, so every line has the same length).
Finding MakeFinding(int n, std::string message_suffix = "") {
  char num[16];
  std::snprintf(num, sizeof(num), "%06d", n);
  Finding f;
  f.id = std::string("01HZZZZZZZZZZZZZZZZZ") + num;  // 26 characters
  f.plugin = "headers";
  f.type = "missing-hsts";
  f.message = std::string("finding ") + num + message_suffix;
  f.target = "https://a.example/";
  f.severity = Severity::kMedium;
  f.ts = Clock::WallTime(std::chrono::seconds(1700000000));
  f.meta = {{"h", "hsts"}};
  f.trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
  return f;
}

size_t LineSize() {
  std::string line;
  AppendFindingLine(line, MakeFinding(0));
  return line.size();
}

using oxg::testing::ReadFile;

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  size_t start = 0;
  while (start < text.size()) {
    const size_t end = text.find('\n', start);
    if (end == std::string::npos) {
      lines.push_back(text.substr(start));  // a fragment: tests expect none
      break;
    }
    lines.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  return lines;
}

// The numbers of a file's findings, in file order; every line must be a whole record.
std::vector<int> Numbers(const std::string& path) {
  const std::string text = ReadFile(path);
  EXPECT_TRUE(text.empty() || text.back() == '\n') << path;
  std::vector<int> numbers;
  for (const std::string& line : Lines(text)) {
    const ordered_json j = ordered_json::parse(line, nullptr, /*allow_exceptions=*/false);
    EXPECT_FALSE(j.is_discarded()) << path << ": " << line;
    if (j.is_discarded()) continue;
    numbers.push_back(std::stoi(j["message"].get<std::string>().substr(8, 6)));
  }
  return numbers;
}

std::vector<int> Range(int first, int last) {  // [first, last]
  std::vector<int> v;
  for (int i = first; i <= last; ++i) v.push_back(i);
  return v;
}

// Sends the operational log to a file for the test's life.
class CapturedLog {
 public:
  explicit CapturedLog(std::string path) : path_(std::move(path)) {
    fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    EXPECT_GE(fd_, 0);
    log::SetFdForTesting(fd_);
  }
  ~CapturedLog() {
    log::SetFdForTesting(-1);
    ::close(fd_);
  }
  std::string Text() const { return ReadFile(path_); }
  size_t Count(std::string_view needle) const {
    const std::string text = Text();
    size_t n = 0;
    for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) {
      ++n;
    }
    return n;
  }

 private:
  std::string path_;
  int fd_ = -1;
};

class FindingStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/oxg_findings_store_XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/findings.jsonl";
  }
  void TearDown() override {
    store_.reset();
    std::filesystem::remove_all(dir_);
  }

  FindingStore::Options Options() {
    FindingStore::Options o;
    o.path = path_;
    return o;
  }

  FindingStore& OpenStore(FindingStore::Options options) {
    auto s = FindingStore::Open(std::move(options), *registry_, clock_);
    EXPECT_TRUE(s.ok()) << s.status();
    if (!s.ok()) std::abort();
    store_ = std::move(*s);
    return *store_;
  }

  // A second run of the daemon: a fresh registry (families are declared once per registry).
  FindingStore& Reopen(FindingStore::Options options) {
    store_.reset();
    registry_ = std::make_unique<metrics::Registry>(clock_);
    return OpenStore(std::move(options));
  }

  std::string Metric(std::string_view series) {
    const std::string text = "\n" + registry_->Scrape({});
    const size_t at = text.find("\n" + std::string(series) + " ");
    if (at == std::string::npos) return "absent";
    const size_t start = at + 1 + series.size() + 1;
    return text.substr(start, text.find('\n', start) - start);
  }

  std::string Rotated(int n) const { return path_ + "." + std::to_string(n); }

  std::string dir_, path_;
  SimulatedClock clock_;
  std::unique_ptr<metrics::Registry> registry_ = std::make_unique<metrics::Registry>(clock_);
  std::unique_ptr<FindingStore> store_;
};

TEST_F(FindingStoreTest, LinesInContractOrderAndCount) {
  FindingStore& s = OpenStore(Options());
  EXPECT_EQ(Metric("oxg_findings_dropped_total{reason=\"queue_full\"}"), "0");
  EXPECT_EQ(Metric("oxg_findings_dropped_total{reason=\"write_error\"}"), "0");
  EXPECT_EQ(Metric("oxg_findings_written_total"), "0");
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(s.Submit(MakeFinding(i)));
  s.Drain();

  const FindingStore::Counts c = s.counts();
  EXPECT_EQ(c.submitted, 100u);
  EXPECT_EQ(c.written, 100u);
  EXPECT_EQ(c.dropped, 0u);
  EXPECT_EQ(c.write_errors, 0u);
  EXPECT_EQ(c.rotations, 0u);
  EXPECT_EQ(Metric("oxg_findings_written_total"), "100");
  EXPECT_EQ(Numbers(path_), Range(0, 99));

  const std::vector<std::string> lines = Lines(ReadFile(path_));
  ASSERT_EQ(lines.size(), 100u);
  const ordered_json j = ordered_json::parse(lines[7]);
  std::vector<std::string> keys;
  for (auto& [k, v] : j.items()) keys.push_back(k);
  EXPECT_EQ(keys, (std::vector<std::string>{"version", "id", "plugin", "type", "message", "target",
                                            "evidence", "severity", "ts", "meta", "trace_id"}));
  EXPECT_EQ(j["version"], "0.2");
  EXPECT_EQ(j["id"], "01HZZZZZZZZZZZZZZZZZ000007");
  EXPECT_EQ(j["severity"], "med");
  EXPECT_EQ(j["ts"], "2023-11-14T22:13:20.000000000Z");
  EXPECT_EQ(j["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");

  struct stat st;
  ASSERT_EQ(::stat(path_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

// Three lines per file, keep 3: twenty lines make seven files, of which four remain.
void ExpectRotatedLayout(const std::string& path, uint64_t rotate_bytes) {
  EXPECT_EQ(Numbers(path + ".3"), Range(9, 11));
  EXPECT_EQ(Numbers(path + ".2"), Range(12, 14));
  EXPECT_EQ(Numbers(path + ".1"), Range(15, 17));  // the newest rotated file
  EXPECT_EQ(Numbers(path), Range(18, 19));
  EXPECT_FALSE(std::filesystem::exists(path + ".4"));
  for (const std::string& p : {path, path + ".1", path + ".2", path + ".3"}) {
    EXPECT_LE(std::filesystem::file_size(p), rotate_bytes) << p;
    struct stat st;
    ASSERT_EQ(::stat(p.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u) << p;
  }
}

TEST_F(FindingStoreTest, RotationKeepsExactlyKeepFilesLineByLine) {
  FindingStore::Options o = Options();
  o.rotate_bytes = 3 * LineSize() + LineSize() / 2;
  o.keep = 3;
  FindingStore& s = OpenStore(o);
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(s.Submit(MakeFinding(i)));
    s.Drain();
  }
  EXPECT_EQ(s.counts().rotations, 6u);
  EXPECT_EQ(s.counts().written, 20u);
  ExpectRotatedLayout(path_, o.rotate_bytes);
}

TEST_F(FindingStoreTest, RotationSplitsOneBatchBetweenLines) {
  oxg::testing::Gate gate;
  FindingStore::Options o = Options();
  o.rotate_bytes = 3 * LineSize() + LineSize() / 2;
  o.keep = 3;
  o.before_batch_for_testing = [&gate] { gate.Pass(); };
  FindingStore& s = OpenStore(o);
  ASSERT_TRUE(s.Submit(MakeFinding(0)));
  gate.WaitEntered();
  for (int i = 1; i < 20; ++i) ASSERT_TRUE(s.Submit(MakeFinding(i)));  // one batch
  gate.Release();
  s.Drain();
  EXPECT_EQ(s.counts().rotations, 6u);
  EXPECT_EQ(s.counts().written, 20u);
  ExpectRotatedLayout(path_, o.rotate_bytes);
}

TEST_F(FindingStoreTest, LineLargerThanRotateBytesIsWrittenAloneToAFreshFile) {
  FindingStore::Options o = Options();
  o.rotate_bytes = 300;
  o.keep = 5;
  ASSERT_LT(LineSize(), 300u);
  FindingStore& s = OpenStore(o);
  ASSERT_TRUE(s.Submit(MakeFinding(1)));
  ASSERT_TRUE(s.Submit(MakeFinding(2, std::string(1000, 'x'))));
  ASSERT_TRUE(s.Submit(MakeFinding(3)));
  s.Drain();
  EXPECT_EQ(Numbers(path_ + ".2"), std::vector<int>{1});
  EXPECT_EQ(Numbers(path_ + ".1"), std::vector<int>{2});
  EXPECT_GT(std::filesystem::file_size(path_ + ".1"), 1000u);
  EXPECT_EQ(Numbers(path_), std::vector<int>{3});
  EXPECT_EQ(s.counts().rotations, 2u);
}

TEST_F(FindingStoreTest, FullQueueDropsAndCounts) {
  oxg::testing::Gate gate;
  FindingStore::Options o = Options();
  o.queue_capacity = 2;
  o.before_batch_for_testing = [&gate] { gate.Pass(); };
  FindingStore& s = OpenStore(o);
  ASSERT_TRUE(s.Submit(MakeFinding(0)));
  gate.WaitEntered();  // the writer holds the first finding; the queue is empty again
  EXPECT_TRUE(s.Submit(MakeFinding(1)));
  EXPECT_TRUE(s.Submit(MakeFinding(2)));
  EXPECT_FALSE(s.Submit(MakeFinding(3)));
  EXPECT_EQ(Metric("oxg_findings_dropped_total{reason=\"queue_full\"}"), "1");
  gate.Release();
  s.Drain();

  const FindingStore::Counts c = s.counts();
  EXPECT_EQ(c.submitted, 4u);
  EXPECT_EQ(c.dropped, 1u);
  EXPECT_EQ(c.written, 3u);
  EXPECT_EQ(Numbers(path_), Range(0, 2));
  EXPECT_EQ(Metric("oxg_findings_dropped_total{reason=\"write_error\"}"), "0");
}

TEST_F(FindingStoreTest, WriteErrorsAreCountedAndReportedAtMostEveryTenSeconds) {
  CapturedLog log(dir_ + "/log");
  ASSERT_EQ(::symlink("/dev/full", path_.c_str()), 0);
  FindingStore::Options o = Options();
  o.rotate_bytes = 1;  // a device is never rotated
  FindingStore& s = OpenStore(o);
  ASSERT_TRUE(s.Submit(MakeFinding(0)));
  s.Drain();
  ASSERT_TRUE(s.Submit(MakeFinding(1)));
  s.Drain();
  clock_.Advance(std::chrono::seconds(11));
  ASSERT_TRUE(s.Submit(MakeFinding(2)));
  s.Drain();

  const FindingStore::Counts c = s.counts();
  EXPECT_EQ(c.write_errors, 3u);
  EXPECT_EQ(c.written, 0u);
  EXPECT_EQ(c.rotations, 0u);
  EXPECT_EQ(c.rotation_errors, 0u);
  EXPECT_EQ(Metric("oxg_findings_dropped_total{reason=\"write_error\"}"), "3");
  EXPECT_EQ(Metric("oxg_findings_written_total"), "0");
  const std::string needle = "cannot write to " + path_ + ": No space left on device";
  EXPECT_EQ(log.Count(needle), 2u) << log.Text();
  EXPECT_NE(log.Text().find("(1 findings lost since the last report)"), std::string::npos);
  EXPECT_NE(log.Text().find("(2 findings lost since the last report)"), std::string::npos)
      << log.Text();
}

TEST_F(FindingStoreTest, OpenFailsNamingThePath) {
  FindingStore::Options o = Options();
  o.path = dir_ + "/missing/findings.jsonl";
  auto s = FindingStore::Open(o, *registry_, clock_);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().message(), dir_ + "/missing/findings.jsonl: No such file or directory");

  o.path = dir_;  // a directory
  s = FindingStore::Open(o, *registry_, clock_);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().message(), dir_ + ": Is a directory");

  o.path = "";
  s = FindingStore::Open(o, *registry_, clock_);
  ASSERT_FALSE(s.ok());

  // Nothing was registered by the failed opens: a later one succeeds on the same registry.
  OpenStore(Options());
}

TEST_F(FindingStoreTest, RestartAppendsAndCountsTheExistingSize) {
  FindingStore::Options o = Options();
  o.rotate_bytes = 4 * LineSize();
  {
    FindingStore& first = OpenStore(o);
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(first.Submit(MakeFinding(i)));
  }
  store_.reset();  // the destructor Stop()s, writing what was queued
  EXPECT_EQ(Numbers(path_), Range(0, 2));

  FindingStore& s = Reopen(o);
  ASSERT_TRUE(s.Submit(MakeFinding(3)));  // the fourth line still fits
  s.Drain();
  EXPECT_EQ(s.counts().rotations, 0u);
  ASSERT_TRUE(s.Submit(MakeFinding(4)));  // the fifth would not
  s.Drain();
  EXPECT_EQ(s.counts().rotations, 1u);
  EXPECT_EQ(Numbers(path_ + ".1"), Range(0, 3));
  EXPECT_EQ(Numbers(path_), std::vector<int>{4});
}

TEST_F(FindingStoreTest, FileEndingInAFragmentGetsANewlineFirst) {
  {
    std::ofstream out(path_, std::ios::binary);
    out << "{\"version\":\"0.2\",\"id\":\"01HZ";  // cut short by a crash
  }
  ::chmod(path_.c_str(), 0644);
  FindingStore& s = OpenStore(Options());
  ASSERT_TRUE(s.Submit(MakeFinding(1)));
  s.Drain();
  std::string expected = "{\"version\":\"0.2\",\"id\":\"01HZ\n";
  AppendFindingLine(expected, MakeFinding(1));
  EXPECT_EQ(ReadFile(path_), expected);
  struct stat st;
  ASSERT_EQ(::stat(path_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);  // narrowed: findings hold evidence

  // A file ending in a whole line gets no blank line.
  FindingStore& again = Reopen(Options());
  ASSERT_TRUE(again.Submit(MakeFinding(2)));
  again.Drain();
  AppendFindingLine(expected, MakeFinding(2));
  EXPECT_EQ(ReadFile(path_), expected);
}

TEST_F(FindingStoreTest, FailedRotationKeepsEveryLineInTheCurrentFile) {
  CapturedLog log(dir_ + "/log");
  // path.1 is a non-empty directory: renaming the file onto it fails, even for root.
  ASSERT_TRUE(std::filesystem::create_directory(Rotated(1)));
  { std::ofstream(Rotated(1) + "/x") << "x"; }
  oxg::testing::Gate gate;
  FindingStore::Options o = Options();
  o.rotate_bytes = LineSize();  // one line per file
  o.keep = 1;
  o.before_batch_for_testing = [&gate] { gate.Pass(); };
  FindingStore& s = OpenStore(o);
  ASSERT_TRUE(s.Submit(MakeFinding(1)));
  gate.WaitEntered();
  for (int i = 2; i <= 4; ++i) ASSERT_TRUE(s.Submit(MakeFinding(i)));  // one batch
  gate.Release();
  s.Drain();
  EXPECT_EQ(s.counts().rotation_errors, 1u);  // tried once for the batch, then appended
  EXPECT_EQ(Numbers(path_), Range(1, 4));

  ASSERT_TRUE(s.Submit(MakeFinding(5)));  // the next batch tries again
  s.Drain();
  clock_.Advance(std::chrono::seconds(11));
  ASSERT_TRUE(s.Submit(MakeFinding(6)));
  s.Drain();
  EXPECT_EQ(s.counts().rotation_errors, 3u);
  EXPECT_EQ(s.counts().rotations, 0u);
  EXPECT_EQ(s.counts().written, 6u);
  EXPECT_EQ(Numbers(path_), Range(1, 6));
  EXPECT_EQ(log.Count("cannot rotate " + path_ + ": rename " + path_ + " -> " + Rotated(1)), 2u)
      << log.Text();
  EXPECT_NE(log.Text().find("(2 failed rotations since the last report)"), std::string::npos)
      << log.Text();

  std::filesystem::remove_all(Rotated(1));  // the way is clear again
  ASSERT_TRUE(s.Submit(MakeFinding(7)));
  s.Drain();
  EXPECT_EQ(s.counts().rotations, 1u);
  EXPECT_EQ(Numbers(Rotated(1)), Range(1, 6));
  EXPECT_EQ(Numbers(path_), std::vector<int>{7});
}

TEST_F(FindingStoreTest, StopWritesEverythingQueuedThenRefuses) {
  oxg::testing::Gate gate;
  FindingStore::Options o = Options();
  o.before_batch_for_testing = [&gate] { gate.Pass(); };
  FindingStore& s = OpenStore(o);
  ASSERT_TRUE(s.Submit(MakeFinding(0)));
  gate.WaitEntered();
  ASSERT_TRUE(s.Submit(MakeFinding(1)));
  ASSERT_TRUE(s.Submit(MakeFinding(2)));
  gate.Release();
  s.Stop();
  EXPECT_EQ(Numbers(path_), Range(0, 2));
  EXPECT_FALSE(s.Submit(MakeFinding(3)));
  EXPECT_EQ(Metric("oxg_findings_dropped_total{reason=\"queue_full\"}"), "1");
  s.Stop();   // idempotent
  s.Drain();  // nothing pending: returns at once
  EXPECT_EQ(s.counts().written, 3u);
}

TEST_F(FindingStoreTest, ConcurrentSubmittersLoseNothing) {
  constexpr int kThreads = 8;
  constexpr int kEach = 500;  // 4000 in all: fits the default queue, so none may be dropped
  FindingStore::Options o = Options();
  o.rotate_bytes = 64 * LineSize();
  o.keep = 1000;
  FindingStore& s = OpenStore(o);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&s, t] {
      for (int i = 0; i < kEach; ++i) EXPECT_TRUE(s.Submit(MakeFinding(t * kEach + i)));
    });
  }
  for (std::thread& t : threads) t.join();
  s.Drain();
  EXPECT_EQ(s.counts().written, static_cast<uint64_t>(kThreads * kEach));
  EXPECT_EQ(s.counts().dropped, 0u);

  // Oldest file first, then each thread's findings in its own order, all of them once.
  std::vector<int> all;
  const uint64_t rotations = s.counts().rotations;
  for (uint64_t n = rotations; n >= 1; --n) {
    for (int v : Numbers(Rotated(static_cast<int>(n)))) all.push_back(v);
  }
  for (int v : Numbers(path_)) all.push_back(v);
  ASSERT_EQ(all.size(), static_cast<size_t>(kThreads * kEach));
  std::vector<int> last(kThreads, -1);
  std::set<int> seen;
  for (int v : all) {
    EXPECT_TRUE(seen.insert(v).second) << v;
    const int t = v / kEach;
    EXPECT_GT(v, last[t]);
    last[t] = v;
  }
  // Files fill to exactly 64 lines however the batches fell: 63 files.
  EXPECT_EQ(rotations, static_cast<uint64_t>((kThreads * kEach + 63) / 64 - 1));
}

}  // namespace
}  // namespace oxg::bus

namespace oxg::bus {
namespace {

// The new file is created before anything is renamed: when it cannot be (here a non-empty
// directory sits where it would go), the rotated history stays exactly where it was, however
// many batches try again.
TEST_F(FindingStoreTest, RotationThatCannotCreateTheNewFileShiftsNothing) {
  FindingStore::Options o = Options();
  o.rotate_bytes = LineSize();  // one line per file
  o.keep = 3;
  FindingStore& s = OpenStore(o);
  for (int i = 1; i <= 3; ++i) {
    ASSERT_TRUE(s.Submit(MakeFinding(i)));
    s.Drain();
  }
  ASSERT_EQ(Numbers(Rotated(1)), Range(2, 2));
  ASSERT_EQ(Numbers(Rotated(2)), Range(1, 1));
  ASSERT_TRUE(std::filesystem::create_directory(path_ + ".new"));
  { std::ofstream(path_ + ".new/x") << "x"; }
  for (int i = 4; i <= 6; ++i) {
    ASSERT_TRUE(s.Submit(MakeFinding(i)));
    s.Drain();
  }
  EXPECT_EQ(s.counts().rotation_errors, 3u);
  EXPECT_EQ(Numbers(Rotated(1)), Range(2, 2));
  EXPECT_EQ(Numbers(Rotated(2)), Range(1, 1));
  EXPECT_FALSE(std::filesystem::exists(Rotated(3)));
  EXPECT_EQ(Numbers(path_), Range(3, 6));
  EXPECT_EQ(s.counts().written, 6u);
}

// An operator deleting findings.jsonl while the daemon runs: the next batch starts a new file
// (nothing goes to the deleted inode) and the rotated files stay where they are.
TEST_F(FindingStoreTest, DeletedFileIsRecreatedWithoutShiftingHistory) {
  FindingStore::Options o = Options();
  o.rotate_bytes = 2 * LineSize();
  o.keep = 2;
  FindingStore& s = OpenStore(o);
  for (int i = 1; i <= 3; ++i) {
    ASSERT_TRUE(s.Submit(MakeFinding(i)));
    s.Drain();
  }
  ASSERT_EQ(Numbers(Rotated(1)), Range(1, 2));
  ASSERT_EQ(Numbers(path_), Range(3, 3));
  ASSERT_TRUE(std::filesystem::remove(path_));
  for (int i = 4; i <= 5; ++i) {
    ASSERT_TRUE(s.Submit(MakeFinding(i)));
    s.Drain();
  }
  EXPECT_EQ(Numbers(Rotated(1)), Range(1, 2));
  EXPECT_FALSE(std::filesystem::exists(Rotated(2)));
  EXPECT_EQ(Numbers(path_), Range(4, 5));
  EXPECT_EQ(s.counts().written, 5u);
}

}  // namespace
}  // namespace oxg::bus
