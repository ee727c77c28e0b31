#include "transport/op_errors.h"

#include <cerrno>

#include "absl/strings/str_format.h"
#include "base/check.h"
#include "base/errno_status.h"

namespace ringxfer::transport::detail {
namespace {

OpError socket_op_failed(int err, std::string_view what) {
  switch (err) {
    case EINTR:
    case EAGAIN:
      return {Next::kResubmit, absl::OkStatus()};
    case EFAULT:
      RX_CHECK_MSG(false, "a socket operation was handed a bad buffer (EFAULT): a ringxfer bug");
      break;
    default:
      break;
  }
  return {Next::kFail, base::errno_to_status(err, what)};
}

}  // namespace

OpError send_failed(int err) { return socket_op_failed(err, "send"); }

OpError recv_failed(int err) { return socket_op_failed(err, "recv"); }

OpError connect_failed(int err, std::string_view to) {
  if (err == EFAULT) {
    RX_CHECK_MSG(false, "connect was handed a bad address (EFAULT): a ringxfer bug");
  }
  // EINTR and EAGAIN are failures here too: a connect cannot be resubmitted on the same
  // socket (EALREADY); the next transfer opens a new one.
  return {Next::kFail, base::errno_to_status(err, absl::StrFormat("connect to %s", to))};
}

OpError accept_failed(int err) {
  switch (err) {
    case ECANCELED:
      return {Next::kStop, absl::OkStatus()};
    case EINTR:
    case EAGAIN:
    case ECONNABORTED:  // the connection went away before it was accepted
    case EPROTO:
    case EPERM:  // a firewall refused it
      return {Next::kResubmit, absl::OkStatus()};
    case EMFILE:
    case ENFILE:
    case ENOBUFS:
    case ENOMEM:
      // Accepting again at once fails again at once: pause instead of spinning.
      return {Next::kBackOff, base::errno_to_status(err, "accept")};
    case EFAULT:
      RX_CHECK_MSG(false, "accept was handed a bad address (EFAULT): a ringxfer bug");
      break;
    default:
      break;
  }
  return {Next::kBackOff, base::errno_to_status(err, "accept")};
}

}  // namespace ringxfer::transport::detail
