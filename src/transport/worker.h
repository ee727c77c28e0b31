// transport::Worker: one ring thread and everything it owns (connections, the peers
// placed on it, and on worker 0 the listening socket), and Transport::Impl, which holds
// the workers. Private to src/transport. The Worker owns the loop, the connections and
// every operation handed to the ring; the transfers themselves belong to its two roles,
// an Initiator (initiator.h) and a Target (target.h), which reach sockets only through
// the services below. Its methods are defined by role in worker.cc (slots, dispatch),
// connection.cc (peers, connections), handshake.cc (hello, listener), send_path.cc,
// recv_path.cc, striping.cc and lifecycle.cc (timeouts, fences, shutdown).
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/strings/str_format.h"
#include "auth/keyring.h"
#include "base/check.h"
#include "ring/event_loop.h"
#include "transport/initiator.h"
#include "transport/internal.h"
#include "transport/lane_key.h"
#include "transport/target.h"
#include "transport/transport.h"
#include "wire/codec.h"

namespace ringxfer::transport {

using detail::Conn;
using detail::ConnState;
using detail::InOp;
using detail::OutOp;
using detail::Peer;
using detail::SendItem;

namespace detail {

// Tag kinds and operations of this layer.
constexpr uint8_t kKindConn = 1;
constexpr uint8_t kKindListen = 2;
constexpr uint8_t kKindZc = 3;
constexpr uint8_t kOpConnect = 1;
constexpr uint8_t kOpSend = 2;
constexpr uint8_t kOpRecv = 3;

constexpr size_t kTxIovMax = 1024;  // UIO_MAXIOV: iovecs gathered into one sendmsg
// A data connection's first receive of a frame asks for this much (a data frame's header
// and body: the shortest frame a data channel, or a hello, can be), and often gets it
// whole in one go.
constexpr size_t kDataPrefixBytes = 48;

inline int64_t now_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

inline std::string addr_string(const sockaddr_storage& a) {
  char host[INET6_ADDRSTRLEN] = "?";
  uint16_t port = 0;
  if (a.ss_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(&a);
    inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
    port = ntohs(in->sin_port);
    return absl::StrFormat("%s:%d", host, port);
  }
  const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&a);
  inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
  port = ntohs(in6->sin6_port);
  return absl::StrFormat("[%s]:%d", host, port);
}

inline absl::Status status_from_wire(uint16_t code, std::string_view message) {
  return absl::Status(static_cast<absl::StatusCode>(code),
                      absl::string_view(message.data(), message.size()));
}

// `fn(span)` encodes the frame into `size` bytes (a template: no std::function per frame).
template <typename EncodeFn>
std::vector<std::byte> encode_frame(size_t size, EncodeFn&& fn) {
  std::vector<std::byte> out(size);
  wire::Result<size_t> n = fn(out);
  RX_CHECK_MSG(n.ok() && *n == size, "encoding a frame this transport built must succeed");
  return out;
}

// A send item that carries one encoded frame (no payload).
inline SendItem frame_item(std::vector<std::byte> frame) {
  SendItem item;
  item.frame = std::move(frame);
  item.iov.push_back(iovec{item.frame.data(), item.frame.size()});
  return item;
}

}  // namespace detail

using namespace detail;  // NOLINT: the transport's own internals

// One ring thread and everything it owns: connections, peers placed on it, and (on
// worker 0) the listening socket.
class Worker final : public ring::CompletionHandler {
 public:
  Worker(Transport::Impl* t, int index) : t_(t), index_(index) {}

  absl::Status start(const ring::RingOptions& options, int cpu);
  ring::EventLoop& loop() { return *loop_; }

  void on_completion(ring::Tag tag, int32_t res, uint32_t flags) noexcept override;

