// Region keys and access rights (issue 11), through the public API and a raw socket:
// a segment must name its region's key, and a wrong key is refused exactly like an id
// that does not exist, without saying how large any region is; a region's access rights
// (read, write, which engines) are enforced by its owner and refusals are counted.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "ringxfer/ringxfer.h"
#include "support/raw_socket.h"
#include "wire/codec.h"

namespace ringxfer {
namespace {

using std::chrono::seconds;

constexpr int kWaitMs = 5000;
constexpr auto kWait = seconds(20);
constexpr uint16_t kNotFound = static_cast<uint16_t>(absl::StatusCode::kNotFound);

// One segment of a raw request.
wire::Segment seg(uint64_t id, uint64_t key, uint64_t offset, uint64_t length) {
  return wire::Segment{id, key, offset, length};
}

// What a target answered to one raw request.
struct Answer {
  bool completed = false;       // a completion came
  uint16_t status = 0;          // its canonical code
  std::string message;          // its message, byte for byte
  std::vector<std::byte> data;  // payload of the data frames before it
};

// A raw client that said hello as engine `key` on a control connection and then sends
// requests by hand, as a misbehaving peer would.
class RawInitiator {
 public:
  RawInitiator(uint16_t port, const std::string& key) : c_(port) {
    if (!c_.connected()) {
      return;
    }
    wire::Hello h;
    h.channel = wire::ChannelKind::kControl;
    h.key = key;
    h.capabilities = wire::kCapDataBatch;
    std::vector<std::byte> b(wire::hello_frame_bytes(key.size(), 0));
    if (!wire::encode_hello(h, b).ok() || !c_.send_all(b)) {
      return;
    }
    std::vector<std::byte> head(wire::kHeaderBytes);
    if (!c_.recv_exact(head.data(), head.size(), kWaitMs)) {
      return;
    }
    wire::Result<wire::FrameHeader> fh = wire::decode_header(head);
    if (!fh.ok() || fh->type != wire::FrameType::kHelloAck) {
      return;
    }
    std::vector<std::byte> body(fh->body_bytes);
    if (!c_.recv_exact(body.data(), body.size(), kWaitMs)) {
      return;
    }
    wire::Result<wire::HelloAck> ack = wire::decode_hello_ack_body(*fh, body);
    ready_ = ack.ok() && ack->status == 0;
  }
  bool ready() const { return ready_; }

  // Sends one request (and, for a write, `payload` as one batch entry per segment) and
  // reads until its completion.
  Answer request(wire::OpKind op, const std::vector<wire::Segment>& segs,
                 const std::vector<std::byte>& payload = {}) {
    Answer a;
    const uint32_t seq = ++seq_;
    std::vector<std::byte> req(wire::request_frame_bytes(segs.size()));
    if (!wire::encode_request(op, seq, segs, req, 0, seq).ok() || !c_.send_all(req)) {
      return a;
    }
    if (op == wire::OpKind::kWrite) {
      std::vector<wire::BatchEntry> entries;
      for (uint32_t i = 0; i < segs.size(); ++i) {
        entries.push_back(wire::BatchEntry{i, static_cast<uint32_t>(segs[i].length), 0});
      }
      std::vector<std::byte> batch(wire::data_batch_frame_bytes(entries.size()));
      if (!wire::encode_data_batch(seq, entries, batch, seq).ok() || !c_.send_all(batch) ||
          !c_.send_all(payload)) {
        return a;
      }
    }
    for (;;) {
      std::vector<std::byte> head(wire::kHeaderBytes);
      if (!c_.recv_exact(head.data(), head.size(), kWaitMs)) {
        return a;
      }
      wire::Result<wire::FrameHeader> fh = wire::decode_header(head);
      if (!fh.ok()) {
        return a;
      }
      std::vector<std::byte> body(fh->body_bytes), pay(fh->payload_bytes);
      if (!c_.recv_exact(body.data(), body.size(), kWaitMs) ||
          !c_.recv_exact(pay.data(), pay.size(), kWaitMs)) {
        return a;
      }
      a.data.insert(a.data.end(), pay.begin(), pay.end());
      if (fh->type == wire::FrameType::kCompletion) {
        wire::Result<wire::Completion> cmp = wire::decode_completion_body(*fh, body);
        if (cmp.ok() && cmp->seq == seq) {
          a.completed = true;
          a.status = cmp->status;
          a.message = std::string(cmp->message);
          return a;
        }
      }
    }
  }

