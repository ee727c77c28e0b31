// What fork() does to the engines of a process: the child inherits their memory but not
// their ring threads, so every engine there is marked forked (calls fail with
// kFailedPrecondition, the destructor joins nothing) and its transfers in flight fail.
#include <pthread.h>

#include <mutex>
#include <vector>

#include "engine/engine_impl.h"

namespace ringxfer::detail {
namespace {

// Every live engine, for the fork handlers. The prepare handler takes this lock and
// each engine's own lock, so the child inherits them in a known state.
std::mutex g_engines_mu;
std::vector<EngineImpl*>& engines() {
  static auto* v = new std::vector<EngineImpl*>();  // never destroyed: handlers may run late
  return *v;
}

void before_fork() {
  g_engines_mu.lock();
  for (EngineImpl* e : engines()) {
    e->mu.lock();
  }
}

void after_fork_in_parent() {
  for (EngineImpl* e : engines()) {
    e->mu.unlock();
  }
  g_engines_mu.unlock();
}

void after_fork_in_child() {
  // Only this thread exists here. Transfers in flight will never finish: fail them, so
  // that nobody in the child waits forever.
  for (EngineImpl* e : engines()) {
    e->forked.store(true, std::memory_order_release);
    for (auto& [key, weak] : e->inflight) {
      if (StatusHandle s = weak.lock()) {
        s->finish(absl::FailedPreconditionError(
            "the process forked while this transfer was in flight; it cannot finish in the child"));
      }
    }
    e->inflight.clear();
    e->mu.unlock();
  }
  g_engines_mu.unlock();
}

}  // namespace

void track(EngineImpl* e) {
  static std::once_flag once;
  std::call_once(once,
                 [] { pthread_atfork(before_fork, after_fork_in_parent, after_fork_in_child); });
  std::lock_guard lock(g_engines_mu);
  engines().push_back(e);
}

void untrack(EngineImpl* e) {
  std::lock_guard lock(g_engines_mu);
  std::erase(engines(), e);
}

}  // namespace ringxfer::detail
