// transport::Target: transfers other engines make to or from this engine's memory
// (target.h).
#include "transport/target.h"

#include <array>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/str_format.h"
#include "transport/lane_key.h"
#include "transport/worker.h"

namespace ringxfer::transport {

void Target::report(Peer* p, InOp& in, const absl::Status& st) {
  if (in.reported) {
    return;
  }
  in.reported = true;
  in.fail(st);
  if (w_.inbound()) {
    w_.inbound()(p->key, in.id, in.status, in.parts);
  }
}

void Target::on_request(Conn* c, const wire::Request& r) {
  Peer* p = c->peer;
  if (r.seq == 0 || p->in_ops.contains(r.seq)) {
    w_.close_conn(c,
                  absl::DataLossError(absl::StrFormat(
                      "request sequence %d is 0 or repeated while in flight", r.seq)),
                  true);
    return;
  }
  if (p->in_ops.size() >= kInboundOpsMaxPerPeer) {
    w_.close_conn(c, absl::ResourceExhaustedError("too many transfers in flight from one engine"),
                  true);
    return;
  }
  w_.counters().transfers_served.fetch_add(1, std::memory_order_relaxed);
  auto in = std::make_shared<InOp>();
  in->peer = p;
  in->id = r.transfer_id;
  in->seq = r.seq;
  in->parts = r.parts;
  in->kind = r.op;
  in->total = r.total_bytes;
  in->deadline_ns = now_ns() + w_.config().timeout_ns();
  in->segments.reserve(r.segments.size());
  in->lengths.reserve(r.segments.size());
  for (const wire::Segment seg : r.segments) {
    in->lengths.push_back(seg.length);
  }
  if (r.op == wire::OpKind::kWrite) {
    in->starts = segment_starts(in->lengths);
  }
  // A region's rights name engines, not lane groups: the peer's base key asks.
  const memory::Requester who{split_lane_key(p->key).base, r.op == wire::OpKind::kWrite
                                                               ? memory::AccessKind::kWrite
                                                               : memory::AccessKind::kRead};
  std::optional<memory::Region> region;  // the lock is taken once per distinct region
  for (const wire::Segment s : r.segments) {
    absl::StatusOr<std::byte*> at =
        w_.registry().resolve(who, s.memory_id, s.key, s.offset, s.length, region, in->pins);
    if (!at.ok()) {
      if (at.status().code() == absl::StatusCode::kPermissionDenied) {
        w_.counters().access_denied.fetch_add(1, std::memory_order_relaxed);
      }
      in->fail(at.status());
      break;
    }
    const bool gpu = region->location == memory::Location::kGpu;
    if (gpu && in->devices.size() < in->segments.size() + 1) {
      in->devices.resize(in->segments.size(), -1);  // the segments before were host memory
    }
    in->segments.push_back(iovec{*at, s.length});
    if (gpu || !in->devices.empty()) {
      in->devices.push_back(gpu ? static_cast<int16_t>(region->device) : -1);
    }
  }
  if (r.op == wire::OpKind::kWrite) {
    p->in_ops.emplace(in->seq, in);
    if (in->failed()) {
      // Fail fast; the payload that follows is read and dropped.
      const absl::Status st = in->status;
      report(p, *in, st);
      in->completion_sent = true;
      w_.queue_completion(p->in_ctrl, *in, st);
    }
    unpark(p);
    return;
  }
  if (in->failed()) {
    const absl::Status st = in->status;
    report(p, *in, st);
    w_.queue_completion(c, *in, st);
    return;
  }
  p->in_ops.emplace(in->seq, in);
  serve_read(p, in);
}

void Target::serve_read(Peer* p, const std::shared_ptr<InOp>& in) {
  w_.send_data(p, false, nullptr, in, in->segments, in->devices, in->id, in->seq);
  if (in->total < w_.inline_limit() && in->devices.empty()) {
    // The data went on the control connection: the completion can follow right behind.
    // (Not for GPU memory: its copy may still fail, and the completion must say so.)
    in->completion_sent = true;
    w_.queue_completion(p->in_ctrl, *in, absl::OkStatus());
  }
  maybe_finish(p, in);
}

void Target::release_if_idle(InOp& in) {
  if (in.failed() && in.pending == 0 && in.receiving == 0) {
    in.pins.clear();
  }
}

void Target::settle(const std::shared_ptr<InOp>& in) {
  release_if_idle(*in);
  maybe_finish(in->peer, in);
}

void Target::maybe_finish(Peer* p, const std::shared_ptr<InOp>& in) {
  if (in->pending > 0 || in->receiving > 0 || p == nullptr) {
    return;
  }
  if (in->kind == wire::OpKind::kWrite && in->received < in->total) {
    return;
  }
  auto it = p->in_ops.find(in->seq);
  if (it == p->in_ops.end() || it->second != in) {
    return;
  }
  p->in_ops.erase(it);
  in->pins.clear();  // nothing of it is in the kernel any more
  const absl::Status st = in->status;
  if (!in->completion_sent) {
    in->completion_sent = true;
    w_.queue_completion(p->in_ctrl, *in, st);
  }
  report(p, *in, st);
}

void Target::on_payload(const std::shared_ptr<InOp>& in, uint64_t bytes) {
  in->received += bytes;
  --in->receiving;
  settle(in);
}

void Target::on_payload_lost(InOp& in) {
  --in.receiving;
  release_if_idle(in);
}

void Target::on_discarded(Peer* p, uint32_t seq, uint64_t bytes) {
  auto it = p->in_ops.find(seq);
  if (it != p->in_ops.end()) {
    std::shared_ptr<InOp> in = it->second;
    in->received += bytes;
    maybe_finish(p, in);
  }
}

// Every entry is checked against the request's segments and claims its bytes in the
// write's Coverage, so a frame outside the request, or one that repeats bytes already
// received, closes the connection as hostile and touches no memory.
template <typename Entries>
void Target::on_data(Conn* c, uint64_t id, uint32_t seq, uint64_t payload, const Entries& entries) {
  Peer* p = c->peer;
  auto hostile = [&](const std::string& what) {
    w_.close_conn(c, absl::DataLossError(what), true);
  };
  auto it = p->in_ops.find(seq);
  if (it == p->in_ops.end()) {
    if (c->channel == wire::ChannelKind::kControl) {
      return hostile("data for a transfer that was never requested");
    }
    // The request is still on its way on the control connection: wait for it, leaving
    // the payload in the socket.
    c->rx.park();
    c->parked_seq = seq;
    c->since_ns = now_ns();
    p->parked.push_back(c);
    return;
  }
  std::shared_ptr<InOp> in = it->second;
  if (in->id != id || in->kind != wire::OpKind::kWrite) {
    return hostile(absl::StrFormat("data for request %d names transfer %d, not its write %d", seq,
                                   id, in->id));
  }
  if (in->coverage.claimed() + payload > in->total) {
    return hostile("more data than the request announced");
  }
  const bool place = !in->failed();
  std::vector<iovec> dest;
  std::vector<int16_t> devs;  // filled only when the write goes to GPU memory
  dest.reserve(place ? entries.size() : 0);
  for (const wire::BatchEntry e : entries) {
    if (e.segment >= in->lengths.size() || e.offset + e.length > in->lengths[e.segment]) {
      return hostile(
          absl::StrFormat("data frame outside segment %d of transfer %d", e.segment, in->id));
    }
    if (!in->coverage.claim(in->starts[e.segment] + e.offset, e.length)) {
      return hostile(
          absl::StrFormat("data for bytes of transfer %d that were already received", in->id));
    }
    if (place) {
      dest.push_back(
          iovec{static_cast<std::byte*>(in->segments[e.segment].iov_base) + e.offset, e.length});
      if (!in->devices.empty()) {
        devs.push_back(in->devices[e.segment]);
      }
    }
  }
  if (!place) {
    // A write that failed (unknown memory, say): its payload is read and dropped.
    c->parked_seq = in->seq;
    w_.start_discard(c, payload);
    return;
  }
  c->rx_in = in;
  ++in->receiving;
  w_.start_payload(c, std::move(dest), payload, std::move(devs));
}

template void Target::on_data(Conn*, uint64_t, uint32_t, uint64_t,
                              const std::array<wire::BatchEntry, 1>&);
template void Target::on_data(Conn*, uint64_t, uint32_t, uint64_t,
                              const wire::PackedTable<wire::BatchEntry>&);

void Target::unpark(Peer* p) {
  if (p->parked.empty()) {
    return;
  }
  std::vector<Conn*> parked = std::move(p->parked);
  p->parked.clear();
  for (Conn* c : parked) {
    if (c->state == ConnState::kClosing || !c->rx.parked()) {
      continue;
    }
    if (!p->in_ops.contains(c->parked_seq)) {
      p->parked.push_back(c);  // still waiting
      continue;
    }
    // Deliver the frame we stopped at again, now that its request is known.
    c->rx.resume();
    w_.drive_rx(c);
  }
}

void Target::fail_all(Peer* p, const absl::Status& why) {
  auto ops = std::move(p->in_ops);
  p->in_ops.clear();
  for (auto& [seq, in] : ops) {
    report(p, *in, why);
  }
}

void Target::expire(Peer* p, int64_t now) {
  std::vector<std::shared_ptr<InOp>> expired;
  for (auto& [seq, in] : p->in_ops) {
    if (now > in->deadline_ns && !in->reported) {
      expired.push_back(in);
    }
  }
  const int64_t timeout_ms = w_.config().timeout_ns() / 1'000'000;
  for (auto& in : expired) {
    report(p, *in,
           absl::DeadlineExceededError(absl::StrFormat(
               "transfer %d from %s did not finish within %d ms", in->id, p->key, timeout_ms)));
  }
}

void Target::stop(Peer* p, const std::shared_ptr<InOp>& in, const absl::Status& why) {
  in->fail(why);
  if (in->kind == wire::OpKind::kRead && !in->completion_sent) {
    // The rest of the read is not sent; its completion says why.
    std::vector<Conn*> conns = p->in_data;
    conns.push_back(p->in_ctrl);
    w_.drop_unstarted(conns, [&in](const SendItem& item) { return item.in == in; });
  }
  release_if_idle(*in);
  maybe_finish(p, in);
}

void Target::abort(const std::shared_ptr<InOp>& in, const absl::Status& why) {
  if (in->peer == nullptr || in->finished() || in->failed()) {
    return;
  }
  stop(in->peer, in, why);
}

void Target::fence(Peer* p, const memory::RegionUse* use, uint64_t id) {
  std::vector<std::shared_ptr<InOp>> ins;
  for (auto& [seq, in] : p->in_ops) {
    if (holds_region(in->pins, use)) {
      ins.push_back(in);
    }
  }
  for (auto& in : ins) {
    stop(p, in,
         absl::FailedPreconditionError(absl::StrFormat(
             "memory %d was deregistered during transfer %d from %s", id, in->id, p->key)));
  }
}

void Target::on_cancel(Conn* c, const wire::Cancel& x) {
  Peer* p = c->peer;
  auto it = p->in_ops.find(x.seq);
  if (it == p->in_ops.end()) {
    return;  // it finished here already: its completion crossed the cancel
  }
  std::shared_ptr<InOp> in = it->second;
  if (in->id != x.transfer_id || in->kind != x.op) {
    w_.close_conn(c,
                  absl::DataLossError(absl::StrFormat(
                      "cancel of request %d names transfer %d, which that request was not", x.seq,
                      x.transfer_id)),
                  true);
    return;
  }
  const uint64_t announced = in->total;
  if (in->kind == wire::OpKind::kWrite) {
    // Claimed bytes count frames that came, also those whose payload is still being
    // received: a cancel below them would let the transfer finish under a receive.
    if (x.sent_bytes > in->total || x.sent_bytes < in->coverage.claimed()) {
      w_.close_conn(c,
                    absl::DataLossError(absl::StrFormat(
                        "cancel of transfer %d says %d bytes were sent: it announced %d and "
                        "frames for %d came already",
                        in->id, x.sent_bytes, in->total, in->coverage.claimed())),
                    true);
      return;
    }
    in->total = x.sent_bytes;  // the rest never comes; what is on its way is dropped
  }
  stop(p, in,
       status_from_wire(
           x.status,
           in->kind == wire::OpKind::kWrite
               ? absl::StrFormat("%s stopped transfer %d after sending %d of its %d "
                                 "bytes (its memory was deregistered)",
                                 split_lane_key(p->key).base, in->id, x.sent_bytes, announced)
               : absl::StrFormat("%s stopped read %d (its memory was deregistered)",
                                 split_lane_key(p->key).base, in->id)));
}

}  // namespace ringxfer::transport
