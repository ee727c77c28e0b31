#include "memory/staging.h"

#include <sys/mman.h>

#include <utility>

#include "absl/strings/str_format.h"
#include "base/check.h"

namespace ringxfer::memory {

absl::StatusOr<std::unique_ptr<SlabPool>> SlabPool::create(std::shared_ptr<GpuRuntime> runtime,
                                                           int device, StageDirection direction,
                                                           size_t slab_bytes, int count) {
  if (slab_bytes == 0 || count <= 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "staging slabs: %d slabs of %d bytes: both must be positive", count, slab_bytes));
  }
  std::unique_ptr<SlabPool> pool(new SlabPool());
  pool->runtime_ = std::move(runtime);
  pool->device_ = device;
  pool->direction_ = direction;
  pool->slab_bytes_ = slab_bytes;
  const GpuApi& api = pool->runtime_->api();
  // The calling thread is the application's: its current device is put back.
  int current = -1;
  if (api.get_device(&current) != gpu_abi::kSuccess) {
    api.get_last_error();
    current = -1;
  }
  struct Restore {
    const GpuApi& api;
    int device;
    ~Restore() {
      if (device >= 0) {
        api.set_device(device);
      }
    }
  } restore{api, current};
  if (GpuError e = api.set_device(device); e != gpu_abi::kSuccess) {
    return pool->runtime_->error(absl::StrFormat("set_device(%d)", device).c_str(), e);
  }
  // One allocation for the pool: one fixed buffer per ring covers every slab.
  const size_t total = slab_bytes * static_cast<size_t>(count);
  void* base = nullptr;
  GpuError e = api.host_alloc(&base, total, gpu_abi::kHostAllocPortable);
  if (e != gpu_abi::kSuccess || base == nullptr) {
    api.get_last_error();
    // Some runtimes refuse large pinned allocations; pin pages of our own instead.
    void* m = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) {
      return absl::ResourceExhaustedError(
          absl::StrFormat("staging slabs: cannot map %d bytes", total));
    }
    GpuError r = api.host_register(m, total, gpu_abi::kHostRegisterPortable);
    if (r != gpu_abi::kSuccess) {
      munmap(m, total);
      return pool->runtime_->error(
          absl::StrFormat("host_alloc(%d bytes) and host_register of mapped pages", total).c_str(),
          r);
    }
    base = m;
    pool->mapped_ = true;
  }
  for (int i = 0; i < count; ++i) {
    pool->slabs_.push_back(Slab{static_cast<std::byte*>(base) + slab_bytes * static_cast<size_t>(i),
                                slab_bytes, static_cast<uint32_t>(i)});
    pool->free_.push_back(static_cast<uint32_t>(count - 1 - i));
  }
  return pool;
}

SlabPool::~SlabPool() {
  if (slabs_.empty()) {
    return;
  }
  RX_CHECK_MSG(free_.size() == slabs_.size(), "a staging pool freed with slabs in use");
  void* base = slabs_.front().data;
  const GpuApi& api = runtime_->api();
  if (mapped_) {
    api.host_unregister(base);
    munmap(base, slab_bytes_ * slabs_.size());
  } else {
    api.free_host(base);
  }
}

Slab* SlabPool::acquire_or_wait(uint64_t owner, Waiter waiter) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!free_.empty() && waiters_.empty()) {
    const uint32_t i = free_.back();
    free_.pop_back();
    return &slabs_[i];
  }
  waiters_.push_back(Wait{owner, std::move(waiter)});
  return nullptr;
}

void SlabPool::release(Slab* slab) {
  Waiter next;
  {
    std::lock_guard<std::mutex> lock(mu_);
    RX_CHECK_MSG(slab != nullptr && slab->index < slabs_.size() && &slabs_[slab->index] == slab,
                 "a slab released to a pool it is not from");
    if (waiters_.empty()) {
      free_.push_back(slab->index);
      return;
    }
    next = std::move(waiters_.front().fn);
    waiters_.pop_front();
  }
  std::move(next)(slab);
}

void SlabPool::cancel_waiters(uint64_t owner) {
  std::deque<Wait> dropped;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = waiters_.begin(); it != waiters_.end();) {
      if (it->owner == owner) {
        dropped.push_back(std::move(*it));
        it = waiters_.erase(it);
      } else {
        ++it;
      }
    }
  }
  // Their functions are destroyed outside the lock.
}

