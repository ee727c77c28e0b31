// transport::Initiator: the transfers this engine starts, on one ring thread. It admits
// them (a peer's in-flight cap, then a backlog), sends their requests and, for writes,
// their data; it checks and places the read data and completions that come back, and
// finishes each transfer exactly once, when the target answered and nothing of it is in
// the kernel any more.
//
// It touches: the peers' outbound state (out_ops, backlog, next_seq) and its own
// transfers. It reaches sockets only through the Worker's services (worker.h).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "memory/registry.h"
#include "transport/internal.h"
#include "wire/codec.h"

namespace ringxfer::transport {

class Worker;

class Initiator {
 public:
  explicit Initiator(Worker& w) : w_(w) {}

  // A new transfer to the peer `key` (Transport::submit, on the ring thread).
  void start(const std::string& key, std::shared_ptr<detail::OutOp> op);
  // A completion frame on a control connection this engine opened.
  void on_completion(detail::Conn* c, const wire::Completion& cmp);
  // A data frame of a read on a connection this engine opened: `entries` are (segment,
  // length, offset) of `payload` bytes. Starts the payload's receive into the read's
  // memory, drops it (the read failed already) or closes the connection as hostile.
  template <typename Entries>
  void on_data(detail::Conn* c, uint64_t id, uint32_t seq, uint64_t payload,
               const Entries& entries);

  // A payload receive into the read's memory ended, `bytes` of it placed.
  void on_payload(const std::shared_ptr<detail::OutOp>& op, uint64_t bytes);
  // A kernel operation holding `op` ended (`pending` was decremented): finishes it when
  // that was the last thing it waited for.
  void settle(const std::shared_ptr<detail::OutOp>& op);
  // Moves `op` to kFailed (first cause wins); it finishes once nothing of it is in the
  // kernel.
  void fail(const std::shared_ptr<detail::OutOp>& op, const absl::Status& why);
  // Stops an active `op` now (a GPU copy of its data failed): its frames not yet sent
  // are dropped, the target is told, and it finishes once nothing of it is in the kernel.
  void abort(const std::shared_ptr<detail::OutOp>& op, const absl::Status& why);

  // Per peer: fail every transfer (its connections are gone), fail those past their
  // deadline, fail those that use a deregistered region, or (the loop has stopped)
  // finish all of them without touching the kernel.
  void fail_all(detail::Peer* p, const absl::Status& why);
  void expire(detail::Peer* p, int64_t now);
  void fence(detail::Peer* p, const memory::RegionUse* use, uint64_t id);
  void abandon(detail::Peer* p);

 private:
  void launch(detail::Peer* p, std::shared_ptr<detail::OutOp> op);
  // Fails `op`, drops its frames not yet sent and tells the target how much of it
  // comes (a Cancel), without settling it.
  void stop(detail::Peer* p, const std::shared_ptr<detail::OutOp>& op, const absl::Status& why);
  // Finishes backlog entries that failed before they were launched.
  void finish_failed_backlog(detail::Peer* p);

  Worker& w_;
};

}  // namespace ringxfer::transport
