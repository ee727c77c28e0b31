// Regression tests for the failures of issue 10, through the public API: concurrent
// reads right after two engines meet, deregistration while a peer streams into (or
// reads from) a region, teardown with transfers in flight, fork().
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "gtest/gtest.h"
#include "ringxfer/ringxfer.h"
#include "support/fake_peer.h"
#include "support/raw_socket.h"
#include "wire/codec.h"

namespace ringxfer {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

void fill_pattern(uint8_t* p, size_t n, uint32_t seed) {
  uint32_t x = seed * 2654435761u + 1;
  for (size_t i = 0; i < n; ++i) {
    x = x * 1103515245u + 12345u;
    p[i] = static_cast<uint8_t>(x >> 16);
  }
}

StatusHandle must(absl::StatusOr<StatusHandle> s) {
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? *s : nullptr;
}

// Issue 10, 1: a fresh initiator issues 8 reads of 128 KiB at once to a target with two
// ring threads and two data connections. The target's send path once re-entered itself
// from a send completion: frames went out twice, once from freed memory, and the
// initiator closed its connections as hostile.
TEST(Regression, FreshInitiatorsReadConcurrentlyFromOneTarget) {
  EngineConfig cfg;
  cfg.rings = 2;
  cfg.stripes = 2;
  cfg.stripe_threshold_bytes = 65536;
  auto target = Engine::create("target", cfg);
  ASSERT_TRUE(target.ok()) << target.status();
  constexpr size_t kRead = 128 << 10;
  constexpr int kReads = 8;
  std::vector<uint8_t> src(kRead * kReads);
  fill_pattern(src.data(), src.size(), 11);
  MemoryDesc ms = *(*target)->register_memory(src.data(), src.size());
  int failed = 0;
  for (int round = 0; round < 40; ++round) {
    SCOPED_TRACE("initiator " + std::to_string(round));
    auto init = Engine::create("init-" + std::to_string(round), cfg);
    ASSERT_TRUE(init.ok()) << init.status();
    ASSERT_TRUE((*init)->register_remote_engine((*target)->desc()).ok());
    ASSERT_TRUE((*target)->register_remote_engine((*init)->desc()).ok());
    std::vector<uint8_t> dst(src.size(), 0);
    MemoryDesc md = *(*init)->register_memory(dst.data(), dst.size());
    std::vector<StatusHandle> reads;
    for (int i = 0; i < kReads; ++i) {
      reads.push_back(must(
          (*init)->read(md, i * kRead, ms, i * kRead, kRead, (*init)->allocate_transfer_id())));
    }
    for (const StatusHandle& s : reads) {
      ASSERT_TRUE(s->wait(seconds(20)));
      if (!s->succeeded()) {
        ++failed;
        ADD_FAILURE() << "read " << s->transfer_id() << ": " << s->status();
      }
    }
    EXPECT_EQ(std::memcmp(src.data(), dst.data(), src.size()), 0);
    EXPECT_EQ((*init)->stats().hostile_frames, 0u);
    ASSERT_TRUE((*target)->deregister_remote_engine((*init)->desc()).ok());
  }
  EXPECT_EQ(failed, 0);
  EXPECT_EQ((*target)->stats().hostile_frames, 0u);
}

// Issue 10, 2: once deregister_memory returns, no byte of a peer's write in flight may
// land in the region, and the write reports a failure, not success.
TEST(Regression, DeregistrationFencesAWriteInFlight) {
  EngineConfig cfg;
  cfg.rings = 1;
  cfg.timeout = seconds(20);
  auto a = Engine::create("writer", cfg);
  auto b = Engine::create("target", cfg);
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_TRUE((*a)->register_remote_engine((*b)->desc()).ok());
  ASSERT_TRUE((*b)->register_remote_engine((*a)->desc()).ok());
  constexpr size_t kSize = 256 << 20;
  std::vector<uint8_t> src(kSize, 0x11);
  auto dst = std::make_unique<uint8_t[]>(kSize);
  std::memset(dst.get(), 0, kSize);
  MemoryDesc ms = *(*a)->register_memory(src.data(), kSize);
  MemoryDesc md = *(*b)->register_memory(dst.get(), kSize);
  StatusHandle w = must((*a)->write(ms, 0, md, 0, kSize, 1));
  // Deregister once some, but not all, of the payload has landed.
  const auto t0 = std::chrono::steady_clock::now();
  while ((*b)->stats().bytes_received == 0 && !w->done() &&
         std::chrono::steady_clock::now() - t0 < seconds(10)) {
    std::this_thread::yield();
  }
  ASSERT_TRUE((*b)->deregister_memory(md).ok());
  const bool done_before = w->done();
  std::memset(dst.get(), 0xCD, kSize);  // the canary: nothing may change it now
  ASSERT_TRUE(w->wait(seconds(30)));
  if (!done_before) {
    EXPECT_TRUE(w->failed()) << "a write into memory deregistered mid-way reported success";
    EXPECT_EQ(w->code(), absl::StatusCode::kFailedPrecondition) << w->status();
  }
  // Give late bytes a chance to show, then check the canary.
  auto probe = must((*a)->write(ms, 0, md, 0, 1, 2));
  ASSERT_TRUE(probe->wait(seconds(10)));
  EXPECT_TRUE(probe->failed()) << "a write into deregistered memory succeeded";
  for (size_t i = 0; i < kSize; i += 4096) {
    ASSERT_EQ(dst[i], 0xCD) << "byte " << i << " landed after deregister_memory returned";
  }
  EXPECT_EQ(dst[kSize - 1], 0xCD);
}

// Issue 10, 2, the read side: once deregister_memory returns, no byte leaves the region.
TEST(Regression, DeregistrationFencesAReadInFlight) {
  EngineConfig cfg;
  cfg.rings = 1;
  cfg.timeout = seconds(20);
  auto a = Engine::create("reader", cfg);
  auto b = Engine::create("target", cfg);
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_TRUE((*a)->register_remote_engine((*b)->desc()).ok());
  ASSERT_TRUE((*b)->register_remote_engine((*a)->desc()).ok());
  constexpr size_t kSize = 256 << 20;
  std::vector<uint8_t> src(kSize, 0x22), dst(kSize, 0);
  MemoryDesc ms = *(*b)->register_memory(src.data(), kSize);
  MemoryDesc md = *(*a)->register_memory(dst.data(), kSize);
  StatusHandle r = must((*a)->read(md, 0, ms, 0, kSize, 1));
  const auto t0 = std::chrono::steady_clock::now();
  while ((*a)->stats().bytes_received == 0 && !r->done() &&
         std::chrono::steady_clock::now() - t0 < seconds(10)) {
    std::this_thread::yield();
  }
  ASSERT_TRUE((*b)->deregister_memory(ms).ok());
  const bool done_before = r->done();
  std::memset(src.data(), 0xCD, kSize);
  ASSERT_TRUE(r->wait(seconds(30)));
  if (!done_before) {
    EXPECT_TRUE(r->failed()) << "a read of memory deregistered mid-way reported success";
  }
  for (size_t i = 0; i < kSize; i += 512) {
    ASSERT_NE(dst[i], 0xCD) << "byte " << i << " left the region after deregister_memory";
  }
}

StatusHandle pop_inbound(Engine& target, const std::string& from, uint64_t id,
                         milliseconds within) {
  const auto until = std::chrono::steady_clock::now() + within;
  do {
    if (StatusHandle s = target.pop_inbound_status(from, id)) {
      return s;
    }
    std::this_thread::sleep_for(milliseconds(2));
  } while (std::chrono::steady_clock::now() < until);
  return nullptr;
}

// Two batch transfers from one initiator to one target, the second queued behind the
// first; the initiator deregisters the second's local memory while the first moves. A
// send takes at most 1,024 iovecs, and each segment here is one, so part of the second
// transfer's frames wait in the queues when it is deregistered.
struct QueuedBehind {
  static constexpr size_t kSize = 128 << 20;
  static constexpr size_t kSegments = 1024;
  static constexpr size_t kSegment = 64 << 10;  // every other 64 KiB of the region
  std::unique_ptr<Engine> a, b;
  std::vector<uint8_t> a1 = std::vector<uint8_t>(kSize, 0x11),
                       a2 = std::vector<uint8_t>(kSize, 0x22);
  std::vector<uint8_t> b1 = std::vector<uint8_t>(kSize, 0x33),
                       b2 = std::vector<uint8_t>(kSize, 0x44);
  MemoryDesc ma1, ma2, mb1, mb2;
  StatusHandle first, second;
  explicit QueuedBehind(bool write) {
    EngineConfig cfg;
    cfg.rings = 1;
    cfg.timeout = seconds(20);
    a = std::move(*Engine::create("initiator", cfg));
    b = std::move(*Engine::create("target", cfg));
    EXPECT_TRUE(a->register_remote_engine(b->desc()).ok());
    ma1 = *a->register_memory(a1.data(), kSize);
    ma2 = *a->register_memory(a2.data(), kSize);
    mb1 = *b->register_memory(b1.data(), kSize);
    mb2 = *b->register_memory(b2.data(), kSize);
    std::vector<uint64_t> offsets, sizes(kSegments, kSegment);
    for (size_t i = 0; i < kSegments; ++i) {
      offsets.push_back(2 * i * kSegment);
    }
    if (write) {
      first = must(a->batch_write(ma1, offsets, mb1, offsets, sizes, 1));
      second = must(a->batch_write(ma2, offsets, mb2, offsets, sizes, 2));
    } else {
      first = must(a->batch_read(ma1, offsets, mb1, offsets, sizes, 1));
      second = must(a->batch_read(ma2, offsets, mb2, offsets, sizes, 2));
    }
    Engine& receiver = write ? *b : *a;
    const auto t0 = std::chrono::steady_clock::now();
    while (receiver.stats().bytes_received == 0 &&
           std::chrono::steady_clock::now() - t0 < seconds(10)) {
      std::this_thread::yield();
    }
    EXPECT_TRUE(a->deregister_memory(ma2).ok());
  }
  // Whether `to` holds `from`'s bytes in every segment and its own (`fill`) between them.
  static bool copied(const std::vector<uint8_t>& from, const std::vector<uint8_t>& to,
                     uint8_t fill) {
    for (size_t off = 0; off < kSize; off += 4096) {
      const bool in_segment = (off / kSegment) % 2 == 0;
      if (to[off] != (in_segment ? from[off] : fill)) {
        return false;
      }
    }
    return true;
  }
};

// An initiator that deregisters the source of a write it has started sends no more of
// it and says so (wire "Cancel"): the target finishes the transfer at once, as failed,
// instead of holding it until its deadline (20 s here) waiting for bytes that never come.
TEST(Regression, ATargetFinishesAWriteWhoseSourceWasDeregisteredAtOnce) {
  QueuedBehind t(/*write=*/true);
  ASSERT_TRUE(t.second->wait(seconds(10)));
  if (t.second->succeeded()) {
    GTEST_SKIP() << "the whole second write was in the kernel before deregister_memory";
  }
  EXPECT_EQ(t.second->code(), absl::StatusCode::kFailedPrecondition) << t.second->status();
  StatusHandle in = pop_inbound(*t.b, "initiator", 2, seconds(5));
  ASSERT_NE(in, nullptr) << "the target still waits for the rest of a write that will not come";
  EXPECT_EQ(in->code(), absl::StatusCode::kFailedPrecondition) << in->status();
  EXPECT_NE(in->status().message().find("stopped transfer 2"), std::string::npos) << in->status();
  ASSERT_TRUE(t.first->wait(seconds(20)));
  EXPECT_TRUE(t.first->succeeded()) << t.first->status();
  EXPECT_TRUE(QueuedBehind::copied(t.a1, t.b1, 0x33));
  // The connections stay: the next write goes through them.
  StatusHandle next = must(t.a->write(t.ma1, 0, t.mb2, 0, 4096, 3));
  ASSERT_TRUE(next->wait(seconds(10)));
  EXPECT_TRUE(next->succeeded()) << next->status();
  EXPECT_EQ(t.b2[0], 0x11);
  EXPECT_EQ(t.a->stats().hostile_frames + t.b->stats().hostile_frames, 0u);
}

// The read side: the target stops serving a read whose destination the initiator
// deregistered, and reports it stopped.
TEST(Regression, ATargetStopsServingAReadWhoseDestinationWasDeregistered) {
  QueuedBehind t(/*write=*/false);
  ASSERT_TRUE(t.second->wait(seconds(10)));
  if (t.second->succeeded()) {
    GTEST_SKIP() << "the whole second read had arrived before deregister_memory";
  }
  StatusHandle in = pop_inbound(*t.b, "initiator", 2, seconds(5));
  ASSERT_NE(in, nullptr);
  EXPECT_EQ(in->code(), absl::StatusCode::kFailedPrecondition)
      << "the target served the whole read to an initiator that stopped it: " << in->status();
  ASSERT_TRUE(t.first->wait(seconds(20)));
  EXPECT_TRUE(t.first->succeeded()) << t.first->status();
  EXPECT_TRUE(QueuedBehind::copied(t.b1, t.a1, 0x11));
  EXPECT_LT(t.b->stats().bytes_sent, 2 * QueuedBehind::kSegments * QueuedBehind::kSegment);
  EXPECT_EQ(t.a->stats().hostile_frames + t.b->stats().hostile_frames, 0u);
}

// A raw client that said hello to `port` as engine `key` on `channel` (stripe 0) and got
// its hello ack: a peer whose frames the test writes byte by byte.
std::unique_ptr<testing::RawClient> raw_peer(uint16_t port, const std::string& key,
                                             wire::ChannelKind channel) {
  auto c = std::make_unique<testing::RawClient>(port);
  wire::Hello h;
  h.channel = channel;
  h.key = key;
  h.capabilities = wire::kCapDataBatch;
  std::vector<std::byte> b(wire::hello_frame_bytes(key.size(), 0));
  EXPECT_TRUE(wire::encode_hello(h, b).ok());
  EXPECT_TRUE(c->connected() && c->send_all(b));
  std::vector<std::byte> head(wire::kHeaderBytes);
  EXPECT_TRUE(c->recv_exact(head.data(), head.size(), 5000)) << "no hello ack";
  wire::Result<wire::FrameHeader> fh = wire::decode_header(head);
  EXPECT_TRUE(fh.ok() && fh->type == wire::FrameType::kHelloAck);
  std::vector<std::byte> body(fh.ok() ? fh->body_bytes : 0);
  EXPECT_TRUE(c->recv_exact(body.data(), body.size(), 5000));
  return c;
}

// A batch frame of write `id` (request `seq`): `length` bytes of segment 0 at `offset`.
std::vector<std::byte> batch_frame(uint64_t id, uint32_t seq, uint64_t offset, uint32_t length) {
  const std::vector<wire::BatchEntry> entries = {{0, length, offset}};
  std::vector<std::byte> b(wire::data_batch_frame_bytes(entries.size()));
  EXPECT_TRUE(wire::encode_data_batch(id, entries, b, seq).ok());
  return b;
}

constexpr uint32_t kMiB = 1 << 20;

// A target engine with a 3 MiB region, and a raw initiator ("mallory") with a control
// and a data connection that has sent the request for a write of the whole region
// (transfer 9, request sequence 1): the test sends its frames byte by byte.
struct RawWrite {
  std::unique_ptr<Engine> target;
  std::vector<uint8_t> region = std::vector<uint8_t>(3 * kMiB, 0);
  MemoryDesc md;
  std::unique_ptr<testing::RawClient> ctrl, data;
  explicit RawWrite(const EngineConfig& cfg) {
    target = std::move(*Engine::create("target", cfg));
    md = *target->register_memory(region.data(), region.size());
    const uint16_t port = target->desc().port;
    ctrl = raw_peer(port, "mallory", wire::ChannelKind::kControl);
    data = raw_peer(port, "mallory", wire::ChannelKind::kData);
    const std::vector<wire::Segment> segs = {{md.id, md.rkey, 0, region.size()}};
    std::vector<std::byte> req(wire::request_frame_bytes(1));
    EXPECT_TRUE(wire::encode_request(wire::OpKind::kWrite, 9, segs, req, 0, /*seq=*/1).ok());
    EXPECT_TRUE(ctrl->send_all(req));
  }
};

// A connection that has placed payload of a write and then drops payload of it (the
// write failed) must not count that as the end of a receive another connection still
// has in the region. It once did: the connection kept a pointer to the write after its
// first payload, the dropped payload's end was taken for that write's receive ending
// again, the count of receives in progress reached 0 while the data connection was
// still receiving, and deregister_memory returned with bytes still landing.
TEST(Regression, DeregistrationWaitsForEveryConnectionStillReceivingAWrite) {
  EngineConfig cfg;
  cfg.rings = 1;
  cfg.timeout = seconds(20);
  RawWrite w(cfg);
  std::unique_ptr<Engine>& target = w.target;  // lambdas below capture these (not bindings)
  std::vector<uint8_t>& region = w.region;
  const MemoryDesc& md = w.md;
  std::unique_ptr<testing::RawClient>&ctrl = w.ctrl, &data = w.data;
  const std::vector<std::byte> mib(kMiB, std::byte{0xEE});
  // The first MiB whole on the control connection...
  ASSERT_TRUE(ctrl->send_all(batch_frame(9, 1, 0, kMiB)) && ctrl->send_all(mib));
  const auto t0 = std::chrono::steady_clock::now();
  while (target->stats().bytes_received < kMiB &&
         std::chrono::steady_clock::now() - t0 < seconds(10)) {
    std::this_thread::sleep_for(milliseconds(1));
  }
  ASSERT_GE(target->stats().bytes_received, kMiB);
  // ...the second MiB's frame and 4 KiB of it on the data connection, which then waits
  // for the rest in the region.
  ASSERT_TRUE(data->send_all(batch_frame(9, 1, kMiB, kMiB)) &&
              data->send_all(std::span(mib).first(4096)));
  std::this_thread::sleep_for(milliseconds(200));
  std::atomic<bool> returned{false};
  std::thread dereg([&] {
    EXPECT_TRUE(target->deregister_memory(md).ok());
    returned = true;
  });
  std::this_thread::sleep_for(milliseconds(200));
  // The write failed: the third MiB, on the control connection, is read and dropped.
  ASSERT_TRUE(ctrl->send_all(batch_frame(9, 1, 2 * kMiB, kMiB)) && ctrl->send_all(mib));
  for (int i = 0; i < 50 && !returned; ++i) {
    std::this_thread::sleep_for(milliseconds(10));
  }
  const bool early = returned;
  EXPECT_FALSE(early) << "deregister_memory returned while a connection was still receiving "
                         "into the region";
  if (early) {
    std::memset(region.data(), 0xCD, region.size());  // the caller's memory again
  }
  ASSERT_TRUE(data->send_all(std::span(mib).subspan(4096)));
  dereg.join();
  if (early) {
    std::this_thread::sleep_for(milliseconds(300));
    for (size_t i = 0; i < region.size(); i += 4096) {
      ASSERT_EQ(region[i], 0xCD) << "byte " << i << " landed after deregister_memory returned";
    }
  }
}

std::vector<std::byte> cancel_frame(uint64_t id, uint32_t seq, uint64_t sent) {
  wire::Cancel x;
  x.transfer_id = id;
  x.seq = seq;
  x.op = wire::OpKind::kWrite;
  x.sent_bytes = sent;
  x.status = static_cast<uint16_t>(absl::StatusCode::kCancelled);
  std::vector<std::byte> b(wire::kCancelFrameBytes);
  EXPECT_TRUE(wire::encode_cancel(x, b).ok());
  return b;
}

// A cancel from a raw initiator: one that says how much of its write it sent finishes
// the write at once with the cancel's code; one that contradicts what came (fewer bytes
// than arrived, more than announced, another transfer's id) closes the connection as
// hostile.
TEST(Regression, ACancelFinishesAWriteAndALyingOneClosesTheConnection) {
  auto target = std::move(*Engine::create("target"));
  std::vector<uint8_t> region(3 * kMiB, 0);
  const MemoryDesc md = *target->register_memory(region.data(), region.size());
  const std::vector<wire::Segment> segs = {{md.id, md.rkey, 0, region.size()}};
  const std::vector<std::byte> mib(kMiB, std::byte{0xEE});
  auto start = [&](testing::RawClient& c, uint32_t seq) {
    std::vector<std::byte> req(wire::request_frame_bytes(1));
    EXPECT_TRUE(wire::encode_request(wire::OpKind::kWrite, 9, segs, req, 0, seq).ok());
    EXPECT_TRUE(c.send_all(req) && c.send_all(batch_frame(9, seq, 0, kMiB)) && c.send_all(mib));
  };
  {
    std::unique_ptr<testing::RawClient> c =
        raw_peer(target->desc().port, "honest", wire::ChannelKind::kControl);
    start(*c, 1);
    ASSERT_TRUE(c->send_all(cancel_frame(9, 1, kMiB)));
    std::vector<std::byte> head(wire::kHeaderBytes);
    ASSERT_TRUE(c->recv_exact(head.data(), head.size(), 5000)) << "no completion";
    wire::Result<wire::FrameHeader> fh = wire::decode_header(head);
    ASSERT_TRUE(fh.ok() && fh->type == wire::FrameType::kCompletion);
    std::vector<std::byte> body(fh->body_bytes);
    ASSERT_TRUE(c->recv_exact(body.data(), body.size(), 5000));
    wire::Result<wire::Completion> cmp = wire::decode_completion_body(*fh, body);
    ASSERT_TRUE(cmp.ok());
    EXPECT_EQ(cmp->status, static_cast<uint16_t>(absl::StatusCode::kCancelled)) << cmp->message;
    StatusHandle in = pop_inbound(*target, "honest", 9, seconds(5));
    ASSERT_NE(in, nullptr);
    EXPECT_EQ(in->code(), absl::StatusCode::kCancelled) << in->status();
  }
  const uint64_t hostile_before = target->stats().hostile_frames;
  for (const auto& [name, id, sent] :
       {std::tuple{"fewer bytes than came", 9, kMiB / 2},
        std::tuple{"more than announced", 9, 4 * kMiB}, std::tuple{"another transfer", 10, kMiB}}) {
    SCOPED_TRACE(name);
    std::unique_ptr<testing::RawClient> c =
        raw_peer(target->desc().port, "liar", wire::ChannelKind::kControl);
    start(*c, 1);
    ASSERT_TRUE(c->send_all(cancel_frame(static_cast<uint64_t>(id), 1, sent)));
    EXPECT_TRUE(c->wait_closed(5000)) << "a lying cancel must close the connection";
  }
  EXPECT_EQ(target->stats().hostile_frames, hostile_before + 3);
}

// A cancel must not claim fewer bytes than frames already announced, also while one of
// their payloads is still being received: once, only finished payloads were compared,
// so a cancel of 0 bytes let the write finish (its memory released) under a receive.
TEST(Regression, ACancelBelowAPayloadStillArrivingClosesTheConnection) {
  RawWrite w{EngineConfig{}};
  std::unique_ptr<testing::RawClient>&ctrl = w.ctrl, &data = w.data;
  const std::vector<std::byte> some(4096, std::byte{0xEE});
  ASSERT_TRUE(data->send_all(batch_frame(9, 1, 0, kMiB)) && data->send_all(some));
  std::this_thread::sleep_for(milliseconds(200));
  ASSERT_TRUE(ctrl->send_all(cancel_frame(9, 1, 0)));
  EXPECT_TRUE(ctrl->wait_closed(5000))
      << "a cancel of 0 bytes was taken while 1 MiB of the write was being received";
}

// The initiator's side of the same mistake: a connection that placed read data and then
// drops data of another, finished read took the dropped bytes for the first read's, and
// reported the read done while its data connection was still receiving into it.
TEST(Regression, AReadIsNotReportedDoneBeforeEveryByteOfItLanded) {
  testing::FakePeer fake{"liar"};
  EngineConfig cfg;
  cfg.rings = 1;
  cfg.stripes = 1;
  cfg.timeout = seconds(20);
  auto engine = std::move(*Engine::create("initiator", cfg));
  EngineDesc d;
  d.key = fake.key();
  d.host = "127.0.0.1";
  d.port = fake.port();
  ASSERT_TRUE(engine->register_remote_engine(d).ok());
  constexpr uint32_t kHalf = 64 << 10;
  std::vector<uint8_t> local(4 * kHalf, 0);
  const MemoryDesc mine = *engine->register_memory(local.data(), local.size());
  MemoryDesc theirs;
  theirs.engine_key = fake.key();
  theirs.id = 1;
  theirs.size = local.size();
  StatusHandle x = must(engine->read(mine, 0, theirs, 0, 2 * kHalf, 1));
  StatusHandle y = must(engine->read(mine, 2 * kHalf, theirs, 0, kHalf, 2));
  std::optional<testing::FakePeer::Conn> ctrl =
      fake.accept_until(wire::ChannelKind::kControl, 5000);
  ASSERT_TRUE(ctrl.has_value());
  std::optional<testing::FakePeer::Conn> data = fake.accept_until(wire::ChannelKind::kData, 5000);
  ASSERT_TRUE(data.has_value());
  uint32_t seq_x = 0, seq_y = 0;
  for (int i = 0; i < 2; ++i) {
    std::optional<testing::FakePeer::Frame> f = testing::FakePeer::read_frame(ctrl->fd, 5000);
    ASSERT_TRUE(f.has_value());
    ASSERT_EQ(f->header.type, wire::FrameType::kReadRequest);
    wire::Result<wire::Request> r = wire::decode_request_body(f->header, f->body);
    ASSERT_TRUE(r.ok());
    (r->transfer_id == 1 ? seq_x : seq_y) = f->header.seq;
  }
  using testing::FakePeer;
  const std::vector<std::byte> half(kHalf, std::byte{0xAA});
  // x's first half whole on the control connection; its second half's frame and 4 KiB
  // of it on the data connection, which then waits for the rest.
  ASSERT_TRUE(FakePeer::send_all(ctrl->fd, FakePeer::data(1, seq_x, 0, 0, half)));
  std::vector<std::byte> second = FakePeer::data(1, seq_x, 0, kHalf, half);
  const size_t partial = second.size() - kHalf + 4096;
  ASSERT_TRUE(FakePeer::send_all(data->fd, std::span(second).first(partial)));
  std::this_thread::sleep_for(milliseconds(200));
  // y fails; x is complete as far as the target says; then y's data, which is dropped.
  ASSERT_TRUE(FakePeer::send_all(
      ctrl->fd, FakePeer::completion(2, seq_y, wire::OpKind::kRead,
                                     static_cast<uint16_t>(absl::StatusCode::kNotFound))));
  ASSERT_TRUE(FakePeer::send_all(ctrl->fd, FakePeer::completion(1, seq_x, wire::OpKind::kRead)));
  ASSERT_TRUE(FakePeer::send_all(ctrl->fd, FakePeer::data(2, seq_y, 0, 0, half)));
  ASSERT_TRUE(y->wait(seconds(5)));
  EXPECT_TRUE(y->failed());
  EXPECT_FALSE(x->wait(milliseconds(300)))
      << "the read was reported done (" << x->status() << ") with 60 KiB of it still to come";
  ASSERT_TRUE(FakePeer::send_all(data->fd, std::span(second).subspan(partial)));
  ASSERT_TRUE(x->wait(seconds(5)));
  EXPECT_TRUE(x->succeeded()) << x->status();
  for (size_t i = 0; i < 2 * kHalf; ++i) {
    ASSERT_EQ(local[i], 0xAA) << "byte " << i;
  }
  EXPECT_EQ(engine->stats().hostile_frames, 0u);
}

// An initiator with one ring thread and one data connection, pointed at a fake target.
struct AgainstFake {
  testing::FakePeer fake{"liar"};
  std::unique_ptr<Engine> engine;
  std::vector<uint8_t> local = std::vector<uint8_t>(256 << 10, 0);
  MemoryDesc mine, theirs;
  explicit AgainstFake(milliseconds timeout) {
    EngineConfig cfg;
    cfg.rings = 1;
    cfg.stripes = 1;
    cfg.timeout = timeout;
    engine = std::move(*Engine::create("initiator", cfg));
    EngineDesc d;
    d.key = fake.key();
    d.host = "127.0.0.1";
    d.port = fake.port();
    EXPECT_TRUE(engine->register_remote_engine(d).ok());
    mine = *engine->register_memory(local.data(), local.size());
    theirs.engine_key = fake.key();
    theirs.id = 1;
    theirs.size = local.size();
  }
};

// Issue 10, 3: a write with id 5 times out; the caller reuses id 5; the completion of
// the first request arrives late. It must not finish the second write, whose request
// the target has not answered.
TEST(Regression, ALateCompletionDoesNotFinishANewerTransferWithTheSameId) {
  AgainstFake t(milliseconds(300));
  StatusHandle first = must(t.engine->write(t.mine, 0, t.theirs, 0, 100, 5));
  std::optional<testing::FakePeer::Conn> ctrl =
      t.fake.accept_until(wire::ChannelKind::kControl, 5000);
  ASSERT_TRUE(ctrl.has_value());
  ASSERT_TRUE(t.fake.accept_until(wire::ChannelKind::kData, 5000).has_value());
  std::optional<testing::FakePeer::Frame> req1 = testing::FakePeer::read_frame(ctrl->fd, 5000);
  ASSERT_TRUE(req1.has_value());
  ASSERT_EQ(req1->header.type, wire::FrameType::kWriteRequest);
  std::optional<testing::FakePeer::Frame> batch1 = testing::FakePeer::read_frame(ctrl->fd, 5000);
  ASSERT_TRUE(batch1.has_value());
  ASSERT_EQ(batch1->header.type, wire::FrameType::kDataBatch);
  ASSERT_TRUE(first->wait(seconds(5)));
  ASSERT_EQ(first->code(), absl::StatusCode::kDeadlineExceeded) << first->status();

  StatusHandle second = must(t.engine->write(t.mine, 0, t.theirs, 0, 100, 5));
  // The second request comes on the same connection: the first timed out with
  // nothing of it left in flight.
  std::optional<testing::FakePeer::Frame> f = testing::FakePeer::read_frame(ctrl->fd, 5000);
  ASSERT_TRUE(f.has_value()) << "the second request never came";
  ASSERT_EQ(f->header.type, wire::FrameType::kWriteRequest);
  const uint32_t seq2 = f->header.seq;
  ASSERT_NE(seq2, req1->header.seq) << "two requests with one sequence";
  ASSERT_TRUE(testing::FakePeer::send_all(
      ctrl->fd, testing::FakePeer::completion(5, req1->header.seq, wire::OpKind::kWrite)));
  EXPECT_FALSE(second->wait(milliseconds(150)))
      << "the first request's completion finished the second write: " << second->status();
  ASSERT_TRUE(testing::FakePeer::send_all(
      ctrl->fd, testing::FakePeer::completion(5, seq2, wire::OpKind::kWrite)));
  ASSERT_TRUE(second->wait(seconds(5)));
  EXPECT_TRUE(second->succeeded()) << second->status();
  EXPECT_EQ(t.engine->stats().hostile_frames, 0u);
}

// Issue 10, 7: a target that sends the same half of a read twice must not make the read
// succeed with the other half never written.
TEST(Regression, AReadIsCompleteOnlyWhenEveryByteCameOnce) {
  AgainstFake t(milliseconds(5000));
  constexpr size_t kSize = 1000;
  StatusHandle r = must(t.engine->read(t.mine, 0, t.theirs, 0, kSize, 7));
  std::optional<testing::FakePeer::Conn> ctrl =
      t.fake.accept_until(wire::ChannelKind::kControl, 5000);
  ASSERT_TRUE(ctrl.has_value());
  ASSERT_TRUE(t.fake.accept_until(wire::ChannelKind::kData, 5000).has_value());
  std::optional<testing::FakePeer::Frame> req = testing::FakePeer::read_frame(ctrl->fd, 5000);
  ASSERT_TRUE(req.has_value());
  ASSERT_EQ(req->header.type, wire::FrameType::kReadRequest);
  const std::vector<std::byte> half(kSize / 2, std::byte{0x77});
  std::vector<std::byte> lie = testing::FakePeer::data(7, req->header.seq, 0, 0, half);
  const std::vector<std::byte> again = lie;
  lie.insert(lie.end(), again.begin(), again.end());
  const std::vector<std::byte> done =
      testing::FakePeer::completion(7, req->header.seq, wire::OpKind::kRead);
  lie.insert(lie.end(), done.begin(), done.end());
  ASSERT_TRUE(testing::FakePeer::send_all(ctrl->fd, lie));
  ASSERT_TRUE(r->wait(seconds(10)));
  EXPECT_TRUE(r->failed()) << "a read with half its bytes missing succeeded";
  EXPECT_GE(t.engine->stats().hostile_frames, 1u);
  for (size_t i = kSize / 2; i < kSize; ++i) {
    ASSERT_EQ(t.local[i], 0) << "byte " << i;
  }
}

// Issue 10, 6: an engine destroyed with transfers in flight finishes every status
// before its destructor returns, each callback on a ring thread, never on the thread
// that destroys it.
TEST(Regression, TeardownFinishesEveryTransferOnARingThread) {
  EngineConfig cfg;
  cfg.rings = 2;
  cfg.zerocopy_threshold_bytes = 64 * 1024;
  // The memory outlives both engines: when `a` is gone the target may still be
  // receiving the writes already on the wire into `dst` (its connections learn of the
  // reset later), and it stays registered with `b` until `b` is destroyed.
  constexpr size_t kSize = 16 << 20;
  std::vector<uint8_t> src(kSize, 3), dst(kSize);
  auto a = Engine::create("initiator", cfg);
  auto b = Engine::create("target", cfg);
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_TRUE((*a)->register_remote_engine((*b)->desc()).ok());
  ASSERT_TRUE((*b)->register_remote_engine((*a)->desc()).ok());
  MemoryDesc ms = *(*a)->register_memory(src.data(), kSize);
  MemoryDesc md = *(*b)->register_memory(dst.data(), kSize);
  std::vector<StatusHandle> all;
  std::atomic<int> on_destroyer{0}, ran{0};
  const std::thread::id me = std::this_thread::get_id();
  for (uint64_t i = 1; i <= 16; ++i) {
    StatusHandle s =
        must(i % 2 ? (*a)->write(ms, 0, md, 0, kSize, i) : (*a)->read(ms, 0, md, 0, kSize, i));
    s->on_done([&, me] {
      ran.fetch_add(1);
      if (std::this_thread::get_id() == me) {
        on_destroyer.fetch_add(1);
      }
    });
    all.push_back(s);
  }
  const auto t0 = std::chrono::steady_clock::now();
  a->reset();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, seconds(5));
  for (const StatusHandle& s : all) {
    EXPECT_TRUE(s->done()) << "transfer " << s->transfer_id() << " outlived its engine";
  }
  EXPECT_EQ(ran.load(), 16);
  EXPECT_EQ(on_destroyer.load(), 0) << "callbacks ran on the destructor's thread";
}

