// The lane-key codec, one for the engine and the transport alike. With G ring threads an
// engine serves every peer as G lane groups; the transport-level key of group g of
// engine `key` is "key<0x1f>g", g in decimal without leading zeros (0..kLaneGroupsMax-1),
// and with one group the plain key. Group g of a pair is placed on ring thread
// (hash(key) + g) mod G on both sides. A key whose tail after the last 0x1f is not such
// a number is all base: then it names no group, for the transport and the inbound-status
// store alike (they once split "victim\x1fzz" differently). Engine keys never contain
// 0x1f (Engine::create and register_remote_engine refuse it). Pure.
#pragma once

#include <string>
#include <string_view>

namespace ringxfer::transport {

inline constexpr char kGroupSeparator = '\x1f';
inline constexpr int kLaneGroupsMax = 64;  // EngineConfig::rings' upper bound

struct LaneKey {
  std::string_view base;    // the engine key
  int group = 0;            // 0 when the key has no group suffix
  std::string_view suffix;  // "<0x1f>g", or empty
};

inline std::string lane_key(std::string_view key, int group, int groups) {
  std::string out(key);
  if (groups > 1) {
    out += kGroupSeparator;
    out += std::to_string(group);
  }
  return out;
}

inline LaneKey split_lane_key(std::string_view key) {
  const size_t sep = key.rfind(kGroupSeparator);
  if (sep == std::string_view::npos) {
    return {key, 0, {}};
  }
  const std::string_view digits = key.substr(sep + 1);
  if (digits.empty() || digits.size() > 2 || (digits.size() > 1 && digits[0] == '0')) {
    return {key, 0, {}};
  }
  int g = 0;
  for (char ch : digits) {
    if (ch < '0' || ch > '9') {
      return {key, 0, {}};
    }
    g = g * 10 + (ch - '0');
  }
  if (g >= kLaneGroupsMax) {
    return {key, 0, {}};
  }
  return {key.substr(0, sep), g, key.substr(sep)};
}

}  // namespace ringxfer::transport
