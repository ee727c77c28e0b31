// Worker: deadlines (the tick), shutdown, and what is left after the loop stopped.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_format.h"
#include "base/check.h"
#include "base/errno_status.h"
#include "base/log.h"
#include "transport/worker.h"
#include "wire/codec.h"

namespace ringxfer::transport {

// ---------------------------------------------------------------------------
// Timeouts

void Worker::tick() {
  reclaim();
  const int64_t now = now_ns();
  if (accept_resume_ns_ != 0 && now >= accept_resume_ns_) {
    accept_resume_ns_ = 0;
    arm_accept();
  }
  const int64_t timeout = t_->config.timeout_ns();
  const EngineConfig& e = t_->config.engine;
  // Over half the inbound slots taken: idle inbound connections give theirs back.
  const bool crowded =
      2 * t_->inbound_conns.load(std::memory_order_relaxed) > e.max_inbound_connections;
  const int64_t idle_limit = std::chrono::nanoseconds(e.idle_timeout).count();
  for (Conn* c : [&] {
         std::vector<Conn*> v;
         for (auto& up : conns_) {
           if (up != nullptr && up->fd >= 0 && up->state != ConnState::kClosing) {
             v.push_back(up.get());
           }
         }
         return v;
       }()) {
    if (c->state == ConnState::kClosing) {
      continue;
    }
    // An accepted socket has handshake_timeout to say hello (and prove its key); a
    // connection this engine opened has the transfer timeout to be answered.
    const int64_t handshake_limit =
        c->accepted_handshake
            ? std::chrono::nanoseconds(t_->config.engine.handshake_timeout).count()
            : timeout;
    if ((c->state == ConnState::kConnecting || c->state == ConnState::kHandshake) &&
        now - c->since_ns > handshake_limit) {
      close_conn(c, absl::DeadlineExceededError(
                        absl::StrFormat("no handshake within %d ms", handshake_limit / 1'000'000)));
    } else if (c->rx_held && now - c->held_ns > timeout) {
      close_conn(c,
                 absl::ResourceExhaustedError(absl::StrFormat(
                     "its peer stopped reading: %d bytes of answers waited %d ms without a byte "
                     "of them sent",
                     c->tx.frame_bytes(), timeout / 1'000'000)),
                 true);
    } else if (c->rx.parked() && now - c->since_ns > timeout) {
      close_conn(c,
                 absl::DataLossError(
                     absl::StrFormat("data for request %d that never came", c->parked_seq)),
                 true);
    }
  }
  if (crowded) {
    close_idle_inbound(now, idle_limit);
  }
  for (auto& [key, up] : peers_) {
    initiator_.expire(up.get(), now);
    target_.expire(up.get(), now);
  }
  evict_idle_peers();
}

void Worker::close_idle_inbound(int64_t now, int64_t idle_limit) {
  // A peer's inbound connections go together (closing one fails the others), so only a
  // peer all of whose inbound connections are quiet loses them: nothing queued, sent or
  // received for idle_limit, no payload or parked frame, and no transfer it asked for.
  auto quiet = [&](const Conn* c) {
    return c->state == ConnState::kReady && c->tx.empty() && !c->tx.busy() && c->rx_in == nullptr &&
           !c->rx.parked() && !c->rx_held && now - c->active_ns > idle_limit;
  };
  const EngineConfig& e = t_->config.engine;
  std::vector<Conn*> close;
  for (auto& [key, up] : peers_) {
    const Peer& p = *up;
    if (!p.in_ops.empty() || !p.parked.empty()) {
      continue;
    }
    std::vector<Conn*> in;
    if (p.in_ctrl != nullptr) {
      in.push_back(p.in_ctrl);
    }
    for (Conn* d : p.in_data) {
      if (d != nullptr) {
        in.push_back(d);
      }
    }
    if (!in.empty() && std::ranges::all_of(in, quiet)) {
      t_->counters.idle_closed.fetch_add(in.size(), std::memory_order_relaxed);
      close.push_back(in.front());  // the rest go with it (fail_inbound)
    }
  }
  for (Conn* c : close) {
    if (c->state != ConnState::kClosing) {
      close_conn(c, absl::UnavailableError(absl::StrFormat(
                        "closed after %d ms idle, with over half of max_inbound_connections (%d) "
                        "open",
                        idle_limit / 1'000'000, e.max_inbound_connections)));
    }
  }
}

void Worker::evict_idle_peers() {
  // Raw Peer pointers live in connections (also closing ones not yet reclaimed) and in
  // transfers; a transfer outside its peer's maps is still referenced by a send item of
  // a connection of that peer or by a zero-copy notification slot.
  absl::flat_hash_set<const Peer*> held;
  for (const auto& up : conns_) {
    if (up != nullptr && up->peer != nullptr) {
      held.insert(up->peer);
    }
  }
  for (const ZcSlot& z : zc_) {
    if (z.out) {
      held.insert(z.out->peer);
    }
    if (z.in) {
      held.insert(z.in->peer);
    }
  }
  auto idle = [](const Peer& p) {
    return !p.has_addr && p.out_ctrl == nullptr && p.in_ctrl == nullptr &&
           std::ranges::all_of(p.out_data, [](const Conn* c) { return c == nullptr; }) &&
           std::ranges::all_of(p.in_data, [](const Conn* c) { return c == nullptr; }) &&
           p.out_ops.empty() && p.backlog.empty() && p.in_ops.empty() && p.parked.empty();
  };
  for (auto it = peers_.begin(); it != peers_.end();) {
    const Peer* p = it->second.get();
    if (!held.contains(p) && idle(*p)) {
      peers_.erase(it++);
      t_->counters.peers.fetch_sub(1, std::memory_order_relaxed);
      t_->counters.peers_evicted.fetch_add(1, std::memory_order_relaxed);
    } else {
      ++it;
    }
  }
}

// ---------------------------------------------------------------------------
// Deregistration

void Worker::fence(const memory::RegionUse* use, uint64_t id) {
  reclaim();
  for (auto& [key, up] : peers_) {
    initiator_.fence(up.get(), use, id);
    target_.fence(up.get(), use, id);
  }
}

void Worker::shutdown() {
  reclaim();
  stopping_ = true;
  if (t_->staging) {
    t_->staging->cancel_waiters(owner_id());  // grants to this ring would come too late
  }
  if (listen_fd_ >= 0) {
    loop_->ring().cancel_fd(listen_fd_);
  }
  const absl::Status why = absl::UnavailableError("the engine is shutting down");
  for (auto& [key, p] : peers_) {
    fail_outbound(p.get(), why);
    fail_inbound(p.get(), why);
  }
  for (auto& up : conns_) {
    if (up != nullptr && up->fd >= 0) {
      close_conn(up.get(), why);
    }
  }
}

void Worker::abandon() {
  // On the ring thread, the last thing it does: the kernel holds nothing of ours (or the
  // drain timed out, which was logged).
  for (auto& [key, p] : peers_) {
    initiator_.abandon(p.get());
  }
  for (auto& up : conns_) {
    if (up != nullptr && up->fd >= 0) {
      ::close(up->fd);  // the registered-file table lets go when the ring is destroyed
      up->fd = -1;
      up->file = -1;
    }
  }
}

}  // namespace ringxfer::transport
