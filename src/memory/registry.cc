#include "memory/registry.h"

#include <mutex>

#include "absl/strings/str_format.h"

namespace ringxfer::memory {

absl::StatusOr<Region> Registry::add(void* base, uint64_t size, Location location, int device) {
  if (base == nullptr) {
    return absl::InvalidArgumentError("register_memory: ptr is null");
  }
  if (size == 0) {
    return absl::InvalidArgumentError("register_memory: size is 0");
  }
  if (reinterpret_cast<uintptr_t>(base) + size < reinterpret_cast<uintptr_t>(base)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("register_memory: ptr %p + size %d wraps the address space", base, size));
  }
  std::unique_lock lock(mu_);
  Region r{next_id_++, static_cast<std::byte*>(base), size, location, device};
  regions_.emplace(r.id, r);
  return r;
}

absl::Status Registry::remove(uint64_t id) {
  std::unique_lock lock(mu_);
  if (regions_.erase(id) == 0) {
    return absl::NotFoundError(absl::StrFormat("memory id %d is not registered", id));
  }
  return absl::OkStatus();
}

std::optional<Region> Registry::find(uint64_t id) const {
  std::shared_lock lock(mu_);
  auto it = regions_.find(id);
  if (it == regions_.end()) {
    return std::nullopt;
  }
  return it->second;
}

absl::StatusOr<std::byte*> Registry::resolve(uint64_t id, uint64_t offset, uint64_t length) const {
  std::optional<Region> last;
  return resolve(id, offset, length, last);
}

absl::StatusOr<std::byte*> Registry::resolve(uint64_t id, uint64_t offset, uint64_t length,
                                             std::optional<Region>& last) const {
  if (length == 0) {
    return absl::InvalidArgumentError(absl::StrFormat("memory id %d: length is 0", id));
  }
  if (!last.has_value() || last->id != id) {
    last = find(id);
    if (!last.has_value()) {
      return absl::NotFoundError(absl::StrFormat("memory id %d is not registered", id));
    }
  }
  if (!range_inside(offset, length, last->size)) {
    return absl::OutOfRangeError(
        absl::StrFormat("memory id %d: offset %d + length %d is beyond its size %d", id, offset,
                        length, last->size));
  }
  return last->base + offset;
}

size_t Registry::size() const {
  std::shared_lock lock(mu_);
  return regions_.size();
}

}  // namespace ringxfer::memory
