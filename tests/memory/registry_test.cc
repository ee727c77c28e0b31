#include "memory/registry.h"

#include <cstdint>
#include <limits>
#include <string>
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
  EXPECT_NE(r->key, 0u);
  EXPECT_EQ(*reg.resolve(r->id, r->key, 0, 4096), buf.data());
  EXPECT_EQ(*reg.resolve(r->id, r->key, 4095, 1), buf.data() + 4095);
  EXPECT_EQ(*reg.resolve(r->id, r->key, 100, 7), buf.data() + 100);
}

TEST(Registry, RefusesRangesOutsideARegionWithoutSayingItsSize) {
  Registry reg;
  std::vector<std::byte> buf(4096);
  const Region r = *reg.add(buf.data(), buf.size(), Location::kCpu, -1);
  const uint64_t kMax = std::numeric_limits<uint64_t>::max();
  EXPECT_EQ(reg.resolve(r.id, r.key, 4096, 1).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(reg.resolve(r.id, r.key, 4000, 97).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(reg.resolve(r.id, r.key, kMax, 2).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(reg.resolve(r.id, r.key, 1, kMax).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(reg.resolve(r.id, r.key, 0, 0).status().code(), absl::StatusCode::kInvalidArgument);
  const std::string msg(reg.resolve(r.id, r.key, 4000, 97).status().message());
  EXPECT_NE(msg.find("out of range"), std::string::npos) << msg;
  EXPECT_EQ(msg.find("4096"), std::string::npos) << msg;
}

// The RDMA rkey model: a region is named by id and key, and a peer that has only the id
// learns nothing, not even that the id exists.
TEST(Registry, RefusesAWrongKeyExactlyLikeAnUnknownId) {
  Registry reg;
  std::vector<std::byte> buf(4096);
  const Region r = *reg.add(buf.data(), buf.size(), Location::kCpu, -1);
  const absl::Status unknown = reg.resolve(r.id + 1, r.key, 0, 1).status();
  EXPECT_EQ(unknown.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(unknown.message(), kNoSuchRegion);
  for (uint64_t key : {uint64_t{0}, r.key + 1, r.key ^ (uint64_t{1} << 63), ~r.key}) {
    SCOPED_TRACE(key);
    EXPECT_EQ(reg.resolve(r.id, key, 0, 1).status(), unknown);
    // Even out of range: the key is judged first, so the range tells nothing either.
    EXPECT_EQ(reg.resolve(r.id, key, 4096, 1).status(), unknown);
  }
}

TEST(Registry, GivesEveryRegistrationItsOwnKey) {
  Registry reg;
  std::byte b[8];
  const Region first = *reg.add(b, 8, Location::kCpu, -1);
  ASSERT_TRUE(reg.remove(first.id).ok());
  const Region again = *reg.add(b, 8, Location::kCpu, -1);
  EXPECT_NE(again.id, first.id);
  EXPECT_NE(again.key, first.key);
  EXPECT_EQ(reg.resolve(again.id, first.key, 0, 8).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(reg.resolve(first.id, first.key, 0, 8).status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(reg.resolve(again.id, again.key, 0, 8).ok());
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

TEST(Registry, ResolvingWithALastRegionChecksBoundsKeyAndFollowsTheId) {
  Registry reg;
  std::byte a[16], b[32];
  const Region ra = *reg.add(a, sizeof(a), Location::kCpu, -1);
  const Region rb = *reg.add(b, sizeof(b), Location::kCpu, -1);
  std::optional<Region> last;
  EXPECT_EQ(*reg.resolve(ra.id, ra.key, 4, 12, last), a + 4);
  ASSERT_TRUE(last.has_value());
  EXPECT_EQ(last->id, ra.id);
  // The cached region's own bounds apply, not the next region's.
  EXPECT_EQ(reg.resolve(ra.id, ra.key, 8, 9, last).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(reg.resolve(ra.id, ra.key, 0, 0, last).status().code(),
            absl::StatusCode::kInvalidArgument);
  // The cached region's key is checked too.
  EXPECT_EQ(reg.resolve(ra.id, rb.key, 0, 1, last).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(*reg.resolve(rb.id, rb.key, 20, 12, last), b + 20);
  EXPECT_EQ(last->id, rb.id);
  EXPECT_EQ(reg.resolve(rb.id + 7, rb.key, 0, 1, last).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_FALSE(last.has_value());
  EXPECT_EQ(*reg.resolve(ra.id, ra.key, 0, 16, last), a);
}

TEST(Registry, ServesLookupsWhileRegistering) {
  Registry reg;
  std::vector<std::byte> buf(64);
  const Region r = *reg.add(buf.data(), buf.size(), Location::kCpu, -1);
  std::thread writer([&] {
    for (int i = 0; i < 2000; ++i) {
      const uint64_t t = reg.add(buf.data(), 8, Location::kCpu, -1)->id;
      EXPECT_TRUE(reg.remove(t).ok());
    }
  });
  for (int i = 0; i < 20000; ++i) {
    ASSERT_TRUE(reg.resolve(r.id, r.key, 0, 64).ok());
  }
  writer.join();
}

}  // namespace
}  // namespace ringxfer::memory
