// transport::Initiator: transfers this engine starts (initiator.h).
#include "transport/initiator.h"

#include <array>
#include <utility>
#include <vector>

#include "absl/strings/str_format.h"
#include "transport/worker.h"

namespace ringxfer::transport {
namespace {

// A peer's transfers, launched and in its backlog, for which `pred` holds.
template <typename Pred>
std::vector<std::shared_ptr<OutOp>> transfers_where(const Peer* p, Pred&& pred) {
  std::vector<std::shared_ptr<OutOp>> out;
  for (const auto& [seq, op] : p->out_ops) {
    if (pred(*op)) {
      out.push_back(op);
    }
  }
  for (const auto& op : p->backlog) {
    if (pred(*op)) {
      out.push_back(op);
    }
  }
  return out;
}

}  // namespace

void Initiator::start(const std::string& key, std::shared_ptr<OutOp> op) {
  w_.counters().transfers_initiated.fetch_add(1, std::memory_order_relaxed);
  Peer* p = w_.peer(key, false);
  if (w_.stopping() || p == nullptr || !p->has_addr) {
    op->phase = Phase::kDone;
    w_.counters().transfers_failed.fetch_add(1, std::memory_order_relaxed);
    std::move(op->done)(w_.stopping() ? absl::UnavailableError("the engine is shutting down")
                                      : absl::NotFoundError(absl::StrFormat(
                                            "remote engine %s is not registered", key)));
    return;
  }
  op->deadline_ns = now_ns() + w_.config().timeout_ns();
  op->peer = p;
  if (p->out_ops.size() >= kOutboundOpsMaxPerPeer) {
    const size_t queued_max = static_cast<size_t>(w_.config().engine.max_queued_transfers);
    if (p->backlog.size() >= queued_max) {
      op->phase = Phase::kDone;
      w_.counters().transfers_failed.fetch_add(1, std::memory_order_relaxed);
      std::move(op->done)(absl::ResourceExhaustedError(absl::StrFormat(
          "%d transfers to %s are in flight and %d wait (max_queued_transfers): not queued",
          p->out_ops.size(), split_lane_key(p->key).base, p->backlog.size())));
      return;
    }
    p->backlog.push_back(std::move(op));
    return;
  }
  launch(p, std::move(op));
}

void Initiator::launch(Peer* p, std::shared_ptr<OutOp> op) {
  w_.open_outbound(p);
  if (p->out_ctrl == nullptr) {
    op->phase = Phase::kDone;
    w_.counters().transfers_failed.fetch_add(1, std::memory_order_relaxed);
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
    segs.push_back(wire::Segment{pc.remote_id, pc.remote_key, pc.remote_offset, pc.length});
  }
  SendItem request =
      frame_item(encode_frame(wire::request_frame_bytes(segs.size()), [&](wire::MutableByteSpan o) {
        return wire::encode_request(op->kind, op->id, segs, o, op->parts, op->seq);
      }));
  request.request_seq = op->seq;
  w_.enqueue(p->out_ctrl, std::move(request));
  if (op->kind == wire::OpKind::kWrite) {
    std::vector<iovec> local;
    std::vector<int16_t> devs;
    local.reserve(op->pieces.size());
    const bool gpu =
        std::ranges::any_of(op->pieces, [](const Piece& pc) { return pc.device >= 0; });
    for (const Piece& pc : op->pieces) {
      local.push_back(iovec{pc.local, pc.length});
      if (gpu) {
        devs.push_back(pc.device);
      }
    }
    w_.send_data(p, true, op, nullptr, local, devs, op->id, op->seq);
  }
  w_.pump_tx(p->out_ctrl);
}

void Initiator::fail(const std::shared_ptr<OutOp>& op, const absl::Status& why) {
  if (op->phase != Phase::kActive) {
    return;
  }
  op->fail(why);
  if (why.code() == absl::StatusCode::kDeadlineExceeded) {
    w_.counters().timeouts.fetch_add(1, std::memory_order_relaxed);
  }
}

void Initiator::settle(const std::shared_ptr<OutOp>& op) {
  Peer* p = op->peer;
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
    w_.counters().transfers_failed.fetch_add(1, std::memory_order_relaxed);
  }
  std::move(op->done)(op->status);
  while (!p->backlog.empty() && p->out_ops.size() < kOutboundOpsMaxPerPeer && !w_.stopping()) {
    std::shared_ptr<OutOp> next = std::move(p->backlog.front());
    p->backlog.pop_front();
    launch(p, std::move(next));
  }
}