  // Loop-thread entry points, reached through loop().post().
  void start_listening(int fd);
  void add_peer(const std::string& key, const sockaddr_storage& addr, socklen_t len);
  void remove_peer(const std::string& key);
  void start_op(const std::string& key, std::shared_ptr<OutOp> op);
  void adopt_inbound(int fd, std::string key, wire::ChannelKind channel, uint8_t stripe,
                     uint64_t capabilities, uint64_t instance);
  void shutdown();
  void stop_loop() { loop_->stop(); }
  // After shutdown(): no connection left, no zero-copy notification and no operation of
  // this ring in the kernel.
  bool drained() const {
    return live_conns.load(std::memory_order_relaxed) == 0 && zc_free_.size() == zc_.size() &&
           loop_->inflight() <= 0 && (copier_ == nullptr || copier_->inflight() == 0);
  }
  // Registered memory as io_uring fixed buffers (zero-copy sends from it).
  void add_fixed_buffer(std::byte* base, uint64_t len);
  void remove_fixed_buffer(std::byte* base);
  // Fails the transfers holding region `id` (Transport::fence).
  void fence(const memory::RegionUse* use, uint64_t id);
  // After the loop has stopped: fail what is left without touching the kernel.
  void abandon();

  std::atomic<int> live_conns{0};

  // Services for the roles (Initiator, Target): what they may do beyond their own
  // transfers.
  const Config& config() const;
  Counters& counters();
  const memory::Registry& registry() const;
  const InboundFn& inbound() const;
  uint64_t inline_limit() const;
  bool stopping() const { return stopping_; }
  Peer* peer(const std::string& key, bool create);
  // Opens the connections to `p` that are missing (its control connection first).
  void open_outbound(Peer* p);
  void close_conn(Conn* c, const absl::Status& why, bool hostile = false);
  // Closes this engine's connections to `p` and fails its transfers there.
  void fail_outbound(Peer* p, const absl::Status& why);
  // Whether a connection to `p` has unacknowledged bytes and no ACK for `quiet_ms`.
  bool path_stalled(const Peer* p, uint32_t quiet_ms) const;
  void enqueue(Conn* c, SendItem item);
  void pump_tx(Conn* c);
  void queue_completion(Conn* c, const InOp& in, const absl::Status& st);
  // Queues the data frames of one transfer: inline below the inline limit, else
  // chunks over the data connections (striping.cc).
  // `devs`: each segment's GPU, or -1 for host memory (empty: all host).
  void send_data(Peer* p, bool outbound, const std::shared_ptr<OutOp>& out,
                 const std::shared_ptr<InOp>& in, const std::vector<iovec>& segs,
                 std::span<const int16_t> devs, uint64_t id, uint32_t seq);
  // Drops the frames `owned` by a failed transfer that have not started from the
  // queues of `conns` (those in the kernel finish first); returns their payload bytes.
  uint64_t drop_unstarted(const std::vector<Conn*>& conns,
                          absl::FunctionRef<bool(const SendItem&)> owned);
  // Tells the target on `c` that the initiator stopped `op` (wire "Cancel"), if the
  // target understands it; `sent` is the payload of the write that was or will be sent.
  void queue_cancel(Conn* c, const OutOp& op, uint64_t sent, const absl::Status& why);
  // Where the payload of the frame being handled goes (or that it is dropped). `devs`:
  // each destination's GPU, or -1 for host memory (empty: all host); a payload bound
  // for GPU memory is received through slabs (staging.cc).
  void start_payload(Conn* c, std::vector<iovec> dest, uint64_t bytes,
                     std::vector<int16_t> devs = {});
  void start_discard(Conn* c, uint64_t bytes);
  // Runs the connection's framer until it needs bytes (then arms the receive), parks,
  // or the connection closes. Not re-entered for one connection.
  void drive_rx(Conn* c);
  // An inbound connection whose queued answers (frames, not payload) reach this many
  // bytes is not read until they drain to half: a peer that sends requests and never
  // reads the answers holds at most this much here, and is closed after `timeout`.
  static constexpr size_t kAnswersHeldBytes = 256 << 10;
  static bool answers_unread(const Conn* c) {
    return !c->outbound && c->tx.frame_bytes() >= kAnswersHeldBytes;
  }

