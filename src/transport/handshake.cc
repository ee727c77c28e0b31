// Worker: the handshake (hello, hello ack, handing an accepted socket to its peer's
// ring thread) and the listener.
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
// Handshake

void Worker::handle_hello(Conn* c, const wire::Hello& h) {
  if (h.version_min > wire::kVersionMax || h.version_max < wire::kVersionMin) {
    wire::HelloAck a;
    a.status = static_cast<uint16_t>(absl::StatusCode::kFailedPrecondition);
    a.key = t_->config.key;
    const std::string msg =
        absl::StrFormat("no common protocol version: peer speaks %d..%d, this engine %d..%d",
                        h.version_min, h.version_max, wire::kVersionMin, wire::kVersionMax);
    a.message = msg;
    std::vector<std::byte> f =
        encode_frame(wire::hello_ack_frame_bytes(a.key.size(), msg.size()),
                     [&](wire::MutableByteSpan o) { return wire::encode_hello_ack(a, o); });
    [[maybe_unused]] ssize_t sent = ::send(c->fd, f.data(), f.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    close_conn(c, absl::FailedPreconditionError(msg), true);
    return;
  }
  const std::string key(h.key);
  Worker& owner = t_->worker_for(key);
  // Hand the socket to the peer's worker (maybe this one) as a new connection; the
  // handshake slot is released here. A post, even to this worker, so the slot is not
  // reused while this handler chain still holds it.
  const int fd = c->fd;
  loop_->ring().remove_file(c->file);  // the new owner's ring registers it again
  c->file = -1;
  c->fd = -1;
  released_.push_back(c->slot);
  live_conns.fetch_sub(1, std::memory_order_relaxed);
  owner.loop().post([&owner, fd, key, ch = h.channel, stripe = h.stripe, caps = h.capabilities] {
    owner.adopt_inbound(fd, key, ch, stripe, caps);
  });
}

void Worker::adopt_inbound(int fd, std::string key, wire::ChannelKind channel, uint8_t stripe,
                           uint64_t capabilities) {
  reclaim();
  if (stopping_) {
    ::close(fd);
    return;
  }
  Peer* p = peer(key, true);
  Conn* c = new_conn(fd, false);
  t_->counters.connections_opened.fetch_sub(1, std::memory_order_relaxed);  // counted at accept
  c->peer = p;
  c->channel = channel;
  c->stripe = stripe;
  c->rx.configure(/*read_ahead=*/channel == wire::ChannelKind::kControl, kDataPrefixBytes);
  c->name = channel == wire::ChannelKind::kControl
                ? absl::StrFormat("control connection from %s", key)
                : absl::StrFormat("data connection %d from %s", stripe, key);
  // The newest connection for a (key, channel, stripe) wins: an older one is what a
  // peer that reconnected left behind.
  Conn* old = channel == wire::ChannelKind::kControl ? p->in_ctrl : p->in_data[stripe];
  if (old != nullptr) {
    close_conn(old, absl::UnavailableError("replaced by a newer connection from the same engine"));
  }
  if (channel == wire::ChannelKind::kControl) {
    p->in_ctrl = c;
  } else {
    p->in_data[stripe] = c;
  }
  wire::HelloAck a;
  a.key = t_->config.key;
  a.capabilities = capabilities & (wire::kCapDataBatch | wire::kCapZeroCopy);
  a.instance_id = t_->instance_id;
  enqueue(c, frame_item(encode_frame(
                 wire::hello_ack_frame_bytes(a.key.size(), 0),
                 [&](wire::MutableByteSpan o) { return wire::encode_hello_ack(a, o); })));
  c->state = ConnState::kReady;
  pump_tx(c);
  drive_rx(c);
}

void Worker::handle_hello_ack(Conn* c, const wire::HelloAck& a) {
  if (a.status != 0) {
    close_conn(c, status_from_wire(a.status, a.message));
    return;
  }
  if (c->peer != nullptr && a.key != split_lane_key(c->peer->key).base) {
    close_conn(
        c,
        absl::FailedPreconditionError(absl::StrFormat(
            "the engine at %s is %s, not %s", addr_string(c->peer->addr), a.key, c->peer->key)),
        false);
    return;
  }
  c->state = ConnState::kReady;
}

// ---------------------------------------------------------------------------
// Listener

void Worker::start_listening(int fd) {
  listen_fd_ = fd;
  arm_accept();
}

void Worker::arm_accept() {
  if (listen_fd_ < 0 || stopping_) {
    return;
  }
  loop_->ring().accept(ring::Tag{kKindListen, 0, 0, 0}.pack(), listen_fd_, SOCK_CLOEXEC);
}

void Worker::on_accept(int32_t res) {
  if (stopping_) {
    if (res >= 0) {
      ::close(res);
    }
    return;
  }
  if (res >= 0) {
    accept_paused_ = false;
    apply_socket_options(res);
    Conn* c = new_conn(res, false);
    c->state = ConnState::kHandshake;
    c->name = "an accepted connection";
    // Exactly the hello (at least kDataPrefixBytes long): what follows it stays in the
    // socket for the ring its peer lives on.
    c->rx.configure(/*read_ahead=*/false, kDataPrefixBytes);
    drive_rx(c);
    arm_accept();
    return;
  }
  const OpError e = accept_failed(-res);
  switch (e.next) {
    case Next::kStop:
      return;
    case Next::kResubmit:
      arm_accept();
      return;
    case Next::kBackOff:
    case Next::kFail:
      // Out of descriptors (or memory): accepting again at once would fail again at once
      // and spin this ring. Pause; the tick re-arms it. Said once per episode.
      if (!accept_paused_) {
        RX_LOG(kWarn, "%s; not accepting connections for %d ms at a time until one succeeds",
               e.status.message(), kAcceptPauseNs / 1'000'000);
      }
      accept_paused_ = true;
      accept_resume_ns_ = now_ns() + kAcceptPauseNs;
      return;
  }
}

}  // namespace ringxfer::transport
