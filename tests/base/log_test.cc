#include "base/log.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_split.h"
#include "gtest/gtest.h"

#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define RX_TEST_TSAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#define RX_TEST_TSAN 1
#endif

#ifdef RX_TEST_TSAN
// A forked child of this (multi-threaded) test starts its own logging thread, which
// TSan refuses by default. The child only logs a line and exits.
extern "C" const char* __tsan_default_options() { return "die_after_fork=0"; }
#endif

namespace ringxfer::base {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using std::chrono::steady_clock;

// Ends the test binary when a bounded step overruns, so a regression that blocks fails
// instead of hanging until meson's timeout.
class Watchdog {
 public:
  Watchdog(seconds limit, const char* what)
      : thread_([this, limit, what] {
          std::unique_lock lock(mu_);
          if (!cv_.wait_for(lock, limit, [this] { return done_; })) {
            std::printf("watchdog: %s still running after %lld s\n", what,
                        static_cast<long long>(limit.count()));
            std::fflush(stdout);
            std::_Exit(1);
          }
        }) {}
  ~Watchdog() {
    {
      std::lock_guard lock(mu_);
      done_ = true;
    }
    cv_.notify_one();
    thread_.join();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread thread_;
};

// What is in the pipe now (its read end is non-blocking).
std::string read_available(int fd) {
  std::string out;
  char buf[65536];
  for (;;) {
    const ssize_t n = read(fd, buf, sizeof buf);
    if (n <= 0) {
      return out;
    }
    out.append(buf, static_cast<size_t>(n));
  }
}

// Logging goes to a pipe that a test reads (or, to reproduce issue 11, does not).
class LogToPipe : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(log_flush(5000));
    ASSERT_EQ(pipe(fds_), 0);
    ASSERT_EQ(fcntl(fds_[0], F_SETFL, O_NONBLOCK), 0);  // the write end stays blocking
    set_log_fd_for_testing(fds_[1]);
  }

  void TearDown() override {
    set_log_fd_for_testing(2);
    (void)read_until_flushed();
    set_log_level(LogLevel::kInfo);
    close(fds_[0]);
    close(fds_[1]);
  }

  // Reads while the logging thread writes, until everything queued so far is out.
  std::string read_until_flushed() {
    Watchdog dog(seconds(20), "reading the log pipe until flushed");
    std::string out;
    for (;;) {
      out += read_available(fds_[0]);
      if (log_flush(20)) {
        return out + read_available(fds_[0]);
      }
    }
  }

  int read_fd() const { return fds_[0]; }

 private:
  int fds_[2] = {-1, -1};
};

std::vector<std::string> lines_of(const std::string& text) {
  EXPECT_TRUE(text.empty() || text.back() == '\n') << "a line was cut";
  std::vector<std::string> lines = absl::StrSplit(text, '\n');
  lines.pop_back();  // after the last '\n'
  return lines;
}

// Issue 11: ring threads blocked in write() once a pipe nobody read was full.
TEST_F(LogToPipe, NeverBlocksOnAPipeNobodyReads) {
  set_log_level(LogLevel::kDebug);  // debug lines are not rate-limited: every call queues
  constexpr int kThreads = 2;
  constexpr int kPerThread = 50'000;
  const LogStats before = log_stats();
  const auto start = steady_clock::now();
  {
    Watchdog dog(seconds(10), "100,000 RX_LOG calls to a pipe nobody reads");
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([t] {
        for (int i = 0; i < kPerThread; ++i) {
          RX_LOG(kDebug, "thread %d line %d", t, i);
        }
      });
    }
    for (std::thread& t : threads) {
      t.join();
    }
  }
  EXPECT_LT(steady_clock::now() - start, seconds(5));
  {
    Watchdog dog(seconds(10), "log_flush on a pipe nobody reads");
    const auto flush_start = steady_clock::now();
    EXPECT_FALSE(log_flush(200));
    EXPECT_LT(steady_clock::now() - flush_start, seconds(2));
  }

  const std::vector<std::string> lines = lines_of(read_until_flushed());
  const LogStats after = log_stats();
  const uint64_t written = after.written - before.written;
  const uint64_t dropped = after.dropped - before.dropped;
  EXPECT_GT(dropped, 0u);
  EXPECT_EQ(written + dropped, uint64_t{kThreads * kPerThread});

  uint64_t data_lines = 0;
  uint64_t noticed = 0;
  int last[kThreads] = {-1, -1};
  for (const std::string& line : lines) {
    int t = -1;
    int i = -1;
    int n = -1;
    int end = 0;
    if (std::sscanf(line.c_str(), "ringxfer debug: thread %d line %d%n", &t, &i, &end) == 2 &&
        end == static_cast<int>(line.size()) && t >= 0 && t < kThreads) {
      EXPECT_GT(i, last[t]) << "out of order: " << line;
      last[t] = i;
      ++data_lines;
    } else if (std::sscanf(line.c_str(),
                           "ringxfer warn: %d log lines dropped (stderr is not keeping up)%n", &n,
                           &end) == 1 &&
               end == static_cast<int>(line.size()) && n > 0) {
      noticed += static_cast<uint64_t>(n);
    } else {
      ADD_FAILURE() << "malformed line: " << line;
    }
  }
  EXPECT_EQ(data_lines, written);
  EXPECT_EQ(noticed, dropped) << "every drop is reported once";
}

