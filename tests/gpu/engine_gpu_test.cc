// GPU memory over loopback between two engines, against the fake runtime (its device
// memory is PROT_NONE to the CPU, so any direct access by ringxfer faults): every mix of
// locations, writes and reads, single, batched and session transfers, sizes from 1 byte
// up at unaligned offsets, data and neighbours checked through the runtime; copy
// failures, slab exhaustion, teardown with copies in flight and the overlap of copies.
#include <dlfcn.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "memory/gpu_runtime.h"
#include "ringxfer/ringxfer.h"

namespace ringxfer {
namespace {

using std::chrono::seconds;
constexpr auto kWait = seconds(30);

const memory::GpuApi& api() {
  static std::shared_ptr<memory::GpuRuntime> rt = [] {
    absl::StatusOr<std::shared_ptr<memory::GpuRuntime>> r = memory::GpuRuntime::find();
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : nullptr;
  }();
  return rt->api();
}

template <typename Fn>
Fn fake_fn(const char* name) {
  const char* path = std::getenv("RINGXFER_FAKE_GPU");
  void* h = path != nullptr ? dlopen(path, RTLD_NOW | RTLD_NOLOAD) : nullptr;
  void* sym = h != nullptr ? dlsym(h, name) : nullptr;
  if (h != nullptr) {
    dlclose(h);
  }
  return reinterpret_cast<Fn>(sym);
}
// The fake runtime's controls exist only with it (tools/gpu_check runs these tests
// against a real runtime: the tests that need them skip).
bool have_fake() {
  api();  // loads the runtime (the fake, where RINGXFER_GPU_RUNTIME names it)
  return fake_fn<void (*)(long, long)>("ringxfer_fake_gpu_fail_copies") != nullptr;
}
#define RX_NEEDS_FAKE()                                                      \
  if (!have_fake()) {                                                        \
    GTEST_SKIP() << "needs the fake runtime's controls (RINGXFER_FAKE_GPU)"; \
  }
void fail_copies(long after, long count) {
  fake_fn<void (*)(long, long)>("ringxfer_fake_gpu_fail_copies")(after, count);
}
void copy_cost(double gbps, long latency_us) {
  fake_fn<void (*)(double, long)>("ringxfer_fake_gpu_set_copy_cost")(gbps, latency_us);
}

std::vector<uint8_t> pattern(size_t n, uint32_t seed) {
  std::vector<uint8_t> v(n);
  uint32_t x = seed * 2654435761u + 1;
  for (size_t i = 0; i < n; ++i) {
    x = x * 1103515245u + 12345u;
    v[i] = static_cast<uint8_t>(x >> 16);
  }
  return v;
}

// Memory of one location: GPU memory of the fake (read and written only through the
// runtime) or host memory.
class Buffer {
 public:
  Buffer(bool gpu, size_t n) : gpu_(gpu), n_(n) {
    if (gpu_) {
      EXPECT_EQ(api().device_malloc(&p_, n), 0);
    } else {
      host_.resize(n);
      p_ = host_.data();
    }
  }
  ~Buffer() {
    if (gpu_) {
      api().device_free(p_);
    }
  }
  void put(const std::vector<uint8_t>& v) {
    if (gpu_) {
      ASSERT_EQ(api().memcpy_sync(p_, v.data(), v.size(), memory::gpu_abi::kMemcpyHostToDevice), 0);
    } else {
      std::memcpy(p_, v.data(), v.size());
    }
  }
  std::vector<uint8_t> get() const {
    std::vector<uint8_t> v(n_);
    if (gpu_) {
      EXPECT_EQ(api().memcpy_sync(v.data(), p_, n_, memory::gpu_abi::kMemcpyDeviceToHost), 0);
    } else {
      std::memcpy(v.data(), p_, n_);
    }
    return v;
  }
  void* data() const { return p_; }
  size_t size() const { return n_; }
  bool gpu() const { return gpu_; }
  MemoryLocation location() const { return gpu_ ? MemoryLocation::kGpu : MemoryLocation::kCpu; }
  int device() const { return gpu_ ? 0 : -1; }

