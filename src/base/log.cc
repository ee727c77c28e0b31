#include "base/log.h"

#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <string>
#include <utility>
#include <vector>

namespace ringxfer::base {
namespace {

LogLevel level_from_env() noexcept {
  const char* v = std::getenv("RINGXFER_LOG");
  if (v == nullptr) {
    return LogLevel::kInfo;
  }
  if (std::strcmp(v, "error") == 0) {
    return LogLevel::kError;
  }
  if (std::strcmp(v, "warn") == 0) {
    return LogLevel::kWarn;
  }
  if (std::strcmp(v, "debug") == 0) {
    return LogLevel::kDebug;
  }
  return LogLevel::kInfo;
}

const char* level_name(LogLevel level) noexcept {
  switch (level) {
    case LogLevel::kError:
      return "error";
    case LogLevel::kWarn:
      return "warn";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kDebug:
      return "debug";
  }
  return "?";
}

// Constant-initialized and trivially destructible: usable from any static destructor.
constinit std::atomic<uint64_t> g_written{0};
constinit std::atomic<uint64_t> g_dropped{0};
constinit std::atomic<uint64_t> g_suppressed{0};

int64_t now_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// The logging thread's write: all of it, however long stderr takes. False when the fd
// is broken (EPIPE, EBADF, ...); those lines are lost.
bool write_all(int fd, const char* p, size_t n) noexcept {
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w > 0) {
      p += w;
      n -= static_cast<size_t>(w);
      continue;
    }
    if (w < 0 && errno == EINTR) {
      continue;
    }
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      // Someone made the fd non-blocking: wait for room as a blocking write would.
      pollfd pfd{fd, POLLOUT, 0};
      (void)::poll(&pfd, 1, -1);
      continue;
    }
    return false;
  }
  return true;
}

// The crash path's write: only what fits now. Pieces of at most PIPE_BUF after POLLOUT
// do not block on a pipe (POLLOUT means a free pipe buffer, since Linux 5.5 pipe_poll).
void write_without_waiting(int fd, const char* p, size_t n) noexcept {
  while (n > 0) {
    pollfd pfd{fd, POLLOUT, 0};
    if (::poll(&pfd, 1, 0) != 1 || (pfd.revents & POLLOUT) == 0) {
      return;
    }
    const ssize_t w = ::write(fd, p, std::min<size_t>(n, PIPE_BUF));
    if (w < 0 && errno == EINTR) {
      continue;
    }
    if (w <= 0) {
      return;
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
}

std::string drop_notice(uint64_t dropped) {
  return absl::StrFormat("ringxfer warn: %d log lines dropped (stderr is not keeping up)\n",
                         dropped);
}

// The queue and its logging thread. One per process, leaked: loggers in static
// destructors and the detached thread itself must find it alive until the very end.
class Logger {
 public:
  static Logger& get() noexcept {
    static Logger* const logger = new Logger();
    return *logger;
  }

  void enqueue(std::string&& line) noexcept {
    bool wake = false;
    {
      std::lock_guard lock(mu_);
      if (!running_) {
        // A failed start (no threads left) is retried with the next line; meanwhile
        // lines queue up and then drop, as if stderr were slow.
        running_ = start_locked();
      }
      if (pending_.size() >= static_cast<size_t>(kLogQueueLines) ||
          pending_bytes_ + line.size() > static_cast<size_t>(kLogQueueBytes)) {
        ++dropped_unreported_;
        g_dropped.fetch_add(1, std::memory_order_relaxed);
        return;
      }
      // Both buffers keep kLogQueueLines of capacity: no allocation under the lock.
      wake = pending_.empty();
      pending_bytes_ += line.size();
      pending_.push_back(std::move(line));
      ++queued_;
    }
    // The thread sleeps only on an empty queue, so only the line that ends it wakes it.
    if (wake) {
      work_cv_.notify_one();
    }
  }

  bool flush(int timeout_ms) noexcept {
    std::unique_lock lock(mu_);
    const uint64_t target = queued_;
    return done_cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms),
                             [&] { return done_ >= target; });
  }

  void flush_for_crash() noexcept {
    std::vector<std::string> lines;
    uint64_t dropped = 0;
    int fd = 2;
    {
      std::unique_lock lock(mu_, std::try_to_lock);
      if (!lock.owns_lock()) {
        return;  // held by a thread that may never run again; the lines are lost
      }
      lines.swap(pending_);
      pending_bytes_ = 0;
      dropped = std::exchange(dropped_unreported_, 0);
      done_ = queued_;
      fd = fd_;
    }
    if (dropped > 0) {
      const std::string notice = drop_notice(dropped);
      write_without_waiting(fd, notice.data(), notice.size());
    }
    for (const std::string& line : lines) {
      write_without_waiting(fd, line.data(), line.size());
    }
  }

  void set_fd(int fd) noexcept {
    std::lock_guard lock(mu_);
    fd_ = fd;
  }

 private:
  Logger() {
    pending_.reserve(kLogQueueLines);
    batch_.reserve(kLogQueueLines);
    (void)pthread_atfork(&Logger::before_fork, &Logger::after_fork_in_parent,
                         &Logger::after_fork_in_child);
    (void)std::atexit(&Logger::at_exit);
  }

  // Called with mu_ held.
  bool start_locked() noexcept {
    // The thread blocks every signal (it inherits this mask): process signals go to
    // the application's threads, and a closed stderr gives it EPIPE, not SIGPIPE.
    sigset_t all;
    sigset_t old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_t thread;
    const int rc = pthread_create(&thread, &attr, &Logger::thread_main, this);
    pthread_attr_destroy(&attr);
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    return rc == 0;
  }

  static void* thread_main(void* self) {
    pthread_setname_np(pthread_self(), "rx-log");
    static_cast<Logger*>(self)->run();
    return nullptr;
  }

  // Never joined: at exit it may be stuck in write() on a stderr nobody reads.
  [[noreturn]] void run() noexcept {
    for (;;) {
      uint64_t dropped = 0;
      uint64_t upto = 0;
      int fd = 2;
      {
        std::unique_lock lock(mu_);
        work_cv_.wait(lock, [this] { return !pending_.empty(); });
        batch_.swap(pending_);
        pending_bytes_ = 0;
        dropped = std::exchange(dropped_unreported_, 0);
        upto = queued_;
        fd = fd_;
      }
      out_.clear();
      if (dropped > 0) {
        out_ += drop_notice(dropped);
      }
      for (const std::string& line : batch_) {
        out_ += line;
      }
      // One write per batch: fewer system calls, and a batch is not cut by other lines.
      if (write_all(fd, out_.data(), out_.size())) {
        g_written.fetch_add(batch_.size(), std::memory_order_relaxed);
      } else {
        g_dropped.fetch_add(batch_.size(), std::memory_order_relaxed);
      }
      batch_.clear();
      {
        std::lock_guard lock(mu_);
        done_ = std::max(done_, upto);
      }
      done_cv_.notify_all();
    }
  }

  // fork(): the child gets a copy of this object but not the thread. Holding mu_ across
  // fork() gives the child a consistent queue and a mutex it can unlock.
  static void before_fork() noexcept { get().mu_.lock(); }
  static void after_fork_in_parent() noexcept { get().mu_.unlock(); }
  static void after_fork_in_child() noexcept {
    Logger& l = get();
    // The parent's thread may have been waiting on these: glibc would count a waiter
    // that does not exist in the child (and could wait for it in notify). Fresh ones;
    // the old ones are abandoned, not destroyed, for the same reason.
    ::new (static_cast<void*>(&l.work_cv_)) std::condition_variable();
    ::new (static_cast<void*>(&l.done_cv_)) std::condition_variable();
    // Lines queued before fork() are the parent's; its thread writes them.
    l.pending_.clear();
    l.batch_.clear();
    l.out_.clear();
    l.pending_bytes_ = 0;
    l.dropped_unreported_ = 0;
    l.done_ = l.queued_;
    l.running_ = false;  // the first line the child logs starts its thread
    l.mu_.unlock();
  }

  static void at_exit() noexcept { (void)get().flush(kLogExitFlushMs); }

  std::mutex mu_;
  std::condition_variable work_cv_;   // the thread waits for lines
  std::condition_variable done_cv_;   // flush() waits for the thread
  std::vector<std::string> pending_;  // each line ends in '\n'
  // The thread's own, kept here rather than on its stack: in a forked child, where the
  // thread is gone, they are still reachable (and cleared), not leaked.
  std::vector<std::string> batch_;
  std::string out_;
  size_t pending_bytes_ = 0;
  uint64_t queued_ = 0;  // lines ever queued
  uint64_t done_ = 0;    // of those, written or failed
  uint64_t dropped_unreported_ = 0;
  bool running_ = false;
  int fd_ = 2;
};

