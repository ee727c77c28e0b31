#include "base/check.h"

#include <cstdio>
#include <cstdlib>

namespace ringxfer::base::detail {

void check_failed(const char* condition, const char* file, int line, const char* message) noexcept {
  std::fprintf(stderr, "ringxfer: check failed at %s:%d: %s%s%s\n", file, line, condition,
               message != nullptr ? ": " : "", message != nullptr ? message : "");
  std::fflush(stderr);
  std::abort();
}

}  // namespace ringxfer::base::detail
