// The Striper without sockets: inline below the limit, small segments grouped, large ones
// chunked, frames round-robin over lanes, and every byte in exactly one frame.
#include "transport/striper.h"

#include <map>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace ringxfer::transport::detail {
namespace {

struct Frame {
  FrameKind kind;
  std::vector<wire::BatchEntry> entries;
  uint64_t bytes;
  size_t lane;
};

std::vector<Frame> plan(const std::vector<uint64_t>& lengths, size_t lanes, unsigned& next,
                        const StripeParams& p) {
  std::vector<Frame> out;
  stripe(lengths, lanes, next, p,
         [&](FrameKind k, std::span<const wire::BatchEntry> e, uint64_t bytes, size_t lane) {
           out.push_back(Frame{k, {e.begin(), e.end()}, bytes, lane});
         });
  return out;
}

// Every byte of every segment in exactly one entry, and each frame's bytes its entries'.
void expect_exact_cover(const std::vector<uint64_t>& lengths, const std::vector<Frame>& frames) {
  std::vector<std::map<uint64_t, uint64_t>> runs(lengths.size());
  for (const Frame& f : frames) {
    uint64_t sum = 0;
    for (const wire::BatchEntry& e : f.entries) {
      ASSERT_LT(e.segment, lengths.size());
      ASSERT_LE(e.offset + e.length, lengths[e.segment]);
      ASSERT_TRUE(runs[e.segment].emplace(e.offset, e.length).second);
      sum += e.length;
    }
    EXPECT_EQ(sum, f.bytes);
  }
  for (size_t s = 0; s < lengths.size(); ++s) {
    uint64_t at = 0;
    for (const auto& [off, len] : runs[s]) {
      ASSERT_EQ(off, at) << "segment " << s << " has a gap or an overlap";
      at += len;
    }
    EXPECT_EQ(at, lengths[s]) << "segment " << s;
  }
}

const StripeParams kParams{64 << 10, 1 << 20};  // inline below 64 KiB, chunks >= 1 MiB

TEST(Striper, BelowTheInlineLimitOneBatchCarriesEverySegment) {
  unsigned next = 0;
  const std::vector<uint64_t> lengths = {8, 100, 4000};
  const std::vector<Frame> f = plan(lengths, 2, next, kParams);
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(f[0].kind, FrameKind::kInline);
  EXPECT_EQ(f[0].entries.size(), 3u);
  EXPECT_EQ(next, 0u) << "an inline batch takes no lane";
  expect_exact_cover(lengths, f);
}

TEST(Striper, ALargeSegmentIsCutIntoAboutTwoChunksPerLaneRoundRobin) {
  unsigned next = 0;
  const std::vector<uint64_t> lengths = {(10 << 20) + 3};
  const std::vector<Frame> f = plan(lengths, 2, next, kParams);
  // 10 MiB over 2 lanes: chunks of total / 4 = 2.5 MiB, so 5 frames (the last 3 bytes).
  ASSERT_EQ(f.size(), 5u);
  for (size_t i = 0; i < f.size(); ++i) {
    EXPECT_EQ(f[i].kind, FrameKind::kData);
    EXPECT_EQ(f[i].lane, i % 2);
  }
  EXPECT_EQ(next, 5u);
  expect_exact_cover(lengths, f);
}

TEST(Striper, ChunksStayBetweenTheConfiguredChunkAndTheMaximum) {
  unsigned next = 0;
  // 3 MiB over 4 lanes would be 384 KiB chunks: raised to the configured 1 MiB.
  std::vector<Frame> f = plan({3 << 20}, 4, next, kParams);
  EXPECT_EQ(f.size(), 3u);
  // 1 GiB over 1 lane would be 512 MiB chunks: capped at kChunkBytesMax.
  next = 0;
  f = plan({uint64_t{1} << 30}, 1, next, kParams);
  EXPECT_EQ(f.size(), (uint64_t{1} << 30) / kChunkBytesMax);
}

TEST(Striper, SmallSegmentsTravelTogetherUpToAChunkAndKeepTheirOrder) {
  unsigned next = 1;                               // the cursor carries over from earlier transfers
  std::vector<uint64_t> lengths(300, 16 << 10);    // 300 x 16 KiB = 4.7 MiB
  lengths.insert(lengths.begin() + 150, 5 << 20);  // a large one in the middle
  const std::vector<Frame> f = plan(lengths, 3, next, kParams);
  expect_exact_cover(lengths, f);
  uint32_t last_segment = 0;
  for (const Frame& fr : f) {
    EXPECT_LE(fr.bytes, stripe_chunk(4915200 + (5 << 20), 3, kParams));
    for (const wire::BatchEntry& e : fr.entries) {
      EXPECT_GE(e.segment, last_segment) << "segments out of order";
      last_segment = e.segment;
    }
    if (fr.entries.size() > 1) {
      EXPECT_EQ(fr.kind, FrameKind::kBatch);
    }
  }
  EXPECT_EQ(f.front().lane, 1u);
}

TEST(Striper, ABatchNeverHoldsMoreThanSegmentsMaxEntries) {
  unsigned next = 0;
  std::vector<uint64_t> lengths(wire::kSegmentsMax, 128);  // 1 MiB in 8192 entries
  StripeParams p = kParams;
  p.inline_limit = 1;  // never inline
  const std::vector<Frame> f = plan(lengths, 2, next, p);
  for (const Frame& fr : f) {
    EXPECT_LE(fr.entries.size(), wire::kSegmentsMax);
  }
  expect_exact_cover(lengths, f);
}

}  // namespace
}  // namespace ringxfer::transport::detail
