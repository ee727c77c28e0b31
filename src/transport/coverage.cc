#include "transport/coverage.h"

namespace ringxfer::transport::detail {

bool Coverage::claim(uint64_t begin, uint64_t len) {
  if (len == 0) {
    return true;
  }
  const uint64_t end = begin + len;
  if (begin < frontier_) {
    return false;
  }
  if (begin == frontier_) {
    auto first = runs_.begin();
    if (first != runs_.end() && first->first < end) {
      return false;
    }
    claimed_ += len;
    frontier_ = end;
    // Runs that now touch the frontier join it.
    while (first != runs_.end() && first->first == frontier_) {
      frontier_ = first->second;
      first = runs_.erase(first);
    }
    return true;
  }
  auto next = runs_.upper_bound(begin);  // the first run that starts after `begin`
  if (next != runs_.end() && next->first < end) {
    return false;
  }
  auto prev = next == runs_.begin() ? runs_.end() : std::prev(next);
  if (prev != runs_.end() && prev->second > begin) {
    return false;
  }
  claimed_ += len;
  const bool joins_prev = prev != runs_.end() && prev->second == begin;
  const bool joins_next = next != runs_.end() && next->first == end;
  if (joins_prev && joins_next) {
    prev->second = next->second;
    runs_.erase(next);
  } else if (joins_prev) {
    prev->second = end;
  } else if (joins_next) {
    const uint64_t next_end = next->second;
    runs_.erase(next);
    runs_.emplace(begin, next_end);
  } else {
    runs_.emplace(begin, end);
  }
  return true;
}

std::vector<uint64_t> segment_starts(std::span<const uint64_t> lengths) {
  std::vector<uint64_t> starts;
  starts.reserve(lengths.size());
  uint64_t at = 0;
  for (uint64_t n : lengths) {
    starts.push_back(at);
    at += n;
  }
  return starts;
}

}  // namespace ringxfer::transport::detail
