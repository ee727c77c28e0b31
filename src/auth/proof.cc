// HMAC proofs and nonces over OpenSSL libcrypto (see proof.h for the encoding).
#include "auth/proof.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <vector>

#include "base/check.h"

namespace ringxfer::auth {
namespace {

constexpr std::string_view kLabel = "ringxfer-auth-v1";

void put_bytes(std::vector<uint8_t>& out, const void* p, size_t n) {
  const auto* b = static_cast<const uint8_t*>(p);
  out.insert(out.end(), b, b + n);
}

template <typename T>
void put_le(std::vector<uint8_t>& out, T v) {
  for (size_t i = 0; i < sizeof(T); ++i) {
    out.push_back(static_cast<uint8_t>(v >> (8 * i)));
  }
}

void put_prefixed(std::vector<uint8_t>& out, std::string_view s) {
  RX_CHECK(s.size() <= UINT16_MAX);
  put_le<uint16_t>(out, static_cast<uint16_t>(s.size()));
  put_bytes(out, s.data(), s.size());
}

}  // namespace

namespace detail {

Mac hmac_sha256(std::span<const uint8_t> key, std::span<const uint8_t> message) {
  Mac mac{};
  unsigned int len = 0;
  // HMAC() (not the HMAC_CTX calls OpenSSL 3 deprecates) fails only when memory or
  // the SHA-256 provider is missing: nothing a handshake could recover from.
  const unsigned char* r = HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
                                message.data(), message.size(), mac.data(), &len);
  RX_CHECK_MSG(r != nullptr && len == mac.size(), "OpenSSL HMAC-SHA256 failed");
  return mac;
}

}  // namespace detail

Nonce random_nonce() {
  Nonce n{};
  RX_CHECK_MSG(RAND_bytes(n.data(), static_cast<int>(n.size())) == 1,
               "OpenSSL RAND_bytes failed: no random nonce");
  return n;
}

Mac compute_proof(const AuthKey& key, Role role, const ProofInput& input) {
  RX_CHECK(key.id == input.key_id);
  // The message holds no secret (nonces and ids go on the wire), so it needs no wiping.
  std::vector<uint8_t> m;
  m.reserve(kLabel.size() + 1 + 4 + 2 * kNonceBytes + 4 + input.initiator_key.size() +
            input.target_key.size() + 2 + 16);
  put_bytes(m, kLabel.data(), kLabel.size());
  put_le<uint8_t>(m, static_cast<uint8_t>(role));
  put_le<uint32_t>(m, input.key_id);
  put_bytes(m, input.initiator_nonce.data(), input.initiator_nonce.size());
  put_bytes(m, input.target_nonce.data(), input.target_nonce.size());
  put_prefixed(m, input.initiator_key);
  put_prefixed(m, input.target_key);
  put_le<uint8_t>(m, input.channel);
  put_le<uint8_t>(m, input.stripe);
  put_le<uint64_t>(m, input.initiator_instance);
  put_le<uint64_t>(m, input.target_instance);
  return detail::hmac_sha256(key.secret, m);
}

bool proofs_equal(const Mac& a, const Mac& b) noexcept {
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace ringxfer::auth
