// Makes a thread see what a non-root user sees: io_uring charges the pages it pins for
// registered buffers to RLIMIT_MEMLOCK unless the task has CAP_IPC_LOCK.
#pragma once

#include <linux/capability.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>

namespace ringxfer::testing {

// Drops CAP_IPC_LOCK from the calling thread (capabilities are per thread; threads it
// creates inherit the reduced set). False when the kernel refuses.
inline bool drop_ipc_lock_on_this_thread() {
  __user_cap_header_struct h{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct d[2]{};
  if (syscall(SYS_capget, &h, d) != 0) {
    return false;
  }
  d[0].effective &= ~(1U << CAP_IPC_LOCK);
  d[0].permitted &= ~(1U << CAP_IPC_LOCK);
  d[0].inheritable &= ~(1U << CAP_IPC_LOCK);
  return syscall(SYS_capset, &h, d) == 0;
}

// Lowers the process's RLIMIT_MEMLOCK soft limit to at most `bytes` for its lifetime.
class MemlockLimit {
 public:
  explicit MemlockLimit(rlim_t bytes) {
    ok_ = getrlimit(RLIMIT_MEMLOCK, &old_) == 0;
    rlimit lowered = old_;
    lowered.rlim_cur = std::min(old_.rlim_cur, bytes);
    ok_ = ok_ && setrlimit(RLIMIT_MEMLOCK, &lowered) == 0;
  }
  ~MemlockLimit() {
    if (ok_) {
      setrlimit(RLIMIT_MEMLOCK, &old_);
    }
  }
  MemlockLimit(const MemlockLimit&) = delete;
  MemlockLimit& operator=(const MemlockLimit&) = delete;
  bool ok() const { return ok_; }

 private:
  rlimit old_{};
  bool ok_ = false;
};

}  // namespace ringxfer::testing