 private:
  // Slots.
  Conn* new_conn(int fd, bool outbound);
  // Slots freed during a handler chain are reused only from the next top-level entry,
  // so no Conn is destroyed while a caller up the stack still points at it. Then the
  // Conn goes, with its buffers (a closed connection holds no memory); its slot keeps
  // the generation, so a late CQE of it never reaches the slot's next connection.
  void reclaim() {
    for (uint32_t slot : released_) {
      conns_[slot].reset();
    }
    free_slots_.insert(free_slots_.end(), released_.begin(), released_.end());
    released_.clear();
  }
  Conn* conn_at(ring::Tag tag);
  uint64_t tag(const Conn* c, uint8_t op) const {
    return ring::Tag{kKindConn, op, c->gen, c->slot}.pack();
  }
  static ring::Socket sock(const Conn* c) { return ring::Socket{c->fd, c->file}; }
  void free_conn(Conn* c);

  // Peers and connections.
  Conn* connect_one(Peer* p, wire::ChannelKind channel, uint8_t stripe);
  void apply_socket_options(int fd);
  void maybe_release(Conn* c);
  void fail_inbound(Peer* p, const absl::Status& why);

  // Send path.
  // `pinned`: a zero-copy send from memory that is not a registered buffer.
  void on_send(Conn* c, int32_t res, bool pinned);
  void item_done(SendItem& item, bool ok);
  // A kernel operation or copy that held `out` and/or `in` (either may be null) ended:
  // one pending operation less, and each finishes if that was the last.
  void let_go(const std::shared_ptr<OutOp>& out, const std::shared_ptr<InOp>& in);
  void on_zc(uint32_t slot, uint16_t gen, int32_t res, uint32_t flags);
  // The registered-buffer slot that holds all of `v`, or -1.
  int fixed_buffer_for(const iovec& v) const;

  // Receive path.
  void arm_recv(Conn* c);
  void on_recv(Conn* c, int32_t res);
  void on_frame(Conn* c);
  void on_payload_done(Conn* c);
  void handle_hello(Conn* c, const wire::Hello& h);
  void handle_hello_ack(Conn* c, const wire::HelloAck& a);
  void handle_auth_challenge(Conn* c, const wire::AuthChallenge& ch);
  void handle_auth_proof(Conn* c, const wire::AuthProof& pr);
  // Target: answers a hello with an error ack and closes the connection.
  void refuse_hello(Conn* c, absl::StatusCode code, const std::string& message);
  // Counts and logs (rate-limited) a connection that failed authentication.
  void auth_failed(Conn* c, const std::string& why);
  // Target: hands an accepted socket whose hello was accepted to its peer's ring.
  void hand_over(Conn* c, std::string key, wire::ChannelKind channel, uint8_t stripe,
                 uint64_t capabilities, uint64_t instance);
  // Target: hands over a proven connection once nothing of it is in flight here.
  void maybe_hand_over(Conn* c);
  void handle_data(Conn* c, const wire::DataHeader& d);
  void handle_batch(Conn* c, const wire::DataBatch& b);

  // GPU staging (staging.cc).
  memory::GpuCopier* copier();  // made at first use; null without a runtime
  uint64_t owner_id() const { return reinterpret_cast<uintptr_t>(this); }
  Conn* live_conn(uint32_t slot, uint16_t gen);
  // Makes `item` (queued next on `c`) wait for its payload, `sources` in order, to be
  // copied into a slab; false when every source is host memory (sent as it is).
  bool stage_send(Conn* c, SendItem& item, std::vector<StagedSend::Source> sources,
                  const std::shared_ptr<OutOp>& out, const std::shared_ptr<InOp>& in);
  void request_send_slab(const std::shared_ptr<StagedSend>& st);
  void fill_slab(const std::shared_ptr<StagedSend>& st, memory::Slab* slab);
  void on_send_copied(const std::shared_ptr<StagedSend>& st, absl::Status s);
  void request_rx_slab(Conn* c);
  void give_part(Conn* c, memory::Slab* slab);
  // The part in c's slab is whole: copies it to its destinations.
  void part_landed(Conn* c);
  // The connection lets go of its staged payload: whole (`lost` false) or not.
  void detach_rx_stage(Conn* c, bool lost);
  void maybe_finish_rx_stage(const std::shared_ptr<RxStage>& st);

  // Listener.
  void arm_accept();
  void on_accept(int32_t res);

  void tick();
  // Forgets peers that no registered remote engine names and that have no connection,
  // no transfer and nothing in the kernel: an engine that said hello and left costs
  // nothing once its connections are gone (issue 11).
  void evict_idle_peers();
  // Closes the inbound connections of peers all of whose inbound connections have been
  // quiet for `idle_limit` ns (EngineConfig::idle_timeout, while crowded).
  void close_idle_inbound(int64_t now, int64_t idle_limit);

