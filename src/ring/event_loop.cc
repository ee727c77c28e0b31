#include "ring/event_loop.h"

#include <pthread.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <future>

#include "base/check.h"
#include "base/errno_status.h"
#include "base/log.h"

namespace ringxfer::ring {
namespace {

int64_t now_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

absl::StatusOr<std::unique_ptr<EventLoop>> EventLoop::start(const RingOptions& options,
                                                            std::string name, int cpu) {
  std::unique_ptr<EventLoop> loop(new EventLoop());
  loop->name_ = std::move(name);
  loop->wake_fd_ = eventfd(0, EFD_CLOEXEC);
  if (loop->wake_fd_ < 0) {
    return base::errno_to_status(errno, "eventfd");
  }
  std::promise<absl::Status> created;
  std::future<absl::Status> result = created.get_future();
  EventLoop* self = loop.get();
  loop->thread_ = std::thread([self, options, cpu, &created]() {
    self->thread_id_ = std::this_thread::get_id();
    pthread_setname_np(pthread_self(), self->name_.substr(0, 15).c_str());
    if (cpu >= 0) {
      cpu_set_t set;
      CPU_ZERO(&set);
      CPU_SET(cpu, &set);
      if (pthread_setaffinity_np(pthread_self(), sizeof(set), &set) != 0) {
        RX_LOG(kWarn, "%s: could not pin to cpu %d; running unpinned", self->name_, cpu);
      }
    }
    absl::StatusOr<std::unique_ptr<Ring>> ring = Ring::create(options);
    if (!ring.ok()) {
      created.set_value(ring.status());
      return;
    }
    self->ring_ = std::move(*ring);
    self->features_ = self->ring_->features();
    created.set_value(absl::OkStatus());
    self->run(options, cpu);
  });
  absl::Status st = result.get();
  if (!st.ok()) {
    loop->thread_.join();
    return st;
  }
  return loop;
}

void EventLoop::stop() {
  stop_.store(true, std::memory_order_release);
  if (thread_.joinable()) {
    const uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(wake_fd_, &one, sizeof(one));
    thread_.join();
  }
  run_late_tasks();
}

void EventLoop::run_late_tasks() {
  // The loop thread is gone: tasks still queued (or posted from now on) run here, on
  // the thread that stopped the loop, so that no callback is lost and no descriptor a
  // task carries leaks. Their owners see that they are stopping.
  std::lock_guard lock(late_mu_);
  exited_.store(true, std::memory_order_release);
  while (tasks_.run(256) > 0) {
  }
}

EventLoop::~EventLoop() {
  stop();
  ring_.reset();
  if (wake_fd_ >= 0) {
    ::close(wake_fd_);
  }
}

void EventLoop::post(absl::AnyInvocable<void() &&> fn) {
  if (exited_.load(std::memory_order_acquire)) {
    std::lock_guard lock(late_mu_);  // one consumer at a time (TaskQueue is MPSC)
    std::move(fn)();
    return;
  }
  if (tasks_.push(std::move(fn))) {
    wakeups_.fetch_add(1, std::memory_order_relaxed);
    const uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(wake_fd_, &one, sizeof(one));
  }
}

bool EventLoop::call(absl::AnyInvocable<void() &&> fn) {
  if (in_loop_thread()) {
    std::move(fn)();
    return true;
  }
  if (stop_.load(std::memory_order_acquire)) {
    return false;
  }
  // A task the loop drops (it stopped first) breaks the promise, which also ends the wait.
  std::promise<bool> ran;
  std::future<bool> done = ran.get_future();
  post([fn = std::move(fn), ran = std::move(ran)]() mutable {
    std::move(fn)();
    ran.set_value(true);
  });
  done.wait();
  try {
    return done.get();
  } catch (const std::future_error&) {
    return false;
  }
}

void EventLoop::drain_and_stop(absl::AnyInvocable<bool()> idle, absl::AnyInvocable<void()> last,
                               int64_t timeout_ns) {
  RX_CHECK(!in_loop_thread());
  if (!thread_.joinable() || stop_.load(std::memory_order_acquire)) {
    return;
  }
  post([this, idle = std::move(idle), last = std::move(last), timeout_ns]() mutable {
    draining_ = true;
    drain_idle_ = std::move(idle);
    drain_last_ = std::move(last);
    drain_deadline_ns_ = now_ns() + timeout_ns;
  });
  thread_.join();
  stop_.store(true, std::memory_order_release);
  run_late_tasks();
}

int64_t EventLoop::inflight() const noexcept {
  return static_cast<int64_t>(ring_->inflight()) - (wake_armed_ ? 1 : 0);
}

void EventLoop::set_handler(uint8_t kind, CompletionHandler* handler) noexcept {
  RX_CHECK(kind != 0 && kind != kWakeKind);
  handlers_[kind] = handler;
}

void EventLoop::set_tick(absl::AnyInvocable<void()> tick, int64_t period_ns) {
  tick_ = std::move(tick);
  tick_period_ns_ = period_ns;
  next_tick_ns_ = now_ns() + period_ns;
}

void EventLoop::arm_wake() noexcept {
  io_uring_sqe* sqe = ring_->sqe(Tag{kWakeKind, 0, 0, 0}.pack());
  io_uring_prep_read(sqe, wake_fd_, &wake_buf_, sizeof(wake_buf_), 0);
  wake_armed_ = true;
}

void EventLoop::dispatch(const io_uring_cqe& cqe) noexcept {
  if (cqe.user_data == kTagIgnore) {
    return;
  }
  const Tag tag = Tag::unpack(cqe.user_data);
  if (tag.kind == kWakeKind) {
    wake_armed_ = false;
    arm_wake();
    return;
  }
  CompletionHandler* h = handlers_[tag.kind];
  if (h == nullptr) {
    ++stale_;
    return;
  }
  h->on_completion(tag, cqe.res, cqe.flags);
}

void EventLoop::publish_counters() noexcept {
  const RingCounters& c = ring_->counters();
  pub_sqes_.store(c.sqes, std::memory_order_relaxed);
  pub_enters_.store(c.enters, std::memory_order_relaxed);
  pub_cqes_.store(c.cqes, std::memory_order_relaxed);
  pub_full_.store(c.full_flushes, std::memory_order_relaxed);
  pub_tasks_.store(tasks_run_, std::memory_order_relaxed);
  pub_stale_.store(stale_, std::memory_order_relaxed);
}

LoopCounters EventLoop::counters() const noexcept {
  LoopCounters c;
  c.ring.sqes = pub_sqes_.load(std::memory_order_relaxed);
  c.ring.enters = pub_enters_.load(std::memory_order_relaxed);
  c.ring.cqes = pub_cqes_.load(std::memory_order_relaxed);
  c.ring.full_flushes = pub_full_.load(std::memory_order_relaxed);
  c.tasks = pub_tasks_.load(std::memory_order_relaxed);
  c.stale = pub_stale_.load(std::memory_order_relaxed);
  c.wakeups = wakeups_.load(std::memory_order_relaxed);
  return c;
}

void EventLoop::run(const RingOptions&, int) {
  arm_wake();
  next_tick_ns_ = now_ns() + tick_period_ns_;
  auto on_cqe = [this](const io_uring_cqe& cqe) { dispatch(cqe); };
  unsigned skipped = 0;
  while (!stop_.load(std::memory_order_acquire)) {
    // Tasks first (they queue SQEs), then completions (their handlers queue more).
    const unsigned ran = tasks_.run(256);
    tasks_run_ += ran;
    ring_->reap(on_cqe);
    const int64_t now = now_ns();
    if (now >= next_tick_ns_) {
      next_tick_ns_ = now + tick_period_ns_;
      if (tick_) {
        tick_();
      }
    }
    publish_counters();
    if (draining_ && (drain_idle_() || now >= drain_deadline_ns_)) {
      if (!drain_idle_()) {
        RX_LOG(kError, "%s: %d operations still in the kernel when the shutdown timed out", name_,
               inflight());
      }
      std::move(drain_last_)();
      while (tasks_.run(256) > 0) {
      }
      publish_counters();
      return;
    }
    // One io_uring_enter per turn. With no task waiting it submits everything queued
    // and waits for a CQE, a wake-up or the tick; a CQE that is already there (or
    // deferred task work, with DEFER_TASKRUN) ends the wait at once, so a busy loop
    // needs no separate non-waiting enter. With tasks waiting it only submits, and
    // only when something is queued (or every few turns, to post deferred completions).
    int ret = 0;
    if (tasks_.prepare_sleep()) {
      ret = ring_->submit_and_wait(next_tick_ns_ - now > 0 ? next_tick_ns_ - now : 0);
      tasks_.awake();
      skipped = 0;
    } else if (ring_->queued() > 0 || ++skipped >= 8) {
      ret = ring_->submit_and_wait(0);
      skipped = 0;
    }
    if (ret < 0) {
      // Entering again at once would fail again at once: back off (doubling to 100 ms),
      // and say so for the first failure and then at every power of two.
      ++enter_failures_;
      if ((enter_failures_ & (enter_failures_ - 1)) == 0) {
        RX_LOG(kError, "%s: io_uring_enter failed (%d times in a row): %s", name_, enter_failures_,
               base::errno_to_status(-ret, "submit").ToString());
      }
      std::this_thread::sleep_for(std::chrono::microseconds(
          std::min<int64_t>(int64_t{100} << std::min<uint64_t>(enter_failures_, 10), 100'000)));
    } else {
      enter_failures_ = 0;
    }
  }
  // Drain completions of what is still in flight so nothing is left referencing
  // memory the owners are about to free; owners cancel their ops before stopping.
  ring_->reap(on_cqe);
  publish_counters();
}

}  // namespace ringxfer::ring
