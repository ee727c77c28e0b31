#include "ring/ring.h"
#include "ring/tag.h"

#include <sys/resource.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

#include "absl/strings/str_format.h"
#include "base/check.h"
#include "base/errno_status.h"
#include "base/log.h"

namespace ringxfer::ring {
namespace {

// Opcodes every connection relies on; SEND_ZC is optional.
constexpr struct {
  int op;
  const char* name;
} kRequiredOps[] = {
    {IORING_OP_ACCEPT, "ACCEPT"},   {IORING_OP_CONNECT, "CONNECT"},
    {IORING_OP_SEND, "SEND"},       {IORING_OP_RECV, "RECV"},
    {IORING_OP_SENDMSG, "SENDMSG"}, {IORING_OP_RECVMSG, "RECVMSG"},
    {IORING_OP_READ, "READ"},       {IORING_OP_ASYNC_CANCEL, "ASYNC_CANCEL"},
};

absl::Status unavailable(int err) {
  return absl::UnavailableError(absl::StrFormat(
      "io_uring is not available: io_uring_setup failed with %s (errno %d). ringxfer needs "
      "Linux 6.0 or newer with io_uring enabled: check sysctl kernel.io_uring_disabled=0, and "
      "in a container allow the io_uring_setup/io_uring_enter/io_uring_register syscalls "
      "(Docker's default seccomp profile blocks them: run with --security-opt "
      "seccomp=<profile allowing io_uring> or seccomp=unconfined)",
      std::strerror(err), err));
}

}  // namespace

std::string RingFeatures::describe() const {
  return absl::StrFormat(
      "single_issuer=%d defer_taskrun=%d coop_taskrun=%d sqpoll=%d send_zc=%d "
      "zc_report_usage=%d ext_arg=%d fixed_files=%d fixed_buffers=%d",
      single_issuer, defer_taskrun, coop_taskrun, sqpoll, send_zc, zc_report_usage, ext_arg,
      fixed_files, fixed_buffers);
}

absl::StatusOr<std::unique_ptr<Ring>> Ring::create(const RingOptions& options) {
  std::unique_ptr<Ring> r(new Ring());
  io_uring_params p{};
  // Try the best mode first and step down; each step is one flag set the running
  // kernel may not know (SINGLE_ISSUER 6.0, DEFER_TASKRUN 6.1, COOP_TASKRUN 5.19).
  struct Mode {
    unsigned flags;
    bool single, defer, coop;
  };
  const unsigned base = IORING_SETUP_CQSIZE | IORING_SETUP_SUBMIT_ALL;
  const Mode modes[] = {
      {base | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN, true, true, false},
      {base | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG,
       true, false, true},
      {base | IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG, false, false, true},
      {base, false, false, false},
  };
  int err = EINVAL;
  for (const Mode& m : modes) {
    p = io_uring_params{};
    p.flags = m.flags;
    p.cq_entries = options.entries * 4;
    if (options.sqpoll) {
      // SQPOLL cannot be combined with DEFER_TASKRUN.
      if (m.defer) {
        continue;
      }
      p.flags |= IORING_SETUP_SQPOLL;
      p.sq_thread_idle = options.sqpoll_idle_ms;
    }
    err = -io_uring_queue_init_params(options.entries, &r->ring_, &p);
    if (err == 0) {
      r->features_.single_issuer = m.single;
      r->features_.defer_taskrun = m.defer;
      r->features_.coop_taskrun = m.coop;
      r->features_.sqpoll = options.sqpoll;
      break;
    }
    if (err != EINVAL) {
      break;
    }
  }
  if (err != 0) {
    if (err == ENOSYS || err == EPERM || err == EACCES) {
      return unavailable(err);
    }
    return base::errno_to_status(err, "io_uring_queue_init");
  }
  r->initialized_ = true;
  r->features_.ext_arg = (p.features & IORING_FEAT_EXT_ARG) != 0;

  io_uring_probe* probe = io_uring_get_probe_ring(&r->ring_);
  if (probe == nullptr) {
    return absl::UnavailableError(
        "io_uring: the kernel does not support opcode probing "
        "(IORING_REGISTER_PROBE, Linux 5.6); ringxfer needs Linux 6.0+");
  }
  for (const auto& op : kRequiredOps) {
    if (!io_uring_opcode_supported(probe, op.op)) {
      io_uring_free_probe(probe);
      return absl::UnavailableError(absl::StrFormat(
          "io_uring: the kernel does not support IORING_OP_%s, which ringxfer needs; use Linux "
          "6.0 or newer",
          op.name));
    }
  }
  r->features_.send_zc = io_uring_opcode_supported(probe, IORING_OP_SEND_ZC) &&
                         io_uring_opcode_supported(probe, IORING_OP_SENDMSG_ZC);
  io_uring_free_probe(probe);
  // Usage reports came with 6.2, one release after SEND_ZC; the probe cannot tell, so
  // the first notification without the flag's effect is the fallback (see transport).
  r->features_.zc_report_usage = r->features_.send_zc;
  if (!r->features_.ext_arg) {
    return absl::UnavailableError(
        "io_uring: the kernel lacks IORING_FEAT_EXT_ARG (Linux 5.11); use Linux 6.0 or newer");
  }
  // Sparse tables (Linux 5.19): empty slots cost nothing and pin nothing.
  rlimit nofile{};
  unsigned files = options.file_slots;
  if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur != RLIM_INFINITY) {
    files = static_cast<unsigned>(std::min<rlim_t>(files, nofile.rlim_cur));
  }
  if (files > 0 && io_uring_register_files_sparse(&r->ring_, files) == 0) {
    r->features_.fixed_files = true;
    for (int i = static_cast<int>(files) - 1; i >= 0; --i) {
      r->free_files_.push_back(i);
    }
  }
  if (options.buffer_slots > 0 &&
      io_uring_register_buffers_sparse(&r->ring_, options.buffer_slots) == 0) {
    r->features_.fixed_buffers = true;
    for (int i = static_cast<int>(options.buffer_slots) - 1; i >= 0; --i) {
      r->free_buffers_.push_back(i);
    }
  }
  return r;
}

