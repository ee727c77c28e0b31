// Peer authentication (issue 11), through the public API and raw sockets: engines that
// share a key transfer; a peer without it, with another key, or replaying or reflecting
// proofs is refused at the handshake and touches nothing; key files are checked.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "auth/keyring.h"
#include "auth/proof.h"
#include "gtest/gtest.h"
#include "ringxfer/ringxfer.h"
#include "support/raw_socket.h"
#include "wire/codec.h"

namespace ringxfer {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

// A key file in a fresh temporary directory, removed with it.
class KeyFile {
 public:
  // `lines`: the file's text. `mode`: its permission bits.
  explicit KeyFile(const std::string& text, mode_t mode = 0600) {
    char dir[] = "/tmp/ringxfer-auth-XXXXXX";
    dir_ = ::mkdtemp(dir);
    path_ = dir_ + "/keys";
    const int fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0600);
    EXPECT_GE(fd, 0);
    EXPECT_EQ(::write(fd, text.data(), text.size()), static_cast<ssize_t>(text.size()));
    ::fchmod(fd, mode);
    ::close(fd);
  }
  ~KeyFile() {
    ::unlink(path_.c_str());
    ::rmdir(dir_.c_str());
  }
  const std::string& path() const { return path_; }

 private:
  std::string dir_;
  std::string path_;
};

// A 32-byte secret of `byte` repeated, as hex.
std::string secret_hex(uint8_t byte) {
  std::string s;
  for (int i = 0; i < 32; ++i) {
    char b[3];
    std::snprintf(b, sizeof(b), "%02x", byte);
    s += b;
  }
  return s;
}

std::string key_line(uint32_t id, uint8_t byte) {
  return std::to_string(id) + " " + secret_hex(byte) + "\n";
}

auth::AuthKey auth_key(uint32_t id, uint8_t byte) {
  return auth::AuthKey{id, std::vector<uint8_t>(32, byte)};
}

EngineConfig with_key(const KeyFile* f, int rings = 1) {
  EngineConfig c;
  c.rings = rings;
  c.timeout = milliseconds(5000);
  if (f != nullptr) {
    c.auth_key_file = f->path();
  }
  return c;
}

struct Pair {
  std::unique_ptr<Engine> a, b;
  absl::Status error;
  Pair(const EngineConfig& ca, const EngineConfig& cb) {
    auto ea = Engine::create("alice", ca);
    auto eb = Engine::create("bob", cb);
    if (!ea.ok() || !eb.ok()) {
      error = ea.ok() ? eb.status() : ea.status();
      return;
    }
    a = std::move(*ea);
    b = std::move(*eb);
    error = a->register_remote_engine(b->desc());
    if (error.ok()) {
      error = b->register_remote_engine(a->desc());
    }
  }
};

StatusHandle must(absl::StatusOr<StatusHandle> s) {
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? *s : nullptr;
}

// Writes 300 KiB from a to b and reads it back (striped, over the data connections
// too); returns the first failure.
absl::Status round_trip(Pair& p) {
  constexpr size_t kBytes = 300 << 10;
  std::vector<uint8_t> src(kBytes), dst(kBytes, 0), back(kBytes, 0);
  for (size_t i = 0; i < kBytes; ++i) {
    src[i] = static_cast<uint8_t>(i * 7 + 1);
  }
  MemoryDesc ms = *p.a->register_memory(src.data(), src.size());
  MemoryDesc mb = *p.a->register_memory(back.data(), back.size());
  MemoryDesc md = *p.b->register_memory(dst.data(), dst.size());
  StatusHandle w = must(p.a->write(ms, 0, md, 0, kBytes, p.a->allocate_transfer_id()));
  if (w == nullptr || !w->wait(seconds(20))) {
    return absl::DeadlineExceededError("write did not finish");
  }
  if (!w->succeeded()) {
    return w->status();
  }
  StatusHandle r = must(p.a->read(mb, 0, md, 0, kBytes, p.a->allocate_transfer_id()));
  if (r == nullptr || !r->wait(seconds(20))) {
    return absl::DeadlineExceededError("read did not finish");
  }
  if (!r->succeeded()) {
    return r->status();
  }
  EXPECT_EQ(src, dst);
  EXPECT_EQ(src, back);
  return absl::OkStatus();
}

