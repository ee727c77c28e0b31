// memory::SlabPool and memory::GpuCopier: the staging of GPU memory through pinned host
// slabs. A SlabPool holds the pinned slabs of one device and direction (allocated by
// the runtime, or mapped and host-registered where that fails), hands them out first
// come, first served, and hands a released slab straight to the oldest waiter, so that
// many transfers waiting for slabs cannot starve or deadlock one another: a slab is
// granted only after every earlier request. A GpuCopier belongs to one ring thread: it
// queues asynchronous copies between slabs and device memory on its own streams and
// tells that thread when each batch of copies finished, through a host function that
// only posts a task (it never calls the runtime). Knows nothing of rings, sockets or
// transfers: the thread hand-over is a function it is given.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "memory/gpu_runtime.h"

namespace ringxfer::memory {

enum class StageDirection : uint8_t {
  kToHost,    // device -> slab (sending from GPU memory)
  kToDevice,  // slab -> device (receiving into GPU memory)
};

struct Slab {
  std::byte* data = nullptr;
  size_t bytes = 0;
  uint32_t index = 0;  // within its pool
};

class SlabPool {
 public:
  // Allocates `count` slabs of `slab_bytes` on `device`: pinned by the runtime
  // (portable), else mmap'ed and host-registered. kInternal names the call that failed.
  static absl::StatusOr<std::unique_ptr<SlabPool>> create(std::shared_ptr<GpuRuntime> runtime,
                                                          int device, StageDirection direction,
                                                          size_t slab_bytes, int count);
  ~SlabPool();  // every slab must be back
  SlabPool(const SlabPool&) = delete;
  SlabPool& operator=(const SlabPool&) = delete;

  // Called with a granted slab on the thread that released it, outside the pool's lock.
  using Waiter = absl::AnyInvocable<void(Slab*) &&>;
  // Thread-safe. A free slab when one is free and nobody waits; else `waiter` is queued
  // (tagged `owner`) and null is returned.
  Slab* acquire_or_wait(uint64_t owner, Waiter waiter);
  // Thread-safe: the slab goes to the oldest waiter, or back to the free list.
  void release(Slab* slab);
  // Thread-safe: forgets the waiters of `owner` (a ring thread that stops).
  void cancel_waiters(uint64_t owner);

  int device() const noexcept { return device_; }
  StageDirection direction() const noexcept { return direction_; }
  size_t slab_bytes() const noexcept { return slab_bytes_; }
  const std::vector<Slab>& slabs() const noexcept { return slabs_; }
  size_t free_count() const;
  size_t waiting() const;

 private:
  SlabPool() = default;
  std::shared_ptr<GpuRuntime> runtime_;
  int device_ = 0;
  StageDirection direction_ = StageDirection::kToHost;
  size_t slab_bytes_ = 0;
  bool mapped_ = false;  // mmap + host_register instead of host_alloc
  std::vector<Slab> slabs_;
  mutable std::mutex mu_;
  std::vector<uint32_t> free_;  // guarded by mu_
  struct Wait {
    uint64_t owner;
    Waiter fn;
  };
  std::deque<Wait> waiters_;  // guarded by mu_
};

// One range of a copy batch: `bytes` from `src` to `dst`.
struct CopyRange {
  void* dst = nullptr;
  const void* src = nullptr;
  size_t bytes = 0;
};

class GpuCopier {
 public:
  // How a finished batch reaches the owner's thread: `post(task)` runs task there soon.
  // It is called from the runtime's thread and must not block for long.
  using Post = absl::AnyInvocable<void(absl::AnyInvocable<void() &&>)>;
  using Done = absl::AnyInvocable<void(absl::Status) &&>;

  GpuCopier(std::shared_ptr<GpuRuntime> runtime, Post post);
  // Waits for every batch in flight (their `done` is not called), then frees the
  // streams and events.
  ~GpuCopier();
  GpuCopier(const GpuCopier&) = delete;
  GpuCopier& operator=(const GpuCopier&) = delete;

  // Owner's thread. Queues the copies of `ranges` on `device`'s stream for `direction`;
  // `after`, if set, is an event (recorded on a caller's stream) that must complete
  // first: the producer's work queued before it.
  // `done(status)` runs later on the owner's thread (through post), once every copy
  // finished: OK, or the runtime's error (a kInternal status naming the call) for the
  // batch. Never calls `done` before it returns.
  void copy(int device, StageDirection direction, std::span<const CopyRange> ranges, GpuEvent after,
            Done done);
  // Batches queued and not yet done (owner's thread).
  int inflight() const noexcept { return inflight_; }
  // Blocks until every stream is idle (teardown).
  void synchronize();

  const GpuRuntime& runtime() const noexcept { return *runtime_; }

 private:
  struct Batch;
  struct Streams {
    GpuStream stream[2] = {nullptr, nullptr};
  };
  static void host_fn(void* batch);
  absl::StatusOr<GpuStream> stream_for(int device, StageDirection direction);
  absl::StatusOr<GpuEvent> take_event();
  void finish(Batch* b);

  std::shared_ptr<GpuRuntime> runtime_;
  Post post_;
  absl::flat_hash_map<int, Streams> streams_;
  std::vector<GpuEvent> events_;  // free events
  int inflight_ = 0;
  // Shared with host functions.
  std::mutex mu_;
  bool closing_ = false;         // guarded by mu_: host functions post nothing more
  std::vector<Batch*> orphans_;  // guarded by mu_: batches that ended during teardown
};

// An engine's staging: the runtime and, per device used, a pool each way. Pools are
// made when GPU memory of a device is first registered and live as long as this.
class Staging {
 public:
  Staging(size_t slab_bytes, int slabs) : slab_bytes_(slab_bytes), slabs_(slabs) {}
  // Thread-safe and idempotent: finds the runtime (GpuRuntime::find) and makes
  // `device`'s two pools. Returns the pools made now (empty when they existed), for
  // their memory to be registered with the rings.
  absl::StatusOr<std::vector<SlabPool*>> prepare(int device);
  // Thread-safe: the runtime, null before the first prepare().
  std::shared_ptr<GpuRuntime> runtime() const;
  // Thread-safe: `device`'s pool, null when not prepared.
  SlabPool* pool(int device, StageDirection direction) const;
  size_t slab_bytes() const noexcept { return slab_bytes_; }
  // Thread-safe: SlabPool::cancel_waiters on every pool.
  void cancel_waiters(uint64_t owner);

 private:
  const size_t slab_bytes_;
  const int slabs_;
  mutable std::mutex mu_;
  std::shared_ptr<GpuRuntime> runtime_;  // guarded by mu_
  // guarded by mu_; [device][direction]
  absl::flat_hash_map<int, std::unique_ptr<SlabPool>> to_host_, to_device_;
};

}  // namespace ringxfer::memory
