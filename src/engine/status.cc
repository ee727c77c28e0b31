#include "ringxfer/status.h"

#include <sched.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_format.h"

namespace ringxfer {
namespace {

using Clock = std::chrono::steady_clock;

// now + timeout, saturated: Clock::time_point::max() when the sum would pass the clock's
// range (a timeout that long means no limit). Compares in the timeout's own unit, so
// that converting a long timeout to the clock's nanoseconds cannot overflow either.
template <typename Rep, typename Period>
Clock::time_point deadline_after(Clock::time_point now,
                                 std::chrono::duration<Rep, Period> timeout) {
  using Timeout = std::chrono::duration<Rep, Period>;
  const Timeout room = std::chrono::duration_cast<Timeout>(Clock::time_point::max() - now);
  if (timeout >= room) {
    return Clock::time_point::max();
  }
  return now + std::chrono::duration_cast<Clock::duration>(timeout);
}

}  // namespace

absl::Status TransferStatus::status() const {
  const TransferState s = state();
  if (s == TransferState::kSucceeded) {
    return absl::OkStatus();
  }
  if (s == TransferState::kFailed) {
    std::lock_guard lock(mu_);
    return result_;
  }
  return absl::UnavailableError(s == TransferState::kInit ? "not started" : "in progress");
}

bool TransferStatus::wait(std::chrono::nanoseconds timeout) const {
  if (done()) {
    return true;
  }
  const auto start = Clock::now();
  // One deadline, saturated: a timeout beyond the clock's range waits without limit
  // (now + timeout would overflow into the past and return at once).
  const Clock::time_point deadline =
      timeout.count() < 0 ? Clock::time_point::max() : deadline_after(start, timeout);
  const std::chrono::nanoseconds spin =
      timeout.count() < 0 ? spin_ : std::min<std::chrono::nanoseconds>(spin_, timeout);
  if (spin.count() > 0) {
    // Yield rather than sleep: the ring thread that finishes the transfer runs when it
    // needs this core, and a small transfer's end costs no futex wake-up.
    while (Clock::now() - start < spin) {
      if (done()) {
        return true;
      }
      sched_yield();
    }
  }
  std::unique_lock lock(mu_);
  auto is_done = [this] { return done(); };
  if (deadline == Clock::time_point::max()) {
    cv_.wait(lock, is_done);
    return true;
  }
  return cv_.wait_until(lock, deadline, is_done);
}

void TransferStatus::wait() const { (void)wait(std::chrono::nanoseconds(-1)); }

void TransferStatus::on_done(std::function<void()> fn) {
  {
    std::lock_guard lock(mu_);
    if (!done()) {
      on_done_.push_back(std::move(fn));
      return;
    }
  }
  fn();
}

void TransferStatus::set_in_progress() noexcept {
  TransferState expected = TransferState::kInit;
  state_.compare_exchange_strong(expected, TransferState::kInProgress, std::memory_order_acq_rel);
}

bool TransferStatus::finish(absl::Status result) {
  std::vector<std::function<void()>> callbacks;
  {
    std::lock_guard lock(mu_);
    if (done()) {
      return false;
    }
    const bool ok = result.ok();
    result_ = std::move(result);
    state_.store(ok ? TransferState::kSucceeded : TransferState::kFailed,
                 std::memory_order_release);
    callbacks.swap(on_done_);
  }
  cv_.notify_all();
  for (auto& cb : callbacks) {
    cb();
  }
  return true;
}

absl::Status wait_all(std::span<const StatusHandle> statuses, std::chrono::milliseconds timeout) {
  // Saturated: a timeout beyond the clock's range waits without limit.
  const Clock::time_point deadline =
      timeout.count() < 0 ? Clock::time_point::max() : deadline_after(Clock::now(), timeout);
  for (const StatusHandle& s : statuses) {
    if (s == nullptr) {
      return absl::InvalidArgumentError("wait_all: a status is null");
    }
    if (timeout.count() < 0 || deadline == Clock::time_point::max()) {
      s->wait();
    } else if (timeout.count() == 0) {
      if (!s->done()) {
        return absl::DeadlineExceededError("wait_all: transfers still in progress");
      }
    } else {
      const auto left = deadline - Clock::now();
      if (!s->wait(std::max(left, std::chrono::steady_clock::duration::zero()))) {
        return absl::DeadlineExceededError(
            absl::StrFormat("wait_all: transfer %d still in progress after %d ms", s->transfer_id(),
                            timeout.count()));
      }
    }
  }
  for (const StatusHandle& s : statuses) {
    if (s->failed()) {
      return s->status();
    }
  }
  return absl::OkStatus();
}

}  // namespace ringxfer