 private:
  bool gpu_;
  size_t n_;
  void* p_ = nullptr;
  std::vector<uint8_t> host_;
};

EngineConfig config(uint64_t slab_bytes, int slabs) {
  EngineConfig c;
  c.host = "127.0.0.1";
  c.staging_slab_bytes = slab_bytes;
  c.staging_slabs = slabs;
  return c;
}

// Two engines; the target's slabs are smaller than the initiator's, so a payload it
// receives into GPU memory arrives in several parts.
class Pair {
 public:
  Pair(EngineConfig ca = config(4 << 20, 16), EngineConfig cb = config(256 << 10, 4)) {
    a = *Engine::create("gpu-initiator", ca);
    b = *Engine::create("gpu-target", cb);
    EXPECT_TRUE(a->register_remote_engine(b->desc()).ok());
    EXPECT_TRUE(b->register_remote_engine(a->desc()).ok());
  }
  std::unique_ptr<Engine> a, b;
};

MemoryDesc reg(Engine& e, const Buffer& buf) {
  absl::StatusOr<MemoryDesc> d =
      e.register_memory(buf.data(), buf.size(), buf.location(), buf.device());
  EXPECT_TRUE(d.ok()) << d.status();
  return d.ok() ? *d : MemoryDesc{};
}

enum class Kind { kSingle, kBatch, kSession };
struct Case {
  bool src_gpu;
  bool dst_gpu;
  bool write;
  Kind kind;
};

std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  const Case& c = info.param;
  const char* kinds[] = {"Single", "Batch", "Session"};
  return std::string(c.src_gpu ? "Gpu" : "Cpu") + "To" + (c.dst_gpu ? "Gpu" : "Cpu") +
         (c.write ? "Write" : "Read") + kinds[static_cast<int>(c.kind)];
}

class GpuTransfer : public ::testing::TestWithParam<Case> {};

TEST_P(GpuTransfer, MovesEverySizeAtUnalignedOffsetsAndLeavesNeighboursAlone) {
  const Case c = GetParam();
  Pair pair;
  constexpr size_t kRegion = (20 << 20) + 4096;
  // The initiator's memory is the source of a write and the destination of a read.
  Buffer src(c.src_gpu, kRegion), dst(c.dst_gpu, kRegion);
  Buffer& local = c.write ? src : dst;
  Buffer& remote = c.write ? dst : src;
  const MemoryDesc ld = reg(*pair.a, local);
  const MemoryDesc rd = reg(*pair.b, remote);
  std::unique_ptr<Session> session;
  if (c.kind == Kind::kSession) {
    absl::StatusOr<std::unique_ptr<Session>> s = pair.a->create_session(ld, rd);
    ASSERT_TRUE(s.ok()) << s.status();
    session = std::move(*s);
  }
  uint32_t seed = 1;
  for (size_t size : {size_t{1}, size_t{4097}, size_t{(3 << 20) + 1}, size_t{(9 << 20) + 7}}) {
    SCOPED_TRACE("size " + std::to_string(size));
    const std::vector<uint8_t> want_src = pattern(kRegion, seed++);
    const std::vector<uint8_t> before_dst = pattern(kRegion, seed++);
    src.put(want_src);
    dst.put(before_dst);
    const uint64_t src_off = 3 + size % 61, dst_off = 1001 + size % 13;
    const uint64_t loff = c.write ? src_off : dst_off, roff = c.write ? dst_off : src_off;
    std::vector<uint8_t> want = before_dst;
    absl::StatusOr<StatusHandle> st;
    const uint64_t id = pair.a->allocate_transfer_id();
    if (c.kind == Kind::kBatch) {
      // Three segments: the first half, a gap of 5 bytes, the rest.
      const uint64_t h = size / 2;
      const uint64_t n2 = size - h;
      const std::vector<uint64_t> lo = {loff, loff + h + 5}, ro = {roff, roff + h + 5},
                                  sz = {h == 0 ? 1 : h, n2};
      std::vector<uint64_t> los = lo, ros = ro, szs = sz;
      if (h == 0) {
        los = {loff};
        ros = {roff};
        szs = {size};
      }
      st = c.write ? pair.a->batch_write(ld, los, rd, ros, szs, id)
                   : pair.a->batch_read(ld, los, rd, ros, szs, id);
      for (size_t i = 0; i < szs.size(); ++i) {
        const uint64_t s_at = c.write ? los[i] : ros[i], d_at = c.write ? ros[i] : los[i];
        std::memcpy(want.data() + d_at, want_src.data() + s_at, szs[i]);
      }
    } else {
      if (c.kind == Kind::kSession) {
        st = c.write ? session->write(loff, roff, size, id) : session->read(loff, roff, size, id);
      } else {
        st = c.write ? pair.a->write(ld, loff, rd, roff, size, id)
                     : pair.a->read(ld, loff, rd, roff, size, id);
      }
      std::memcpy(want.data() + dst_off, want_src.data() + src_off, size);
    }
    ASSERT_TRUE(st.ok()) << st.status();
    ASSERT_TRUE((*st)->wait(kWait));
    ASSERT_TRUE((*st)->succeeded()) << (*st)->status();
    // Success means the bytes are there now: read back at once, no waiting.
    if (c.write) {
      // The target records its inbound status once the last copy into its memory is done.
      StatusHandle in;
      for (int i = 0; i < 2000 && in == nullptr; ++i) {
        in = pair.b->pop_inbound_status(pair.a->desc().key, id);
        if (in == nullptr) {
          std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
      }
      ASSERT_NE(in, nullptr);
      EXPECT_TRUE(in->succeeded()) << in->status();
    }
    const std::vector<uint8_t> got = dst.get();
    ASSERT_EQ(got.size(), want.size());
    size_t first_bad = got.size();
    for (size_t i = 0; i < got.size(); ++i) {
      if (got[i] != want[i]) {
        first_bad = i;
        break;
      }
    }
    EXPECT_EQ(first_bad, got.size())
        << "first differing byte (destination offset " << dst_off << ")";
    EXPECT_EQ(src.get(), want_src) << "the source changed";
  }
  EXPECT_TRUE(pair.a->deregister_memory(ld).ok());
  EXPECT_TRUE(pair.b->deregister_memory(rd).ok());
}

INSTANTIATE_TEST_SUITE_P(
    Mixes, GpuTransfer,
    ::testing::Values(
        Case{true, true, true, Kind::kSingle}, Case{true, true, false, Kind::kSingle},
        Case{false, true, true, Kind::kSingle}, Case{false, true, false, Kind::kSingle},
        Case{true, false, true, Kind::kSingle}, Case{true, false, false, Kind::kSingle},
        Case{true, true, true, Kind::kBatch}, Case{true, true, false, Kind::kBatch},
        Case{false, true, true, Kind::kBatch}, Case{true, false, false, Kind::kBatch},
        Case{true, true, true, Kind::kSession}, Case{true, true, false, Kind::kSession}),
    case_name);

TEST(GpuStaging, A64MiBWriteAndReadBetweenGpuRegions) {
  Pair pair(config(4 << 20, 16), config(4 << 20, 16));
  constexpr size_t kBytes = 64 << 20;
  Buffer a(true, kBytes + 4096), b(true, kBytes + 4096);
  const std::vector<uint8_t> pa = pattern(a.size(), 7), pb = pattern(b.size(), 8);
  a.put(pa);
  b.put(pb);
  const MemoryDesc ad = reg(*pair.a, a), bd = reg(*pair.b, b);
  auto w = pair.a->write(ad, 5, bd, 11, kBytes, 1);
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE((*w)->wait(kWait));
  ASSERT_TRUE((*w)->succeeded()) << (*w)->status();
  std::vector<uint8_t> want = pb;
  std::memcpy(want.data() + 11, pa.data() + 5, kBytes);
  EXPECT_TRUE(b.get() == want);
  // And back into another place of a.
  auto r = pair.a->read(ad, 3000, bd, 11, kBytes, 2);
  ASSERT_TRUE(r.ok());
  ASSERT_TRUE((*r)->wait(kWait));
  ASSERT_TRUE((*r)->succeeded()) << (*r)->status();
  std::vector<uint8_t> want_a = pa;
  std::memcpy(want_a.data() + 3000, pa.data() + 5, kBytes);
  EXPECT_TRUE(a.get() == want_a);
  const EngineStats s = pair.a->stats();
  EXPECT_GT(s.staged_copies, 0u);
}

TEST(GpuStaging, SuccessMeansTheBytesAreInDeviceMemoryEvenWhenCopiesAreSlow) {
  RX_NEEDS_FAKE();
  // Every copy takes 30 ms: a status that succeeded before the last copy into device
  // memory finished would be seen here, reading back at once.
  Pair pair;
  constexpr size_t kBytes = (5 << 20) + 3;
  Buffer ga(true, kBytes), gb(true, kBytes), hb(false, kBytes);
  const std::vector<uint8_t> pa = pattern(kBytes, 11), ph = pattern(kBytes, 12);
  ga.put(pa);
  hb.put(ph);
  gb.put(std::vector<uint8_t>(kBytes, 0));
  const MemoryDesc ad = reg(*pair.a, ga), bd = reg(*pair.b, gb), hd = reg(*pair.b, hb);
  copy_cost(0, 30'000);
  auto w = pair.a->write(ad, 0, bd, 0, kBytes, 1);
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE((*w)->wait(kWait));
  const std::vector<uint8_t> after_write = gb.get();
  // A read from host memory into the initiator's GPU memory.
  auto r = pair.a->read(ad, 0, hd, 0, kBytes, 2);
  ASSERT_TRUE(r.ok());
  ASSERT_TRUE((*r)->wait(kWait));
  const std::vector<uint8_t> after_read = ga.get();
  copy_cost(0, 0);
  ASSERT_TRUE((*w)->succeeded()) << (*w)->status();
  ASSERT_TRUE((*r)->succeeded()) << (*r)->status();
  EXPECT_TRUE(after_write == pa) << "the write succeeded before its bytes were in device memory";
  EXPECT_TRUE(after_read == ph) << "the read succeeded before its bytes were in device memory";
}

TEST(GpuStaging, ACallersStreamOrdersTheCopiesAfterItsWork) {
  RX_NEEDS_FAKE();
  // The producer's work on its stream (here a 32 MiB copy at 1 GB/s, 32 ms) writes the
  // source; a transfer started right after, with that stream set, must carry its bytes.
  Pair pair;
  constexpr size_t kBytes = 32 << 20;
  constexpr size_t kSent = 64 << 10;
  Buffer ga(true, kBytes), gb(true, kBytes);
  ga.put(std::vector<uint8_t>(kBytes, 0xAA));
  gb.put(std::vector<uint8_t>(kBytes, 0));
  const std::vector<uint8_t> fresh = pattern(kBytes, 21);
  const MemoryDesc ad = reg(*pair.a, ga), bd = reg(*pair.b, gb);
  void* stream = nullptr;
  ASSERT_EQ(api().stream_create_with_flags(&stream, memory::gpu_abi::kStreamNonBlocking), 0);
  for (bool ordered : {true, false}) {
    SCOPED_TRACE(ordered ? "with the stream set" : "without (the race the stream prevents)");
    ga.put(std::vector<uint8_t>(kBytes, 0xAA));
    copy_cost(1.0, 0);
    ASSERT_EQ(api().memcpy_async(ga.data(), fresh.data(), kBytes,
                                 memory::gpu_abi::kMemcpyHostToDevice, stream),
              0);
    Engine::set_gpu_stream(ordered ? stream : nullptr);
    auto w = pair.a->write(ad, 0, bd, 0, kSent, ordered ? 1 : 2);
    Engine::set_gpu_stream(nullptr);
    ASSERT_TRUE(w.ok()) << w.status();
    ASSERT_TRUE((*w)->wait(kWait));
    ASSERT_TRUE((*w)->succeeded()) << (*w)->status();
    ASSERT_EQ(api().stream_synchronize(stream), 0);
    copy_cost(0, 0);
    const std::vector<uint8_t> got = gb.get();
    const bool fresh_bytes = std::memcmp(got.data(), fresh.data(), kSent) == 0;
    if (ordered) {
      EXPECT_TRUE(fresh_bytes) << "the copy ran before the producer's work it was ordered after";
    } else {
      // Not a requirement, a check that the test can tell: unordered, the stale bytes go.
      EXPECT_EQ(got[0], 0xAA) << "the unordered transfer did not race: the test proves nothing";
    }
  }
  EXPECT_EQ(api().stream_destroy(stream), 0);
}

TEST(GpuStaging, AFailedCopyFailsExactlyThatTransferOnEitherSide) {
  RX_NEEDS_FAKE();
  Pair pair;
  Buffer ga(true, 8 << 20), gb(true, 8 << 20), hb(false, 8 << 20);
  const MemoryDesc ad = reg(*pair.a, ga), bd = reg(*pair.b, gb), hd = reg(*pair.b, hb);
  Buffer ha(false, 8 << 20);
  const MemoryDesc had = reg(*pair.a, ha);
  struct Step {
    const char* what;
    MemoryDesc local;
    MemoryDesc remote;
    bool write;
    uint64_t size;
  };
  // The first copy of each fails: the initiator's device-to-host copy (writes from its
  // GPU), the target's (reads of its GPU memory, striped and inline, where the
  // completion must carry the failure, not an OK sent ahead of the data).
  for (const Step& s : {Step{"write from GPU to host memory", ad, hd, true, 3 << 20},
                        Step{"write from GPU to GPU", ad, bd, true, 3 << 20},
                        Step{"read from GPU into GPU", ad, bd, false, 3 << 20},
                        Step{"read of host memory into GPU", ad, hd, false, 3 << 20},
                        Step{"inline read of GPU memory into host memory", had, bd, false, 4096}}) {
    SCOPED_TRACE(s.what);
    fail_copies(0, 1);
    const uint64_t id = pair.a->allocate_transfer_id();
    auto t = s.write ? pair.a->write(s.local, 0, s.remote, 0, s.size, id)
                     : pair.a->read(s.local, 0, s.remote, 0, s.size, id);
    ASSERT_TRUE(t.ok());
    ASSERT_TRUE((*t)->wait(kWait));
    EXPECT_TRUE((*t)->failed());
    EXPECT_EQ((*t)->code(), absl::StatusCode::kInternal) << (*t)->status();
    EXPECT_NE((*t)->message().find("GPU copy"), std::string::npos) << (*t)->status();
    fail_copies(0, 0);
    // The next transfer is not touched by it.
    auto ok = s.write ? pair.a->write(s.local, 0, s.remote, 0, s.size, id + 1000)
                      : pair.a->read(s.local, 0, s.remote, 0, s.size, id + 1000);
    ASSERT_TRUE(ok.ok());
    ASSERT_TRUE((*ok)->wait(kWait));
    EXPECT_TRUE((*ok)->succeeded()) << (*ok)->status();
  }
  EXPECT_GT(pair.a->stats().staging_failures + pair.b->stats().staging_failures, 0u);
}

TEST(GpuStaging, DeregistrationWaitsForACopyOutOfTheRegionStillRunning) {
  RX_NEEDS_FAKE();
  // Copies of 150 ms: deregistering the source while they run fails the write at once,
  // but returns only once no copy reads the region any more.
  Pair pair;
  Buffer ga(true, 8 << 20), gb(true, 8 << 20);
  const MemoryDesc ad = reg(*pair.a, ga), bd = reg(*pair.b, gb);
  copy_cost(0, 150'000);
  auto w = pair.a->write(ad, 0, bd, 0, 6 << 20, 1);
  ASSERT_TRUE(w.ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(30));  // the copies are running
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(pair.a->deregister_memory(ad).ok());
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  copy_cost(0, 0);
  EXPECT_GE(ms, 60.0) << "deregister_memory returned while a copy out of the region ran";
  ASSERT_TRUE((*w)->wait(kWait));
  EXPECT_EQ((*w)->code(), absl::StatusCode::kFailedPrecondition) << (*w)->status();
}

TEST(GpuStaging, ManyConcurrentTransfersOverTwoSlabsDoNotDeadlock) {
  // Two slabs each way on both sides and 48 transfers at once, both directions.
  Pair pair(config(256 << 10, 2), config(256 << 10, 2));
  constexpr size_t kEach = (1 << 20) + 77;
  constexpr int kN = 24;
  Buffer ga(true, kN * kEach), gb(true, kN * kEach);
  ga.put(pattern(ga.size(), 3));
  gb.put(pattern(gb.size(), 4));
  const MemoryDesc ad = reg(*pair.a, ga), bd = reg(*pair.b, gb);
  std::vector<StatusHandle> all;
  for (int i = 0; i < kN; ++i) {
    // Writes of the first half of a's slots, reads into the second half.
    auto w = pair.a->write(ad, i * kEach, bd, i * kEach, kEach / 2, 100 + i);
    auto r = pair.a->read(ad, i * kEach + kEach / 2, bd, i * kEach + kEach / 2, kEach / 2, 500 + i);
    ASSERT_TRUE(w.ok() && r.ok());
    all.push_back(*w);
    all.push_back(*r);
  }
  for (const StatusHandle& s : all) {
    ASSERT_TRUE(s->wait(kWait)) << "stuck: transfer " << s->transfer_id();
    EXPECT_TRUE(s->succeeded()) << s->status();
  }
  EXPECT_GT(pair.a->stats().staging_waits + pair.b->stats().staging_waits, 0u)
      << "the slabs never ran out: the test proves nothing";
}

TEST(GpuStaging, TeardownWithCopiesInFlightIsClean) {
  RX_NEEDS_FAKE();
  copy_cost(0, 20'000);  // 20 ms per copy
  std::vector<StatusHandle> all;
  {
    Pair pair;
    Buffer ga(true, 16 << 20), gb(true, 16 << 20);
    const MemoryDesc ad = reg(*pair.a, ga), bd = reg(*pair.b, gb);
    // Disjoint ranges (2 MiB each): writes out of ga's first half into gb's, reads out
    // of gb's second half into ga's; no byte is copied by two transfers at once.
    for (int i = 0; i < 4; ++i) {
      const uint64_t w_at = uint64_t(i) << 21, r_at = uint64_t(4 + i) << 21;
      auto w = pair.a->write(ad, w_at, bd, w_at, 2 << 20, 10 + i);
      auto r = pair.a->read(ad, r_at, bd, r_at, 2 << 20, 20 + i);
      ASSERT_TRUE(w.ok() && r.ok());
      all.push_back(*w);
      all.push_back(*r);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    // The engines go (their destructors wait for the copies), then the memory.
    pair.a.reset();
    pair.b.reset();
  }
  copy_cost(0, 0);
  for (const StatusHandle& s : all) {
    EXPECT_TRUE(s->done()) << "a transfer left unfinished by teardown";
  }
}

TEST(GpuStaging, CopiesOverlapWithEachOtherAndTheWire) {
  RX_NEEDS_FAKE();
  // D per copy, 12 chunks of a slab each, copied out on one side and in on the other:
  // one after the other that is 24 D; overlapped, about 13 D (N max(D, W) + min(D, W)
  // with the wire's W near 0 on loopback). D is large so that a slow (sanitized) build's
  // own cost per chunk does not hide the overlap.
  constexpr long kD = 60'000;  // us
  constexpr int kChunks = 12;
  // One ring each: one stream each way per engine.
  EngineConfig one = config(1 << 20, 4);
  one.rings = 1;
  Pair pair(one, one);
  Buffer ga(true, kChunks << 20), gb(true, kChunks << 20);
  const MemoryDesc ad = reg(*pair.a, ga), bd = reg(*pair.b, gb);
  copy_cost(0, kD);
  const auto t0 = std::chrono::steady_clock::now();
  auto w = pair.a->write(ad, 0, bd, 0, kChunks << 20, 1);
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE((*w)->wait(kWait));
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  copy_cost(0, 0);
  ASSERT_TRUE((*w)->succeeded()) << (*w)->status();
  const double d_ms = kD / 1000.0;
  RecordProperty("elapsed_ms", std::to_string(ms));
  std::printf("%d chunks, %.0f ms per copy: %.0f ms (serial %.0f, overlapped ~%.0f)\n", kChunks,
              d_ms, ms, 2 * kChunks * d_ms, (kChunks + 1) * d_ms);
  EXPECT_GE(ms, kChunks * d_ms) << "the copy cost was not applied";
  EXPECT_LT(ms, 0.75 * 2 * kChunks * d_ms) << "copies did not overlap";
}

TEST(GpuStaging, RegistrationTellsDeviceAndHostMemoryApart) {
  auto e = Engine::create("gpu-reg", config(4 << 20, 16));
  ASSERT_TRUE(e.ok());
  Buffer g(true, 1 << 20);
  std::vector<uint8_t> h(1 << 20);
  // Host memory registered as GPU memory, and the other way round.
  auto bad = (*e)->register_memory(h.data(), h.size(), MemoryLocation::kGpu, 0);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument) << bad.status();
  auto ok = (*e)->register_memory(g.data(), g.size(), MemoryLocation::kGpu, 0);
  ASSERT_TRUE(ok.ok()) << ok.status();
  auto dev_as_host = (*e)->register_memory(g.data(), g.size(), MemoryLocation::kCpu, -1);
  EXPECT_EQ(dev_as_host.status().code(), absl::StatusCode::kInvalidArgument)
      << dev_as_host.status();
  EXPECT_NE(dev_as_host.status().message().find("kGpu"), std::string::npos);
  // A device the runtime does not have, and the wrong device for this memory.
  auto no_dev = (*e)->register_memory(g.data(), g.size(), MemoryLocation::kGpu, 7);
  EXPECT_EQ(no_dev.status().code(), absl::StatusCode::kInvalidArgument) << no_dev.status();
  auto wrong = (*e)->register_memory(g.data(), g.size(), MemoryLocation::kGpu, 1);
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kInvalidArgument) << wrong.status();
  // A region past the end of the allocation.
  auto past = (*e)->register_memory(g.data(), g.size() + 8192, MemoryLocation::kGpu, 0);
  EXPECT_EQ(past.status().code(), absl::StatusCode::kInvalidArgument) << past.status();
}

}  // namespace
}  // namespace ringxfer
