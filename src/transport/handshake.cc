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

void Worker::refuse_hello(Conn* c, absl::StatusCode code, const std::string& message) {
  wire::HelloAck a;
  a.status = static_cast<uint16_t>(code);
  a.key = t_->config.key;
  a.message = message;
  std::vector<std::byte> f =
      encode_frame(wire::hello_ack_frame_bytes(a.key.size(), message.size()),
                   [&](wire::MutableByteSpan o) { return wire::encode_hello_ack(a, o); });
  // Best effort and never blocking: the connection closes right after.
  [[maybe_unused]] ssize_t sent = ::send(c->fd, f.data(), f.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  close_conn(c, absl::Status(code, message), true);
}

void Worker::auth_failed(Conn* c, const std::string& why) {
  const uint64_t n = t_->counters.auth_failures.fetch_add(1, std::memory_order_relaxed) + 1;
  sockaddr_storage addr{};
  socklen_t len = sizeof(addr);
  const std::string from =
      ::getpeername(c->fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0 ? addr_string(addr) : "?";
  RX_LOG(kWarn, "%s (%s): authentication failed: %s (%d so far)", c->name, from, why, n);
}

void Worker::handle_hello(Conn* c, const wire::Hello& h) {
  if (h.version_min > wire::kVersionMax || h.version_max < wire::kVersionMin) {
    refuse_hello(
        c, absl::StatusCode::kFailedPrecondition,
        absl::StrFormat("no common protocol version: peer speaks %d..%d, this engine %d..%d",
                        h.version_min, h.version_max, wire::kVersionMin, wire::kVersionMax));
    return;
  }
  if (!t_->keyring) {
    hand_over(c, std::string(h.key), h.channel, h.stripe, h.capabilities, h.instance_id);
    return;
  }
  // Authenticating: prove the key to the initiator, then wait for its proof. What the
  // refusal says is the same whatever was wrong (the log line here says what).
  const std::string refusal =
      "this engine authenticates its peers: configure the same auth_key_file on both";
  if (h.auth.empty()) {
    auth_failed(c, absl::StrFormat("%s sent no proof of a shared key", h.key));
    refuse_hello(c, absl::StatusCode::kUnauthenticated, refusal);
    return;
  }
  const wire::Result<wire::HelloAuth> ha = wire::decode_hello_auth(h.auth);
  const auth::AuthKey* key = ha.ok() ? t_->keyring->find(ha->key_id) : nullptr;
  if (key == nullptr) {
    auth_failed(c, ha.ok() ? absl::StrFormat("%s named key id %d, which is not in the key file",
                                             h.key, ha->key_id)
                           : absl::StrFormat("%s sent malformed auth bytes", h.key));
    refuse_hello(c, absl::StatusCode::kUnauthenticated, refusal);
    return;
  }
  auto st = std::make_unique<AuthState>();
  st->key_id = key->id;
  st->initiator_nonce = ha->nonce;
  st->target_nonce = auth::random_nonce();
  st->initiator_key = std::string(h.key);
  st->channel = h.channel;
  st->stripe = h.stripe;
  st->initiator_instance = h.instance_id;
  st->target_instance = t_->instance_id;
  st->capabilities = h.capabilities;
  wire::AuthChallenge ch;
  ch.key_id = key->id;
  ch.nonce = st->target_nonce;
  ch.mac = auth::compute_proof(*key, auth::Role::kTarget, st->input(t_->config.key));
  ch.instance_id = t_->instance_id;
  c->auth = std::move(st);
  SendItem item =
      frame_item(encode_frame(wire::auth_challenge_frame_bytes(), [&](wire::MutableByteSpan o) {
        return wire::encode_auth_challenge(ch, o);
      }));
  item.handshake = true;
  enqueue(c, std::move(item));
  pump_tx(c);
}

void Worker::handle_auth_proof(Conn* c, const wire::AuthProof& pr) {
  AuthState& st = *c->auth;
  const auth::AuthKey* key = t_->keyring->find(st.key_id);
  RX_CHECK(key != nullptr);  // the keyring never changes
  const auth::Mac want =
      auth::compute_proof(*key, auth::Role::kInitiator, st.input(t_->config.key));
  if (pr.key_id != st.key_id || !auth::proofs_equal(want, pr.mac)) {
    auth_failed(
        c, absl::StrFormat("%s did not prove it holds key id %d", st.initiator_key, st.key_id));
    close_conn(c, absl::UnauthenticatedError("the peer's proof did not check out"), true);
    return;
  }
  st.proven = true;
  maybe_hand_over(c);
}

void Worker::maybe_hand_over(Conn* c) {
  if (c->fd < 0 || c->state == ConnState::kClosing || c->inflight > 0 || c->tx.busy() ||
      !c->tx.empty()) {
    return;  // the challenge is still being sent: on_completion comes back here
  }
  const std::unique_ptr<AuthState> st = std::move(c->auth);
  hand_over(c, std::move(st->initiator_key), st->channel, st->stripe, st->capabilities,
            st->initiator_instance);
}

void Worker::hand_over(Conn* c, std::string key, wire::ChannelKind channel, uint8_t stripe,
                       uint64_t capabilities, uint64_t instance) {
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
  if (c->accepted_handshake) {
    c->accepted_handshake = false;
    --handshaking_;
  }
  c->inbound_counted = false;  // the adopted connection carries the count on
  owner.loop().post([&owner, fd, key = std::move(key), channel, stripe, capabilities, instance] {
    owner.adopt_inbound(fd, key, channel, stripe, capabilities, instance);
  });
}

void Worker::adopt_inbound(int fd, std::string key, wire::ChannelKind channel, uint8_t stripe,
                           uint64_t capabilities, uint64_t instance) {
  reclaim();
  if (stopping_) {
    ::close(fd);
    t_->inbound_conns.fetch_sub(1, std::memory_order_relaxed);
    return;
  }
  Peer* p = peer(key, true);
  Conn* c = new_conn(fd, false);
  c->inbound_counted = true;
  t_->counters.connections_opened.fetch_sub(1, std::memory_order_relaxed);  // counted at accept
  c->peer_instance = instance;
  c->channel = channel;
  c->stripe = stripe;
  c->rx.configure(/*read_ahead=*/channel == wire::ChannelKind::kControl, kDataPrefixBytes);
  c->name = channel == wire::ChannelKind::kControl
                ? absl::StrFormat("control connection from %s", key)
                : absl::StrFormat("data connection %d from %s", stripe, key);
  // The newest connection for a (key, channel, stripe) wins over an older one that the
  // same engine run left behind (it reconnected), or, with authentication, over any
  // other of the same proven engine. Without authentication a hello proves nothing: it
  // never displaces a live connection of another engine run (a hello naming a victim's
  // key would otherwise cut the victim off and fail its transfers).
  Conn* old = channel == wire::ChannelKind::kControl ? p->in_ctrl : p->in_data[stripe];
  if (old != nullptr && old->state != ConnState::kClosing && !t_->keyring &&
      old->peer_instance != instance) {
    t_->counters.connections_refused.fetch_add(1, std::memory_order_relaxed);
    refuse_hello(c, absl::StatusCode::kAlreadyExists,
                 absl::StrFormat("engine %s is already connected here from another run", key));
    return;
  }
  c->peer = p;
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
  a.capabilities = capabilities & (wire::kCapDataBatch | wire::kCapZeroCopy | wire::kCapCancel);
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
  if (c->auth != nullptr && !c->auth->challenged) {
    close_conn(c, absl::UnauthenticatedError(absl::StrFormat(
                      "the engine at %s does not authenticate its peers, and this engine "
                      "requires it (auth_key_file is set): configure the same key file on both",
                      addr_string(c->peer->addr))));
    return;
  }
  if (c->auth != nullptr && a.instance_id != c->auth->target_instance) {
    close_conn(c, absl::DataLossError("the hello ack names another engine run than the challenge"),
               true);
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
  c->auth.reset();
  c->peer_caps = a.capabilities;
  c->state = ConnState::kReady;
}

void Worker::handle_auth_challenge(Conn* c, const wire::AuthChallenge& ch) {
  AuthState& st = *c->auth;
  const auth::AuthKey* key = t_->keyring->find(st.key_id);
  RX_CHECK(key != nullptr);
  st.target_nonce = ch.nonce;
  st.target_instance = ch.instance_id;
  const std::string target_key(split_lane_key(c->peer->key).base);
  const auth::ProofInput in = st.input(target_key);
  if (ch.key_id != st.key_id ||
      !auth::proofs_equal(auth::compute_proof(*key, auth::Role::kTarget, in), ch.mac)) {
    auth_failed(c, absl::StrFormat("%s did not prove it holds key id %d", target_key, st.key_id));
    close_conn(c,
               absl::UnauthenticatedError(
                   absl::StrFormat("the engine at %s did not prove it holds the shared key (id %d)",
                                   addr_string(c->peer->addr), st.key_id)),
               true);
    return;
  }
  st.challenged = true;
  wire::AuthProof pr;
  pr.key_id = st.key_id;
  pr.mac = auth::compute_proof(*key, auth::Role::kInitiator, in);
  SendItem item =
      frame_item(encode_frame(wire::auth_proof_frame_bytes(), [&](wire::MutableByteSpan o) {
        return wire::encode_auth_proof(pr, o);
      }));
  item.handshake = true;
  // Ahead of the requests queued behind the hello, which may go now.
  c->tx.push_next(std::move(item));
  c->tx_gated = false;
  pump_tx(c);
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
    const EngineConfig& e = t_->config.engine;
    const int inbound = t_->inbound_conns.load(std::memory_order_relaxed);
    if (inbound >= e.max_inbound_connections || handshaking_ >= e.max_handshaking_connections) {
      // Over a limit: counted, closed at once (the backlog keeps moving), said once in a
      // while (RX_LOG is rate-limited per site). Counted first: a peer that sees the close
      // and then reads the stats finds its refusal there.
      const uint64_t n =
          t_->counters.connections_refused.fetch_add(1, std::memory_order_release) + 1;
      ::close(res);
      RX_LOG(kWarn,
             "refused a connection: %d inbound open (max_inbound_connections %d), %d "
             "handshaking (max_handshaking_connections %d); %d refused so far",
             inbound, e.max_inbound_connections, handshaking_, e.max_handshaking_connections, n);
      arm_accept();
      return;
    }
    t_->inbound_conns.fetch_add(1, std::memory_order_relaxed);
    ++handshaking_;
    apply_socket_options(res);
    Conn* c = new_conn(res, false);
    c->inbound_counted = true;
    c->accepted_handshake = true;
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
