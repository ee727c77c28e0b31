// The lane-key codec: every key splits the same way for the engine and the transport.
#include "transport/lane_key.h"

#include <string>

#include "gtest/gtest.h"

namespace ringxfer::transport {
namespace {

TEST(LaneKey, SplitsOnlyWellFormedGroupSuffixes) {
  const std::string sep(1, kGroupSeparator);
  const struct {
    std::string key;
    std::string base;
    int group;
  } kCases[] = {
      {"prefill-0", "prefill-0", 0},
      {"prefill-0" + sep + "0", "prefill-0", 0},
      {"prefill-0" + sep + "7", "prefill-0", 7},
      {"prefill-0" + sep + "63", "prefill-0", 63},
      {"victim" + sep + "zz", "victim" + sep + "zz", 0},    // not a number: all base
      {"victim" + sep, "victim" + sep, 0},                  // empty
      {"victim" + sep + "07", "victim" + sep + "07", 0},    // leading zero
      {"victim" + sep + "64", "victim" + sep + "64", 0},    // over kLaneGroupsMax
      {"victim" + sep + "123", "victim" + sep + "123", 0},  // too long
      {"a" + sep + "1" + sep + "2", "a" + sep + "1", 2},    // the last separator counts
  };
  for (const auto& c : kCases) {
    SCOPED_TRACE(c.key);
    const LaneKey lk = split_lane_key(c.key);
    EXPECT_EQ(lk.base, c.base);
    EXPECT_EQ(lk.group, c.group);
    EXPECT_EQ(std::string(lk.base) + std::string(lk.suffix), c.key);
  }
}

TEST(LaneKey, RoundTripsEveryGroup) {
  EXPECT_EQ(lane_key("e", 5, 1), "e");
  for (int groups : {2, 16, kLaneGroupsMax}) {
    for (int g = 0; g < groups; ++g) {
      const std::string k = lane_key("engine", g, groups);
      const LaneKey lk = split_lane_key(k);
      EXPECT_EQ(lk.base, "engine");
      EXPECT_EQ(lk.group, g);
    }
  }
}

}  // namespace
}  // namespace ringxfer::transport
