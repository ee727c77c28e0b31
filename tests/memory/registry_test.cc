#include "memory/registry.h"

#include <cstdint>
#include <limits>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace ringxfer::memory {
namespace {

TEST(Registry, ResolvesRangesInsideARegion) {
  Registry reg;
  std::vector<std::byte> buf(4096);
  absl::StatusOr<Region> r = reg.add(buf.data(), buf.size(), Location::kCpu, -1);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->id, 1u);
  EXPECT_EQ(*reg.resolve(r->id, 0, 4096), buf.data());
  EXPECT_EQ(*reg.resolve(r->id, 4095, 1), buf.data() + 4095);
  EXPECT_EQ(*reg.resolve(r->id, 100, 7), buf.data() + 100);
}

TEST(Registry, RefusesRangesOutsideARegion) {
  Registry reg;
  std::vector<std::byte> buf(4096);
  const uint64_t id = reg.add(buf.data(), buf.size(), Location::kCpu, -1)->id;
  const uint64_t kMax = std::numeric_limits<uint64_t>::max();
  EXPECT_EQ(reg.resolve(id, 4096, 1).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(reg.resolve(id, 4000, 97).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(reg.resolve(id, kMax, 2).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(reg.resolve(id, 1, kMax).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(reg.resolve(id, 0, 0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(reg.resolve(id + 1, 0, 1).status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(reg.resolve(id, 4000, 97).status().message().find("beyond its size 4096"),
            std::string::npos);
}

TEST(Registry, RejectsBadRegistrations) {
  Registry reg;
  std::byte b[8];
  EXPECT_EQ(reg.add(nullptr, 8, Location::kCpu, -1).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(reg.add(b, 0, Location::kCpu, -1).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(reg.add(b, std::numeric_limits<uint64_t>::max(), Location::kCpu, -1).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(Registry, ForgetsRemovedRegionsAndNeverReusesIds) {
  Registry reg;
  std::byte b[8];
  const uint64_t a = reg.add(b, 8, Location::kCpu, -1)->id;
  ASSERT_TRUE(reg.remove(a).ok());
  EXPECT_EQ(reg.remove(a).code(), absl::StatusCode::kNotFound);
  EXPECT_FALSE(reg.find(a).has_value());
  const uint64_t c = reg.add(b, 8, Location::kCpu, -1)->id;
  EXPECT_NE(a, c);
  EXPECT_EQ(reg.size(), 1u);
}

TEST(Registry, ResolvingWithALastRegionChecksBoundsAndFollowsTheId) {
  Registry reg;
  std::byte a[16], b[32];
  const uint64_t ia = reg.add(a, sizeof(a), Location::kCpu, -1)->id;
  const uint64_t ib = reg.add(b, sizeof(b), Location::kCpu, -1)->id;
  std::optional<Region> last;
  EXPECT_EQ(*reg.resolve(ia, 4, 12, last), a + 4);
  ASSERT_TRUE(last.has_value());
  EXPECT_EQ(last->id, ia);
  // The cached region's own bounds apply, not the next region's.
  EXPECT_EQ(reg.resolve(ia, 8, 9, last).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(reg.resolve(ia, 0, 0, last).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(*reg.resolve(ib, 20, 12, last), b + 20);
  EXPECT_EQ(last->id, ib);
  EXPECT_EQ(reg.resolve(ib + 7, 0, 1, last).status().code(), absl::StatusCode::kNotFound);
  EXPECT_FALSE(last.has_value());
  EXPECT_EQ(*reg.resolve(ia, 0, 16, last), a);
}

TEST(Registry, ServesLookupsWhileRegistering) {
  Registry reg;
  std::vector<std::byte> buf(64);
  const uint64_t id = reg.add(buf.data(), buf.size(), Location::kCpu, -1)->id;
  std::thread writer([&] {
    for (int i = 0; i < 2000; ++i) {
      const uint64_t t = reg.add(buf.data(), 8, Location::kCpu, -1)->id;
      EXPECT_TRUE(reg.remove(t).ok());
    }
  });
  for (int i = 0; i < 20000; ++i) {
    ASSERT_TRUE(reg.resolve(id, 0, 64).ok());
  }
  writer.join();
}

}  // namespace
}  // namespace ringxfer::memory
