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
#include "transport/coverage.h"
#include "transport/rx_framer.h"
#include "transport/transport.h"
#include "transport/tx_queue.h"
#include "wire/codec.h"

namespace ringxfer::transport::detail {

struct Peer;

// A transfer this engine initiated.
struct OutOp {
  Peer* peer = nullptr;  // peers live as long as their worker
  uint64_t id = 0;
  uint32_t seq = 0;  // the request sequence (wire/frames.h); its key in Peer::out_ops
  uint16_t parts = 0;
  wire::OpKind kind = wire::OpKind::kWrite;
  std::vector<Piece> pieces;
  uint64_t total = 0;
  int64_t deadline_ns = 0;
  DoneFn done;
  // Kernel operations that still reference `pieces` memory: send items not fully
  // sent, zero-copy notifications not yet posted, payload receives in flight.
  int pending = 0;
  uint64_t received = 0;          // read: payload bytes placed
  Coverage coverage;              // read: bytes claimed by data frames (each at most once)
  std::vector<uint64_t> starts;   // read: where each piece starts in the transfer
  std::vector<memory::Pin> pins;  // the local region, held until no byte moves
  bool remote_done = false;
  bool failed = false;
  bool finished = false;
  absl::Status result;
};

// A transfer another engine made to or from this engine's memory.
struct InOp {
  Peer* peer = nullptr;
  uint64_t id = 0;
  uint32_t seq = 0;  // the request sequence; its key in Peer::in_ops
  uint16_t parts = 0;
  wire::OpKind kind = wire::OpKind::kWrite;
  std::vector<iovec> segments;  // resolved local ranges, in request order
  uint64_t total = 0;
  uint64_t received = 0;          // write: payload bytes placed or discarded
  std::vector<uint64_t> lengths;  // the request's segment lengths (also when unresolved)
  std::vector<uint64_t> starts;   // where each segment starts in the transfer
  Coverage coverage;              // write: bytes claimed by data frames
  int64_t deadline_ns = 0;
  int pending = 0;  // read: send items and notifications outstanding
  absl::Status status;
  std::vector<memory::Pin> pins;  // the regions it resolved, held until no byte moves
  int receiving = 0;              // write: payload receives into its memory in progress
  bool reported = false;          // the inbound status was recorded
  bool completion_sent = false;   // the completion frame was queued
};

enum class ConnState : uint8_t { kConnecting, kHandshake, kReady, kClosing };

struct Conn {
  uint32_t slot = 0;
  uint16_t gen = 0;
  int fd = -1;
  int file = -1;               // its slot in the ring's registered-file table, or -1 (plain fd)
  uint32_t tx_head_bytes = 0;  // a frame header sent alone (its payload next), or 0
  bool outbound = false;       // this engine connected (it initiates transfers on it)
  wire::ChannelKind channel = wire::ChannelKind::kControl;
  uint8_t stripe = 0;
  Peer* peer = nullptr;  // null until an accepted connection says hello
  ConnState state = ConnState::kConnecting;
  int inflight = 0;  // SQEs of this connection in the kernel
  int64_t since_ns = 0;
  std::string name;  // for messages: "control to decode-0", "data 3 from prefill-1"

  // Send side: one send (or sendmsg) in flight at a time.
  TxQueue tx;
  msghdr tx_msg{};

  // Receive side: one receive in flight at a time, where the framer says.
  RxFramer rx;
  bool rx_busy = false;
  bool rx_driving = false;   // drive_rx is running for it
  bool rx_wait_all = false;  // the receive in flight waits for every byte asked
  msghdr rx_msg{};
  std::shared_ptr<OutOp> rx_out;  // read payload being received into initiator memory
  std::shared_ptr<InOp> rx_in;    // write payload being received into target memory
  uint32_t parked_seq = 0;        // the request a parked (or discarding) data frame waits for
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
