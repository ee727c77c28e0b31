#include "ringxfer/engine.h"

#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <deque>
#include <mutex>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_format.h"
#include "base/log.h"
#include "base/status_macros.h"
#include "memory/registry.h"
#include "transport/transport.h"
#include "wire/limits.h"

namespace ringxfer {
namespace detail {

namespace {

std::string host_name() {
  char buf[256] = {};
  if (gethostname(buf, sizeof(buf) - 1) != 0) {
    return "unknown";
  }
  return buf;
}

transport::Config transport_config(const std::string& key, const EngineConfig& c) {
  return transport::Config{key, c};
}

}  // namespace

class EngineImpl {
 public:
  EngineDesc desc;
  EngineConfig config;
  memory::Registry registry;
  std::atomic<uint64_t> next_id{1};

  std::mutex mu;  // std::mutex: ThreadSanitizer sees it (Debian's Abseil has no annotations)
  absl::flat_hash_map<std::string, EngineDesc> remotes;  // guarded by mu
  // (peer key, transfer id) pairs in flight from this engine; guarded by mu.
  absl::flat_hash_map<std::pair<std::string, uint64_t>, std::weak_ptr<TransferStatus>> inflight;
  // Set in a child process made by fork(): the ring threads did not come along, so the
  // engine refuses every call there and its destructor joins nothing.
  std::atomic<bool> forked{false};

