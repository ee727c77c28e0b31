// auth::Keyring: the shared secrets this engine proves itself with and checks its peers
// against (issue 11). It reads and checks a key file, holds the keys, and wipes them
// when it goes. Knows no sockets, frames or engines: src/transport asks it for keys.
//
// Key file format (text, one key per line):
//
//   # comments start with '#', here or after a key; blank lines are ignored
//   <id> <secret-hex>
//
//   id      decimal, 1..4294967295, unique in the file
//   secret  kSecretBytesMin..kSecretBytesMax bytes (64..128 hex digits, either case)
//
// Fields are separated by spaces or tabs. The file holds at least one key and at most
// kKeysMax, is a regular file (a symlink to one is followed) of at most kFileBytesMax
// bytes, and no group or other permission bit is set (mode 0600 or 0400: "chmod 600").
// The first key is the current one: an initiator proves itself with it. A target
// accepts any key in its file, chosen by the id the initiator names.
//
// Rotating a key without refusing any connection, in three steps, each done on every
// host before the next starts:
//   1. add the new key second in every file (targets now accept both);
//   2. move it first (initiators now prove with it);
//   3. remove the old key.
//
// Errors name the file and line and what is wrong; they never show secret bytes, nor
// any field of a line, since a line in the wrong order could put the secret there.
//
// Thread-safety: a Keyring does not change after it is made; const methods may be
// called from any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace ringxfer::auth {

inline constexpr size_t kSecretBytesMin = 32;
inline constexpr size_t kSecretBytesMax = 64;
inline constexpr size_t kKeysMax = 256;
inline constexpr size_t kFileBytesMax = 64 * 1024;

// One shared secret and the id peers name it by. Plain data: a Keyring wipes the
// copies it owns, a caller wipes any copy it makes.
struct AuthKey {
  uint32_t id = 0;              // 1..4294967295
  std::vector<uint8_t> secret;  // kSecretBytesMin..kSecretBytesMax bytes
};

class Keyring {
 public:
  // Reads and checks the key file at `path` (format above). Codes:
  //   kNotFound, kPermissionDenied, ... (from errno) the file cannot be opened or read;
  //   kFailedPrecondition  not a regular file, or group/other may access it;
  //   kInvalidArgument     a line does not parse, a key is too short or too long, an id
  //                        repeats, the file has no key, or is over a limit.
  [[nodiscard]] static absl::StatusOr<Keyring> load_file(const std::string& path);

  // The same checks on keys from elsewhere (a test, a configuration); the first is the
  // current one. kInvalidArgument names the offending key by its position and id.
  [[nodiscard]] static absl::StatusOr<Keyring> from_keys(std::vector<AuthKey> keys);

  Keyring(Keyring&& other) noexcept = default;
  Keyring& operator=(Keyring&& other) noexcept;
  Keyring(const Keyring&) = delete;
  Keyring& operator=(const Keyring&) = delete;
  ~Keyring();  // wipes every secret (OPENSSL_cleanse)

  // The key this engine proves itself with as an initiator: the first of the file.
  // A moved-from Keyring has none (RX_CHECK).
  const AuthKey& current() const;
  // The key with id `id`, or nullptr. The pointer lives as long as this Keyring.
  const AuthKey* find(uint32_t id) const;
  size_t size() const { return keys_.size(); }

 private:
  Keyring() = default;
  void wipe() noexcept;

  std::vector<AuthKey> keys_;
};

}  // namespace ringxfer::auth
