// Little-endian loads and stores at unaligned addresses. The caller has already
// checked the bounds; these never look past sizeof(T) bytes.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

namespace ringxfer::wire::detail {

template <typename T>
constexpr T byte_swap(T v) noexcept {
  static_assert(std::is_unsigned_v<T>);
  if constexpr (sizeof(T) == 1) {
    return v;
  } else if constexpr (sizeof(T) == 2) {
    return __builtin_bswap16(v);
  } else if constexpr (sizeof(T) == 4) {
    return __builtin_bswap32(v);
  } else {
    return __builtin_bswap64(v);
  }
}

template <typename T>
inline T load_le(const std::byte* p) noexcept {
  T v;
  std::memcpy(&v, p, sizeof(T));
  if constexpr (std::endian::native == std::endian::big) {
    v = byte_swap(v);
  }
  return v;
}

template <typename T>
inline void store_le(std::byte* p, T v) noexcept {
  if constexpr (std::endian::native == std::endian::big) {
    v = byte_swap(v);
  }
  std::memcpy(p, &v, sizeof(T));
}

}  // namespace ringxfer::wire::detail
