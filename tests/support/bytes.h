// Byte-buffer helpers for tests: exact-size heap copies (so ASan sees any read past
// the end) and little-endian patching of fields at an offset.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <vector>

namespace ringxfer::testing {

using Bytes = std::vector<std::byte>;

inline Bytes prefix(const Bytes& b, size_t n) { return Bytes(b.begin(), b.begin() + n); }

// Writes the low `width` bytes of `value` little-endian at `offset`.
inline void patch_le(Bytes& b, size_t offset, size_t width, uint64_t value) {
  for (size_t i = 0; i < width; ++i) {
    b.at(offset + i) = static_cast<std::byte>((value >> (8 * i)) & 0xff);
  }
}

inline uint64_t read_le(const Bytes& b, size_t offset, size_t width) {
  uint64_t v = 0;
  for (size_t i = 0; i < width; ++i) {
    v |= static_cast<uint64_t>(b.at(offset + i)) << (8 * i);
  }
  return v;
}

inline std::span<const std::byte> as_bytes(std::string_view s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

}  // namespace ringxfer::testing
