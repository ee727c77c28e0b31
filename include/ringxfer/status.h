// TransferStatus: the state of one transfer (or one batch), shared between the caller
// and the engine. It is in progress, or already final, when the call that made it
// returns, and it becomes final in the background: polling is enough. Thread-safe.
// Public API: std and absl only.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace ringxfer {

enum class TransferState : uint8_t { kInit = 0, kInProgress = 1, kSucceeded = 2, kFailed = 3 };

// A transfer whose copy to or from GPU memory failed (on either engine) fails with
// kInternal and a message that starts with this (Python: StatusCode.ERR_GPU_OP).
inline constexpr char kGpuCopyFailed[] = "GPU copy";

// Codes a failed transfer carries (absl canonical codes):
//   kInvalidArgument    a bad argument (reported at the call, never on a status)
//   kNotFound           the remote memory id is not registered there
//   kOutOfRange         offset+size beyond the remote region
//   kFailedPrecondition bad state (for example a deregistered engine)
//   kDeadlineExceeded   the operation timeout ran out
//   kUnavailable        the connection was refused, lost or closed
//   kPermissionDenied   access denied by the remote engine
//   kResourceExhausted  a limit of the remote engine
class TransferStatus {
 public:
  // `spin`: how long wait() first yields the CPU in a loop, watching for the end,
  // before it sleeps (EngineConfig::wait_spin).
  explicit TransferStatus(uint64_t transfer_id,
                          std::chrono::nanoseconds spin = std::chrono::nanoseconds(0)) noexcept
      : id_(transfer_id), spin_(spin) {}

  uint64_t transfer_id() const noexcept { return id_; }
  TransferState state() const noexcept { return state_.load(std::memory_order_acquire); }
  bool init() const noexcept { return state() == TransferState::kInit; }
  bool in_progress() const noexcept { return state() == TransferState::kInProgress; }
  bool succeeded() const noexcept { return state() == TransferState::kSucceeded; }
  bool failed() const noexcept { return state() == TransferState::kFailed; }
  bool done() const noexcept { return succeeded() || failed(); }

  // OK once succeeded; the failure once failed; kUnavailable "in progress" before.
  absl::Status status() const;
  absl::StatusCode code() const { return status().code(); }
  std::string message() const { return std::string(status().message()); }

  // Blocks until final or `timeout` passes (< 0, or too long to add to steady_clock's
  // now: no limit); returns done(). It first yields the CPU in a loop for up to the spin
  // time given at construction (a transfer that ends within it costs no sleep and
  // wake-up), then sleeps on a condition variable.
  bool wait(std::chrono::nanoseconds timeout) const;
  void wait() const;

  // Calls `fn` once, on the thread that finishes the transfer (or now, on this thread,
  // if it is final already). `fn` must be quick and must not block. Several callbacks
  // may be registered; they run in registration order.
  void on_done(std::function<void()> fn);

  // Engine side.
  void set_in_progress() noexcept;
  // First call wins; later ones are ignored. Returns whether this call finished it.
  bool finish(absl::Status result);

 private:
  const uint64_t id_;
  const std::chrono::nanoseconds spin_;
  std::atomic<TransferState> state_{TransferState::kInit};
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  absl::Status result_;                         // guarded by mu_
  std::vector<std::function<void()>> on_done_;  // guarded by mu_
};

using StatusHandle = std::shared_ptr<TransferStatus>;

// Waits for every status (timeout < 0, or too long to add to steady_clock's now: without
// limit; 0: just polls; > 0: one deadline for all). Returns OK when all succeeded, the
// first failure in list order once all are final, or kDeadlineExceeded when the deadline
// passed with some still running.
absl::Status wait_all(std::span<const StatusHandle> statuses, std::chrono::milliseconds timeout);

}  // namespace ringxfer
