// Worker: peers and their connections: opening, socket options, closing, and failing
// what a closed connection carried.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstring>

#include "absl/strings/str_format.h"
#include "base/check.h"
#include "base/errno_status.h"
#include "base/log.h"
#include "transport/worker.h"
#include "wire/codec.h"

namespace ringxfer::transport {

// ---------------------------------------------------------------------------
// Peers and connections

Peer* Worker::peer(const std::string& key, bool create) {
  auto it = peers_.find(key);
  if (it != peers_.end()) {
    return it->second.get();
  }
  if (!create) {
    return nullptr;
  }
  auto p = std::make_unique<Peer>();
  p->key = key;
  p->in_data.assign(wire::kStripesMax, nullptr);
  Peer* raw = p.get();
  peers_.emplace(key, std::move(p));
  t_->counters.peers.fetch_add(1, std::memory_order_relaxed);
  return raw;
}

void Worker::add_peer(const std::string& key, const sockaddr_storage& addr, socklen_t len) {
  reclaim();
  Peer* p = peer(key, true);
  const bool moved = p->has_addr && (p->addr_len != len || std::memcmp(&p->addr, &addr, len) != 0);
  p->addr = addr;
  p->addr_len = len;
  p->has_addr = true;
  if (moved) {
    fail_outbound(p, absl::UnavailableError(
                         absl::StrFormat("remote engine %s moved to %s", key, addr_string(addr))));
  }
}

void Worker::remove_peer(const std::string& key) {
  reclaim();
  Peer* p = peer(key, false);
  if (p == nullptr) {
    return;
  }
  p->has_addr = false;
  fail_outbound(
      p, absl::FailedPreconditionError(absl::StrFormat("remote engine %s was deregistered", key)));
}

void Worker::apply_socket_options(int fd) {
  const SocketOptions& s = t_->config.engine.socket;
  int one = 1;
  if (s.nodelay) {
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  }
  if (s.keepalive) {
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &s.keepalive_idle_s, sizeof(int));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &s.keepalive_interval_s, sizeof(int));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &s.keepalive_count, sizeof(int));
  }
  if (s.send_buffer_bytes > 0) {
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &s.send_buffer_bytes, sizeof(int));
  }
  if (s.recv_buffer_bytes > 0) {
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &s.recv_buffer_bytes, sizeof(int));
  }
  // Unacknowledged data older than the operation timeout breaks the connection.
  const unsigned user_timeout_ms =
      static_cast<unsigned>(std::min<int64_t>(t_->config.timeout_ns() / 1'000'000, 0x7fffffff));
  setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout_ms, sizeof(user_timeout_ms));
}

Conn* Worker::connect_one(Peer* p, wire::ChannelKind channel, uint8_t stripe) {
  const int fd = ::socket(p->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return nullptr;
  }
  apply_socket_options(fd);
  Conn* c = new_conn(fd, true);
  c->peer = p;
  c->channel = channel;
  c->stripe = stripe;
  c->state = ConnState::kConnecting;
  c->rx.configure(/*read_ahead=*/channel == wire::ChannelKind::kControl, kDataPrefixBytes);
  c->name = channel == wire::ChannelKind::kControl
                ? absl::StrFormat("control connection to %s", p->key)
                : absl::StrFormat("data connection %d to %s", stripe, p->key);
  wire::Hello h;
  h.channel = channel;
  h.stripe = stripe;
  h.capabilities = wire::kCapDataBatch | wire::kCapZeroCopy | wire::kCapCancel;
  h.instance_id = t_->instance_id;
  // A lane group's connections say which group they are: "<own key><sep>g".
  const std::string hello_key = t_->config.key + std::string(split_lane_key(p->key).suffix);
  h.key = hello_key;
  std::array<std::byte, wire::kHelloAuthBytes> auth_bytes{};
  if (t_->keyring) {
    // Prove the key first: nothing else goes until the target has proven it too.
    auto st = std::make_unique<AuthState>();
    st->key_id = t_->keyring->current().id;
    st->initiator_nonce = auth::random_nonce();
    st->initiator_key = hello_key;
    st->channel = channel;
    st->stripe = stripe;
    st->initiator_instance = t_->instance_id;
    wire::HelloAuth ha;
    ha.key_id = st->key_id;
    ha.nonce = st->initiator_nonce;
    RX_CHECK(wire::encode_hello_auth(ha, auth_bytes).ok());
    h.auth = auth_bytes;
    c->auth = std::move(st);
    c->tx_gated = true;
  }
  SendItem hello =
      frame_item(encode_frame(wire::hello_frame_bytes(h.key.size(), h.auth.size()),
                              [&](wire::MutableByteSpan o) { return wire::encode_hello(h, o); }));
  hello.handshake = true;
  enqueue(c, std::move(hello));
  loop_->ring().connect(tag(c, kOpConnect), sock(c), reinterpret_cast<const sockaddr*>(&p->addr),
                        p->addr_len);
  ++c->inflight;
  return c;
}

void Worker::open_outbound(Peer* p) {
  if (p->out_ctrl != nullptr) {
    return;
  }
  p->out_ctrl = connect_one(p, wire::ChannelKind::kControl, 0);
  p->out_data.assign(static_cast<size_t>(t_->config.stripes_per_group()), nullptr);
  for (int i = 0; i < t_->config.stripes_per_group(); ++i) {
    p->out_data[i] = connect_one(p, wire::ChannelKind::kData, static_cast<uint8_t>(i));
  }
  p->next_stripe = 0;
  if (p->out_ctrl == nullptr ||
      std::find(p->out_data.begin(), p->out_data.end(), nullptr) != p->out_data.end()) {
    fail_outbound(p, base::errno_to_status(errno, "socket"));
  }
}