 private:
  testing::RawClient c_;
  bool ready_ = false;
  uint32_t seq_ = 0;
};

// Two engines that know each other.
struct Pair {
  std::unique_ptr<Engine> a, b;
  Pair(const std::string& ka = "initiator", const std::string& kb = "target") {
    a = *Engine::create(ka);
    b = *Engine::create(kb);
    EXPECT_TRUE(a->register_remote_engine(b->desc()).ok());
    EXPECT_TRUE(b->register_remote_engine(a->desc()).ok());
  }
};

// Starts a transfer and waits for its end.
StatusHandle finish(absl::StatusOr<StatusHandle> s) {
  EXPECT_TRUE(s.ok()) << s.status();
  if (!s.ok()) {
    return nullptr;
  }
  EXPECT_TRUE((*s)->wait(kWait)) << "transfer " << (*s)->transfer_id() << " did not finish";
  return *s;
}

// A 1 MiB region: its size, 1048576, must appear in no message a peer gets.
constexpr size_t kRegionBytes = 1 << 20;
const std::string kRegionSize = std::to_string(kRegionBytes);

TEST(RegionKeys, AWrongKeyIsRefusedExactlyLikeAnUnknownId) {
  auto target = *Engine::create("target");
  std::vector<uint8_t> region(kRegionBytes, 0x5A);
  const MemoryDesc md = *target->register_memory(region.data(), region.size());
  RawInitiator mallory(target->desc().port, "mallory");
  ASSERT_TRUE(mallory.ready());

  // The control: with the right key the raw client reads.
  const Answer right = mallory.request(wire::OpKind::kRead, {seg(md.id, md.rkey, 0, 64)});
  ASSERT_TRUE(right.completed);
  EXPECT_EQ(right.status, 0) << right.message;
  EXPECT_EQ(right.data.size(), 64u);

  for (wire::OpKind op : {wire::OpKind::kRead, wire::OpKind::kWrite}) {
    SCOPED_TRACE(op == wire::OpKind::kRead ? "read" : "write");
    const std::vector<std::byte> payload(64, std::byte{0xEE});
    const Answer unknown = mallory.request(op, {seg(md.id + 1000, md.rkey, 0, 64)}, payload);
    ASSERT_TRUE(unknown.completed);
    EXPECT_EQ(unknown.status, kNotFound);
    for (uint64_t key : {uint64_t{0}, md.rkey ^ 1, md.rkey ^ (uint64_t{1} << 63), ~md.rkey}) {
      SCOPED_TRACE(key);
      const Answer wrong = mallory.request(op, {seg(md.id, key, 0, 64)}, payload);
      ASSERT_TRUE(wrong.completed);
      EXPECT_EQ(wrong.status, unknown.status);
      EXPECT_EQ(wrong.message, unknown.message) << "the text tells a wrong key from an unknown id";
      EXPECT_TRUE(wrong.data.empty());
      // Out of range with a wrong key: still the same answer (the key is judged first).
      const Answer far = mallory.request(op, {seg(md.id, key, kRegionBytes, 64)}, payload);
      EXPECT_EQ(far.status, unknown.status);
      EXPECT_EQ(far.message, unknown.message);
    }
    EXPECT_EQ(unknown.message.find(kRegionSize), std::string::npos) << unknown.message;
    EXPECT_EQ(unknown.message.find(std::to_string(md.id)), std::string::npos) << unknown.message;
  }
  for (size_t i = 0; i < region.size(); ++i) {
    ASSERT_EQ(region[i], 0x5A) << "byte " << i << " changed";
  }
  EXPECT_EQ(target->stats().bytes_sent, 64u) << "only the control read may have sent data";
}

TEST(RegionKeys, GuessingIdsWithoutTheKeyReadsNothing) {
  auto target = *Engine::create("target");
  std::vector<std::vector<uint8_t>> regions(3, std::vector<uint8_t>(4096, 0x5A));
  for (auto& r : regions) {
    ASSERT_TRUE(target->register_memory(r.data(), r.size()).ok());
  }
  RawInitiator mallory(target->desc().port, "mallory");
  ASSERT_TRUE(mallory.ready());
  std::string first;
  for (uint64_t id = 1; id <= 10; ++id) {
    SCOPED_TRACE(id);
    const Answer a = mallory.request(wire::OpKind::kRead, {seg(id, 0, 0, 64)});
    ASSERT_TRUE(a.completed) << "no completion";
    EXPECT_EQ(a.status, kNotFound) << "a guessed id was read";
    EXPECT_TRUE(a.data.empty()) << a.data.size() << " bytes of region " << id << " came back";
    EXPECT_EQ(a.message.find("4096"), std::string::npos) << a.message;
    if (id == 1) {
      first = a.message;
    }
    EXPECT_EQ(a.message, first) << "registered and unregistered ids answer differently";
  }
  EXPECT_EQ(target->stats().bytes_sent, 0u);
}

TEST(RegionKeys, OutOfRangeOnAKeyedRegionDoesNotSayItsSize) {
  auto target = *Engine::create("target");
  std::vector<uint8_t> region(kRegionBytes, 0x5A);
  const MemoryDesc md = *target->register_memory(region.data(), region.size());
  RawInitiator raw(target->desc().port, "raw");
  ASSERT_TRUE(raw.ready());
  const Answer a = raw.request(wire::OpKind::kRead, {seg(md.id, md.rkey, kRegionBytes - 10, 100)});
  ASSERT_TRUE(a.completed);
  EXPECT_EQ(a.status, static_cast<uint16_t>(absl::StatusCode::kOutOfRange));
  EXPECT_NE(a.message.find("out of range"), std::string::npos) << a.message;
  EXPECT_EQ(a.message.find(kRegionSize), std::string::npos) << a.message;
  EXPECT_TRUE(a.data.empty());

  // Through the public API, with a descriptor that claims more than was registered.
  Pair p;
  std::vector<uint8_t> src(2 * kRegionBytes, 1), dst(kRegionBytes, 0);
  const MemoryDesc ms = *p.a->register_memory(src.data(), src.size());
  MemoryDesc lying = *p.b->register_memory(dst.data(), dst.size());
  lying.size = 2 * kRegionBytes;
  StatusHandle w = finish(p.a->write(ms, 0, lying, kRegionBytes - 10, 100, 1));
  EXPECT_EQ(w->code(), absl::StatusCode::kOutOfRange) << w->status();
  EXPECT_EQ(w->message().find(kRegionSize), std::string::npos) << w->message();
}

TEST(RegionKeys, ReRegistrationChangesTheKeyAndTheOldKeyIsRefused) {
  Pair p;
  std::vector<uint8_t> src(4096, 7), dst(4096, 0);
  const MemoryDesc ms = *p.a->register_memory(src.data(), src.size());
  const MemoryDesc old = *p.b->register_memory(dst.data(), dst.size());
  ASSERT_TRUE(p.b->deregister_memory(old).ok());
  const MemoryDesc fresh = *p.b->register_memory(dst.data(), dst.size());
  EXPECT_NE(fresh.rkey, old.rkey);
  EXPECT_NE(fresh.rkey, 0u);

  MemoryDesc old_key = fresh;  // the new id, guessed, with the key of the old registration
  old_key.rkey = old.rkey;
  StatusHandle stale = finish(p.a->write(ms, 0, old, 0, 64, 1));
  StatusHandle guessed = finish(p.a->write(ms, 0, old_key, 0, 64, 2));
  for (const StatusHandle& s : {stale, guessed}) {
    EXPECT_EQ(s->code(), absl::StatusCode::kNotFound) << s->status();
  }
  EXPECT_EQ(stale->message(), guessed->message());
  EXPECT_EQ(dst, std::vector<uint8_t>(4096, 0));
  StatusHandle ok = finish(p.a->write(ms, 0, fresh, 0, 4096, 3));
  EXPECT_TRUE(ok->succeeded()) << ok->status();
  EXPECT_EQ(dst, src);

  // This engine's own descriptor with another key is an argument error, said at once.
  MemoryDesc local = ms;
  local.rkey ^= 1;
  absl::StatusOr<StatusHandle> bad = p.a->write(local, 0, fresh, 0, 64, 4);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument) << bad.status();
}

TEST(MemoryDescPack, RoundTripsEveryFieldWithTheKey) {
  auto e = *Engine::create("owner");
  std::vector<uint8_t> buf(4096);
  const MemoryDesc md = *e->register_memory(buf.data(), buf.size());
  ASSERT_NE(md.rkey, 0u);
  absl::StatusOr<MemoryDesc> back = MemoryDesc::unpack(md.pack());
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, md);
  EXPECT_EQ(back->rkey, md.rkey);

