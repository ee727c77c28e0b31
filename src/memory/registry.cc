#include "memory/registry.h"

#include <chrono>
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
  Region r{next_id_++, static_cast<std::byte*>(base), size, location,
           device,     std::make_shared<RegionUse>()};
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

void RegionUse::acquire() noexcept {
  std::lock_guard lock(mu_);
  ++users_;
}

void RegionUse::release() noexcept {
  std::lock_guard lock(mu_);
  if (--users_ == 0) {
    cv_.notify_all();
  }
}

int64_t RegionUse::users() const noexcept {
  std::lock_guard lock(mu_);
  return users_;
}

bool RegionUse::wait_unused(int64_t timeout_ms) const {
  std::unique_lock lock(mu_);
  return cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms), [&] { return users_ == 0; });
}

absl::StatusOr<Region> Registry::take(uint64_t id) {
  std::unique_lock lock(mu_);
  auto node = regions_.extract(id);
  if (node.empty()) {
    return absl::NotFoundError(absl::StrFormat("memory id %d is not registered", id));
  }
  return std::move(node.mapped());
}

std::optional<std::pair<Region, Pin>> Registry::pin(uint64_t id) const {
  std::shared_lock lock(mu_);
  auto it = regions_.find(id);
  if (it == regions_.end()) {
    return std::nullopt;
  }
  return std::make_pair(it->second, Pin(it->second.use));
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
  std::vector<Pin>* none = nullptr;
  return resolve_impl(id, offset, length, last, none);
}

absl::StatusOr<std::byte*> Registry::resolve(uint64_t id, uint64_t offset, uint64_t length,
                                             std::optional<Region>& last,
                                             std::vector<Pin>& pins) const {
  std::vector<Pin>* p = &pins;
  return resolve_impl(id, offset, length, last, p);
}

absl::StatusOr<std::byte*> Registry::resolve_impl(uint64_t id, uint64_t offset, uint64_t length,
                                                  std::optional<Region>& last,
                                                  std::vector<Pin>* pins) const {
  if (length == 0) {
    return absl::InvalidArgumentError(absl::StrFormat("memory id %d: length is 0", id));
  }
  if (!last.has_value() || last->id != id) {
    std::shared_lock lock(mu_);
    auto it = regions_.find(id);
    if (it == regions_.end()) {
      last.reset();
      return absl::NotFoundError(absl::StrFormat("memory id %d is not registered", id));
    }
    last = it->second;
    if (pins != nullptr) {
      pins->emplace_back(it->second.use);
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
