// EngineConfig: every knob of an engine, with its default and its valid range.
// validate() names the first bad field. Part of the public API: std and absl only.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace ringxfer {

struct SocketOptions {
  // SO_SNDBUF / SO_RCVBUF in bytes (the kernel doubles them); 0 keeps the kernel's
  // autotuning. The 1 MiB default keeps what is in flight per connection small enough
  // to stay in the last-level cache between the sender's copy and the receiver's; with
  // autotuning a loopback receive buffer grows to tcp_rmem's maximum (32 MiB here) and
  // every byte makes an extra trip to DRAM (README, "Socket buffers"). Raise it, or
  // use 0, on paths whose bandwidth x round trip exceeds it. Range 0 or 4 KiB..1 GiB.
  int send_buffer_bytes = 1 << 20;
  int recv_buffer_bytes = 1 << 20;
  // TCP keepalive (SO_KEEPALIVE, TCP_KEEPIDLE/INTVL/CNT): on by default so a silent
  // peer is found even with no transfer pending. Seconds 1..86400, count 1..100.
  bool keepalive = true;
  int keepalive_idle_s = 30;
  int keepalive_interval_s = 10;
  int keepalive_count = 3;
  // TCP_NODELAY on every connection (small frames must not wait for Nagle).
  bool nodelay = true;
};

struct EngineConfig {
  // Address to listen on: an IPv4 or IPv6 literal or a host name; "" listens on every
  // interface, IPv6 and IPv4 ("0.0.0.0": every IPv4 one, "::": every IPv6 one).
  std::string host = "127.0.0.1";
  // The address desc() tells peers (desc().host). Empty: `host`, or when that is every
  // interface, an address other hosts can reach: the source address of the default
  // route, else the first non-loopback address of an interface that is up (creation
  // fails with kUnavailable, naming this field, when there is none; with only loopback
  // up, 127.0.0.1 and a warning). Set it on hosts with several networks.
  std::string advertise_host;
  // 0 binds an ephemeral port; desc().port then carries the real one.
  uint16_t port = 0;
  // Ring threads, each with one io_uring; fixed for the engine's life, whatever the
  // number of peers. With more than one, every peer is served by `rings` lane groups
  // (one per ring thread, each with its own connections) and transfers of at least
  // rings x stripe_threshold_bytes are split across them. The default of 2 lets the
  // copies of two connections run on two cores. 1..64.
  int rings = 2;
  // Data connections per peer, besides the control connection; with several rings,
  // each lane group opens ceil(stripes / rings) of them. The default gives each ring
  // thread one: a thread copies for one connection at a time, and more connections per
  // thread only add bytes in flight (README, "Socket buffers"). Raise it where single
  // flows are capped by the network (per-flow ECMP hashing, congestion windows). 1..16.
  int stripes = 2;
  // Every transfer fails with kDeadlineExceeded when it has not finished within this;
  // it also bounds connecting and unacknowledged data (TCP_USER_TIMEOUT).
  // 1 ms..1 hour.
  std::chrono::milliseconds timeout{30000};
  // Transfers of at least this many bytes are cut into chunks spread over the data
  // connections; smaller ones travel with their request on the control connection.
  // 1 B..1 GiB.
  uint64_t stripe_threshold_bytes = 256 * 1024;
  // Smallest stripe of a striped transfer: a transfer is cut into about 2 stripes per
  // data connection, each at least this and at most 64 MiB (or this, if larger).
  // 4 KiB..1 GiB.
  uint64_t chunk_bytes = 1 << 20;
  // Sends of at least this many bytes use IORING_OP_SEND_ZC / SENDMSG_ZC when the
  // kernel has it; 0 disables zero-copy. Loopback and veth copy anyway.
  uint64_t zerocopy_threshold_bytes = 0;
  // TransferStatus::wait() first yields the CPU in a loop for up to this long before it
  // sleeps: a transfer that ends within it (a small one: 40-80 us on loopback here)
  // spares the waiter a futex sleep and wake-up, for some CPU while waiting. 0 sleeps at
  // once. 0..10 ms.
  std::chrono::microseconds wait_spin{100};
  // GPU staging (README, "GPU memory"): GPU memory is sent and received through pinned
  // host slabs, a pool of `staging_slabs` slabs of `staging_slab_bytes` per device and
  // direction, made when GPU memory of that device is first registered and registered
  // with every ring as fixed buffers. A chunk of a GPU transfer is at most one slab, so
  // the slab also bounds the inline size: staging_slab_bytes must be at least
  // min(stripe_threshold_bytes, 64 MiB). 64 KiB..1 GiB; 2..1024 slabs.
  uint64_t staging_slab_bytes = 4 << 20;
  int staging_slabs = 16;
  // Submission queue entries per ring. 16..32768, a power of two.
  unsigned ring_entries = 512;
  // A kernel thread polls each ring's submission queue (IORING_SETUP_SQPOLL).
  bool sqpoll = false;
  // Pin ring thread i to cpu ring_cpus[i % size]; empty: no pinning.
  std::vector<int> ring_cpus;
  SocketOptions socket;
  // Peer authentication (README, "Security"): the path of a key file of shared secrets
  // (one "<id> <hex secret>" per line, 32..64 bytes each, mode 0600). Every connection,
  // both ways, then proves knowledge of a key before any other frame is accepted, and a
  // peer without it is refused at the handshake. Empty: the environment variable
  // RINGXFER_AUTH_KEY_FILE if set, else peers are not authenticated (as MORI-IO; said
  // once at start). Both engines of a pair must agree.
  std::string auth_key_file;

