// Worker: the send path: gathering queued frames into one send per connection,
// zero-copy sends and their notifications, fixed buffers, completions.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/str_format.h"
#include "base/check.h"
#include "base/errno_status.h"
#include "base/log.h"
#include "transport/op_errors.h"
#include "transport/worker.h"
#include "wire/codec.h"

namespace ringxfer::transport {

// ---------------------------------------------------------------------------
// Send path

void Worker::enqueue(Conn* c, SendItem item) {
  // The iovec of the frame points into the item's own vector, which a move keeps.
  c->tx.push(std::move(item));
}

void Worker::pump_tx(Conn* c) {
  if (c->tx.busy() || c->tx.empty() || c->state == ConnState::kConnecting ||
      c->state == ConnState::kClosing) {
    return;
  }
  SendItem& first = c->tx.front();
  if (c->tx_gated && !first.handshake) {
    return;  // requests wait behind the hello until the target has proven itself
  }
  if (!first.sendable()) {
    return;  // its staged payload is still being copied: the copy's end pumps again
  }
  // Zero-copy from memory that is not a registered buffer pins pages per send, charged
  // to RLIMIT_MEMLOCK; once the kernel has refused that, such items are copied.
  // A zero-copy frame (header, payload) whose payload lies in a registered buffer goes
  // in two sends: the header by a plain send, then, once that completed whole (the item
  // is at its payload, pos 1), the payload by a SEND_ZC from that buffer, which pins no
  // pages. The two are not linked: a linked SEND_ZC cancelled by a failed header ends
  // with a CQE without F_MORE and still posts a notification afterwards (kernel 6.18),
  // which freed its ZcSlot early, let the notification free it again while another send
  // used it, and handed that send's result to the wrong connection (the TxQueue check
  // "a send moved more bytes than it asked", sends that never completed, and frame
  // headers overwritten while the kernel still sent them: "bad magic" at the peer).
  const bool zc_wanted = first.zero_copy && loop_->features().send_zc;
  const int fixed =
      zc_wanted && first.iov.size() == 2 && first.pos <= 1 ? fixed_buffer_for(first.iov[1]) : -1;
  const bool head_only = fixed >= 0 && first.pos == 0;
  const bool zc = zc_wanted && !head_only && (fixed >= 0 || !zc_pins_refused_);
  // Whole items go together; a zero-copy item goes alone, with its own notification.
  const TxQueue::Send send = c->tx.gather(zc || head_only || c->tx_gated);
  const std::span<iovec> iov = send.iov;
  c->tx_msg = msghdr{};
  c->tx_msg.msg_iov = iov.data();
  c->tx_msg.msg_iovlen = head_only ? 1 : iov.size();
  c->tx_head_bytes = head_only ? static_cast<uint32_t>(iov[0].iov_len) : 0;
  ++c->inflight;
  if (zc) {
    uint32_t slot;
    if (!zc_free_.empty()) {
      slot = zc_free_.back();
      zc_free_.pop_back();
    } else {
      slot = static_cast<uint32_t>(zc_.size());
      zc_.emplace_back();
    }
    ZcSlot& z = zc_[slot];
    RX_CHECK_MSG(!z.busy, "a zero-copy slot taken twice");
    z.busy = true;
    z.gen = static_cast<uint16_t>(z.gen + 1);  // CQEs of an earlier use are stale
    z.conn_slot = c->slot;
    z.conn_gen = c->gen;
    z.result_seen = false;
    z.fixed = fixed >= 0;
    z.out = first.out;
    z.in = first.in;
    z.staged = first.staged;
    if (first.pos == 0) {
      z.frame = first.frame;
      iov[0].iov_base = z.frame.data() + first.off;
    }
    // The notification keeps the transfer's memory busy until the kernel lets go.
    if (z.out) {
      ++z.out->pending;
    }
    if (z.in) {
      ++z.in->pending;
    }
    ring::Ring& ring = loop_->ring();
    const uint64_t zc_tag = ring::Tag{kKindZc, 0, z.gen, slot}.pack();
    if (fixed >= 0) {
      // The header went before (head_only); iov[0] is the rest of the payload.
      ring.send_zc_fixed(zc_tag, sock(c), iov[0].iov_base, iov[0].iov_len,
                         static_cast<unsigned>(fixed), MSG_NOSIGNAL | MSG_WAITALL);
      t_->counters.zerocopy_fixed_sends.fetch_add(1, std::memory_order_relaxed);
    } else {
      ring.sendmsg_zc(zc_tag, sock(c), &c->tx_msg, MSG_NOSIGNAL | MSG_WAITALL);
    }
    t_->counters.zerocopy_sends.fetch_add(1, std::memory_order_relaxed);
  } else {
    // A header alone says MSG_MORE: its payload follows at once.
    loop_->ring().sendmsg(tag(c, kOpSend), sock(c), &c->tx_msg,
                          MSG_NOSIGNAL | MSG_WAITALL | (head_only ? MSG_MORE : 0));
  }
}

int Worker::fixed_buffer_for(const iovec& v) const {
  // The registered buffer starting at or before v, if v lies wholly inside it.
  const auto at = reinterpret_cast<uintptr_t>(v.iov_base);
  auto it = fixed_.upper_bound(at);
  if (it == fixed_.begin()) {
    return -1;
  }
  --it;
  const uint64_t off = at - it->first;
  return off <= it->second.len && v.iov_len <= it->second.len - off ? it->second.slot : -1;
}

void Worker::add_fixed_buffer(std::byte* base, uint64_t len) {
  const auto key = reinterpret_cast<uintptr_t>(base);
  if (fixed_.contains(key)) {
    return;
  }
  absl::StatusOr<int> slot = loop_->ring().install_buffer(base, len);
  if (!slot.ok()) {
    t_->counters.fixed_buffer_fallbacks.fetch_add(1, std::memory_order_relaxed);
    if (!t_->fixed_fallback_logged.exchange(true)) {
      RX_LOG(kInfo,
             "zero-copy sends from %d bytes at %p use plain (not registered) buffers: %s "
             "(said once per engine)",
             len, static_cast<void*>(base), slot.status().message());
    }
    return;
  }
  fixed_.emplace(key, FixedBuffer{*slot, len});
  t_->counters.fixed_buffers.fetch_add(1, std::memory_order_relaxed);
}

void Worker::remove_fixed_buffer(std::byte* base) {
  auto it = fixed_.find(reinterpret_cast<uintptr_t>(base));
  if (it == fixed_.end()) {
    return;
  }
  loop_->ring().remove_buffer(it->second.slot);
  fixed_.erase(it);
  t_->counters.fixed_buffers.fetch_sub(1, std::memory_order_relaxed);
}

void Worker::on_zc(uint32_t slot, uint16_t gen, int32_t res, uint32_t flags) {
  if (slot >= zc_.size() || !zc_[slot].busy || zc_[slot].gen != gen) {
    // A CQE of a send whose slot was already let go: never touch the slot's new user.
    RX_LOG(kWarn, "ring %d: stale zero-copy completion (slot %d, res %d, flags %#x) dropped",
           index_, slot, res, flags);
    return;
  }
  if (!zc_[slot].result_seen && (flags & ring::kCqeNotif) == 0) {
    zc_[slot].result_seen = true;
    const bool more = (flags & ring::kCqeMore) != 0;
    const uint32_t cs = zc_[slot].conn_slot;
    const uint16_t cg = zc_[slot].conn_gen;
    if (cs < conns_.size()) {
      Conn* c = conns_[cs].get();
      if (c != nullptr && c->gen == cg && c->fd >= 0) {
        --c->inflight;
        // Only a send that pins pages falls back to copies on ENOMEM; a fixed-buffer
        // one pins none, and resending it would fail the same way forever.
        on_send(c, res, !zc_[slot].fixed);  // may queue more zero-copy sends: zc_ may grow
        maybe_release(c);
      }
    }
    if (more) {
      return;  // the notification follows
    }
  } else if ((static_cast<uint32_t>(res) & ring::kNotifUsageZcCopied) != 0) {
    t_->counters.zerocopy_copied.fetch_add(1, std::memory_order_relaxed);
  }
  // The kernel no longer references the buffer.
  std::shared_ptr<OutOp> out = std::move(zc_[slot].out);
  std::shared_ptr<InOp> in = std::move(zc_[slot].in);
  zc_[slot].frame.clear();
  zc_[slot].staged.reset();  // its slab may go back to the pool now
  zc_[slot].busy = false;
  zc_free_.push_back(slot);
  let_go(out, in);
}

void Worker::let_go(const std::shared_ptr<OutOp>& out, const std::shared_ptr<InOp>& in) {
  if (out) {
    --out->pending;
    initiator_.settle(out);
  }
  if (in) {
    --in->pending;
    target_.settle(in);
  }
}

void Worker::on_send(Conn* c, int32_t res, bool pinned) {
  // A frame's header sent alone (before its fixed-buffer payload) asked for fewer bytes
  // than the item the queue has in flight.
  const size_t asked = c->tx_head_bytes > 0 ? c->tx_head_bytes : c->tx.inflight_bytes();
  c->tx_head_bytes = 0;
  if (c->state == ConnState::kClosing) {
    // What it carried is failed when the connection is released.
    c->tx.cancel_inflight();
    return;
  }
  if (res == -ENOMEM && pinned) {
    // The pages a zero-copy send pins are charged to RLIMIT_MEMLOCK (without
    // CAP_IPC_LOCK; 8 MiB for users here) before anything is sent: send them by copy.
    c->tx.cancel_inflight();
    t_->counters.zerocopy_refused.fetch_add(1, std::memory_order_relaxed);
    if (!zc_pins_refused_) {
      zc_pins_refused_ = true;
      RX_LOG(kInfo,
             "ring %d: the kernel refused to pin pages for a zero-copy send (RLIMIT_MEMLOCK, "
             "ulimit -l); sends from memory that is not a registered buffer are copied from now",
             index_);
    }
    pump_tx(c);
    return;
  }
  if (res < 0) {
    c->tx.cancel_inflight();  // an error means nothing was sent
    const OpError e = send_failed(-res);
    if (e.next == Next::kResubmit) {
      pump_tx(c);
    } else {
      close_conn(c, e.status);
    }
    return;
  }
  if (static_cast<size_t>(res) < asked) {
    t_->counters.short_sends.fetch_add(1, std::memory_order_relaxed);
  }
  if (res > 0) {
    c->active_ns = now_ns();
    c->held_ns = c->active_ns;  // a held connection's peer is reading: not stuck
  }
  // The queue retires what this send finished before any of it is handled: handling an
  // item may queue frames on this connection and start its next send.
  // The vector's storage is reused from send to send (no allocation per completion);
  // taken, not borrowed, in case handling an item ever leads back here.
  std::vector<SendItem> retired = std::move(retired_scratch_);
  retired.clear();
  c->tx.complete(static_cast<size_t>(res), retired);
  for (SendItem& item : retired) {
    t_->counters.bytes_sent.fetch_add(item.payload, std::memory_order_relaxed);
    item_done(item, true);
  }
  retired.clear();
  retired_scratch_ = std::move(retired);
  pump_tx(c);
  if (c->rx_held && c->tx.frame_bytes() <= kAnswersHeldBytes / 2 &&
      c->state != ConnState::kClosing) {
    c->rx_held = false;
    drive_rx(c);
  }
}

void Worker::item_done(SendItem& item, bool ok) {
  if (item.out) {
    std::shared_ptr<OutOp> op = std::move(item.out);
    --op->pending;
    if (!ok) {
      initiator_.fail(op, absl::UnavailableError("the connection closed before the data was sent"));
    }
    initiator_.settle(op);
  }
  if (item.in) {
    std::shared_ptr<InOp> in = std::move(item.in);
    --in->pending;
    if (!ok) {
      in->fail(absl::UnavailableError("the connection closed before the data was sent"));
    }
    target_.settle(in);
  }
}

uint64_t Worker::drop_unstarted(const std::vector<Conn*>& conns,
                                absl::FunctionRef<bool(const SendItem&)> owned) {
  std::vector<SendItem> dropped;
  for (Conn* c : conns) {
    if (c != nullptr && c->state != ConnState::kClosing) {
      c->tx.drop_unstarted_if(owned, dropped);
    }
  }
  uint64_t payload = 0;
  for (SendItem& item : dropped) {
    // Not a failure of the connection: the transfer itself failed.
    if (item.out) {
      --item.out->pending;
    }
    if (item.in) {
      --item.in->pending;
    }
    payload += item.payload;
  }
  return payload;
}

void Worker::queue_cancel(Conn* c, const OutOp& op, uint64_t sent, const absl::Status& why) {
  if (c == nullptr || c->state != ConnState::kReady || (c->peer_caps & wire::kCapCancel) == 0) {
    return;  // gone (the target fails the transfer with it), or an older peer
  }
  wire::Cancel x;
  x.transfer_id = op.id;
  x.seq = op.seq;
  x.op = op.kind;
  x.sent_bytes = op.kind == wire::OpKind::kWrite ? sent : 0;
  x.status = static_cast<uint16_t>(why.code());
  enqueue(c, frame_item(encode_frame(wire::kCancelFrameBytes, [&](wire::MutableByteSpan o) {
            return wire::encode_cancel(x, o);
          })));
  pump_tx(c);
}

void Worker::queue_completion(Conn* c, const InOp& in, const absl::Status& st) {
  if (c == nullptr) {
    return;
  }
  wire::Completion cmp;
  cmp.transfer_id = in.id;
  cmp.seq = in.seq;
  cmp.op = in.kind;
  cmp.status = static_cast<uint16_t>(st.code());
  const std::string message(st.message().substr(0, wire::kMessageBytesMax));
  cmp.message = message;
  enqueue(c, frame_item(encode_frame(
                 wire::completion_frame_bytes(message.size()),
                 [&](wire::MutableByteSpan o) { return wire::encode_completion(cmp, o); })));
  pump_tx(c);
}

}  // namespace ringxfer::transport
