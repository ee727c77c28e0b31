// Maps an errno value (from a syscall or a negative io_uring cqe->res) to an
// absl::Status in one place, so every layer reports the same code for the same cause.
#pragma once

#include <string_view>

#include "absl/status/status.h"

namespace ringxfer::base {

// Returns a Status whose message is "<context>: <strerror text> (errno <n>)".
// Connection failures map to kUnavailable (ECONNREFUSED, ECONNRESET, EPIPE, ENOTCONN,
// EHOSTUNREACH, ENETUNREACH, ECONNABORTED), ETIMEDOUT to kDeadlineExceeded, and the
// rest follow absl::ErrnoToStatusCode. `err` must be positive; 0 returns OK.
[[nodiscard]] absl::Status errno_to_status(int err, std::string_view context);

}  // namespace ringxfer::base