  // Limits that keep an engine under control whatever its peers do (README,
  // "Security"). Over one, a connection is closed at once and counted
  // (EngineStats::connections_refused); nothing grows.
  // Connections other engines opened to this one, at most (descriptors: stay well
  // under RLIMIT_NOFILE). 1..1,000,000.
  int max_inbound_connections = 512;
  // Of those, connections that have not finished their handshake (hello, and proof with
  // authentication) yet. 1..max_inbound_connections.
  int max_handshaking_connections = 64;
  // An accepted connection that has not finished its handshake within this is closed.
  // 1 ms..1 hour.
  std::chrono::milliseconds handshake_timeout{5000};
  // While more than half of max_inbound_connections are open, the inbound connections of
  // a peer that has asked for nothing, and on none of whose connections a byte moved
  // either way for this long, are closed: idle connections cannot hold every slot (the
  // engine that opened them reconnects when it next sends). Below that, idle
  // connections stay. 1 ms..1 day.
  std::chrono::milliseconds idle_timeout{60'000};
  // Inbound statuses (Engine::pop_inbound_status) kept unread, all peers together;
  // beyond it the oldest is dropped. 1..2^24.
  int max_inbound_statuses = 1 << 16;
  // Transfers split over ring threads whose parts have not all finished yet, all peers
  // together; beyond it (or after `timeout` without the rest) the oldest is recorded
  // as failed. 1..2^20.
  int max_split_transfers = 4096;
  // Transfers to one peer waiting to start behind the 8,192 in flight (per ring
  // thread); beyond it a new transfer fails at once with kResourceExhausted instead of
  // queueing. 1..2^24.
  int max_queued_transfers = 1 << 16;

  // Engine::create applies the config file named by RINGXFER_CONFIG, if set, to the
  // fields left at their defaults (explicit > file > defaults). false: this config as
  // it is (a caller that applied the file itself, as the Python package does with its
  // own record of the fields set). Not a config file field.
  bool apply_config_env = true;

  // OK, or kInvalidArgument naming the first field out of range and its value.
  absl::Status validate() const;

  // Config files (README, "Config files"): JSON, {"ringxfer_config": 1, "engine":
  // {field: value, ..., "socket": {...}}}, plus what ringxfer-tune records beside it
  // ("size_classes", "measured", "fingerprint", "comment", "chosen_by"). Durations are
  // named with their unit (timeout_ms, wait_spin_us, handshake_timeout_ms,
  // idle_timeout_ms). Fields the file does not name keep their defaults.
  static constexpr int kConfigFileVersion = 1;
  // The config in the file at `path`: kNotFound / kPermissionDenied when it cannot be
  // read; kInvalidArgument naming the path and the field for anything else (not JSON,
  // another version, an unknown field, a wrong type, a value out of range).
  static absl::StatusOr<EngineConfig> load(const std::string& path);
  // The same from a file's text; `origin` names it in errors.
  static absl::StatusOr<EngineConfig> parse(std::string_view text,
                                            std::string_view origin = "text");
  // Every field as a config file's text; parse(to_json()) gives this config back.
  std::string to_json() const;
  // This config with every field it leaves at its default taken from `file`:
  // explicit fields > file > defaults (a field set to its default value counts as not
  // set). Engine::create applies RINGXFER_CONFIG so.
  EngineConfig over(const EngineConfig& file) const;
};

// Sets the level of ringxfer's log lines (stderr) for the whole process: "trace",
// "debug", "info", "warn", "error" or "critical", any case ("trace" logs as "debug",
// "critical" as "error"). kInvalidArgument for another word. The environment variable
// RINGXFER_LOG gives the level until this is called.
absl::Status set_log_level(std::string_view level);

}  // namespace ringxfer
