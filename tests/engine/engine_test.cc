// Two engines in one process over real loopback sockets.
#include <dirent.h>
#include <net/if.h>
#include <sched.h>
#include <sys/ioctl.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "gtest/gtest.h"
#include "ringxfer/ringxfer.h"
#include "support/memlock.h"
#include "support/raw_socket.h"
#include "wire/codec.h"

namespace ringxfer {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr auto kWait = seconds(20);

// A buffer with guard bytes on both sides, so writes past a region show up.
struct Guarded {
  static constexpr size_t kGuard = 64;
  std::vector<uint8_t> bytes;
  explicit Guarded(size_t size, uint8_t fill = 0) : bytes(size + 2 * kGuard, fill) {
    std::memset(bytes.data(), 0xA5, kGuard);
    std::memset(bytes.data() + kGuard + size, 0x5A, kGuard);
  }
  uint8_t* data() { return bytes.data() + kGuard; }
  size_t size() const { return bytes.size() - 2 * kGuard; }
  bool guards_intact() const {
    for (size_t i = 0; i < kGuard; ++i) {
      if (bytes[i] != 0xA5 || bytes[bytes.size() - 1 - i] != 0x5A) {
        return false;
      }
    }
    return true;
  }
};

void fill_pattern(uint8_t* p, size_t n, uint32_t seed) {
  uint32_t x = seed * 2654435761u + 1;
  for (size_t i = 0; i < n; ++i) {
    x = x * 1103515245u + 12345u;
    p[i] = static_cast<uint8_t>(x >> 16);
  }
}

struct Config {
  int stripes;
  uint64_t zerocopy_threshold;
  int rings;
};

std::string config_name(const ::testing::TestParamInfo<Config>& info) {
  return "stripes" + std::to_string(info.param.stripes) + "_zc" +
         std::to_string(info.param.zerocopy_threshold) + "_rings" +
         std::to_string(info.param.rings);
}

class EnginePair {
 public:
  explicit EnginePair(EngineConfig cfg = {}, const std::string& host = "127.0.0.1") {
    cfg.host = host;
    auto a = Engine::create("initiator", cfg);
    auto b = Engine::create("target", cfg);
    if (!a.ok() || !b.ok()) {
      error = !a.ok() ? a.status() : b.status();
      return;
    }
    a_ = std::move(*a);
    b_ = std::move(*b);
    EXPECT_TRUE(a_->register_remote_engine(b_->desc()).ok());
    EXPECT_TRUE(b_->register_remote_engine(a_->desc()).ok());
  }
  Engine& a() { return *a_; }
  Engine& b() { return *b_; }
  // Destroys the target engine (its connections close, its threads stop).
  void drop_b() { b_.reset(); }
  absl::Status error;

