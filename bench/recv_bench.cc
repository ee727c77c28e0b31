// Does a multishot receive with a provided buffer ring pay for control frames?
//
// One round trip per iteration over loopback TCP: the ring sends an N-byte frame to a
// blocking echo thread and receives the reply, the way the transport's buffered control
// reader does. Two ways of receiving, on raw liburing rings set up alike
// (SINGLE_ISSUER + DEFER_TASKRUN where the kernel has them):
//   single-shot: a recv SQE into a fixed buffer is armed with each send, in the same
//     io_uring_enter (what the transport does: the re-arm costs an SQE, not a syscall);
//   multishot:   one RECV_MULTISHOT with IOSQE_BUFFER_SELECT stays armed; each CQE
//     names a provided buffer, whose bytes are copied out and the buffer handed back.
// Both report round trips per second and io_uring_enter calls per round trip.
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "bare_tcp.h"
#include "benchmark/benchmark.h"

namespace {

constexpr unsigned kBufs = 64;
constexpr unsigned kBufBytes = 16 << 10;
constexpr int kGroup = 7;

void nodelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

// A connected loopback pair whose far end echoes every `frame` bytes it reads.
struct EchoPair {
  int fd = -1;
  std::thread echo;

  explicit EchoPair(size_t frame) {
    const int l = bare_tcp::listen_on("127.0.0.1", "0", [](int) {});
    sockaddr_in a{};
    socklen_t alen = sizeof(a);
    getsockname(l, reinterpret_cast<sockaddr*>(&a), &alen);
    const std::string port = std::to_string(ntohs(a.sin_port));
    fd = bare_tcp::connect_to("127.0.0.1", port.c_str(), nodelay);
    const int s = accept(l, nullptr, nullptr);
    close(l);
    nodelay(s);
    echo = std::thread([s, frame] {
      std::vector<char> buf(frame);
      for (;;) {
        size_t have = 0;
        while (have < frame) {
          const ssize_t n = recv(s, buf.data() + have, frame - have, 0);
          if (n <= 0) {
            close(s);
            return;
          }
          have += static_cast<size_t>(n);
        }
        if (send(s, buf.data(), frame, MSG_NOSIGNAL) != static_cast<ssize_t>(frame)) {
          close(s);
          return;
        }
      }
    });
  }
  ~EchoPair() {
    shutdown(fd, SHUT_RDWR);
    close(fd);
    echo.join();
  }
};

struct RawRing {
  io_uring r{};
  bool ok = false;
  uint64_t enters = 0;
  RawRing() {
    io_uring_params p{};
    p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
    if (io_uring_queue_init_params(64, &r, &p) != 0) {
      p = io_uring_params{};
      ok = io_uring_queue_init_params(64, &r, &p) == 0;
    } else {
      ok = true;
    }
  }
  ~RawRing() {
    if (ok) {
      io_uring_queue_exit(&r);
    }
  }
  void enter() {
    io_uring_submit_and_wait(&r, 1);
    ++enters;
  }
};

void BM_RecvRoundTrip(benchmark::State& state) {
  const bool multishot = state.range(0) == 1;
  const size_t frame = static_cast<size_t>(state.range(1));
  RawRing ring;
  if (!ring.ok) {
    state.SkipWithError("io_uring_queue_init failed");
    return;
  }
  EchoPair pair(frame);
  std::vector<char> out(frame, 'x'), in(frame);
  // Single-shot: the receive buffer; multishot: the provided buffers and their ring.
  std::vector<char> bufs(size_t{kBufs} * kBufBytes);
  io_uring_buf_ring* br = nullptr;
  const size_t br_bytes = kBufs * sizeof(io_uring_buf);
  if (multishot) {
    void* mem = mmap(nullptr, br_bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    br = static_cast<io_uring_buf_ring*>(mem);
    io_uring_buf_reg reg{};
    reg.ring_addr = reinterpret_cast<uint64_t>(br);
    reg.ring_entries = kBufs;
    reg.bgid = kGroup;
    if (mem == MAP_FAILED || io_uring_register_buf_ring(&ring.r, &reg, 0) != 0) {
      state.SkipWithError("provided buffer ring refused");
      return;
    }
    io_uring_buf_ring_init(br);
    for (unsigned i = 0; i < kBufs; ++i) {
      io_uring_buf_ring_add(br, bufs.data() + size_t{i} * kBufBytes, kBufBytes, i,
                            io_uring_buf_ring_mask(kBufs), i);
    }
    io_uring_buf_ring_advance(br, kBufs);
  }
  auto arm_multishot = [&] {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring.r);
    io_uring_prep_recv_multishot(sqe, pair.fd, nullptr, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = kGroup;
    sqe->user_data = 2;
  };
  if (multishot) {
    arm_multishot();
  }
  bool failed = false;
  for (auto _ : state) {
    io_uring_sqe* send = io_uring_get_sqe(&ring.r);
    io_uring_prep_send(send, pair.fd, out.data(), frame, MSG_NOSIGNAL);
    send->user_data = 1;  // SQEs are reused: every one gets its own user_data
    if (!multishot) {
      io_uring_sqe* sqe = io_uring_get_sqe(&ring.r);
      io_uring_prep_recv(sqe, pair.fd, in.data(), frame, MSG_WAITALL);
      sqe->user_data = 2;
    }
    size_t got = 0;
    while (got < frame && !failed) {
      ring.enter();
      io_uring_cqe* cqe;
      unsigned head, seen = 0;
      io_uring_for_each_cqe(&ring.r, head, cqe) {
        ++seen;
        if (cqe->user_data != 2) {
          continue;  // the send
        }
        if (cqe->res <= 0) {
          failed = true;
          break;
        }
        if (multishot) {
          const unsigned id = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
          std::memcpy(in.data() + got, bufs.data() + size_t{id} * kBufBytes, cqe->res);
          io_uring_buf_ring_add(br, bufs.data() + size_t{id} * kBufBytes, kBufBytes, id,
                                io_uring_buf_ring_mask(kBufs), 0);
          io_uring_buf_ring_advance(br, 1);
          if ((cqe->flags & IORING_CQE_F_MORE) == 0) {
            arm_multishot();
          }
        }
        got += static_cast<size_t>(cqe->res);
      }
      io_uring_cq_advance(&ring.r, seen);
    }
    if (failed) {
      state.SkipWithError("receive failed");
      break;
    }
  }
  if (multishot) {
    io_uring_unregister_buf_ring(&ring.r, kGroup);
    munmap(br, br_bytes);
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
  state.SetLabel(multishot ? "multishot+provided buffers" : "single-shot recv re-armed");
  state.counters["enters_per_rt"] = benchmark::Counter(static_cast<double>(ring.enters) /
                                                       std::max<int64_t>(state.iterations(), 1));
}
BENCHMARK(BM_RecvRoundTrip)
    ->ArgNames({"multishot", "bytes"})
    ->ArgsProduct({{0, 1}, {64, 4096}})
    ->UseRealTime()
    ->MeasureProcessCPUTime();

}  // namespace

BENCHMARK_MAIN();
