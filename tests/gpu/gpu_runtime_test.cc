// The GPU runtime seam, the slab pool and the copier against the fake runtime
// (tests/gpu/fake_gpu.cc, named by RINGXFER_FAKE_GPU): both vendors' names, pointer
// kinds by version, first-come-first-served slabs, copies and injected failures.
#include <dlfcn.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <mutex>
#include <string>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "gtest/gtest.h"
#include "memory/gpu_runtime.h"
#include "memory/staging.h"

namespace ringxfer::memory {
namespace {

std::string fake_path() {
  const char* p = std::getenv("RINGXFER_FAKE_GPU");
  return p != nullptr ? p : "";
}

// The fake's own controls (it is loaded by the runtime seam; this finds the same copy).
template <typename Fn>
Fn fake_fn(const char* name) {
  void* h = dlopen(fake_path().c_str(), RTLD_NOW | RTLD_NOLOAD);
  EXPECT_NE(h, nullptr) << "the fake runtime is not loaded";
  void* sym = h != nullptr ? dlsym(h, name) : nullptr;
  EXPECT_NE(sym, nullptr) << name;
  if (h != nullptr) {
    dlclose(h);
  }
  return reinterpret_cast<Fn>(sym);
}

void fail_copies(long after, long count) {
  fake_fn<void (*)(long, long)>("ringxfer_fake_gpu_fail_copies")(after, count);
}

class GpuRuntimeTest : public ::testing::TestWithParam<GpuVendor> {
 protected:
  void SetUp() override {
    if (fake_path().empty()) {
      GTEST_SKIP() << "RINGXFER_FAKE_GPU is not set (run through meson test)";
    }
    absl::StatusOr<std::shared_ptr<GpuRuntime>> rt = GpuRuntime::open(fake_path(), GetParam());
    ASSERT_TRUE(rt.ok()) << rt.status();
    rt_ = *rt;
  }
  void* device_alloc(size_t n) {
    void* p = nullptr;
    EXPECT_EQ(rt_->api().device_malloc(&p, n), gpu_abi::kSuccess);
    return p;
  }
  std::shared_ptr<GpuRuntime> rt_;
};

TEST_P(GpuRuntimeTest, LoadsEveryEntryPointUnderTheVendorsNames) {
  EXPECT_EQ(rt_->vendor(), GetParam());
  const GpuApi& api = rt_->api();
  int n = 0;
  ASSERT_EQ(api.get_device_count(&n), gpu_abi::kSuccess);
  EXPECT_GE(n, 1);
  EXPECT_GT(rt_->version(), 0);
  EXPECT_NE(rt_->describe().find(GetParam() == GpuVendor::kHip ? "HIP" : "CUDA"), std::string::npos)
      << rt_->describe();
  const absl::Status e = rt_->error("memcpy_async", 700);
  EXPECT_EQ(e.code(), absl::StatusCode::kInternal);
  EXPECT_NE(e.message().find("memcpy_async"), std::string_view::npos) << e;
  EXPECT_NE(e.message().find("700"), std::string_view::npos) << e;
}

TEST_P(GpuRuntimeTest, TellsDeviceHostAndPageableMemoryApart) {
  void* d = device_alloc(1 << 20);
  ASSERT_NE(d, nullptr);
  PointerInfo pi = rt_->pointer_info(static_cast<char*>(d) + 4096);
  EXPECT_EQ(pi.kind, PointerKind::kDevice);
  EXPECT_EQ(pi.device, 0);
  void* h = nullptr;
  ASSERT_EQ(rt_->api().host_alloc(&h, 4096, gpu_abi::kHostAllocPortable), gpu_abi::kSuccess);
  EXPECT_EQ(rt_->pointer_info(h).kind, PointerKind::kHost);
  std::vector<char> pageable(100);
  EXPECT_EQ(rt_->pointer_info(pageable.data()).kind, PointerKind::kUnknown);
  // HIP's error for pageable memory is cleared: the next call sees no stale error.
  EXPECT_EQ(rt_->api().get_last_error(), gpu_abi::kSuccess);
  EXPECT_EQ(rt_->api().free_host(h), gpu_abi::kSuccess);
  EXPECT_EQ(rt_->api().device_free(d), gpu_abi::kSuccess);
}

TEST(GpuRuntime, DecodesHipMemoryTypesByVersion) {
  // ROCm 5: Host 0, Device 1; ROCm 6 and CUDA: Unregistered 0, Host 1, Device 2.
  EXPECT_EQ(GpuRuntime::decode_memory_type(GpuVendor::kHip, 50'200'000, 0), PointerKind::kHost);
  EXPECT_EQ(GpuRuntime::decode_memory_type(GpuVendor::kHip, 50'200'000, 1), PointerKind::kDevice);
  EXPECT_EQ(GpuRuntime::decode_memory_type(GpuVendor::kHip, 60'300'000, 0), PointerKind::kUnknown);
  EXPECT_EQ(GpuRuntime::decode_memory_type(GpuVendor::kHip, 60'300'000, 1), PointerKind::kHost);
  EXPECT_EQ(GpuRuntime::decode_memory_type(GpuVendor::kHip, 60'300'000, 2), PointerKind::kDevice);
  EXPECT_EQ(GpuRuntime::decode_memory_type(GpuVendor::kCuda, 13'000, 0), PointerKind::kUnknown);
  EXPECT_EQ(GpuRuntime::decode_memory_type(GpuVendor::kCuda, 13'000, 2), PointerKind::kDevice);
  EXPECT_EQ(GpuRuntime::decode_memory_type(GpuVendor::kCuda, 13'000, 3), PointerKind::kManaged);
}

TEST(GpuRuntime, ALibraryThatIsNoRuntimeIsRefusedByName) {
  absl::StatusOr<std::shared_ptr<GpuRuntime>> rt = GpuRuntime::open("libc.so.6");
  ASSERT_FALSE(rt.ok());
  EXPECT_EQ(rt.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(rt.status().message().find("cudaGetDeviceCount"), std::string_view::npos)
      << rt.status();
  rt = GpuRuntime::open("/nonexistent/libcudart.so.13");
  ASSERT_FALSE(rt.ok());
  EXPECT_NE(rt.status().message().find("/nonexistent/libcudart.so.13"), std::string_view::npos);
}

// Runs posted tasks on the test thread, as a ring thread would.
class Inbox {
 public:
  GpuCopier::Post post() {
    return [this](absl::AnyInvocable<void() &&> fn) {
      std::lock_guard<std::mutex> lock(mu_);
      q_.push_back(std::move(fn));
      cv_.notify_all();
    };
  }
  // Runs tasks until `done()` or 10 s.
  template <typename Pred>
  bool run_until(Pred done) {
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!done()) {
      absl::AnyInvocable<void() &&> fn;
      {
        std::unique_lock<std::mutex> lock(mu_);
        if (!cv_.wait_until(lock, end, [&] { return !q_.empty(); })) {
          return false;
        }
        fn = std::move(q_.front());
        q_.pop_front();
      }
      std::move(fn)();
    }
    return true;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<absl::AnyInvocable<void() &&>> q_;
};

TEST_P(GpuRuntimeTest, CopiesARoundTripThroughDeviceMemoryAndReportsAFailedCopy) {
  constexpr size_t kBytes = (3 << 20) + 123;
  char* d = static_cast<char*>(device_alloc(kBytes + 100));
  ASSERT_NE(d, nullptr);
  std::vector<char> src(kBytes), back(kBytes, 0);
  for (size_t i = 0; i < kBytes; ++i) {
    src[i] = static_cast<char>(i * 7 + 3);
  }
  Inbox inbox;
  int done = 0;
  {
    GpuCopier copier(rt_, inbox.post());
    // Two ranges each way, at an unaligned device offset.
    const CopyRange up[] = {{d + 7, src.data(), 1000},
                            {d + 1007, src.data() + 1000, kBytes - 1000}};
    absl::Status st = absl::UnknownError("not yet");
    copier.copy(0, StageDirection::kToDevice, up, nullptr, [&](absl::Status s) {
      st = s;
      ++done;
    });
    EXPECT_EQ(done, 0) << "done ran before copy() returned";
    EXPECT_EQ(copier.inflight(), 1);
    ASSERT_TRUE(inbox.run_until([&] { return done == 1; }));
    ASSERT_TRUE(st.ok()) << st;
    const CopyRange down[] = {{back.data(), d + 7, kBytes}};
    copier.copy(0, StageDirection::kToHost, down, nullptr, [&](absl::Status s) {
      st = s;
      ++done;
    });
    ASSERT_TRUE(inbox.run_until([&] { return done == 2; }));
    ASSERT_TRUE(st.ok()) << st;
    EXPECT_EQ(back, src);
    EXPECT_EQ(copier.inflight(), 0);

    // The next copy fails on the runtime's side: exactly that batch reports it.
    fail_copies(0, 1);
    copier.copy(0, StageDirection::kToHost, down, nullptr, [&](absl::Status s) {
      st = s;
      ++done;
    });
    ASSERT_TRUE(inbox.run_until([&] { return done == 3; }));
    EXPECT_EQ(st.code(), absl::StatusCode::kInternal) << st;
    copier.copy(0, StageDirection::kToHost, down, nullptr, [&](absl::Status s) {
      st = s;
      ++done;
    });
    ASSERT_TRUE(inbox.run_until([&] { return done == 4; }));
    EXPECT_TRUE(st.ok()) << "a failure stays with its batch: " << st;

    // A copy the runtime refuses at once (a range outside the allocation) is reported
    // the same way, later, never from inside copy().
    const CopyRange bad[] = {{back.data(), d + kBytes, 4096}};
    copier.copy(0, StageDirection::kToHost, bad, nullptr, [&](absl::Status s) {
      st = s;
      ++done;
    });
    EXPECT_EQ(done, 4);
    ASSERT_TRUE(inbox.run_until([&] { return done == 5; }));
    EXPECT_FALSE(st.ok());
    // Teardown with a copy in flight: the destructor waits for it, `done` is dropped.
    copier.copy(0, StageDirection::kToHost, down, nullptr, [&](absl::Status) { ++done; });
  }
  EXPECT_EQ(done, 5);
  EXPECT_EQ(rt_->api().device_free(d), gpu_abi::kSuccess);
}

TEST_P(GpuRuntimeTest, SlabsGoToWaitersFirstComeFirstServed) {
  absl::StatusOr<std::unique_ptr<SlabPool>> pool =
      SlabPool::create(rt_, 0, StageDirection::kToHost, 64 << 10, 2);
  ASSERT_TRUE(pool.ok()) << pool.status();
  SlabPool& p = **pool;
  EXPECT_EQ(rt_->pointer_info(p.slabs()[0].data).kind, PointerKind::kHost)
      << "slabs are pinned by the runtime";
  Slab* a = p.acquire_or_wait(1, [](Slab*) { FAIL(); });
  Slab* b = p.acquire_or_wait(1, [](Slab*) { FAIL(); });
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  EXPECT_NE(a->data, b->data);
  std::vector<std::pair<int, Slab*>> granted;
  for (int who = 0; who < 3; ++who) {
    EXPECT_EQ(p.acquire_or_wait(who == 1 ? 7 : 1,
                                [&granted, who](Slab* s) { granted.emplace_back(who, s); }),
              nullptr);
  }
  EXPECT_EQ(p.waiting(), 3u);
  p.cancel_waiters(7);  // its ring stopped
  p.release(a);
  p.release(b);
  ASSERT_EQ(granted.size(), 2u);
  EXPECT_EQ(granted[0], std::make_pair(0, a));
  EXPECT_EQ(granted[1], std::make_pair(2, b));
  // With a waiter gone, a free slab is not taken past nobody.
  p.release(a);
  p.release(b);
  EXPECT_EQ(p.free_count(), 2u);
}

INSTANTIATE_TEST_SUITE_P(Vendors, GpuRuntimeTest,
                         ::testing::Values(GpuVendor::kHip, GpuVendor::kCuda),
                         [](const auto& info) {
                           return info.param == GpuVendor::kHip ? "Hip" : "Cuda";
                         });

}  // namespace
}  // namespace ringxfer::memory
