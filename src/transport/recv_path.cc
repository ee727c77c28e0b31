// Worker: the receive path: framing on buffered and plain connections, payload into
// its destination, and delivery of each frame to its handler.
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

// ThreadSanitizer cannot see the ordering a network protocol gives: bytes copied out of
// a receive buffer here are read by another thread only after a completion frame went
// over a socket. The kernel's own writes into receive buffers are invisible to TSan;
// copies that stand in for them are made invisible too.
#if defined(__SANITIZE_THREAD__)
#define RX_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define RX_TSAN 1
#endif
#endif
#ifdef RX_TSAN
// Dynamic annotations, exported by the TSan runtime to shared libraries.
extern "C" void AnnotateIgnoreWritesBegin(const char* file, int line);
extern "C" void AnnotateIgnoreWritesEnd(const char* file, int line);
#endif

namespace ringxfer::transport {

using detail::Conn;
using detail::ConnState;
using detail::InOp;
using detail::OutOp;
using detail::Peer;
using detail::RxState;
using detail::SendItem;

// ---------------------------------------------------------------------------
// Receive path

void Worker::expect_frame(Conn* c) {
  c->rx = RxState::kFrame;
  c->rx_header = false;
  c->rx_have = 0;
  c->rx_want = c->channel == wire::ChannelKind::kData ? kDataPrefixBytes : kCtrlPrefixBytes;
  if (c->rxbuf.size() < wire::kHeaderBytes + wire::kHelloBodyBytesMax) {
    c->rxbuf.resize(wire::kHeaderBytes + wire::kHelloBodyBytesMax);
  }
}

void Worker::arm_recv(Conn* c) {
  if (c->rx_busy || c->state == ConnState::kClosing || c->rx == RxState::kParked) {
    return;
  }
  if (c->buffered && c->rx == RxState::kFrame) {
    parse_buffered(c);
    return;
  }
  if (c->rx_want == 0 && c->rx == RxState::kFrame) {
    expect_frame(c);
  }
  ring::Ring& ring = loop_->ring();
  switch (c->rx) {
    case RxState::kFrame:
      c->rx_asked = c->rx_want - c->rx_have;
      ring.recv(tag(c, kOpRecv), sock(c), c->rxbuf.data() + c->rx_have, c->rx_asked, MSG_WAITALL);
      break;
    case RxState::kPayload: {
      c->rx_msg = msghdr{};
      c->rx_msg.msg_iov = c->rx_iov.data() + c->rx_pos;
      c->rx_msg.msg_iovlen = std::min(c->rx_iov.size() - c->rx_pos, kRxIovMax);
      c->rx_asked = 0;
      for (size_t i = 0; i < c->rx_msg.msg_iovlen; ++i) {
        c->rx_asked += c->rx_msg.msg_iov[i].iov_len;
      }
      ring.recvmsg(tag(c, kOpRecv), sock(c), &c->rx_msg, MSG_WAITALL);
      break;
    }
    case RxState::kDiscard:
      if (!c->scratch) {
        c->scratch = std::make_unique<std::byte[]>(kScratchBytes);
      }
      c->rx_asked = static_cast<size_t>(std::min<uint64_t>(c->rx_left, kScratchBytes));
      ring.recv(tag(c, kOpRecv), sock(c), c->scratch.get(), c->rx_asked, MSG_WAITALL);
      break;
    case RxState::kParked:
      break;
  }
  c->rx_busy = true;
  ++c->inflight;
}

void Worker::on_recv(Conn* c, int32_t res) {
  c->rx_busy = false;
  if (c->state == ConnState::kClosing) {
    return;
  }
  if (res <= 0) {
    close_conn(c, res == 0 ? absl::UnavailableError("the peer closed the connection")
                           : base::errno_to_status(-res, "recv"));
    return;
  }
  const size_t n = static_cast<size_t>(res);
  if (c->buffered && c->rx == RxState::kFrame) {
    c->rend += n;
    parse_buffered(c);
    return;
  }
  switch (c->rx) {
    case RxState::kFrame: {
      c->rx_have += n;
      if (n < c->rx_asked) {
        t_->counters.short_recvs.fetch_add(1, std::memory_order_relaxed);
      }
      if (c->rx_have < c->rx_want) {
        break;
      }
      if (!c->rx_header) {
        wire::Result<wire::FrameHeader> h =
            wire::decode_header(wire::ByteSpan(c->rxbuf.data(), c->rx_have));
        if (!h.ok()) {
          close_conn(c,
                     absl::DataLossError(
                         absl::StrFormat("bad frame header: %s", wire::to_string(h.error()))),
                     true);
          return;
        }
        c->fh = *h;
        c->rx_header = true;
        const size_t frame = wire::kHeaderBytes + h->body_bytes;
        if (c->rx_have > frame) {
          // The prefix is never longer than the shortest frame its channel carries.
          close_conn(c, absl::DataLossError("frame shorter than its channel allows"), true);
          return;
        }
        if (c->rx_have < frame) {
          if (c->rxbuf.size() < frame) {
            c->rxbuf.resize(frame);
          }
          c->rx_want = frame;
          break;
        }
      }
      c->frame = c->rxbuf.data();
      on_frame(c);
      return;
    }
    case RxState::kPayload: {
      uint64_t left = n;
      c->rx_left -= n;
      while (left > 0 && c->rx_pos < c->rx_iov.size()) {
        iovec& v = c->rx_iov[c->rx_pos];
        if (left >= v.iov_len) {
          left -= v.iov_len;
          ++c->rx_pos;
        } else {
          v.iov_base = static_cast<std::byte*>(v.iov_base) + left;
          v.iov_len -= left;
          left = 0;
        }
      }
      if (n < c->rx_asked) {
        t_->counters.short_recvs.fetch_add(1, std::memory_order_relaxed);
      }
      if (c->rx_left > 0) {
        break;
      }
      on_payload_done(c);
      return;
    }
    case RxState::kDiscard:
      c->rx_left -= n;
      if (c->rx_left > 0) {
        break;
      }
      on_payload_done(c);
      return;
    case RxState::kParked:
      break;
  }
  arm_recv(c);
}

void Worker::start_payload(Conn* c, std::vector<iovec> dest, uint64_t bytes) {
  c->rx = RxState::kPayload;
  c->rx_iov = std::move(dest);
  c->rx_pos = 0;
  c->rx_left = bytes;
  receive_payload(c);
}

void Worker::start_discard(Conn* c, uint64_t bytes) {
  c->rx = RxState::kDiscard;
  c->rx_left = bytes;
  receive_payload(c);
}

void Worker::receive_payload(Conn* c) {
  // A buffered (control) connection may hold some or all of the payload already.
  if (c->buffered) {
    consume_buffered(c);
    if (c->rx_left == 0) {
      on_payload_done(c);
      return;
    }
  }
  arm_recv(c);
}

// Moves payload bytes that were read ahead into the buffer to their destinations (or
// drops them, when discarding).
void Worker::consume_buffered(Conn* c) {
  while (c->rx_left > 0 && c->rpos < c->rend) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(c->rx_left, c->rend - c->rpos));
    if (c->rx == RxState::kPayload) {
      iovec& v = c->rx_iov[c->rx_pos];
      n = std::min(n, v.iov_len);
#ifdef RX_TSAN
      AnnotateIgnoreWritesBegin(__FILE__, __LINE__);
#endif
      std::memcpy(v.iov_base, c->rbuf.data() + c->rpos, n);
#ifdef RX_TSAN
      AnnotateIgnoreWritesEnd(__FILE__, __LINE__);
#endif
      v.iov_base = static_cast<std::byte*>(v.iov_base) + n;
      v.iov_len -= n;
      if (v.iov_len == 0) {
        ++c->rx_pos;
      }
    }
    c->rpos += n;
    c->rx_left -= n;
  }
}

