// Worker: data frames, both kinds and both directions. A frame names its transfer by
// id and request sequence; every entry is checked against the request's segments and
// claims its bytes in the transfer's Coverage, so a frame outside the request, or one
// that repeats bytes already received, closes the connection as hostile and touches
// no memory.
#include <algorithm>
#include <array>

#include "absl/strings/str_format.h"
#include "transport/worker.h"
#include "wire/codec.h"

namespace ringxfer::transport {

void Worker::handle_data(Conn* c, const wire::DataHeader& d) {
  // One frame, one entry; its length fits an entry (kDataPayloadBytesMax is 1 GiB).
  const std::array<wire::BatchEntry, 1> entry = {
      wire::BatchEntry{d.segment, static_cast<uint32_t>(d.length), d.offset}};
  on_data(c, d.transfer_id, d.seq, d.length, entry);
}

void Worker::handle_batch(Conn* c, const wire::DataBatch& b) {
  on_data(c, b.transfer_id, b.seq, b.payload_bytes, b.entries);
}

template <typename Entries>
void Worker::on_data(Conn* c, uint64_t id, uint32_t seq, uint64_t payload, const Entries& entries) {
  Peer* p = c->peer;
  auto hostile = [&](const std::string& what) { close_conn(c, absl::DataLossError(what), true); };
  std::vector<iovec> dest;
  if (c->outbound) {
    // Read data coming back to this initiator.
    auto it = p->out_ops.find(seq);
    if (it == p->out_ops.end() || it->second->failed()) {
      // A transfer that failed or timed out already: its late data is dropped.
      c->parked_seq = 0;
      start_discard(c, payload);
      return;
    }
    std::shared_ptr<OutOp> op = it->second;
    if (op->id != id || op->kind != wire::OpKind::kRead) {
      return hostile(absl::StrFormat("data for request %d names transfer %d, not its read %d", seq,
                                     id, op->id));
    }
    if (op->received + payload > op->total) {
      return hostile("read data beyond the requested size");
    }
    dest.reserve(entries.size());
    for (const wire::BatchEntry e : entries) {
      if (e.segment >= op->pieces.size() || e.offset + e.length > op->pieces[e.segment].length) {
        return hostile("read data outside the requested range");
      }
      if (!op->coverage.claim(op->starts[e.segment] + e.offset, e.length)) {
        return hostile("read data for bytes that were already received");
      }
      dest.push_back(iovec{op->pieces[e.segment].local + e.offset, e.length});
    }
    on_read_data(c, op, payload, std::move(dest));
    return;
  }
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
  if (in->received + payload > in->total) {
    return hostile("more data than the request announced");
  }
  const bool place = !in->failed();
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
    }
  }
  if (!place) {
    // A write that failed (unknown memory, say): its payload is read and dropped.
    c->parked_seq = in->seq;
    start_discard(c, payload);
    return;
  }
  c->rx_in = in;
  ++in->receiving;
  start_payload(c, std::move(dest), payload);
}

void Worker::on_read_data(Conn* c, const std::shared_ptr<OutOp>& op, uint64_t payload,
                          std::vector<iovec> dest) {
  ++op->pending;
  c->rx_out = op;
  start_payload(c, std::move(dest), payload);
}

}  // namespace ringxfer::transport