  MemoryDesc all{"k",          ~uint64_t{0},      7, ~uint64_t{0}, MemoryLocation::kGpu,
                 ~uint64_t{0}, 0x0102030405060708};
  back = MemoryDesc::unpack(all.pack());
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, all);
  // Every truncation is refused.
  const std::string packed = all.pack();
  for (size_t n = 0; n < packed.size(); ++n) {
    EXPECT_FALSE(MemoryDesc::unpack(packed.substr(0, n)).ok()) << "cut at " << n;
  }
}

TEST(MemoryDescPack, RefusesAnOlderPackSayingWhatToDo) {
  const MemoryDesc md{"k", 3, -1, 4096, MemoryLocation::kCpu, 0x1000, 0x55};
  // Format 1: the same fields without the key at the end.
  std::string v1 = md.pack();
  v1[4] = 1;
  v1.resize(v1.size() - 8);
  absl::StatusOr<MemoryDesc> r = MemoryDesc::unpack(v1);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  const std::string msg(r.status().message());
  EXPECT_NE(msg.find("packed by an older ringxfer"), std::string::npos) << msg;
  EXPECT_NE(msg.find("re-register"), std::string::npos) << msg;
  EXPECT_NE(msg.find("re-exchange"), std::string::npos) << msg;

  std::string newer = md.pack();
  newer[4] = 3;
  r = MemoryDesc::unpack(newer);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(std::string(r.status().message()).find("newer"), std::string::npos) << r.status();

  MemoryDesc keyless = md;
  keyless.rkey = 0;
  EXPECT_EQ(MemoryDesc::unpack(keyless.pack()).status().code(), absl::StatusCode::kInvalidArgument);
  // An EngineDesc still packs and unpacks (its format did not change).
  const EngineDesc ed{"e", "n", "h", "127.0.0.1", 9, 1, 3};
  EXPECT_EQ(*EngineDesc::unpack(ed.pack()), ed);
}

