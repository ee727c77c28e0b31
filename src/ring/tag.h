// ring::Tag builds and parses io_uring user_data: which owner kind a completion
// belongs to, which slot of that owner, the slot's generation when the operation was
// queued, and which operation it was. Knows nothing of what the kinds mean.
//
// Layout (64 bits): [63:56] kind  [55:48] op  [47:32] generation  [31:0] slot.
// user_data 0 is never produced (kind 0 is reserved), nor kTagIgnore, which marks
// SQEs whose completions nobody needs (for example a cancel).
#pragma once

#include <cstdint>

namespace ringxfer::ring {

inline constexpr uint64_t kTagIgnore = ~uint64_t{0};

struct Tag {
  uint8_t kind = 0;         // 1..254; 0 and 255 are reserved
  uint8_t op = 0;           // meaning chosen by the owner of `kind`
  uint16_t generation = 0;  // bumped when a slot is reused: stale CQEs are dropped
  uint32_t slot = 0;

  constexpr uint64_t pack() const noexcept {
    return (uint64_t{kind} << 56) | (uint64_t{op} << 48) | (uint64_t{generation} << 32) | slot;
  }
  static constexpr Tag unpack(uint64_t v) noexcept {
    return Tag{static_cast<uint8_t>(v >> 56), static_cast<uint8_t>(v >> 48),
               static_cast<uint16_t>(v >> 32), static_cast<uint32_t>(v)};
  }
  friend constexpr bool operator==(const Tag&, const Tag&) = default;
};

}  // namespace ringxfer::ring
