// ring::EventLoop is one ring thread: it creates its Ring on that thread, runs tasks
// handed over from other threads, dispatches every CQE by its Tag's kind to the
// handler registered for that kind, and calls a periodic tick (for deadlines). A
// loop turn submits everything its handlers queued in one io_uring_enter.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "ring/ring.h"
#include "ring/tag.h"
#include "ring/task_queue.h"

namespace ringxfer::ring {

// Receives the CQEs of one tag kind. Runs on the loop thread; must not throw.
class CompletionHandler {
 public:
  virtual ~CompletionHandler() = default;
  virtual void on_completion(Tag tag, int32_t res, uint32_t flags) noexcept = 0;
};

struct LoopCounters {
  RingCounters ring;
  uint64_t wakeups = 0;  // eventfd writes by other threads
  uint64_t tasks = 0;    // tasks run
  uint64_t stale = 0;    // CQEs with no handler for their kind
};

class EventLoop {
 public:
  // The kind the loop itself uses for its eventfd read.
  static constexpr uint8_t kWakeKind = 255;

  // Starts the thread and creates the ring on it; fails with the ring's error.
  static absl::StatusOr<std::unique_ptr<EventLoop>> start(const RingOptions& options,
                                                          std::string name, int cpu = -1);
  // Stops and joins; tasks still queued run on this thread (see stop()).
  ~EventLoop();
  // Stops the thread and joins it (idempotent); the ring stays until destruction, so
  // handlers may still refer to this loop while it stops. Tasks still queued then run
  // on the calling thread, and so does any task posted afterwards: none is dropped.
  void stop();

  // Any thread but the loop's: the loop keeps turning (tasks, completions) until `idle()`
  // holds, checked after every turn, or `timeout_ns` passed; then runs `last` and every
  // task still queued on the loop thread, and stops; returns once it has. Shutdown
  // drains this way instead of dropping what the kernel still holds.
  void drain_and_stop(absl::AnyInvocable<bool()> idle, absl::AnyInvocable<void()> last,
                      int64_t timeout_ns);
  // Loop thread: operations of the owners in the kernel (the loop's own wake-up read
  // not counted).
  int64_t inflight() const noexcept;

  // Any thread. Runs `fn` on the loop thread soon; wakes it only if it sleeps.
  void post(absl::AnyInvocable<void() &&> fn);
  // Any thread: runs `fn` on the loop thread and returns once it has run (at once, if
  // called on the loop thread). Returns false when the loop had stopped and dropped it.
  // Never call it from another loop's thread: two loops calling each other deadlock.
  bool call(absl::AnyInvocable<void() &&> fn);

  // Loop thread (or before traffic of that kind). `handler` must outlive the loop.
  void set_handler(uint8_t kind, CompletionHandler* handler) noexcept;
  // Loop thread: called about every `period_ns` and after each turn that ran work.
  void set_tick(absl::AnyInvocable<void()> tick, int64_t period_ns);

  // Loop thread only.
  Ring& ring() noexcept { return *ring_; }
  bool in_loop_thread() const noexcept { return std::this_thread::get_id() == thread_id_; }

  // Any thread: a copy that may be slightly stale.
  LoopCounters counters() const noexcept;
  const RingFeatures& features() const noexcept { return features_; }

 private:
  EventLoop() = default;
  void run(const RingOptions& options, int cpu);
  void arm_wake() noexcept;
  void run_late_tasks();
  void dispatch(const io_uring_cqe& cqe) noexcept;
  void publish_counters() noexcept;

  std::unique_ptr<Ring> ring_;
  RingFeatures features_;
  TaskQueue tasks_;
  int wake_fd_ = -1;
  uint64_t wake_buf_ = 0;
  std::array<CompletionHandler*, 256> handlers_{};
  absl::AnyInvocable<void()> tick_;
  // Set by drain_and_stop, on the loop thread.
  bool draining_ = false;
  absl::AnyInvocable<bool()> drain_idle_;
  absl::AnyInvocable<void()> drain_last_;
  int64_t drain_deadline_ns_ = 0;
  bool wake_armed_ = false;
  uint64_t enter_failures_ = 0;  // io_uring_enter failures in a row
  int64_t tick_period_ns_ = 100'000'000;
  int64_t next_tick_ns_ = 0;
  std::atomic<bool> stop_{false};
  // Set once the loop thread has exited: posts then run on the posting thread.
  std::atomic<bool> exited_{false};
  // Recursive: a late task may post again (a callback that starts another transfer),
  // and that post runs inline on the same thread.
  std::recursive_mutex late_mu_;
  std::thread thread_;
  std::thread::id thread_id_;
  std::string name_;

  // Counters published by the loop thread for other threads to read.
  std::atomic<uint64_t> pub_sqes_{0}, pub_enters_{0}, pub_cqes_{0}, pub_full_{0}, pub_tasks_{0},
      pub_stale_{0};
  std::atomic<uint64_t> wakeups_{0};
  uint64_t tasks_run_ = 0;
  uint64_t stale_ = 0;
};

}  // namespace ringxfer::ring
