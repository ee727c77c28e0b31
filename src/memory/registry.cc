#include "memory/registry.h"

#include <chrono>
#include <mutex>

#include "absl/strings/str_format.h"
#include "base/random.h"

namespace ringxfer::memory {

absl::StatusOr<Region> Registry::add(void* base, uint64_t size, Location location, int device,
                                     Rights rights) {
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
  Region r;
  r.key = base::random_u64();  // outside the lock: it may block in early boot
  r.base = static_cast<std::byte*>(base);
  r.size = size;
  r.location = location;
  r.device = device;
  if (rights.allowed_engines != nullptr && rights.allowed_engines->empty()) {
    rights.allowed_engines = nullptr;  // an empty list admits everyone, as no list does
  }
  r.rights = std::move(rights);
  r.use = std::make_shared<RegionUse>();
  std::unique_lock lock(mu_);
  r.id = next_id_++;
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

namespace {

// Whether a region that `who` named with its key lets `who` in.
absl::Status admit(const Region& r, const Requester& who) {
  const bool write = who.kind == AccessKind::kWrite;
  if (write ? !r.rights.remote_write : !r.rights.remote_read) {
    return absl::PermissionDeniedError(write ? "this memory does not allow remote writes"
                                             : "this memory does not allow remote reads");
  }
  if (r.rights.allowed_engines != nullptr && !r.rights.allowed_engines->contains(absl::string_view(
                                                 who.engine.data(), who.engine.size()))) {
    return absl::PermissionDeniedError(
        absl::StrFormat("this memory does not admit engine %s", who.engine));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::byte*> Registry::resolve(const Requester& who, uint64_t id, uint64_t key,
                                             uint64_t offset, uint64_t length) const {
  std::optional<Region> last;
  return resolve(who, id, key, offset, length, last);
}

absl::StatusOr<std::byte*> Registry::resolve(const Requester& who, uint64_t id, uint64_t key,
                                             uint64_t offset, uint64_t length,
                                             std::optional<Region>& last) const {
  return resolve_impl(who, id, key, offset, length, last, nullptr);
}

absl::StatusOr<std::byte*> Registry::resolve(const Requester& who, uint64_t id, uint64_t key,
                                             uint64_t offset, uint64_t length,
                                             std::optional<Region>& last,
                                             std::vector<Pin>& pins) const {
  return resolve_impl(who, id, key, offset, length, last, &pins);
}

// The messages here go to the peer that asked: they say what the peer sent and what
// was refused, never the size of a region, nor whether an id exists under another key.
absl::StatusOr<std::byte*> Registry::resolve_impl(const Requester& who, uint64_t id, uint64_t key,
                                                  uint64_t offset, uint64_t length,
                                                  std::optional<Region>& last,
                                                  std::vector<Pin>* pins) const {
  if (length == 0) {
    return absl::InvalidArgumentError("a segment's length is 0");
  }
  if (last.has_value() && last->id == id) {
    if (last->key != key) {
      return absl::NotFoundError(kNoSuchRegion);
    }
    if (absl::Status st = admit(*last, who); !st.ok()) {
      return st;
    }
  } else {
    std::shared_lock lock(mu_);
    auto it = regions_.find(id);
    if (it == regions_.end() || it->second.key != key) {
      last.reset();
      return absl::NotFoundError(kNoSuchRegion);
    }
    if (absl::Status st = admit(it->second, who); !st.ok()) {
      last.reset();
      return st;
    }
    last = it->second;
    if (pins != nullptr) {
      pins->emplace_back(it->second.use);
    }
  }
  if (!range_inside(offset, length, last->size)) {
    return absl::OutOfRangeError(absl::StrFormat(
        "offset %d + length %d is out of range of the memory named", offset, length));
  }
  return last->base + offset;
}

size_t Registry::size() const {
  std::shared_lock lock(mu_);
  return regions_.size();
}

}  // namespace ringxfer::memory
