#include "base/errno_status.h"

#include <cerrno>
#include <cstring>

#include "absl/strings/str_format.h"

namespace ringxfer::base {

absl::Status errno_to_status(int err, std::string_view context) {
  if (err == 0) {
    return absl::OkStatus();
  }
  absl::StatusCode code;
  switch (err) {
    case ECONNREFUSED:
    case ECONNRESET:
    case ECONNABORTED:
    case EPIPE:
    case ENOTCONN:
    case EHOSTUNREACH:
    case ENETUNREACH:
    case ENETDOWN:
    case EHOSTDOWN:
      // The peer or the path is gone: retrying later may succeed.
      code = absl::StatusCode::kUnavailable;
      break;
    case ETIMEDOUT:
      code = absl::StatusCode::kDeadlineExceeded;
      break;
    default:
      code = absl::ErrnoToStatusCode(err);
      break;
  }
  char buf[128];
  // GNU strerror_r returns a pointer that may or may not be buf.
  const char* text = strerror_r(err, buf, sizeof(buf));
  return absl::Status(code, absl::StrFormat("%s: %s (errno %d)", context, text, err));
}

}  // namespace ringxfer::base
