// engine::InboundStore: the outcomes of transfers other engines made to or from this
// engine's memory, kept until the application pops them, and the parts of split
// transfers seen so far. Both are bounded in total, whatever the peers do (issue 11):
// beyond `max_statuses` the oldest status goes; a split transfer whose parts have not
// all come within `part_timeout_ns` is recorded as failed, and beyond `max_partial`
// open ones the oldest is. Keyed by the peer's engine key as the transport established
// it. Not thread-safe: the engine holds a lock around it. Pure: no I/O, no clock of its
// own.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "ringxfer/status.h"

namespace ringxfer::detail {

class InboundStore {
 public:
  InboundStore(size_t max_statuses, size_t max_partial, int64_t part_timeout_ns)
      : max_statuses_(max_statuses), max_partial_(max_partial), part_timeout_ns_(part_timeout_ns) {}

  // One part of transfer `id` from `peer` finished with `st`; `parts` is how many the
  // transfer has (0 or 1: whole). Records the transfer's status once every part has
  // finished (failed with the first failure), or at once when whole. `now_ns` expires
  // split transfers whose parts stopped coming.
  void record(const std::string& peer, uint64_t id, absl::Status st, uint16_t parts,
              int64_t now_ns);
  // The status of `id` from `peer`, removed; nullptr when there is none.
  StatusHandle pop(const std::string& peer, uint64_t id);

  size_t statuses() const { return count_; }
  size_t partial() const { return partial_.size(); }
  size_t peers() const { return by_peer_.size(); }
  // Statuses dropped unread for room, and split transfers given up on.
  uint64_t evicted() const { return evicted_; }
  uint64_t partial_expired() const { return partial_expired_; }

 private:
  using Key = std::pair<std::string, uint64_t>;
  struct Partial {
    uint16_t seen = 0;
    absl::Status status;
    int64_t deadline_ns = 0;
    uint64_t serial = 0;
  };
  struct Entry {
    StatusHandle status;
    uint64_t serial = 0;  // which record this is (an id recorded again is a new one)
  };
  void put(const std::string& peer, uint64_t id, absl::Status st);
  void expire_partial(int64_t now_ns);

  size_t max_statuses_;
  size_t max_partial_;
  int64_t part_timeout_ns_;
  absl::flat_hash_map<std::string, absl::flat_hash_map<uint64_t, Entry>> by_peer_;
  std::deque<std::pair<Key, uint64_t>> order_;  // (peer, id), serial; oldest first
  size_t count_ = 0;
  absl::flat_hash_map<Key, Partial> partial_;
  std::deque<std::pair<Key, uint64_t>> partial_order_;  // by deadline (= by arrival)
  uint64_t serial_ = 0;
  uint64_t evicted_ = 0;
  uint64_t partial_expired_ = 0;
};

}  // namespace ringxfer::detail
