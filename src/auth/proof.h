// auth proofs: the HMAC-SHA256 by which each end of a connection shows that it holds the
// shared secret named by a key id, without sending the secret (issue 11). Pure
// functions over bytes: no sockets, no frames (src/wire carries the nonces and proofs,
// src/transport runs the exchange).
//
// The exchange, one per connection (control and each data stripe):
//   initiator -> target  hello, auth = key id + initiator nonce
//   target -> initiator  challenge: key id, target nonce, the target's proof
//   initiator -> target  the initiator's proof
// Each side checks the other's proof with proofs_equal() before it trusts anything else
// from the connection.
//
// What the input binds, and why:
//   - the role byte (who proves): a proof is never valid for the other role, so a
//     peer cannot reflect the target's proof back to it as the initiator's (reflection);
//   - both nonces, fresh from random_nonce() on each side for each connection: a proof
//     recorded from an earlier connection is for other nonces and fails (replay);
//   - the key id, both engine keys, the channel and stripe, and both instance ids: a
//     proof made for one engine pair, connection or engine run does not pass for another.
//
// The MAC is over a canonical encoding, each field at a fixed place or length-prefixed,
// so two different inputs never encode to the same bytes:
//   "ringxfer-auth-v1" (16 ascii bytes, no terminator)  u8 role  u32 key_id
//   initiator_nonce[32]  target_nonce[32]
//   u16 len + initiator_key  u16 len + target_key
//   u8 channel  u8 stripe  u64 initiator_instance  u64 target_instance
// Integers are little-endian.
//
// Thread-safety: every function may be called from any thread.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "auth/keyring.h"

namespace ringxfer::auth {

inline constexpr size_t kNonceBytes = 32;
inline constexpr size_t kMacBytes = 32;

using Nonce = std::array<uint8_t, kNonceBytes>;
using Mac = std::array<uint8_t, kMacBytes>;

// Who is proving: the target answers a hello first, then the initiator proves.
enum class Role : uint8_t {
  kTarget = 1,
  kInitiator = 2,
};

// Everything a proof is bound to, as both sides see it. Views must outlive the call.
struct ProofInput {
  uint32_t key_id = 0;  // the key both sides use, named by the initiator's hello
  Nonce initiator_nonce{};
  Nonce target_nonce{};
  std::string_view initiator_key;  // engine keys, as in the hellos; at most 65535 bytes
  std::string_view target_key;
  uint8_t channel = 0;  // wire::ChannelKind
  uint8_t stripe = 0;
  uint64_t initiator_instance = 0;  // the hello's instance id
  uint64_t target_instance = 0;     // the hello ack's instance id
};

// 32 bytes from OpenSSL's CSPRNG. A generator that cannot give them aborts (RX_CHECK):
// without fresh nonces there is no safe handshake to fall back to.
Nonce random_nonce();

// HMAC-SHA256 under key.secret over the encoding above. `key.id` must equal
// `input.key_id`, and each engine key be at most 65535 bytes (RX_CHECK: programmer
// errors). OpenSSL failing to compute an HMAC aborts.
Mac compute_proof(const AuthKey& key, Role role, const ProofInput& input);

// Whether two proofs are equal, in time that does not depend on where they differ
// (CRYPTO_memcmp), so a peer cannot find a valid proof byte by byte.
bool proofs_equal(const Mac& a, const Mac& b) noexcept;

namespace detail {
// HMAC-SHA256 of `message` under `key`: compute_proof's primitive, exposed so a test
// can check it against published vectors (RFC 4231).
Mac hmac_sha256(std::span<const uint8_t> key, std::span<const uint8_t> message);
}  // namespace detail

}  // namespace ringxfer::auth
