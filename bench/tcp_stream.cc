// A bare TCP stream with a chosen memory footprint: the bandwidth ceiling for moving
// `footprint` distinct bytes, where iperf3 recycles one block that stays in cache.
// Blocking send/recv of `block`-byte pieces walking through a buffer of `footprint` bytes
// on both sides (touched before the clock starts), one connection.
// --sockbuf sets SO_SNDBUF and SO_RCVBUF (default: kernel autotuning).
//   tcp_stream --server PORT [--host ADDR] [--footprint B] [--block B] [--sockbuf B]
//       receives until the client closes, then prints "bytes seconds"
//   tcp_stream --client HOST PORT [--bytes N] [--footprint B] [--block B] [--sockbuf B]
//       sends N bytes and prints "GB/s"
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "bare_tcp.h"

namespace {

struct Options {
  const char* host = nullptr;
  const char* port = nullptr;
  uint64_t bytes = 16ull << 30;
  uint64_t footprint = 256ull << 20;
  uint64_t block = 1 << 20;
  int sockbuf = 0;  // SO_SNDBUF and SO_RCVBUF; 0: kernel autotuning
};

void set_buffers(int fd, int bytes) {
  if (bytes > 0) {
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof(bytes));
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof(bytes));
  }
}

char* touched_buffer(uint64_t n) {
  void* p = mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    std::perror("mmap");
    std::exit(1);
  }
  std::memset(p, 0x5a, n);
  return static_cast<char*>(p);
}

int server(const Options& o) {
  // Buffer sizes are inherited by the accepted socket, before the handshake.
  const int l = bare_tcp::listen_on(o.host, o.port, [&](int fd) { set_buffers(fd, o.sockbuf); });
  char* buf = touched_buffer(o.footprint);
  std::printf("READY\n");
  std::fflush(stdout);
  const int c = accept(l, nullptr, nullptr);
  uint64_t total = 0, at = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (;;) {
    const uint64_t want = std::min(o.block, o.footprint - at);
    const ssize_t r = recv(c, buf + at, want, 0);
    if (r <= 0) {
      break;
    }
    total += static_cast<uint64_t>(r);
    at = (at + static_cast<uint64_t>(r)) % o.footprint;
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("%llu %.6f\n", static_cast<unsigned long long>(total), s);
  close(c);
  close(l);
  return 0;
}

int client(const Options& o) {
  const int fd = bare_tcp::connect_to(o.host, o.port, [&](int s) { set_buffers(s, o.sockbuf); });
  char* buf = touched_buffer(o.footprint);
  uint64_t sent = 0, at = 0;
  const auto t0 = std::chrono::steady_clock::now();
  while (sent < o.bytes) {
    const uint64_t want = std::min({o.block, o.footprint - at, o.bytes - sent});
    const ssize_t r = send(fd, buf + at, want, MSG_NOSIGNAL);
    if (r <= 0) {
      std::perror("send");
      return 1;
    }
    sent += static_cast<uint64_t>(r);
    at = (at + static_cast<uint64_t>(r)) % o.footprint;
  }
  shutdown(fd, SHUT_WR);
  char drain;
  (void)recv(fd, &drain, 1, 0);  // returns 0 once the server has read everything and closed
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("%.3f\n", static_cast<double>(sent) / s / 1e9);
  close(fd);
  return 0;
}

uint64_t number(const char* s) {
  char* end = nullptr;
  const unsigned long long v = std::strtoull(s, &end, 10);
  if (end == s || *end != '\0' || v == 0) {
    std::fprintf(stderr, "not a positive number: %s\n", s);
    std::exit(2);
  }
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  bool is_server = false, is_client = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const bool has_value = i + 1 < argc;
    if (a == "--server" && has_value) {
      is_server = true;
      o.port = argv[++i];
    } else if (a == "--client" && i + 2 < argc) {
      is_client = true;
      o.host = argv[++i];
      o.port = argv[++i];
    } else if (a == "--host" && has_value) {
      o.host = argv[++i];
    } else if (a == "--bytes" && has_value) {
      o.bytes = number(argv[++i]);
    } else if (a == "--footprint" && has_value) {
      o.footprint = number(argv[++i]);
    } else if (a == "--sockbuf" && has_value) {
      o.sockbuf = static_cast<int>(number(argv[++i]));
    } else if (a == "--block" && has_value) {
      o.block = number(argv[++i]);
    } else {
      is_server = is_client = false;
      break;
    }
  }
  if (is_server != is_client) {
    return is_server ? server(o) : client(o);
  }
  std::fprintf(
      stderr,
      "usage: %s --server PORT [--host ADDR] [--footprint B] [--block B] [--sockbuf B]\n"
      "       %s --client HOST PORT [--bytes N] [--footprint B] [--block B] [--sockbuf B]\n",
      argv[0], argv[0]);
  return 2;
}
