// Coverage: claims of byte ranges, every overlap refused, touching runs merged.
#include "transport/coverage.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace ringxfer::transport::detail {
namespace {

struct Claim {
  uint64_t begin, len;
  bool ok;
};

TEST(Coverage, RefusesEveryOverlapAndMergesTouchingRuns) {
  const struct {
    const char* name;
    std::vector<Claim> claims;
    uint64_t claimed;
    size_t runs;
  } kCases[] = {
      {"in order", {{0, 10, true}, {10, 10, true}, {20, 5, true}}, 25, 1},
      {"reversed", {{20, 5, true}, {10, 10, true}, {0, 10, true}}, 25, 1},
      {"the same half twice", {{0, 50, true}, {0, 50, false}}, 50, 1},
      {"overlapping the end", {{0, 50, true}, {49, 10, false}}, 50, 1},
      {"overlapping the start", {{10, 50, true}, {5, 6, false}}, 50, 1},
      {"inside", {{0, 100, true}, {10, 1, false}}, 100, 1},
      {"around", {{10, 5, true}, {0, 100, false}}, 5, 1},
      {"a gap filled", {{0, 10, true}, {20, 10, true}, {10, 10, true}}, 30, 1},
      {"a gap overfilled", {{0, 10, true}, {20, 10, true}, {10, 11, false}}, 20, 2},
      {"between two runs", {{0, 10, true}, {30, 10, true}, {15, 5, true}}, 25, 3},
      {"empty", {{5, 0, true}}, 0, 0},
  };
  for (const auto& c : kCases) {
    SCOPED_TRACE(c.name);
    Coverage cov;
    for (size_t i = 0; i < c.claims.size(); ++i) {
      EXPECT_EQ(cov.claim(c.claims[i].begin, c.claims[i].len), c.claims[i].ok) << "claim " << i;
    }
    EXPECT_EQ(cov.claimed(), c.claimed);
    EXPECT_EQ(cov.runs(), c.runs);
  }
}

TEST(Coverage, EveryByteOnceInAnyOrderCoversTheWhole) {
  // 64 chunks of 1 KiB claimed in a scrambled order: all accepted, one run at the end,
  // and any chunk claimed again is refused.
  Coverage cov;
  for (uint64_t i = 0; i < 64; ++i) {
    const uint64_t chunk = (i * 37) % 64;
    ASSERT_TRUE(cov.claim(chunk * 1024, 1024)) << chunk;
  }
  EXPECT_EQ(cov.claimed(), 64u * 1024);
  EXPECT_EQ(cov.runs(), 1u);
  for (uint64_t chunk = 0; chunk < 64; ++chunk) {
    EXPECT_FALSE(cov.claim(chunk * 1024 + 3, 1)) << chunk;
  }
}

TEST(Coverage, SegmentStartsAreRunningSums) {
  const std::vector<uint64_t> lengths = {5, 1, 10, 7};
  EXPECT_EQ(segment_starts(lengths), (std::vector<uint64_t>{0, 5, 6, 16}));
}

}  // namespace
}  // namespace ringxfer::transport::detail
