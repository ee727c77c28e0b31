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

using detail::Conn;
using detail::ConnState;
using detail::InOp;
using detail::OutOp;
using detail::Peer;
using detail::RxState;
using detail::SendItem;

// ---------------------------------------------------------------------------
// Transfers: target side

void Worker::report_inbound(Peer* p, InOp& in, const absl::Status& st) {
  if (in.reported) {
    return;
  }
  in.reported = true;
  if (in.status.ok()) {
    in.status = st;
  }
  if (t_->inbound) {
    t_->inbound(p->key, in.id, in.status, in.parts);
  }
}

void Worker::handle_request(Conn* c, const wire::Request& r) {
  Peer* p = c->peer;
  if (p->in_ops.contains(r.transfer_id)) {
    close_conn(c,
               absl::DataLossError(
                   absl::StrFormat("transfer id %d repeated while in flight", r.transfer_id)),
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
  in->parts = r.parts;
  in->kind = r.op;
  in->total = r.total_bytes;
  in->deadline_ns = now_ns() + t_->config.timeout_ns;
  in->segments.reserve(r.segments.size());
  std::optional<memory::Region> region;  // the lock is taken once per distinct region
  for (const wire::Segment s : r.segments) {
    absl::StatusOr<std::byte*> at = t_->registry->resolve(s.memory_id, s.offset, s.length, region);
    if (!at.ok()) {
      in->status = at.status();
      break;
    }
    in->segments.push_back(iovec{*at, s.length});
  }
  if (r.op == wire::OpKind::kWrite) {
    p->in_ops.emplace(in->id, in);
    if (!in->status.ok()) {
      // Fail fast; the payload that follows is read and dropped.
      const absl::Status st = in->status;
      report_inbound(p, *in, st);
      in->completion_sent = true;
      queue_completion(p->in_ctrl, in->id, in->kind, st);
    }
    unpark(p);
    return;
  }
  if (!in->status.ok()) {
    const absl::Status st = in->status;
    report_inbound(p, *in, st);
    queue_completion(c, in->id, in->kind, st);
    return;
  }
  p->in_ops.emplace(in->id, in);
  serve_read(p, in);
}

void Worker::serve_read(Peer* p, const std::shared_ptr<InOp>& in) {
  send_data(p, false, nullptr, in, in->segments, in->id);
  if (in->total < t_->inline_limit()) {
    // The data went on the control connection: the completion can follow right behind.
    in->completion_sent = true;
    queue_completion(p->in_ctrl, in->id, in->kind, absl::OkStatus());
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
  auto it = p->in_ops.find(in->id);
  if (it == p->in_ops.end() || it->second != in) {
    return;
  }
  p->in_ops.erase(it);
  const absl::Status st = in->status;
  if (!in->completion_sent) {
    in->completion_sent = true;
    queue_completion(p->in_ctrl, in->id, in->kind, st);
  }
  report_inbound(p, *in, st);
}

void Worker::handle_data(Conn* c, const wire::DataHeader& d) {
  Peer* p = c->peer;
  const uint64_t len = d.length;
  if (c->outbound) {
    // Read payload coming back to this initiator.
    auto it = p->out_ops.find(d.transfer_id);
    if (it == p->out_ops.end() || it->second->failed || it->second->kind != wire::OpKind::kRead) {
      c->parked_id = 0;
      start_discard(c, len);
      return;
    }
    std::shared_ptr<OutOp> op = it->second;
    if (d.segment >= op->pieces.size() || d.offset + len > op->pieces[d.segment].length ||
        op->received + len > op->total) {
      close_conn(c, absl::DataLossError("read data outside the requested range"), true);
      return;
    }
    ++op->pending;
    c->rx_out = op;
    start_payload(c, {iovec{op->pieces[d.segment].local + d.offset, len}}, len);
    return;
  }
  auto it = p->in_ops.find(d.transfer_id);
  if (it == p->in_ops.end()) {
    if (c->channel == wire::ChannelKind::kControl) {
      close_conn(c, absl::DataLossError("data for a transfer that was never requested"), true);
      return;
    }
    // The request is still on its way on the control connection: wait for it, leaving
    // the payload in the socket.
    c->rx = RxState::kParked;
    c->parked_id = d.transfer_id;
    c->since_ns = now_ns();
    p->parked.push_back(c);
    return;
  }
  std::shared_ptr<InOp> in = it->second;
  if (in->kind != wire::OpKind::kWrite) {
    close_conn(c, absl::DataLossError("data sent for a read"), true);
    return;
  }
  if (in->received + len > in->total) {
    close_conn(c, absl::DataLossError("more data than the request announced"), true);
    return;
  }
  if (!in->status.ok()) {
    c->parked_id = in->id;
    start_discard(c, len);
    return;
  }
  if (d.segment >= in->segments.size() || d.offset + len > in->segments[d.segment].iov_len) {
    close_conn(c,
               absl::DataLossError(absl::StrFormat("data frame outside segment %d of transfer %d",
                                                   d.segment, in->id)),
               true);
    return;
  }
  c->rx_in = in;
  start_payload(
      c, {iovec{static_cast<std::byte*>(in->segments[d.segment].iov_base) + d.offset, len}}, len);
}

void Worker::handle_batch(Conn* c, const wire::DataBatch& b) {
  Peer* p = c->peer;
  std::vector<iovec> dest;
  dest.reserve(b.entries.size());
  auto hostile = [&](const char* what) { close_conn(c, absl::DataLossError(what), true); };
  if (c->outbound) {
    auto it = p->out_ops.find(b.transfer_id);
    if (it == p->out_ops.end() || it->second->failed || it->second->kind != wire::OpKind::kRead) {
      c->parked_id = 0;
      start_discard(c, b.payload_bytes);
      return;
    }
    std::shared_ptr<OutOp> op = it->second;
    if (op->received + b.payload_bytes > op->total) {
      return hostile("read data beyond the requested size");
    }
    for (const wire::BatchEntry e : b.entries) {
      if (e.segment >= op->pieces.size() || e.offset + e.length > op->pieces[e.segment].length) {
        return hostile("read data outside the requested range");
      }
      dest.push_back(iovec{op->pieces[e.segment].local + e.offset, e.length});
    }
    ++op->pending;
    c->rx_out = op;
    start_payload(c, std::move(dest), b.payload_bytes);
    return;
  }
  auto it = p->in_ops.find(b.transfer_id);
  if (it == p->in_ops.end()) {
    if (c->channel == wire::ChannelKind::kControl) {
      return hostile("data for a transfer that was never requested");
    }
    c->rx = RxState::kParked;
    c->parked_id = b.transfer_id;
    c->since_ns = now_ns();
    p->parked.push_back(c);
    return;
  }
  std::shared_ptr<InOp> in = it->second;
  if (in->kind != wire::OpKind::kWrite) {
    return hostile("data sent for a read");
  }
  if (in->received + b.payload_bytes > in->total) {
    return hostile("more data than the request announced");
  }
  if (!in->status.ok()) {
    c->parked_id = in->id;
    start_discard(c, b.payload_bytes);
    return;
  }
  for (const wire::BatchEntry e : b.entries) {
    if (e.segment >= in->segments.size() || e.offset + e.length > in->segments[e.segment].iov_len) {
      return hostile("batch entry outside its segment");
    }
    dest.push_back(
        iovec{static_cast<std::byte*>(in->segments[e.segment].iov_base) + e.offset, e.length});
  }
  c->rx_in = in;
  start_payload(c, std::move(dest), b.payload_bytes);
}

void Worker::unpark(Peer* p) {
  if (p->parked.empty()) {
    return;
  }
  std::vector<Conn*> parked = std::move(p->parked);
  p->parked.clear();
  for (Conn* c : parked) {
    if (c->state == ConnState::kClosing || c->rx != RxState::kParked) {
      continue;
    }
    if (!p->in_ops.contains(c->parked_id)) {
      p->parked.push_back(c);  // still waiting
      continue;
    }
    // Re-run the frame we stopped at, now that its request is known.
    c->rx = RxState::kFrame;
    c->frame = c->rxbuf.data();
    on_frame(c);
  }
}


}  // namespace ringxfer::transport
