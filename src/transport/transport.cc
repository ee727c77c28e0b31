#include "transport/transport.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <future>
#include <map>
#include <random>
#include <thread>

#include "absl/strings/str_format.h"
#include "base/check.h"
#include "base/errno_status.h"
#include "base/log.h"
#include "ring/event_loop.h"
#include "transport/internal.h"
#include "wire/codec.h"

// ThreadSanitizer cannot see the ordering a network protocol gives: bytes copied out of
// a receive buffer here are read by another thread only after a completion frame went
// over a socket. The kernel's own writes into receive buffers are invisible to TSan;
// copies that stand in for them are made invisible too.
#if defined(__SANITIZE_THREAD__)
#define RX_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define RX_TSAN 1
#endif
#endif
#ifdef RX_TSAN
// Dynamic annotations, exported by the TSan runtime to shared libraries.
extern "C" void AnnotateIgnoreWritesBegin(const char* file, int line);
extern "C" void AnnotateIgnoreWritesEnd(const char* file, int line);
#endif

namespace ringxfer::transport {

using detail::Conn;
using detail::ConnState;
using detail::InOp;
using detail::OutOp;
using detail::Peer;
using detail::RxState;
using detail::SendItem;

namespace {

// Tag kinds and operations of this layer.
constexpr uint8_t kKindConn = 1;
constexpr uint8_t kKindListen = 2;
constexpr uint8_t kKindZc = 3;
constexpr uint8_t kOpConnect = 1;
constexpr uint8_t kOpSend = 2;
constexpr uint8_t kOpRecv = 3;
constexpr uint8_t kOpSendHead = 4;  // a frame header linked before its fixed-buffer payload

constexpr size_t kTxIovMax = 1024;  // UIO_MAXIOV: iovecs gathered into one sendmsg
constexpr size_t kRxIovMax = 1024;  // IOV_MAX: destinations of one recvmsg
constexpr size_t kScratchBytes = 64 * 1024;
constexpr uint64_t kChunksPerLane = 2;
constexpr uint64_t kChunkBytesMax = 64 << 20;
// Every frame is at least this long, so the first receive of a frame asks for this
// much and often gets the whole header and body in one go.
constexpr size_t kCtrlPrefixBytes = 40;  // the smallest completion
constexpr size_t kDataPrefixBytes = 48;  // a data frame's header and body
// A control connection's receive buffer: the largest frame (header and body) plus room
// to read ahead.
constexpr size_t kCtrlBufferBytes = wire::kHeaderBytes + wire::kBodyBytesMax + 64 * 1024;

int64_t now_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::string addr_string(const sockaddr_storage& a) {
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

// Splits "base<sep>g" into its engine key and its group suffix (with the separator);
// a key without a group suffix is all base.
std::pair<std::string_view, std::string_view> split_group(std::string_view key) {
  const size_t sep = key.rfind(kGroupSeparator);
  if (sep == std::string_view::npos || sep + 1 == key.size() || key.size() - sep > 3) {
    return {key, {}};
  }
  for (size_t i = sep + 1; i < key.size(); ++i) {
    if (key[i] < '0' || key[i] > '9') {
      return {key, {}};
    }
  }
  return {key.substr(0, sep), key.substr(sep)};
}

absl::Status status_from_wire(uint16_t code, std::string_view message) {
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

}  // namespace

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
                     uint64_t capabilities);
  void shutdown();
  void stop_loop() { loop_->stop(); }
  // Registered memory as io_uring fixed buffers (zero-copy sends from it).
  void add_fixed_buffer(std::byte* base, uint64_t len);
  void remove_fixed_buffer(std::byte* base);
  // After the loop has stopped: fail what is left without touching the kernel.
  void abandon();

  std::atomic<int> live_conns{0};

 private:
  // Slots.
  Conn* new_conn(int fd, bool outbound);
  // Slots freed during a handler chain are reused only from the next top-level entry,
  // so no Conn is destroyed while a caller up the stack still points at it.
  void reclaim() {
    free_slots_.insert(free_slots_.end(), released_.begin(), released_.end());
    released_.clear();
  }
  Conn* conn_at(ring::Tag tag);
  uint64_t tag(const Conn* c, uint8_t op) const {
    return ring::Tag{kKindConn, op, c->gen, c->slot}.pack();
  }
  void free_conn(Conn* c);

  // Peers and connections.
  Peer* peer(const std::string& key, bool create);
  void open_outbound(Peer* p);
  Conn* connect_one(Peer* p, wire::ChannelKind channel, uint8_t stripe);
  void apply_socket_options(int fd);
  void close_conn(Conn* c, const absl::Status& why, bool hostile = false);
  void maybe_release(Conn* c);
  void fail_outbound(Peer* p, const absl::Status& why);
  // Whether a connection to `p` has unacknowledged bytes and no ACK for `quiet_ms`.
  bool path_stalled(const Peer* p, uint32_t quiet_ms) const;
  void fail_inbound(Peer* p, const absl::Status& why);

  // Send path.
  void enqueue(Conn* c, SendItem item);
  void pump_tx(Conn* c);
  void on_send(Conn* c, int32_t res, bool zero_copy);
  void item_done(SendItem& item, bool ok);
  void on_zc(uint32_t slot, int32_t res, uint32_t flags);
  // The registered-buffer slot that holds all of `v`, or -1.
  int fixed_buffer_for(const iovec& v) const;
  SendItem frame_item(std::vector<std::byte> frame);
  void queue_completion(Conn* c, uint64_t id, wire::OpKind op, const absl::Status& st);

  // Receive path.
  void arm_recv(Conn* c);
  void parse_buffered(Conn* c);
  void consume_buffered(Conn* c);
  void on_recv(Conn* c, int32_t res);
  void on_frame(Conn* c);
  void expect_frame(Conn* c);
  void start_payload(Conn* c, std::vector<iovec> dest, uint64_t bytes);
  void start_discard(Conn* c, uint64_t bytes);
  // Takes the payload bytes already buffered, then receives the rest (or finishes).
  void receive_payload(Conn* c);
  void on_payload_done(Conn* c);
  void handle_hello(Conn* c, const wire::Hello& h);
  void handle_hello_ack(Conn* c, const wire::HelloAck& a);
  void handle_request(Conn* c, const wire::Request& r);
  void handle_completion(Conn* c, const wire::Completion& cmp);
  void handle_data(Conn* c, const wire::DataHeader& d);
  void handle_batch(Conn* c, const wire::DataBatch& b);
  void unpark(Peer* p);

  // Transfers.
  void launch(Peer* p, std::shared_ptr<OutOp> op);
  void fail_op(const std::shared_ptr<OutOp>& op, const absl::Status& why);
  void maybe_finish(Peer* p, const std::shared_ptr<OutOp>& op);
  void serve_read(Peer* p, const std::shared_ptr<InOp>& in);
  void maybe_finish_in(Peer* p, const std::shared_ptr<InOp>& in);
  void report_inbound(Peer* p, InOp& in, const absl::Status& st);
  void send_data(Peer* p, bool outbound, const std::shared_ptr<OutOp>& out,
                 const std::shared_ptr<InOp>& in, const std::vector<iovec>& segs, uint64_t id);

  // Listener.
  void arm_accept();
  void on_accept(int32_t res);

  void tick();

  Transport::Impl* t_;
  int index_;
  std::unique_ptr<ring::EventLoop> loop_;
  std::vector<std::unique_ptr<Conn>> conns_;
  std::vector<uint32_t> free_slots_;
  std::vector<uint32_t> released_;
  absl::flat_hash_map<std::string, std::unique_ptr<Peer>> peers_;
  int listen_fd_ = -1;
  bool stopping_ = false;

  // Zero-copy sends: their CQEs carry a slot here, since a notification can come
  // after the connection moved on to later sends.
  struct ZcSlot {
    uint32_t conn_slot = 0;
    uint16_t conn_gen = 0;
    bool result_seen = false;
    uint32_t head_bytes = 0;  // sent by a linked header SQE (fixed-buffer sends)
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
  bool zc_pins_refused_ = false;  // a plain zero-copy send got ENOMEM (memlock)
};

class Transport::Impl {
 public:
  Config config;
  const memory::Registry* registry = nullptr;
  InboundFn inbound;
  Counters counters;
  std::vector<std::unique_ptr<Worker>> workers;
  uint16_t port = 0;
  int listen_fd = -1;
  uint64_t instance_id = 0;
  std::atomic<bool> fixed_fallback_logged{false};