// Issue 10, 8: in a child made by fork(), an engine of the parent fails fast and clearly
// and its destruction does not hang.
TEST(Regression, ForkedChildFailsFastAndExits) {
  auto a = Engine::create("parent-a");
  auto b = Engine::create("parent-b");
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_TRUE((*a)->register_remote_engine((*b)->desc()).ok());
  std::vector<uint8_t> src(4096, 1), dst(4096);
  MemoryDesc ms = *(*a)->register_memory(src.data(), src.size());
  MemoryDesc md = *(*b)->register_memory(dst.data(), dst.size());
  ASSERT_TRUE(must((*a)->write(ms, 0, md, 0, 4096, 1))->wait(seconds(10)));
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    // The child: every call fails at once with kFailedPrecondition, destruction returns.
    alarm(10);
    absl::StatusOr<StatusHandle> w = (*a)->write(ms, 0, md, 0, 4096, 2);
    int rc = 0;
    if (w.ok()) {
      rc = (*w)->wait(seconds(2)) && (*w)->failed() ? 0 : 3;
    } else if (w.status().code() != absl::StatusCode::kFailedPrecondition) {
      rc = 4;
    }
    a->reset();
    b->reset();
    _exit(rc);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status)) << "the child hung or crashed (signal "
                                 << (WIFSIGNALED(status) ? WTERMSIG(status) : 0) << ")";
  EXPECT_EQ(WEXITSTATUS(status), 0);
  // The parent's engines are unaffected.
  StatusHandle again = must((*a)->write(ms, 0, md, 0, 4096, 3));
  ASSERT_TRUE(again->wait(seconds(10)));
  EXPECT_TRUE(again->succeeded()) << again->status();
}

