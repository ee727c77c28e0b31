#include "ringxfer/version.h"

#include "wire/limits.h"

namespace ringxfer {

const char* version_string() noexcept { return RINGXFER_VERSION_STRING; }
int protocol_version_min() noexcept { return wire::kVersionMin; }
int protocol_version_max() noexcept { return wire::kVersionMax; }

}  // namespace ringxfer
