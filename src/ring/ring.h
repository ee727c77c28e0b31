// ring::Ring owns one io_uring and is used by exactly one thread, the one that
// created it (IORING_SETUP_SINGLE_ISSUER). It queues SQEs, submits everything queued
// in one io_uring_enter per loop turn, reaps CQEs in batches and counts what it does.
// It knows nothing of sockets' meaning, frames or peers.
#pragma once

#include <liburing.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace ringxfer::ring {

// Kernel ABI the Debian liburing 2.3 headers predate (Linux 6.2,
// io_uring/notif.h): ask SEND_ZC notifications to report whether the kernel copied.
inline constexpr unsigned kSendZcReportUsage = 1U << 3;    // IORING_SEND_ZC_REPORT_USAGE
inline constexpr uint32_t kNotifUsageZcCopied = 1U << 31;  // IORING_NOTIF_USAGE_ZC_COPIED

// CQE flags, for handlers that must not include liburing.
inline constexpr uint32_t kCqeMore = IORING_CQE_F_MORE;    // another CQE of this op follows
inline constexpr uint32_t kCqeNotif = IORING_CQE_F_NOTIF;  // a zero-copy notification

// Where an operation's socket is: a registered-file slot (file >= 0) or a plain fd.
struct Socket {
  int fd = -1;
  int file = -1;
};

struct RingOptions {
  unsigned entries = 256;  // SQ size; the CQ gets 4x (many sends finish with two CQEs)
  bool sqpoll = false;     // a kernel thread polls the SQ (costs a core)
  unsigned sqpoll_idle_ms = 50;
  // Sizes of the sparse registered-file and registered-buffer tables (0: none). The
  // file table is capped by RLIMIT_NOFILE.
  unsigned file_slots = 1024;
  unsigned buffer_slots = 256;
};

// What the kernel granted; each false field fell back with one log line.
struct RingFeatures {
  bool single_issuer = false;
  bool defer_taskrun = false;
  bool coop_taskrun = false;
  bool sqpoll = false;
  bool send_zc = false;          // IORING_OP_SEND_ZC / SENDMSG_ZC
  bool zc_report_usage = false;  // notifications say when the kernel copied
  bool ext_arg = false;          // waits with a timeout need no timeout SQE
  bool fixed_files = false;      // a sparse registered-file table
  bool fixed_buffers = false;    // a sparse registered-buffer table
  std::string describe() const;
};

struct RingCounters {
  uint64_t sqes = 0;          // SQEs submitted
  uint64_t enters = 0;        // io_uring_enter calls made by this ring
  uint64_t cqes = 0;          // CQEs reaped
  uint64_t full_flushes = 0;  // times a full SQ forced an early submit
};

class Ring {
 public:
  // Creates the ring on the calling thread, which becomes its only submitter. Fails
  // with kUnavailable and a message saying what to change when io_uring is missing or
  // blocked (old kernel, seccomp, sysctl), or when an opcode ringxfer relies on is not
  // supported.
  static absl::StatusOr<std::unique_ptr<Ring>> create(const RingOptions& options);
  ~Ring();
  Ring(const Ring&) = delete;
  Ring& operator=(const Ring&) = delete;

  // A free SQE, tagged with `user_data`. When the SQ is full it submits what is queued
  // first; never returns null.
  io_uring_sqe* sqe(uint64_t user_data) noexcept;

  // SQEs queued and not yet submitted.
  unsigned queued() const noexcept;

  // Submits everything queued and waits up to `timeout_ns` (negative: forever, 0: no
  // wait) for at least one CQE, in one io_uring_enter. Returns a negative errno only
  // for errors other than a timeout or an interrupted wait.
  int submit_and_wait(int64_t timeout_ns) noexcept;

  // Reaps every available CQE in batches: copies a batch, advances the CQ once, then
  // calls fn(const io_uring_cqe&) for each (handlers may queue new SQEs). Returns the
  // number reaped.
  template <typename Fn>
  unsigned reap(Fn&& fn) noexcept {
    unsigned total = 0;
    if (!backlog_.empty()) [[unlikely]] {
      // CQEs moved aside while a full SQ waited for room (make_room), oldest first.
      std::vector<io_uring_cqe> held;
      held.swap(backlog_);
      for (const io_uring_cqe& c : held) {
        if ((c.flags & IORING_CQE_F_MORE) == 0) {
          --inflight_;
        }
        ++total;
        fn(c);
      }
    }
    for (;;) {
      io_uring_cqe* batch[kReapBatch];
      const unsigned n = io_uring_peek_batch_cqe(&ring_, batch, kReapBatch);
      if (n == 0) {
        return total;
      }
      io_uring_cqe copies[kReapBatch];
      for (unsigned i = 0; i < n; ++i) {
        copies[i] = *batch[i];
      }
      io_uring_cq_advance(&ring_, n);
      counters_.cqes += n;
      total += n;
      for (unsigned i = 0; i < n; ++i) {
        if ((copies[i].flags & IORING_CQE_F_MORE) == 0) {
          --inflight_;
        }
        fn(static_cast<const io_uring_cqe&>(copies[i]));
      }
    }
  }