Ring::~Ring() {
  if (initialized_) {
    io_uring_queue_exit(&ring_);
  }
}

io_uring_sqe* Ring::sqe(uint64_t user_data) noexcept {
  io_uring_sqe* s = io_uring_get_sqe(&ring_);
  if (s == nullptr) [[unlikely]] {
    // The SQ is full: hand it to the kernel and take a slot from the emptied queue.
    ++counters_.full_flushes;
    make_room();
    s = io_uring_get_sqe(&ring_);
    RX_CHECK_MSG(s != nullptr, "no SQE after the SQ was submitted");
  }
  io_uring_sqe_set_data64(s, user_data);
  ++inflight_;
  return s;
}

unsigned Ring::queued() const noexcept { return io_uring_sq_ready(&ring_); }

int Ring::flush() noexcept {
  const unsigned n = io_uring_sq_ready(&ring_);
  if (n == 0) {
    return 0;
  }
  const int ret = io_uring_submit(&ring_);
  if (!features_.sqpoll || (*ring_.sq.kflags & IORING_SQ_NEED_WAKEUP) != 0) {
    ++counters_.enters;
  }
  if (ret > 0) {
    counters_.sqes += static_cast<uint64_t>(ret);
  }
  return ret;
}

int Ring::submit_and_wait(int64_t timeout_ns) noexcept {
  if (!backlog_.empty()) {
    timeout_ns = 0;  // completions are already waiting to be reaped
  }
  const unsigned n = io_uring_sq_ready(&ring_);
  if (n == 0 && io_uring_cq_ready(&ring_) > 0) {
    return 0;  // work is already waiting: no need to enter the kernel
  }
  if (timeout_ns == 0) {
    // GETEVENTS without waiting: with DEFER_TASKRUN completions are only posted by an
    // enter that asks for events, so a busy loop must not use a plain submit.
    const int ret = io_uring_submit_and_get_events(&ring_);
    ++counters_.enters;
    if (ret >= 0) {
      counters_.sqes += n;
      return 0;
    }
    return ret == -EINTR || ret == -EBUSY || ret == -EAGAIN ? 0 : ret;
  }
  io_uring_cqe* cqe = nullptr;
  int ret;
  if (timeout_ns < 0) {
    ret = io_uring_submit_and_wait(&ring_, 1);
  } else {
    __kernel_timespec ts{};
    ts.tv_sec = timeout_ns / 1000000000;
    ts.tv_nsec = timeout_ns % 1000000000;
    // With EXT_ARG this is one io_uring_enter that submits and waits.
    ret = io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, &ts, nullptr);
  }
  ++counters_.enters;
  if (ret >= 0) {
    counters_.sqes += n;
    return 0;
  }
  if (ret == -ETIME || ret == -EINTR || ret == -EBUSY || ret == -EAGAIN) {
    // The SQEs were submitted before the wait ran out (EXT_ARG semantics).
    counters_.sqes += n - io_uring_sq_ready(&ring_);
    return 0;
  }
  return ret;
}