  Worker& worker_for(const std::string& key) {
    // "base<sep>g": lane group g of engine `base` goes g ring threads after the base's.
    const auto [base, suffix] = split_group(key);
    const size_t group = suffix.empty() ? 0 : std::stoul(std::string(suffix.substr(1)));
    return *workers[(std::hash<std::string_view>{}(base) + group) % workers.size()];
  }
  uint64_t inline_limit() const {
    return std::min<uint64_t>(config.stripe_threshold_bytes, wire::kBatchPayloadBytesMax);
  }
  // Runs fn(worker) on each ring thread and waits for it (see add_fixed_buffer).
  void on_every_worker(const std::function<void(Worker&)>& fn);
};

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
    const int64_t period = std::clamp<int64_t>(t_->config.timeout_ns / 20, 1'000'000, 50'000'000);
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
  }
  uint16_t gen = 1;
  if (conns_[slot] != nullptr) {
    gen = static_cast<uint16_t>(conns_[slot]->gen + 1);
  }
  conns_[slot] = std::make_unique<Conn>();
  Conn* c = conns_[slot].get();
  c->slot = slot;
  c->gen = gen;
  c->fd = fd;
  c->file = loop_->ring().install_file(fd);
  c->outbound = outbound;
  c->since_ns = now_ns();
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
  // Keep the object (its generation) until the slot is reused; mark it dead.
  if (c->fd >= 0) {
    loop_->ring().remove_file(c->file);  // the table holds the socket open, too
    c->file = -1;
    ::close(c->fd);
    c->fd = -1;
  }
  c->txq.clear();
  c->rx_out.reset();
  c->rx_in.reset();
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
    on_zc(tg.slot, res, flags);
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
        close_conn(c, base::errno_to_status(
                          -res, absl::StrFormat("connect to %s", addr_string(c->peer->addr))));
        break;
      }
      c->state = ConnState::kHandshake;
      c->since_ns = now_ns();
      pump_tx(c);
      arm_recv(c);
      break;
    case kOpSend:
      on_send(c, res, false);
      break;
    case kOpSendHead:
      // The linked payload send reports the frame; only a failed header matters here
      // (the payload then completes with -ECANCELED).
      if (res < 0 || static_cast<uint32_t>(res) != c->tx_head_bytes) {
        close_conn(c, base::errno_to_status(res < 0 ? -res : EPIPE, "send (frame header)"));
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
  const SocketConfig& s = t_->config.socket;
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
      static_cast<unsigned>(std::min<int64_t>(t_->config.timeout_ns / 1'000'000, 0x7fffffff));
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
  c->buffered = channel == wire::ChannelKind::kControl;
  c->name = channel == wire::ChannelKind::kControl
                ? absl::StrFormat("control connection to %s", p->key)
                : absl::StrFormat("data connection %d to %s", stripe, p->key);
  wire::Hello h;
  h.channel = channel;
  h.stripe = stripe;
  h.capabilities = wire::kCapDataBatch | wire::kCapZeroCopy;
  h.instance_id = t_->instance_id;
  // A lane group's connections say which group they are: "<own key><sep>g".
  const std::string hello_key = t_->config.key + std::string(split_group(p->key).second);
  h.key = hello_key;
  enqueue(c, frame_item(
                 encode_frame(wire::hello_frame_bytes(h.key.size(), 0),
                              [&](wire::MutableByteSpan o) { return wire::encode_hello(h, o); })));
  io_uring_sqe* sqe = loop_->ring().sqe(tag(c, kOpConnect));
  io_uring_prep_connect(sqe, fd, reinterpret_cast<const sockaddr*>(&p->addr), p->addr_len);
  ring::Ring::use_file(sqe, c->file);
  ++c->inflight;
  return c;
}

