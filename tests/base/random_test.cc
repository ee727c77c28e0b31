// base::random_u64: the source of region keys.
#include "base/random.h"

#include <cstdint>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "gtest/gtest.h"

namespace ringxfer::base {
namespace {

TEST(RandomU64, IsNeverZeroAndNeverRepeatsInAHundredThousand) {
  absl::flat_hash_set<uint64_t> seen;
  for (int i = 0; i < 100'000; ++i) {
    const uint64_t v = random_u64();
    ASSERT_NE(v, 0u);
    ASSERT_TRUE(seen.insert(v).second) << "repeated " << v << " after " << i;
  }
}

TEST(RandomU64, EveryBitTakesBothValues) {
  uint64_t ones = 0, zeros = 0;
  for (int i = 0; i < 256; ++i) {
    const uint64_t v = random_u64();
    ones |= v;
    zeros |= ~v;
  }
  EXPECT_EQ(ones, ~uint64_t{0});
  EXPECT_EQ(zeros, ~uint64_t{0});
}

TEST(RandomU64, ThreadsGetDifferentValues) {
  std::vector<uint64_t> got(8);
  std::vector<std::thread> threads;
  for (size_t i = 0; i < got.size(); ++i) {
    threads.emplace_back([&got, i] { got[i] = random_u64(); });
  }
  for (std::thread& t : threads) {
    t.join();
  }
  absl::flat_hash_set<uint64_t> distinct(got.begin(), got.end());
  EXPECT_EQ(distinct.size(), got.size());
}

}  // namespace
}  // namespace ringxfer::base
