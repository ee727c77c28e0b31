// Addresses an engine listens on and tells its peers: listening on every interface
// ("", "0.0.0.0", "::") and choosing, then, an address other hosts can reach.
#pragma once

#include <sys/socket.h>

#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace ringxfer::transport {

// Whether `host` asks for every interface: "" (IPv6 and IPv4), "0.0.0.0" (IPv4) or "::"
// (IPv6, and IPv4 unless net.ipv6.bindv6only is set).
bool is_any_host(std::string_view host);

// A listening TCP socket (SOCK_CLOEXEC, SO_REUSEADDR, backlog 1024) bound to `host` and
// `port`. "" binds "::" with IPV6_V6ONLY off, so IPv4 peers reach it too, or 0.0.0.0
// where the host has no IPv6. Other hosts are resolved (numeric first, then DNS).
// Returns the fd.
absl::StatusOr<int> listen_on(const std::string& host, uint16_t port);

// The address to tell peers when an engine listens on every interface of `family`
// (AF_INET: IPv4 addresses only; AF_INET6: IPv4 first, then IPv6): the source address
// of the default route (found by connecting a UDP socket, which sends nothing), else
// the first non-loopback address of an interface that is up (IPv6 link-local ones are
// skipped: they need a scope), else 127.0.0.1 or ::1 when only loopback is up (peers
// on this host only: logged once), else kUnavailable saying to set
// EngineConfig.advertise_host.
absl::StatusOr<std::string> reachable_host(int family);

}  // namespace ringxfer::transport
