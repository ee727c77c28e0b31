// What anonymous peers can make an engine hold (issue 11): each attack of the issue
// against a fresh target engine in a child process, measured as the child's resident
// memory (VmRSS) before, during and after, with the target's own counters and the heap
// its allocator has handed out and not had back (after the attack).
//   attack_costs [--scale=1.0] [--only=NAME]
// Attacks (at --scale=1, the sizes):
//   conns     2,000 control connections, each a hello and half of a 140 KiB request
//   statuses  65,536 failed reads under each of 10 keys
//   split     200,000 read requests that are 1 of 64 parts, for a region that does not exist
//   peers     20,000 hellos under distinct keys, each connection closed after its ack
// The target runs with the default EngineConfig (one ring thread), on loopback.
#include <malloc.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "ringxfer/ringxfer.h"
#include "support/raw_socket.h"
#include "wire/codec.h"

namespace {

using namespace ringxfer;
using testing::RawClient;

// Bytes the child's allocator has handed out and not had back (glibc), in KiB: RSS
// keeps pages malloc has not returned, this does not.
size_t heap_kib() {
  const struct mallinfo2 m = mallinfo2();
  return (m.uordblks + m.hblkhd) / 1024;
}

// The child: a target engine that reports its port and, on each byte from the parent,
// one line of counters.
[[noreturn]] void run_target(int to_parent, int from_parent) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  EngineConfig cfg;
  cfg.rings = 1;
  auto e = Engine::create("target", cfg);
  if (!e.ok()) {
    std::fprintf(stderr, "target: %s\n", e.status().ToString().c_str());
    _exit(1);
  }
  std::vector<uint8_t> region(1 << 20, 0);
  (void)(*e)->register_memory(region.data(), region.size());
  const uint16_t port = (*e)->desc().port;
  if (write(to_parent, &port, sizeof(port)) != sizeof(port)) {
    _exit(1);
  }
  char c;
  while (read(from_parent, &c, 1) == 1) {
    const EngineStats s = (*e)->stats();
    char line[512];
    const int n = std::snprintf(
        line, sizeof(line),
        "peers %llu evicted %llu, inbound conns refused %llu, statuses %llu dropped %llu, "
        "split %llu expired %llu, served %llu; heap in use %zu KiB\n",
        static_cast<unsigned long long>(s.peers), static_cast<unsigned long long>(s.peers_evicted),
        static_cast<unsigned long long>(s.connections_refused),
        static_cast<unsigned long long>(s.inbound_statuses),
        static_cast<unsigned long long>(s.inbound_statuses_dropped),
        static_cast<unsigned long long>(s.split_transfers),
        static_cast<unsigned long long>(s.split_transfers_expired),
        static_cast<unsigned long long>(s.transfers_served), heap_kib());
    if (write(to_parent, line, static_cast<size_t>(n)) != n) {
      _exit(1);
    }
  }
  _exit(0);
}

struct Target {
  pid_t pid = -1;
  int rd = -1, wr = -1;
  uint16_t port = 0;
  Target() {
    int up[2], down[2];
    if (pipe(up) != 0 || pipe(down) != 0) {
      std::perror("pipe");
      std::exit(1);
    }
    pid = fork();
    if (pid == 0) {
      close(up[0]);
      close(down[1]);
      run_target(up[1], down[0]);
    }
    close(up[1]);
    close(down[0]);
    rd = up[0];
    wr = down[1];
    if (read(rd, &port, sizeof(port)) != sizeof(port)) {
      std::fprintf(stderr, "the target did not start\n");
      std::exit(1);
    }
  }
  ~Target() {
    close(wr);
    close(rd);
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
  }
  long rss_kib() const {
    std::ifstream f("/proc/" + std::to_string(pid) + "/status");
    std::string line;
    while (std::getline(f, line)) {
      if (line.rfind("VmRSS:", 0) == 0) {
        return std::atol(line.c_str() + 6);
      }
    }
    return -1;
  }
  std::string counters() const {
    if (write(wr, "s", 1) != 1) {
      return "?";
    }
    std::string out;
    char c;
    while (read(rd, &c, 1) == 1 && c != '\n') {
      out += c;
    }
    return out;
  }
};

std::vector<std::byte> hello(const std::string& key) {
  wire::Hello h;
  h.channel = wire::ChannelKind::kControl;
  h.key = key;
  std::vector<std::byte> b(wire::hello_frame_bytes(key.size(), 0));
  (void)wire::encode_hello(h, b);
  return b;
}

// A client that said hello and got its ack (nullptr if refused).
std::unique_ptr<RawClient> greeted(uint16_t port, const std::string& key) {
  auto c = std::make_unique<RawClient>(port);
  if (!c->connected() || !c->send_all(hello(key))) {
    return nullptr;
  }
  std::vector<std::byte> ack(wire::hello_ack_frame_bytes(6, 0));
  if (!c->recv_exact(ack.data(), ack.size(), 5000)) {
    return nullptr;
  }
  return c;
}