// CPU seconds (user + system) process `pid` has used so far.
double process_cpu_s(pid_t pid) {
  char path[64];
  snprintf(path, sizeof(path), "/proc/%d/stat", pid);
  FILE* f = fopen(path, "r");
  if (f == nullptr) {
    return -1;
  }
  char buf[1024] = {};
  const size_t n = fread(buf, 1, sizeof(buf) - 1, f);
  fclose(f);
  buf[n] = 0;
  // Fields after the command name (which may hold spaces) start after the last ')'.
  const char* p = strrchr(buf, ')');
  unsigned long utime = 0, stime = 0;
  // state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime
  if (p == nullptr ||
      sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime, &stime) != 2) {
    return -1;
  }
  return static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// Out of descriptors, accept fails with EMFILE. The listener used to re-arm at once and
// log each failure: a ring thread spun and wrote millions of identical lines. Now it
// pauses (said once), and accepts again once descriptors are free.
TEST(Regression, AcceptOutOfDescriptorsPausesInsteadOfSpinning) {
  int err_pipe[2], port_pipe[2];
  ASSERT_EQ(pipe(err_pipe), 0);
  ASSERT_EQ(pipe(port_pipe), 0);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    alarm(60);
    dup2(err_pipe[1], 2);
    close(err_pipe[0]);
    close(port_pipe[0]);
    EngineConfig cfg;
    cfg.rings = 1;
    cfg.timeout = milliseconds(1000);  // accepted sockets without a hello close after 1 s
    auto e = Engine::create("target", cfg);
    if (!e.ok()) {
      _exit(3);
    }
    // Room for two more descriptors: the rest of the accepts fail with EMFILE.
    int top = 0;
    if (DIR* d = opendir("/proc/self/fd")) {
      while (dirent* ent = readdir(d)) {
        top = std::max(top, atoi(ent->d_name));
      }
      closedir(d);
    }
    rlimit rl{};
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = static_cast<rlim_t>(top + 8);
    setrlimit(RLIMIT_NOFILE, &rl);
    // Fill every free descriptor below the limit but two.
    std::vector<int> fill;
    for (int fd; (fd = open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0;) {
      fill.push_back(fd);
    }
    for (int i = 0; i < 2 && !fill.empty(); ++i) {
      close(fill.back());
      fill.pop_back();
    }
    const uint16_t port = (*e)->desc().port;
    [[maybe_unused]] ssize_t w = write(port_pipe[1], &port, sizeof(port));
    pause();
    _exit(0);
  }
  close(err_pipe[1]);
  close(port_pipe[1]);
  uint16_t port = 0;
  ASSERT_EQ(read(port_pipe[0], &port, sizeof(port)), static_cast<ssize_t>(sizeof(port)));
  std::vector<std::unique_ptr<testing::RawClient>> clients;
  for (int i = 0; i < 20; ++i) {
    clients.push_back(std::make_unique<testing::RawClient>(port));  // queued in the backlog
  }
  std::this_thread::sleep_for(milliseconds(200));
  const double cpu0 = process_cpu_s(pid);
  std::this_thread::sleep_for(milliseconds(500));
  const double cpu1 = process_cpu_s(pid);
  clients.clear();
  // Once the accepted sockets time out (1 s without a hello), a real peer gets in.
  EngineConfig icfg;
  icfg.timeout = milliseconds(2000);
  auto init = Engine::create("initiator", icfg);
  ASSERT_TRUE(init.ok());
  EngineDesc target;
  target.key = "target";
  target.host = "127.0.0.1";
  target.port = port;
  ASSERT_TRUE((*init)->register_remote_engine(target).ok());
  std::vector<uint8_t> buf(64);
  MemoryDesc mine = *(*init)->register_memory(buf.data(), buf.size());
  MemoryDesc theirs;
  theirs.engine_key = "target";
  theirs.id = 1;
  theirs.size = 64;
  absl::Status last;
  bool answered = false;
  for (uint64_t id = 1; id < 10 && !answered; ++id) {
    StatusHandle s = must((*init)->write(mine, 0, theirs, 0, 8, id));
    ASSERT_TRUE(s->wait(seconds(20)));
    last = s->status();
    // The target has no memory 1: kNotFound means it accepted, shook hands and answered.
    answered = s->code() == absl::StatusCode::kNotFound;
    if (!answered) {
      std::this_thread::sleep_for(milliseconds(100));
    }
  }
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  fcntl(err_pipe[0], F_SETFL, O_NONBLOCK);
  std::string log;
  char chunk[4096];
  for (ssize_t n; (n = read(err_pipe[0], chunk, sizeof(chunk))) > 0;) {
    log.append(chunk, static_cast<size_t>(n));
  }
  close(err_pipe[0]);
  close(port_pipe[0]);
  size_t accept_lines = 0;
  for (size_t at = 0; (at = log.find("Too many open files", at)) != std::string::npos; ++at) {
    ++accept_lines;
  }
  ASSERT_GE(cpu0, 0);
  EXPECT_LT(cpu1 - cpu0, 0.15) << "the target spent " << (cpu1 - cpu0)
                               << " CPU s in 0.5 s with accept failing";
  EXPECT_LE(accept_lines, 5u) << "accept failures logged " << accept_lines << " times";
  EXPECT_TRUE(answered) << "the listener never accepted again: " << last;
}

}  // namespace
}  // namespace ringxfer