void noisy_site(int i) { RX_LOG(kWarn, "noisy line %d", i); }

// Issue 11: accept failing with EMFILE printed millions of identical lines.
TEST_F(LogToPipe, RateLimitsEachSite) {
  set_log_level(LogLevel::kWarn);
  const LogStats before = log_stats();
  for (int i = 0; i < 1000; ++i) {
    noisy_site(i);
  }
  ASSERT_TRUE(log_flush(5000));
  std::vector<std::string> lines = lines_of(read_available(read_fd()));
  EXPECT_GE(lines.size(), 1u);
  EXPECT_LE(lines.size(), size_t{kLogSiteBurst + 1});
  EXPECT_EQ(lines.size() + (log_stats().suppressed - before.suppressed), 1000u);

  // Once a token is back, the site's next line says how many it held back. Waiting for
  // a refill is waiting for time itself: poll it, bounded.
  const auto deadline = steady_clock::now() + seconds(5);
  std::string last;
  while (last.empty() && steady_clock::now() < deadline) {
    noisy_site(-1);
    ASSERT_TRUE(log_flush(5000));
    last = read_available(read_fd());
    if (last.empty()) {
      std::this_thread::sleep_for(milliseconds(10));
    }
  }
  ASSERT_FALSE(last.empty()) << "the site never logged again";
  const std::vector<std::string> more = lines_of(last);
  ASSERT_EQ(more.size(), 1u);
  lines.push_back(more[0]);
  int n = 0;
  int end = 0;
  ASSERT_EQ(std::sscanf(more[0].c_str(),
                        "ringxfer warn: noisy line -1 (%d similar lines suppressed)%n", &n, &end),
            1)
      << more[0];
  EXPECT_EQ(end, static_cast<int>(more[0].size()));
  EXPECT_GE(n, 1000 - kLogSiteBurst - 1);

  // Every suppressed line is reported by exactly one later line of its site.
  int64_t reported = 0;
  for (const std::string& line : lines) {
    const size_t at = line.find(" (");
    if (at != std::string::npos) {
      reported += std::strtoll(line.c_str() + at + 2, nullptr, 10);
    }
  }
  EXPECT_EQ(static_cast<uint64_t>(reported), log_stats().suppressed - before.suppressed);
}

TEST_F(LogToPipe, LevelHidesLowerLevels) {
  set_log_level(LogLevel::kError);
  const LogStats before = log_stats();
  EXPECT_FALSE(log_enabled(LogLevel::kWarn));
  RX_LOG(kWarn, "a hidden warning");
  RX_LOG(kInfo, "a hidden fact");
  RX_LOG(kError, "a shown error %d", 7);
  ASSERT_TRUE(log_flush(5000));
  EXPECT_EQ(read_available(read_fd()), "ringxfer error: a shown error 7\n");
  EXPECT_EQ(log_stats().written - before.written, 1u);
  EXPECT_EQ(log_stats().suppressed, before.suppressed);
}

