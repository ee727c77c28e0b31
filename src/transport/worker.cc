// Worker: slots of connections and the dispatch of completions by tag.
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
// Worker: slots

absl::Status Worker::start(const ring::RingOptions& options, int cpu) {
  absl::StatusOr<std::unique_ptr<ring::EventLoop>> loop =
      ring::EventLoop::start(options, absl::StrFormat("rx-ring-%d", index_), cpu);
  if (!loop.ok()) {
    return loop.status();
  }
  loop_ = std::move(*loop);
  loop_->call([this] {
    loop_->set_handler(kKindConn, this);
    loop_->set_handler(kKindListen, this);
    loop_->set_handler(kKindZc, this);
    const int64_t shortest =
        std::min<int64_t>(t_->config.timeout_ns(),
                          std::chrono::nanoseconds(t_->config.engine.handshake_timeout).count());
    const int64_t period = std::clamp<int64_t>(shortest / 20, 1'000'000, 50'000'000);
    loop_->set_tick([this] { tick(); }, period);
  });
  return absl::OkStatus();
}

Conn* Worker::new_conn(int fd, bool outbound) {
  uint32_t slot;
  if (!free_slots_.empty()) {
    slot = free_slots_.back();
    free_slots_.pop_back();
  } else {
    slot = static_cast<uint32_t>(conns_.size());
    conns_.push_back(nullptr);
    slot_gen_.push_back(0);
  }
  const uint16_t gen = ++slot_gen_[slot];
  conns_[slot] = std::make_unique<Conn>();
  Conn* c = conns_[slot].get();
  c->slot = slot;
  c->gen = gen;
  c->fd = fd;
  c->file = loop_->ring().install_file(fd);
  c->outbound = outbound;
  c->since_ns = now_ns();
  c->active_ns = c->since_ns;
  live_conns.fetch_add(1, std::memory_order_relaxed);
  t_->counters.connections_opened.fetch_add(1, std::memory_order_relaxed);
  return c;
}

Conn* Worker::conn_at(ring::Tag tag) {
  if (tag.slot >= conns_.size()) {
    return nullptr;
  }
  Conn* c = conns_[tag.slot].get();
  if (c == nullptr || c->gen != tag.generation || c->fd < 0) {
    return nullptr;  // a stale completion of a connection that is gone
  }
  return c;
}

void Worker::free_conn(Conn* c) {
  // Mark it dead; the object goes at the next reclaim().
  if (c->inbound_counted) {
    c->inbound_counted = false;
    t_->inbound_conns.fetch_sub(1, std::memory_order_relaxed);
  }
  if (c->accepted_handshake) {
    c->accepted_handshake = false;
    --handshaking_;
  }
  if (c->fd >= 0) {
    loop_->ring().remove_file(c->file);  // the table holds the socket open, too
    c->file = -1;
    ::close(c->fd);
    c->fd = -1;
  }
  detach_rx_stage(c, true);
  c->rx_out.reset();
  if (c->rx_in != nullptr) {
    --c->rx_in->receiving;
    c->rx_in.reset();
  }
  released_.push_back(c->slot);
  live_conns.fetch_sub(1, std::memory_order_relaxed);
}

// ---------------------------------------------------------------------------
// Completion dispatch

void Worker::on_completion(ring::Tag tg, int32_t res, uint32_t flags) noexcept {
  reclaim();
  if (tg.kind == kKindListen) {
    on_accept(res);
    return;
  }
  if (tg.kind == kKindZc) {
    on_zc(tg.slot, tg.generation, res, flags);
    return;
  }
  Conn* c = conn_at(tg);
  if (c == nullptr) {
    return;
  }
  --c->inflight;
  switch (tg.op) {
    case kOpConnect:
      if (c->state == ConnState::kClosing) {
        break;
      }
      if (res < 0) {
        close_conn(c, connect_failed(-res, addr_string(c->peer->addr)).status);
        break;
      }
      c->state = ConnState::kHandshake;
      c->since_ns = now_ns();
      pump_tx(c);
      drive_rx(c);
      break;
    case kOpSend:
      on_send(c, res, false);
      if (c->auth != nullptr && c->auth->proven) {
        maybe_hand_over(c);  // its challenge has gone: the socket can move
      }
      break;
    case kOpRecv:
      on_recv(c, res);
      break;
    default:
      break;
  }
  maybe_release(c);
}

void Worker::start_op(const std::string& key, std::shared_ptr<OutOp> op) {
  reclaim();
  initiator_.start(key, std::move(op));
}

}  // namespace ringxfer::transport
