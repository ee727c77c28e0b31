// One initiator engine writing to N target engines at once, against the same bytes
// written to one target: does an engine serve many peers as well as one, with a fixed
// number of threads? All engines live in this process, on loopback.
//   peers_bench [--peers=32] [--mib-per-round=256] [--rounds=8] [--rings=2]
//               [--target-rings=1]
// --rings is the initiator's; every target (the one-peer baseline's too) has
// --target-rings.
#include <dirent.h>

#include <algorithm>
#include <cerrno>
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

// Threads of this process, leaving out io_uring's io-wq workers ("iou-wrk-*"): the
// kernel starts those for operations it punts out of the poll path (a request woken
// by poll that still makes no progress, see io_arm_poll_handler), and retires them
// when idle; they are the kernel's, not ringxfer's, and do not follow the peer count.
int thread_count(int* iowq_workers = nullptr) {
  int n = 0, iowq = 0;
  if (DIR* d = opendir("/proc/self/task")) {
    while (dirent* e = readdir(d)) {
      if (e->d_name[0] == '.') {
        continue;
      }
      char comm[64] = {};
      const std::string path = std::string("/proc/self/task/") + e->d_name + "/comm";
      if (FILE* f = std::fopen(path.c_str(), "r")) {
        if (std::fgets(comm, sizeof(comm), f) == nullptr) {
          comm[0] = 0;
        }
        std::fclose(f);
      }
      if (std::strncmp(comm, "iou-wrk", 7) == 0) {
        ++iowq;
      } else {
        ++n;
      }
    }
    closedir(d);
  }
  if (iowq_workers != nullptr) {
    *iowq_workers = iowq;
  }
  return n;
}

[[noreturn]] void die(const absl::Status& st) {
  std::fprintf(stderr, "peers_bench: %s\n", st.ToString().c_str());
  std::exit(1);
}

constexpr const char* kFlags[] = {"peers", "mib-per-round", "rounds", "rings", "target-rings"};

// Every argument must be one of kFlags as --name=N.
void check_args(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const bool known = std::ranges::any_of(
        kFlags, [&](const char* name) { return a.rfind(std::string("--") + name + "=", 0) == 0; });
    if (!known) {
      die(absl::InvalidArgumentError(
          "unknown argument '" + a +
          "' (flags: --peers= --mib-per-round= --rounds= --rings= --target-rings=)"));
    }
  }
}

// The value of --name=N, a whole number in [1, max], or `def` when not given.
long flag(int argc, char** argv, const char* name, long def, long max) {
  const std::string prefix = std::string("--") + name + "=";
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], prefix.c_str(), prefix.size()) == 0) {
      const char* text = argv[i] + prefix.size();
      char* end = nullptr;
      errno = 0;
      const long v = std::strtol(text, &end, 10);
      if (errno != 0 || end == text || *end != '\0' || v < 1 || v > max) {
        die(absl::InvalidArgumentError(prefix + text + ": want a whole number in [1, " +
                                       std::to_string(max) + "]"));
      }
      return v;
    }
  }
  return def;
}

// Writes `bytes_per_round` per round, split evenly over `targets`; returns GB/s.
double run(Engine& initiator, const MemoryDesc& src, std::vector<MemoryDesc>& dsts,
           uint64_t bytes_per_round, int rounds) {
  const uint64_t per_peer = bytes_per_round / dsts.size();
  const uint64_t chunk = 1 << 20;
  const auto t0 = std::chrono::steady_clock::now();
  for (int r = 0; r < rounds; ++r) {
    std::vector<StatusHandle> statuses;
    for (const MemoryDesc& dst : dsts) {
      std::vector<uint64_t> offs, sizes;
      for (uint64_t off = 0; off < per_peer; off += chunk) {
        offs.push_back(off);
        sizes.push_back(std::min(chunk, per_peer - off));
      }
      auto st =
          initiator.batch_write(src, offs, dst, offs, sizes, initiator.allocate_transfer_id());
      if (!st.ok()) {
        die(st.status());
      }
      statuses.push_back(*st);
    }
    absl::Status all = wait_all(statuses, std::chrono::milliseconds(-1));
    if (!all.ok()) {
      die(all);
    }
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return double(per_peer * dsts.size() * rounds) / s / 1e9;
}

}  // namespace