  absl::Status usable() const {
    if (forked.load(std::memory_order_acquire)) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "engine %s belongs to process %d: after fork() it cannot be used in this child "
          "process (its ring threads did not come along); create a new engine in the child",
          desc.key, desc.pid));
    }
    return absl::OkStatus();
  }

  struct InboundStore {
    absl::flat_hash_map<uint64_t, StatusHandle> by_id;
    std::deque<uint64_t> order;  // oldest first, for eviction
  };
  std::mutex inbound_mu;
  absl::flat_hash_map<std::string, InboundStore> inbound;  // guarded by inbound_mu
  // Transfers split into parts: parts seen so far and the first failure, by (engine, id);
  // guarded by inbound_mu.
  struct PartialInbound {
    uint16_t seen = 0;
    absl::Status status;
  };
  absl::flat_hash_map<std::pair<std::string, uint64_t>, PartialInbound> partial;

  int groups() const { return config.rings; }

  // Declared last: destroyed first, while everything it calls back into still exists.
  std::unique_ptr<transport::Transport> transport;

  void record_inbound(const std::string& transport_key, uint64_t id, absl::Status st,
                      uint16_t parts) {
    const std::string peer(transport::split_lane_key(transport_key).base);
    std::lock_guard lock(inbound_mu);
    if (parts > 1) {
      // One inbound status for the whole transfer, once every part has finished.
      PartialInbound& pi = partial[std::make_pair(peer, id)];
      if (pi.status.ok() && !st.ok()) {
        pi.status = st;
      }
      if (++pi.seen < parts) {
        return;
      }
      st = pi.status;
      partial.erase(std::make_pair(peer, id));
    }
    auto h = std::make_shared<TransferStatus>(id);
    h->set_in_progress();
    h->finish(std::move(st));
    InboundStore& s = inbound[peer];
    if (s.by_id.insert_or_assign(id, std::move(h)).second) {
      s.order.push_back(id);
    }
    while (s.by_id.size() > Engine::kInboundStatusesMax && !s.order.empty()) {
      s.by_id.erase(s.order.front());
      s.order.pop_front();
    }
    if (s.order.size() > 2 * Engine::kInboundStatusesMax) {
      std::erase_if(s.order, [&](uint64_t i) { return !s.by_id.contains(i); });
    }
  }

  // Cuts `pieces` (total bytes in all) into at most `n` parts of nearly equal size.
  static std::vector<std::vector<transport::Piece>> split_pieces(
      const std::vector<transport::Piece>& pieces, uint64_t total, int n) {
    std::vector<std::vector<transport::Piece>> out(static_cast<size_t>(n));
    const uint64_t per = (total + n - 1) / n;
    size_t part = 0;
    uint64_t room = per;
    for (const transport::Piece& pc : pieces) {
      uint64_t off = 0;
      while (off < pc.length) {
        const uint64_t len = std::min(pc.length - off, room);
        out[part].push_back(
            transport::Piece{pc.local + off, pc.remote_id, pc.remote_offset + off, len});
        off += len;
        room -= len;
        if (room == 0 && part + 1 < out.size()) {
          ++part;
          room = per;
        }
      }
    }
    std::erase_if(out, [](const std::vector<transport::Piece>& v) { return v.empty(); });
    return out;
  }

  // Checks one transfer's arguments; nothing is sent when this fails. With `pin`, the
  // local region is held there (deregistration waits for it).
  absl::Status check_pair(const MemoryDesc& local, const MemoryDesc& remote,
                          std::optional<memory::Pin>* pin = nullptr) {
    if (local.engine_key != desc.key) {
      return absl::InvalidArgumentError(
          absl::StrFormat("local memory %d belongs to engine %s, not to this engine %s", local.id,
                          local.engine_key, desc.key));
    }
    std::optional<std::pair<memory::Region, memory::Pin>> held = registry.pin(local.id);
    std::optional<memory::Region> r;
    if (held.has_value()) {
      r = held->first;
      if (pin != nullptr) {
        *pin = std::move(held->second);
      }
    }
    if (!r.has_value()) {
      return absl::FailedPreconditionError(
          absl::StrFormat("local memory %d is not registered (or was deregistered) in engine %s",
                          local.id, desc.key));
    }
    if (r->size != local.size || reinterpret_cast<uint64_t>(r->base) != local.address) {
      return absl::InvalidArgumentError(
          absl::StrFormat("local memory descriptor %d does not match its registration", local.id));
    }
    if (local.location == MemoryLocation::kGpu || remote.location == MemoryLocation::kGpu) {
      return absl::UnimplementedError(
          "GPU memory transfers need the GPU staging path, which this build does not have yet");
    }
    std::lock_guard lock(mu);
    if (!remotes.contains(remote.engine_key)) {
      return absl::NotFoundError(absl::StrFormat(
          "remote engine %s is not registered with engine %s", remote.engine_key, desc.key));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<StatusHandle> transfer(wire::OpKind op, const MemoryDesc& local,
                                        std::span<const uint64_t> local_offsets,
                                        const MemoryDesc& remote,
                                        std::span<const uint64_t> remote_offsets,
                                        std::span<const uint64_t> sizes, uint64_t id) {
    const char* verb = op == wire::OpKind::kWrite ? "write" : "read";
    RX_RETURN_IF_ERROR(usable());
    if (sizes.size() != local_offsets.size() || sizes.size() != remote_offsets.size()) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: local_offsets (%d), remote_offsets (%d) and sizes (%d) differ in length", verb,
          local_offsets.size(), remote_offsets.size(), sizes.size()));
    }
    if (sizes.empty() || sizes.size() > wire::kSegmentsMax) {
      return absl::InvalidArgumentError(absl::StrFormat("%s: %d transfers in one batch; use 1..%d",
                                                        verb, sizes.size(), wire::kSegmentsMax));
    }
    std::optional<memory::Pin> pin;
    if (absl::Status st = check_pair(local, remote, &pin); !st.ok()) {
      return st;
    }
    std::vector<transport::Piece> pieces;
    pieces.reserve(sizes.size());
    const bool batch = sizes.size() > 1;
    uint64_t total = 0;
    for (size_t i = 0; i < sizes.size(); ++i) {
      // "[i]" after each argument's name in a batch; formatted only for an error message.
      const auto idx = [&] { return batch ? absl::StrFormat("[%d]", i) : std::string(); };
      const uint64_t n = sizes[i];
      if (n == 0) {
        return absl::InvalidArgumentError(absl::StrFormat("%s: size%s is 0", verb, idx()));
      }
      if (!memory::range_inside(local_offsets[i], n, local.size)) {
        return absl::OutOfRangeError(absl::StrFormat(
            "%s: local_offset%s %d + size%s %d is beyond local memory %d of %d bytes", verb, idx(),
            local_offsets[i], idx(), n, local.id, local.size));
      }
      if (!memory::range_inside(remote_offsets[i], n, remote.size)) {
        return absl::OutOfRangeError(absl::StrFormat(
            "%s: remote_offset%s %d + size%s %d is beyond remote memory %d of %d bytes", verb,
            idx(), remote_offsets[i], idx(), n, remote.id, remote.size));
      }
      if (n > wire::kSegmentBytesMax || total + n > wire::kTransferBytesMax) {
        return absl::InvalidArgumentError(
            absl::StrFormat("%s: %d bytes in one transfer is over the limit of %d", verb, total + n,
                            wire::kTransferBytesMax));
      }
      total += n;
      pieces.push_back(
          transport::Piece{reinterpret_cast<std::byte*>(local.address) + local_offsets[i],
                           remote.id, remote_offsets[i], n});
    }
    auto status = std::make_shared<TransferStatus>(id, config.wait_spin);
    status->set_in_progress();
    {
      std::lock_guard lock(mu);
      if (!inflight.try_emplace(std::make_pair(remote.engine_key, id), status).second) {
        return absl::AlreadyExistsError(absl::StrFormat(
            "%s: transfer id %d is already in flight to %s", verb, id, remote.engine_key));
      }
    }
    // With several ring threads a large transfer is cut into one part per lane group
    // (each group has its own connections on its own ring thread, on both sides); a
    // small one goes whole to one group, chosen by its id.
    const int g = groups();
    const bool split = g > 1 && total >= static_cast<uint64_t>(g) * config.stripe_threshold_bytes;
    std::vector<std::vector<transport::Piece>> parts;
    if (split) {
      parts = split_pieces(pieces, total, g);
    } else {
      parts.push_back(std::move(pieces));
    }
    struct Join {
      std::atomic<int> left{0};
      std::mutex mu;
      absl::Status first_error;
    };
    auto join = std::make_shared<Join>();
    join->left = static_cast<int>(parts.size());
    const uint16_t nparts = parts.size() > 1 ? static_cast<uint16_t>(parts.size()) : 0;
    for (size_t i = 0; i < parts.size(); ++i) {
      const int group = split ? static_cast<int>(i) : static_cast<int>(id % g);
      transport->start(
          transport::lane_key(remote.engine_key, group, g), op, id, std::move(parts[i]),
          [this, status, join, key = remote.engine_key, id](absl::Status st) {
            if (!st.ok()) {
              std::lock_guard lock(join->mu);
              if (join->first_error.ok()) {
                join->first_error = std::move(st);
              }
            }
            if (join->left.fetch_sub(1, std::memory_order_acq_rel) != 1) {
              return;
            }
            {
              std::lock_guard lock(mu);
              inflight.erase(std::make_pair(key, id));
            }
            absl::Status result;
            {
              std::lock_guard lock(join->mu);
              result = join->first_error;
            }
            status->finish(std::move(result));
          },
          nparts, std::vector<memory::Pin>{*pin});
    }
    return status;
  }
};

}  // namespace detail

