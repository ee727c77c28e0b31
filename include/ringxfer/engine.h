// ringxfer::Engine: one endpoint of one-sided transfers between registered memory
// regions over TCP. An engine listens on its own port, connects to the engines it is
// told about, and moves bytes with a fixed set of io_uring ring threads.
//
// Thread-safety: every method may be called from any thread, concurrently.
// fork(): an engine inherited by a child process answers every call there with
// kFailedPrecondition (its ring threads stayed in the parent), its transfers in flight
// fail, and its destructor returns at once; the parent's engine is unaffected.
// Errors: calls return absl::Status / StatusOr. An argument error is reported at the
// call, naming the argument, and sends nothing; once a transfer has started, its
// outcome is on its TransferStatus.
// Public API: std and absl only.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "ringxfer/config.h"
#include "ringxfer/descriptors.h"
#include "ringxfer/status.h"

namespace ringxfer {

namespace detail {
class EngineImpl;
}

// Counters of one engine, read with Engine::stats(). Monotonic since creation, except
// the gauges (now): fixed_buffers, peers, inbound_statuses, split_transfers.
struct EngineStats {
  uint64_t bytes_sent = 0;           // payload bytes put on the wire
  uint64_t bytes_received = 0;       // payload bytes placed into memory
  uint64_t transfers_initiated = 0;  // writes and reads started by this engine
  uint64_t transfers_served = 0;     // writes and reads served for other engines
  uint64_t transfers_failed = 0;     // initiated transfers that failed
  uint64_t sqes = 0;                 // SQEs submitted, all rings
  uint64_t enters = 0;               // io_uring_enter calls, all rings
  uint64_t cqes = 0;                 // CQEs reaped, all rings
  uint64_t wakeups = 0;              // cross-thread eventfd wake-ups
  uint64_t zerocopy_sends = 0;       // SEND_ZC / SENDMSG_ZC operations
  uint64_t zerocopy_copied = 0;      // of those, reported copied by the kernel
  uint64_t short_sends = 0;          // sends that moved less than asked (resubmitted)
  uint64_t short_recvs = 0;          // receives that got less than asked (resubmitted)
  uint64_t timeouts = 0;             // transfers failed by the operation timeout
  uint64_t connections_opened = 0;
  uint64_t connections_closed = 0;
  uint64_t hostile_frames = 0;       // malformed or out-of-bounds frames (connection closed)
  uint64_t auth_failures = 0;        // connections refused for failing authentication
  uint64_t connections_refused = 0;  // accepted and closed at once: over a limit
  uint64_t access_denied = 0;        // served transfers refused by a region's access rights
  // Peers: engines this one knows now (registered remote engines, and engines with a
  // connection or a transfer here), and those forgotten once they had none of these.
  uint64_t peers = 0;
  uint64_t peers_evicted = 0;
  uint64_t idle_closed = 0;  // inbound connections closed by idle_timeout
  // GPU staging: copy batches between slabs and device memory, waits for a free slab,
  // and copies that failed (each failed its transfer).
  uint64_t staged_copies = 0;
  uint64_t staging_waits = 0;
  uint64_t staging_failures = 0;
  // Inbound statuses kept unread now (gauge), and those dropped for room
  // (max_inbound_statuses); split transfers open now (gauge), and those recorded as
  // failed because their parts stopped coming or for room (max_split_transfers).
  uint64_t inbound_statuses = 0;
  uint64_t inbound_statuses_dropped = 0;
  uint64_t split_transfers = 0;
  uint64_t split_transfers_expired = 0;
  // With zero-copy on, registered memory also becomes io_uring fixed buffers:
  uint64_t zerocopy_fixed_sends = 0;    // zero-copy sends from a fixed buffer
  uint64_t fixed_buffers = 0;           // fixed buffers now registered, all rings
  uint64_t fixed_buffer_fallbacks = 0;  // registrations refused (memlock, size, room)
  uint64_t zerocopy_refused = 0;        // zero-copy sends refused for memlock, then copied
  int ring_threads = 0;
};

// What other engines may do with a registered region (MORI-IO's defaults: everything,
// everyone). The checks are made by this engine when a request arrives: a refused
// transfer fails with kPermissionDenied on both sides and counts in access_denied here.
struct MemoryAccess {
  bool remote_read = true;   // peers may read the region
  bool remote_write = true;  // peers may write it
  // The keys of the engines admitted; empty admits every engine. An engine's key is
  // what its hello says (EngineDesc::key): authenticate peers (auth_key_file) for the
  // list to mean more than a name.
  std::vector<std::string> allowed_engines;
};

class Session;

class Engine {
 public:
  // Starts the ring threads and the listener. With rings > 1 every peer is served as
  // `rings` lane groups, each with its own connections on its own ring thread; transfers
  // of at least rings x stripe_threshold_bytes are split across them. kInvalidArgument names a bad
  // config field; kUnavailable says when io_uring cannot be used here and what to change.
  static absl::StatusOr<std::unique_ptr<Engine>> create(std::string key, EngineConfig config = {});
  // Fails every pending transfer (kUnavailable), closes connections, joins threads.
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  const EngineDesc& desc() const;
  const EngineConfig& config() const;

  // Remote engines: registering resolves the host name once; connections open on the
  // first transfer. Deregistering fails that engine's pending transfers.
  absl::Status register_remote_engine(const EngineDesc& remote);
  absl::Status deregister_remote_engine(const EngineDesc& remote);

