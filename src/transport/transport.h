// transport::Transport: peers, their control and data connections, the handshake, and
// the per-connection send and receive state machines that move frames between
// registered memory and sockets, all driven by io_uring completions on a fixed set of
// ring threads. Uses wire (frames), ring (event loops) and memory (the registry).
// Knows nothing of the public API: the engine adapts it.
#pragma once

#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "memory/gpu_runtime.h"
#include "memory/registry.h"
#include "ringxfer/config.h"
#include "transport/lane_key.h"
#include "wire/frames.h"

namespace ringxfer::transport {

// What the transport runs with: the engine's configuration as its user gave it (one
// struct down the stack, validated by the engine, never mirrored field by field) and
// what follows from it.
struct Config {
  std::string key;      // this engine's key
  EngineConfig engine;  // ringxfer/config.h

  // Each of the `rings` lane groups opens its share of the peer's data connections.
  int stripes_per_group() const {
    return std::max(1, (engine.stripes + engine.rings - 1) / engine.rings);
  }
  int64_t timeout_ns() const {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(engine.timeout).count();
  }
};

// Limits of what one peer may have in flight toward this engine, and what this engine
// has in flight toward one peer (more wait locally).
inline constexpr size_t kInboundOpsMaxPerPeer = 8192;
inline constexpr size_t kOutboundOpsMaxPerPeer = 8192;

// One contiguous piece of a transfer: `length` bytes at `local` and at
// (remote_id, remote_offset) in the peer's memory, whose key is `remote_key`.
struct Piece {
  std::byte* local = nullptr;
  uint64_t remote_id = 0;
  uint64_t remote_key = 0;
  uint64_t remote_offset = 0;
  uint64_t length = 0;
  int16_t device = -1;  // `local` is memory of this GPU (staged), or -1: host memory
};

// Runs exactly once per started transfer, on a ring thread, when no send or receive
// references the transfer's local memory any more.
using DoneFn = absl::AnyInvocable<void(absl::Status) &&>;
// Target side: a transfer `id` from engine `peer_key` finished (for writes: the bytes
// are in memory; for reads: they were sent). `parts` is what the request said (0 or 1:
// the whole transfer; n: one of n parts with this id). Runs on a ring thread.
using InboundFn =
    std::function<void(const std::string& peer_key, uint64_t id, absl::Status, uint16_t parts)>;

struct Counters {
  std::atomic<uint64_t> bytes_sent{0}, bytes_received{0}, transfers_initiated{0},
      transfers_served{0}, transfers_failed{0}, zerocopy_sends{0}, zerocopy_copied{0},
      short_sends{0}, short_recvs{0}, timeouts{0}, connections_opened{0}, connections_closed{0},
      hostile_frames{0}, zerocopy_fixed_sends{0}, fixed_buffers{0}, fixed_buffer_fallbacks{0},
      zerocopy_refused{0}, auth_failures{0}, connections_refused{0}, access_denied{0}, peers{0},
      peers_evicted{0}, idle_closed{0}, staged_copies{0}, staging_waits{0}, staging_failures{0};
};

struct LoopStats {
  uint64_t sqes = 0, enters = 0, cqes = 0, wakeups = 0;
};

class Transport {
 public:
  // Binds and listens on config.host:config.port, starts config.rings ring threads.
  static absl::StatusOr<std::unique_ptr<Transport>> create(Config config,
                                                           const memory::Registry* registry,
                                                           InboundFn inbound);
  // Fails pending transfers with kUnavailable and stops the ring threads.
  ~Transport();

  uint16_t port() const;
  const Config& config() const;

  // Thread-safe. Registers [base, base+len) as an io_uring fixed buffer on every ring
  // thread and returns once every ring has it: zero-copy sends of payloads inside it then
  // pin no pages per send. Where the kernel refuses (RLIMIT_MEMLOCK, over 1 GiB, a full
  // table) sends from it stay plain zero-copy sends, counted and logged once.
  // remove_fixed_buffer returns once no ring has it. Called on a ring thread (from a
  // status callback), the other rings are told without waiting.
  void add_fixed_buffer(std::byte* base, uint64_t len);
  void remove_fixed_buffer(std::byte* base);

  // Thread-safe. Adds (or updates the address of) a remote engine.
  void add_peer(const std::string& key, const sockaddr_storage& addr, socklen_t addr_len);
  // Thread-safe. Closes its connections and fails its pending transfers.
  void remove_peer(const std::string& key);

  // Thread-safe. Starts a transfer of `pieces` (1..wire::kSegmentsMax, each length > 0)
  // to or from `peer_key`; `done` runs once when it is final.
  // `parts` goes into the request (see wire::Request::parts).
  // `pins` hold the local regions of `pieces` until the transfer is final.
  // `gpu_after`: an event (owned by the pointer) whose work the transfer's copies of
  // GPU memory wait for (null: none).
  void start(const std::string& peer_key, wire::OpKind op, uint64_t id, std::vector<Piece> pieces,
             DoneFn done, uint16_t parts = 0, std::vector<memory::Pin> pins = {},
             std::shared_ptr<void> gpu_after = nullptr);

  // Thread-safe. After region `id` (held through `use`) left the registry: fails every
  // transfer holding it, on both sides, and sends none of their frames not yet started;
  // sends and receives already in the kernel finish. Returns once every ring thread did
  // this (from a ring thread: once this one did, the others are told). The caller then
  // waits for use->users() to reach 0.
  void fence(const memory::RegionUse* use, uint64_t id);
  // Whether the calling thread is one of this transport's ring threads.
  bool on_ring_thread() const;

  // Thread-safe. Makes ready to move memory of GPU `device`: finds the runtime (at the
  // first call) and makes the device's staging slabs, registered with every ring as
  // fixed buffers. kNotFound when no runtime is found (the message names what was
  // tried), kInvalidArgument for a device the runtime does not have.
  absl::Status prepare_gpu(int device);
  // The runtime prepare_gpu found, or null.
  std::shared_ptr<memory::GpuRuntime> gpu_runtime() const;

  const Counters& counters() const;
  LoopStats loop_stats() const;

  class Impl;

 private:
  explicit Transport(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Resolves "host" and "port" to a socket address (numeric first, then DNS). Blocking:
// call at registration, never on a ring thread.
absl::StatusOr<std::pair<sockaddr_storage, socklen_t>> resolve_address(const std::string& host,
                                                                       uint16_t port);

}  // namespace ringxfer::transport
