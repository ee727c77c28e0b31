// Random numbers that an attacker cannot predict, from the kernel's CSPRNG
// (getrandom(2)). For secrets such as region keys; not for simulations or tests.
// Thread-safe; no state of its own.
#pragma once

#include <cstdint>

namespace ringxfer::base {

// 64 random bits from getrandom(2), never 0 (0 is left to mean "no key"). Blocks only
// until the kernel's pool is first initialized (early boot). Aborts (RX_CHECK) if the
// kernel has no getrandom, which every kernel with io_uring has.
uint64_t random_u64() noexcept;

}  // namespace ringxfer::base