 private:
  std::unique_ptr<Engine> a_, b_;
};

StatusHandle must(absl::StatusOr<StatusHandle> s) {
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? *s : nullptr;
}

void expect_success(const StatusHandle& s) {
  ASSERT_NE(s, nullptr);
  ASSERT_TRUE(s->wait(kWait)) << "transfer " << s->transfer_id() << " did not finish";
  EXPECT_TRUE(s->succeeded()) << s->status();
}

// Polls the target for the inbound status of `id`, which appears shortly after the
// initiator's status (the target records it when it sends the completion).
StatusHandle pop_inbound(Engine& target, const std::string& from, uint64_t id) {
  for (int i = 0; i < 2000; ++i) {
    if (StatusHandle s = target.pop_inbound_status(from, id)) {
      return s;
    }
    std::this_thread::sleep_for(milliseconds(1));
  }
  return nullptr;
}

class EngineTransfer : public ::testing::TestWithParam<Config> {
 protected:
  EngineConfig config() const {
    EngineConfig c;
    c.stripes = GetParam().stripes;
    c.zerocopy_threshold_bytes = GetParam().zerocopy_threshold;
    c.rings = GetParam().rings;
    c.stripe_threshold_bytes = 64 * 1024;
    c.chunk_bytes = 256 * 1024;
    return c;
  }
};

TEST_P(EngineTransfer, WritesAndReadsEverySizeAtUnalignedOffsets) {
  EnginePair pair(config());
  ASSERT_TRUE(pair.error.ok()) << pair.error;
  const std::vector<size_t> sizes = {1,     7,     8,      100,     4095,          4096,     65535,
                                     65536, 65537, 262143, 1 << 20, (3 << 20) + 5, 64u << 20};
  for (size_t size : sizes) {
    SCOPED_TRACE("size " + std::to_string(size));
    const size_t loff = 3, roff = 5;
    Guarded src(size + loff), dst(size + roff), back(size + loff);
    fill_pattern(src.data() + loff, size, static_cast<uint32_t>(size));
    MemoryDesc ms = *pair.a().register_memory(src.data(), src.size());
    MemoryDesc md = *pair.b().register_memory(dst.data(), dst.size());
    MemoryDesc mb = *pair.a().register_memory(back.data(), back.size());

    const uint64_t wid = pair.a().allocate_transfer_id();
    StatusHandle w = must(pair.a().write(ms, loff, md, roff, size, wid));
    expect_success(w);
    ASSERT_EQ(std::memcmp(src.data() + loff, dst.data() + roff, size), 0);
    EXPECT_TRUE(dst.guards_intact());
    EXPECT_EQ(dst.data()[0], 0);  // bytes before the offset are untouched

    const uint64_t rid = pair.a().allocate_transfer_id();
    StatusHandle r = must(pair.a().read(mb, loff, md, roff, size, rid));
    expect_success(r);
    ASSERT_EQ(std::memcmp(src.data() + loff, back.data() + loff, size), 0);
    EXPECT_TRUE(back.guards_intact());

    StatusHandle in_w = pop_inbound(pair.b(), "initiator", wid);
    StatusHandle in_r = pop_inbound(pair.b(), "initiator", rid);
    ASSERT_NE(in_w, nullptr);
    ASSERT_NE(in_r, nullptr);
    EXPECT_TRUE(in_w->succeeded()) << in_w->status();
    EXPECT_TRUE(in_r->succeeded()) << in_r->status();
    EXPECT_EQ(pair.b().pop_inbound_status("initiator", wid), nullptr) << "popped twice";
    ASSERT_TRUE(pair.a().deregister_memory(ms).ok());
    ASSERT_TRUE(pair.a().deregister_memory(mb).ok());
    ASSERT_TRUE(pair.b().deregister_memory(md).ok());
  }
  const EngineStats s = pair.a().stats();
  EXPECT_GT(s.bytes_sent, 64u << 20);
  EXPECT_GT(s.bytes_received, 64u << 20);
  EXPECT_EQ(s.hostile_frames, 0u);
  EXPECT_EQ(s.transfers_failed, 0u);
  if (GetParam().zerocopy_threshold > 0) {
    EXPECT_GT(s.zerocopy_sends, 0u);
    // Loopback copies zero-copy pages at delivery and the kernel reports it.
    EXPECT_GT(s.zerocopy_copied, 0u);
    // Registered memory became fixed buffers, and single-piece frames were sent from
    // them (unless the memlock limit refused every registration).
    if (s.fixed_buffer_fallbacks == 0) {
      EXPECT_GT(s.zerocopy_fixed_sends, 0u);
    }
  } else {
    EXPECT_EQ(s.zerocopy_fixed_sends, 0u);
    EXPECT_EQ(s.fixed_buffer_fallbacks, 0u) << "without zero-copy nothing is pinned";
  }
  EXPECT_EQ(s.fixed_buffers, 0u) << "every region was deregistered";
}

TEST_P(EngineTransfer, BatchesContiguousAndStridedSegments) {
  EnginePair pair(config());
  ASSERT_TRUE(pair.error.ok()) << pair.error;
  struct Shape {
    size_t count, size, stride;
  };
  for (Shape sh : {Shape{256, 8, 8}, Shape{256, 8, 64}, Shape{64, 65536, 65536 + 4096},
                   Shape{3, 100000, 100003}}) {
    SCOPED_TRACE(std::to_string(sh.count) + "x" + std::to_string(sh.size) + " stride " +
                 std::to_string(sh.stride));
    const size_t span = sh.count * sh.stride;
    Guarded src(span), dst(span), back(span);
    fill_pattern(src.data(), span, 7);
    MemoryDesc ms = *pair.a().register_memory(src.data(), span);
    MemoryDesc md = *pair.b().register_memory(dst.data(), span);
    MemoryDesc mb = *pair.a().register_memory(back.data(), span);
    std::vector<uint64_t> offs, sizes;
    for (size_t i = 0; i < sh.count; ++i) {
      offs.push_back(i * sh.stride);
      sizes.push_back(sh.size);
    }
    const uint64_t wid = pair.a().allocate_transfer_id();
    expect_success(must(pair.a().batch_write(ms, offs, md, offs, sizes, wid)));
    const uint64_t rid = pair.a().allocate_transfer_id();
    expect_success(must(pair.a().batch_read(mb, offs, md, offs, sizes, rid)));
    for (size_t i = 0; i < sh.count; ++i) {
      ASSERT_EQ(std::memcmp(src.data() + offs[i], dst.data() + offs[i], sh.size), 0) << i;
      ASSERT_EQ(std::memcmp(src.data() + offs[i], back.data() + offs[i], sh.size), 0) << i;
      // The gaps between strided segments are untouched.
      for (size_t g = sh.size; g < sh.stride; ++g) {
        ASSERT_EQ(dst.data()[offs[i] + g], 0) << "gap byte " << g << " of segment " << i;
      }
    }
    EXPECT_TRUE(dst.guards_intact());
    ASSERT_NE(pop_inbound(pair.b(), "initiator", wid), nullptr);
    ASSERT_NE(pop_inbound(pair.b(), "initiator", rid), nullptr);
  }
}

// A batch has no entry cap: one of more entries than a request carries
// (wire::kSegmentsMax) is sent as several requests with one status, on either side.
TEST_P(EngineTransfer, BatchesOfMoreEntriesThanOneRequestCarry) {
  EnginePair pair(config());
  ASSERT_TRUE(pair.error.ok()) << pair.error;
  constexpr size_t kCount = 2 * wire::kSegmentsMax + 100, kSize = 8, kStride = 16;
  const size_t span = kCount * kStride;
  Guarded src(span), dst(span), back(span);
  fill_pattern(src.data(), span, 11);
  MemoryDesc ms = *pair.a().register_memory(src.data(), span);
  MemoryDesc md = *pair.b().register_memory(dst.data(), span);
  MemoryDesc mb = *pair.a().register_memory(back.data(), span);
  std::vector<uint64_t> offs, sizes;
  for (size_t i = 0; i < kCount; ++i) {
    offs.push_back(i * kStride);
    sizes.push_back(kSize);
  }
  const uint64_t wid = pair.a().allocate_transfer_id();
  expect_success(must(pair.a().batch_write(ms, offs, md, offs, sizes, wid)));
  const uint64_t rid = pair.a().allocate_transfer_id();
  expect_success(must(pair.a().batch_read(mb, offs, md, offs, sizes, rid)));
  for (size_t i = 0; i < kCount; ++i) {
    ASSERT_EQ(std::memcmp(src.data() + offs[i], dst.data() + offs[i], kSize), 0) << i;
    ASSERT_EQ(std::memcmp(src.data() + offs[i], back.data() + offs[i], kSize), 0) << i;
    for (size_t g = kSize; g < kStride; ++g) {
      ASSERT_EQ(dst.data()[offs[i] + g], 0) << "gap byte " << g << " of entry " << i;
      ASSERT_EQ(back.data()[offs[i] + g], 0) << "gap byte " << g << " of entry " << i;
    }
  }
  EXPECT_TRUE(dst.guards_intact());
  EXPECT_TRUE(back.guards_intact());
  // One inbound status per transfer on the target, however many requests carried it.
  StatusHandle in = pop_inbound(pair.b(), "initiator", wid);
  ASSERT_NE(in, nullptr);
  EXPECT_TRUE(in->succeeded()) << in->status();
  in = pop_inbound(pair.b(), "initiator", rid);
  ASSERT_NE(in, nullptr);
  EXPECT_TRUE(in->succeeded()) << in->status();
  EXPECT_EQ(pair.b().pop_inbound_status("initiator", wid), nullptr);
}

INSTANTIATE_TEST_SUITE_P(Matrix, EngineTransfer,
                         ::testing::Values(Config{1, 0, 1}, Config{4, 0, 1}, Config{4, 16384, 1},
                                           Config{4, 0, 2}),
                         config_name);

TEST(Engine, ZeroCopyFallsBackToPlainBuffersBeyondTheMemlockLimit) {
  // What a non-root user gets: an 8 MiB memlock limit and no CAP_IPC_LOCK. The engines
  // are created on a thread without the capability, so their ring threads lack it too.
  testing::MemlockLimit limit(8 << 20);
  ASSERT_TRUE(limit.ok());
  std::thread t([] {
    ASSERT_TRUE(testing::drop_ipc_lock_on_this_thread());
    EngineConfig cfg;
    cfg.zerocopy_threshold_bytes = 64 * 1024;
    cfg.chunk_bytes = 1 << 20;
    EnginePair pair(cfg);
    ASSERT_TRUE(pair.error.ok()) << pair.error;
    const size_t big = 64 << 20, small = 2 << 20;
    std::vector<uint8_t> src(big), dst(big), small_src(small);
    fill_pattern(src.data(), big, 7);
    fill_pattern(small_src.data(), small, 9);
    MemoryDesc ms = *pair.a().register_memory(src.data(), big);           // over the limit: refused
    MemoryDesc mss = *pair.a().register_memory(small_src.data(), small);  // fits
    MemoryDesc md = *pair.b().register_memory(dst.data(), big);
    expect_success(must(pair.a().write(ms, 0, md, 0, big, pair.a().allocate_transfer_id())));
    ASSERT_EQ(std::memcmp(src.data(), dst.data(), big), 0);
    const EngineStats after_big = pair.a().stats();
    EXPECT_GT(after_big.fixed_buffer_fallbacks, 0u);
    EXPECT_GT(after_big.zerocopy_sends, 0u);
    // 16 MiB chunks pin more than the limit: refused by the kernel, then copied.
    EXPECT_GT(after_big.zerocopy_refused, 0u);
    EXPECT_EQ(after_big.zerocopy_fixed_sends, 0u) << "nothing was sent from a fixed buffer";
    EXPECT_EQ(after_big.connections_closed, 0u);
    expect_success(must(pair.a().write(mss, 0, md, 0, small, pair.a().allocate_transfer_id())));
    ASSERT_EQ(std::memcmp(small_src.data(), dst.data(), small), 0);
    EXPECT_GT(pair.a().stats().zerocopy_fixed_sends, 0u) << "the small region was registered";
  });
  t.join();
}

TEST(Engine, ZeroCopyFromFixedBuffersFailsCleanlyWhenThePeerGoesAway) {
  // Linked header + SEND_ZC pairs in flight when the target disappears: every transfer
  // fails (no hang), no buffer is released before its notification (ASan), and the
  // initiator keeps its fixed buffers until the memory is deregistered.
  EngineConfig cfg;
  cfg.zerocopy_threshold_bytes = 64 * 1024;
  cfg.timeout = std::chrono::milliseconds(3000);
  EnginePair pair(cfg);
  ASSERT_TRUE(pair.error.ok()) << pair.error;
  const size_t n = 32 << 20;
  std::vector<uint8_t> src(n, 1), dst(n);
  MemoryDesc ms = *pair.a().register_memory(src.data(), n);
  MemoryDesc md = *pair.b().register_memory(dst.data(), n);
  // register_memory returns once every ring thread has the buffer (or refused it).
  const EngineStats reg = pair.a().stats();
  EXPECT_EQ(reg.fixed_buffers + reg.fixed_buffer_fallbacks, static_cast<uint64_t>(cfg.rings));
  // One transfer first, so the connections exist and the sends below start at once.
  expect_success(must(pair.a().write(ms, 0, md, 0, n, pair.a().allocate_transfer_id())));
  ASSERT_GT(pair.a().stats().zerocopy_fixed_sends, 0u);
  std::vector<StatusHandle> inflight;
  for (int i = 0; i < 8; ++i) {
    inflight.push_back(must(pair.a().write(ms, 0, md, 0, n, pair.a().allocate_transfer_id())));
  }
  pair.drop_b();
  const auto t0 = std::chrono::steady_clock::now();
  int failed = 0;
  for (const StatusHandle& st : inflight) {
    ASSERT_TRUE(st->wait(std::chrono::seconds(10))) << "a transfer hung";
    failed += st->failed() ? 1 : 0;
  }
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
  EXPECT_GT(failed, 0) << "the target went away with 256 MiB still to send";
  EXPECT_GT(pair.a().stats().fixed_buffers, 0u);
  ASSERT_TRUE(pair.a().deregister_memory(ms).ok());
  EXPECT_EQ(pair.a().stats().fixed_buffers, 0u) << "deregister_memory returned before the rings";
}

TEST(Engine, DeregistersMemoryFromACompletionCallbackWithoutBlocking) {
  // A status callback runs on a ring thread; deregister_memory there must not wait on
  // the other ring (two rings waiting on each other would deadlock): it removes its own
  // ring's fixed buffer at once and tells the other ring by a post.
  EngineConfig cfg;
  cfg.zerocopy_threshold_bytes = 64 * 1024;
  cfg.rings = 2;
  EnginePair pair(cfg);
  ASSERT_TRUE(pair.error.ok()) << pair.error;
  const size_t n = 32 << 20;
  std::vector<uint8_t> src(n, 3), dst(n);
  MemoryDesc ms = *pair.a().register_memory(src.data(), n);
  MemoryDesc md = *pair.b().register_memory(dst.data(), n);
  StatusHandle st = must(pair.a().write(ms, 0, md, 0, n, pair.a().allocate_transfer_id()));
  std::atomic<int> deregistered{0};  // 1: ok, -1: error
  st->on_done([&] { deregistered = pair.a().deregister_memory(ms).ok() ? 1 : -1; });
  expect_success(st);
  ASSERT_EQ(std::memcmp(src.data(), dst.data(), n), 0);
  for (int i = 0; i < 2000 && (deregistered.load() == 0 || pair.a().stats().fixed_buffers > 0);
       ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_EQ(deregistered.load(), 1);
  EXPECT_EQ(pair.a().stats().fixed_buffers, 0u) << "a ring kept the deregistered buffer";
  EXPECT_FALSE(pair.a().deregister_memory(ms).ok()) << "deregistered twice";
}

TEST(Engine, SessionsTransferAndReportAliveness) {
  EnginePair pair;
  ASSERT_TRUE(pair.error.ok()) << pair.error;
  std::vector<uint8_t> src(1 << 16), dst(1 << 16, 0);
  fill_pattern(src.data(), src.size(), 3);
  MemoryDesc ms = *pair.a().register_memory(src.data(), src.size());
  MemoryDesc md = *pair.b().register_memory(dst.data(), dst.size());
  absl::StatusOr<std::unique_ptr<Session>> s = pair.a().create_session(ms, md);
  ASSERT_TRUE(s.ok()) << s.status();
  Session& sess = **s;
  EXPECT_TRUE(sess.alive());
  expect_success(must(sess.write(0, 0, 1000, sess.allocate_transfer_id())));
  const std::vector<uint64_t> offs = {1000, 5000}, sizes = {4000, 60000};
  expect_success(must(sess.batch_write(offs, offs, sizes, sess.allocate_transfer_id())));
  EXPECT_EQ(std::memcmp(src.data(), dst.data(), 1000), 0);
  EXPECT_EQ(std::memcmp(src.data() + 1000, dst.data() + 1000, 4000), 0);
  EXPECT_EQ(std::memcmp(src.data() + 5000, dst.data() + 5000, 60000), 0);
  std::fill(src.begin(), src.end(), 0);
  expect_success(must(sess.read(0, 0, 1 << 16, sess.allocate_transfer_id())));
  EXPECT_EQ(src, dst);
  ASSERT_TRUE(pair.a().deregister_remote_engine(pair.b().desc()).ok());
  EXPECT_FALSE(sess.alive());
  absl::StatusOr<StatusHandle> after = sess.write(0, 0, 8, sess.allocate_transfer_id());
  EXPECT_EQ(after.status().code(), absl::StatusCode::kNotFound);
}

TEST(Engine, WorksWithSqpollAndPinnedRingThreads) {
  EngineConfig cfg;
  cfg.sqpoll = true;
  cfg.ring_cpus = {0};
  EnginePair pair(cfg);
  if (!pair.error.ok()) {
    GTEST_SKIP() << "no SQPOLL here: " << pair.error;
  }
  std::vector<uint8_t> src(3 << 20), dst(3 << 20, 0), back(3 << 20, 0);
  fill_pattern(src.data(), src.size(), 21);
  MemoryDesc ms = *pair.a().register_memory(src.data(), src.size());
  MemoryDesc md = *pair.b().register_memory(dst.data(), dst.size());
  MemoryDesc mb = *pair.a().register_memory(back.data(), back.size());
  for (uint64_t size : {uint64_t{8}, uint64_t{100000}, uint64_t{3} << 20}) {
    expect_success(must(pair.a().write(ms, 0, md, 0, size, pair.a().allocate_transfer_id())));
    expect_success(must(pair.a().read(mb, 0, md, 0, size, pair.a().allocate_transfer_id())));
    EXPECT_EQ(std::memcmp(src.data(), back.data(), size), 0) << size;
  }
}

TEST(Engine, WorksOverIpv6Loopback) {
  EnginePair pair(EngineConfig{}, "::1");
  if (!pair.error.ok()) {
    GTEST_SKIP() << "no IPv6 loopback here: " << pair.error;
  }
  EXPECT_EQ(pair.a().desc().host, "::1");
  std::vector<uint8_t> src(300000), dst(300000, 0);
  fill_pattern(src.data(), src.size(), 9);
  MemoryDesc ms = *pair.a().register_memory(src.data(), src.size());
  MemoryDesc md = *pair.b().register_memory(dst.data(), dst.size());
  expect_success(must(pair.a().write(ms, 0, md, 0, src.size(), 1)));
  EXPECT_EQ(src, dst);
}

// Whether a TCP connection to `host`:`port` is accepted.
bool can_connect(const char* host, uint16_t port) {
  sockaddr_storage a{};
  socklen_t len = 0;
  if (inet_pton(AF_INET, host, &reinterpret_cast<sockaddr_in*>(&a)->sin_addr) == 1) {
    reinterpret_cast<sockaddr_in*>(&a)->sin_family = AF_INET;
    reinterpret_cast<sockaddr_in*>(&a)->sin_port = htons(port);
    len = sizeof(sockaddr_in);
  } else {
    inet_pton(AF_INET6, host, &reinterpret_cast<sockaddr_in6*>(&a)->sin6_addr);
    reinterpret_cast<sockaddr_in6*>(&a)->sin6_family = AF_INET6;
    reinterpret_cast<sockaddr_in6*>(&a)->sin6_port = htons(port);
    len = sizeof(sockaddr_in6);
  }
  const int fd = socket(a.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const bool ok = fd >= 0 && connect(fd, reinterpret_cast<sockaddr*>(&a), len) == 0;
  if (fd >= 0) {
    close(fd);
  }
  return ok;
}

// host "" listens on every interface (IPv4 and IPv6) and tells peers an address they
// can reach, not a wildcard; advertise_host overrides it.
TEST(Engine, ListensOnEveryInterfaceAndTellsPeersAReachableAddress) {
  EnginePair pair({}, "");
  ASSERT_TRUE(pair.error.ok()) << pair.error;
  const EngineDesc& d = pair.b().desc();
  EXPECT_FALSE(d.host.empty());
  EXPECT_NE(d.host, "0.0.0.0");
  EXPECT_NE(d.host, "::");
  EXPECT_TRUE(can_connect("127.0.0.1", d.port));
  const bool ipv6 =
      can_connect("::1", pair.b().desc().port) || socket(AF_INET6, SOCK_STREAM, 0) < 0;
  EXPECT_TRUE(ipv6) << "the dual-stack listener refuses ::1";
  // Peers use the advertised address: a transfer through it works.
  std::vector<uint8_t> src(4096, 0x5a), dst(4096, 0);
  MemoryDesc ms = *pair.a().register_memory(src.data(), src.size());
  MemoryDesc md = *pair.b().register_memory(dst.data(), dst.size());
  expect_success(must(pair.a().write(ms, 0, md, 0, src.size(), 1)));
  EXPECT_EQ(src, dst);

  EngineConfig cfg;
  cfg.host = "0.0.0.0";
  auto v4 = Engine::create("v4", cfg);
  ASSERT_TRUE(v4.ok()) << v4.status();
  EXPECT_NE((*v4)->desc().host.find('.'), std::string::npos) << (*v4)->desc().host;
  EXPECT_TRUE(can_connect("127.0.0.1", (*v4)->desc().port));

  cfg.host = "";
  cfg.advertise_host = "kv-node-7.example";
  auto named = Engine::create("named", cfg);
  ASSERT_TRUE(named.ok()) << named.status();
  EXPECT_EQ((*named)->desc().host, "kv-node-7.example");

  cfg.advertise_host = "0.0.0.0";
  auto bad = Engine::create("bad", cfg);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("advertise_host"), std::string::npos) << bad.status();
}

// In a network namespace with no interface up there is no address to tell peers:
// creation fails naming the setting; with loopback up, peers on this host are told
// 127.0.0.1. (Root only. The namespace is a thread's own: unshare(CLONE_NEWNET) on a
// thread of its own, whose engines' ring threads inherit it; no fork, which TSan
// cannot follow.)
TEST(Engine, WithNoReachableAddressListeningEverywhereFailsNamingTheSetting) {
  if (geteuid() != 0) {
    GTEST_SKIP() << "needs root for a network namespace";
  }
  std::string outcome;
  std::thread([&] {
    if (unshare(CLONE_NEWNET) != 0) {
      outcome = "skip";
      return;
    }
    EngineConfig cfg;
    cfg.host = "";
    auto e = Engine::create("alone", cfg);
    if (e.ok() || e.status().code() != absl::StatusCode::kUnavailable ||
        e.status().message().find("advertise_host") == std::string_view::npos) {
      outcome = "no clear error without an address: " +
                (e.ok() ? (*e)->desc().host : std::string(e.status().message()));
      return;
    }
    const int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ifreq ifr{};
    std::strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
    const bool up = ioctl(fd, SIOCGIFFLAGS, &ifr) == 0 &&
                    (ifr.ifr_flags = static_cast<int16_t>(ifr.ifr_flags | IFF_UP),
                     ioctl(fd, SIOCSIFFLAGS, &ifr) == 0);
    close(fd);
    if (!up) {
      outcome = "could not bring lo up";
      return;
    }
    auto lo = Engine::create("loopback-only", cfg);
    outcome = !lo.ok() ? std::string(lo.status().message()) : (*lo)->desc().host;
  }).join();
  if (outcome == "skip") {
    GTEST_SKIP() << "no network namespaces here";
  }
  EXPECT_EQ(outcome, "127.0.0.1");
}

TEST(Engine, ReportsArgumentErrorsAtOnceAndSendsNothing) {
  EnginePair pair;
  ASSERT_TRUE(pair.error.ok()) << pair.error;
  Engine& a = pair.a();
  std::vector<uint8_t> buf(4096), rbuf(4096);
  MemoryDesc ms = *a.register_memory(buf.data(), buf.size());
  MemoryDesc md = *pair.b().register_memory(rbuf.data(), rbuf.size());
  auto code = [](const absl::StatusOr<StatusHandle>& s) { return s.status().code(); };
  auto msg = [](const absl::StatusOr<StatusHandle>& s) {
    return std::string(s.status().message());
  };

  absl::StatusOr<StatusHandle> r = a.write(ms, 0, md, 0, 0, 1);
  EXPECT_EQ(code(r), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(msg(r).find("size is 0"), std::string::npos) << msg(r);

  r = a.write(ms, 4000, md, 0, 200, 2);
  EXPECT_EQ(code(r), absl::StatusCode::kOutOfRange);
  EXPECT_NE(msg(r).find("local_offset"), std::string::npos) << msg(r);

  r = a.read(ms, 0, md, ~uint64_t{0}, 2, 3);
  EXPECT_EQ(code(r), absl::StatusCode::kOutOfRange);
  EXPECT_NE(msg(r).find("remote_offset"), std::string::npos) << msg(r);

  r = a.write(md, 0, ms, 0, 8, 4);  // the target's memory used as local
  EXPECT_EQ(code(r), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(msg(r).find("belongs to engine target"), std::string::npos) << msg(r);

  MemoryDesc stranger = md;
  stranger.engine_key = "nobody";
  r = a.write(ms, 0, stranger, 0, 8, 5);
  EXPECT_EQ(code(r), absl::StatusCode::kNotFound);
  EXPECT_NE(msg(r).find("nobody"), std::string::npos) << msg(r);

  const std::vector<uint64_t> two = {0, 8}, one = {8};
  r = a.batch_write(ms, two, md, one, two, 6);
  EXPECT_EQ(code(r), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(msg(r).find("differ in length"), std::string::npos) << msg(r);
  r = a.batch_write(ms, {}, md, {}, {}, 7);
  EXPECT_EQ(code(r), absl::StatusCode::kInvalidArgument);
  const std::vector<uint64_t> sizes = {8, 0};
  r = a.batch_write(ms, two, md, two, sizes, 8);
  EXPECT_NE(msg(r).find("size[1] is 0"), std::string::npos) << msg(r);

  ASSERT_TRUE(a.deregister_memory(ms).ok());
  r = a.write(ms, 0, md, 0, 8, 9);
  EXPECT_EQ(code(r), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(a.deregister_memory(ms).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(a.deregister_memory(md).code(), absl::StatusCode::kInvalidArgument);

  EXPECT_EQ(a.register_memory(nullptr, 8).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(a.register_memory(buf.data(), 0).status().code(), absl::StatusCode::kInvalidArgument);
  // Nothing of the above reached the wire.
  EXPECT_EQ(a.stats().transfers_initiated, 0u);
  EXPECT_EQ(a.stats().connections_opened, 0u);
}

TEST(Engine, RejectsBadConfigNamingTheField) {
  EngineConfig c;
  c.stripes = 17;
  absl::StatusOr<std::unique_ptr<Engine>> e = Engine::create("x", c);
  EXPECT_EQ(e.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(e.status().message().find("stripes"), std::string::npos) << e.status();
  c = EngineConfig{};
  c.ring_entries = 100;
  EXPECT_NE(Engine::create("x", c).status().message().find("ring_entries"), std::string::npos);
  c = EngineConfig{};
  c.wait_spin = milliseconds(20);
  EXPECT_NE(Engine::create("x", c).status().message().find("wait_spin"), std::string::npos);
  c = EngineConfig{};
  c.host = "no-such-host.invalid";
  EXPECT_EQ(Engine::create("x", c).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Engine::create("", EngineConfig{}).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(Engine, RejectsDuplicateTransferIdInFlight) {
  // A peer that accepts and never answers keeps the first transfer in flight.
  testing::RawListener silent;
  EngineConfig cfg;
  cfg.timeout = milliseconds(500);
  auto a = *Engine::create("a", cfg);
  EngineDesc peer{"silent", "n", "h", "127.0.0.1", silent.port(), 1, 1};
  ASSERT_TRUE(a->register_remote_engine(peer).ok());
  std::vector<uint8_t> buf(64);
  MemoryDesc ms = *a->register_memory(buf.data(), buf.size());
  MemoryDesc remote{"silent", 1, -1, 64, MemoryLocation::kCpu, 0};
  StatusHandle first = must(a->write(ms, 0, remote, 0, 8, 42));
  absl::StatusOr<StatusHandle> dup = a->write(ms, 0, remote, 0, 8, 42);
  EXPECT_EQ(dup.status().code(), absl::StatusCode::kAlreadyExists) << dup.status();
  // And the first one is failed by the operation timeout, not hung.
  ASSERT_TRUE(first->wait(seconds(5)));
  EXPECT_EQ(first->code(), absl::StatusCode::kDeadlineExceeded) << first->status();
  EXPECT_GE(a->stats().timeouts, 1u);
  // The id is free again once the first transfer is final.
  StatusHandle again = must(a->write(ms, 0, remote, 0, 8, 42));
  ASSERT_TRUE(again->wait(seconds(5)));
}

TEST(Engine, FailsAtOnceWhenNobodyListens) {
  auto a = *Engine::create("a");
  EngineDesc peer{"gone", "n", "h", "127.0.0.1", testing::closed_port(), 1, 1};
  ASSERT_TRUE(a->register_remote_engine(peer).ok());
  std::vector<uint8_t> buf(64);
  MemoryDesc ms = *a->register_memory(buf.data(), buf.size());
  MemoryDesc remote{"gone", 1, -1, 64, MemoryLocation::kCpu, 0};
  const auto t0 = std::chrono::steady_clock::now();
  StatusHandle s = must(a->write(ms, 0, remote, 0, 8, 1));
  ASSERT_TRUE(s->wait(seconds(5)));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, seconds(2)) << "must not wait for the timeout";
  EXPECT_EQ(s->code(), absl::StatusCode::kUnavailable) << s->status();
  EXPECT_NE(s->message().find("refused"), std::string::npos) << s->status();
}

TEST(Engine, FailsTransferToAnUnregisteredRemoteMemory) {
  EnginePair pair;
  ASSERT_TRUE(pair.error.ok()) << pair.error;
  std::vector<uint8_t> src(1 << 20), dst(1 << 20);
  MemoryDesc ms = *pair.a().register_memory(src.data(), src.size());
  MemoryDesc md = *pair.b().register_memory(dst.data(), dst.size());
  ASSERT_TRUE(pair.b().deregister_memory(md).ok());
  for (uint64_t size : {uint64_t{64}, uint64_t{1} << 20}) {
    SCOPED_TRACE(size);
    const uint64_t id = pair.a().allocate_transfer_id();
    StatusHandle w = must(pair.a().write(ms, 0, md, 0, size, id));
    ASSERT_TRUE(w->wait(kWait));
    EXPECT_EQ(w->code(), absl::StatusCode::kNotFound) << w->status();
    EXPECT_NE(w->message().find("reported by target"), std::string::npos) << w->status();
    StatusHandle in = pop_inbound(pair.b(), "initiator", id);
    ASSERT_NE(in, nullptr);
    EXPECT_EQ(in->code(), absl::StatusCode::kNotFound);
    StatusHandle r = must(pair.a().read(ms, 0, md, 0, size, pair.a().allocate_transfer_id()));
    ASSERT_TRUE(r->wait(kWait));
    EXPECT_EQ(r->code(), absl::StatusCode::kNotFound) << r->status();
  }
  // A descriptor that claims more than the target registered: the target refuses.
  std::vector<uint8_t> small(100);
  MemoryDesc msmall = *pair.b().register_memory(small.data(), small.size());
  MemoryDesc lying = msmall;
  lying.size = 1 << 20;
  StatusHandle w = must(pair.a().write(ms, 0, lying, 50, 4096, pair.a().allocate_transfer_id()));
  ASSERT_TRUE(w->wait(kWait));
  EXPECT_EQ(w->code(), absl::StatusCode::kOutOfRange) << w->status();
  // The engines still work afterwards.
  MemoryDesc md2 = *pair.b().register_memory(dst.data(), dst.size());
  expect_success(must(pair.a().write(ms, 0, md2, 0, 1 << 20, pair.a().allocate_transfer_id())));
}

TEST(Engine, CarriesAThousandTransfersInFlightFromManyThreads) {
  EngineConfig cfg;
  cfg.rings = 2;
  cfg.stripes = 4;
  EnginePair pair(cfg);
  ASSERT_TRUE(pair.error.ok()) << pair.error;
  constexpr int kThreads = 4, kPerThread = 250, kSize = 4096 + 17;
  std::vector<uint8_t> src(size_t{kThreads} * kPerThread * kSize), dst(src.size(), 0);
  fill_pattern(src.data(), src.size(), 11);
  MemoryDesc ms = *pair.a().register_memory(src.data(), src.size());
  MemoryDesc md = *pair.b().register_memory(dst.data(), dst.size());
  std::vector<std::vector<StatusHandle>> statuses(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        const uint64_t off = (uint64_t{static_cast<uint64_t>(t)} * kPerThread + i) * kSize;
        const bool rd = (i % 5) == 4;  // a few reads in the mix, of already written data
        auto s = rd ? pair.a().read(ms, off, md, off, kSize, pair.a().allocate_transfer_id())
                    : pair.a().write(ms, off, md, off, kSize, pair.a().allocate_transfer_id());
        if (s.ok()) {
          statuses[t].push_back(*s);
        }
      }
    });
  }
  for (auto& t : threads) {
    t.join();
  }
  std::vector<StatusHandle> all;
  for (auto& v : statuses) {
    all.insert(all.end(), v.begin(), v.end());
  }
  ASSERT_EQ(all.size(), size_t{kThreads} * kPerThread);
  absl::Status st = wait_all(all, milliseconds(30000));
  EXPECT_TRUE(st.ok()) << st;
  // Reads may have copied zeros back over the source (they raced their writes), so
  // compare source and target directly: every range was written or read between them.
  EXPECT_EQ(std::memcmp(src.data(), dst.data(), src.size()), 0);
}

// Threads of this process, leaving out io_uring's io-wq workers ("iou-wrk-*"): the
// kernel starts those for operations it punts out of the poll path (a request woken
// by poll that still makes no progress, see io_arm_poll_handler), and retires them
// when idle; they are the kernel's, not ringxfer's, and do not follow the peer count.
int thread_count(int* iowq_workers = nullptr) {
  int n = 0, iowq = 0;
  if (DIR* d = opendir("/proc/self/task")) {
    while (dirent* e = readdir(d)) {
      if (e->d_name[0] == '.') {
        continue;
      }
      char comm[64] = {};
      const std::string path = std::string("/proc/self/task/") + e->d_name + "/comm";
      if (FILE* f = std::fopen(path.c_str(), "r")) {
        if (std::fgets(comm, sizeof(comm), f) == nullptr) {
          comm[0] = 0;
        }
        std::fclose(f);
      }
      if (std::strncmp(comm, "iou-wrk", 7) == 0) {
        ++iowq;
      } else {
        ++n;
      }
    }
    closedir(d);
  }
  if (iowq_workers != nullptr) {
    *iowq_workers = iowq;
  }
  return n;
}

TEST(Engine, ThreadsDoNotGrowWithPeers) {
  const int t0 = thread_count();
  EngineConfig cfg;
  cfg.rings = 2;
  cfg.stripes = 2;
  auto a = *Engine::create("many-peers", cfg);
  EXPECT_EQ(thread_count() - t0, 2) << "an engine runs exactly `rings` threads";
  std::vector<std::unique_ptr<Engine>> targets;
  std::vector<std::vector<uint8_t>> mem(8, std::vector<uint8_t>(1 << 20));
  std::vector<MemoryDesc> dsts;
  for (int i = 0; i < 8; ++i) {
    targets.push_back(*Engine::create("peer-" + std::to_string(i)));
    dsts.push_back(*targets.back()->register_memory(mem[i].data(), mem[i].size()));
    ASSERT_TRUE(a->register_remote_engine(targets.back()->desc()).ok());
  }
  const int before = thread_count();
  std::vector<uint8_t> src(1 << 20, 9);
  MemoryDesc ms = *a->register_memory(src.data(), src.size());
  std::vector<StatusHandle> all;
  for (int round = 0; round < 3; ++round) {
    for (const MemoryDesc& d : dsts) {
      all.push_back(must(a->write(ms, 0, d, 0, src.size(), a->allocate_transfer_id())));
    }
  }
  ASSERT_TRUE(wait_all(all, milliseconds(30000)).ok());
  EXPECT_EQ(thread_count(), before) << "transfers to 8 peers must not start threads";
  for (auto& m : mem) {
    EXPECT_EQ(m, src);
  }
}

TEST(Engine, WaitAllSharesOneDeadline) {
  std::vector<StatusHandle> none;
  EXPECT_TRUE(wait_all(none, milliseconds(-1)).ok());
  auto pending = std::make_shared<TransferStatus>(1);
  pending->set_in_progress();
  std::vector<StatusHandle> v = {pending};
  EXPECT_EQ(wait_all(v, milliseconds(0)).code(), absl::StatusCode::kDeadlineExceeded);
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(wait_all(v, milliseconds(50)).code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, milliseconds(45));
  std::thread t([&] {
    std::this_thread::sleep_for(milliseconds(20));
    pending->finish(absl::UnavailableError("peer lost"));
  });
  EXPECT_EQ(wait_all(v, milliseconds(-1)).code(), absl::StatusCode::kUnavailable);
  t.join();
}

TEST(Engine, WaitSpinsThenSleepsAndKeepsItsTimeout) {
  using std::chrono::microseconds;
  // Finished by another thread during the spin: wait returns without sleeping.
  auto quick = std::make_shared<TransferStatus>(1, milliseconds(200));
  quick->set_in_progress();
  std::thread t([&] {
    std::this_thread::sleep_for(milliseconds(5));
    quick->finish(absl::OkStatus());
  });
  EXPECT_TRUE(quick->wait(milliseconds(1000)));
  t.join();
  EXPECT_TRUE(quick->succeeded());
  // A timeout shorter than the spin bounds the whole wait.
  auto slow = std::make_shared<TransferStatus>(2, milliseconds(500));
  slow->set_in_progress();
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_FALSE(slow->wait(milliseconds(30)));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, milliseconds(300));
  // Spin, then sleep: the remaining timeout still applies, and a finish after the spin
  // wakes the sleeper.
  auto later = std::make_shared<TransferStatus>(3, microseconds(100));
  later->set_in_progress();
  t0 = std::chrono::steady_clock::now();
  EXPECT_FALSE(later->wait(milliseconds(40)));
  EXPECT_GE(std::chrono::steady_clock::now() - t0, milliseconds(35));
  std::thread u([&] {
    std::this_thread::sleep_for(milliseconds(20));
    later->finish(absl::UnavailableError("gone"));
  });
  EXPECT_TRUE(later->wait(milliseconds(5000)));
  u.join();
  EXPECT_TRUE(later->failed());
}

// ---- Hostile peers ----

std::vector<std::byte> hello_bytes(wire::ChannelKind ch, uint8_t stripe, const std::string& key) {
  wire::Hello h;
  h.channel = ch;
  h.stripe = stripe;
  h.key = key;
  std::vector<std::byte> b(wire::hello_frame_bytes(key.size(), 0));
  EXPECT_TRUE(wire::encode_hello(h, b).ok());
  return b;
}

TEST(Engine, ClosesConnectionOnGarbageAndKeepsServingOthers) {
  EnginePair pair;
  ASSERT_TRUE(pair.error.ok()) << pair.error;
  const uint16_t port = pair.b().desc().port;
  {
    testing::RawClient garbage(port);
    ASSERT_TRUE(garbage.connected());
    std::vector<std::byte> junk(100, std::byte{0x41});
    garbage.send_all(junk);
    EXPECT_TRUE(garbage.wait_closed(5000)) << "garbage must close the connection";
  }
  {
    // A header that announces a body far over the limit.
    testing::RawClient huge(port);
    std::vector<std::byte> b = hello_bytes(wire::ChannelKind::kControl, 0, "evil");
    b[8] = std::byte{0xff};
    b[9] = std::byte{0xff};
    b[10] = std::byte{0xff};
    b[11] = std::byte{0x7f};
    huge.send_all(b);
    EXPECT_TRUE(huge.wait_closed(5000));
  }
  EXPECT_GE(pair.b().stats().hostile_frames, 2u);
  // A real engine is unaffected.
  std::vector<uint8_t> src(5000, 7), dst(5000, 0);
  MemoryDesc ms = *pair.a().register_memory(src.data(), src.size());
  MemoryDesc md = *pair.b().register_memory(dst.data(), dst.size());
  expect_success(must(pair.a().write(ms, 0, md, 0, 5000, 77)));
  EXPECT_EQ(src, dst);
}

TEST(Engine, DataOutsideItsSegmentClosesTheConnectionAndChangesNothing) {
  auto target = *Engine::create("target");
  Guarded region(4096);
  MemoryDesc md = *target->register_memory(region.data(), region.size());
  const uint16_t port = target->desc().port;

  testing::RawClient ctrl(port);
  ASSERT_TRUE(ctrl.connected());
  ASSERT_TRUE(ctrl.send_all(hello_bytes(wire::ChannelKind::kControl, 0, "mallory")));
  std::vector<std::byte> ack(wire::hello_ack_frame_bytes(6, 0));
  ASSERT_TRUE(ctrl.recv_exact(ack.data(), ack.size(), 5000)) << "no hello ack";
  ASSERT_TRUE(wire::decode_hello_ack(ack).ok());
  // A valid request for two 100-byte segments (the last bytes of the region, and its
  // first bytes)...
  const std::vector<wire::Segment> segs = {{md.id, md.rkey, 3996, 100}, {md.id, md.rkey, 0, 100}};
  std::vector<std::byte> req(wire::request_frame_bytes(2));
  ASSERT_TRUE(wire::encode_request(wire::OpKind::kWrite, 9, segs, req, 0, /*seq=*/1).ok());
  ASSERT_TRUE(ctrl.send_all(req));
  // ...then a batch frame of the announced 200 bytes whose one entry runs past the
  // end of segment 0, and so past the end of the region.
  const std::vector<wire::BatchEntry> entries = {{0, 200, 0}};
  std::vector<std::byte> batch(wire::data_batch_frame_bytes(1));
  ASSERT_TRUE(wire::encode_data_batch(9, entries, batch, /*seq=*/1).ok());
  std::vector<std::byte> payload(200, std::byte{0xEE});
  ctrl.send_all(batch);
  ctrl.send_all(payload);
  EXPECT_TRUE(ctrl.wait_closed(5000)) << "an out-of-segment frame must close the connection";
  EXPECT_TRUE(region.guards_intact());
  for (size_t i = 0; i < region.size(); ++i) {
    ASSERT_EQ(region.data()[i], 0) << "byte " << i << " changed";
  }
  EXPECT_GE(target->stats().hostile_frames, 1u);
  StatusHandle in = pop_inbound(*target, "mallory", 9);
  ASSERT_NE(in, nullptr);
  EXPECT_TRUE(in->failed());
}

}  // namespace
}  // namespace ringxfer