// ---------------------------------------------------------------------------
// Engine

namespace detail {
namespace {

// Every live engine, for the fork handlers. The prepare handler takes this lock and
// each engine's own lock, so the child inherits them in a known state.
std::mutex g_engines_mu;
std::vector<EngineImpl*>& engines() {
  static auto* v = new std::vector<EngineImpl*>();  // never destroyed: handlers may run late
  return *v;
}

void before_fork() {
  g_engines_mu.lock();
  for (EngineImpl* e : engines()) {
    e->mu.lock();
  }
}

void after_fork_in_parent() {
  for (EngineImpl* e : engines()) {
    e->mu.unlock();
  }
  g_engines_mu.unlock();
}

void after_fork_in_child() {
  // Only this thread exists here. Transfers in flight will never finish: fail them, so
  // that nobody in the child waits forever.
  for (EngineImpl* e : engines()) {
    e->forked.store(true, std::memory_order_release);
    for (auto& [key, weak] : e->inflight) {
      if (StatusHandle s = weak.lock()) {
        s->finish(absl::FailedPreconditionError(
            "the process forked while this transfer was in flight; it cannot finish in the child"));
      }
    }
    e->inflight.clear();
    e->mu.unlock();
  }
  g_engines_mu.unlock();
}

void track(EngineImpl* e) {
  static std::once_flag once;
  std::call_once(once,
                 [] { pthread_atfork(before_fork, after_fork_in_parent, after_fork_in_child); });
  std::lock_guard lock(g_engines_mu);
  engines().push_back(e);
}

void untrack(EngineImpl* e) {
  std::lock_guard lock(g_engines_mu);
  std::erase(engines(), e);
}

}  // namespace
}  // namespace detail

