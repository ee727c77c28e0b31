// One-line logging to stderr: "ringxfer <level>: <message>". The level comes from the
// environment variable RINGXFER_LOG (error, warn, info, debug; default info) and is
// read once; set_log_level() overrides it. Used for start-up facts and fallbacks, never
// on the data path.
#pragma once

#include <string_view>

#include "absl/strings/str_format.h"

namespace ringxfer::base {

enum class LogLevel { kError = 0, kWarn = 1, kInfo = 2, kDebug = 3 };

bool log_enabled(LogLevel level) noexcept;
void log_line(LogLevel level, std::string_view message) noexcept;
// Overrides RINGXFER_LOG from now on (any thread).
void set_log_level(LogLevel level) noexcept;

}  // namespace ringxfer::base

#define RX_LOG(level, ...)                                                  \
  do {                                                                      \
    if (::ringxfer::base::log_enabled(::ringxfer::base::LogLevel::level)) { \
      ::ringxfer::base::log_line(::ringxfer::base::LogLevel::level,         \
                                 ::absl::StrFormat(__VA_ARGS__));           \
    }                                                                       \
  } while (false)
