// transport: what a failed operation's errno means, one mapper per operation kind
// (STYLE.md section 4 and 10, 5). A negative cqe->res stays an errno until one of these
// turns it into what to do next and, when the operation failed for good, the Status it
// fails with. EFAULT (a bad buffer address) is a bug in ringxfer, never a peer's doing:
// it aborts with the operation's name.
#pragma once

#include <string_view>

#include "absl/status/status.h"

namespace ringxfer::transport::detail {

enum class Next : uint8_t {
  kResubmit,  // the same operation again (EINTR, EAGAIN)
  kFail,      // the connection (or connect) failed: `status` says why
  kBackOff,   // accept: out of descriptors or memory; try again after a pause
  kStop,      // accept: cancelled (the listener is closing)
};

struct OpError {
  Next next = Next::kFail;
  absl::Status status;
};

OpError send_failed(int err);
OpError recv_failed(int err);
OpError connect_failed(int err, std::string_view to);
OpError accept_failed(int err);

}  // namespace ringxfer::transport::detail
