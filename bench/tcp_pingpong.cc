// The bare TCP round trip the transfer benchmarks compare against: 8-byte messages,
// blocking send/recv, TCP_NODELAY, one connection.
//   tcp_pingpong --server PORT [--host ADDR]   answers until the client closes
//   tcp_pingpong --client HOST PORT [--iters N] prints "avg_us min_us" of N round trips
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "bare_tcp.h"

namespace {

bool io_all(int fd, char* buf, size_t n, bool send_mode) {
  size_t done = 0;
  while (done < n) {
    const ssize_t r = send_mode ? ::send(fd, buf + done, n - done, MSG_NOSIGNAL)
                                : ::recv(fd, buf + done, n - done, 0);
    if (r <= 0) {
      return false;
    }
    done += static_cast<size_t>(r);
  }
  return true;
}

void nodelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

int server(const char* host, const char* port) {
  const int l = bare_tcp::listen_on(host, port, [](int) {});
  std::printf("READY\n");
  std::fflush(stdout);
  int c = accept(l, nullptr, nullptr);
  nodelay(c);
  char buf[8];
  while (io_all(c, buf, sizeof(buf), false) && io_all(c, buf, sizeof(buf), true)) {
  }
  close(c);
  close(l);
  return 0;
}

int client(const char* host, const char* port, int iters) {
  const int fd = bare_tcp::connect_to(host, port, [](int) {});
  nodelay(fd);
  char buf[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  double sum = 0, best = 1e30;
  for (int i = 0; i < iters + 100; ++i) {  // the first 100 warm up
    const auto t0 = std::chrono::steady_clock::now();
    if (!io_all(fd, buf, sizeof(buf), true) || !io_all(fd, buf, sizeof(buf), false)) {
      std::fprintf(stderr, "connection lost\n");
      return 1;
    }
    const double us =
        std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
    if (i >= 100) {
      sum += us;
      best = std::min(best, us);
    }
  }
  std::printf("%.3f %.3f\n", sum / iters, best);
  close(fd);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 3 && std::strcmp(argv[1], "--server") == 0) {
    const char* host = argc >= 5 && std::strcmp(argv[3], "--host") == 0 ? argv[4] : nullptr;
    return server(host, argv[2]);
  }
  if (argc >= 4 && std::strcmp(argv[1], "--client") == 0) {
    const int iters =
        argc >= 6 && std::strcmp(argv[4], "--iters") == 0 ? std::atoi(argv[5]) : 10000;
    return client(argv[2], argv[3], iters);
  }
  std::fprintf(stderr, "usage: %s --server PORT [--host ADDR] | --client HOST PORT [--iters N]\n",
               argv[0]);
  return 2;
}