std::atomic<int>& threshold() noexcept {
  static std::atomic<int> t{static_cast<int>(level_from_env())};
  return t;
}

}  // namespace

bool log_enabled(LogLevel level) noexcept {
  return static_cast<int>(level) <= threshold().load(std::memory_order_relaxed);
}

void set_log_level(LogLevel level) noexcept {
  threshold().store(static_cast<int>(level), std::memory_order_relaxed);
}

void log_line(LogLevel level, std::string_view message) noexcept {
  detail::log_site_line(level, message, 0);
}

LogStats log_stats() noexcept {
  return LogStats{
      .written = g_written.load(std::memory_order_relaxed),
      .dropped = g_dropped.load(std::memory_order_relaxed),
      .suppressed = g_suppressed.load(std::memory_order_relaxed),
  };
}

bool log_flush(int timeout_ms) noexcept { return Logger::get().flush(timeout_ms); }

void log_flush_for_crash() noexcept { Logger::get().flush_for_crash(); }

void set_log_fd_for_testing(int fd) noexcept { Logger::get().set_fd(fd); }

namespace detail {

int64_t LogSite::admit(LogLevel level) noexcept {
  if (level == LogLevel::kDebug) {
    return 0;
  }
  return admit_at(now_ns());
}

int64_t LogSite::admit_at(int64_t now_ns) noexcept {
  constexpr int64_t kSlackNs = (kLogSiteBurst - 1) * kLogSiteRefillNs;
  int64_t tat = tat_ns_.load(std::memory_order_relaxed);
  for (;;) {
    const int64_t from = std::max(tat, now_ns);
    if (from - now_ns > kSlackNs) {
      suppressed_.fetch_add(1, std::memory_order_relaxed);
      g_suppressed.fetch_add(1, std::memory_order_relaxed);
      return -1;
    }
    // Two counters, nothing published through them: relaxed is enough. A line
    // suppressed while another is let through is reported by the site's next line.
    if (tat_ns_.compare_exchange_weak(tat, from + kLogSiteRefillNs, std::memory_order_relaxed)) {
      break;
    }
  }
  return suppressed_.exchange(0, std::memory_order_relaxed);
}

void log_site_line(LogLevel level, std::string_view message, int64_t suppressed) noexcept {
  std::string line = absl::StrFormat("ringxfer %s: %s", level_name(level), message);
  if (suppressed > 0) {
    absl::StrAppendFormat(&line, " (%d similar lines suppressed)", suppressed);
  }
  line += '\n';
  Logger::get().enqueue(std::move(line));
}

}  // namespace detail
}  // namespace ringxfer::base
