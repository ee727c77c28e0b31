// EngineDesc and MemoryDesc: what one engine tells another (out of band) so that it can
// connect and address memory. pack() gives versioned bytes; unpack() restores an
// equal value or rejects garbage with kInvalidArgument. A MemoryDesc carries its
// region's key (rkey): whoever holds the descriptor may use the region as far as its
// access rights allow, so ship it only to the engines meant to use it.
// Public API: std and absl only.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace ringxfer {

enum class MemoryLocation : uint8_t { kCpu = 0, kGpu = 1 };

struct EngineDesc {
  std::string key;       // unique engine name, 1..255 bytes
  std::string node_id;   // the host's id (hostname unless configured)
  std::string hostname;  // gethostname()
  std::string host;      // the address the engine listens on
  uint16_t port = 0;     // its real port (never 0 once the engine runs)
  int32_t pid = 0;
  uint32_t protocol_version = 0;

  std::string pack() const;
  static absl::StatusOr<EngineDesc> unpack(std::string_view bytes);
  friend bool operator==(const EngineDesc&, const EngineDesc&) = default;
};

struct MemoryDesc {
  std::string engine_key;  // the engine that registered it
  uint64_t id = 0;         // 1.. within that engine; 0 is never a valid id
  int32_t device_id = -1;  // GPU ordinal, -1 for CPU memory
  uint64_t size = 0;       // bytes
  MemoryLocation location = MemoryLocation::kCpu;
  uint64_t address = 0;  // the owner's virtual address (informational)
  // The region's key: random, never 0, new at every registration. Every request names
  // it with the id; the owner refuses a wrong key exactly as an unknown id.
  uint64_t rkey = 0;

  std::string pack() const;
  static absl::StatusOr<MemoryDesc> unpack(std::string_view bytes);
  friend bool operator==(const MemoryDesc&, const MemoryDesc&) = default;
};

}  // namespace ringxfer
