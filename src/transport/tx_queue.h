// transport::TxQueue: the send half of one connection, without I/O. Frames wait in
// order; gather() builds the one send in flight from the front items; complete() takes
// that send's result, advances over a short send and hands back the items it finished.
// Items are retired only by the completion of the send that carried their last byte,
// and the queue is consistent before any retired item is looked at, so a caller that
// queues more frames (or gathers the next send) while handling retired items cannot
// send a byte twice or hand the kernel an item that was freed. Knows nothing of rings,
// sockets or transfers beyond the owners an item carries. folly's IoUringSendHandle is
// the model (STYLE.md section 10, 3).
#pragma once

#include <sys/uio.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <span>
#include <vector>

#include <memory>

#include "transport/transport.h"

namespace ringxfer::transport::detail {

struct OutOp;
struct InOp;

// A payload staged into host memory before it can go (GPU memory is copied into a
// pinned slab first): the item waits in its queue until `ready`, then sends `bytes` from
// `data`. The staging code owns the rest (a subclass).
struct Staged {
  virtual ~Staged() = default;
  std::byte* data = nullptr;
  size_t bytes = 0;
  bool ready = false;
};

// One frame to send: header and body bytes it owns, then payload it points to.
struct SendItem {
  std::vector<std::byte> frame;
  std::vector<iovec> iov;  // iov[0] covers `frame`
  size_t pos = 0;          // first iovec not fully sent
  size_t off = 0;          // bytes of iov[pos] already sent
  uint64_t payload = 0;    // payload bytes (counters)
  bool zero_copy = false;
  bool handshake = false;      // a hello or auth frame: may go while the connection is gated
  uint32_t request_seq = 0;    // a request frame: its sequence (a fence may drop it unsent)
  std::shared_ptr<OutOp> out;  // the transfer whose memory the payload is, if any
  std::shared_ptr<InOp> in;
  // Set: the payload is staged; iov holds only the frame until it is ready.
  std::shared_ptr<Staged> staged;

  // Whether it can go now; a staged payload that became ready joins the iovecs here.
  bool sendable() {
    if (!staged) {
      return true;
    }
    if (!staged->ready) {
      return false;
    }
    if (iov.size() == 1) {
      iov.push_back(iovec{staged->data, staged->bytes});
    }
    return true;
  }
};

class TxQueue {
 public:
  // UIO_MAXIOV: the most iovecs one sendmsg takes.
  static constexpr size_t kIovMax = 1024;

  // What gather() put in flight.
  struct Send {
    std::span<iovec> iov;  // valid until complete() or cancel_inflight()
    size_t items = 0;      // items it covers, from the front (the last may be partial)
    size_t bytes = 0;
  };

  TxQueue() = default;
  TxQueue(const TxQueue&) = delete;
  TxQueue& operator=(const TxQueue&) = delete;

  // Queues a frame behind the others. Its iov[0] covers its own `frame` bytes.
  void push(SendItem item);
  // Queues a frame to go next: behind the send in flight and any item already started,
  // ahead of every item that has not started (a handshake's answer overtakes requests
  // queued behind the hello).
  void push_next(SendItem item);

  bool busy() const noexcept { return inflight_items_ > 0; }
  bool empty() const noexcept { return q_.empty(); }
  size_t size() const noexcept { return q_.size(); }
  // Bytes the send in flight asked for.
  size_t inflight_bytes() const noexcept { return inflight_bytes_; }
  // Frame bytes (headers and bodies, not payload) of every item queued: what this
  // engine's own answers cost while the peer does not read them.
  size_t frame_bytes() const noexcept { return frame_bytes_; }
  // Items not part of the send in flight.
  size_t waiting() const noexcept { return q_.size() - inflight_items_; }
  // The front item (the next to send, or the one in flight). Not empty().
  SendItem& front() noexcept { return q_.front(); }

  // Builds the next send from the front: whole items from where the first stopped, up to
  // kIovMax iovecs, stopping before an item whose staged payload is not ready (nothing,
  // when that is the front). With `alone` only the front item goes (a zero-copy send, which needs a
  // notification of its own); otherwise gathering stops before an item that wants zero
  // copy. Empty (no items) when a send is in flight or nothing waits.
  Send gather(bool alone);

  // The send in flight moved `bytes` (at most what it asked). Items it finished move to
  // `retired` in order; an item it finished partly stays at the front for the next
  // send. Afterwards no send is in flight.
  void complete(size_t bytes, std::vector<SendItem>& retired);

  // The send in flight did not happen (the kernel refused it, for example a zero-copy
  // send over the memlock limit): nothing advanced, nothing is in flight.
  void cancel_inflight() noexcept;

  // Moves every item that is not part of the send in flight to `dropped` (the
  // connection is closing: they will never be sent).
  void drop_waiting(std::vector<SendItem>& dropped);
  // Moves every item to `dropped`; only when no send is in flight (its CQE came).
  void drop_all(std::vector<SendItem>& dropped);
  // Moves waiting items that have not started and for which `pred(item)` holds to
  // `dropped`, keeping the others in order (a transfer that failed sends no more).
  template <typename Pred>
  void drop_unstarted_if(Pred&& pred, std::vector<SendItem>& dropped) {
    for (size_t i = inflight_items_; i < q_.size();) {
      SendItem& item = q_[i];
      if (item.pos == 0 && item.off == 0 && pred(item)) {
        frame_bytes_ -= item.frame.size();
        dropped.push_back(std::move(item));
        q_.erase(q_.begin() + static_cast<std::ptrdiff_t>(i));
      } else {
        ++i;
      }
    }
  }

 private:
  std::deque<SendItem> q_;
  size_t inflight_items_ = 0;
  size_t inflight_bytes_ = 0;
  size_t frame_bytes_ = 0;  // of every item queued
  std::vector<iovec> iov_;
};

}  // namespace ringxfer::transport::detail
