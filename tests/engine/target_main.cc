// A target engine in its own process, for tests that kill it. Usage:
//   rx_test_target PORT BYTES
// Registers BYTES of memory, prints "<engine desc hex> <memory desc hex>" on one line,
// then serves until stdin closes or the process is killed.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "ringxfer/ringxfer.h"

namespace {

std::string hex(const std::string& b) {
  static const char* d = "0123456789abcdef";
  std::string out;
  for (unsigned char c : b) {
    out += d[c >> 4];
    out += d[c & 15];
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s PORT BYTES\n", argv[0]);
    return 2;
  }
  ringxfer::EngineConfig cfg;
  cfg.port = static_cast<uint16_t>(std::atoi(argv[1]));
  cfg.timeout = std::chrono::milliseconds(2000);
  auto engine = ringxfer::Engine::create("killable-target", cfg);
  if (!engine.ok()) {
    std::fprintf(stderr, "%s\n", engine.status().ToString().c_str());
    return 1;
  }
  std::vector<char> mem(std::strtoull(argv[2], nullptr, 10));
  auto md = (*engine)->register_memory(mem.data(), mem.size());
  if (!md.ok()) {
    std::fprintf(stderr, "%s\n", md.status().ToString().c_str());
    return 1;
  }
  std::printf("%s %s\n", hex((*engine)->desc().pack()).c_str(), hex(md->pack()).c_str());
  std::fflush(stdout);
  char c;
  while (read(0, &c, 1) > 0) {
  }
  return 0;
}
