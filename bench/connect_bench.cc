// What a new peer costs before its first byte moves: connect, handshake (with or without
// authentication) and the first 8-byte write, against the same write once connected.
// All engines live in this process, on loopback.
//   connect_bench [--rounds=200] [--rings=2] [--auth-key-file=PATH]
// Each round creates an initiator engine, introduces it to one target engine and times
// its first write (the connections of its lane group are opened and, with a key file,
// proven on the way), then a write on open connections. Prints medians and p90s.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "ringxfer/ringxfer.h"

namespace {

using namespace ringxfer;
using Clock = std::chrono::steady_clock;

double us_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
}

double pct(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

bool flag(const char* arg, const char* name, std::string& out) {
  const size_t n = std::strlen(name);
  if (std::strncmp(arg, name, n) == 0 && arg[n] == '=') {
    out = arg + n + 1;
    return true;
  }
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  int rounds = 200;
  int rings = 2;
  std::string key_file;
  for (int i = 1; i < argc; ++i) {
    std::string v;
    if (flag(argv[i], "--rounds", v)) {
      rounds = std::atoi(v.c_str());
    } else if (flag(argv[i], "--rings", v)) {
      rings = std::atoi(v.c_str());
    } else if (flag(argv[i], "--auth-key-file", v)) {
      key_file = v;
    } else {
      std::fprintf(stderr, "usage: connect_bench [--rounds=N] [--rings=N] [--auth-key-file=P]\n");
      return 2;
    }
  }
  if (rounds < 1 || rings < 1) {
    std::fprintf(stderr, "--rounds and --rings must be at least 1\n");
    return 2;
  }
  EngineConfig cfg;
  cfg.rings = rings;
  cfg.auth_key_file = key_file;
  auto target = Engine::create("target", cfg);
  if (!target.ok()) {
    std::fprintf(stderr, "target: %s\n", target.status().ToString().c_str());
    return 1;
  }
  std::vector<uint8_t> dst(64, 0), src(64, 1);
  const MemoryDesc md = *(*target)->register_memory(dst.data(), dst.size());
  std::vector<double> first, second;
  for (int r = 0; r < rounds; ++r) {
    auto init = Engine::create("init-" + std::to_string(r), cfg);
    if (!init.ok()) {
      std::fprintf(stderr, "initiator: %s\n", init.status().ToString().c_str());
      return 1;
    }
    const MemoryDesc ms = *(*init)->register_memory(src.data(), src.size());
    if (!(*init)->register_remote_engine((*target)->desc()).ok()) {
      return 1;
    }
    // The first write opens its lane group's connections (with several rings, each
    // group has its own); the next rings - 1 open the others; the last is timed on open
    // connections.
    for (int k = 0; k <= rings; ++k) {
      const Clock::time_point t0 = Clock::now();
      auto w = (*init)->write(ms, 0, md, 0, 8, (*init)->allocate_transfer_id());
      if (!w.ok() || !(*w)->wait(std::chrono::seconds(10)) || !(*w)->succeeded()) {
        std::fprintf(stderr, "round %d: write failed: %s\n", r,
                     w.ok() ? (*w)->status().ToString().c_str() : w.status().ToString().c_str());
        return 1;
      }
      if (k == 0) {
        first.push_back(us_since(t0));
      } else if (k == rings) {
        second.push_back(us_since(t0));
      }
    }
  }
  std::printf("connect_bench: rings=%d auth=%s rounds=%d\n", rings, key_file.empty() ? "off" : "on",
              rounds);
  std::printf("  first write (connect + handshake + 8 B): median %.1f us, p90 %.1f us\n",
              pct(first, 0.5), pct(first, 0.9));
  std::printf("  warm write (8 B, connected):             median %.1f us, p90 %.1f us\n",
              pct(second, 0.5), pct(second, 0.9));
  return 0;
}