void Worker::open_outbound(Peer* p) {
  if (p->out_ctrl != nullptr) {
    return;
  }
  p->out_ctrl = connect_one(p, wire::ChannelKind::kControl, 0);
  p->out_data.assign(static_cast<size_t>(t_->config.stripes), nullptr);
  for (int i = 0; i < t_->config.stripes; ++i) {
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
  // Make every operation of this socket in the kernel finish now, with an error.
  ::shutdown(c->fd, SHUT_RDWR);
  io_uring_sqe* sqe = loop_->ring().sqe(ring::kTagIgnore);
  io_uring_prep_cancel_fd(sqe, c->fd, IORING_ASYNC_CANCEL_ALL);
  if (c->rx == RxState::kParked) {
    c->rx = RxState::kFrame;
  }
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
  while (c->txq.size() > (c->tx_busy ? c->tx_items : 0)) {
    SendItem item = std::move(c->txq.back());
    c->txq.pop_back();
    item_done(item, false);
  }
  maybe_release(c);
}

void Worker::maybe_release(Conn* c) {
  if (c->state == ConnState::kClosing && c->inflight == 0 && c->fd >= 0) {
    // Items still marked in flight got their CQEs (with errors) by now.
    while (!c->txq.empty()) {
      SendItem item = std::move(c->txq.front());
      c->txq.pop_front();
      item_done(item, false);
    }
    if (c->rx_out != nullptr) {
      std::shared_ptr<OutOp> op = std::move(c->rx_out);
      --op->pending;
      if (c->peer != nullptr) {
        maybe_finish(c->peer, op);
      }
    }
    c->rx_in.reset();
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
  std::vector<std::shared_ptr<OutOp>> ops;
  ops.reserve(p->out_ops.size() + p->backlog.size());
  for (auto& [id, op] : p->out_ops) {
    ops.push_back(op);
  }
  for (auto& op : p->backlog) {
    ops.push_back(op);
  }
  p->backlog.clear();
  for (auto& op : ops) {
    fail_op(op, why);
    maybe_finish(p, op);
  }
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
  auto ops = std::move(p->in_ops);
  p->in_ops.clear();
  for (auto& [id, in] : ops) {
    report_inbound(p, *in, why);
  }
}

// ---------------------------------------------------------------------------
// Send path

SendItem Worker::frame_item(std::vector<std::byte> frame) {
  SendItem item;
  item.frame = std::move(frame);
  item.iov.push_back(iovec{item.frame.data(), item.frame.size()});
  return item;
}

void Worker::enqueue(Conn* c, SendItem item) {
  // The iovec of the frame points into the item's own vector, which a move keeps.
  c->txq.push_back(std::move(item));
}

void Worker::pump_tx(Conn* c) {
  if (c->tx_busy || c->txq.empty() || c->state == ConnState::kConnecting ||
      c->state == ConnState::kClosing) {
    return;
  }
  SendItem& first = c->txq.front();
  c->tx_iov.clear();
  c->tx_items = 0;
  // Zero-copy from memory that is not a registered buffer pins pages per send, charged
  // to RLIMIT_MEMLOCK; once the kernel has refused that, such items are copied.
  // A zero-copy frame (header, payload) not yet started whose payload lies in a
  // registered buffer goes from that buffer (below); this is its slot, or -1.
  const bool zc_wanted = first.zero_copy && loop_->features().send_zc;
  const int fixed =
      zc_wanted && first.pos == 0 && first.iov.size() == 2 ? fixed_buffer_for(first.iov[1]) : -1;
  const bool zc = zc_wanted && (fixed >= 0 || !zc_pins_refused_);
  // Gather whole items (zero-copy items go alone, so each has its own notification).
  for (SendItem& item : c->txq) {
    if (c->tx_items > 0 && (item.zero_copy || zc)) {
      break;
    }
    if (c->tx_items > 0 && c->tx_iov.size() + (item.iov.size() - item.pos) > kTxIovMax) {
      break;
    }
    for (size_t i = item.pos; i < item.iov.size(); ++i) {
      iovec v = item.iov[i];
      if (i == item.pos) {
        v.iov_base = static_cast<std::byte*>(v.iov_base) + item.off;
        v.iov_len -= item.off;
      }
      c->tx_iov.push_back(v);
      if (c->tx_iov.size() == kTxIovMax) {
        break;
      }
    }
    ++c->tx_items;
    if (zc || c->tx_iov.size() == kTxIovMax) {
      break;
    }
  }
  c->tx_msg = msghdr{};
  c->tx_msg.msg_iov = c->tx_iov.data();
  c->tx_msg.msg_iovlen = c->tx_iov.size();
  c->tx_busy = true;
  ++c->inflight;
  if (zc) {
    uint32_t slot;
    if (!zc_free_.empty()) {
      slot = zc_free_.back();
      zc_free_.pop_back();
    } else {
      slot = static_cast<uint32_t>(zc_.size());
      zc_.emplace_back();
    }
    ZcSlot& z = zc_[slot];
    z.conn_slot = c->slot;
    z.conn_gen = c->gen;
    z.result_seen = false;
    z.out = first.out;
    z.in = first.in;
    if (first.pos == 0) {
      z.frame = first.frame;
      c->tx_iov[0].iov_base = z.frame.data() + first.off;
    }
    // The notification keeps the transfer's memory busy until the kernel lets go.
    if (z.out) {
      ++z.out->pending;
    }
    if (z.in) {
      ++z.in->pending;
    }
    z.head_bytes = 0;
    ring::Ring& ring = loop_->ring();
    io_uring_sqe* sqe;
    if (fixed >= 0) {
      // The payload lies in a registered buffer: the header goes first by a plain send
      // linked to a SEND_ZC from that buffer, which pins no pages per send. Both SQEs
      // go to the kernel in one submission, so the link holds.
      ring.reserve(2);
      io_uring_sqe* head = ring.sqe(tag(c, kOpSendHead));
      io_uring_prep_send(head, c->fd, c->tx_iov[0].iov_base, c->tx_iov[0].iov_len,
                         MSG_NOSIGNAL | MSG_WAITALL | MSG_MORE);
      ring::Ring::use_file(head, c->file);
      head->flags |= IOSQE_IO_LINK;
      ++c->inflight;
      z.head_bytes = c->tx_head_bytes = static_cast<uint32_t>(c->tx_iov[0].iov_len);
      sqe = ring.sqe(ring::Tag{kKindZc, 0, 0, slot}.pack());
      io_uring_prep_send_zc_fixed(sqe, c->fd, c->tx_iov[1].iov_base, c->tx_iov[1].iov_len,
                                  MSG_NOSIGNAL | MSG_WAITALL, 0, static_cast<unsigned>(fixed));
      t_->counters.zerocopy_fixed_sends.fetch_add(1, std::memory_order_relaxed);
    } else {
      sqe = ring.sqe(ring::Tag{kKindZc, 0, 0, slot}.pack());
      io_uring_prep_sendmsg_zc(sqe, c->fd, &c->tx_msg, MSG_NOSIGNAL | MSG_WAITALL);
    }
    sqe->ioprio |= ring::kSendZcReportUsage;
    ring::Ring::use_file(sqe, c->file);
    t_->counters.zerocopy_sends.fetch_add(1, std::memory_order_relaxed);
  } else {
    io_uring_sqe* sqe = loop_->ring().sqe(tag(c, kOpSend));
    io_uring_prep_sendmsg(sqe, c->fd, &c->tx_msg, MSG_NOSIGNAL | MSG_WAITALL);
    ring::Ring::use_file(sqe, c->file);
  }
}

int Worker::fixed_buffer_for(const iovec& v) const {
  // The registered buffer starting at or before v, if v lies wholly inside it.
  const auto at = reinterpret_cast<uintptr_t>(v.iov_base);
  auto it = fixed_.upper_bound(at);
  if (it == fixed_.begin()) {
    return -1;
  }
  --it;
  const uint64_t off = at - it->first;
  return off <= it->second.len && v.iov_len <= it->second.len - off ? it->second.slot : -1;
}

void Worker::add_fixed_buffer(std::byte* base, uint64_t len) {
  const auto key = reinterpret_cast<uintptr_t>(base);
  if (fixed_.contains(key)) {
    return;
  }
  absl::StatusOr<int> slot = loop_->ring().install_buffer(base, len);
  if (!slot.ok()) {
    t_->counters.fixed_buffer_fallbacks.fetch_add(1, std::memory_order_relaxed);
    if (!t_->fixed_fallback_logged.exchange(true)) {
      RX_LOG(kInfo,
             "zero-copy sends from %d bytes at %p use plain (not registered) buffers: %s "
             "(said once per engine)",
             len, static_cast<void*>(base), slot.status().message());
    }
    return;
  }
  fixed_.emplace(key, FixedBuffer{*slot, len});
  t_->counters.fixed_buffers.fetch_add(1, std::memory_order_relaxed);
}

void Worker::remove_fixed_buffer(std::byte* base) {
  auto it = fixed_.find(reinterpret_cast<uintptr_t>(base));
  if (it == fixed_.end()) {
    return;
  }
  loop_->ring().remove_buffer(it->second.slot);
  fixed_.erase(it);
  t_->counters.fixed_buffers.fetch_sub(1, std::memory_order_relaxed);
}

void Worker::on_zc(uint32_t slot, int32_t res, uint32_t flags) {
  if (slot >= zc_.size()) {
    return;
  }
  if (!zc_[slot].result_seen && (flags & IORING_CQE_F_NOTIF) == 0) {
    zc_[slot].result_seen = true;
    const bool more = (flags & IORING_CQE_F_MORE) != 0;
    const uint32_t cs = zc_[slot].conn_slot;
    const uint16_t cg = zc_[slot].conn_gen;
    if (cs < conns_.size()) {
      Conn* c = conns_[cs].get();
      if (c != nullptr && c->gen == cg && c->fd >= 0) {
        --c->inflight;
        // A fixed-buffer send reports its payload; its header went just before.
        const int32_t sent = res >= 0 ? res + static_cast<int32_t>(zc_[slot].head_bytes) : res;
        on_send(c, sent, true);  // may queue more zero-copy sends: zc_ may grow
        maybe_release(c);
      }
    }
    if (more) {
      return;  // the notification follows
    }
  } else if ((static_cast<uint32_t>(res) & ring::kNotifUsageZcCopied) != 0) {
    t_->counters.zerocopy_copied.fetch_add(1, std::memory_order_relaxed);
  }
  // The kernel no longer references the buffer.
  std::shared_ptr<OutOp> out = std::move(zc_[slot].out);
  std::shared_ptr<InOp> in = std::move(zc_[slot].in);
  zc_[slot].frame.clear();
  zc_free_.push_back(slot);
  if (out) {
    --out->pending;
    maybe_finish(out->peer, out);
  }
  if (in) {
    --in->pending;
    maybe_finish_in(in->peer, in);
  }
}

void Worker::on_send(Conn* c, int32_t res, bool zero_copy) {
  c->tx_busy = false;
  if (c->state == ConnState::kClosing) {
    return;
  }
  if (res == -ENOMEM && zero_copy) {
    // The pages a zero-copy send pins are charged to RLIMIT_MEMLOCK (without
    // CAP_IPC_LOCK; 8 MiB for users here) before anything is sent: send them by copy.
    t_->counters.zerocopy_refused.fetch_add(1, std::memory_order_relaxed);
    if (!zc_pins_refused_) {
      zc_pins_refused_ = true;
      RX_LOG(kInfo,
             "ring %d: the kernel refused to pin pages for a zero-copy send (RLIMIT_MEMLOCK, "
             "ulimit -l); sends from memory that is not a registered buffer are copied from now",
             index_);
    }
    pump_tx(c);
    return;
  }
  if (res < 0) {
    close_conn(c, base::errno_to_status(-res, "send"));
    return;
  }
  size_t left = static_cast<size_t>(res);
  size_t asked = 0;
  for (const iovec& v : c->tx_iov) {
    asked += v.iov_len;
  }
  if (left < asked) {
    t_->counters.short_sends.fetch_add(1, std::memory_order_relaxed);
  }
  // Advance over what was sent; finished items leave the queue.
  size_t items = c->tx_items;
  while (items > 0 && !c->txq.empty()) {
    SendItem& item = c->txq.front();
    while (item.pos < item.iov.size()) {
      const size_t rest = item.iov[item.pos].iov_len - item.off;
      if (left >= rest) {
        left -= rest;
        ++item.pos;
        item.off = 0;
      } else {
        item.off += left;
        left = 0;
        break;
      }
    }
    if (item.pos < item.iov.size()) {
      break;  // a short send: the rest of this item goes next
    }
    SendItem done = std::move(c->txq.front());
    c->txq.pop_front();
    --items;
    t_->counters.bytes_sent.fetch_add(done.payload, std::memory_order_relaxed);
    item_done(done, true);
    if (c->state == ConnState::kClosing) {
      return;
    }
  }
  c->tx_items = 0;
  pump_tx(c);
}

void Worker::item_done(SendItem& item, bool ok) {
  if (item.out) {
    std::shared_ptr<OutOp> op = std::move(item.out);
    --op->pending;
    if (!ok) {
      fail_op(op, absl::UnavailableError("the connection closed before the data was sent"));
    }
    maybe_finish(op->peer, op);
  }
  if (item.in) {
    std::shared_ptr<InOp> in = std::move(item.in);
    --in->pending;
    if (!ok && in->status.ok()) {
      in->status = absl::UnavailableError("the connection closed before the data was sent");
    }
    maybe_finish_in(in->peer, in);
  }
}

void Worker::queue_completion(Conn* c, uint64_t id, wire::OpKind op, const absl::Status& st) {
  if (c == nullptr) {
    return;
  }
  wire::Completion cmp;
  cmp.transfer_id = id;
  cmp.op = op;
  cmp.status = static_cast<uint16_t>(st.code());
  const std::string message(st.message().substr(0, wire::kMessageBytesMax));
  cmp.message = message;
  enqueue(c, frame_item(encode_frame(
                 wire::completion_frame_bytes(message.size()),
                 [&](wire::MutableByteSpan o) { return wire::encode_completion(cmp, o); })));
  pump_tx(c);
}

// ---------------------------------------------------------------------------
// Receive path

void Worker::expect_frame(Conn* c) {
  c->rx = RxState::kFrame;
  c->rx_header = false;
  c->rx_have = 0;
  c->rx_want = c->channel == wire::ChannelKind::kData ? kDataPrefixBytes : kCtrlPrefixBytes;
  if (c->rxbuf.size() < wire::kHeaderBytes + wire::kHelloBodyBytesMax) {
    c->rxbuf.resize(wire::kHeaderBytes + wire::kHelloBodyBytesMax);
  }
}

void Worker::arm_recv(Conn* c) {
  if (c->rx_busy || c->state == ConnState::kClosing || c->rx == RxState::kParked) {
    return;
  }
  if (c->buffered && c->rx == RxState::kFrame) {
    parse_buffered(c);
    return;
  }
  if (c->rx_want == 0 && c->rx == RxState::kFrame) {
    expect_frame(c);
  }
  io_uring_sqe* sqe = loop_->ring().sqe(tag(c, kOpRecv));
  switch (c->rx) {
    case RxState::kFrame:
      c->rx_asked = c->rx_want - c->rx_have;
      io_uring_prep_recv(sqe, c->fd, c->rxbuf.data() + c->rx_have, c->rx_asked, MSG_WAITALL);
      ring::Ring::use_file(sqe, c->file);
      break;
    case RxState::kPayload: {
      c->rx_msg = msghdr{};
      c->rx_msg.msg_iov = c->rx_iov.data() + c->rx_pos;
      c->rx_msg.msg_iovlen = std::min(c->rx_iov.size() - c->rx_pos, kRxIovMax);
      c->rx_asked = 0;
      for (size_t i = 0; i < c->rx_msg.msg_iovlen; ++i) {
        c->rx_asked += c->rx_msg.msg_iov[i].iov_len;
      }
      io_uring_prep_recvmsg(sqe, c->fd, &c->rx_msg, MSG_WAITALL);
      ring::Ring::use_file(sqe, c->file);
      break;
    }
    case RxState::kDiscard:
      if (!c->scratch) {
        c->scratch = std::make_unique<std::byte[]>(kScratchBytes);
      }
      c->rx_asked = static_cast<size_t>(std::min<uint64_t>(c->rx_left, kScratchBytes));
      io_uring_prep_recv(sqe, c->fd, c->scratch.get(), c->rx_asked, MSG_WAITALL);
      ring::Ring::use_file(sqe, c->file);
      break;
    case RxState::kParked:
      break;
  }
  c->rx_busy = true;
  ++c->inflight;
}

void Worker::on_recv(Conn* c, int32_t res) {
  c->rx_busy = false;
  if (c->state == ConnState::kClosing) {
    return;
  }
  if (res <= 0) {
    close_conn(c, res == 0 ? absl::UnavailableError("the peer closed the connection")
                           : base::errno_to_status(-res, "recv"));
    return;
  }
  const size_t n = static_cast<size_t>(res);
  if (c->buffered && c->rx == RxState::kFrame) {
    c->rend += n;
    parse_buffered(c);
    return;
  }
  switch (c->rx) {
    case RxState::kFrame: {
      c->rx_have += n;
      if (n < c->rx_asked) {
        t_->counters.short_recvs.fetch_add(1, std::memory_order_relaxed);
      }
      if (c->rx_have < c->rx_want) {
        break;
      }
      if (!c->rx_header) {
        wire::Result<wire::FrameHeader> h =
            wire::decode_header(wire::ByteSpan(c->rxbuf.data(), c->rx_have));
        if (!h.ok()) {
          close_conn(c,
                     absl::DataLossError(
                         absl::StrFormat("bad frame header: %s", wire::to_string(h.error()))),
                     true);
          return;
        }
        c->fh = *h;
        c->rx_header = true;
        const size_t frame = wire::kHeaderBytes + h->body_bytes;
        if (c->rx_have > frame) {
          // The prefix is never longer than the shortest frame its channel carries.
          close_conn(c, absl::DataLossError("frame shorter than its channel allows"), true);
          return;
        }
        if (c->rx_have < frame) {
          if (c->rxbuf.size() < frame) {
            c->rxbuf.resize(frame);
          }
          c->rx_want = frame;
          break;
        }
      }
      c->frame = c->rxbuf.data();
      on_frame(c);
      return;
    }
    case RxState::kPayload: {
      uint64_t left = n;
      c->rx_left -= n;
      while (left > 0 && c->rx_pos < c->rx_iov.size()) {
        iovec& v = c->rx_iov[c->rx_pos];
        if (left >= v.iov_len) {
          left -= v.iov_len;
          ++c->rx_pos;
        } else {
          v.iov_base = static_cast<std::byte*>(v.iov_base) + left;
          v.iov_len -= left;
          left = 0;
        }
      }
      if (n < c->rx_asked) {
        t_->counters.short_recvs.fetch_add(1, std::memory_order_relaxed);
      }
      if (c->rx_left > 0) {
        break;
      }
      on_payload_done(c);
      return;
    }
    case RxState::kDiscard:
      c->rx_left -= n;
      if (c->rx_left > 0) {
        break;
      }
      on_payload_done(c);
      return;
    case RxState::kParked:
      break;
  }
  arm_recv(c);
}

void Worker::start_payload(Conn* c, std::vector<iovec> dest, uint64_t bytes) {
  c->rx = RxState::kPayload;
  c->rx_iov = std::move(dest);
  c->rx_pos = 0;
  c->rx_left = bytes;
  receive_payload(c);
}

void Worker::start_discard(Conn* c, uint64_t bytes) {
  c->rx = RxState::kDiscard;
  c->rx_left = bytes;
  receive_payload(c);
}

void Worker::receive_payload(Conn* c) {
  // A buffered (control) connection may hold some or all of the payload already.
  if (c->buffered) {
    consume_buffered(c);
    if (c->rx_left == 0) {
      on_payload_done(c);
      return;
    }
  }
  arm_recv(c);
}

// Moves payload bytes that were read ahead into the buffer to their destinations (or
// drops them, when discarding).
void Worker::consume_buffered(Conn* c) {
  while (c->rx_left > 0 && c->rpos < c->rend) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(c->rx_left, c->rend - c->rpos));
    if (c->rx == RxState::kPayload) {
      iovec& v = c->rx_iov[c->rx_pos];
      n = std::min(n, v.iov_len);
#ifdef RX_TSAN
      AnnotateIgnoreWritesBegin(__FILE__, __LINE__);
#endif
      std::memcpy(v.iov_base, c->rbuf.data() + c->rpos, n);
#ifdef RX_TSAN
      AnnotateIgnoreWritesEnd(__FILE__, __LINE__);
#endif
      v.iov_base = static_cast<std::byte*>(v.iov_base) + n;
      v.iov_len -= n;
      if (v.iov_len == 0) {
        ++c->rx_pos;
      }
    }
    c->rpos += n;
    c->rx_left -= n;
  }
}

