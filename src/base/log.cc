#include "base/log.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace ringxfer::base {
namespace {

LogLevel level_from_env() noexcept {
  const char* v = std::getenv("RINGXFER_LOG");
  if (v == nullptr) {
    return LogLevel::kInfo;
  }
  if (std::strcmp(v, "error") == 0) {
    return LogLevel::kError;
  }
  if (std::strcmp(v, "warn") == 0) {
    return LogLevel::kWarn;
  }
  if (std::strcmp(v, "debug") == 0) {
    return LogLevel::kDebug;
  }
  return LogLevel::kInfo;
}

const char* level_name(LogLevel level) noexcept {
  switch (level) {
    case LogLevel::kError:
      return "error";
    case LogLevel::kWarn:
      return "warn";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kDebug:
      return "debug";
  }
  return "?";
}

}  // namespace

static std::atomic<int>& threshold() noexcept {
  static std::atomic<int> t{static_cast<int>(level_from_env())};
  return t;
}

bool log_enabled(LogLevel level) noexcept {
  return static_cast<int>(level) <= threshold().load(std::memory_order_relaxed);
}

void set_log_level(LogLevel level) noexcept {
  threshold().store(static_cast<int>(level), std::memory_order_relaxed);
}

void log_line(LogLevel level, std::string_view message) noexcept {
  std::fprintf(stderr, "ringxfer %s: %.*s\n", level_name(level), static_cast<int>(message.size()),
               message.data());
}

}  // namespace ringxfer::base
