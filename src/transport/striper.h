// transport::Striper: how a transfer's payload is cut into data frames and spread over
// lanes (data connections), without I/O. Below the inline limit the whole payload is
// one batch frame on the control connection, right behind its request. Above it, a
// segment smaller than a chunk travels with its neighbours in a batch frame of up to a
// chunk's worth (one entry: a plain data frame), a larger one is cut into chunk-sized
// data frames, and frames go round-robin over the lanes. The chunk adapts to the
// transfer: about kChunksPerLane frames per lane, never below the configured chunk nor
// above kChunkBytesMax (or the configured chunk, if larger). Pure: knows entries and
// lengths, not sockets or frames' bytes.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "wire/frames.h"
#include "wire/limits.h"

namespace ringxfer::transport::detail {

inline constexpr uint64_t kChunksPerLane = 2;
inline constexpr uint64_t kChunkBytesMax = 64 << 20;

struct StripeParams {
  uint64_t inline_limit = 0;  // below this many bytes: one inline batch
  uint64_t chunk_bytes = 0;   // the smallest chunk (EngineConfig::chunk_bytes)
  uint64_t chunk_max = 0;     // when set, no frame is larger (a GPU transfer: one slab)
};

enum class FrameKind : uint8_t {
  kInline,  // a batch frame on the control connection (every segment, whole)
  kData,    // one data frame: entries[0] (segment, length, offset)
  kBatch,   // a batch frame on a lane: whole small segments
};

// True when the payload travels inline.
inline bool stripe_inline(uint64_t total, const StripeParams& p) { return total < p.inline_limit; }

// The chunk size for `total` bytes over `lanes` lanes.
inline uint64_t stripe_chunk(uint64_t total, size_t lanes, const StripeParams& p) {
  const uint64_t per_lane = total / (std::max<size_t>(lanes, 1) * kChunksPerLane);
  const uint64_t chunk =
      std::clamp<uint64_t>(per_lane, p.chunk_bytes, std::max(p.chunk_bytes, kChunkBytesMax));
  return p.chunk_max > 0 ? std::min(chunk, p.chunk_max) : chunk;
}

// Calls emit(FrameKind, std::span<const wire::BatchEntry>, uint64_t bytes, size_t lane)
// for every frame of a payload of segments `lengths`, in order; `next` is the peer's
// round-robin cursor over `lanes` (advanced by one per frame on a lane).
template <typename Emit>
void stripe(std::span<const uint64_t> lengths, size_t lanes, unsigned& next, const StripeParams& p,
            Emit&& emit) {
  uint64_t total = 0;
  for (uint64_t n : lengths) {
    total += n;
  }
  std::vector<wire::BatchEntry> group;
  if (stripe_inline(total, p)) {
    group.reserve(lengths.size());
    for (size_t i = 0; i < lengths.size(); ++i) {
      group.push_back(
          wire::BatchEntry{static_cast<uint32_t>(i), static_cast<uint32_t>(lengths[i]), 0});
    }
    emit(FrameKind::kInline, std::span<const wire::BatchEntry>(group), total, size_t{0});
    return;
  }
  lanes = std::max<size_t>(lanes, 1);
  const uint64_t chunk = stripe_chunk(total, lanes, p);
  const uint64_t group_max = std::min<uint64_t>(chunk, wire::kBatchPayloadBytesMax);
  uint64_t group_bytes = 0;
  auto flush = [&] {
    if (group.empty()) {
      return;
    }
    emit(group.size() == 1 ? FrameKind::kData : FrameKind::kBatch,
         std::span<const wire::BatchEntry>(group), group_bytes, size_t{next++ % lanes});
    group.clear();
    group_bytes = 0;
  };
  for (size_t s = 0; s < lengths.size(); ++s) {
    const uint64_t len = lengths[s];
    if (len < group_max) {
      if (group_bytes + len > group_max || group.size() == wire::kSegmentsMax) {
        flush();
      }
      group.push_back(wire::BatchEntry{static_cast<uint32_t>(s), static_cast<uint32_t>(len), 0});
      group_bytes += len;
      continue;
    }
    flush();
    for (uint64_t off = 0; off < len; off += chunk) {
      const uint64_t n = std::min<uint64_t>(chunk, len - off);
      const wire::BatchEntry one{static_cast<uint32_t>(s), static_cast<uint32_t>(n), off};
      emit(FrameKind::kData, std::span<const wire::BatchEntry>(&one, 1), n, size_t{next++ % lanes});
    }
  }
  flush();
}

}  // namespace ringxfer::transport::detail
