#include "ring/task_queue.h"

#include <utility>

namespace ringxfer::ring {

TaskQueue::TaskQueue() noexcept : head_(&stub_), tail_(&stub_) {}

TaskQueue::~TaskQueue() {
  while (Node* n = pop()) {
    delete n;
  }
}

void TaskQueue::push_node(Node* n) noexcept {
  n->next.store(nullptr, std::memory_order_relaxed);
  Node* prev = head_.exchange(n, std::memory_order_acq_rel);
  prev->next.store(n, std::memory_order_release);
}

bool TaskQueue::push(Fn fn) {
  Node* n = new Node;
  n->fn = std::move(fn);
  // Counted before it is linked, so the count never drops below the visible nodes.
  // seq_cst pairs with prepare_sleep(): either the consumer sees the count, or this
  // producer sees `sleeping_` and wakes it.
  pending_.fetch_add(1, std::memory_order_seq_cst);
  push_node(n);
  bool expected = true;
  return sleeping_.load(std::memory_order_seq_cst) &&
         sleeping_.compare_exchange_strong(expected, false, std::memory_order_seq_cst);
}

TaskQueue::Node* TaskQueue::pop() noexcept {
  Node* tail = tail_;
  Node* next = tail->next.load(std::memory_order_acquire);
  if (tail == &stub_) {
    if (next == nullptr) {
      return nullptr;
    }
    tail_ = next;
    tail = next;
    next = next->next.load(std::memory_order_acquire);
  }
  if (next != nullptr) {
    tail_ = next;
    return tail;
  }
  if (tail != head_.load(std::memory_order_acquire)) {
    return nullptr;  // a producer is between its exchange and its link: retry later
  }
  push_node(&stub_);
  next = tail->next.load(std::memory_order_acquire);
  if (next != nullptr) {
    tail_ = next;
    return tail;
  }
  return nullptr;
}

unsigned TaskQueue::run(unsigned max) noexcept {
  unsigned ran = 0;
  while (ran < max) {
    Node* n = pop();
    if (n == nullptr) {
      break;
    }
    pending_.fetch_sub(1, std::memory_order_acq_rel);
    std::move(n->fn)();
    delete n;
    ++ran;
  }
  return ran;
}

bool TaskQueue::prepare_sleep() noexcept {
  sleeping_.store(true, std::memory_order_seq_cst);
  if (pending_.load(std::memory_order_seq_cst) != 0) {
    sleeping_.store(false, std::memory_order_relaxed);
    return false;
  }
  return true;
}

}  // namespace ringxfer::ring
