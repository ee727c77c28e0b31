#include "base/random.h"

#include <sys/random.h>

#include <cerrno>
#include <cstddef>
#include <cstring>

#include "base/check.h"

namespace ringxfer::base {

uint64_t random_u64() noexcept {
  for (;;) {
    unsigned char b[sizeof(uint64_t)];
    size_t got = 0;
    while (got < sizeof(b)) {
      // Requests of up to 256 bytes are never cut short once the pool is initialized,
      // but a signal before that may interrupt the call: then ask again.
      const ssize_t n = getrandom(b + got, sizeof(b) - got, 0);
      if (n < 0) {
        RX_CHECK_MSG(errno == EINTR, "getrandom(2) failed: no random region keys");
        continue;
      }
      got += static_cast<size_t>(n);
    }
    uint64_t v = 0;
    std::memcpy(&v, b, sizeof(v));
    if (v != 0) {
      return v;
    }
  }
}

}  // namespace ringxfer::base