// Parses every whole frame in a buffered connection's buffer, then receives more.
void Worker::parse_buffered(Conn* c) {
  if (c->parsing) {
    return;  // the loop below is already running further up the stack
  }
  if (c->rbuf.empty()) {
    c->rbuf.resize(kCtrlBufferBytes);
  }
  c->parsing = true;
  while (c->state != ConnState::kClosing && c->rx == RxState::kFrame) {
    const size_t avail = c->rend - c->rpos;
    if (avail < wire::kHeaderBytes) {
      break;
    }
    if (!c->rx_header) {
      wire::Result<wire::FrameHeader> h =
          wire::decode_header(wire::ByteSpan(c->rbuf.data() + c->rpos, avail));
      if (!h.ok()) {
        c->parsing = false;
        close_conn(c,
                   absl::DataLossError(
                       absl::StrFormat("bad frame header: %s", wire::to_string(h.error()))),
                   true);
        return;
      }
      c->fh = *h;
      c->rx_header = true;
    }
    const size_t frame = wire::kHeaderBytes + c->fh.body_bytes;
    if (avail < frame) {
      break;
    }
    c->frame = c->rbuf.data() + c->rpos;
    c->rpos += frame;  // the payload, if any, follows
    on_frame(c);       // the buffer is not moved while this frame is handled
  }
  c->parsing = false;
  if (c->state == ConnState::kClosing || c->rx != RxState::kFrame || c->rx_busy) {
    return;
  }
  // Keep the unparsed tail at the front, then read as much as fits.
  if (c->rpos == c->rend) {
    c->rpos = c->rend = 0;
  } else if (c->rpos > 0) {
    std::memmove(c->rbuf.data(), c->rbuf.data() + c->rpos, c->rend - c->rpos);
    c->rend -= c->rpos;
    c->rpos = 0;
  }
  io_uring_sqe* sqe = loop_->ring().sqe(tag(c, kOpRecv));
  c->rx_asked = c->rbuf.size() - c->rend;
  io_uring_prep_recv(sqe, c->fd, c->rbuf.data() + c->rend, c->rx_asked, 0);
  ring::Ring::use_file(sqe, c->file);
  c->rx_busy = true;
  ++c->inflight;
}

void Worker::on_payload_done(Conn* c) {
  const uint64_t bytes = c->fh.payload_bytes;
  const bool placed = c->rx == RxState::kPayload;
  if (placed) {
    t_->counters.bytes_received.fetch_add(bytes, std::memory_order_relaxed);
  }
  if (c->rx_out) {
    std::shared_ptr<OutOp> op = std::move(c->rx_out);
    --op->pending;
    op->received += bytes;
    maybe_finish(c->peer, op);
  }
  if (c->rx_in) {
    std::shared_ptr<InOp> in = std::move(c->rx_in);
    in->received += bytes;
    maybe_finish_in(c->peer, in);
  } else if (!placed && !c->outbound && c->peer != nullptr) {
    // Discarded payload of a failed write: count it toward that transfer.
    auto it = c->peer->in_ops.find(c->parked_id);
    if (it != c->peer->in_ops.end()) {
      std::shared_ptr<InOp> in = it->second;
      in->received += bytes;
      maybe_finish_in(c->peer, in);
    }
  }
  if (c->state == ConnState::kClosing) {
    return;
  }
  expect_frame(c);
  arm_recv(c);
}

