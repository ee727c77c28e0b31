// One-line logging to stderr: "ringxfer <level>: <message>". The level comes from the
// environment variable RINGXFER_LOG (error, warn, info, debug; default info) and is
// read once; set_log_level() overrides it. Used for start-up facts, fallbacks and
// operating errors, never on the data path. Knows nothing of rings or sockets.
//
// Logging never blocks the caller on I/O (issue 11). A line is formatted by the caller
// and queued under a short lock; a logging thread, started on first use, writes the
// queue to fd 2. When the queue is full (kLogQueueLines lines or kLogQueueBytes bytes)
// the line is dropped and counted, and the next batch the thread writes starts with
// "ringxfer warn: N log lines dropped (stderr is not keeping up)".
//
// RX_LOG also limits each call site (a token bucket, see detail::LogSite): after a
// burst of kLogSiteBurst lines it lets one line a second through and counts the rest;
// the next line it lets through ends with " (N similar lines suppressed)". Debug lines
// are not limited: debug is asked for on purpose, and the queue still bounds them.
//
// fork(): the child starts its own logging thread on its first line; lines its parent
// had queued are the parent's to write. exit(): an atexit handler waits up to
// kLogExitFlushMs for the queue to be written, then gives up (stderr may be blocked);
// lines logged after it are written only if the thread gets to them before the
// process ends. A process about to crash calls log_flush_for_crash() and writes its
// last words itself (see check.cc).
#pragma once

#include <atomic>
#include <cstdint>
#include <string_view>

#include "absl/strings/str_format.h"

namespace ringxfer::base {

enum class LogLevel { kError = 0, kWarn = 1, kInfo = 2, kDebug = 3 };

inline constexpr int kLogQueueLines = 1024;
inline constexpr int kLogQueueBytes = 256 * 1024;
inline constexpr int kLogSiteBurst = 10;
inline constexpr int64_t kLogSiteRefillNs = 1'000'000'000;  // one line a second after a burst
inline constexpr int kLogExitFlushMs = 200;

// Any thread. True when lines of `level` are written.
bool log_enabled(LogLevel level) noexcept;
// Any thread; never blocks on I/O. Queues one line (no rate limit: that is RX_LOG's).
void log_line(LogLevel level, std::string_view message) noexcept;
// Overrides RINGXFER_LOG from now on (any thread).
void set_log_level(LogLevel level) noexcept;

// Process-wide counts since start: lines written to the sink, lines dropped (queue
// full, or the write failed), lines RX_LOG suppressed. The drop notices are not counted.
struct LogStats {
  uint64_t written = 0;
  uint64_t dropped = 0;
  uint64_t suppressed = 0;
};
LogStats log_stats() noexcept;

// Waits until every line queued before the call has been written (or failed), at most
// timeout_ms. Returns false on timeout (stderr is not being read). Any thread but the
// logging thread.
bool log_flush(int timeout_ms) noexcept;

// For a process about to abort: writes what is queued directly, without waiting for
// the lock or for a blocked stderr (best effort; lines may be lost or interleaved).
void log_flush_for_crash() noexcept;

// For tests only: lines written from now on go to `fd` (2 restores stderr). Lines
// queued before the call may go to either; call log_flush() first. The caller keeps
// `fd` open until it has switched away from it and flushed.
void set_log_fd_for_testing(int fd) noexcept;

namespace detail {

// Rate limit of one RX_LOG site, lock-free: the generic cell rate algorithm, a token
// bucket kept as one time stamp. tat_ns_ is the time at which the bucket is full
// again; a line is let through when that is at most (burst - 1) refills away, and
// then moves it one refill later. Constant-initialized, trivially destructible, so a
// function-local static needs no guard and outlives every caller.
class LogSite {
 public:
  constexpr LogSite() = default;

  // Returns -1 when the line is over the limit (it is counted), else the number of
  // lines suppressed since the last line let through (0 usually).
  int64_t admit(LogLevel level) noexcept;
  int64_t admit_at(int64_t now_ns) noexcept;

 private:
  std::atomic<int64_t> tat_ns_{0};
  std::atomic<int64_t> suppressed_{0};
};

// RX_LOG's entry: like log_line, with " (N similar lines suppressed)" when N > 0.
void log_site_line(LogLevel level, std::string_view message, int64_t suppressed) noexcept;

}  // namespace detail
}  // namespace ringxfer::base

#define RX_LOG(level, ...)                                                                         \
  do {                                                                                             \
    if (::ringxfer::base::log_enabled(::ringxfer::base::LogLevel::level)) {                        \
      static ::ringxfer::base::detail::LogSite rx_log_site;                                        \
      const int64_t rx_log_suppressed = rx_log_site.admit(::ringxfer::base::LogLevel::level);      \
      if (rx_log_suppressed >= 0) {                                                                \
        ::ringxfer::base::detail::log_site_line(                                                   \
            ::ringxfer::base::LogLevel::level, ::absl::StrFormat(__VA_ARGS__), rx_log_suppressed); \
      }                                                                                            \
    }                                                                                              \
  } while (false)
