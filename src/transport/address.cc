#include "transport/address.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <optional>

#include "absl/strings/str_format.h"
#include "base/errno_status.h"
#include "base/log.h"
#include "transport/transport.h"

namespace ringxfer::transport {
namespace {

std::string numeric(const sockaddr* sa) {
  char buf[INET6_ADDRSTRLEN] = {};
  const void* src =
      sa->sa_family == AF_INET
          ? static_cast<const void*>(&reinterpret_cast<const sockaddr_in*>(sa)->sin_addr)
          : static_cast<const void*>(&reinterpret_cast<const sockaddr_in6*>(sa)->sin6_addr);
  return inet_ntop(sa->sa_family, src, buf, sizeof(buf)) != nullptr ? std::string(buf)
                                                                    : std::string();
}

bool loopback(const sockaddr* sa) {
  if (sa->sa_family == AF_INET) {
    return (ntohl(reinterpret_cast<const sockaddr_in*>(sa)->sin_addr.s_addr) >> 24) == 127;
  }
  return IN6_IS_ADDR_LOOPBACK(&reinterpret_cast<const sockaddr_in6*>(sa)->sin6_addr);
}

// An address usable by peers on other hosts: not loopback, not unspecified, and for
// IPv6 not link-local (it would need a scope id) and not an IPv4-mapped one.
bool routable(const sockaddr* sa) {
  if (loopback(sa)) {
    return false;
  }
  if (sa->sa_family == AF_INET) {
    return reinterpret_cast<const sockaddr_in*>(sa)->sin_addr.s_addr != htonl(INADDR_ANY);
  }
  const in6_addr& a = reinterpret_cast<const sockaddr_in6*>(sa)->sin6_addr;
  return !IN6_IS_ADDR_UNSPECIFIED(&a) && !IN6_IS_ADDR_LINKLOCAL(&a) && !IN6_IS_ADDR_V4MAPPED(&a);
}

// The source address the kernel would use on the default route of `family`.
std::optional<std::string> default_route_source(int family) {
  const int fd = ::socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return std::nullopt;
  }
  sockaddr_storage to{};
  socklen_t len = 0;
  if (family == AF_INET) {
    auto* in = reinterpret_cast<sockaddr_in*>(&to);
    in->sin_family = AF_INET;
    in->sin_port = htons(9);                       // discard; a UDP connect sends nothing
    inet_pton(AF_INET, "8.8.8.8", &in->sin_addr);  // any public address: the default route
    len = sizeof(sockaddr_in);
  } else {
    auto* in6 = reinterpret_cast<sockaddr_in6*>(&to);
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(9);
    inet_pton(AF_INET6, "2001:4860:4860::8888", &in6->sin6_addr);
    len = sizeof(sockaddr_in6);
  }
  std::optional<std::string> out;
  sockaddr_storage src{};
  socklen_t src_len = sizeof(src);
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&to), len) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&src), &src_len) == 0 &&
      routable(reinterpret_cast<const sockaddr*>(&src))) {
    out = numeric(reinterpret_cast<const sockaddr*>(&src));
  }
  ::close(fd);
  return out;
}

}  // namespace

bool is_any_host(std::string_view host) {
  return host.empty() || host == "0.0.0.0" || host == "::";
}

absl::StatusOr<int> listen_on(const std::string& host, uint16_t port) {
  sockaddr_storage addr{};
  socklen_t addr_len = 0;
  bool dual_stack = false;
  int fd = -1;
  if (host.empty()) {
    fd = ::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0) {
      auto* in6 = reinterpret_cast<sockaddr_in6*>(&addr);
      in6->sin6_family = AF_INET6;
      in6->sin6_addr = in6addr_any;
      in6->sin6_port = htons(port);
      addr_len = sizeof(sockaddr_in6);
      dual_stack = true;
    } else {  // no IPv6 here
      auto* in = reinterpret_cast<sockaddr_in*>(&addr);
      in->sin_family = AF_INET;
      in->sin_addr.s_addr = htonl(INADDR_ANY);
      in->sin_port = htons(port);
      addr_len = sizeof(sockaddr_in);
    }
  } else {
    absl::StatusOr<std::pair<sockaddr_storage, socklen_t>> r = resolve_address(host, port);
    if (!r.ok()) {
      return r.status();
    }
    addr = r->first;
    addr_len = r->second;
  }
  if (fd < 0) {
    fd = ::socket(addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  }
  if (fd < 0) {
    return base::errno_to_status(errno, "socket");
  }
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (dual_stack) {
    int zero = 0;
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
  }
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&addr), addr_len) != 0 ||
      ::listen(fd, 1024) != 0) {
    const int err = errno;
    ::close(fd);
    return base::errno_to_status(
        err, absl::StrFormat("listen on %s:%d", host.empty() ? "every interface" : host, port));
  }
  return fd;
}

absl::StatusOr<std::string> reachable_host(int family) {
  const bool v6 = family == AF_INET6;
  if (std::optional<std::string> a = default_route_source(AF_INET)) {
    return *a;
  }
  if (v6) {
    if (std::optional<std::string> a = default_route_source(AF_INET6)) {
      return *a;
    }
  }
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) {
    return base::errno_to_status(errno, "getifaddrs");
  }
  std::string first_v4, first_v6, loop;
  for (ifaddrs* i = list; i != nullptr; i = i->ifa_next) {
    if (i->ifa_addr == nullptr || (i->ifa_flags & IFF_UP) == 0) {
      continue;
    }
    const int f = i->ifa_addr->sa_family;
    if (f != AF_INET && (f != AF_INET6 || !v6)) {
      continue;
    }
    if (loopback(i->ifa_addr)) {
      if (loop.empty() || f == AF_INET) {
        loop = numeric(i->ifa_addr);
      }
    } else if (routable(i->ifa_addr)) {
      std::string& slot = f == AF_INET ? first_v4 : first_v6;
      if (slot.empty()) {
        slot = numeric(i->ifa_addr);
      }
    }
  }
  freeifaddrs(list);
  if (!first_v4.empty()) {
    return first_v4;
  }
  if (!first_v6.empty()) {
    return first_v6;
  }
  if (!loop.empty()) {
    static std::atomic<bool> said{false};
    if (!said.exchange(true)) {
      RX_LOG(kWarn,
             "listening on every interface, but only loopback is up: peers are told %s, which "
             "reaches this engine from this host only (set EngineConfig.advertise_host)",
             loop);
    }
    return loop;
  }
  return absl::UnavailableError(
      "listening on every interface, but no interface has an address peers could reach: set "
      "EngineConfig.advertise_host (Python: TcpBackendConfig.advertise_host) or listen on an "
      "address");
}

}  // namespace ringxfer::transport