size_t SlabPool::free_count() const {
  std::lock_guard<std::mutex> lock(mu_);
  return free_.size();
}

size_t SlabPool::waiting() const {
  std::lock_guard<std::mutex> lock(mu_);
  return waiters_.size();
}

absl::StatusOr<std::vector<SlabPool*>> Staging::prepare(int device) {
  std::shared_ptr<GpuRuntime> rt;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!runtime_) {
      absl::StatusOr<std::shared_ptr<GpuRuntime>> found = GpuRuntime::find();
      if (!found.ok()) {
        return found.status();
      }
      runtime_ = *found;
    }
    rt = runtime_;
    if (to_host_.contains(device)) {
      return std::vector<SlabPool*>{};
    }
  }
  // The pinned allocations are made outside the lock: ring threads look pools up under it
  // while they stage frames.
  int count = 0;
  if (GpuError e = rt->api().get_device_count(&count); e != gpu_abi::kSuccess) {
    rt->api().get_last_error();
    return rt->error("get_device_count", e);
  }
  if (device < 0 || device >= count) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "GPU device %d does not exist: %s sees %d device(s)", device, rt->describe(), count));
  }
  absl::StatusOr<std::unique_ptr<SlabPool>> up =
      SlabPool::create(rt, device, StageDirection::kToHost, slab_bytes_, slabs_);
  if (!up.ok()) {
    return up.status();
  }
  absl::StatusOr<std::unique_ptr<SlabPool>> down =
      SlabPool::create(rt, device, StageDirection::kToDevice, slab_bytes_, slabs_);
  if (!down.ok()) {
    return down.status();
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (to_host_.contains(device)) {
    return std::vector<SlabPool*>{};  // another thread made them meanwhile; ours go
  }
  std::vector<SlabPool*> made = {up->get(), down->get()};
  to_host_.emplace(device, std::move(*up));
  to_device_.emplace(device, std::move(*down));
  return made;
}

void Staging::cancel_waiters(uint64_t owner) {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto* pools : {&to_host_, &to_device_}) {
    for (auto& [device, pool] : *pools) {
      pool->cancel_waiters(owner);
    }
  }
}

std::shared_ptr<GpuRuntime> Staging::runtime() const {
  std::lock_guard<std::mutex> lock(mu_);
  return runtime_;
}

SlabPool* Staging::pool(int device, StageDirection direction) const {
  std::lock_guard<std::mutex> lock(mu_);
  const auto& pools = direction == StageDirection::kToHost ? to_host_ : to_device_;
  auto it = pools.find(device);
  return it == pools.end() ? nullptr : it->second.get();
}

// ---------------------------------------------------------------------------

struct GpuCopier::Batch {
  GpuCopier* copier = nullptr;
  GpuEvent event = nullptr;
  absl::Status status;  // a failure while queueing
  Done done;
};

GpuCopier::GpuCopier(std::shared_ptr<GpuRuntime> runtime, Post post)
    : runtime_(std::move(runtime)), post_(std::move(post)) {}

GpuCopier::~GpuCopier() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    closing_ = true;
  }
  synchronize();
  const GpuApi& api = runtime_->api();
  for (Batch* b : orphans_) {
    if (b->event != nullptr) {
      events_.push_back(b->event);
    }
    delete b;
  }
  for (auto& [device, s] : streams_) {
    api.set_device(device);
    for (GpuStream st : s.stream) {
      if (st != nullptr) {
        api.stream_destroy(st);
      }
    }
  }
  for (GpuEvent ev : events_) {
    api.event_destroy(ev);
  }
}

void GpuCopier::synchronize() {
  const GpuApi& api = runtime_->api();
  for (auto& [device, s] : streams_) {
    api.set_device(device);
    for (GpuStream st : s.stream) {
      if (st != nullptr) {
        api.stream_synchronize(st);
      }
    }
  }
}

absl::StatusOr<GpuStream> GpuCopier::stream_for(int device, StageDirection direction) {
  Streams& s = streams_[device];
  GpuStream& st = s.stream[direction == StageDirection::kToHost ? 0 : 1];
  if (st == nullptr) {
    const GpuError e = runtime_->api().stream_create_with_flags(&st, gpu_abi::kStreamNonBlocking);
    if (e != gpu_abi::kSuccess) {
      st = nullptr;
      return runtime_->error("stream_create_with_flags", e);
    }
  }
  return st;
}