void Worker::close_conn(Conn* c, const absl::Status& why, bool hostile) {
  if (c->state == ConnState::kClosing) {
    return;
  }
  if (hostile) {
    t_->counters.hostile_frames.fetch_add(1, std::memory_order_relaxed);
    RX_LOG(kWarn, "closing %s: %s", c->name, why.message());
  } else {
    RX_LOG(kDebug, "closing %s: %s", c->name, why.ToString());
  }
  c->state = ConnState::kClosing;
  t_->counters.connections_closed.fetch_add(1, std::memory_order_relaxed);
  if (stopping_) {
    // Shutting down: closing resets the connection and frees what its send queue holds,
    // so zero-copy notifications come now instead of when a peer reads (or never).
    const linger abort{1, 0};
    setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &abort, sizeof(abort));
  }
  // Make every operation of this socket in the kernel finish now, with an error.
  ::shutdown(c->fd, SHUT_RDWR);
  loop_->ring().cancel_fd(c->fd);
  Peer* p = c->peer;
  if (p != nullptr) {
    if (p->out_ctrl == c) {
      p->out_ctrl = nullptr;
    }
    for (Conn*& d : p->out_data) {
      if (d == c) {
        d = nullptr;
      }
    }
    if (p->in_ctrl == c) {
      p->in_ctrl = nullptr;
    }
    for (Conn*& d : p->in_data) {
      if (d == c) {
        d = nullptr;
      }
    }
    std::erase(p->parked, c);
    const absl::Status st =
        why.code() == absl::StatusCode::kDeadlineExceeded ||
                why.code() == absl::StatusCode::kUnavailable ||
                why.code() == absl::StatusCode::kFailedPrecondition
            ? absl::Status(why.code(), absl::StrFormat("%s: %s", c->name, why.message()))
            : absl::UnavailableError(absl::StrFormat("%s closed: %s", c->name, why.message()));
    // The cause goes on the transfers first; dropping their items below must not
    // replace it with a vaguer one.
    if (c->outbound) {
      fail_outbound(p, st);
    } else {
      fail_inbound(p, st);
    }
  }
  // Items not yet handed to the kernel will never be sent.
  std::vector<SendItem> dropped;
  c->tx.drop_waiting(dropped);
  for (SendItem& item : dropped) {
    item_done(item, false);
  }
  maybe_release(c);
}

void Worker::maybe_release(Conn* c) {
  if (c->state == ConnState::kClosing && c->inflight == 0 && c->fd >= 0) {
    // Items still marked in flight got their CQEs (with errors) by now.
    // Every CQE of this connection came: nothing is in the kernel's hands any more.
    c->tx.cancel_inflight();
    std::vector<SendItem> dropped;
    c->tx.drop_all(dropped);
    for (SendItem& item : dropped) {
      item_done(item, false);
    }
    detach_rx_stage(c, true);  // after its copies in flight, if any
    if (c->rx_out != nullptr) {
      std::shared_ptr<OutOp> op = std::move(c->rx_out);
      initiator_.on_payload(op, 0);
    }
    if (c->rx_in != nullptr) {
      std::shared_ptr<InOp> in = std::move(c->rx_in);
      Target::on_payload_lost(*in);
    }
    free_conn(c);
  }
}

bool Worker::path_stalled(const Peer* p, uint32_t quiet_ms) const {
  // A connection with bytes the peer has not acknowledged and no ACK for `quiet_ms`. A
  // busy healthy connection gets ACKs all the time; an idle one has nothing unacked.
  auto stalled = [quiet_ms](const Conn* c) {
    if (c == nullptr || c->fd < 0 || c->state == ConnState::kClosing) {
      return false;
    }
    tcp_info ti{};
    socklen_t len = sizeof(ti);
    return ::getsockopt(c->fd, IPPROTO_TCP, TCP_INFO, &ti, &len) == 0 && ti.tcpi_unacked > 0 &&
           ti.tcpi_last_ack_recv >= quiet_ms;
  };
  return stalled(p->out_ctrl) || std::ranges::any_of(p->out_data, stalled);
}

void Worker::fail_outbound(Peer* p, const absl::Status& why) {
  // Detach first: closing one connection re-enters here.
  std::vector<Conn*> conns = std::move(p->out_data);
  p->out_data.clear();
  conns.push_back(p->out_ctrl);
  p->out_ctrl = nullptr;
  for (Conn* d : conns) {
    if (d != nullptr) {
      close_conn(d, why);
    }
  }
  initiator_.fail_all(p, why);
}

void Worker::fail_inbound(Peer* p, const absl::Status& why) {
  std::vector<Conn*> conns = p->in_data;
  std::fill(p->in_data.begin(), p->in_data.end(), nullptr);
  conns.push_back(p->in_ctrl);
  p->in_ctrl = nullptr;
  for (Conn* d : conns) {
    if (d != nullptr) {
      close_conn(d, why);
    }
  }
  target_.fail_all(p, why);
}

}  // namespace ringxfer::transport