std::vector<std::byte> read_requests(uint32_t first, uint32_t count, uint16_t parts) {
  const std::vector<wire::Segment> segs = {{77, 1, 0, 8}};
  std::vector<std::byte> all;
  std::vector<std::byte> req(wire::request_frame_bytes(1));
  for (uint32_t i = first; i < first + count; ++i) {
    (void)wire::encode_request(wire::OpKind::kRead, i, segs, req, parts, i);
    all.insert(all.end(), req.begin(), req.end());
  }
  return all;
}

void settle() { std::this_thread::sleep_for(std::chrono::milliseconds(1500)); }

void report(const char* name, const Target& t, long before, long during, const char* what) {
  const long after = t.rss_kib();
  std::printf("%-9s %s\n          RSS before %ld KiB, during %+ld KiB, after %+ld KiB; %s\n", name,
              what, before, during - before, after - before, t.counters().c_str());
  std::fflush(stdout);
}

void attack_conns(double scale) {
  Target t;
  const long before = t.rss_kib();
  const int n = static_cast<int>(2000 * scale);
  std::vector<wire::Segment> segs(6000, wire::Segment{1, 0, 0, 8});
  std::vector<std::byte> req(wire::request_frame_bytes(segs.size()));
  (void)wire::encode_request(wire::OpKind::kRead, 1, segs, req, 0, 1);
  req.resize(req.size() / 2);
  std::vector<std::unique_ptr<RawClient>> clients;
  int answered = 0;
  for (int i = 0; i < n; ++i) {
    auto c = greeted(t.port, "idle-" + std::to_string(i));
    if (c != nullptr) {
      ++answered;
      c->send_all(req);
      clients.push_back(std::move(c));
    }
  }
  settle();
  const long during = t.rss_kib();
  clients.clear();
  settle();
  char what[128];
  std::snprintf(what, sizeof(what), "%d connections tried, %d answered (the rest refused)", n,
                answered);
  report("conns", t, before, during, what);
}

void attack_statuses(double scale) {
  Target t;
  const long before = t.rss_kib();
  const uint32_t per_key = static_cast<uint32_t>(65536 * scale);
  std::vector<std::unique_ptr<RawClient>> clients;
  for (int k = 0; k < 10; ++k) {
    auto c = greeted(t.port, "key-" + std::to_string(k));
    if (c == nullptr) {
      continue;
    }
    for (uint32_t first = 1; first <= per_key; first += 4096) {
      c->send_all(read_requests(first, std::min<uint32_t>(4096, per_key - first + 1), 0));
      c->wait_closed(0);  // drains what has come back, so the target's sends move
    }
    clients.push_back(std::move(c));
  }
  for (auto& c : clients) {
    c->wait_closed(200);
  }
  settle();
  const long during = t.rss_kib();
  clients.clear();
  settle();
  char what[128];
  std::snprintf(what, sizeof(what), "10 keys x %u failed reads", per_key);
  report("statuses", t, before, during, what);
}

void attack_split(double scale) {
  Target t;
  const long before = t.rss_kib();
  const uint32_t n = static_cast<uint32_t>(200000 * scale);
  auto c = greeted(t.port, "splitter");
  for (uint32_t first = 1; c != nullptr && first <= n; first += 4096) {
    c->send_all(read_requests(first, std::min<uint32_t>(4096, n - first + 1), 64));
    c->wait_closed(0);
  }
  if (c != nullptr) {
    c->wait_closed(200);
  }
  settle();
  const long during = t.rss_kib();
  c.reset();
  settle();
  char what[128];
  std::snprintf(what, sizeof(what), "%u requests, 1 of 64 parts each", n);
  report("split", t, before, during, what);
}

void attack_peers(double scale) {
  Target t;
  const long before = t.rss_kib();
  const int n = static_cast<int>(20000 * scale);
  int answered = 0;
  for (int i = 0; i < n; ++i) {
    if (greeted(t.port, "visitor-" + std::to_string(i)) != nullptr) {
      ++answered;
    }
  }
  const long during = t.rss_kib();
  settle();
  char what[128];
  std::snprintf(what, sizeof(what), "%d hellos under distinct keys, %d answered, each then left", n,
                answered);
  report("peers", t, before, during, what);
}

}  // namespace

int main(int argc, char** argv) {
  double scale = 1.0;
  std::string only;
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--scale=", 8) == 0) {
      scale = std::atof(argv[i] + 8);
    } else if (std::strncmp(argv[i], "--only=", 7) == 0) {
      only = argv[i] + 7;
    } else {
      std::fprintf(stderr,
                   "usage: attack_costs [--scale=1.0] [--only=conns|statuses|split|peers]\n");
      return 2;
    }
  }
  if (scale <= 0 || scale > 10) {
    std::fprintf(stderr, "--scale must be in (0, 10]\n");
    return 2;
  }
  setenv("RINGXFER_LOG", "error", 0);
  std::printf(
      "attack_costs: a fresh target per attack (default EngineConfig, 1 ring), scale %.2f\n",
      scale);
  if (only.empty() || only == "conns") attack_conns(scale);
  if (only.empty() || only == "statuses") attack_statuses(scale);
  if (only.empty() || only == "split") attack_split(scale);
  if (only.empty() || only == "peers") attack_peers(scale);
  return 0;
}
