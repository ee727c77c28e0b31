// memory::Registry: the regions of local memory an engine has registered, by id, with
// their bounds, their keys and their access rights. Every remote access is resolved
// here: a peer must name a region by id and key (the RDMA rkey model), the region's
// rights must admit that peer and that kind of access, and the range must lie inside the
// region. An unknown id and a wrong key are refused alike, and no message meant for a
// peer says how large a region is. Thread-safe: registration takes a writer lock,
// lookups a reader lock (std::shared_mutex, which ThreadSanitizer sees; Debian's Abseil
// is built without its annotations). Knows nothing of sockets or frames.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"

namespace ringxfer::memory {

enum class Location : uint8_t { kCpu = 0, kGpu = 1 };

// How many transfers hold one region. Deregistration waits until none does, so that no
// byte lands in or leaves the region once it returns. Thread-safe.
class RegionUse {
 public:
  void acquire() noexcept;
  void release() noexcept;
  int64_t users() const noexcept;
  // Blocks until users() is 0 or `timeout_ms` passed; returns users() == 0.
  bool wait_unused(int64_t timeout_ms) const;

 private:
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  int64_t users_ = 0;  // guarded by mu_
};

// A transfer's hold on a region (RAII): taken under the registry's lock when the
// region is looked up, so a region being removed is either not found or held.
class Pin {
 public:
  Pin() = default;
  explicit Pin(std::shared_ptr<RegionUse> use) noexcept : use_(std::move(use)) {
    if (use_) {
      use_->acquire();
    }
  }
  Pin(const Pin& o) noexcept : Pin(o.use_) {}
  Pin(Pin&& o) noexcept = default;
  Pin& operator=(Pin o) noexcept {
    std::swap(use_, o.use_);
    return *this;
  }
  ~Pin() {
    if (use_) {
      use_->release();
    }
  }
  const RegionUse* use() const noexcept { return use_.get(); }

 private:
  std::shared_ptr<RegionUse> use_;
};

// What peers may do with a region, fixed at registration.
struct Rights {
  bool remote_read = true;   // peers may read it (their read requests)
  bool remote_write = true;  // peers may write it (their write requests)
  // The engine keys (without a lane-group suffix) admitted; null admits every engine.
  std::shared_ptr<const absl::flat_hash_set<std::string>> allowed_engines;
};

// How a peer uses a region: a read request reads it, a write request writes it.
enum class AccessKind : uint8_t { kRead = 0, kWrite = 1 };

// Who asks for a region and for what: the peer's engine key as the transport knows it
// (the base key, without a lane-group suffix) and the kind of access.
struct Requester {
  std::string_view engine;
  AccessKind kind = AccessKind::kRead;
};

// The one answer to a peer that names an id no region has, or a region's id with
// another key: the same code and text, so a peer cannot tell which ids exist.
inline constexpr char kNoSuchRegion[] = "no registered memory matches this id and key";

struct Region {
  uint64_t id = 0;
  uint64_t key = 0;  // random, never 0; a peer must name it with the id
  std::byte* base = nullptr;
  uint64_t size = 0;
  Location location = Location::kCpu;
  int device = -1;
  Rights rights;
  std::shared_ptr<RegionUse> use;  // the transfers holding it
};

class Registry {
 public:
  // Ids start at 1 and are never reused within one registry. Each region gets a fresh
  // key from the kernel's CSPRNG (base::random_u64), so registering the same memory
  // again gives another id and another key.
  absl::StatusOr<Region> add(void* base, uint64_t size, Location location, int device,
                             Rights rights = {});
  // kNotFound when `id` is not registered.
  absl::Status remove(uint64_t id);
  // Removes region `id` and returns it (its `use` tells who still holds it).
  absl::StatusOr<Region> take(uint64_t id);
  // The region, held by the returned pin; nullopt when not registered. (Local use: no
  // key is needed.)
  std::optional<std::pair<Region, Pin>> pin(uint64_t id) const;
  std::optional<Region> find(uint64_t id) const;
  // The address of [offset, offset+length) in region `id` for `who`, a peer that names
  // the region's `key`. Checked in this order, and the first failure is returned:
  //   kInvalidArgument   length 0;
  //   kNotFound          no region has both this id and this key (kNoSuchRegion, the
  //                      same code and text for an unknown id and a wrong key);
  //   kPermissionDenied  the region's rights refuse `who` this kind of access;
  //   kOutOfRange        the range leaves the region (overflow included).
  // Every message may go to the peer as it is: none names the region's size or id.
  absl::StatusOr<std::byte*> resolve(const Requester& who, uint64_t id, uint64_t key,
                                     uint64_t offset, uint64_t length) const;
  // As above, but takes the lock only when `id` is not `last`'s id, and then leaves the
  // region found in `last`: the segments of one request mostly share a region. (Like the
  // pointer returned, `last` is a snapshot: the pinning form below keeps it valid.) The
  // key and the rights are checked on every call, `last` or not.
  absl::StatusOr<std::byte*> resolve(const Requester& who, uint64_t id, uint64_t key,
                                     uint64_t offset, uint64_t length,
                                     std::optional<Region>& last) const;
  // As above, and each region looked up is pinned into `pins` under the lock.
  absl::StatusOr<std::byte*> resolve(const Requester& who, uint64_t id, uint64_t key,
                                     uint64_t offset, uint64_t length, std::optional<Region>& last,
                                     std::vector<Pin>& pins) const;
  size_t size() const;

 private:
  absl::StatusOr<std::byte*> resolve_impl(const Requester& who, uint64_t id, uint64_t key,
                                          uint64_t offset, uint64_t length,
                                          std::optional<Region>& last,
                                          std::vector<Pin>* pins) const;
  mutable std::shared_mutex mu_;
  absl::flat_hash_map<uint64_t, Region> regions_;  // guarded by mu_
  uint64_t next_id_ = 1;                           // guarded by mu_
};

// True when [offset, offset+length) lies inside [0, size) without wrapping.
constexpr bool range_inside(uint64_t offset, uint64_t length, uint64_t size) noexcept {
  return offset <= size && length <= size - offset;
}

}  // namespace ringxfer::memory
