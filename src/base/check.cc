#include "base/check.h"

#include <cstdio>
#include <cstdlib>

#include "base/log.h"

namespace ringxfer::base::detail {

void check_failed(const char* condition, const char* file, int line, const char* message) noexcept {
  // The process is about to die: what the logging thread has not written yet goes out
  // now if stderr takes it without waiting, and this line is written here, directly.
  log_flush_for_crash();
  std::fprintf(stderr, "ringxfer: check failed at %s:%d: %s%s%s\n", file, line, condition,
               message != nullptr ? ": " : "", message != nullptr ? message : "");
  std::fflush(stderr);
  std::abort();
}

}  // namespace ringxfer::base::detail