void Ring::reserve(unsigned n) noexcept {
  if (io_uring_sq_space_left(&ring_) < n) {
    ++counters_.full_flushes;
    make_room();
  }
}

void Ring::make_room() noexcept {
  int64_t pause_us = 1;
  for (int attempt = 0;; ++attempt) {
    const int ret = flush();
    if (io_uring_sq_space_left(&ring_) > 0 && ret >= 0) {
      return;
    }
    if (ret == -EBUSY || ret == -EAGAIN || io_uring_cq_ready(&ring_) > 0) {
      // Completions the kernel cannot post until the CQ has room: take them off now
      // (copied, delivered by the next reap) instead of submitting again at once.
      io_uring_cqe* batch[kReapBatch];
      unsigned n;
      while ((n = io_uring_peek_batch_cqe(&ring_, batch, kReapBatch)) > 0) {
        for (unsigned i = 0; i < n; ++i) {
          backlog_.push_back(*batch[i]);
        }
        io_uring_cq_advance(&ring_, n);
        counters_.cqes += n;
      }
    }
    if (ret >= 0 && features_.sqpoll) {
      // SQPOLL: the kernel thread has not consumed the SQ yet.
      io_uring_sqring_wait(&ring_);
      continue;
    }
    if (ret < 0 && ret != -EINTR && ret != -EBUSY && ret != -EAGAIN) {
      RX_CHECK_MSG(attempt < 2000, "io_uring_submit keeps failing with a full SQ");
      if (attempt == 0) {
        RX_LOG(kError, "io_uring_submit failed with a full SQ: %s; retrying with back-off",
               base::errno_to_status(-ret, "submit").ToString());
      }
    }
    if (attempt > 0 && ret < 0) {
      // Give the kernel (memory, the CQ) time; doubling up to 10 ms.
      std::this_thread::sleep_for(std::chrono::microseconds(pause_us));
      pause_us = std::min<int64_t>(pause_us * 2, 10'000);
    }
  }
}

namespace {

void on_socket(io_uring_sqe* sqe, Socket s) noexcept {
  if (s.file >= 0) {
    sqe->fd = s.file;
    sqe->flags |= IOSQE_FIXED_FILE;
  }
}

}  // namespace

void Ring::send(uint64_t tag, Socket s, const void* buf, size_t len, int flags) noexcept {
  io_uring_sqe* q = sqe(tag);
  io_uring_prep_send(q, s.fd, buf, len, flags);
  on_socket(q, s);
}

void Ring::sendmsg(uint64_t tag, Socket s, const msghdr* msg, int flags) noexcept {
  io_uring_sqe* q = sqe(tag);
  io_uring_prep_sendmsg(q, s.fd, msg, static_cast<unsigned>(flags));
  on_socket(q, s);
}

void Ring::sendmsg_zc(uint64_t tag, Socket s, const msghdr* msg, int flags) noexcept {
  io_uring_sqe* q = sqe(tag);
  io_uring_prep_sendmsg_zc(q, s.fd, msg, static_cast<unsigned>(flags));
  q->ioprio |= kSendZcReportUsage;
  on_socket(q, s);
}

void Ring::send_zc_fixed(uint64_t tag, Socket s, const void* payload, size_t len, unsigned buffer,
                         int flags) noexcept {
  io_uring_sqe* z = sqe(tag);
  io_uring_prep_send_zc_fixed(z, s.fd, payload, len, flags, 0, buffer);
  z->ioprio |= kSendZcReportUsage;
  on_socket(z, s);
}

void Ring::recv(uint64_t tag, Socket s, void* buf, size_t len, int flags) noexcept {
  io_uring_sqe* q = sqe(tag);
  io_uring_prep_recv(q, s.fd, buf, len, flags);
  on_socket(q, s);
}

void Ring::recvmsg(uint64_t tag, Socket s, msghdr* msg, int flags) noexcept {
  io_uring_sqe* q = sqe(tag);
  io_uring_prep_recvmsg(q, s.fd, msg, static_cast<unsigned>(flags));
  on_socket(q, s);
}

void Ring::connect(uint64_t tag, Socket s, const sockaddr* addr, socklen_t len) noexcept {
  io_uring_sqe* q = sqe(tag);
  io_uring_prep_connect(q, s.fd, addr, len);
  on_socket(q, s);
}

void Ring::accept(uint64_t tag, int listen_fd, int flags) noexcept {
  io_uring_prep_accept(sqe(tag), listen_fd, nullptr, nullptr, flags);
}

void Ring::cancel_fd(int fd) noexcept {
  io_uring_prep_cancel_fd(sqe(kTagIgnore), fd, IORING_ASYNC_CANCEL_ALL);
}

int Ring::install_file(int fd) noexcept {
  if (free_files_.empty()) {
    return -1;
  }
  const int slot = free_files_.back();
  if (io_uring_register_files_update(&ring_, static_cast<unsigned>(slot), &fd, 1) != 1) {
    return -1;
  }
  free_files_.pop_back();
  return slot;
}

void Ring::remove_file(int slot) noexcept {
  if (slot < 0) {
    return;
  }
  int none = -1;
  (void)io_uring_register_files_update(&ring_, static_cast<unsigned>(slot), &none, 1);
  free_files_.push_back(slot);
}

absl::StatusOr<int> Ring::install_buffer(void* base, size_t len) noexcept {
  if (free_buffers_.empty()) {
    return absl::ResourceExhaustedError(features_.fixed_buffers
                                            ? "the registered-buffer table is full"
                                            : "the kernel has no sparse registered buffers");
  }
  if (len == 0 || len > (size_t{1} << 30)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%d bytes: a registered buffer holds 1 B..1 GiB", len));
  }
  const int slot = free_buffers_.back();
  iovec iov{base, len};
  __u64 tag = 0;
  const int ret =
      io_uring_register_buffers_update_tag(&ring_, static_cast<unsigned>(slot), &iov, &tag, 1);
  if (ret < 0) {
    if (ret == -ENOMEM) {
      return absl::ResourceExhaustedError(
          absl::StrFormat("pinning %d bytes exceeds RLIMIT_MEMLOCK (ulimit -l) or memory", len));
    }
    return base::errno_to_status(-ret, "io_uring_register_buffers_update_tag");
  }
  free_buffers_.pop_back();
  return slot;
}

void Ring::remove_buffer(int slot) noexcept {
  if (slot < 0) {
    return;
  }
  iovec none{nullptr, 0};
  __u64 tag = 0;
  (void)io_uring_register_buffers_update_tag(&ring_, static_cast<unsigned>(slot), &none, &tag, 1);
  free_buffers_.push_back(slot);
}

}  // namespace ringxfer::ring