// Parses every whole frame in a buffered connection's buffer, then receives more.
void Worker::parse_buffered(Conn* c) {
  if (c->parsing) {
    return;  // the loop below is already running further up the stack
  }
  if (c->rbuf.empty()) {
    c->rbuf.resize(kCtrlBufferBytes);
  }
  c->parsing = true;
  while (c->state != ConnState::kClosing && c->rx == RxState::kFrame) {
    const size_t avail = c->rend - c->rpos;
    if (avail < wire::kHeaderBytes) {
      break;
    }
    if (!c->rx_header) {
      wire::Result<wire::FrameHeader> h =
          wire::decode_header(wire::ByteSpan(c->rbuf.data() + c->rpos, avail));
      if (!h.ok()) {
        c->parsing = false;
        close_conn(c,
                   absl::DataLossError(
                       absl::StrFormat("bad frame header: %s", wire::to_string(h.error()))),
                   true);
        return;
      }
      c->fh = *h;
      c->rx_header = true;
    }
    const size_t frame = wire::kHeaderBytes + c->fh.body_bytes;
    if (avail < frame) {
      break;
    }
    c->frame = c->rbuf.data() + c->rpos;
    c->rpos += frame;  // the payload, if any, follows
    on_frame(c);       // the buffer is not moved while this frame is handled
  }
  c->parsing = false;
  if (c->state == ConnState::kClosing || c->rx != RxState::kFrame || c->rx_busy) {
    return;
  }
  // Keep the unparsed tail at the front, then read as much as fits.
  if (c->rpos == c->rend) {
    c->rpos = c->rend = 0;
  } else if (c->rpos > 0) {
    std::memmove(c->rbuf.data(), c->rbuf.data() + c->rpos, c->rend - c->rpos);
    c->rend -= c->rpos;
    c->rpos = 0;
  }
  c->rx_asked = c->rbuf.size() - c->rend;
  loop_->ring().recv(tag(c, kOpRecv), sock(c), c->rbuf.data() + c->rend, c->rx_asked, 0);
  c->rx_busy = true;
  ++c->inflight;
}