void Worker::on_frame(Conn* c) {
  const wire::ByteSpan body(c->frame + wire::kHeaderBytes, c->fh.body_bytes);
  const wire::FrameType type = c->fh.type;
  auto bad = [&](wire::DecodeError e) {
    close_conn(c,
               absl::DataLossError(absl::StrFormat("malformed %d frame: %s", static_cast<int>(type),
                                                   wire::to_string(e))),
               true);
  };
  // What each side of each channel may receive, and when.
  const bool handshake = c->state == ConnState::kHandshake;
  if (handshake && type != (c->outbound ? wire::FrameType::kHelloAck : wire::FrameType::kHello)) {
    close_conn(c, absl::DataLossError("expected a handshake frame"), true);
    return;
  }
  // Decodes the body with `decode` and hands the frame to `handle`, or closes the
  // connection as hostile when it may not come here now or does not decode.
  auto deliver = [&](bool allowed, auto decode, auto handle) {
    if (!allowed) {
      return bad(wire::DecodeError::kUnknownType);
    }
    auto frame = decode(c->fh, body);
    if (!frame.ok()) {
      return bad(frame.error());
    }
    handle(*frame);
  };
  const bool control = c->channel == wire::ChannelKind::kControl;
  switch (type) {
    case wire::FrameType::kHello:
      // handle_hello hands the socket over (or closes it): nothing more to arm here.
      return deliver(handshake, wire::decode_hello_body,
                     [&](const wire::Hello& h) { handle_hello(c, h); });
    case wire::FrameType::kHelloAck:
      deliver(handshake, wire::decode_hello_ack_body,
              [&](const wire::HelloAck& a) { handle_hello_ack(c, a); });
      break;
    case wire::FrameType::kWriteRequest:
    case wire::FrameType::kReadRequest:
      deliver(!c->outbound && control, wire::decode_request_body,
              [&](const wire::Request& r) { handle_request(c, r); });
      break;
    case wire::FrameType::kCompletion:
      deliver(c->outbound && control, wire::decode_completion_body,
              [&](const wire::Completion& cmp) { handle_completion(c, cmp); });
      break;
    case wire::FrameType::kData:
      // Data and batch handlers arm their own receive (payload, discard or parked).
      return deliver(true, wire::decode_data_body,
                     [&](const wire::DataHeader& d) { handle_data(c, d); });
    case wire::FrameType::kDataBatch:
      return deliver(true, wire::decode_data_batch_body,
                     [&](const wire::DataBatch& b) { handle_batch(c, b); });
  }
  if (c->state == ConnState::kClosing) {
    return;
  }
  expect_frame(c);
  arm_recv(c);
}

// ---------------------------------------------------------------------------
// Handshake