// Writes `src` from a into `dst` at b (transfer id 5) and returns its outcome; the
// refusal tests expect it to fail.
absl::Status write_4k(Pair& p, std::vector<uint8_t>& src, std::vector<uint8_t>& dst) {
  MemoryDesc ms = *p.a->register_memory(src.data(), src.size());
  MemoryDesc md = *p.b->register_memory(dst.data(), dst.size());
  StatusHandle w = must(p.a->write(ms, 0, md, 0, src.size(), 5));
  if (w == nullptr || !w->wait(seconds(10))) {
    ADD_FAILURE() << "the write did not finish";  // a refusal must end it, not hang it
    return absl::DeadlineExceededError("the write did not finish");
  }
  return w->status();
}

TEST(Auth, EnginesThatShareAKeyTransferOverEveryConnection) {
  KeyFile keys(key_line(7, 0x11));
  for (int rings : {1, 2}) {
    SCOPED_TRACE("rings " + std::to_string(rings));
    Pair p(with_key(&keys, rings), with_key(&keys, rings));
    ASSERT_TRUE(p.error.ok()) << p.error;
    EXPECT_TRUE(round_trip(p).ok());
    EXPECT_EQ(p.a->stats().auth_failures, 0u);
    EXPECT_EQ(p.b->stats().auth_failures, 0u);
    EXPECT_EQ(p.a->stats().hostile_frames, 0u);
    EXPECT_EQ(p.b->stats().hostile_frames, 0u);
  }
}

TEST(Auth, KeysRotateWithoutRefusingAConnection) {
  // Step 1 on b (old first, new second), a still on the old key alone; then a on the
  // new key first (step 2); then b on the new key alone (step 3).
  KeyFile old_only(key_line(1, 0x21));
  KeyFile both(key_line(1, 0x21) + key_line(2, 0x22));
  KeyFile new_first(key_line(2, 0x22) + key_line(1, 0x21));
  KeyFile new_only(key_line(2, 0x22));
  const KeyFile* steps[][2] = {{&old_only, &both}, {&new_first, &both}, {&new_first, &new_only}};
  for (auto& s : steps) {
    Pair p(with_key(s[0]), with_key(s[1]));
    ASSERT_TRUE(p.error.ok()) << p.error;
    EXPECT_TRUE(round_trip(p).ok());
  }
}

TEST(Auth, AnInitiatorWithoutTheKeyIsRefusedAndChangesNothing) {
  KeyFile keys(key_line(7, 0x11));
  Pair p(with_key(nullptr), with_key(&keys));
  ASSERT_TRUE(p.error.ok()) << p.error;
  std::vector<uint8_t> src(4096, 0xAB), dst(4096, 0);
  const absl::Status st = write_4k(p, src, dst);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(std::string(st.message()).find("auth_key_file"), std::string::npos) << st;
  EXPECT_EQ(dst, std::vector<uint8_t>(4096, 0));
  EXPECT_GE(p.b->stats().auth_failures, 1u);
  EXPECT_EQ(p.b->stats().transfers_served, 0u);
  EXPECT_EQ(p.b->pop_inbound_status("alice", 5), nullptr);
}

TEST(Auth, ATargetWithoutTheKeyIsRefusedByTheInitiator) {
  KeyFile keys(key_line(7, 0x11));
  Pair p(with_key(&keys), with_key(nullptr));
  ASSERT_TRUE(p.error.ok()) << p.error;
  std::vector<uint8_t> src(4096, 0xAB), dst(4096, 0);
  const absl::Status st = write_4k(p, src, dst);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(std::string(st.message()).find("does not authenticate"), std::string::npos) << st;
  // Nothing but the hello went: the request waited behind it and never left.
  EXPECT_EQ(dst, std::vector<uint8_t>(4096, 0));
  EXPECT_EQ(p.b->stats().transfers_served, 0u);
}