absl::StatusOr<GpuEvent> GpuCopier::take_event() {
  if (!events_.empty()) {
    GpuEvent ev = events_.back();
    events_.pop_back();
    return ev;
  }
  GpuEvent ev = nullptr;
  const GpuError e = runtime_->api().event_create_with_flags(&ev, gpu_abi::kEventDisableTiming);
  if (e != gpu_abi::kSuccess) {
    return runtime_->error("event_create_with_flags", e);
  }
  return ev;
}

void GpuCopier::copy(int device, StageDirection direction, std::span<const CopyRange> ranges,
                     GpuEvent after, Done done) {
  const GpuApi& api = runtime_->api();
  auto* b = new Batch{this, nullptr, absl::OkStatus(), std::move(done)};
  ++inflight_;
  GpuStream stream = nullptr;
  auto queue = [&]() -> absl::Status {
    if (GpuError e = api.set_device(device); e != gpu_abi::kSuccess) {
      return runtime_->error(absl::StrFormat("set_device(%d)", device).c_str(), e);
    }
    absl::StatusOr<GpuStream> s = stream_for(device, direction);
    if (!s.ok()) {
      return s.status();
    }
    stream = *s;
    if (after != nullptr) {
      // The producer's work queued before the transfer started comes first.
      if (GpuError e = api.stream_wait_event(stream, after, 0); e != gpu_abi::kSuccess) {
        return runtime_->error("stream_wait_event on the caller's event", e);
      }
    }
    const int kind = direction == StageDirection::kToHost ? gpu_abi::kMemcpyDeviceToHost
                                                          : gpu_abi::kMemcpyHostToDevice;
    for (const CopyRange& r : ranges) {
      const GpuError e = api.memcpy_async(r.dst, r.src, r.bytes, kind, stream);
      if (e != gpu_abi::kSuccess) {
        return runtime_->error(direction == StageDirection::kToHost
                                   ? "memcpy_async (device to host)"
                                   : "memcpy_async (host to device)",
                               e);
      }
    }
    absl::StatusOr<GpuEvent> ev = take_event();
    if (!ev.ok()) {
      return ev.status();
    }
    b->event = *ev;
    if (GpuError e = api.event_record(b->event, stream); e != gpu_abi::kSuccess) {
      return runtime_->error("event_record", e);
    }
    const GpuError e =
        api.launch_host_func != nullptr
            ? api.launch_host_func(stream, &GpuCopier::host_fn, b)
            : api.stream_add_callback(
                  stream, [](GpuStream, GpuError, void* p) { GpuCopier::host_fn(p); }, b, 0);
    if (e != gpu_abi::kSuccess) {
      return runtime_->error("launch_host_func", e);
    }
    return absl::OkStatus();
  };
  b->status = queue();
  if (!b->status.ok()) {
    api.get_last_error();
    // Whatever was queued before the failure still runs into the slab: wait for it,
    // then report from the owner's thread like any batch.
    if (stream != nullptr) {
      api.stream_synchronize(stream);
    }
    post_([owned = std::unique_ptr<Batch>(b)]() mutable {
      Batch* raw = owned.release();
      raw->copier->finish(raw);
    });
  }
}

void GpuCopier::host_fn(void* p) {
  // On the runtime's thread: no runtime call here.
  auto* b = static_cast<Batch*>(p);
  GpuCopier* c = b->copier;
  {
    std::lock_guard<std::mutex> lock(c->mu_);
    if (c->closing_) {
      // Teardown: nobody waits for it any more; the destructor frees it.
      c->orphans_.push_back(b);
      return;
    }
  }
  // A task dropped without running (its thread stopped) still frees the batch.
  c->post_([owned = std::unique_ptr<Batch>(b)]() mutable {
    Batch* raw = owned.release();
    raw->copier->finish(raw);
  });
}

void GpuCopier::finish(Batch* b) {
  --inflight_;
  absl::Status st = b->status;
  if (b->event != nullptr) {
    if (st.ok()) {
      // The host function ran after the event in stream order: it is complete, with
      // the result of every copy before it.
      const GpuError e = runtime_->api().event_query(b->event);
      if (e != gpu_abi::kSuccess) {
        runtime_->api().get_last_error();
        st = runtime_->error("an asynchronous copy", e);
      }
    }
    events_.push_back(b->event);
  }
  Done done = std::move(b->done);
  delete b;
  std::move(done)(std::move(st));
}

}  // namespace ringxfer::memory