// Waits for `pid` at most `limit`; kills it past that. Returns its wait status, or -1.
int wait_bounded(pid_t pid, seconds limit) {
  const auto deadline = steady_clock::now() + limit;
  while (steady_clock::now() < deadline) {
    int status = 0;
    const pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) {
      return status;
    }
    if (r < 0) {
      return -1;
    }
    std::this_thread::sleep_for(milliseconds(10));
  }
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
  return -1;
}

// The child has no logging thread; its first line starts one, and exit() flushes it.
TEST_F(LogToPipe, ForkedChildLogs) {
  set_log_level(LogLevel::kInfo);
  RX_LOG(kInfo, "the parent, before fork");  // the parent's thread runs
  ASSERT_TRUE(log_flush(5000));
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    RX_LOG(kInfo, "the child %d", static_cast<int>(getpid()));
    std::exit(0);
  }
  const int status = wait_bounded(pid, seconds(10));
  ASSERT_NE(status, -1) << "the child did not exit within 10 s";
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;
  RX_LOG(kInfo, "the parent, after fork");
  const std::string text = read_until_flushed();
  EXPECT_EQ(text, absl::StrFormat("ringxfer info: the parent, before fork\n"
                                  "ringxfer info: the child %d\n"
                                  "ringxfer info: the parent, after fork\n",
                                  static_cast<int>(pid)));
}

// exit() waits a bounded time for the queue, then leaves the thread stuck in write().
TEST_F(LogToPipe, ExitDoesNotHangWhenStderrIsBlocked) {
  RX_LOG(kInfo, "the parent, before fork");
  ASSERT_TRUE(log_flush(5000));
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    set_log_level(LogLevel::kDebug);
    for (int i = 0; i < 20'000; ++i) {
      RX_LOG(kDebug, "the child's line %d, which nobody reads yet", i);
    }
    std::exit(0);
  }
  const auto start = steady_clock::now();
  const int status = wait_bounded(pid, seconds(10));
  ASSERT_NE(status, -1) << "the child did not exit within 10 s";
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;
  EXPECT_LT(steady_clock::now() - start, seconds(5));
}

TEST(LogSite, LetsABurstThroughThenOneASecond) {
  struct Step {
    const char* what;
    int64_t at_ms;
    int calls;
    int64_t want;  // what each call returns
  };
  const Step steps[] = {
      {"the burst", 0, kLogSiteBurst, 0},
      {"past the burst", 0, 3, -1},
      {"just before a refill", 999, 1, -1},
      {"a refill, reporting 4", 1000, 1, 4},
      {"the refill spent", 1000, 1, -1},
      {"the next refill, reporting 1", 2000, 1, 0 + 1},
      {"quiet long enough for a full burst", 100'000, kLogSiteBurst, 0},
      {"past that burst", 100'000, 1, -1},
  };
  detail::LogSite site;
  const int64_t t0_ns = int64_t{1'000'000} * 1'000'000'000;
  for (const Step& s : steps) {
    SCOPED_TRACE(s.what);
    for (int i = 0; i < s.calls; ++i) {
      EXPECT_EQ(site.admit_at(t0_ns + s.at_ms * 1'000'000), s.want) << "call " << i;
    }
  }
}

TEST(LogSite, DebugIsNotLimited) {
  detail::LogSite site;
  for (int i = 0; i < 100; ++i) {
    EXPECT_EQ(site.admit(LogLevel::kDebug), 0);
  }
}

TEST(LogSite, AdmitsExactlyOneBurstFromManyThreads) {
  detail::LogSite site;
  constexpr int kThreads = 4;
  constexpr int kCalls = 1000;
  std::atomic<int> admitted{0};
  std::atomic<int64_t> reported{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kCalls; ++i) {
        const int64_t r = site.admit_at(5'000'000'000);
        if (r >= 0) {
          admitted.fetch_add(1);
          reported.fetch_add(r);
        }
      }
    });
  }
  for (std::thread& t : threads) {
    t.join();
  }
  EXPECT_EQ(admitted.load(), kLogSiteBurst);
  // The rest are counted: reported by an admitted line, or waiting for the next one.
  const int64_t waiting = site.admit_at(5'000'000'000 + 60'000'000'000);
  EXPECT_EQ(reported.load() + waiting, kThreads * kCalls - kLogSiteBurst);
}

}  // namespace
}  // namespace ringxfer::base