TEST(Auth, EnginesWithDifferentSecretsRefuseEachOther) {
  KeyFile ka(key_line(7, 0x11));
  KeyFile kb(key_line(7, 0x12));  // same id, another secret
  Pair p(with_key(&ka), with_key(&kb));
  ASSERT_TRUE(p.error.ok()) << p.error;
  std::vector<uint8_t> src(4096, 0xAB), dst(4096, 0);
  const absl::Status st = write_4k(p, src, dst);
  EXPECT_FALSE(st.ok());
  EXPECT_EQ(dst, std::vector<uint8_t>(4096, 0));
  // The initiator checks the target's proof first, and refuses it.
  EXPECT_GE(p.a->stats().auth_failures, 1u);
  EXPECT_EQ(p.b->stats().transfers_served, 0u);
}

TEST(Auth, KeyFilesAreCheckedWhenTheEngineStarts) {
  KeyFile open_to_group(key_line(7, 0x11), 0640);
  auto e = Engine::create("x", with_key(&open_to_group));
  ASSERT_FALSE(e.ok());
  EXPECT_NE(std::string(e.status().message()).find("chmod 600"), std::string::npos) << e.status();
  EXPECT_NE(std::string(e.status().message()).find("auth_key_file"), std::string::npos);

  KeyFile short_key("7 00112233\n");
  e = Engine::create("x", with_key(&short_key));
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.status().code(), absl::StatusCode::kInvalidArgument) << e.status();

  EngineConfig missing;
  missing.auth_key_file = "/nonexistent/ringxfer-keys";
  e = Engine::create("x", missing);
  ASSERT_FALSE(e.ok());
  EXPECT_NE(std::string(e.status().message()).find("/nonexistent/ringxfer-keys"), std::string::npos)
      << e.status();
}

// ---------------------------------------------------------------------------
// Raw peers

constexpr uint32_t kKeyId = 7;
constexpr uint8_t kSecret = 0x11;

// A raw initiator's side of the exchange.
struct RawAuth {
  std::string key = "mallory";
  auth::Nonce nonce = auth::random_nonce();
  uint64_t instance = 0x1234;

  std::vector<std::byte> hello(bool with_auth = true) const {
    wire::Hello h;
    h.channel = wire::ChannelKind::kControl;
    h.key = key;
    h.instance_id = instance;
    h.capabilities = wire::kCapDataBatch;
    std::array<std::byte, wire::kHelloAuthBytes> a{};
    if (with_auth) {
      wire::HelloAuth ha;
      ha.key_id = kKeyId;
      ha.nonce = nonce;
      EXPECT_TRUE(wire::encode_hello_auth(ha, a).ok());
      h.auth = a;
    }
    std::vector<std::byte> b(wire::hello_frame_bytes(key.size(), h.auth.size()));
    EXPECT_TRUE(wire::encode_hello(h, b).ok());
    return b;
  }
  auth::ProofInput input(const wire::AuthChallenge& ch, std::string_view target) const {
    auth::ProofInput in;
    in.key_id = kKeyId;
    in.initiator_nonce = nonce;
    in.target_nonce = ch.nonce;
    in.initiator_key = key;
    in.target_key = target;
    in.channel = 0;
    in.stripe = 0;
    in.initiator_instance = instance;
    in.target_instance = ch.instance_id;
    return in;
  }
  static std::vector<std::byte> proof_frame(const auth::Mac& mac) {
    wire::AuthProof pr;
    pr.key_id = kKeyId;
    pr.mac = mac;
    std::vector<std::byte> b(wire::auth_proof_frame_bytes());
    EXPECT_TRUE(wire::encode_auth_proof(pr, b).ok());
    return b;
  }
};

bool recv_challenge(testing::RawClient& c, wire::AuthChallenge& out) {
  std::vector<std::byte> b(wire::auth_challenge_frame_bytes());
  if (!c.recv_exact(b.data(), b.size(), 5000)) {
    return false;
  }
  wire::Result<wire::AuthChallenge> ch = wire::decode_auth_challenge(b);
  if (!ch.ok()) {
    return false;
  }
  out = *ch;
  return true;
}

// A read request for the first 64 bytes of `id`: what an attacker sends.
std::vector<std::byte> read_request(uint64_t id, uint64_t key) {
  const std::vector<wire::Segment> segs = {{id, key, 0, 64}};
  std::vector<std::byte> b(wire::request_frame_bytes(1));
  EXPECT_TRUE(wire::encode_request(wire::OpKind::kRead, 1, segs, b, 0, /*seq=*/1).ok());
  return b;
}

