// InboundStore without an engine: statuses bounded in total across peers, split
// transfers combined, expired and bounded (issue 11: 65,536 statuses under each of 10
// keys held 241 MB; 200,000 parts=64 requests held 75 MB of partial entries forever).
#include "engine/inbound_store.h"

#include <string>

#include "gtest/gtest.h"

namespace ringxfer::detail {
namespace {

constexpr int64_t kSecond = 1'000'000'000;

TEST(InboundStore, KeepsAtMostTheLimitInTotalAcrossPeersOldestFirst) {
  InboundStore s(/*max_statuses=*/100, /*max_partial=*/10, kSecond);
  for (int peer = 0; peer < 10; ++peer) {
    for (uint64_t id = 1; id <= 50; ++id) {
      s.record("peer-" + std::to_string(peer), id, absl::OkStatus(), 1, 0);
    }
  }
  EXPECT_EQ(s.statuses(), 100u);
  EXPECT_EQ(s.evicted(), 400u);
  EXPECT_EQ(s.peers(), 2u) << "peers whose statuses all went are forgotten";
  EXPECT_EQ(s.pop("peer-0", 1), nullptr);
  StatusHandle last = s.pop("peer-9", 50);
  ASSERT_NE(last, nullptr);
  EXPECT_TRUE(last->succeeded());
  EXPECT_EQ(s.pop("peer-9", 50), nullptr) << "returned once";
  EXPECT_EQ(s.statuses(), 99u);
}

TEST(InboundStore, AnIdRecordedAgainReplacesItsStatusAndCountsOnce) {
  InboundStore s(3, 10, kSecond);
  s.record("a", 1, absl::OkStatus(), 1, 0);
  s.record("a", 1, absl::UnavailableError("again"), 1, 0);
  s.record("a", 2, absl::OkStatus(), 1, 0);
  s.record("a", 3, absl::OkStatus(), 1, 0);
  EXPECT_EQ(s.statuses(), 3u);
  EXPECT_EQ(s.evicted(), 0u);
  StatusHandle h = s.pop("a", 1);
  ASSERT_NE(h, nullptr);
  EXPECT_TRUE(h->failed());
  // Its first order entry is stale and must not evict anything later.
  s.record("a", 4, absl::OkStatus(), 1, 0);
  s.record("a", 5, absl::OkStatus(), 1, 0);
  EXPECT_EQ(s.statuses(), 3u);
  EXPECT_NE(s.pop("a", 5), nullptr);
  EXPECT_NE(s.pop("a", 4), nullptr);
}

TEST(InboundStore, ASplitTransferIsRecordedOnceWhenEveryPartFinished) {
  InboundStore s(100, 10, kSecond);
  s.record("a", 7, absl::OkStatus(), 3, 0);
  s.record("a", 7, absl::DataLossError("part 2"), 3, 1);
  EXPECT_EQ(s.pop("a", 7), nullptr);
  EXPECT_EQ(s.partial(), 1u);
  s.record("a", 7, absl::OkStatus(), 3, 2);
  EXPECT_EQ(s.partial(), 0u);
  StatusHandle h = s.pop("a", 7);
  ASSERT_NE(h, nullptr);
  EXPECT_EQ(h->status().code(), absl::StatusCode::kDataLoss) << "the first failure wins";
}

TEST(InboundStore, SplitTransfersWhosePartsStopComingExpire) {
  InboundStore s(100, 10, kSecond);
  s.record("a", 1, absl::OkStatus(), 64, 0);
  s.record("a", 2, absl::OkStatus(), 64, kSecond / 2);
  EXPECT_EQ(s.partial(), 2u);
  s.record("b", 9, absl::OkStatus(), 1, kSecond + 1);  // any record moves the clock
  EXPECT_EQ(s.partial(), 1u);
  EXPECT_EQ(s.partial_expired(), 1u);
  StatusHandle h = s.pop("a", 1);
  ASSERT_NE(h, nullptr);
  EXPECT_EQ(h->status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(s.pop("a", 2), nullptr);
}

TEST(InboundStore, OpenSplitTransfersAreBoundedOldestGivenUpFirst) {
  InboundStore s(1000, /*max_partial=*/4, 100 * kSecond);
  for (uint64_t id = 1; id <= 200; ++id) {
    s.record("mallory", id, absl::OkStatus(), 64, 0);
  }
  EXPECT_EQ(s.partial(), 4u);
  EXPECT_EQ(s.partial_expired(), 196u);
  StatusHandle h = s.pop("mallory", 1);
  ASSERT_NE(h, nullptr);
  EXPECT_EQ(h->status().code(), absl::StatusCode::kResourceExhausted);
}

}  // namespace
}  // namespace ringxfer::detail
