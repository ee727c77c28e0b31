// transport::Target: the transfers other engines make to or from this engine's memory,
// on one ring thread. It resolves a request's segments against the registry (pinning
// the regions), serves reads, places the payload of writes (parking a data connection
// whose frame came before its request), answers each request with one completion and
// reports each transfer once to the engine's inbound statuses.
//
// It touches: the peers' inbound state (in_ops, parked) and its own transfers. It
// reaches sockets only through the Worker's services (worker.h).
#pragma once

#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "memory/registry.h"
#include "transport/internal.h"
#include "wire/codec.h"

namespace ringxfer::transport {

class Worker;

class Target {
 public:
  explicit Target(Worker& w) : w_(w) {}

  // A request frame on a control connection a peer opened.
  void on_request(detail::Conn* c, const wire::Request& r);
  // A data frame of a write on a connection a peer opened (see Initiator::on_data).
  template <typename Entries>
  void on_data(detail::Conn* c, uint64_t id, uint32_t seq, uint64_t payload,
               const Entries& entries);
  // A payload receive into the write's memory ended with `bytes` placed, or was cut
  // short by its connection closing.
  void on_payload(const std::shared_ptr<detail::InOp>& in, uint64_t bytes);
  static void on_payload_lost(detail::InOp& in);
  // Payload of the write `seq` that was read and dropped (its transfer failed).
  void on_discarded(detail::Peer* p, uint32_t seq, uint64_t bytes);

  // A kernel operation holding `in` ended: lets go of its regions if it failed, and
  // finishes it when that was the last thing it waited for.
  void settle(const std::shared_ptr<detail::InOp>& in);
  // A failed served transfer lets go of its regions once no byte of it is in the kernel.
  static void release_if_idle(detail::InOp& in);

  // Per peer: fail every transfer (its connections are gone), report those past their
  // deadline, fail those that use a deregistered region.
  void fail_all(detail::Peer* p, const absl::Status& why);
  void expire(detail::Peer* p, int64_t now);
  void fence(detail::Peer* p, const memory::RegionUse* use, uint64_t id);
  // Stops a served transfer now (a GPU copy of its data failed); see stop().
  void abort(const std::shared_ptr<detail::InOp>& in, const absl::Status& why);
  // The initiator stopped a transfer whose request came (wire "Cancel").
  void on_cancel(detail::Conn* c, const wire::Cancel& x);

 private:
  // Fails `in` with `why`: an unsent rest of a read is not sent, and it finishes once
  // nothing of it is in the kernel (and, a write, every byte announced came or was dropped).
  void stop(detail::Peer* p, const std::shared_ptr<detail::InOp>& in, const absl::Status& why);
  void serve_read(detail::Peer* p, const std::shared_ptr<detail::InOp>& in);
  void maybe_finish(detail::Peer* p, const std::shared_ptr<detail::InOp>& in);
  void report(detail::Peer* p, detail::InOp& in, const absl::Status& st);
  // Data connections that parked a frame for a request that has now come go on.
  void unpark(detail::Peer* p);

  Worker& w_;
};

}  // namespace ringxfer::transport
