// RX_CHECK: assertions for programmer errors only. A failed check prints the
// condition and location and aborts, in every build type. Operating errors (a peer
// that vanished, a bad frame) are never checked: they are handled and reported.
#pragma once

namespace ringxfer::base::detail {
[[noreturn]] void check_failed(const char* condition, const char* file, int line,
                               const char* message) noexcept;
}  // namespace ringxfer::base::detail

#define RX_CHECK(cond)                                                            \
  do {                                                                            \
    if (!(cond)) [[unlikely]] {                                                   \
      ::ringxfer::base::detail::check_failed(#cond, __FILE__, __LINE__, nullptr); \
    }                                                                             \
  } while (false)

#define RX_CHECK_MSG(cond, msg)                                                 \
  do {                                                                          \
    if (!(cond)) [[unlikely]] {                                                 \
      ::ringxfer::base::detail::check_failed(#cond, __FILE__, __LINE__, (msg)); \
    }                                                                           \
  } while (false)

#ifdef NDEBUG
#define RX_DCHECK(cond) \
  do {                  \
  } while (false && (cond))
#else
#define RX_DCHECK(cond) RX_CHECK(cond)
#endif
