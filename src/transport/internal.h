// The transport's internal state: transfers on both sides, queued send items,
// connections with their receive state machine, and peers. Everything here is owned by
// one ring thread (a Worker) and touched only by it.
#pragma once

#include <sys/socket.h>
#include <sys/uio.h>

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "auth/proof.h"
#include "memory/staging.h"
#include "transport/coverage.h"
#include "transport/rx_framer.h"
#include "transport/transport.h"
#include "transport/tx_queue.h"
#include "wire/codec.h"

namespace ringxfer::transport::detail {

struct Peer;

// The phase of a transfer, on either side; it only moves forward:
//   kActive -> kDone, or kActive -> kFailed -> kDone.
// kActive: its frames move. kFailed: it failed here (timeout, connection lost, memory
// deregistered, bad request); the kernel may still hold its memory (`pending`), so it is
// not final yet and sends or places nothing more. kDone: final and reported; nothing of
// it is in the kernel.
enum class Phase : uint8_t { kActive, kFailed, kDone };

// What initiated and served transfers share. Pinned (by shared_ptr) by every send item,
// zero-copy slot and payload receive that references its memory.
struct Transfer {
  Peer* peer = nullptr;  // peers live as long as their worker
  uint64_t id = 0;
  uint32_t seq = 0;  // the request sequence (wire/frames.h); its key in the peer's map
  uint16_t parts = 0;
  wire::OpKind kind = wire::OpKind::kWrite;
  Phase phase = Phase::kActive;
  absl::Status status;  // the outcome so far; the first error wins
  uint64_t total = 0;
  uint64_t received = 0;  // payload bytes placed (or, served writes, dropped)
  int64_t deadline_ns = 0;
  // Kernel operations that still reference its memory: send items not fully sent and
  // zero-copy notifications not yet posted (and, initiated reads, payload receives).
  int pending = 0;
  Coverage coverage;              // bytes claimed by data frames (each at most once)
  std::vector<uint64_t> starts;   // where each segment starts in the transfer
  std::vector<memory::Pin> pins;  // the regions it uses, held until no byte moves

  bool failed() const noexcept { return phase == Phase::kFailed; }
  bool finished() const noexcept { return phase == Phase::kDone; }
  // Moves an active transfer to kFailed with `why` (not OK). Later failures keep the
  // first cause.
  void fail(absl::Status why) {
    if (phase == Phase::kActive && !why.ok()) {
      status = std::move(why);
      phase = Phase::kFailed;
    }
  }
};

// Whether `pins` hold the region behind `use` (a fence looks for these).
inline bool holds_region(const std::vector<memory::Pin>& pins, const memory::RegionUse* use) {
  for (const memory::Pin& p : pins) {
    if (p.use() == use) {
      return true;
    }
  }
  return false;
}

// A transfer this engine initiated.
struct OutOp : Transfer {
  std::vector<Piece> pieces;
  DoneFn done;
  bool remote_done = false;  // the target's completion came
  // GPU memory: an event recorded on the caller's stream when the transfer started; its
  // memory is copied only after it (null: none). `after_hold` owns it.
  memory::GpuEvent after = nullptr;
  std::shared_ptr<void> after_hold;
};

// A transfer another engine made to or from this engine's memory.
struct InOp : Transfer {
  std::vector<iovec> segments;    // resolved local ranges, in request order
  std::vector<int16_t> devices;   // each segment's GPU, -1 for host memory; empty: all host
  std::vector<uint64_t> lengths;  // the request's segment lengths (also when unresolved)
  int receiving = 0;              // write: payload receives into its memory in progress
  bool reported = false;          // the inbound status was recorded
  bool completion_sent = false;   // the completion frame was queued
};

// A send item's payload in GPU memory, copied into a pinned slab before it goes
// (staging.cc). Held by the item, by copies in flight into its slab and by a zero-copy
// send's notification; the slab goes back to its pool with the last of them.
struct StagedSend : Staged {
  ~StagedSend() override {
    if (slab != nullptr) {
      pool->release(slab);
    }
  }
  struct Source {
    const std::byte* at = nullptr;
    uint64_t bytes = 0;
    int16_t device = -1;  // -1: host memory (copied by the ring thread)
  };
  memory::SlabPool* pool = nullptr;
  memory::Slab* slab = nullptr;
  std::vector<Source> sources;  // in payload order
  memory::GpuEvent after = nullptr;
  std::shared_ptr<void> after_hold;  // keeps `after` alive while its copies wait on it
  int copies = 0;                    // copy batches in flight
  absl::Status status;
  uint32_t conn_slot = 0;  // the connection whose queue holds the item
  uint16_t conn_gen = 0;
  std::weak_ptr<OutOp> out;  // the transfer to fail when a copy fails
  std::weak_ptr<InOp> in;
};

// A payload being received into GPU memory through slabs of one pool, part after part:
// each part lands in a slab, then is copied to its destinations. The payload counts as
// received (or lost) only once the framer is done with it and no copy is in flight.
struct RxStage {
  ~RxStage() {
    if (slab != nullptr) {
      pool->release(slab);  // a connection torn down without detaching (abandon)
    }
  }
  std::vector<iovec> dest;    // the payload's destinations, in order
  std::vector<int16_t> devs;  // each one's GPU, or -1
  size_t at = 0;              // the destination the next part starts in
  uint64_t at_off = 0;        // and how far into it
  uint64_t unassigned = 0;    // payload bytes no part was given yet
  uint64_t bytes = 0;         // the whole payload
  memory::SlabPool* pool = nullptr;
  memory::Slab* slab = nullptr;  // the part being received
  uint64_t part = 0;             // its bytes
  bool started = false;          // the framer was given the first part
  int copies = 0;                // copy batches in flight
  bool framer_done = false;
  bool lost = false;  // the connection closed before the payload was whole
  bool finished = false;
  absl::Status status;               // a copy failed
  memory::GpuEvent after = nullptr;  // the initiator's caller event (OutOp::after)
  std::shared_ptr<void> after_hold;
  std::shared_ptr<OutOp> out;  // once the framer let go of the payload
  std::shared_ptr<InOp> in;
};

enum class ConnState : uint8_t { kConnecting, kHandshake, kReady, kClosing };

// A connection's authentication while its handshake runs (README, "Security"):
//   initiator: hello (key id, its nonce) -> challenge checked -> proof sent -> hello ack;
//   target:    hello checked -> challenge sent -> proof checked -> handed to the peer's
//              ring, which sends the hello ack.
// Nothing but these frames is sent or accepted before both proofs checked out.
struct AuthState {
  uint32_t key_id = 0;
  auth::Nonce initiator_nonce{};
  auth::Nonce target_nonce{};
  std::string initiator_key;  // as in the hello (with a lane group's suffix)
  wire::ChannelKind channel = wire::ChannelKind::kControl;
  uint8_t stripe = 0;
  uint64_t initiator_instance = 0;
  uint64_t target_instance = 0;
  uint64_t capabilities = 0;  // target: the hello's
  bool challenged = false;    // initiator: the target's proof checked out
  bool proven = false;        // target: the initiator's proof checked out