// Pops the target's inbound status of `id` from `from`, which it records shortly after
// the initiator's status is final.
StatusHandle pop_inbound(Engine& target, const std::string& from, uint64_t id) {
  for (int i = 0; i < 2000; ++i) {
    if (StatusHandle s = target.pop_inbound_status(from, id)) {
      return s;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return nullptr;
}

// Small transfers go whole to one lane group; 1 MiB is split over both ring threads.
const uint64_t kSizes[] = {64, 1 << 20};

TEST(MemoryAccessRights, AReadOnlyRegionRefusesWritesAndServesReads) {
  Pair p;
  std::vector<uint8_t> local(1 << 20, 7), region(1 << 20, 0x5A);
  const MemoryDesc ms = *p.a->register_memory(local.data(), local.size());
  MemoryAccess read_only;
  read_only.remote_write = false;
  const MemoryDesc md =
      *p.b->register_memory(region.data(), region.size(), MemoryLocation::kCpu, -1, read_only);
  uint64_t denied = 0;
  for (uint64_t size : kSizes) {
    SCOPED_TRACE(size);
    const uint64_t id = p.a->allocate_transfer_id();
    StatusHandle w = finish(p.a->write(ms, 0, md, 0, size, id));
    EXPECT_EQ(w->code(), absl::StatusCode::kPermissionDenied) << w->status();
    EXPECT_NE(w->message().find("does not allow remote writes"), std::string::npos) << w->message();
    EXPECT_GT(p.b->stats().access_denied, denied);
    denied = p.b->stats().access_denied;
    StatusHandle in = pop_inbound(*p.b, "initiator", id);
    ASSERT_NE(in, nullptr);
    EXPECT_EQ(in->code(), absl::StatusCode::kPermissionDenied) << in->status();
    EXPECT_EQ(region, std::vector<uint8_t>(1 << 20, 0x5A)) << "a refused write changed memory";

    StatusHandle r = finish(p.a->read(ms, 0, md, 0, size, p.a->allocate_transfer_id()));
    EXPECT_TRUE(r->succeeded()) << r->status();
    EXPECT_EQ(local[0], 0x5A);
    EXPECT_EQ(local[size - 1], 0x5A);
    std::fill(local.begin(), local.end(), 7);
  }
  EXPECT_EQ(p.b->stats().access_denied, denied) << "a served read was counted";
  EXPECT_GE(p.a->stats().transfers_failed, 2u);
}

TEST(MemoryAccessRights, AWriteOnlyRegionRefusesReadsAndTakesWrites) {
  Pair p;
  std::vector<uint8_t> local(1 << 20, 7), region(1 << 20, 0x5A);
  const MemoryDesc ms = *p.a->register_memory(local.data(), local.size());
  MemoryAccess write_only;
  write_only.remote_read = false;
  const MemoryDesc md =
      *p.b->register_memory(region.data(), region.size(), MemoryLocation::kCpu, -1, write_only);
  for (uint64_t size : kSizes) {
    SCOPED_TRACE(size);
    StatusHandle r = finish(p.a->read(ms, 0, md, 0, size, p.a->allocate_transfer_id()));
    EXPECT_EQ(r->code(), absl::StatusCode::kPermissionDenied) << r->status();
    EXPECT_NE(r->message().find("does not allow remote reads"), std::string::npos) << r->message();
    EXPECT_EQ(local, std::vector<uint8_t>(1 << 20, 7)) << "a refused read brought bytes";
  }
  EXPECT_GE(p.b->stats().access_denied, 2u);
  EXPECT_EQ(p.b->stats().bytes_sent, 0u);
  StatusHandle w = finish(p.a->write(ms, 0, md, 0, 1 << 20, p.a->allocate_transfer_id()));
  EXPECT_TRUE(w->succeeded()) << w->status();
  EXPECT_EQ(region, local);
}

TEST(MemoryAccessRights, AllowedEnginesAdmitTheListedEngineAndRefuseAnother) {
  auto target = *Engine::create("target");
  auto alice = *Engine::create("alice");
  auto bob = *Engine::create("bob");
  for (Engine* e : {alice.get(), bob.get()}) {
    ASSERT_TRUE(e->register_remote_engine(target->desc()).ok());
  }
  std::vector<uint8_t> region(1 << 20, 0), a_src(1 << 20, 1), b_src(1 << 20, 2);
  MemoryAccess only_alice;
  only_alice.allowed_engines = {"alice", "carol"};
  const MemoryDesc md =
      *target->register_memory(region.data(), region.size(), MemoryLocation::kCpu, -1, only_alice);
  const MemoryDesc ma = *alice->register_memory(a_src.data(), a_src.size());
  const MemoryDesc mb = *bob->register_memory(b_src.data(), b_src.size());
  for (uint64_t size : kSizes) {
    SCOPED_TRACE(size);
    StatusHandle ok = finish(alice->write(ma, 0, md, 0, size, alice->allocate_transfer_id()));
    EXPECT_TRUE(ok->succeeded()) << ok->status();
    EXPECT_EQ(region[size - 1], 1);
    StatusHandle read = finish(alice->read(ma, 0, md, 0, size, alice->allocate_transfer_id()));
    EXPECT_TRUE(read->succeeded()) << read->status();

    const uint64_t denied = target->stats().access_denied;
    StatusHandle no = finish(bob->write(mb, 0, md, 0, size, bob->allocate_transfer_id()));
    EXPECT_EQ(no->code(), absl::StatusCode::kPermissionDenied) << no->status();
    EXPECT_NE(no->message().find("does not admit engine bob"), std::string::npos) << no->message();
    EXPECT_EQ(no->message().find("alice"), std::string::npos) << no->message();
    StatusHandle no_read = finish(bob->read(mb, 0, md, 0, size, bob->allocate_transfer_id()));
    EXPECT_EQ(no_read->code(), absl::StatusCode::kPermissionDenied) << no_read->status();
    EXPECT_GT(target->stats().access_denied, denied);
    EXPECT_EQ(region[0], 1) << "bob's refused write changed memory";
    EXPECT_EQ(b_src[0], 2) << "bob's refused read brought bytes";
  }
}

TEST(MemoryAccessRights, RejectsAnAllowedEngineThatIsNoEngineKey) {
  auto e = *Engine::create("owner");
  std::vector<uint8_t> buf(64);
  for (const std::string& bad : {std::string(),
                                 std::string("a\x1f"
                                             "1"),
                                 std::string(Engine::kEngineKeyBytesMax + 1, 'k')}) {
    MemoryAccess access;
    access.allowed_engines = {"fine", bad};
    absl::StatusOr<MemoryDesc> r =
        e->register_memory(buf.data(), buf.size(), MemoryLocation::kCpu, -1, access);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(std::string(r.status().message()).find("allowed_engines[1]"), std::string::npos)
        << r.status();
  }
}

// The raw socket's view: a refused write is kPermissionDenied, counted, and the payload
// that followed it was read and dropped, not placed.
TEST(MemoryAccessRights, ARawWriteToAReadOnlyRegionIsRefusedAndChangesNothing) {
  auto target = *Engine::create("target");
  std::vector<uint8_t> region(4096, 0x5A);
  MemoryAccess read_only;
  read_only.remote_write = false;
  const MemoryDesc md =
      *target->register_memory(region.data(), region.size(), MemoryLocation::kCpu, -1, read_only);
  RawInitiator raw(target->desc().port, "raw");
  ASSERT_TRUE(raw.ready());
  const std::vector<std::byte> payload(64, std::byte{0xEE});
  const Answer w = raw.request(wire::OpKind::kWrite, {seg(md.id, md.rkey, 0, 64)}, payload);
  ASSERT_TRUE(w.completed);
  EXPECT_EQ(w.status, static_cast<uint16_t>(absl::StatusCode::kPermissionDenied)) << w.message;
  EXPECT_EQ(region, std::vector<uint8_t>(4096, 0x5A));
  EXPECT_EQ(target->stats().access_denied, 1u);
  const Answer r = raw.request(wire::OpKind::kRead, {seg(md.id, md.rkey, 0, 64)});
  ASSERT_TRUE(r.completed);
  EXPECT_EQ(r.status, 0) << r.message;
  EXPECT_EQ(r.data.size(), 64u);
}

}  // namespace
}  // namespace ringxfer