int main(int argc, char** argv) {
  check_args(argc, argv);
  const int peers = static_cast<int>(flag(argc, argv, "peers", 32, 256));
  const uint64_t bytes = uint64_t(flag(argc, argv, "mib-per-round", 256, 16384)) << 20;
  const int rounds = static_cast<int>(flag(argc, argv, "rounds", 8, 100000));
  if (bytes / peers < (1 << 20)) {
    die(absl::InvalidArgumentError("--mib-per-round must give every peer at least 1 MiB"));
  }
  EngineConfig cfg;
  cfg.rings = static_cast<int>(flag(argc, argv, "rings", EngineConfig{}.rings, 64));
  // Every target, the one-peer baseline included, has the same config: one ring thread
  // each by default, so that 32 in-process targets do not bring 64 threads.
  EngineConfig tc;
  tc.rings = static_cast<int>(flag(argc, argv, "target-rings", 1, 64));
  setenv("RINGXFER_LOG", "warn", 0);

  const int threads_before = thread_count();
  auto initiator = Engine::create("peers-initiator", cfg);
  if (!initiator.ok()) {
    die(initiator.status());
  }
  const int initiator_threads = thread_count() - threads_before;
  std::vector<char> src(bytes, 'x');
  MemoryDesc src_md = *(*initiator)->register_memory(src.data(), src.size());

  std::vector<std::unique_ptr<Engine>> targets;
  std::vector<std::vector<char>> mem(peers);
  std::vector<MemoryDesc> dsts;
  for (int i = 0; i < peers; ++i) {
    auto t = Engine::create("peers-target-" + std::to_string(i), tc);
    if (!t.ok()) {
      die(t.status());
    }
    mem[i].resize(bytes / peers);
    dsts.push_back(*(*t)->register_memory(mem[i].data(), mem[i].size()));
    if (absl::Status st = (*initiator)->register_remote_engine((*t)->desc()); !st.ok()) {
      die(st);
    }
    targets.push_back(std::move(*t));
  }
  // One more target that takes a whole round alone: the one-peer baseline.
  std::vector<char> big(bytes);
  auto big_target = Engine::create("peers-target-big", tc);
  if (!big_target.ok()) {
    die(big_target.status());
  }
  MemoryDesc big_md = *(*big_target)->register_memory(big.data(), big.size());
  if (absl::Status st = (*initiator)->register_remote_engine((*big_target)->desc()); !st.ok()) {
    die(st);
  }
  std::vector<MemoryDesc> single = {big_md};
  const int before_transfers = thread_count();
  run(**initiator, src_md, single, bytes, 1);  // warm up: connections
  run(**initiator, src_md, dsts, bytes, 1);
  const double one_peer = run(**initiator, src_md, single, bytes, rounds);
  const double many = run(**initiator, src_md, dsts, bytes, rounds);
  int iowq = 0;
  const int after_transfers = thread_count(&iowq);
  std::printf("initiator engine: %d ring thread(s) (%d threads created by Engine::create)\n",
              cfg.rings, initiator_threads);
  std::printf("threads in this process (all %d engines) before and after the transfers: %d -> %d\n",
              peers + 2, before_transfers, after_transfers);
  std::printf(
      "(each target engine runs %d ring thread(s) of its own, in this process; io_uring "
      "io-wq workers, the kernel's, not counted: %d at the end)\n",
      tc.rings, iowq);
  std::printf(
      "1 peer: %.2f GB/s; %d peers at once: %.2f GB/s aggregate; ratio %.2f (target >= 0.9)\n",
      one_peer, peers, many, many / one_peer);
  return 0;
}
