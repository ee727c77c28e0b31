// Blocking-socket helpers shared by the bare TCP baselines (tcp_pingpong, tcp_stream):
// what ringxfer is compared against, kept free of ringxfer's own code.
#pragma once

#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>

namespace bare_tcp {

inline addrinfo* resolve(const char* host, const char* port, bool passive) {
  addrinfo hints{}, *ai = nullptr;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = passive ? AI_PASSIVE : 0;
  if (getaddrinfo(host, port, &hints, &ai) != 0) {
    std::fprintf(stderr, "cannot resolve %s:%s\n", host ? host : "*", port);
    std::exit(1);
  }
  return ai;
}

// A listening socket on host:port (SO_REUSEADDR; `setup(fd)` runs before bind), or
// exits with a message.
template <typename Setup>
int listen_on(const char* host, const char* port, Setup setup) {
  addrinfo* ai = resolve(host, port, true);
  const int l = socket(ai->ai_family, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  setup(l);
  if (bind(l, ai->ai_addr, ai->ai_addrlen) != 0 || listen(l, 1) != 0) {
    std::perror("bind/listen");
    std::exit(1);
  }
  freeaddrinfo(ai);
  return l;
}

// A socket connected to host:port, retried for 5 s while the server starts
// (`setup(fd)` runs before each connect), or exits with a message.
template <typename Setup>
int connect_to(const char* host, const char* port, Setup setup) {
  addrinfo* ai = resolve(host, port, false);
  for (int i = 0; i < 100; ++i) {
    const int fd = socket(ai->ai_family, SOCK_STREAM, 0);
    setup(fd);
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
      freeaddrinfo(ai);
      return fd;
    }
    close(fd);
    usleep(50000);
  }
  std::perror("connect");
  std::exit(1);
}

}  // namespace bare_tcp