  // Typed operations: the only code in ringxfer that builds SQEs. Each queues one SQE
  // tagged `tag` (two for the linked send); the loop submits them once per turn. Buffers,
  // iovecs and msghdrs must stay valid until the operation's final CQE.
  void send(uint64_t tag, Socket s, const void* buf, size_t len, int flags) noexcept;
  void sendmsg(uint64_t tag, Socket s, const msghdr* msg, int flags) noexcept;
  // SENDMSG_ZC: a result CQE (kCqeMore set when a notification follows) and then a
  // notification CQE (kCqeNotif) once the kernel no longer reads the buffers.
  void sendmsg_zc(uint64_t tag, Socket s, const msghdr* msg, int flags) noexcept;
  // SEND_ZC of [payload, payload+len), which lies in registered buffer `buffer` (pins no
  // pages per send); CQEs as for sendmsg_zc. Never linked behind another SQE: a linked
  // SEND_ZC that the kernel cancels because the SQE before it failed ends with a CQE
  // without kCqeMore and then still posts its notification (seen on 6.18), so "in
  // flight until a CQE without kCqeMore" would not hold for it.
  void send_zc_fixed(uint64_t tag, Socket s, const void* payload, size_t len, unsigned buffer,
                     int flags) noexcept;
  void recv(uint64_t tag, Socket s, void* buf, size_t len, int flags) noexcept;
  void recvmsg(uint64_t tag, Socket s, msghdr* msg, int flags) noexcept;
  void connect(uint64_t tag, Socket s, const sockaddr* addr, socklen_t len) noexcept;
  void accept(uint64_t tag, int listen_fd, int flags) noexcept;
  // Cancels every operation on `fd`; its own completion is ignored.
  void cancel_fd(int fd) noexcept;

  // Makes sure `n` SQEs can be taken without an intervening submit (submitting what is
  // queued when fewer are free), so that a linked chain goes to the kernel whole.
  void reserve(unsigned n) noexcept;

  // Registered files: installs `fd` in a free slot of the file table and returns the
  // slot, or -1 (no table, table full, kernel refusal) and the caller keeps using `fd`.
  // The table holds its own reference to the file: remove the slot before closing.
  int install_file(int fd) noexcept;
  void remove_file(int slot) noexcept;
  // Points `sqe` at registered file `slot` (IOSQE_FIXED_FILE); a slot < 0 leaves it.
  static void use_file(io_uring_sqe* sqe, int slot) noexcept {
    if (slot >= 0) {
      sqe->fd = slot;
      sqe->flags |= IOSQE_FIXED_FILE;
    }
  }

  // Registered buffers: pins [base, base+len) and installs it in a free slot of the
  // buffer table. Fails without logging (kResourceExhausted for the memlock limit or a
  // full table, kInvalidArgument beyond the kernel's 1 GiB per buffer); callers fall
  // back to plain sends. In-flight requests keep a removed buffer alive until they end.
  absl::StatusOr<int> install_buffer(void* base, size_t len) noexcept;
  void remove_buffer(int slot) noexcept;

  const RingFeatures& features() const noexcept { return features_; }
  const RingCounters& counters() const noexcept { return counters_; }
  // Operations taken (SQEs) whose final CQE (one without kCqeMore) has not been reaped:
  // what the kernel may still reference.
  uint64_t inflight() const noexcept { return inflight_; }
  int fd() const noexcept { return ring_.ring_fd; }

 private:
  static constexpr unsigned kReapBatch = 64;
  Ring() = default;
  int flush() noexcept;
  // The SQ is full: submits, and when the kernel refuses (an overcommitted CQ: EBUSY,
  // EAGAIN) moves the CQEs it holds aside for the next reap and tries again, backing
  // off on other errors. Never spins on a failing submit; aborts, saying why, if the
  // kernel refuses for seconds.
  void make_room() noexcept;

  io_uring ring_{};
  bool initialized_ = false;
  std::vector<int> free_files_;  // slots, popped from the back
  std::vector<int> free_buffers_;
  RingFeatures features_;
  RingCounters counters_;
  uint64_t inflight_ = 0;
  std::vector<io_uring_cqe> backlog_;  // CQEs taken off the CQ by make_room, not yet reaped
};

}  // namespace ringxfer::ring
