// transport::Coverage: the bytes of one transfer that data frames have claimed, as
// disjoint runs of its linear byte space (segment after segment). A frame that claims a
// byte claimed before is refused, so a transfer is complete only when every requested
// byte arrived once: a peer that sends one half twice cannot stand in for the other half.
// Pure: no I/O, no knowledge of frames.
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <vector>

namespace ringxfer::transport::detail {

class Coverage {
 public:
  // Claims [begin, begin + len). False, claiming nothing, when any of it was claimed.
  bool claim(uint64_t begin, uint64_t len);
  // Bytes claimed so far.
  uint64_t claimed() const noexcept { return claimed_; }
  // Runs kept (merged where they touch): a measure of the bookkeeping's size.
  size_t runs() const noexcept { return runs_.size() + (frontier_ > 0 ? 1 : 0); }

 private:
  // [0, frontier_) is claimed: frames mostly arrive in order, and a claim that starts at
  // the frontier costs no map operation (a 256-entry batch is 256 claims).
  uint64_t frontier_ = 0;
  std::map<uint64_t, uint64_t> runs_;  // runs past the frontier: start -> end; disjoint,
                                       // never touching each other or the frontier
  uint64_t claimed_ = 0;
};

// Where each of `lengths` starts in the linear byte space: starts[i] = sum of lengths[<i].
std::vector<uint64_t> segment_starts(std::span<const uint64_t> lengths);

}  // namespace ringxfer::transport::detail
