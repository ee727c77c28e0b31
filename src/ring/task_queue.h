// Cross-thread hand-over to a ring thread: a lock-free multi-producer single-consumer
// queue of tasks (Vyukov's intrusive MPSC), and a wake-up that costs a syscall only
// when the ring thread is about to sleep or sleeping. No mutex anywhere.
#pragma once

#include <atomic>
#include <cstdint>

#include "absl/functional/any_invocable.h"

namespace ringxfer::ring {

class TaskQueue {
 public:
  using Fn = absl::AnyInvocable<void() &&>;

  TaskQueue() noexcept;
  ~TaskQueue();  // runs nothing: drops what is left
  TaskQueue(const TaskQueue&) = delete;
  TaskQueue& operator=(const TaskQueue&) = delete;

  // Any thread. Returns true when the consumer was marked sleeping and must be woken
  // (the caller then writes its eventfd); exactly one producer gets true per sleep.
  bool push(Fn fn);

  // Consumer thread: runs up to `max` queued tasks, returns how many ran.
  unsigned run(unsigned max) noexcept;

  // Consumer thread, before it waits: marks itself sleeping. Returns false (and stays
  // awake) when tasks are pending, so a push that raced with the check is not missed.
  bool prepare_sleep() noexcept;
  // Consumer thread, after its wait returns.
  void awake() noexcept { sleeping_.store(false, std::memory_order_relaxed); }

  uint64_t pending() const noexcept { return pending_.load(std::memory_order_acquire); }

 private:
  struct Node {
    std::atomic<Node*> next{nullptr};
    Fn fn;
  };
  void push_node(Node* n) noexcept;
  Node* pop() noexcept;

  std::atomic<Node*> head_;  // producers push here
  Node* tail_;               // the consumer pops here
  Node stub_;
  std::atomic<uint64_t> pending_{0};
  std::atomic<bool> sleeping_{false};
};

}  // namespace ringxfer::ring
