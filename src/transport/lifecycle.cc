// Worker: deadlines (the tick), shutdown, and what is left after the loop stopped.
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
#include "transport/worker.h"
#include "wire/codec.h"

namespace ringxfer::transport {


// ---------------------------------------------------------------------------
// Timeouts

void Worker::tick() {
  reclaim();
  const int64_t now = now_ns();
  if (accept_resume_ns_ != 0 && now >= accept_resume_ns_) {
    accept_resume_ns_ = 0;
    arm_accept();
  }
  const int64_t timeout = t_->config.timeout_ns();
  const int64_t timeout_ms = timeout / 1'000'000;
  for (Conn* c : [&] {
         std::vector<Conn*> v;
         for (auto& up : conns_) {
           if (up != nullptr && up->fd >= 0 && up->state != ConnState::kClosing) {
             v.push_back(up.get());
           }
         }
         return v;
       }()) {
    if (c->state == ConnState::kClosing) {
      continue;
    }
    if ((c->state == ConnState::kConnecting || c->state == ConnState::kHandshake) &&
        now - c->since_ns > timeout) {
      close_conn(
          c, absl::DeadlineExceededError(absl::StrFormat("no handshake within %d ms", timeout_ms)));
    } else if (c->rx.parked() && now - c->since_ns > timeout) {
      close_conn(c,
                 absl::DataLossError(
                     absl::StrFormat("data for request %d that never came", c->parked_seq)),
                 true);
    }
  }
  for (auto& [key, up] : peers_) {
    Peer* p = up.get();
    std::vector<std::shared_ptr<OutOp>> late;
    for (auto& [id, op] : p->out_ops) {
      if (!op->failed() && now > op->deadline_ns) {
        late.push_back(op);
      }
    }
    for (auto& op : p->backlog) {
      if (!op->failed() && now > op->deadline_ns) {
        late.push_back(op);
      }
    }
    bool stuck = false;
    for (auto& op : late) {
      fail_op(op, absl::DeadlineExceededError(absl::StrFormat(
                      "transfer %d to %s did not finish within %d ms", op->id, key, timeout_ms)));
      stuck |= op->pending > 0;
    }
    if (stuck) {
      // Its memory is still in the kernel's hands on a path that stopped moving: close
      // the connections so those operations end, and the transfer with them.
      fail_outbound(p, absl::UnavailableError(absl::StrFormat(
                           "closed after a transfer to %s timed out with data in flight", key)));
    } else if (!late.empty() && path_stalled(p, static_cast<uint32_t>(timeout_ms / 2))) {
      // The late transfers' requests went out but nothing is acknowledged any more: the
      // path is down (a black hole, a dead link). Close now, so that the next transfer
      // opens new connections instead of queueing behind data the kernel will give up
      // on (TCP_USER_TIMEOUT) a moment later.
      fail_outbound(p, absl::UnavailableError(absl::StrFormat(
                           "closed after a transfer to %s timed out: nothing acknowledged "
                           "for %d ms",
                           key, timeout_ms / 2)));
    }
    std::erase_if(p->backlog, [](const std::shared_ptr<OutOp>& op) {
      if (op->failed()) {
        op->phase = Phase::kDone;
        std::move(op->done)(op->status);
        return true;
      }
      return false;
    });
    for (auto& op : late) {
      maybe_finish(p, op);
    }
    std::vector<std::shared_ptr<InOp>> expired;
    for (auto& [id, in] : p->in_ops) {
      if (now > in->deadline_ns && !in->reported) {
        expired.push_back(in);
      }
    }
    for (auto& in : expired) {
      report_inbound(
          p, *in,
          absl::DeadlineExceededError(absl::StrFormat(
              "transfer %d from %s did not finish within %d ms", in->id, key, timeout_ms)));
    }
  }
}

// ---------------------------------------------------------------------------
// Deregistration

void Worker::release_if_idle(InOp& in) {
  if (in.failed() && in.pending == 0 && in.receiving == 0) {
    in.pins.clear();
  }
}

template <typename Pred>
void Worker::drop_unstarted(const std::vector<Conn*>& conns, Pred&& owned) {
  std::vector<SendItem> dropped;
  for (Conn* c : conns) {
    if (c != nullptr && c->state != ConnState::kClosing) {
      c->tx.drop_unstarted_if(owned, dropped);
    }
  }
  for (SendItem& item : dropped) {
    // Not a failure of the connection: the transfer itself failed.
    if (item.out) {
      --item.out->pending;
    }
    if (item.in) {
      --item.in->pending;
    }
  }
}

void Worker::fence(const memory::RegionUse* use, uint64_t id) {
  reclaim();
  auto holds = [use](const std::vector<memory::Pin>& pins) {
    return std::ranges::any_of(pins, [use](const memory::Pin& p) { return p.use() == use; });
  };
  for (auto& [key, up] : peers_) {
    Peer* p = up.get();
    std::vector<std::shared_ptr<OutOp>> outs;
    for (auto& [seq, op] : p->out_ops) {
      if (!op->finished() && holds(op->pins)) {
        outs.push_back(op);
      }
    }
    for (auto& op : p->backlog) {
      if (!op->finished() && holds(op->pins)) {
        outs.push_back(op);
      }
    }
    std::vector<std::shared_ptr<InOp>> ins;
    for (auto& [seq, in] : p->in_ops) {
      if (holds(in->pins)) {
        ins.push_back(in);
      }
    }
    if (outs.empty() && ins.empty()) {
      continue;
    }
    std::vector<Conn*> out_conns = p->out_data;
    out_conns.push_back(p->out_ctrl);
    for (auto& op : outs) {
      fail_op(op, absl::FailedPreconditionError(absl::StrFormat(
                      "local memory %d was deregistered during transfer %d", id, op->id)));
      // Frames not yet started never go; those in the kernel finish first.
      drop_unstarted(out_conns, [&op](const SendItem& item) { return item.out == op; });
    }
    std::vector<Conn*> in_conns = p->in_data;
    in_conns.push_back(p->in_ctrl);
    for (auto& in : ins) {
      in->fail(absl::FailedPreconditionError(absl::StrFormat(
          "memory %d was deregistered during transfer %d from %s", id, in->id, key)));
      if (in->kind == wire::OpKind::kRead && !in->completion_sent) {
        // The rest of the read is not sent; its completion says why.
        drop_unstarted(in_conns, [&in](const SendItem& item) { return item.in == in; });
      }
      release_if_idle(*in);
    }
    std::erase_if(p->backlog, [](const std::shared_ptr<OutOp>& op) {
      if (op->failed()) {
        op->phase = Phase::kDone;
        op->pins.clear();
        std::move(op->done)(op->status);
        return true;
      }
      return false;
    });
    for (auto& op : outs) {
      maybe_finish(p, op);
    }
    for (auto& in : ins) {
      maybe_finish_in(p, in);
    }
  }
}

void Worker::shutdown() {
  reclaim();
  stopping_ = true;
  if (listen_fd_ >= 0) {
    loop_->ring().cancel_fd(listen_fd_);
  }
  const absl::Status why = absl::UnavailableError("the engine is shutting down");
  for (auto& [key, p] : peers_) {
    fail_outbound(p.get(), why);
    fail_inbound(p.get(), why);
  }
  for (auto& up : conns_) {
    if (up != nullptr && up->fd >= 0) {
      close_conn(up.get(), why);
    }
  }
}

void Worker::abandon() {
  // On the ring thread, the last thing it does: the kernel holds nothing of ours (or the
  // drain timed out, which was logged).
  for (auto& [key, p] : peers_) {
    for (auto& [id, op] : p->out_ops) {
      if (!op->finished()) {
        op->phase = Phase::kDone;
        std::move(op->done)(absl::UnavailableError("the engine is shutting down"));
      }
    }
    p->out_ops.clear();
    for (auto& op : p->backlog) {
      if (!op->finished()) {
        op->phase = Phase::kDone;
        std::move(op->done)(absl::UnavailableError("the engine is shutting down"));
      }
    }
    p->backlog.clear();
  }
  for (auto& up : conns_) {
    if (up != nullptr && up->fd >= 0) {
      ::close(up->fd);  // the registered-file table lets go when the ring is destroyed
      up->fd = -1;
      up->file = -1;
    }
  }
}

}  // namespace ringxfer::transport