  Transport::Impl* t_;
  int index_;
  Initiator initiator_{*this};
  Target target_{*this};
  std::unique_ptr<ring::EventLoop> loop_;
  std::vector<std::unique_ptr<Conn>> conns_;
  std::vector<uint16_t> slot_gen_;  // the generation of each slot's latest connection
  std::vector<uint32_t> free_slots_;
  std::vector<uint32_t> released_;
  absl::flat_hash_map<std::string, std::unique_ptr<Peer>> peers_;
  int listen_fd_ = -1;
  std::vector<SendItem> retired_scratch_;  // on_send's retired items, storage reused
  // The listener pauses after accept fails for want of descriptors or memory.
  static constexpr int64_t kAcceptPauseNs = 100'000'000;
  int64_t accept_resume_ns_ = 0;  // when the tick re-arms it; 0: not paused
  bool accept_paused_ = false;    // since the last accepted connection (one log line)
  int handshaking_ = 0;           // accepted sockets before their hand-over (listener)
  bool stopping_ = false;

  // Zero-copy sends: their CQEs carry a slot here, since a notification can come
  // after the connection moved on to later sends.
  struct ZcSlot {
    uint32_t conn_slot = 0;
    uint16_t conn_gen = 0;
    uint16_t gen = 0;   // bumped per use; in the tag, so a stale CQE is dropped
    bool busy = false;  // a send holds it (until its last CQE)
    bool result_seen = false;
    bool fixed = false;              // from a registered buffer (pins no pages)
    std::shared_ptr<Staged> staged;  // a staged payload's slab, busy until the notification
    std::shared_ptr<OutOp> out;
    std::shared_ptr<InOp> in;
    // The kernel reads the frame header from here, not from the send item, which
    // may be gone before the notification comes.
    std::vector<std::byte> frame;
  };
  std::vector<ZcSlot> zc_;
  std::vector<uint32_t> zc_free_;

  // Registered memory in this ring's buffer table, by base address.
  struct FixedBuffer {
    int slot = -1;
    uint64_t len = 0;
  };
  std::map<uintptr_t, FixedBuffer> fixed_;
  std::unique_ptr<memory::GpuCopier> copier_;
  bool zc_pins_refused_ = false;  // a plain zero-copy send got ENOMEM (memlock)
};

class Transport::Impl {
 public:
  Config config;
  const memory::Registry* registry = nullptr;
  InboundFn inbound;
  Counters counters;
  // GPU staging: the runtime and slab pools, made at the first GPU registration. Declared
  // before the workers: their items hold slabs until they go.
  std::unique_ptr<memory::Staging> staging;
  std::vector<std::unique_ptr<Worker>> workers;
  uint16_t port = 0;
  int listen_fd = -1;
  uint64_t instance_id = 0;
  std::atomic<bool> fixed_fallback_logged{false};
  std::optional<auth::Keyring> keyring;  // set: every connection authenticates
  std::atomic<int> inbound_conns{0};     // accepted sockets open, all rings

  Worker& worker_for(const std::string& key) {
    // Lane group g of engine `base` goes g ring threads after the base's.
    const LaneKey lk = split_lane_key(key);
    return *workers[(std::hash<std::string_view>{}(lk.base) + static_cast<size_t>(lk.group)) %
                    workers.size()];
  }
  uint64_t inline_limit() const {
    return std::min<uint64_t>(config.engine.stripe_threshold_bytes, wire::kBatchPayloadBytesMax);
  }
  // Runs fn(worker) on each ring thread and waits for it (see add_fixed_buffer).
  void on_every_worker(const std::function<void(Worker&)>& fn);
};

inline const Config& Worker::config() const { return t_->config; }
inline Counters& Worker::counters() { return t_->counters; }
inline const memory::Registry& Worker::registry() const { return *t_->registry; }
inline const InboundFn& Worker::inbound() const { return t_->inbound; }
inline uint64_t Worker::inline_limit() const { return t_->inline_limit(); }

}  // namespace ringxfer::transport
