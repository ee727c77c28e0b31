#include "memory/registry.h"

#include <cstdint>
#include <initializer_list>
#include <limits>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace ringxfer::memory {
namespace {

// A peer that reads; regions registered without rights admit it.
constexpr Requester kPeer{"peer", AccessKind::kRead};

Rights only(std::initializer_list<std::string> engines) {
  Rights r;
  r.allowed_engines = std::make_shared<const absl::flat_hash_set<std::string>>(engines);
  return r;
}

TEST(Registry, ResolvesRangesInsideARegion) {
  Registry reg;
  std::vector<std::byte> buf(4096);
  absl::StatusOr<Region> r = reg.add(buf.data(), buf.size(), Location::kCpu, -1);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->id, 1u);
  EXPECT_NE(r->key, 0u);
  EXPECT_EQ(*reg.resolve(kPeer, r->id, r->key, 0, 4096), buf.data());
  EXPECT_EQ(*reg.resolve(kPeer, r->id, r->key, 4095, 1), buf.data() + 4095);
  EXPECT_EQ(*reg.resolve(kPeer, r->id, r->key, 100, 7), buf.data() + 100);
}

TEST(Registry, RefusesRangesOutsideARegionWithoutSayingItsSize) {
  Registry reg;
  std::vector<std::byte> buf(4096);
  const Region r = *reg.add(buf.data(), buf.size(), Location::kCpu, -1);
  const uint64_t kMax = std::numeric_limits<uint64_t>::max();
  EXPECT_EQ(reg.resolve(kPeer, r.id, r.key, 4096, 1).status().code(),
            absl::StatusCode::kOutOfRange);
  EXPECT_EQ(reg.resolve(kPeer, r.id, r.key, 4000, 97).status().code(),
            absl::StatusCode::kOutOfRange);
  EXPECT_EQ(reg.resolve(kPeer, r.id, r.key, kMax, 2).status().code(),
            absl::StatusCode::kOutOfRange);
  EXPECT_EQ(reg.resolve(kPeer, r.id, r.key, 1, kMax).status().code(),
            absl::StatusCode::kOutOfRange);
  EXPECT_EQ(reg.resolve(kPeer, r.id, r.key, 0, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
  const std::string msg(reg.resolve(kPeer, r.id, r.key, 4000, 97).status().message());
  EXPECT_NE(msg.find("out of range"), std::string::npos) << msg;
  EXPECT_EQ(msg.find("4096"), std::string::npos) << msg;
}

// The RDMA rkey model: a region is named by id and key, and a peer that has only the id
// learns nothing, not even that the id exists.
TEST(Registry, RefusesAWrongKeyExactlyLikeAnUnknownId) {
  Registry reg;
  std::vector<std::byte> buf(4096);
  const Region r = *reg.add(buf.data(), buf.size(), Location::kCpu, -1);
  const absl::Status unknown = reg.resolve(kPeer, r.id + 1, r.key, 0, 1).status();
  EXPECT_EQ(unknown.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(unknown.message(), kNoSuchRegion);
  for (uint64_t key : {uint64_t{0}, r.key + 1, r.key ^ (uint64_t{1} << 63), ~r.key}) {
    SCOPED_TRACE(key);
    EXPECT_EQ(reg.resolve(kPeer, r.id, key, 0, 1).status(), unknown);
    // Even out of range: the key is judged first, so the range tells nothing either.
    EXPECT_EQ(reg.resolve(kPeer, r.id, key, 4096, 1).status(), unknown);
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
  EXPECT_EQ(reg.resolve(kPeer, again.id, first.key, 0, 8).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(reg.resolve(kPeer, first.id, first.key, 0, 8).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_TRUE(reg.resolve(kPeer, again.id, again.key, 0, 8).ok());
}

TEST(Registry, RefusesWhatTheRightsDoNotAllow) {
  Registry reg;
  std::byte b[64];
  Rights read_only;
  read_only.remote_write = false;
  Rights write_only;
  write_only.remote_read = false;
  const Region ro = *reg.add(b, 64, Location::kCpu, -1, read_only);
  const Region wo = *reg.add(b, 64, Location::kCpu, -1, write_only);
  const Region mine = *reg.add(b, 64, Location::kCpu, -1, only({"alice", "carol"}));
  const Region everyone = *reg.add(b, 64, Location::kCpu, -1, only({}));
  const Requester alice_reads{"alice", AccessKind::kRead},
      alice_writes{"alice", AccessKind::kWrite};
  const Requester bob_reads{"bob", AccessKind::kRead};
  const auto code = [&](const Requester& who, const Region& r) {
    return reg.resolve(who, r.id, r.key, 0, 8).status().code();
  };
  EXPECT_EQ(code(alice_reads, ro), absl::StatusCode::kOk);
  EXPECT_EQ(code(alice_writes, ro), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(code(alice_reads, wo), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(code(alice_writes, wo), absl::StatusCode::kOk);
  EXPECT_EQ(code(alice_reads, mine), absl::StatusCode::kOk);
  EXPECT_EQ(code(alice_writes, mine), absl::StatusCode::kOk);
  EXPECT_EQ(code(bob_reads, mine), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(code(bob_reads, everyone), absl::StatusCode::kOk) << "an empty list admits everyone";
  // A wrong key is judged before the rights: it says nothing about them.
  EXPECT_EQ(reg.resolve(bob_reads, mine.id, mine.key + 1, 0, 8).status().code(),
            absl::StatusCode::kNotFound);
  const std::string msg(reg.resolve(bob_reads, mine.id, mine.key, 0, 8).status().message());
  EXPECT_NE(msg.find("bob"), std::string::npos) << msg;
  EXPECT_EQ(msg.find("alice"), std::string::npos) << "names who else is admitted: " << msg;
  // With a cached region the rights are checked again, for whoever asks now.
  std::optional<Region> last;
  EXPECT_TRUE(reg.resolve(alice_reads, ro.id, ro.key, 0, 8, last).ok());
  EXPECT_EQ(reg.resolve(alice_writes, ro.id, ro.key, 0, 8, last).status().code(),
            absl::StatusCode::kPermissionDenied);
  // A refused region is not pinned.
  std::vector<Pin> pins;
  last.reset();
  EXPECT_FALSE(reg.resolve(alice_writes, ro.id, ro.key, 0, 8, last, pins).ok());
  EXPECT_TRUE(pins.empty());
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
  EXPECT_EQ(*reg.resolve(kPeer, ra.id, ra.key, 4, 12, last), a + 4);
  ASSERT_TRUE(last.has_value());
  EXPECT_EQ(last->id, ra.id);
  // The cached region's own bounds apply, not the next region's.
  EXPECT_EQ(reg.resolve(kPeer, ra.id, ra.key, 8, 9, last).status().code(),
            absl::StatusCode::kOutOfRange);
  EXPECT_EQ(reg.resolve(kPeer, ra.id, ra.key, 0, 0, last).status().code(),
            absl::StatusCode::kInvalidArgument);
  // The cached region's key is checked too.
  EXPECT_EQ(reg.resolve(kPeer, ra.id, rb.key, 0, 1, last).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(*reg.resolve(kPeer, rb.id, rb.key, 20, 12, last), b + 20);
  EXPECT_EQ(last->id, rb.id);
  EXPECT_EQ(reg.resolve(kPeer, rb.id + 7, rb.key, 0, 1, last).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_FALSE(last.has_value());
  EXPECT_EQ(*reg.resolve(kPeer, ra.id, ra.key, 0, 16, last), a);
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
    ASSERT_TRUE(reg.resolve(kPeer, r.id, r.key, 0, 64).ok());
  }
  writer.join();
}

}  // namespace
}  // namespace ringxfer::memory
