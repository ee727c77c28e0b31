// detail::EngineImpl: the state behind ringxfer::Engine (descriptors, registry, remote
// engines, transfers in flight, inbound statuses, the transport) and the transfer path
// of the facade. Private to src/engine: engine.cc (the public methods) and fork.cc (what
// a child made by fork() does with the engines it inherited).
#pragma once

#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <deque>
#include <limits>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_format.h"
#include "base/log.h"
#include "base/status_macros.h"
#include "engine/inbound_store.h"
#include "memory/registry.h"
#include "ringxfer/engine.h"
#include "transport/transport.h"
#include "wire/limits.h"

namespace ringxfer::detail {

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

  std::mutex inbound_mu;
  std::unique_ptr<InboundStore> inbound;  // guarded by inbound_mu; bounded in total

  int groups() const { return config.rings; }

  // Declared last: destroyed first, while everything it calls back into still exists.
  std::unique_ptr<transport::Transport> transport;

  void record_inbound(const std::string& transport_key, uint64_t id, absl::Status st,
                      uint16_t parts) {
    const std::string peer(transport::split_lane_key(transport_key).base);
    const int64_t now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                            std::chrono::steady_clock::now().time_since_epoch())
                            .count();
    std::lock_guard lock(inbound_mu);
    inbound->record(peer, id, std::move(st), parts, now);
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
        out[part].push_back(transport::Piece{pc.local + off, pc.remote_id, pc.remote_key,
                                             pc.remote_offset + off, len, pc.device});
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
  // An event recorded on `stream` (device `device`), destroyed with the returned hold.
  absl::StatusOr<std::shared_ptr<void>> record_gpu_event(int device, void* stream) {
    std::shared_ptr<memory::GpuRuntime> rt = transport->gpu_runtime();
    if (!rt) {
      return absl::FailedPreconditionError("no GPU runtime is loaded");
    }
    const memory::GpuApi& api = rt->api();
    int current = -1;
    if (api.get_device(&current) != memory::gpu_abi::kSuccess) {
      api.get_last_error();
      current = -1;
    }
    memory::GpuEvent ev = nullptr;
    memory::GpuError e = api.set_device(device);
    if (e == memory::gpu_abi::kSuccess) {
      e = api.event_create_with_flags(&ev, memory::gpu_abi::kEventDisableTiming);
    }
    if (e == memory::gpu_abi::kSuccess) {
      e = api.event_record(ev, stream);
    }
    if (current >= 0) {
      api.set_device(current);  // the caller's current device is put back
    }
    if (e != memory::gpu_abi::kSuccess) {
      api.get_last_error();
      if (ev != nullptr) {
        api.event_destroy(ev);
      }
      return rt->error("recording an event on the caller's GPU stream (set_gpu_stream)", e);
    }
    return std::shared_ptr<void>(ev, [rt](void* p) { rt->api().event_destroy(p); });
  }

  // `device` (if given) is set to the local region's GPU, or -1 for host memory.
  absl::Status check_pair(const MemoryDesc& local, const MemoryDesc& remote,
                          std::optional<memory::Pin>* pin = nullptr, int16_t* device = nullptr) {
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
    if (r->size != local.size || reinterpret_cast<uint64_t>(r->base) != local.address ||
        r->key != local.rkey) {
      return absl::InvalidArgumentError(
          absl::StrFormat("local memory descriptor %d does not match its registration", local.id));
    }
    if (r->location != static_cast<memory::Location>(local.location) ||
        (r->location == memory::Location::kGpu && r->device != local.device_id)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "local memory descriptor %d does not match its registration (location or device)",
          local.id));
    }
    if (device != nullptr) {
      *device = r->location == memory::Location::kGpu ? static_cast<int16_t>(r->device) : -1;
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
    if (sizes.empty()) {
      return absl::InvalidArgumentError(absl::StrFormat("%s: a batch of no transfers", verb));
    }
    std::optional<memory::Pin> pin;
    int16_t device = -1;
    if (absl::Status st = check_pair(local, remote, &pin, &device); !st.ok()) {
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
                           remote.id, remote.rkey, remote_offsets[i], n, device});
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
    // A request carries at most wire::kSegmentsMax pieces: a larger batch goes as
    // several requests with the same id, each to the lane group of its part. Only such
    // a batch pays for the regrouping; part_groups stays empty otherwise.
    std::vector<int> part_groups;
    const bool oversized = std::any_of(
        parts.begin(), parts.end(),
        [](const std::vector<transport::Piece>& p) { return p.size() > wire::kSegmentsMax; });
    if (oversized) {
      std::vector<std::vector<transport::Piece>> requests;
      for (size_t i = 0; i < parts.size(); ++i) {
        const int group = split ? static_cast<int>(i) : static_cast<int>(id % g);
        const std::vector<transport::Piece>& part = parts[i];
        for (size_t at = 0; at < part.size(); at += wire::kSegmentsMax) {
          const size_t end = std::min(part.size(), at + size_t{wire::kSegmentsMax});
          requests.emplace_back(part.begin() + static_cast<ptrdiff_t>(at),
                                part.begin() + static_cast<ptrdiff_t>(end));
          part_groups.push_back(group);
        }
      }
      if (requests.size() > std::numeric_limits<uint16_t>::max()) {
        std::lock_guard lock(mu);
        inflight.erase(std::make_pair(remote.engine_key, id));
        return absl::InvalidArgumentError(
            absl::StrFormat("%s: %d transfers in one batch is over the limit of %d", verb,
                            sizes.size(), uint64_t{wire::kSegmentsMax} * 65535));
      }
      parts = std::move(requests);
    }
    struct Join {
      std::atomic<int> left{0};
      std::mutex mu;
      absl::Status first_error;
    };
    // The producer's stream: an event recorded now orders the transfer's copies.
    std::shared_ptr<void> gpu_after;
    if (device >= 0 && Engine::gpu_stream() != nullptr) {
      absl::StatusOr<std::shared_ptr<void>> ev = record_gpu_event(device, Engine::gpu_stream());
      if (!ev.ok()) {
        std::lock_guard lock(mu);
        inflight.erase(std::make_pair(remote.engine_key, id));
        return ev.status();
      }
      gpu_after = std::move(*ev);
    }
    auto join = std::make_shared<Join>();
    join->left = static_cast<int>(parts.size());
    const uint16_t nparts = parts.size() > 1 ? static_cast<uint16_t>(parts.size()) : 0;
    for (size_t i = 0; i < parts.size(); ++i) {
      const int group = oversized ? part_groups[i]
                        : split   ? static_cast<int>(i)
                                  : static_cast<int>(id % g);
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
          nparts, std::vector<memory::Pin>{*pin}, gpu_after);
    }
    return status;
  }
};

// Every live engine is tracked for the fork handlers (fork.cc).
void track(EngineImpl* e);
void untrack(EngineImpl* e);

}  // namespace ringxfer::detail
