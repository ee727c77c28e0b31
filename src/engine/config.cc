#include "ringxfer/config.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/str_format.h"
#include "base/log.h"

namespace ringxfer {
namespace {

template <typename T>
absl::Status range(const char* field, T value, T lo, T hi) {
  if (value < lo || value > hi) {
    return absl::InvalidArgumentError(
        absl::StrFormat("EngineConfig.%s = %d is out of range [%d, %d]", field, value, lo, hi));
  }
  return absl::OkStatus();
}

#define RX_CHECK_FIELD(expr)  \
  do {                        \
    absl::Status s_ = (expr); \
    if (!s_.ok()) {           \
      return s_;              \
    }                         \
  } while (false)

absl::Status buffer(const char* field, int bytes) {
  if (bytes != 0 && (bytes < 4096 || bytes > (1 << 30))) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "EngineConfig.socket.%s = %d: use 0 (kernel autotuning) or 4096..1073741824", field,
        bytes));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status EngineConfig::validate() const {
  if (host.size() > 255) {
    return absl::InvalidArgumentError("EngineConfig.host is longer than 255 bytes");
  }
  if (advertise_host.size() > 255 || advertise_host == "0.0.0.0" || advertise_host == "::") {
    return absl::InvalidArgumentError(absl::StrFormat(
        "EngineConfig.advertise_host = \"%s\": use an address or host name peers can reach "
        "(at most 255 bytes), or \"\" to choose one",
        advertise_host.substr(0, 64)));
  }
  RX_CHECK_FIELD(range<int>("rings", rings, 1, 64));
  RX_CHECK_FIELD(range<int>("stripes", stripes, 1, 16));
  RX_CHECK_FIELD(range<int64_t>("timeout (ms)", timeout.count(), 1, 3'600'000));
  RX_CHECK_FIELD(
      range<uint64_t>("stripe_threshold_bytes", stripe_threshold_bytes, 1, uint64_t{1} << 30));
  RX_CHECK_FIELD(range<uint64_t>("chunk_bytes", chunk_bytes, 4096, uint64_t{1} << 30));
  RX_CHECK_FIELD(
      range<uint64_t>("zerocopy_threshold_bytes", zerocopy_threshold_bytes, 0, uint64_t{1} << 30));
  RX_CHECK_FIELD(range<unsigned>("ring_entries", ring_entries, 16, 32768));
  RX_CHECK_FIELD(
      range<uint64_t>("staging_slab_bytes", staging_slab_bytes, 64 << 10, uint64_t{1} << 30));
  RX_CHECK_FIELD(range<int>("staging_slabs", staging_slabs, 2, 1024));
  if (staging_slab_bytes < std::min<uint64_t>(stripe_threshold_bytes, uint64_t{64} << 20)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "EngineConfig.staging_slab_bytes = %d is below stripe_threshold_bytes = %d: a GPU "
        "transfer that travels inline must fit one slab",
        staging_slab_bytes, stripe_threshold_bytes));
  }
  RX_CHECK_FIELD(range<int64_t>("wait_spin (us)", wait_spin.count(), 0, 10'000));
  if ((ring_entries & (ring_entries - 1)) != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("EngineConfig.ring_entries = %d is not a power of two", ring_entries));
  }
  for (int cpu : ring_cpus) {
    RX_CHECK_FIELD(range<int>("ring_cpus[]", cpu, 0, 4095));
  }
  RX_CHECK_FIELD(range<int>("max_inbound_connections", max_inbound_connections, 1, 1'000'000));
  RX_CHECK_FIELD(range<int>("max_handshaking_connections", max_handshaking_connections, 1,
                            max_inbound_connections));
  RX_CHECK_FIELD(range<int64_t>("handshake_timeout (ms)", handshake_timeout.count(), 1, 3'600'000));
  RX_CHECK_FIELD(range<int64_t>("idle_timeout (ms)", idle_timeout.count(), 1, 86'400'000));
  RX_CHECK_FIELD(range<int>("max_inbound_statuses", max_inbound_statuses, 1, 1 << 24));
  RX_CHECK_FIELD(range<int>("max_split_transfers", max_split_transfers, 1, 1 << 20));
  RX_CHECK_FIELD(range<int>("max_queued_transfers", max_queued_transfers, 1, 1 << 24));
  RX_CHECK_FIELD(buffer("send_buffer_bytes", socket.send_buffer_bytes));
  RX_CHECK_FIELD(buffer("recv_buffer_bytes", socket.recv_buffer_bytes));
  RX_CHECK_FIELD(range<int>("socket.keepalive_idle_s", socket.keepalive_idle_s, 1, 86400));
  RX_CHECK_FIELD(range<int>("socket.keepalive_interval_s", socket.keepalive_interval_s, 1, 86400));
  RX_CHECK_FIELD(range<int>("socket.keepalive_count", socket.keepalive_count, 1, 100));
  return absl::OkStatus();
}

absl::Status set_log_level(std::string_view level) {
  const std::string l = absl::AsciiStrToLower(absl::string_view(level.data(), level.size()));
  base::LogLevel v;
  if (l == "trace" || l == "debug") {
    v = base::LogLevel::kDebug;
  } else if (l == "info") {
    v = base::LogLevel::kInfo;
  } else if (l == "warn" || l == "warning") {
    v = base::LogLevel::kWarn;
  } else if (l == "error" || l == "critical") {
    v = base::LogLevel::kError;
  } else {
    return absl::InvalidArgumentError(absl::StrFormat(
        "log level \"%s\": use trace, debug, info, warn, error or critical", level));
  }
  base::set_log_level(v);
  return absl::OkStatus();
}

}  // namespace ringxfer