  auth::ProofInput input(std::string_view target_key) const {
    auth::ProofInput in;
    in.key_id = key_id;
    in.initiator_nonce = initiator_nonce;
    in.target_nonce = target_nonce;
    in.initiator_key = initiator_key;
    in.target_key = target_key;
    in.channel = static_cast<uint8_t>(channel);
    in.stripe = stripe;
    in.initiator_instance = initiator_instance;
    in.target_instance = target_instance;
    return in;
  }
};

struct Conn {
  uint32_t slot = 0;
  uint16_t gen = 0;
  int fd = -1;
  int file = -1;                 // its slot in the ring's registered-file table, or -1 (plain fd)
  uint32_t tx_head_bytes = 0;    // a frame header sent alone (its payload next), or 0
  bool outbound = false;         // this engine connected (it initiates transfers on it)
  bool inbound_counted = false;  // counted in Transport::Impl::inbound_conns
  bool accepted_handshake = false;  // an accepted socket before its hand-over (worker 0)
  wire::ChannelKind channel = wire::ChannelKind::kControl;
  uint8_t stripe = 0;
  uint64_t peer_instance = 0;  // inbound: the instance id its hello named
  uint64_t peer_caps = 0;      // outbound: the capabilities its hello ack named
  Peer* peer = nullptr;        // null until an accepted connection says hello
  ConnState state = ConnState::kConnecting;
  int inflight = 0;  // SQEs of this connection in the kernel
  int64_t since_ns = 0;
  int64_t active_ns = 0;  // when a receive brought or a send moved bytes last (idle_timeout)
  std::string name;       // for messages: "control to decode-0", "data 3 from prefill-1"

  std::unique_ptr<AuthState> auth;  // while an authenticated handshake runs

  // Send side: one send (or sendmsg) in flight at a time.
  TxQueue tx;
  bool tx_gated = false;  // only handshake frames may go (the challenge has not come)
  msghdr tx_msg{};

  // Receive side: one receive in flight at a time, where the framer says.
  RxFramer rx;
  bool rx_busy = false;
  bool rx_driving = false;   // drive_rx is running for it
  bool rx_wait_all = false;  // the receive in flight waits for every byte asked
  bool rx_held = false;      // not receiving: the peer does not read our answers
  int64_t held_ns = 0;       // when, while held, a send last moved bytes (or the hold began)
  msghdr rx_msg{};
  std::shared_ptr<OutOp> rx_out;      // read payload being received into initiator memory
  std::shared_ptr<InOp> rx_in;        // write payload being received into target memory
  std::shared_ptr<RxStage> rx_stage;  // the payload goes to GPU memory through slabs
  bool rx_wait_slab = false;          // its next part waits for a slab
  uint32_t parked_seq = 0;            // the request a parked (or discarding) data frame waits for
};

struct Peer {
  std::string key;
  bool has_addr = false;
  sockaddr_storage addr{};
  socklen_t addr_len = 0;

  // Connections this engine opened; it sends requests on them.
  Conn* out_ctrl = nullptr;
  std::vector<Conn*> out_data;
  unsigned next_stripe = 0;
  absl::flat_hash_map<uint32_t, std::shared_ptr<OutOp>> out_ops;  // by request sequence
  uint32_t next_seq = 1;
  std::deque<std::shared_ptr<OutOp>> backlog;  // over kOutboundOpsMaxPerPeer

  // Connections the peer opened; it sends requests on them.
  Conn* in_ctrl = nullptr;
  std::vector<Conn*> in_data;  // kStripesMax slots
  unsigned next_in_stripe = 0;
  absl::flat_hash_map<uint32_t, std::shared_ptr<InOp>> in_ops;  // by request sequence
  std::vector<Conn*> parked;  // data connections waiting for a request
};

}  // namespace ringxfer::transport::detail
