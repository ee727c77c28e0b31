// Status plumbing shared by every folder of src/: RX_RETURN_IF_ERROR and
// RX_ASSIGN_OR_RETURN (Debian's Abseil 20220623 ships no status_macros.h).
// Knows nothing of sockets, rings or frames.
#pragma once

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define RX_CONCAT_INNER_(a, b) a##b
#define RX_CONCAT_(a, b) RX_CONCAT_INNER_(a, b)

// Evaluates `expr` (an absl::Status) once and returns it from the enclosing function if
// it is not OK.
#define RX_RETURN_IF_ERROR(expr)        \
  do {                                  \
    ::absl::Status rx_status_ = (expr); \
    if (!rx_status_.ok()) {             \
      return rx_status_;                \
    }                                   \
  } while (false)

// `lhs` may be a declaration (`auto x`) or an existing lvalue. `expr` is an
// absl::StatusOr<T>; on error its status is returned from the enclosing function.
#define RX_ASSIGN_OR_RETURN(lhs, expr) \
  RX_ASSIGN_OR_RETURN_IMPL_(RX_CONCAT_(rx_statusor_, __LINE__), lhs, expr)

#define RX_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                              \
  if (!tmp.ok()) {                                \
    return std::move(tmp).status();               \
  }                                               \
  lhs = std::move(tmp).value()