Engine::Engine(std::unique_ptr<detail::EngineImpl> impl) : impl_(std::move(impl)) {
  detail::track(impl_.get());
}

Engine::~Engine() {
  detail::untrack(impl_.get());
  if (impl_->forked.load(std::memory_order_acquire)) {
    // A copy made by fork(): its ring threads exist only in the parent, so there is
    // nothing to stop or join here. The transport's memory is left to the process.
    (void)impl_->transport.release();
  }
}

absl::StatusOr<std::unique_ptr<Engine>> Engine::create(std::string key, EngineConfig config) {
  if (key.empty() || key.size() > kEngineKeyBytesMax) {
    return absl::InvalidArgumentError(
        absl::StrFormat("engine key must be 1..%d bytes, got %d", kEngineKeyBytesMax, key.size()));
  }
  if (key.find(transport::kGroupSeparator) != std::string::npos) {
    return absl::InvalidArgumentError("engine key must not contain the byte 0x1f");
  }
  if (absl::Status st = config.validate(); !st.ok()) {
    return st;
  }
  auto impl = std::make_unique<detail::EngineImpl>();
  impl->config = config;
  detail::EngineImpl* raw = impl.get();
  absl::StatusOr<std::unique_ptr<transport::Transport>> t = transport::Transport::create(
      detail::transport_config(key, config), &impl->registry,
      [raw](const std::string& peer, uint64_t id, absl::Status st, uint16_t parts) {
        raw->record_inbound(peer, id, std::move(st), parts);
      });
  if (!t.ok()) {
    return t.status();
  }
  impl->transport = std::move(*t);
  EngineDesc& d = impl->desc;
  d.key = std::move(key);
  d.hostname = detail::host_name();
  d.node_id = d.hostname;
  d.host = config.host;
  d.port = impl->transport->port();
  d.pid = static_cast<int32_t>(getpid());
  d.protocol_version = wire::kVersionMax;
  return std::unique_ptr<Engine>(new Engine(std::move(impl)));
}

const EngineDesc& Engine::desc() const { return impl_->desc; }
const EngineConfig& Engine::config() const { return impl_->config; }

absl::Status Engine::register_remote_engine(const EngineDesc& remote) {
  RX_RETURN_IF_ERROR(impl_->usable());
  if (remote.key.empty() || remote.key.size() > kEngineKeyBytesMax ||
      remote.key.find(transport::kGroupSeparator) != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "register_remote_engine: key must be 1..%d bytes without 0x1f", kEngineKeyBytesMax));
  }
  if (remote.port == 0 || remote.host.empty()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("register_remote_engine: engine %s has no address (host \"%s\", port %d)",
                        remote.key, remote.host, remote.port));
  }
  absl::StatusOr<std::pair<sockaddr_storage, socklen_t>> addr =
      transport::resolve_address(remote.host, remote.port);
  if (!addr.ok()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("register_remote_engine %s: %s", remote.key, addr.status().message()));
  }
  {
    std::lock_guard lock(impl_->mu);
    impl_->remotes.insert_or_assign(remote.key, remote);
  }
  for (int g = 0; g < impl_->groups(); ++g) {
    impl_->transport->add_peer(transport::lane_key(remote.key, g, impl_->groups()), addr->first,
                               addr->second);
  }
  return absl::OkStatus();
}

absl::Status Engine::deregister_remote_engine(const EngineDesc& remote) {
  RX_RETURN_IF_ERROR(impl_->usable());
  {
    std::lock_guard lock(impl_->mu);
    if (impl_->remotes.erase(remote.key) == 0) {
      return absl::NotFoundError(
          absl::StrFormat("deregister_remote_engine: %s is not registered", remote.key));
    }
  }
  for (int g = 0; g < impl_->groups(); ++g) {
    impl_->transport->remove_peer(transport::lane_key(remote.key, g, impl_->groups()));
  }
  return absl::OkStatus();
}