void Initiator::on_payload(const std::shared_ptr<OutOp>& op, uint64_t bytes) {
  --op->pending;
  op->received += bytes;
  settle(op);
}

void Initiator::on_completion(Conn* c, const wire::Completion& cmp) {
  Peer* p = c->peer;
  auto it = p->out_ops.find(cmp.seq);
  if (it == p->out_ops.end()) {
    return;  // its transfer timed out or failed already
  }
  std::shared_ptr<OutOp> op = it->second;
  if (op->kind != cmp.op || op->id != cmp.transfer_id) {
    w_.close_conn(c,
                  absl::DataLossError(absl::StrFormat(
                      "completion of request %d names transfer %d, which that request was not",
                      cmp.seq, cmp.transfer_id)),
                  true);
    return;
  }
  op->remote_done = true;
  if (!op->failed() && cmp.status != 0) {
    // The engine's key, not the lane group's: the caller knows no lane groups.
    op->status = status_from_wire(cmp.status, absl::StrFormat("%s (reported by %s)", cmp.message,
                                                              split_lane_key(p->key).base));
  }
  settle(op);
}

// Every entry is checked against the request's segments and claims its bytes in the
// read's Coverage, so a frame outside the request, or one that repeats bytes already
// received, closes the connection as hostile and touches no memory.
template <typename Entries>
void Initiator::on_data(Conn* c, uint64_t id, uint32_t seq, uint64_t payload,
                        const Entries& entries) {
  Peer* p = c->peer;
  auto hostile = [&](const std::string& what) {
    w_.close_conn(c, absl::DataLossError(what), true);
  };
  auto it = p->out_ops.find(seq);
  if (it == p->out_ops.end() || it->second->failed()) {
    // A transfer that failed or timed out already: its late data is dropped.
    c->parked_seq = 0;
    w_.start_discard(c, payload);
    return;
  }
  std::shared_ptr<OutOp> op = it->second;
  if (op->id != id || op->kind != wire::OpKind::kRead) {
    return hostile(
        absl::StrFormat("data for request %d names transfer %d, not its read %d", seq, id, op->id));
  }
  if (op->received + payload > op->total) {
    return hostile("read data beyond the requested size");
  }
  std::vector<iovec> dest;
  std::vector<int16_t> devs;  // filled only when some destination is GPU memory
  dest.reserve(entries.size());
  bool gpu = false;
  for (const wire::BatchEntry e : entries) {
    if (e.segment >= op->pieces.size() || e.offset + e.length > op->pieces[e.segment].length) {
      return hostile("read data outside the requested range");
    }
    if (!op->coverage.claim(op->starts[e.segment] + e.offset, e.length)) {
      return hostile("read data for bytes that were already received");
    }
    dest.push_back(iovec{op->pieces[e.segment].local + e.offset, e.length});
    gpu |= op->pieces[e.segment].device >= 0;
  }
  if (gpu) {
    devs.reserve(entries.size());
    for (const wire::BatchEntry e : entries) {
      devs.push_back(op->pieces[e.segment].device);
    }
  }
  ++op->pending;
  c->rx_out = op;
  w_.start_payload(c, std::move(dest), payload, std::move(devs));
}

template void Initiator::on_data(Conn*, uint64_t, uint32_t, uint64_t,
                                 const std::array<wire::BatchEntry, 1>&);
template void Initiator::on_data(Conn*, uint64_t, uint32_t, uint64_t,
                                 const wire::PackedTable<wire::BatchEntry>&);

void Initiator::finish_failed_backlog(Peer* p) {
  std::erase_if(p->backlog, [this](const std::shared_ptr<OutOp>& op) {
    if (!op->failed()) {
      return false;
    }
    op->phase = Phase::kDone;
    op->pins.clear();
    w_.counters().transfers_failed.fetch_add(1, std::memory_order_relaxed);
    std::move(op->done)(op->status);
    return true;
  });
}

void Initiator::fail_all(Peer* p, const absl::Status& why) {
  std::vector<std::shared_ptr<OutOp>> ops = transfers_where(p, [](const OutOp&) { return true; });
  p->backlog.clear();
  for (auto& op : ops) {
    fail(op, why);
    settle(op);
  }
}