class RawAuthTest : public ::testing::Test {
 protected:
  void SetUp() override {
    keys_ = std::make_unique<KeyFile>(key_line(kKeyId, kSecret));
    auto e = Engine::create("bob", with_key(keys_.get()));
    ASSERT_TRUE(e.ok()) << e.status();
    target_ = std::move(*e);
    region_.assign(4096, 0x5A);
    md_ = *target_->register_memory(region_.data(), region_.size());
  }
  // Sends a read request and says whether any byte of the region came back before the
  // connection closed.
  bool leaks_after(testing::RawClient& c) {
    c.send_all(read_request(md_.id, md_.rkey));
    EXPECT_TRUE(c.wait_closed(5000));
    return c.received() > 0 && target_->stats().transfers_served > 0;
  }

  std::unique_ptr<KeyFile> keys_;
  std::unique_ptr<Engine> target_;
  std::vector<uint8_t> region_;
  MemoryDesc md_;
};

TEST_F(RawAuthTest, AHolderOfTheKeyCompletesTheHandshake) {
  // The control for the refusals below: the raw exchange itself is right.
  RawAuth me;
  testing::RawClient c(target_->desc().port);
  ASSERT_TRUE(c.send_all(me.hello()));
  wire::AuthChallenge ch;
  ASSERT_TRUE(recv_challenge(c, ch));
  const auth::AuthKey k = auth_key(kKeyId, kSecret);
  const auth::ProofInput in = me.input(ch, "bob");
  EXPECT_TRUE(auth::proofs_equal(auth::compute_proof(k, auth::Role::kTarget, in), ch.mac));
  ASSERT_TRUE(c.send_all(RawAuth::proof_frame(auth::compute_proof(k, auth::Role::kInitiator, in))));
  std::vector<std::byte> ack(wire::hello_ack_frame_bytes(3, 0));
  ASSERT_TRUE(c.recv_exact(ack.data(), ack.size(), 5000));
  wire::Result<wire::HelloAck> a = wire::decode_hello_ack(ack);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->status, 0);
  EXPECT_EQ(a->instance_id, ch.instance_id);
  EXPECT_EQ(target_->stats().auth_failures, 0u);
}

TEST_F(RawAuthTest, AHelloWithoutAProofIsRefusedAndItsRequestsIgnored) {
  RawAuth me;
  testing::RawClient c(target_->desc().port);
  ASSERT_TRUE(c.send_all(me.hello(/*with_auth=*/false)));
  EXPECT_FALSE(leaks_after(c));
  EXPECT_EQ(target_->stats().transfers_served, 0u);
  EXPECT_GE(target_->stats().auth_failures, 1u);
  EXPECT_EQ(target_->pop_inbound_status("mallory", 1), nullptr);
}

TEST_F(RawAuthTest, ARequestInsteadOfTheProofClosesTheConnection) {
  RawAuth me;
  testing::RawClient c(target_->desc().port);
  ASSERT_TRUE(c.send_all(me.hello()));
  wire::AuthChallenge ch;
  ASSERT_TRUE(recv_challenge(c, ch));
  EXPECT_FALSE(leaks_after(c));
  EXPECT_EQ(target_->stats().transfers_served, 0u);
}

TEST_F(RawAuthTest, AWrongProofIsRefused) {
  RawAuth me;
  testing::RawClient c(target_->desc().port);
  ASSERT_TRUE(c.send_all(me.hello()));
  wire::AuthChallenge ch;
  ASSERT_TRUE(recv_challenge(c, ch));
  const auth::AuthKey other = auth_key(kKeyId, 0x99);
  ASSERT_TRUE(c.send_all(RawAuth::proof_frame(
      auth::compute_proof(other, auth::Role::kInitiator, me.input(ch, "bob")))));
  EXPECT_FALSE(leaks_after(c));
  EXPECT_GE(target_->stats().auth_failures, 1u);
  EXPECT_EQ(target_->stats().transfers_served, 0u);
}

TEST_F(RawAuthTest, TheTargetsOwnProofReflectedBackIsRefused) {
  RawAuth me;
  testing::RawClient c(target_->desc().port);
  ASSERT_TRUE(c.send_all(me.hello()));
  wire::AuthChallenge ch;
  ASSERT_TRUE(recv_challenge(c, ch));
  ASSERT_TRUE(c.send_all(RawAuth::proof_frame(ch.mac)));
  EXPECT_FALSE(leaks_after(c));
  EXPECT_GE(target_->stats().auth_failures, 1u);
}

