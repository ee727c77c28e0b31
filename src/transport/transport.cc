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
#include <cstdlib>
#include <cstring>
#include <functional>
#include <future>
#include <map>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/check.h"
#include "base/errno_status.h"
#include "base/log.h"
#include "ring/event_loop.h"
#include "transport/address.h"
#include "transport/worker.h"
#include "wire/codec.h"

namespace ringxfer::transport {

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
  impl->staging = std::make_unique<memory::Staging>(impl->config.engine.staging_slab_bytes,
                                                    impl->config.engine.staging_slabs);
  impl->inbound = std::move(inbound);
  impl->instance_id = std::random_device{}() | (uint64_t{std::random_device{}()} << 32);
  std::string key_file = impl->config.engine.auth_key_file;
  if (const char* env = std::getenv("RINGXFER_AUTH_KEY_FILE"); key_file.empty() && env != nullptr) {
    key_file = env;
  }
  if (!key_file.empty()) {
    absl::StatusOr<auth::Keyring> keyring = auth::Keyring::load_file(key_file);
    if (!keyring.ok()) {
      return absl::Status(keyring.status().code(),
                          absl::StrCat("auth_key_file: ", keyring.status().message()));
    }
    impl->keyring.emplace(std::move(*keyring));
  } else {
    static std::atomic<bool> said{false};
    if (!said.exchange(true)) {
      RX_LOG(kWarn,
             "peers are not authenticated (no auth_key_file, no RINGXFER_AUTH_KEY_FILE): "
             "anyone who can reach this engine's port can read and write its registered memory");
    }
  }

  absl::StatusOr<int> listening = listen_on(impl->config.engine.host, impl->config.engine.port);
  if (!listening.ok()) {
    return listening.status();
  }
  const int fd = *listening;
  sockaddr_storage bound{};
  socklen_t bound_len = sizeof(bound);
  getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &bound_len);
  impl->port =
      ntohs(bound.ss_family == AF_INET ? reinterpret_cast<sockaddr_in*>(&bound)->sin_port
                                       : reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port);
  impl->listen_fd = fd;

  ring::RingOptions ro;
  ro.entries = impl->config.engine.ring_entries;
  ro.sqpoll = impl->config.engine.sqpoll;
  for (int i = 0; i < impl->config.engine.rings; ++i) {
    impl->workers.push_back(std::make_unique<Worker>(impl.get(), i));
    const int cpu = impl->config.engine.ring_cpus.empty()
                        ? -1
                        : impl->config.engine.ring_cpus[i % impl->config.engine.ring_cpus.size()];
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
    if (impl->config.engine.zerocopy_threshold_bytes > 0 && !f.send_zc) {
      RX_LOG(kInfo, "io_uring: no SEND_ZC on this kernel; zero-copy sends are off");
    }
  }
  Worker* w0 = impl->workers[0].get();
  w0->loop().post([w0, fd] { w0->start_listening(fd); });
  return std::unique_ptr<Transport>(new Transport(std::move(impl)));
}

Transport::~Transport() {
  // 1. Every ring closes its connections and fails its transfers; after this no ring
  //    hands work to another (stopping_ refuses it).
  for (auto& w : impl_->workers) {
    Worker* wp = w.get();
    wp->loop().call([wp] { wp->shutdown(); });
  }
  // 2. Each ring keeps entering the kernel until every operation it submitted, and every
  //    zero-copy notification, has completed; then what is left finishes on that ring
  //    thread. Nothing the kernel still references is released before its CQE.
  constexpr int64_t kDrainTimeoutNs = 10'000'000'000;
  for (auto& w : impl_->workers) {
    Worker* wp = w.get();
    wp->loop().drain_and_stop([wp] { return wp->drained(); }, [wp] { wp->abandon(); },
                              kDrainTimeoutNs);
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

absl::Status Transport::prepare_gpu(int device) {
  absl::StatusOr<std::vector<memory::SlabPool*>> made = impl_->staging->prepare(device);
  if (!made.ok()) {
    return made.status();
  }
  for (memory::SlabPool* pool : *made) {
    // One buffer per pool: its slabs are one allocation.
    const std::vector<memory::Slab>& slabs = pool->slabs();
    add_fixed_buffer(slabs.front().data, pool->slab_bytes() * slabs.size());
  }
  if (!made->empty()) {
    RX_LOG(kInfo, "GPU %d: staging through %d x %d-byte pinned slabs each way (%s)", device,
           made->front()->slabs().size(), made->front()->slab_bytes(),
           impl_->staging->runtime()->describe());
  }
  return absl::OkStatus();
}

std::shared_ptr<memory::GpuRuntime> Transport::gpu_runtime() const {
  return impl_->staging->runtime();
}

void Transport::add_peer(const std::string& key, const sockaddr_storage& addr, socklen_t addr_len) {
  Worker& w = impl_->worker_for(key);
  w.loop().post([&w, key, addr, addr_len] { w.add_peer(key, addr, addr_len); });
}

void Transport::remove_peer(const std::string& key) {
  Worker& w = impl_->worker_for(key);
  w.loop().post([&w, key] { w.remove_peer(key); });
}

bool Transport::on_ring_thread() const {
  return std::ranges::any_of(
      impl_->workers, [](const std::unique_ptr<Worker>& w) { return w->loop().in_loop_thread(); });
}

void Transport::fence(const memory::RegionUse* use, uint64_t id) {
  impl_->on_every_worker([use, id](Worker& w) { w.fence(use, id); });
}

void Transport::start(const std::string& peer_key, wire::OpKind op, uint64_t id,
                      std::vector<Piece> pieces, DoneFn done, uint16_t parts,
                      std::vector<memory::Pin> pins, std::shared_ptr<void> gpu_after) {
  auto o = std::make_shared<OutOp>();
  o->after = gpu_after.get();
  o->after_hold = std::move(gpu_after);
  o->pins = std::move(pins);
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