void Initiator::expire(Peer* p, int64_t now) {
  const int64_t timeout_ms = w_.config().timeout_ns() / 1'000'000;
  std::vector<std::shared_ptr<OutOp>> late =
      transfers_where(p, [now](const OutOp& op) { return !op.failed() && now > op.deadline_ns; });
  if (late.empty()) {
    return;
  }
  bool stuck = false;
  for (auto& op : late) {
    fail(op, absl::DeadlineExceededError(absl::StrFormat(
                 "transfer %d to %s did not finish within %d ms", op->id, p->key, timeout_ms)));
    stuck |= op->pending > 0;
  }
  if (stuck) {
    // Its memory is still in the kernel's hands on a path that stopped moving: close
    // the connections so those operations end, and the transfer with them.
    w_.fail_outbound(p,
                     absl::UnavailableError(absl::StrFormat(
                         "closed after a transfer to %s timed out with data in flight", p->key)));
  } else if (w_.path_stalled(p, static_cast<uint32_t>(timeout_ms / 2))) {
    // The late transfers' requests went out but nothing is acknowledged any more: the
    // path is down (a black hole, a dead link). Close now, so that the next transfer
    // opens new connections instead of queueing behind data the kernel will give up
    // on (TCP_USER_TIMEOUT) a moment later.
    w_.fail_outbound(p, absl::UnavailableError(absl::StrFormat(
                            "closed after a transfer to %s timed out: nothing acknowledged "
                            "for %d ms",
                            p->key, timeout_ms / 2)));
  }
  finish_failed_backlog(p);
  for (auto& op : late) {
    settle(op);
  }
}

void Initiator::fence(Peer* p, const memory::RegionUse* use, uint64_t id) {
  std::vector<std::shared_ptr<OutOp>> outs = transfers_where(
      p, [use](const OutOp& op) { return !op.finished() && holds_region(op.pins, use); });
  if (outs.empty()) {
    return;
  }
  for (auto& op : outs) {
    stop(p, op,
         absl::FailedPreconditionError(
             absl::StrFormat("local memory %d was deregistered during transfer %d", id, op->id)));
  }
  finish_failed_backlog(p);
  for (auto& op : outs) {
    settle(op);
  }
}

void Initiator::stop(Peer* p, const std::shared_ptr<OutOp>& op, const absl::Status& why) {
  fail(op, why);
  std::vector<Conn*> conns = p->out_data;
  conns.push_back(p->out_ctrl);
  // Frames not yet started never go; those in the kernel finish first.
  const uint64_t dropped =
      w_.drop_unstarted(conns, [&op](const SendItem& item) { return item.out == op; });
  if (op->seq == 0 || !p->out_ops.contains(op->seq)) {
    return;  // still in the backlog: nothing of it was queued
  }
  const bool none_sent = op->kind == wire::OpKind::kRead || dropped == op->total;
  bool request_dropped = false;
  if (none_sent) {
    // Nothing of it reached the target yet: its request need not either.
    w_.drop_unstarted({p->out_ctrl}, [&](const SendItem& item) {
      const bool mine = item.request_seq == op->seq;
      request_dropped |= mine;
      return mine;
    });
  }
  if (!request_dropped && (op->kind == wire::OpKind::kRead || dropped > 0)) {
    // The target knows the transfer: tell it to stop serving a read, or how much of a
    // write it will get, so it finishes the transfer now instead of at its deadline.
    w_.queue_cancel(p->out_ctrl, *op, op->total - dropped, why);
  }
}

void Initiator::abort(const std::shared_ptr<OutOp>& op, const absl::Status& why) {
  Peer* p = op->peer;
  if (op->phase != Phase::kActive || p == nullptr) {
    return;
  }
  stop(p, op, why);
  settle(op);
}

void Initiator::abandon(Peer* p) {
  const absl::Status why = absl::UnavailableError("the engine is shutting down");
  for (auto& [seq, op] : p->out_ops) {
    if (!op->finished()) {
      op->phase = Phase::kDone;
      std::move(op->done)(why);
    }
  }
  p->out_ops.clear();
  for (auto& op : p->backlog) {
    if (!op->finished()) {
      op->phase = Phase::kDone;
      std::move(op->done)(why);
    }
  }
  p->backlog.clear();
}

}  // namespace ringxfer::transport