void Worker::on_payload_done(Conn* c) {
  const uint64_t bytes = c->fh.payload_bytes;
  const bool placed = c->rx == RxState::kPayload;
  if (placed) {
    t_->counters.bytes_received.fetch_add(bytes, std::memory_order_relaxed);
  }
  if (c->rx_out) {
    std::shared_ptr<OutOp> op = std::move(c->rx_out);
    --op->pending;
    op->received += bytes;
    maybe_finish(c->peer, op);
  }
  if (c->rx_in) {
    std::shared_ptr<InOp> in = std::move(c->rx_in);
    in->received += bytes;
    --in->receiving;
    release_if_idle(*in);
    maybe_finish_in(c->peer, in);
  } else if (!placed && !c->outbound && c->peer != nullptr) {
    // Discarded payload of a failed write: count it toward that transfer.
    auto it = c->peer->in_ops.find(c->parked_seq);
    if (it != c->peer->in_ops.end()) {
      std::shared_ptr<InOp> in = it->second;
      in->received += bytes;
      maybe_finish_in(c->peer, in);
    }
  }
  if (c->state == ConnState::kClosing) {
    return;
  }
  expect_frame(c);
  arm_recv(c);
}

void Worker::on_frame(Conn* c) {
  const wire::ByteSpan body(c->frame + wire::kHeaderBytes, c->fh.body_bytes);
  const wire::FrameType type = c->fh.type;
  auto bad = [&](wire::DecodeError e) {
    close_conn(c,
               absl::DataLossError(absl::StrFormat("malformed %d frame: %s", static_cast<int>(type),
                                                   wire::to_string(e))),
               true);
  };
  // What each side of each channel may receive, and when.
  const bool handshake = c->state == ConnState::kHandshake;
  if (handshake && type != (c->outbound ? wire::FrameType::kHelloAck : wire::FrameType::kHello)) {
    close_conn(c, absl::DataLossError("expected a handshake frame"), true);
    return;
  }
  // Decodes the body with `decode` and hands the frame to `handle`, or closes the
  // connection as hostile when it may not come here now or does not decode.
  auto deliver = [&](bool allowed, auto decode, auto handle) {
    if (!allowed) {
      return bad(wire::DecodeError::kUnknownType);
    }
    auto frame = decode(c->fh, body);
    if (!frame.ok()) {
      return bad(frame.error());
    }
    handle(*frame);
  };
  const bool control = c->channel == wire::ChannelKind::kControl;
  switch (type) {
    case wire::FrameType::kHello:
      // handle_hello hands the socket over (or closes it): nothing more to arm here.
      return deliver(handshake, wire::decode_hello_body,
                     [&](const wire::Hello& h) { handle_hello(c, h); });
    case wire::FrameType::kHelloAck:
      deliver(handshake, wire::decode_hello_ack_body,
              [&](const wire::HelloAck& a) { handle_hello_ack(c, a); });
      break;
    case wire::FrameType::kWriteRequest:
    case wire::FrameType::kReadRequest:
      deliver(!c->outbound && control, wire::decode_request_body,
              [&](const wire::Request& r) { handle_request(c, r); });
      break;
    case wire::FrameType::kCompletion:
      deliver(c->outbound && control, wire::decode_completion_body,
              [&](const wire::Completion& cmp) { handle_completion(c, cmp); });
      break;
    case wire::FrameType::kData:
      // Data and batch handlers arm their own receive (payload, discard or parked).
      return deliver(true, wire::decode_data_body,
                     [&](const wire::DataHeader& d) { handle_data(c, d); });
    case wire::FrameType::kDataBatch:
      return deliver(true, wire::decode_data_batch_body,
                     [&](const wire::DataBatch& b) { handle_batch(c, b); });
  }
  if (c->state == ConnState::kClosing) {
    return;
  }
  expect_frame(c);
  arm_recv(c);
}


}  // namespace ringxfer::transport