absl::StatusOr<MemoryDesc> Engine::register_memory(void* ptr, uint64_t size,
                                                   MemoryLocation location, int device_id) {
  RX_RETURN_IF_ERROR(impl_->usable());
  if (location == MemoryLocation::kGpu) {
    return absl::UnimplementedError(
        "register_memory: GPU memory needs the GPU staging path, which this build does not have "
        "yet");
  }
  absl::StatusOr<memory::Region> r =
      impl_->registry.add(ptr, size, memory::Location::kCpu, device_id);
  if (!r.ok()) {
    return r.status();
  }
  MemoryDesc d;
  d.engine_key = impl_->desc.key;
  d.id = r->id;
  d.device_id = device_id;
  d.size = size;
  d.location = location;
  d.address = reinterpret_cast<uint64_t>(ptr);
  if (impl_->config.zerocopy_threshold_bytes > 0) {
    // Zero-copy sends from registered buffers pin no pages per send.
    impl_->transport->add_fixed_buffer(static_cast<std::byte*>(ptr), size);
  }
  return d;
}

absl::Status Engine::deregister_memory(const MemoryDesc& desc) {
  RX_RETURN_IF_ERROR(impl_->usable());
  if (desc.engine_key != impl_->desc.key) {
    return absl::InvalidArgumentError(
        absl::StrFormat("deregister_memory: memory %d belongs to engine %s, not %s", desc.id,
                        desc.engine_key, impl_->desc.key));
  }
  // Out of the registry first (no transfer can take it any more), then every transfer
  // holding it fails, then wait until the last of them has nothing in the kernel: once
  // this returns, no byte lands in or leaves the region.
  RX_ASSIGN_OR_RETURN(const memory::Region r, impl_->registry.take(desc.id));
  impl_->transport->fence(r.use.get(), r.id);
  if (impl_->config.zerocopy_threshold_bytes > 0) {
    impl_->transport->remove_fixed_buffer(r.base);
  }
  if (impl_->transport->on_ring_thread()) {
    // A status callback must not block its ring thread; the transfers it failed let go
    // as their sends and receives in the kernel end.
    return absl::OkStatus();
  }
  for (int waited_s = 0; !r.use->wait_unused(5000); waited_s += 5) {
    RX_LOG(kWarn, "deregister_memory %d: still waiting after %d s for %d transfer(s) in flight",
           r.id, waited_s + 5, r.use->users());
  }
  return absl::OkStatus();
}

uint64_t Engine::allocate_transfer_id() {
  return impl_->next_id.fetch_add(1, std::memory_order_relaxed);
}

absl::StatusOr<StatusHandle> Engine::write(const MemoryDesc& local, uint64_t local_offset,
                                           const MemoryDesc& remote, uint64_t remote_offset,
                                           uint64_t size, uint64_t transfer_id) {
  return impl_->transfer(wire::OpKind::kWrite, local, {&local_offset, 1}, remote,
                         {&remote_offset, 1}, {&size, 1}, transfer_id);
}

absl::StatusOr<StatusHandle> Engine::read(const MemoryDesc& local, uint64_t local_offset,
                                          const MemoryDesc& remote, uint64_t remote_offset,
                                          uint64_t size, uint64_t transfer_id) {
  return impl_->transfer(wire::OpKind::kRead, local, {&local_offset, 1}, remote,
                         {&remote_offset, 1}, {&size, 1}, transfer_id);
}

absl::StatusOr<StatusHandle> Engine::batch_write(const MemoryDesc& local,
                                                 std::span<const uint64_t> local_offsets,
                                                 const MemoryDesc& remote,
                                                 std::span<const uint64_t> remote_offsets,
                                                 std::span<const uint64_t> sizes,
                                                 uint64_t transfer_id) {
  return impl_->transfer(wire::OpKind::kWrite, local, local_offsets, remote, remote_offsets, sizes,
                         transfer_id);
}

absl::StatusOr<StatusHandle> Engine::batch_read(const MemoryDesc& local,
                                                std::span<const uint64_t> local_offsets,
                                                const MemoryDesc& remote,
                                                std::span<const uint64_t> remote_offsets,
                                                std::span<const uint64_t> sizes,
                                                uint64_t transfer_id) {
  return impl_->transfer(wire::OpKind::kRead, local, local_offsets, remote, remote_offsets, sizes,
                         transfer_id);
}