void Worker::handle_hello(Conn* c, const wire::Hello& h) {
  if (h.version_min > wire::kVersionMax || h.version_max < wire::kVersionMin) {
    wire::HelloAck a;
    a.status = static_cast<uint16_t>(absl::StatusCode::kFailedPrecondition);
    a.key = t_->config.key;
    const std::string msg =
        absl::StrFormat("no common protocol version: peer speaks %d..%d, this engine %d..%d",
                        h.version_min, h.version_max, wire::kVersionMin, wire::kVersionMax);
    a.message = msg;
    std::vector<std::byte> f =
        encode_frame(wire::hello_ack_frame_bytes(a.key.size(), msg.size()),
                     [&](wire::MutableByteSpan o) { return wire::encode_hello_ack(a, o); });
    [[maybe_unused]] ssize_t sent = ::send(c->fd, f.data(), f.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    close_conn(c, absl::FailedPreconditionError(msg), true);
    return;
  }
  const std::string key(h.key);
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
  owner.loop().post([&owner, fd, key, ch = h.channel, stripe = h.stripe, caps = h.capabilities] {
    owner.adopt_inbound(fd, key, ch, stripe, caps);
  });
}

void Worker::adopt_inbound(int fd, std::string key, wire::ChannelKind channel, uint8_t stripe,
                           uint64_t capabilities) {
  reclaim();
  if (stopping_) {
    ::close(fd);
    return;
  }
  Peer* p = peer(key, true);
  Conn* c = new_conn(fd, false);
  t_->counters.connections_opened.fetch_sub(1, std::memory_order_relaxed);  // counted at accept
  c->peer = p;
  c->channel = channel;
  c->stripe = stripe;
  c->buffered = channel == wire::ChannelKind::kControl;
  c->name = channel == wire::ChannelKind::kControl
                ? absl::StrFormat("control connection from %s", key)
                : absl::StrFormat("data connection %d from %s", stripe, key);
  // The newest connection for a (key, channel, stripe) wins: an older one is what a
  // peer that reconnected left behind.
  Conn* old = channel == wire::ChannelKind::kControl ? p->in_ctrl : p->in_data[stripe];
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
  a.capabilities = capabilities & (wire::kCapDataBatch | wire::kCapZeroCopy);
  a.instance_id = t_->instance_id;
  enqueue(c, frame_item(encode_frame(
                 wire::hello_ack_frame_bytes(a.key.size(), 0),
                 [&](wire::MutableByteSpan o) { return wire::encode_hello_ack(a, o); })));
  c->state = ConnState::kReady;
  pump_tx(c);
  expect_frame(c);
  arm_recv(c);
}

void Worker::handle_hello_ack(Conn* c, const wire::HelloAck& a) {
  if (a.status != 0) {
    close_conn(c, status_from_wire(a.status, a.message));
    return;
  }
  if (c->peer != nullptr && a.key != split_group(c->peer->key).first) {
    close_conn(
        c,
        absl::FailedPreconditionError(absl::StrFormat(
            "the engine at %s is %s, not %s", addr_string(c->peer->addr), a.key, c->peer->key)),
        false);
    return;
  }
  c->state = ConnState::kReady;
}

// ---------------------------------------------------------------------------
// Transfers: initiator side

void Worker::start_op(const std::string& key, std::shared_ptr<OutOp> op) {
  reclaim();
  t_->counters.transfers_initiated.fetch_add(1, std::memory_order_relaxed);
  Peer* p = peer(key, false);
  if (stopping_ || p == nullptr || !p->has_addr) {
    op->finished = true;
    t_->counters.transfers_failed.fetch_add(1, std::memory_order_relaxed);
    std::move(op->done)(stopping_ ? absl::UnavailableError("the engine is shutting down")
                                  : absl::NotFoundError(absl::StrFormat(
                                        "remote engine %s is not registered", key)));
    return;
  }
  op->deadline_ns = now_ns() + t_->config.timeout_ns;
  op->peer = p;
  if (p->out_ops.size() >= kOutboundOpsMaxPerPeer) {
    p->backlog.push_back(std::move(op));
    return;
  }
  launch(p, std::move(op));
}

void Worker::launch(Peer* p, std::shared_ptr<OutOp> op) {
  if (p->out_ops.contains(op->id)) {
    op->finished = true;
    t_->counters.transfers_failed.fetch_add(1, std::memory_order_relaxed);
    std::move(op->done)(absl::AlreadyExistsError(
        absl::StrFormat("transfer id %d is already in flight to %s", op->id, p->key)));
    return;
  }
  open_outbound(p);
  if (p->out_ctrl == nullptr) {
    op->finished = true;
    t_->counters.transfers_failed.fetch_add(1, std::memory_order_relaxed);
    std::move(op->done)(absl::UnavailableError(absl::StrFormat("cannot connect to %s", p->key)));
    return;
  }
  p->out_ops.emplace(op->id, op);
  std::vector<wire::Segment> segs;
  segs.reserve(op->pieces.size());
  for (const Piece& pc : op->pieces) {
    segs.push_back(wire::Segment{pc.remote_id, pc.remote_offset, pc.length});
  }
  enqueue(p->out_ctrl, frame_item(encode_frame(
                           wire::request_frame_bytes(segs.size()), [&](wire::MutableByteSpan o) {
                             return wire::encode_request(op->kind, op->id, segs, o, op->parts);
                           })));
  if (op->kind == wire::OpKind::kWrite) {
    std::vector<iovec> local;
    local.reserve(op->pieces.size());
    for (const Piece& pc : op->pieces) {
      local.push_back(iovec{pc.local, pc.length});
    }
    send_data(p, true, op, nullptr, local, op->id);
  }
  pump_tx(p->out_ctrl);
}

// Queues the data frames of one transfer: inline (one batch frame on the control
// connection) below the inline limit, else chunks round-robin over data connections.
namespace {

// Appends `v` to payload iovecs, merging it into the last when it continues it in
// memory: contiguous segments then cost the kernel one iovec, and a chunk that lies in
// one registered buffer can go as one fixed-buffer send. The first `keep` iovecs (a
// frame header) are never merged into.
void append_payload(std::vector<iovec>& iov, const iovec& v, size_t keep = 0) {
  if (iov.size() > keep &&
      static_cast<std::byte*>(iov.back().iov_base) + iov.back().iov_len == v.iov_base) {
    iov.back().iov_len += v.iov_len;
  } else {
    iov.push_back(v);
  }
}

}  // namespace

void Worker::send_data(Peer* p, bool outbound, const std::shared_ptr<OutOp>& out,
                       const std::shared_ptr<InOp>& in, const std::vector<iovec>& segs,
                       uint64_t id) {
  uint64_t total = 0;
  for (const iovec& v : segs) {
    total += v.iov_len;
  }
  Conn* ctrl = outbound ? p->out_ctrl : p->in_ctrl;
  const uint64_t zc_min = t_->config.zerocopy_threshold_bytes;
  const bool zc_on = zc_min > 0 && loop_->features().send_zc;
  auto track = [&](SendItem& item) {
    item.out = out;
    item.in = in;
    if (out) {
      ++out->pending;
    }
    if (in) {
      ++in->pending;
    }
  };
  if (total < t_->inline_limit()) {
    std::vector<wire::BatchEntry> entries;
    entries.reserve(segs.size());
    for (size_t i = 0; i < segs.size(); ++i) {
      entries.push_back(
          wire::BatchEntry{static_cast<uint32_t>(i), static_cast<uint32_t>(segs[i].iov_len), 0});
    }
    SendItem item = frame_item(encode_frame(
        wire::data_batch_frame_bytes(entries.size()),
        [&](wire::MutableByteSpan o) { return wire::encode_data_batch(id, entries, o); }));
    item.iov.reserve(1 + segs.size());
    for (const iovec& v : segs) {
      append_payload(item.iov, v, /*keep=*/1);
    }
    item.payload = total;
    item.zero_copy = zc_on && total >= zc_min;
    track(item);
    // The caller pumps: a completion may still join this batch in the same sendmsg.
    enqueue(ctrl, std::move(item));
    return;
  }
  // The lanes: the peer's idle data connections (nothing queued or in flight), or all
  // of them when none is idle. A transfer that starts while others stream then takes the
  // free connections instead of queueing behind their frames.
  std::vector<Conn*> lanes, idle;
  const std::vector<Conn*>& data = outbound ? p->out_data : p->in_data;
  for (Conn* d : data) {
    if (d != nullptr && d->state != ConnState::kClosing) {
      lanes.push_back(d);
      if (!d->tx_busy && d->txq.empty()) {
        idle.push_back(d);
      }
    }
  }
  if (!idle.empty()) {
    lanes.swap(idle);
  }
  if (lanes.empty()) {
    lanes.push_back(ctrl);
  }
  unsigned& next = outbound ? p->next_stripe : p->next_in_stripe;
  // Stripe size adapts to the transfer: about kChunksPerLane frames per connection, so
  // every lane gets work and each frame costs few receives, never smaller than the
  // configured chunk_bytes nor larger than kChunkBytesMax.
  const uint64_t per_lane = total / (lanes.size() * kChunksPerLane);
  const uint64_t chunk = std::clamp<uint64_t>(per_lane, t_->config.chunk_bytes,
                                              std::max(t_->config.chunk_bytes, kChunkBytesMax));
  const uint64_t group_max = std::min<uint64_t>(chunk, wire::kBatchPayloadBytesMax);
  // Segments smaller than a chunk travel together, one batch frame per chunk's worth;
  // larger ones are cut into chunk-sized data frames. Frames go round-robin over lanes.
  std::vector<wire::BatchEntry> group;
  std::vector<iovec> group_iov;
  uint64_t group_bytes = 0;
  auto emit = [&](SendItem item, uint64_t len) {
    item.payload = len;
    item.zero_copy = zc_on && len >= zc_min;
    track(item);
    enqueue(lanes[next++ % lanes.size()], std::move(item));
  };
  auto flush_group = [&] {
    if (group.empty()) {
      return;
    }
    SendItem item;
    if (group.size() == 1) {
      const wire::DataHeader dh{id, group[0].segment, 0, group[0].length};
      item = frame_item(encode_frame(wire::kDataFrameBytes, [&](wire::MutableByteSpan o) {
        return wire::encode_data(dh, o);
      }));
    } else {
      item = frame_item(encode_frame(
          wire::data_batch_frame_bytes(group.size()),
          [&](wire::MutableByteSpan o) { return wire::encode_data_batch(id, group, o); }));
    }
    item.iov.insert(item.iov.end(), group_iov.begin(), group_iov.end());
    emit(std::move(item), group_bytes);
    group.clear();
    group_iov.clear();
    group_bytes = 0;
  };
  for (size_t s = 0; s < segs.size(); ++s) {
    const uint64_t len = segs[s].iov_len;
    if (len < group_max) {
      if (group_bytes + len > group_max || group.size() == wire::kSegmentsMax) {
        flush_group();
      }
      group.push_back(wire::BatchEntry{static_cast<uint32_t>(s), static_cast<uint32_t>(len), 0});
      append_payload(group_iov, segs[s]);
      group_bytes += len;
      continue;
    }
    flush_group();
    for (uint64_t off = 0; off < len; off += chunk) {
      const uint64_t n = std::min<uint64_t>(chunk, len - off);
      const wire::DataHeader dh{id, static_cast<uint32_t>(s), off, n};
      SendItem item = frame_item(encode_frame(wire::kDataFrameBytes, [&](wire::MutableByteSpan o) {
        return wire::encode_data(dh, o);
      }));
      item.iov.push_back(iovec{static_cast<std::byte*>(segs[s].iov_base) + off, n});
      emit(std::move(item), n);
    }
  }
  flush_group();
  for (Conn* lane : lanes) {
    pump_tx(lane);
  }
}

void Worker::fail_op(const std::shared_ptr<OutOp>& op, const absl::Status& why) {
  if (op->finished || op->failed) {
    return;
  }
  op->failed = true;
  op->result = why;
  if (why.code() == absl::StatusCode::kDeadlineExceeded) {
    t_->counters.timeouts.fetch_add(1, std::memory_order_relaxed);
  }
}

void Worker::maybe_finish(Peer* p, const std::shared_ptr<OutOp>& op) {
  if (op->finished || op->pending > 0 || p == nullptr) {
    return;
  }
  if (!op->failed) {
    if (!op->remote_done) {
      return;
    }
    if (op->kind == wire::OpKind::kRead && op->result.ok() && op->received < op->total) {
      return;
    }
  }
  op->finished = true;
  auto it = p->out_ops.find(op->id);
  if (it != p->out_ops.end() && it->second == op) {
    p->out_ops.erase(it);
  }
  if (!op->result.ok()) {
    t_->counters.transfers_failed.fetch_add(1, std::memory_order_relaxed);
  }
  std::move(op->done)(op->result);
  while (!p->backlog.empty() && p->out_ops.size() < kOutboundOpsMaxPerPeer && !stopping_) {
    std::shared_ptr<OutOp> next = std::move(p->backlog.front());
    p->backlog.pop_front();
    launch(p, std::move(next));
  }
}

void Worker::handle_completion(Conn* c, const wire::Completion& cmp) {
  Peer* p = c->peer;
  auto it = p->out_ops.find(cmp.transfer_id);
  if (it == p->out_ops.end()) {
    return;  // it timed out or failed already
  }
  std::shared_ptr<OutOp> op = it->second;
  if (op->kind != cmp.op) {
    close_conn(c, absl::DataLossError("completion for the wrong kind of transfer"), true);
    return;
  }
  op->remote_done = true;
  if (!op->failed && cmp.status != 0) {
    op->result =
        status_from_wire(cmp.status, absl::StrFormat("%s (reported by %s)", cmp.message, p->key));
  }
  maybe_finish(p, op);
}

// ---------------------------------------------------------------------------
// Transfers: target side

void Worker::report_inbound(Peer* p, InOp& in, const absl::Status& st) {
  if (in.reported) {
    return;
  }
  in.reported = true;
  if (in.status.ok()) {
    in.status = st;
  }
  if (t_->inbound) {
    t_->inbound(p->key, in.id, in.status, in.parts);
  }
}

void Worker::handle_request(Conn* c, const wire::Request& r) {
  Peer* p = c->peer;
  if (p->in_ops.contains(r.transfer_id)) {
    close_conn(c,
               absl::DataLossError(
                   absl::StrFormat("transfer id %d repeated while in flight", r.transfer_id)),
               true);
    return;
  }
  if (p->in_ops.size() >= kInboundOpsMaxPerPeer) {
    close_conn(c, absl::ResourceExhaustedError("too many transfers in flight from one engine"),
               true);
    return;
  }
  t_->counters.transfers_served.fetch_add(1, std::memory_order_relaxed);
  auto in = std::make_shared<InOp>();
  in->peer = p;
  in->id = r.transfer_id;
  in->parts = r.parts;
  in->kind = r.op;
  in->total = r.total_bytes;
  in->deadline_ns = now_ns() + t_->config.timeout_ns;
  in->segments.reserve(r.segments.size());
  std::optional<memory::Region> region;  // the lock is taken once per distinct region
  for (const wire::Segment s : r.segments) {
    absl::StatusOr<std::byte*> at = t_->registry->resolve(s.memory_id, s.offset, s.length, region);
    if (!at.ok()) {
      in->status = at.status();
      break;
    }
    in->segments.push_back(iovec{*at, s.length});
  }
  if (r.op == wire::OpKind::kWrite) {
    p->in_ops.emplace(in->id, in);
    if (!in->status.ok()) {
      // Fail fast; the payload that follows is read and dropped.
      const absl::Status st = in->status;
      report_inbound(p, *in, st);
      in->completion_sent = true;
      queue_completion(p->in_ctrl, in->id, in->kind, st);
    }
    unpark(p);
    return;
  }
  if (!in->status.ok()) {
    const absl::Status st = in->status;
    report_inbound(p, *in, st);
    queue_completion(c, in->id, in->kind, st);
    return;
  }
  p->in_ops.emplace(in->id, in);
  serve_read(p, in);
}

void Worker::serve_read(Peer* p, const std::shared_ptr<InOp>& in) {
  send_data(p, false, nullptr, in, in->segments, in->id);
  if (in->total < t_->inline_limit()) {
    // The data went on the control connection: the completion can follow right behind.
    in->completion_sent = true;
    queue_completion(p->in_ctrl, in->id, in->kind, absl::OkStatus());
  }
  maybe_finish_in(p, in);
}

void Worker::maybe_finish_in(Peer* p, const std::shared_ptr<InOp>& in) {
  if (in->pending > 0 || p == nullptr) {
    return;
  }
  if (in->kind == wire::OpKind::kWrite && in->received < in->total) {
    return;
  }
  auto it = p->in_ops.find(in->id);
  if (it == p->in_ops.end() || it->second != in) {
    return;
  }
  p->in_ops.erase(it);
  const absl::Status st = in->status;
  if (!in->completion_sent) {
    in->completion_sent = true;
    queue_completion(p->in_ctrl, in->id, in->kind, st);
  }
  report_inbound(p, *in, st);
}

void Worker::handle_data(Conn* c, const wire::DataHeader& d) {
  Peer* p = c->peer;
  const uint64_t len = d.length;
  if (c->outbound) {
    // Read payload coming back to this initiator.
    auto it = p->out_ops.find(d.transfer_id);
    if (it == p->out_ops.end() || it->second->failed || it->second->kind != wire::OpKind::kRead) {
      c->parked_id = 0;
      start_discard(c, len);
      return;
    }
    std::shared_ptr<OutOp> op = it->second;
    if (d.segment >= op->pieces.size() || d.offset + len > op->pieces[d.segment].length ||
        op->received + len > op->total) {
      close_conn(c, absl::DataLossError("read data outside the requested range"), true);
      return;
    }
    ++op->pending;
    c->rx_out = op;
    start_payload(c, {iovec{op->pieces[d.segment].local + d.offset, len}}, len);
    return;
  }
  auto it = p->in_ops.find(d.transfer_id);
  if (it == p->in_ops.end()) {
    if (c->channel == wire::ChannelKind::kControl) {
      close_conn(c, absl::DataLossError("data for a transfer that was never requested"), true);
      return;
    }
    // The request is still on its way on the control connection: wait for it, leaving
    // the payload in the socket.
    c->rx = RxState::kParked;
    c->parked_id = d.transfer_id;
    c->since_ns = now_ns();
    p->parked.push_back(c);
    return;
  }
  std::shared_ptr<InOp> in = it->second;
  if (in->kind != wire::OpKind::kWrite) {
    close_conn(c, absl::DataLossError("data sent for a read"), true);
    return;
  }
  if (in->received + len > in->total) {
    close_conn(c, absl::DataLossError("more data than the request announced"), true);
    return;
  }
  if (!in->status.ok()) {
    c->parked_id = in->id;
    start_discard(c, len);
    return;
  }
  if (d.segment >= in->segments.size() || d.offset + len > in->segments[d.segment].iov_len) {
    close_conn(c,
               absl::DataLossError(absl::StrFormat("data frame outside segment %d of transfer %d",
                                                   d.segment, in->id)),
               true);
    return;
  }
  c->rx_in = in;
  start_payload(
      c, {iovec{static_cast<std::byte*>(in->segments[d.segment].iov_base) + d.offset, len}}, len);
}

void Worker::handle_batch(Conn* c, const wire::DataBatch& b) {
  Peer* p = c->peer;
  std::vector<iovec> dest;
  dest.reserve(b.entries.size());
  auto hostile = [&](const char* what) { close_conn(c, absl::DataLossError(what), true); };
  if (c->outbound) {
    auto it = p->out_ops.find(b.transfer_id);
    if (it == p->out_ops.end() || it->second->failed || it->second->kind != wire::OpKind::kRead) {
      c->parked_id = 0;
      start_discard(c, b.payload_bytes);
      return;
    }
    std::shared_ptr<OutOp> op = it->second;
    if (op->received + b.payload_bytes > op->total) {
      return hostile("read data beyond the requested size");
    }
    for (const wire::BatchEntry e : b.entries) {
      if (e.segment >= op->pieces.size() || e.offset + e.length > op->pieces[e.segment].length) {
        return hostile("read data outside the requested range");
      }
      dest.push_back(iovec{op->pieces[e.segment].local + e.offset, e.length});
    }
    ++op->pending;
    c->rx_out = op;
    start_payload(c, std::move(dest), b.payload_bytes);
    return;
  }
  auto it = p->in_ops.find(b.transfer_id);
  if (it == p->in_ops.end()) {
    if (c->channel == wire::ChannelKind::kControl) {
      return hostile("data for a transfer that was never requested");
    }
    c->rx = RxState::kParked;
    c->parked_id = b.transfer_id;
    c->since_ns = now_ns();
    p->parked.push_back(c);
    return;
  }
  std::shared_ptr<InOp> in = it->second;
  if (in->kind != wire::OpKind::kWrite) {
    return hostile("data sent for a read");
  }
  if (in->received + b.payload_bytes > in->total) {
    return hostile("more data than the request announced");
  }
  if (!in->status.ok()) {
    c->parked_id = in->id;
    start_discard(c, b.payload_bytes);
    return;
  }
  for (const wire::BatchEntry e : b.entries) {
    if (e.segment >= in->segments.size() || e.offset + e.length > in->segments[e.segment].iov_len) {
      return hostile("batch entry outside its segment");
    }
    dest.push_back(
        iovec{static_cast<std::byte*>(in->segments[e.segment].iov_base) + e.offset, e.length});
  }
  c->rx_in = in;
  start_payload(c, std::move(dest), b.payload_bytes);
}

void Worker::unpark(Peer* p) {
  if (p->parked.empty()) {
    return;
  }
  std::vector<Conn*> parked = std::move(p->parked);
  p->parked.clear();
  for (Conn* c : parked) {
    if (c->state == ConnState::kClosing || c->rx != RxState::kParked) {
      continue;
    }
    if (!p->in_ops.contains(c->parked_id)) {
      p->parked.push_back(c);  // still waiting
      continue;
    }
    // Re-run the frame we stopped at, now that its request is known.
    c->rx = RxState::kFrame;
    c->frame = c->rxbuf.data();
    on_frame(c);
  }
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
  io_uring_sqe* sqe = loop_->ring().sqe(ring::Tag{kKindListen, 0, 0, 0}.pack());
  io_uring_prep_accept(sqe, listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
}

void Worker::on_accept(int32_t res) {
  if (stopping_) {
    if (res >= 0) {
      ::close(res);
    }
    return;
  }
  if (res >= 0) {
    apply_socket_options(res);
    Conn* c = new_conn(res, false);
    c->state = ConnState::kHandshake;
    c->name = "an accepted connection";
    expect_frame(c);
    c->rx_want = kDataPrefixBytes;  // a hello is at least this long
    arm_recv(c);
  } else if (res != -ECANCELED) {
    RX_LOG(kWarn, "accept failed: %s", base::errno_to_status(-res, "accept").ToString());
  }
  if (res != -ECANCELED) {
    arm_accept();
  }
}

// ---------------------------------------------------------------------------
// Timeouts

void Worker::tick() {
  reclaim();
  const int64_t now = now_ns();
  const int64_t timeout = t_->config.timeout_ns;
  const int64_t timeout_ms = timeout / 1'000'000;
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
    if ((c->state == ConnState::kConnecting || c->state == ConnState::kHandshake) &&
        now - c->since_ns > timeout) {
      close_conn(
          c, absl::DeadlineExceededError(absl::StrFormat("no handshake within %d ms", timeout_ms)));
    } else if (c->rx == RxState::kParked && now - c->since_ns > timeout) {
      close_conn(c,
                 absl::DataLossError(absl::StrFormat(
                     "data for transfer %d whose request never came", c->parked_id)),
                 true);
    }
  }
  for (auto& [key, up] : peers_) {
    Peer* p = up.get();
    std::vector<std::shared_ptr<OutOp>> late;
    for (auto& [id, op] : p->out_ops) {
      if (!op->failed && now > op->deadline_ns) {
        late.push_back(op);
      }
    }
    for (auto& op : p->backlog) {
      if (!op->failed && now > op->deadline_ns) {
        late.push_back(op);
      }
    }
    bool stuck = false;
    for (auto& op : late) {
      fail_op(op, absl::DeadlineExceededError(absl::StrFormat(
                      "transfer %d to %s did not finish within %d ms", op->id, key, timeout_ms)));
      stuck |= op->pending > 0;
    }
    if (stuck) {
      // Its memory is still in the kernel's hands on a path that stopped moving: close
      // the connections so those operations end, and the transfer with them.
      fail_outbound(p, absl::UnavailableError(absl::StrFormat(
                           "closed after a transfer to %s timed out with data in flight", key)));
    } else if (!late.empty() && path_stalled(p, static_cast<uint32_t>(timeout_ms / 2))) {
      // The late transfers' requests went out but nothing is acknowledged any more: the
      // path is down (a black hole, a dead link). Close now, so that the next transfer
      // opens new connections instead of queueing behind data the kernel will give up
      // on (TCP_USER_TIMEOUT) a moment later.
      fail_outbound(p, absl::UnavailableError(absl::StrFormat(
                           "closed after a transfer to %s timed out: nothing acknowledged "
                           "for %d ms",
                           key, timeout_ms / 2)));
    }
    std::erase_if(p->backlog, [](const std::shared_ptr<OutOp>& op) {
      if (op->failed && !op->finished) {
        op->finished = true;
        std::move(op->done)(op->result);
        return true;
      }
      return false;
    });
    for (auto& op : late) {
      maybe_finish(p, op);
    }
    std::vector<std::shared_ptr<InOp>> expired;
    for (auto& [id, in] : p->in_ops) {
      if (now > in->deadline_ns && !in->reported) {
        expired.push_back(in);
      }
    }
    for (auto& in : expired) {
      report_inbound(
          p, *in,
          absl::DeadlineExceededError(absl::StrFormat(
              "transfer %d from %s did not finish within %d ms", in->id, key, timeout_ms)));
    }
  }
}

void Worker::shutdown() {
  reclaim();
  stopping_ = true;
  if (listen_fd_ >= 0) {
    io_uring_sqe* sqe = loop_->ring().sqe(ring::kTagIgnore);
    io_uring_prep_cancel_fd(sqe, listen_fd_, IORING_ASYNC_CANCEL_ALL);
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
  // The loop has stopped: nothing runs on the kernel's behalf any more.
  for (auto& [key, p] : peers_) {
    for (auto& [id, op] : p->out_ops) {
      if (!op->finished) {
        op->finished = true;
        std::move(op->done)(absl::UnavailableError("the engine is shutting down"));
      }
    }
    p->out_ops.clear();
    for (auto& op : p->backlog) {
      if (!op->finished) {
        op->finished = true;
        std::move(op->done)(absl::UnavailableError("the engine is shutting down"));
      }
    }
    p->backlog.clear();
  }
  for (auto& up : conns_) {
    if (up != nullptr && up->fd >= 0) {
      ::close(up->fd);  // the registered-file table lets go when the ring is destroyed
      up->fd = -1;
      up->file = -1;
    }
  }
}

// ---------------------------------------------------------------------------
// Transport

absl::StatusOr<std::pair<sockaddr_storage, socklen_t>> resolve_address(const std::string& host,
                                                                       uint16_t port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* res = nullptr;
  const std::string service = std::to_string(port);
  const int rc = getaddrinfo(host.c_str(), service.c_str(), &hints, &res);
  if (rc != 0 || res == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrFormat("host \"%s\" does not resolve: %s", host, gai_strerror(rc)));
  }
  std::pair<sockaddr_storage, socklen_t> out{};
  std::memcpy(&out.first, res->ai_addr, res->ai_addrlen);
  out.second = res->ai_addrlen;
  freeaddrinfo(res);
  return out;
}

Transport::Transport(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

absl::StatusOr<std::unique_ptr<Transport>> Transport::create(Config config,
                                                             const memory::Registry* registry,
                                                             InboundFn inbound) {
  auto impl = std::make_unique<Impl>();
  impl->config = std::move(config);
  impl->registry = registry;
  impl->inbound = std::move(inbound);
  impl->instance_id = std::random_device{}() | (uint64_t{std::random_device{}()} << 32);

  absl::StatusOr<std::pair<sockaddr_storage, socklen_t>> addr =
      resolve_address(impl->config.host, impl->config.port);
  if (!addr.ok()) {
    return addr.status();
  }
  const int fd = ::socket(addr->first.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return base::errno_to_status(errno, "socket");
  }
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&addr->first), addr->second) != 0 ||
      ::listen(fd, 1024) != 0) {
    const int err = errno;
    ::close(fd);
    return base::errno_to_status(
        err, absl::StrFormat("listen on %s:%d", impl->config.host, impl->config.port));
  }
  sockaddr_storage bound{};
  socklen_t bound_len = sizeof(bound);
  getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &bound_len);
  impl->port =
      ntohs(bound.ss_family == AF_INET ? reinterpret_cast<sockaddr_in*>(&bound)->sin_port
                                       : reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port);
  impl->listen_fd = fd;

  ring::RingOptions ro;
  ro.entries = impl->config.ring_entries;
  ro.sqpoll = impl->config.sqpoll;
  for (int i = 0; i < impl->config.rings; ++i) {
    impl->workers.push_back(std::make_unique<Worker>(impl.get(), i));
    const int cpu = impl->config.ring_cpus.empty()
                        ? -1
                        : impl->config.ring_cpus[i % impl->config.ring_cpus.size()];
    absl::Status st = impl->workers.back()->start(ro, cpu);
    if (!st.ok()) {
      impl->workers.clear();
      ::close(fd);
      return st;
    }
  }
  static std::atomic<bool> logged{false};
  if (!logged.exchange(true)) {
    const ring::RingFeatures& f = impl->workers[0]->loop().features();
    RX_LOG(kInfo, "io_uring features: %s", f.describe());
    if (!f.defer_taskrun) {
      RX_LOG(kInfo, "io_uring: no DEFER_TASKRUN on this kernel; using %s",
             f.coop_taskrun ? "COOP_TASKRUN" : "default task work");
    }
    if (impl->config.zerocopy_threshold_bytes > 0 && !f.send_zc) {
      RX_LOG(kInfo, "io_uring: no SEND_ZC on this kernel; zero-copy sends are off");
    }
  }
  Worker* w0 = impl->workers[0].get();
  w0->loop().post([w0, fd] { w0->start_listening(fd); });
  return std::unique_ptr<Transport>(new Transport(std::move(impl)));
}

