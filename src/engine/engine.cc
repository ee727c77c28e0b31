#include "ringxfer/engine.h"

#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <memory>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/log.h"
#include "base/status_macros.h"
#include "engine/engine_impl.h"
#include "transport/address.h"
#include "transport/lane_key.h"
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
}  // namespace detail

// ---------------------------------------------------------------------------
// Engine

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
  if (const char* path = std::getenv("RINGXFER_CONFIG");
      config.apply_config_env && path != nullptr && *path != '\0') {
    // A config file for every engine of the process: fields left at their defaults
    // here take the file's values (explicit fields > file > defaults).
    absl::StatusOr<EngineConfig> file = EngineConfig::load(path);
    if (!file.ok()) {
      return absl::Status(file.status().code(),
                          absl::StrCat("RINGXFER_CONFIG: ", file.status().message()));
    }
    config = config.over(*file);
    static std::atomic<bool> said{false};
    if (!said.exchange(true)) {
      RX_LOG(kInfo, "engine config: fields not set by the caller come from %s (RINGXFER_CONFIG)",
             path);
    }
  }
  if (absl::Status st = config.validate(); !st.ok()) {
    return st;
  }
  std::string advertised = config.advertise_host.empty() ? config.host : config.advertise_host;
  if (transport::is_any_host(advertised)) {
    absl::StatusOr<std::string> h =
        transport::reachable_host(config.host == "0.0.0.0" ? AF_INET : AF_INET6);
    if (!h.ok()) {
      return h.status();
    }
    advertised = std::move(*h);
  }
  auto impl = std::make_unique<detail::EngineImpl>();
  impl->config = config;
  impl->inbound =
      std::make_unique<detail::InboundStore>(static_cast<size_t>(config.max_inbound_statuses),
                                             static_cast<size_t>(config.max_split_transfers),
                                             std::chrono::nanoseconds(config.timeout).count());
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
  d.host = std::move(advertised);
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
                                                   MemoryLocation location, int device_id,
                                                   const MemoryAccess& access) {
  RX_RETURN_IF_ERROR(impl_->usable());
  memory::Rights rights;
  rights.remote_read = access.remote_read;
  rights.remote_write = access.remote_write;
  if (!access.allowed_engines.empty()) {
    for (size_t i = 0; i < access.allowed_engines.size(); ++i) {
      const std::string& k = access.allowed_engines[i];
      if (k.empty() || k.size() > kEngineKeyBytesMax ||
          k.find(transport::kGroupSeparator) != std::string::npos) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "register_memory: allowed_engines[%d] \"%s\" is not an engine key (1..%d bytes "
            "without 0x1f)",
            i, k, kEngineKeyBytesMax));
      }
    }
    rights.allowed_engines = std::make_shared<const absl::flat_hash_set<std::string>>(
        access.allowed_engines.begin(), access.allowed_engines.end());
  }
  if (ptr == nullptr || size == 0) {
    // The registry says what is wrong.
  } else if (location == MemoryLocation::kGpu) {
    // Staged through pinned slabs; the runtime is loaded at the first GPU registration.
    if (absl::Status st = impl_->transport->prepare_gpu(device_id); !st.ok()) {
      return absl::Status(st.code(), absl::StrCat("register_memory: ", st.message()));
    }
    const std::shared_ptr<memory::GpuRuntime> rt = impl_->transport->gpu_runtime();
    const auto* first = static_cast<const std::byte*>(ptr);
    for (const void* at :
         {static_cast<const void*>(first), static_cast<const void*>(first + size - 1)}) {
      const memory::PointerInfo pi = rt->pointer_info(at);
      if (pi.kind != memory::PointerKind::kDevice && pi.kind != memory::PointerKind::kManaged) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "register_memory: [%p, +%d) is not memory of GPU %d according to %s: register host "
            "memory as MemoryLocation::kCpu",
            ptr, size, device_id, rt->describe()));
      }
      if (pi.device != device_id) {
        return absl::InvalidArgumentError(
            absl::StrFormat("register_memory: %p is memory of GPU %d, not of device_id %d", at,
                            pi.device, device_id));
      }
    }
  } else if (const std::shared_ptr<memory::GpuRuntime> rt = memory::GpuRuntime::loaded()) {
    // A device pointer registered as host memory would fault in the kernel's copy (or
    // worse): refused where the runtime can tell.
    const memory::PointerInfo pi = rt->pointer_info(ptr);
    if (pi.kind == memory::PointerKind::kDevice) {
      return absl::InvalidArgumentError(
          absl::StrFormat("register_memory: %p is memory of GPU %d, registered as host memory: use "
                          "MemoryLocation::kGpu with device_id %d",
                          ptr, pi.device, pi.device));
    }
  }
  absl::StatusOr<memory::Region> r = impl_->registry.add(
      ptr, size, location == MemoryLocation::kGpu ? memory::Location::kGpu : memory::Location::kCpu,
      location == MemoryLocation::kGpu ? device_id : -1, std::move(rights));
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
  d.rkey = r->key;
  if (impl_->config.zerocopy_threshold_bytes > 0 && location == MemoryLocation::kCpu) {
    // Zero-copy sends from registered buffers pin no pages per send. (GPU memory is sent
    // from its staging slabs, which are fixed buffers already.)
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

namespace {
thread_local void* t_gpu_stream = nullptr;
}  // namespace

void Engine::set_gpu_stream(void* stream) { t_gpu_stream = stream; }
void* Engine::gpu_stream() { return t_gpu_stream; }

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
  return impl_->inbound->pop(std::string(remote_key), transfer_id);
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
  s.auth_failures = c.auth_failures.load();
  s.connections_refused = c.connections_refused.load();
  s.peers = c.peers.load();
  s.peers_evicted = c.peers_evicted.load();
  s.idle_closed = c.idle_closed.load();
  s.staged_copies = c.staged_copies.load();
  s.staging_waits = c.staging_waits.load();
  s.staging_failures = c.staging_failures.load();
  s.access_denied = c.access_denied.load();
  s.zerocopy_fixed_sends = c.zerocopy_fixed_sends.load();
  s.fixed_buffers = c.fixed_buffers.load();
  s.fixed_buffer_fallbacks = c.fixed_buffer_fallbacks.load();
  s.zerocopy_refused = c.zerocopy_refused.load();
  s.ring_threads = impl_->config.rings;
  {
    std::lock_guard lock(impl_->inbound_mu);
    s.inbound_statuses = impl_->inbound->statuses();
    s.inbound_statuses_dropped = impl_->inbound->evicted();
    s.split_transfers = impl_->inbound->partial();
    s.split_transfers_expired = impl_->inbound->partial_expired();
  }
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