  // Local memory. The caller keeps [ptr, ptr+size) valid until deregister_memory()
  // has returned. The region gets a new random key (MemoryDesc::rkey), so the descriptor
  // returned is what grants peers access: send it only to the engines meant to use it.
  // `access` limits what peers may do; kInvalidArgument for a bad allowed_engines entry
  // (empty, too long, or with the byte 0x1f), naming it.
  absl::StatusOr<MemoryDesc> register_memory(void* ptr, uint64_t size,
                                             MemoryLocation location = MemoryLocation::kCpu,
                                             int device_id = -1, const MemoryAccess& access = {});
  // Takes the region out of use: every transfer using it, initiated here or by a peer,
  // fails with kFailedPrecondition (sends and receives already in the kernel finish
  // first), and this returns once no byte can land in or leave the region any more, so
  // the caller may free it then. Called from a status callback (a ring thread) it does
  // not wait: the transfers are failed, but their last bytes may still move for a
  // moment. kNotFound for memory that is not registered.
  absl::Status deregister_memory(const MemoryDesc& desc);

  // A transfer id not used before by this engine (ids are per initiator and peer; the
  // caller may also pick its own).
  uint64_t allocate_transfer_id();

  // GPU memory: transfers the calling thread starts from now on copy their GPU memory
  // only after the work queued on `stream` (a cudaStream_t or hipStream_t of the local
  // memory's device) before the transfer started: a kernel still writing the KV cache
  // is not raced. An event is recorded on the stream at each transfer's start. Per
  // thread, like the runtime's current stream; null (the default): no ordering (the
  // caller synchronizes). Thread-safe.
  static void set_gpu_stream(void* stream);
  static void* gpu_stream();

  // local -> remote: size bytes from local at local_offset to remote at remote_offset.
  // Success means the bytes are in the remote engine's memory.
  absl::StatusOr<StatusHandle> write(const MemoryDesc& local, uint64_t local_offset,
                                     const MemoryDesc& remote, uint64_t remote_offset,
                                     uint64_t size, uint64_t transfer_id);
  // remote -> local.
  absl::StatusOr<StatusHandle> read(const MemoryDesc& local, uint64_t local_offset,
                                    const MemoryDesc& remote, uint64_t remote_offset, uint64_t size,
                                    uint64_t transfer_id);
  // Many (local offset, remote offset, size) triples between one pair, as one transfer
  // with one status. The three spans have the same length, at least 1 (no upper cap
  // short of half a billion: a batch of more entries than one request carries goes as
  // several requests, still one transfer with one status on both sides).
  absl::StatusOr<StatusHandle> batch_write(const MemoryDesc& local,
                                           std::span<const uint64_t> local_offsets,
                                           const MemoryDesc& remote,
                                           std::span<const uint64_t> remote_offsets,
                                           std::span<const uint64_t> sizes, uint64_t transfer_id);
  absl::StatusOr<StatusHandle> batch_read(const MemoryDesc& local,
                                          std::span<const uint64_t> local_offsets,
                                          const MemoryDesc& remote,
                                          std::span<const uint64_t> remote_offsets,
                                          std::span<const uint64_t> sizes, uint64_t transfer_id);

  // Binds a local/remote pair once (validated now) for repeated transfers.
  absl::StatusOr<std::unique_ptr<Session>> create_session(const MemoryDesc& local,
                                                          const MemoryDesc& remote);

  // Target side: the outcome of the transfer `transfer_id` that engine `remote_key`
  // made to or from this engine's memory, returned once (then forgotten); nullptr when
  // it has not finished (or was already popped). Up to
  // EngineConfig::max_inbound_statuses (all peers together) are kept; the oldest are
  // dropped beyond that.
  StatusHandle pop_inbound_status(std::string_view remote_key, uint64_t transfer_id);
  static constexpr size_t kInboundStatusesMax = 1 << 16;  // max_inbound_statuses' default
  // Engine keys: 1..kEngineKeyBytesMax bytes, without the byte 0x1f (reserved for lane
  // groups on the wire).
  static constexpr size_t kEngineKeyBytesMax = 250;

  EngineStats stats() const;

 private:
  friend class Session;
  explicit Engine(std::unique_ptr<detail::EngineImpl> impl);
  std::unique_ptr<detail::EngineImpl> impl_;
};

// A local/remote memory pair bound once. Same semantics as the engine's calls.
class Session {
 public:
  ~Session();
  uint64_t allocate_transfer_id();
  absl::StatusOr<StatusHandle> write(uint64_t local_offset, uint64_t remote_offset, uint64_t size,
                                     uint64_t transfer_id);
  absl::StatusOr<StatusHandle> read(uint64_t local_offset, uint64_t remote_offset, uint64_t size,
                                    uint64_t transfer_id);
  absl::StatusOr<StatusHandle> batch_write(std::span<const uint64_t> local_offsets,
                                           std::span<const uint64_t> remote_offsets,
                                           std::span<const uint64_t> sizes, uint64_t transfer_id);
  absl::StatusOr<StatusHandle> batch_read(std::span<const uint64_t> local_offsets,
                                          std::span<const uint64_t> remote_offsets,
                                          std::span<const uint64_t> sizes, uint64_t transfer_id);
  // False once either memory is deregistered or the remote engine is deregistered.
  bool alive() const;
  const MemoryDesc& local() const { return local_; }
  const MemoryDesc& remote() const { return remote_; }

 private:
  friend class Engine;
  Session(Engine* engine, MemoryDesc local, MemoryDesc remote);
  Engine* engine_;
  MemoryDesc local_;
  MemoryDesc remote_;
};

}  // namespace ringxfer
