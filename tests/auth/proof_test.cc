#include "auth/proof.h"

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "gtest/gtest.h"

namespace ringxfer::auth {
namespace {

std::vector<uint8_t> from_text(std::string_view s) { return {s.begin(), s.end()}; }

std::string to_hex(const Mac& mac) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  for (uint8_t b : mac) {
    out += kDigits[b >> 4];
    out += kDigits[b & 15];
  }
  return out;
}

// ---- The OpenSSL wiring, against RFC 4231's published HMAC-SHA-256 values. ----

TEST(Hmac, MatchesRfc4231Vectors) {
  struct Row {
    const char* name;
    std::vector<uint8_t> key;
    std::vector<uint8_t> data;
    const char* mac;
  };
  const Row rows[] = {
      {"test case 1", std::vector<uint8_t>(20, 0x0b), from_text("Hi There"),
       "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"},
      {"test case 2", from_text("Jefe"), from_text("what do ya want for nothing?"),
       "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"},
      {"test case 6 (key longer than a block)", std::vector<uint8_t>(131, 0xaa),
       from_text("Test Using Larger Than Block-Size Key - Hash Key First"),
       "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"},
  };
  for (const Row& row : rows) {
    SCOPED_TRACE(row.name);
    EXPECT_EQ(to_hex(detail::hmac_sha256(row.key, row.data)), row.mac);
  }
}

// ---- Proofs ----

AuthKey sample_key() { return AuthKey{7, std::vector<uint8_t>(32, 0x42)}; }

ProofInput sample_input() {
  ProofInput in;
  in.key_id = 7;
  for (size_t i = 0; i < kNonceBytes; ++i) {
    in.initiator_nonce[i] = static_cast<uint8_t>(i);
    in.target_nonce[i] = static_cast<uint8_t>(0x80 + i);
  }
  in.initiator_key = "prefill-0";
  in.target_key = "decode-7";
  in.channel = 1;
  in.stripe = 3;
  in.initiator_instance = 0x1122334455667788;
  in.target_instance = 0x99aabbccddeeff00;
  return in;
}

// The exact message compute_proof signs, built here byte by byte: pins the encoding
// documented in proof.h, so a change to it cannot pass unnoticed.
TEST(Proof, SignsTheDocumentedEncoding) {
  const AuthKey key = sample_key();
  const ProofInput in = sample_input();
  std::vector<uint8_t> m = from_text("ringxfer-auth-v1");
  m.push_back(2);  // initiator
  for (uint8_t b : {7, 0, 0, 0}) {
    m.push_back(b);
  }
  m.insert(m.end(), in.initiator_nonce.begin(), in.initiator_nonce.end());
  m.insert(m.end(), in.target_nonce.begin(), in.target_nonce.end());
  m.push_back(9);
  m.push_back(0);
  for (char c : std::string_view("prefill-0")) {
    m.push_back(static_cast<uint8_t>(c));
  }
  m.push_back(8);
  m.push_back(0);
  for (char c : std::string_view("decode-7")) {
    m.push_back(static_cast<uint8_t>(c));
  }
  m.push_back(1);  // channel
  m.push_back(3);  // stripe
  for (uint8_t b : {0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11}) {
    m.push_back(b);
  }
  for (uint8_t b : {0x00, 0xff, 0xee, 0xdd, 0xcc, 0xbb, 0xaa, 0x99}) {
    m.push_back(b);
  }
  EXPECT_EQ(compute_proof(key, Role::kInitiator, in), detail::hmac_sha256(key.secret, m));
}

TEST(Proof, IsDeterministic) {
  EXPECT_EQ(compute_proof(sample_key(), Role::kTarget, sample_input()),
            compute_proof(sample_key(), Role::kTarget, sample_input()));
}

TEST(Proof, ChangesWhenAnyInputChanges) {
  struct Row {
    const char* name;
    std::function<void(AuthKey&, ProofInput&)> change;
  };
  const Row rows[] = {
      {"secret first byte", [](AuthKey& k, ProofInput&) { k.secret[0] ^= 1; }},
      {"secret last byte", [](AuthKey& k, ProofInput&) { k.secret.back() ^= 0x80; }},
      // Not a zero byte: HMAC pads short keys with zeros, so K and K||0 are one key.
      {"secret longer", [](AuthKey& k, ProofInput&) { k.secret.push_back(1); }},
      {"key id", [](AuthKey& k, ProofInput& in) { k.id = in.key_id = 8; }},
      {"key id high byte", [](AuthKey& k, ProofInput& in) { k.id = in.key_id = 0x01000007; }},
      {"initiator nonce first byte", [](AuthKey&, ProofInput& in) { in.initiator_nonce[0] ^= 1; }},
      {"initiator nonce last byte", [](AuthKey&, ProofInput& in) { in.initiator_nonce[31] ^= 1; }},
      {"target nonce first byte", [](AuthKey&, ProofInput& in) { in.target_nonce[0] ^= 1; }},
      {"target nonce last byte", [](AuthKey&, ProofInput& in) { in.target_nonce[31] ^= 1; }},
      {"nonces swapped",
       [](AuthKey&, ProofInput& in) { std::swap(in.initiator_nonce, in.target_nonce); }},
      {"initiator key", [](AuthKey&, ProofInput& in) { in.initiator_key = "prefill-1"; }},
      {"initiator key empty", [](AuthKey&, ProofInput& in) { in.initiator_key = ""; }},
      {"target key", [](AuthKey&, ProofInput& in) { in.target_key = "decode-8"; }},
      {"engine keys swapped",
       [](AuthKey&, ProofInput& in) { std::swap(in.initiator_key, in.target_key); }},
      // Same bytes in all, split elsewhere: the length prefixes tell them apart.
      {"byte moved between the engine keys",
       [](AuthKey&, ProofInput& in) {
         in.initiator_key = "prefill-0d";
         in.target_key = "ecode-7";
       }},
      {"channel", [](AuthKey&, ProofInput& in) { in.channel = 0; }},
      {"stripe", [](AuthKey&, ProofInput& in) { in.stripe = 4; }},
      {"channel and stripe swapped",
       [](AuthKey&, ProofInput& in) {
         in.channel = 3;
         in.stripe = 1;
       }},
      {"initiator instance", [](AuthKey&, ProofInput& in) { in.initiator_instance ^= 1; }},
      {"initiator instance high bit",
       [](AuthKey&, ProofInput& in) { in.initiator_instance ^= uint64_t{1} << 63; }},
      {"target instance", [](AuthKey&, ProofInput& in) { in.target_instance ^= 1; }},
      {"instances swapped",
       [](AuthKey&, ProofInput& in) { std::swap(in.initiator_instance, in.target_instance); }},
  };
  for (Role role : {Role::kTarget, Role::kInitiator}) {
    const Mac base = compute_proof(sample_key(), role, sample_input());
    for (const Row& row : rows) {
      SCOPED_TRACE(std::string(row.name) + (role == Role::kTarget ? " (target)" : " (initiator)"));
      AuthKey key = sample_key();
      ProofInput in = sample_input();
      row.change(key, in);
      EXPECT_FALSE(proofs_equal(compute_proof(key, role, in), base));
    }
  }
}

// A peer that sends the target's own proof back as the initiator's gets nowhere.
TEST(Proof, TargetAndInitiatorProofsDifferForTheSameInput) {
  const Mac target = compute_proof(sample_key(), Role::kTarget, sample_input());
  const Mac initiator = compute_proof(sample_key(), Role::kInitiator, sample_input());
  EXPECT_NE(target, initiator);
  EXPECT_FALSE(proofs_equal(target, initiator));
}

TEST(Proof, EqualProofsCompareEqual) {
  const Mac a = compute_proof(sample_key(), Role::kTarget, sample_input());
  Mac b = a;
  EXPECT_TRUE(proofs_equal(a, b));
  for (size_t i : {size_t{0}, size_t{15}, size_t{31}}) {
    SCOPED_TRACE(i);
    b = a;
    b[i] ^= 0x01;
    EXPECT_FALSE(proofs_equal(a, b));
    EXPECT_FALSE(proofs_equal(b, a));
  }
}

TEST(Nonce, DiffersBetweenCalls) {
  const Nonce a = random_nonce();
  const Nonce b = random_nonce();
  EXPECT_NE(a, b);
  EXPECT_NE(a, Nonce{});
}

}  // namespace
}  // namespace ringxfer::auth
