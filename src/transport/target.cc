// Worker: transfers other engines make to or from this engine's memory, and the data
// frames of both sides.
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
// Transfers: target side

void Worker::report_inbound(Peer* p, InOp& in, const absl::Status& st) {
  if (in.reported) {
    return;
  }
  in.reported = true;
  in.fail(st);
  if (t_->inbound) {
    t_->inbound(p->key, in.id, in.status, in.parts);
  }
}

void Worker::handle_request(Conn* c, const wire::Request& r) {
  Peer* p = c->peer;
  if (r.seq == 0 || p->in_ops.contains(r.seq)) {
    close_conn(c,
               absl::DataLossError(
                   absl::StrFormat("request sequence %d is 0 or repeated while in flight", r.seq)),
               true);
    return;
  }
  if (p->in_ops.size() >= kInboundOpsMaxPerPeer) {
    close_conn(c, absl::ResourceExhaustedError("too many transfers in flight from one engine"),
               true);
    return;
  }
  t_->counters.transfers_served.fetch_add(1, std::memory_order_relaxed);
  auto in = std::make_shared<InOp>();
  in->peer = p;
  in->id = r.transfer_id;
  in->seq = r.seq;
  in->parts = r.parts;
  in->kind = r.op;
  in->total = r.total_bytes;
  in->deadline_ns = now_ns() + t_->config.timeout_ns();
  in->segments.reserve(r.segments.size());
  in->lengths.reserve(r.segments.size());
  for (const wire::Segment seg : r.segments) {
    in->lengths.push_back(seg.length);
  }
  if (r.op == wire::OpKind::kWrite) {
    in->starts = segment_starts(in->lengths);
  }
  std::optional<memory::Region> region;  // the lock is taken once per distinct region
  for (const wire::Segment s : r.segments) {
    absl::StatusOr<std::byte*> at =
        t_->registry->resolve(s.memory_id, s.offset, s.length, region, in->pins);
    if (!at.ok()) {
      in->fail(at.status());
      break;
    }
    in->segments.push_back(iovec{*at, s.length});
  }
  if (r.op == wire::OpKind::kWrite) {
    p->in_ops.emplace(in->seq, in);
    if (in->failed()) {
      // Fail fast; the payload that follows is read and dropped.
      const absl::Status st = in->status;
      report_inbound(p, *in, st);
      in->completion_sent = true;
      queue_completion(p->in_ctrl, *in, st);
    }
    unpark(p);
    return;
  }
  if (in->failed()) {
    const absl::Status st = in->status;
    report_inbound(p, *in, st);
    queue_completion(c, *in, st);
    return;
  }
  p->in_ops.emplace(in->seq, in);
  serve_read(p, in);
}

void Worker::serve_read(Peer* p, const std::shared_ptr<InOp>& in) {
  send_data(p, false, nullptr, in, in->segments, in->id, in->seq);
  if (in->total < t_->inline_limit()) {
    // The data went on the control connection: the completion can follow right behind.
    in->completion_sent = true;
    queue_completion(p->in_ctrl, *in, absl::OkStatus());
  }
  maybe_finish_in(p, in);
}

void Worker::maybe_finish_in(Peer* p, const std::shared_ptr<InOp>& in) {
  if (in->pending > 0 || p == nullptr) {
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
    queue_completion(p->in_ctrl, *in, st);
  }
  report_inbound(p, *in, st);
}

void Worker::unpark(Peer* p) {
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
    drive_rx(c);
  }
}

}  // namespace ringxfer::transport