absl::StatusOr<std::unique_ptr<Session>> Engine::create_session(const MemoryDesc& local,
                                                                const MemoryDesc& remote) {
  RX_RETURN_IF_ERROR(impl_->usable());
  if (absl::Status st = impl_->check_pair(local, remote); !st.ok()) {
    return st;
  }
  return std::unique_ptr<Session>(new Session(this, local, remote));
}

StatusHandle Engine::pop_inbound_status(std::string_view remote_key, uint64_t transfer_id) {
  std::lock_guard lock(impl_->inbound_mu);
  auto it = impl_->inbound.find(std::string(remote_key));
  if (it == impl_->inbound.end()) {
    return nullptr;
  }
  auto node = it->second.by_id.extract(transfer_id);
  if (node.empty()) {
    return nullptr;
  }
  return std::move(node.mapped());
}

EngineStats Engine::stats() const {
  const transport::Counters& c = impl_->transport->counters();
  const transport::LoopStats l = impl_->transport->loop_stats();
  EngineStats s;
  s.bytes_sent = c.bytes_sent.load();
  s.bytes_received = c.bytes_received.load();
  s.transfers_initiated = c.transfers_initiated.load();
  s.transfers_served = c.transfers_served.load();
  s.transfers_failed = c.transfers_failed.load();
  s.sqes = l.sqes;
  s.enters = l.enters;
  s.cqes = l.cqes;
  s.wakeups = l.wakeups;
  s.zerocopy_sends = c.zerocopy_sends.load();
  s.zerocopy_copied = c.zerocopy_copied.load();
  s.short_sends = c.short_sends.load();
  s.short_recvs = c.short_recvs.load();
  s.timeouts = c.timeouts.load();
  s.connections_opened = c.connections_opened.load();
  s.connections_closed = c.connections_closed.load();
  s.hostile_frames = c.hostile_frames.load();
  s.zerocopy_fixed_sends = c.zerocopy_fixed_sends.load();
  s.fixed_buffers = c.fixed_buffers.load();
  s.fixed_buffer_fallbacks = c.fixed_buffer_fallbacks.load();
  s.zerocopy_refused = c.zerocopy_refused.load();
  s.ring_threads = impl_->config.rings;
  return s;
}

// ---------------------------------------------------------------------------
// Session

Session::Session(Engine* engine, MemoryDesc local, MemoryDesc remote)
    : engine_(engine), local_(std::move(local)), remote_(std::move(remote)) {}
Session::~Session() = default;

uint64_t Session::allocate_transfer_id() { return engine_->allocate_transfer_id(); }

absl::StatusOr<StatusHandle> Session::write(uint64_t local_offset, uint64_t remote_offset,
                                            uint64_t size, uint64_t transfer_id) {
  return engine_->write(local_, local_offset, remote_, remote_offset, size, transfer_id);
}
absl::StatusOr<StatusHandle> Session::read(uint64_t local_offset, uint64_t remote_offset,
                                           uint64_t size, uint64_t transfer_id) {
  return engine_->read(local_, local_offset, remote_, remote_offset, size, transfer_id);
}
absl::StatusOr<StatusHandle> Session::batch_write(std::span<const uint64_t> local_offsets,
                                                  std::span<const uint64_t> remote_offsets,
                                                  std::span<const uint64_t> sizes,
                                                  uint64_t transfer_id) {
  return engine_->batch_write(local_, local_offsets, remote_, remote_offsets, sizes, transfer_id);
}
absl::StatusOr<StatusHandle> Session::batch_read(std::span<const uint64_t> local_offsets,
                                                 std::span<const uint64_t> remote_offsets,
                                                 std::span<const uint64_t> sizes,
                                                 uint64_t transfer_id) {
  return engine_->batch_read(local_, local_offsets, remote_, remote_offsets, sizes, transfer_id);
}

bool Session::alive() const {
  if (!engine_->impl_->registry.find(local_.id).has_value()) {
    return false;
  }
  std::lock_guard lock(engine_->impl_->mu);
  return engine_->impl_->remotes.contains(remote_.engine_key);
}

}  // namespace ringxfer
