// A target in a second process, killed with SIGKILL in the middle of transfers.
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "ringxfer/ringxfer.h"
#include "support/raw_socket.h"

extern char** environ;

namespace ringxfer {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

std::string unhex(const std::string& h) {
  std::string out;
  for (size_t i = 0; i + 1 < h.size(); i += 2) {
    out += static_cast<char>(std::stoi(h.substr(i, 2), nullptr, 16));
  }
  return out;
}

// The helper process and the descriptors it printed.
struct Target {
  pid_t pid = -1;
  int stdin_fd = -1;
  EngineDesc engine;
  MemoryDesc memory;

  bool start(uint16_t port, uint64_t bytes) {
    const char* path = std::getenv("RX_TEST_TARGET");
    if (path == nullptr) {
      return false;
    }
    int out[2], in[2];
    if (pipe(out) != 0 || pipe(in) != 0) {
      return false;
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    posix_spawn_file_actions_adddup2(&fa, in[0], 0);
    posix_spawn_file_actions_addclose(&fa, out[0]);
    posix_spawn_file_actions_addclose(&fa, in[1]);
    const std::string p = std::to_string(port), b = std::to_string(bytes);
    char* argv[] = {const_cast<char*>(path), const_cast<char*>(p.c_str()),
                    const_cast<char*>(b.c_str()), nullptr};
    const int rc = posix_spawn(&pid, path, &fa, nullptr, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(out[1]);
    close(in[0]);
    stdin_fd = in[1];
    if (rc != 0) {
      close(out[0]);
      return false;
    }
    FILE* f = fdopen(out[0], "r");
    char line[4096] = {};
    const bool got = std::fgets(line, sizeof(line), f) != nullptr;
    std::fclose(f);
    if (!got) {
      return false;
    }
    std::string s(line);
    const size_t sp = s.find(' ');
    auto e = EngineDesc::unpack(unhex(s.substr(0, sp)));
    auto m = MemoryDesc::unpack(unhex(s.substr(sp + 1, s.size() - sp - 2)));
    if (!e.ok() || !m.ok()) {
      return false;
    }
    engine = *e;
    memory = *m;
    return true;
  }
  void kill9() {
    if (pid > 0) {
      ::kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
      pid = -1;
    }
    if (stdin_fd >= 0) {
      close(stdin_fd);
      stdin_fd = -1;
    }
  }
  ~Target() { kill9(); }
};

TEST(EngineProcess, KilledTargetFailsPendingTransfersAndRestartedTargetServesAgain) {
  const uint16_t port = testing::closed_port();
  constexpr uint64_t kBytes = 64 << 20;
  Target target;
  ASSERT_TRUE(target.start(port, kBytes)) << "could not start $RX_TEST_TARGET";

  EngineConfig cfg;
  cfg.timeout = milliseconds(2000);
  cfg.stripes = 4;
  auto a = *Engine::create("initiator", cfg);
  ASSERT_TRUE(a->register_remote_engine(target.engine).ok());
  std::vector<char> src(kBytes, 'x');
  MemoryDesc ms = *a->register_memory(src.data(), src.size());

  // It works before the kill.
  StatusHandle first = *a->write(ms, 0, target.memory, 0, 4096, a->allocate_transfer_id());
  ASSERT_TRUE(first->wait(seconds(10)));
  ASSERT_TRUE(first->succeeded()) << first->status();

  // Many large transfers in flight, then SIGKILL.
  std::vector<StatusHandle> pending;
  for (int i = 0; i < 32; ++i) {
    const uint64_t off = uint64_t(i % 8) * (8 << 20);
    auto s = (i % 2 == 0)
                 ? a->write(ms, off, target.memory, off, 8 << 20, a->allocate_transfer_id())
                 : a->read(ms, off, target.memory, off, 8 << 20, a->allocate_transfer_id());
    ASSERT_TRUE(s.ok()) << s.status();
    pending.push_back(*s);
  }
  std::this_thread::sleep_for(milliseconds(2));
  target.kill9();
  const auto t0 = std::chrono::steady_clock::now();
  int failed = 0;
  for (const StatusHandle& s : pending) {
    ASSERT_TRUE(s->wait(seconds(10))) << "transfer " << s->transfer_id() << " hangs";
    if (s->failed()) {
      ++failed;
      EXPECT_TRUE(s->code() == absl::StatusCode::kUnavailable ||
                  s->code() == absl::StatusCode::kDeadlineExceeded)
          << s->status();
    }
  }
  const auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_GT(failed, 0) << "the kill came after every transfer had finished";
  EXPECT_LT(took, seconds(4)) << "pending transfers must fail within the timeout (2 s)";

  // A target restarted on the same port is reachable again.
  // The killed process's io_uring is torn down asynchronously by the kernel
  // (io_ring_exit_work), and its pending accept holds the listening socket until then:
  // the port frees up a moment after the process is gone.
  Target again;
  bool restarted = false;
  for (int i = 0; i < 100 && !restarted; ++i) {
    restarted = again.start(port, kBytes);
    if (!restarted) {
      again.kill9();
      std::this_thread::sleep_for(milliseconds(50));
    }
  }
  ASSERT_TRUE(restarted) << "port " << port << " never became free again";
  ASSERT_TRUE(a->register_remote_engine(again.engine).ok());
  std::vector<char> back(1 << 20, 0);
  MemoryDesc mb = *a->register_memory(back.data(), back.size());
  StatusHandle w = *a->write(ms, 0, again.memory, 0, 1 << 20, a->allocate_transfer_id());
  ASSERT_TRUE(w->wait(seconds(10)));
  EXPECT_TRUE(w->succeeded()) << w->status();
  StatusHandle r = *a->read(mb, 0, again.memory, 0, 1 << 20, a->allocate_transfer_id());
  ASSERT_TRUE(r->wait(seconds(10)));
  EXPECT_TRUE(r->succeeded()) << r->status();
  EXPECT_EQ(std::memcmp(back.data(), src.data(), back.size()), 0);
}

}  // namespace
}  // namespace ringxfer
