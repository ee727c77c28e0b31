// memory::Registry: the regions of local memory an engine has registered, by id, with
// their bounds. Every remote access is resolved here: an id that is not registered,
// or a range that leaves its region, is refused. Thread-safe: registration takes a
// writer lock, lookups a reader lock (std::shared_mutex, which ThreadSanitizer sees;
// Debian's Abseil is built without its annotations). Knows nothing of sockets or frames.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <shared_mutex>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"

namespace ringxfer::memory {

enum class Location : uint8_t { kCpu = 0, kGpu = 1 };

struct Region {
  uint64_t id = 0;
  std::byte* base = nullptr;
  uint64_t size = 0;
  Location location = Location::kCpu;
  int device = -1;
};

class Registry {
 public:
  // Ids start at 1 and are never reused within one registry.
  absl::StatusOr<Region> add(void* base, uint64_t size, Location location, int device);
  // kNotFound when `id` is not registered.
  absl::Status remove(uint64_t id);
  std::optional<Region> find(uint64_t id) const;
  // The address of [offset, offset+length) in region `id`: kNotFound for an unknown id,
  // kOutOfRange when the range leaves the region (overflow included), kInvalidArgument
  // for length 0.
  absl::StatusOr<std::byte*> resolve(uint64_t id, uint64_t offset, uint64_t length) const;
  // As above, but takes the lock only when `id` is not `last`'s id, and then leaves the
  // region found in `last`: the segments of one request mostly share a region. (Like the
  // pointer returned, `last` is a snapshot; deregistering memory that is in use by a
  // transfer is the caller's error either way.)
  absl::StatusOr<std::byte*> resolve(uint64_t id, uint64_t offset, uint64_t length,
                                     std::optional<Region>& last) const;
  size_t size() const;

 private:
  mutable std::shared_mutex mu_;
  absl::flat_hash_map<uint64_t, Region> regions_;  // guarded by mu_
  uint64_t next_id_ = 1;                           // guarded by mu_
};

// True when [offset, offset+length) lies inside [0, size) without wrapping.
constexpr bool range_inside(uint64_t offset, uint64_t length, uint64_t size) noexcept {
  return offset <= size && length <= size - offset;
}

}  // namespace ringxfer::memory
