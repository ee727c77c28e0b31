// Worker: the receive path. Each connection's RxFramer says where the next receive
// goes and what arrived means; drive_rx runs its events (frames to their handlers,
// payloads done) until it needs more bytes, then arms the one receive in flight.
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <utility>

#include "absl/strings/str_format.h"
#include "base/check.h"
#include "base/errno_status.h"
#include "base/log.h"
#include "transport/op_errors.h"
#include "transport/worker.h"
#include "wire/codec.h"

namespace ringxfer::transport {

void Worker::drive_rx(Conn* c) {
  if (c->rx_driving || c->rx_busy) {
    return;  // the loop below is already running further up the stack, or bytes are due
  }
  c->rx_driving = true;
  // A handler may close the connection, or (a hello) hand its socket to another ring.
  // A proven connection waits to be handed over: what follows belongs to another ring.
  // A staged payload's next part may wait for a slab: its grant drives it again.
  while (c->fd >= 0 && c->state != ConnState::kClosing && !(c->auth && c->auth->proven) &&
         !c->rx_wait_slab) {
    const RxFramer::Event e = c->rx.step();
    if (e == RxFramer::Event::kFrame) {
      on_frame(c);
    } else if (e == RxFramer::Event::kPayloadDone) {
      on_payload_done(c);
    } else if (e == RxFramer::Event::kPartDone) {
      // A part of a payload bound for GPU memory filled its slab: copy it out, and the
      // next part goes to another slab meanwhile.
      part_landed(c);
      request_rx_slab(c);
    } else if (e == RxFramer::Event::kNeedMore) {
      if (answers_unread(c)) {
        // The peer does not read what this engine answers: read no more of its
        // requests until it does (on_send resumes), so its flood costs a bounded queue.
        if (!c->rx_held) {
          c->rx_held = true;
          c->held_ns = now_ns();
        }
        break;
      }
      arm_recv(c);
      break;
    } else if (e == RxFramer::Event::kBad) {
      close_conn(c, absl::DataLossError(c->rx.bad_reason()), true);
      break;
    } else {
      break;  // parked: unpark() drives it again
    }
  }
  c->rx_driving = false;
}

void Worker::arm_recv(Conn* c) {
  const RxFramer::Target t = c->rx.next();
  const int flags = t.wait_all ? MSG_WAITALL : 0;
  c->rx_wait_all = t.wait_all;
  if (t.buf != nullptr) {
    loop_->ring().recv(tag(c, kOpRecv), sock(c), t.buf, t.len, flags);
  } else {
    c->rx_msg = msghdr{};
    c->rx_msg.msg_iov = t.iov.data();
    c->rx_msg.msg_iovlen = t.iov.size();
    loop_->ring().recvmsg(tag(c, kOpRecv), sock(c), &c->rx_msg, flags);
  }
  c->rx_busy = true;
  ++c->inflight;
}

void Worker::on_recv(Conn* c, int32_t res) {
  c->rx_busy = false;
  if (c->state == ConnState::kClosing) {
    return;
  }
  if (res == 0) {
    close_conn(c, absl::UnavailableError("the peer closed the connection"));
    return;
  }
  if (res < 0) {
    const OpError e = recv_failed(-res);
    if (e.next == Next::kResubmit) {
      c->rx.retry();
      drive_rx(c);
    } else {
      close_conn(c, e.status);
    }
    return;
  }
  const size_t n = static_cast<size_t>(res);
  c->active_ns = now_ns();
  if (c->rx_wait_all && n < c->rx.asked()) {
    t_->counters.short_recvs.fetch_add(1, std::memory_order_relaxed);
  }
  c->rx.received(n);
  drive_rx(c);
}

void Worker::start_discard(Conn* c, uint64_t) { c->rx.discard_payload(); }

void Worker::on_payload_done(Conn* c) {
  const uint64_t bytes = c->rx.payload_bytes();
  const bool placed = c->rx.placed();
  if (placed) {
    t_->counters.bytes_received.fetch_add(bytes, std::memory_order_relaxed);
  }
  if (c->rx_stage) {
    // Bound for GPU memory: it counts once its last part is copied there.
    part_landed(c);
    detach_rx_stage(c, false);
    return;
  }
  // The connection lets go of the transfer before it hears: on_payload takes a
  // reference, so a std::move into it would leave the pointer here, and the end of the
  // next payload this connection drops would count as this transfer's again.
  if (std::shared_ptr<OutOp> op = std::exchange(c->rx_out, nullptr)) {
    initiator_.on_payload(op, bytes);
  }
  if (std::shared_ptr<InOp> in = std::exchange(c->rx_in, nullptr)) {
    target_.on_payload(in, bytes);
  } else if (!placed && !c->outbound && c->peer != nullptr) {
    // Discarded payload of a failed write: it counts toward that transfer.
    target_.on_discarded(c->peer, c->parked_seq, bytes);
  }
}

void Worker::on_frame(Conn* c) {
  const wire::FrameHeader& fh = c->rx.header();
  const wire::ByteSpan body = c->rx.body();
  const wire::FrameType type = fh.type;
  auto bad = [&](wire::DecodeError e) {
    close_conn(c,
               absl::DataLossError(absl::StrFormat("malformed %d frame: %s", static_cast<int>(type),
                                                   wire::to_string(e))),
               true);
  };
  // What each side of each channel may receive, and when.
  const bool handshake = c->state == ConnState::kHandshake;
  // An authenticating initiator expects the challenge first (a hello ack then says why
  // there is none); an authenticating target expects the proof after its challenge.
  const bool challenge_due = c->outbound && c->auth != nullptr && !c->auth->challenged;
  const bool proof_due = !c->outbound && c->auth != nullptr;
  if (handshake) {
    const bool expected =
        c->outbound ? type == wire::FrameType::kHelloAck ||
                          (challenge_due && type == wire::FrameType::kAuthChallenge)
                    : type == (proof_due ? wire::FrameType::kAuthProof : wire::FrameType::kHello);
    if (!expected) {
      close_conn(c, absl::DataLossError("expected a handshake frame"), true);
      return;
    }
  }
  // Decodes the body with `decode` and hands the frame to `handle`, or closes the
  // connection as hostile when it may not come here now or does not decode.
  auto deliver = [&](bool allowed, auto decode, auto handle) {
    if (!allowed) {
      return bad(wire::DecodeError::kUnknownType);
    }
    auto frame = decode(fh, body);
    if (!frame.ok()) {
      return bad(frame.error());
    }
    handle(*frame);
  };
  const bool control = c->channel == wire::ChannelKind::kControl;
  switch (type) {
    case wire::FrameType::kHello:
      // handle_hello hands the socket over (or closes it): nothing more is received here.
      return deliver(handshake, wire::decode_hello_body,
                     [&](const wire::Hello& h) { handle_hello(c, h); });
    case wire::FrameType::kHelloAck:
      deliver(handshake, wire::decode_hello_ack_body,
              [&](const wire::HelloAck& a) { handle_hello_ack(c, a); });
      break;
    case wire::FrameType::kAuthChallenge:
      deliver(handshake && challenge_due, wire::decode_auth_challenge_body,
              [&](const wire::AuthChallenge& ch) { handle_auth_challenge(c, ch); });
      break;
    case wire::FrameType::kAuthProof:
      // Once it checks out, the socket is handed over: nothing more is received here.
      return deliver(handshake && proof_due, wire::decode_auth_proof_body,
                     [&](const wire::AuthProof& pr) { handle_auth_proof(c, pr); });
    case wire::FrameType::kWriteRequest:
    case wire::FrameType::kReadRequest:
      deliver(!c->outbound && control, wire::decode_request_body,
              [&](const wire::Request& r) { target_.on_request(c, r); });
      break;
    case wire::FrameType::kCompletion:
      deliver(c->outbound && control, wire::decode_completion_body,
              [&](const wire::Completion& cmp) { initiator_.on_completion(c, cmp); });
      break;
    case wire::FrameType::kCancel:
      deliver(!c->outbound && control, wire::decode_cancel_body,
              [&](const wire::Cancel& x) { target_.on_cancel(c, x); });
      break;
    case wire::FrameType::kData:
      // Data and batch handlers say where the payload goes (or drop or park it).
      return deliver(true, wire::decode_data_body,
                     [&](const wire::DataHeader& d) { handle_data(c, d); });
    case wire::FrameType::kDataBatch:
      return deliver(true, wire::decode_data_batch_body,
                     [&](const wire::DataBatch& b) { handle_batch(c, b); });
  }
}

void Worker::handle_data(Conn* c, const wire::DataHeader& d) {
  // One frame, one entry; its length fits an entry (kDataPayloadBytesMax is 1 GiB).
  const std::array<wire::BatchEntry, 1> entry = {
      wire::BatchEntry{d.segment, static_cast<uint32_t>(d.length), d.offset}};
  if (c->outbound) {
    initiator_.on_data(c, d.transfer_id, d.seq, d.length, entry);
  } else {
    target_.on_data(c, d.transfer_id, d.seq, d.length, entry);
  }
}

void Worker::handle_batch(Conn* c, const wire::DataBatch& b) {
  if (c->outbound) {
    initiator_.on_data(c, b.transfer_id, b.seq, b.payload_bytes, b.entries);
  } else {
    target_.on_data(c, b.transfer_id, b.seq, b.payload_bytes, b.entries);
  }
}

}  // namespace ringxfer::transport
