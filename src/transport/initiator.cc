// Worker: transfers this engine initiates: start, admission, completions.
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
// Transfers: initiator side

void Worker::start_op(const std::string& key, std::shared_ptr<OutOp> op) {
  reclaim();
  t_->counters.transfers_initiated.fetch_add(1, std::memory_order_relaxed);
  Peer* p = peer(key, false);
  if (stopping_ || p == nullptr || !p->has_addr) {
    op->phase = Phase::kDone;
    t_->counters.transfers_failed.fetch_add(1, std::memory_order_relaxed);
    std::move(op->done)(stopping_ ? absl::UnavailableError("the engine is shutting down")
                                  : absl::NotFoundError(absl::StrFormat(
                                        "remote engine %s is not registered", key)));
    return;
  }
  op->deadline_ns = now_ns() + t_->config.timeout_ns();
  op->peer = p;
  if (p->out_ops.size() >= kOutboundOpsMaxPerPeer) {
    p->backlog.push_back(std::move(op));
    return;
  }
  launch(p, std::move(op));
}

void Worker::launch(Peer* p, std::shared_ptr<OutOp> op) {
  open_outbound(p);
  if (p->out_ctrl == nullptr) {
    op->phase = Phase::kDone;
    t_->counters.transfers_failed.fetch_add(1, std::memory_order_relaxed);
    std::move(op->done)(absl::UnavailableError(absl::StrFormat("cannot connect to %s", p->key)));
    return;
  }
  // The request's sequence: unique among this peer's transfers in flight, so that a
  // late completion or data frame of an earlier request (one that timed out, say, with
  // the same transfer id) never matches this one.
  do {
    op->seq = p->next_seq++;
  } while (op->seq == 0 || p->out_ops.contains(op->seq));
  p->out_ops.emplace(op->seq, op);
  if (op->kind == wire::OpKind::kRead) {
    std::vector<uint64_t> lengths;
    lengths.reserve(op->pieces.size());
    for (const Piece& pc : op->pieces) {
      lengths.push_back(pc.length);
    }
    op->starts = segment_starts(lengths);
  }
  std::vector<wire::Segment> segs;
  segs.reserve(op->pieces.size());
  for (const Piece& pc : op->pieces) {
    segs.push_back(wire::Segment{pc.remote_id, pc.remote_offset, pc.length});
  }
  enqueue(
      p->out_ctrl,
      frame_item(encode_frame(wire::request_frame_bytes(segs.size()), [&](wire::MutableByteSpan o) {
        return wire::encode_request(op->kind, op->id, segs, o, op->parts, op->seq);
      })));
  if (op->kind == wire::OpKind::kWrite) {
    std::vector<iovec> local;
    local.reserve(op->pieces.size());
    for (const Piece& pc : op->pieces) {
      local.push_back(iovec{pc.local, pc.length});
    }
    send_data(p, true, op, nullptr, local, op->id, op->seq);
  }
  pump_tx(p->out_ctrl);
}

void Worker::fail_op(const std::shared_ptr<OutOp>& op, const absl::Status& why) {
  if (op->phase != Phase::kActive) {
    return;
  }
  op->fail(why);
  if (why.code() == absl::StatusCode::kDeadlineExceeded) {
    t_->counters.timeouts.fetch_add(1, std::memory_order_relaxed);
  }
}

void Worker::maybe_finish(Peer* p, const std::shared_ptr<OutOp>& op) {
  if (op->finished() || op->pending > 0 || p == nullptr) {
    return;
  }
  if (!op->failed()) {
    if (!op->remote_done) {
      return;
    }
    if (op->kind == wire::OpKind::kRead && op->status.ok() && op->received < op->total) {
      return;
    }
  }
  op->phase = Phase::kDone;
  op->pins.clear();  // nothing of it is in the kernel any more
  auto it = p->out_ops.find(op->seq);
  if (it != p->out_ops.end() && it->second == op) {
    p->out_ops.erase(it);
  }
  if (!op->status.ok()) {
    t_->counters.transfers_failed.fetch_add(1, std::memory_order_relaxed);
  }
  std::move(op->done)(op->status);
  while (!p->backlog.empty() && p->out_ops.size() < kOutboundOpsMaxPerPeer && !stopping_) {
    std::shared_ptr<OutOp> next = std::move(p->backlog.front());
    p->backlog.pop_front();
    launch(p, std::move(next));
  }
}

void Worker::handle_completion(Conn* c, const wire::Completion& cmp) {
  Peer* p = c->peer;
  auto it = p->out_ops.find(cmp.seq);
  if (it == p->out_ops.end()) {
    return;  // its transfer timed out or failed already
  }
  std::shared_ptr<OutOp> op = it->second;
  if (op->kind != cmp.op || op->id != cmp.transfer_id) {
    close_conn(c,
               absl::DataLossError(absl::StrFormat(
                   "completion of request %d names transfer %d, which that request was not",
                   cmp.seq, cmp.transfer_id)),
               true);
    return;
  }
  op->remote_done = true;
  if (!op->failed() && cmp.status != 0) {
    op->status =
        status_from_wire(cmp.status, absl::StrFormat("%s (reported by %s)", cmp.message, p->key));
  }
  maybe_finish(p, op);
}

}  // namespace ringxfer::transport