Transport::~Transport() {
  std::vector<std::future<void>> shut;
  for (auto& w : impl_->workers) {
    Worker* wp = w.get();
    auto done = std::make_shared<std::promise<void>>();
    shut.push_back(done->get_future());
    wp->loop().post([wp, done] {
      wp->shutdown();
      done->set_value();
    });
  }
  for (auto& f : shut) {
    f.wait();
  }
  // Let the kernel finish what the shutdown cancelled, within reason.
  for (int i = 0; i < 2000; ++i) {
    bool idle = true;
    for (auto& w : impl_->workers) {
      idle &= w->live_conns.load() == 0;
    }
    if (idle) {
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  // Stop every ring thread before any worker is abandoned: a worker may post to another.
  for (auto& w : impl_->workers) {
    w->stop_loop();
  }
  for (auto& w : impl_->workers) {
    w->abandon();
  }
  if (impl_->listen_fd >= 0) {
    ::close(impl_->listen_fd);
  }
}

uint16_t Transport::port() const { return impl_->port; }
const Config& Transport::config() const { return impl_->config; }

void Transport::Impl::on_every_worker(const std::function<void(Worker&)>& fn) {
  // Waiting on another ring from a ring thread could deadlock two rings that wait on
  // each other, so from a ring thread the others are only posted to.
  const bool on_ring = std::ranges::any_of(
      workers, [](const std::unique_ptr<Worker>& w) { return w->loop().in_loop_thread(); });
  for (auto& w : workers) {
    Worker* wp = w.get();
    if (on_ring && !wp->loop().in_loop_thread()) {
      wp->loop().post([wp, fn] { fn(*wp); });
    } else {
      wp->loop().call([wp, &fn] { fn(*wp); });
    }
  }
}

void Transport::add_fixed_buffer(std::byte* base, uint64_t len) {
  impl_->on_every_worker([base, len](Worker& w) { w.add_fixed_buffer(base, len); });
}

void Transport::remove_fixed_buffer(std::byte* base) {
  impl_->on_every_worker([base](Worker& w) { w.remove_fixed_buffer(base); });
}

void Transport::add_peer(const std::string& key, const sockaddr_storage& addr, socklen_t addr_len) {
  Worker& w = impl_->worker_for(key);
  w.loop().post([&w, key, addr, addr_len] { w.add_peer(key, addr, addr_len); });
}

void Transport::remove_peer(const std::string& key) {
  Worker& w = impl_->worker_for(key);
  w.loop().post([&w, key] { w.remove_peer(key); });
}

void Transport::start(const std::string& peer_key, wire::OpKind op, uint64_t id,
                      std::vector<Piece> pieces, DoneFn done, uint16_t parts) {
  auto o = std::make_shared<OutOp>();
  o->id = id;
  o->parts = parts;
  o->kind = op;
  for (const Piece& p : pieces) {
    o->total += p.length;
  }
  o->pieces = std::move(pieces);
  o->done = std::move(done);
  Worker& w = impl_->worker_for(peer_key);
  w.loop().post([&w, peer_key, o = std::move(o)]() mutable { w.start_op(peer_key, std::move(o)); });
}

const Counters& Transport::counters() const { return impl_->counters; }

LoopStats Transport::loop_stats() const {
  LoopStats s;
  for (auto& w : impl_->workers) {
    const ring::LoopCounters c = w->loop().counters();
    s.sqes += c.ring.sqes;
    s.enters += c.ring.enters;
    s.cqes += c.ring.cqes;
    s.wakeups += c.wakeups;
  }
  return s;
}

}  // namespace ringxfer::transport