TEST_F(RawAuthTest, AProofReplayedOnAnotherConnectionIsRefused) {
  // A proof recorded from one connection (made by a key holder), replayed with the same
  // hello on a second connection: the target's fresh nonce makes it worthless.
  RawAuth me;
  const auth::AuthKey k = auth_key(kKeyId, kSecret);
  testing::RawClient first(target_->desc().port);
  ASSERT_TRUE(first.send_all(me.hello()));
  wire::AuthChallenge ch1;
  ASSERT_TRUE(recv_challenge(first, ch1));
  const auth::Mac recorded = auth::compute_proof(k, auth::Role::kInitiator, me.input(ch1, "bob"));

  testing::RawClient second(target_->desc().port);
  ASSERT_TRUE(second.send_all(me.hello()));
  wire::AuthChallenge ch2;
  ASSERT_TRUE(recv_challenge(second, ch2));
  EXPECT_NE(ch1.nonce, ch2.nonce);
  ASSERT_TRUE(second.send_all(RawAuth::proof_frame(recorded)));
  EXPECT_FALSE(leaks_after(second));
  EXPECT_GE(target_->stats().auth_failures, 1u);
  EXPECT_EQ(target_->stats().transfers_served, 0u);
}

TEST_F(RawAuthTest, AnUnknownKeyIdIsRefused) {
  RawAuth me;
  wire::Hello h;
  std::array<std::byte, wire::kHelloAuthBytes> a{};
  wire::HelloAuth ha;
  ha.key_id = kKeyId + 1;
  ha.nonce = me.nonce;
  ASSERT_TRUE(wire::encode_hello_auth(ha, a).ok());
  h.key = me.key;
  h.auth = a;
  std::vector<std::byte> b(wire::hello_frame_bytes(me.key.size(), a.size()));
  ASSERT_TRUE(wire::encode_hello(h, b).ok());
  testing::RawClient c(target_->desc().port);
  ASSERT_TRUE(c.send_all(b));
  EXPECT_FALSE(leaks_after(c));
  EXPECT_GE(target_->stats().auth_failures, 1u);
}

// Issue 11: without authentication a hello naming a connected engine's key (another
// engine run: another instance id) once replaced the victim's connections ("newest
// wins") and failed its transfers in flight. Now it is refused and the victim is
// untouched.
TEST(Identity, AHelloCannotDisplaceALiveEngineOfAnotherRun) {
  Pair p(with_key(nullptr), with_key(nullptr));
  ASSERT_TRUE(p.error.ok()) << p.error;
  ASSERT_TRUE(round_trip(p).ok());  // alice's connections to bob are up
  const uint64_t refused = p.b->stats().connections_refused;
  RawAuth mallory;
  mallory.key = "alice";
  mallory.instance = 42;
  testing::RawClient c(p.b->desc().port);
  ASSERT_TRUE(c.send_all(mallory.hello(/*with_auth=*/false)));
  std::vector<std::byte> ack(wire::hello_ack_frame_bytes(3, 512));
  ASSERT_TRUE(c.recv_exact(ack.data(), wire::kHeaderBytes, 5000));
  wire::Result<wire::FrameHeader> h = wire::decode_header(ack);
  ASSERT_TRUE(h.ok());
  ASSERT_TRUE(c.recv_exact(ack.data() + wire::kHeaderBytes, h->body_bytes, 5000));
  wire::Result<wire::HelloAck> a =
      wire::decode_hello_ack_body(*h, wire::ByteSpan(ack).subspan(wire::kHeaderBytes));
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->status, static_cast<uint16_t>(absl::StatusCode::kAlreadyExists));
  EXPECT_TRUE(c.wait_closed(5000));
  EXPECT_EQ(p.b->stats().connections_refused, refused + 1);
  // alice's connections were not touched: a transfer goes through on them at once.
  const uint64_t opened = p.a->stats().connections_opened;
  EXPECT_TRUE(round_trip(p).ok());
  EXPECT_EQ(p.a->stats().connections_opened, opened) << "alice had to reconnect";
}

}  // namespace
}  // namespace ringxfer
