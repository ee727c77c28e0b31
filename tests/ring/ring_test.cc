#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <future>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "ring/event_loop.h"
#include "ring/ring.h"
#include "ring/tag.h"
#include "support/memlock.h"

namespace ringxfer::ring {
namespace {

TEST(RingTag, PacksAndUnpacksEveryField) {
  const Tag t{7, 3, 0xbeef, 0xdeadbeef};
  EXPECT_EQ(Tag::unpack(t.pack()), t);
  EXPECT_NE((Tag{1, 0, 0, 0}.pack()), 0u);
  EXPECT_NE((Tag{254, 255, 0xffff, 0xffffffff}.pack()), kTagIgnore);
  EXPECT_EQ((Tag::unpack(Tag{200, 1, 2, 3}.pack()).kind), 200);
}

std::unique_ptr<Ring> make_ring(unsigned entries = 64) {
  absl::StatusOr<std::unique_ptr<Ring>> r = Ring::create(RingOptions{.entries = entries});
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? std::move(*r) : nullptr;
}

TEST(Ring, ReportsFeatures) {
  auto r = make_ring();
  ASSERT_NE(r, nullptr);
  const RingFeatures& f = r->features();
  EXPECT_TRUE(f.ext_arg);
  EXPECT_TRUE(f.single_issuer || f.coop_taskrun) << f.describe();
  EXPECT_FALSE(f.describe().empty());
}

TEST(Ring, SubmitsBatchOfNopsInOneEnter) {
  auto r = make_ring();
  ASSERT_NE(r, nullptr);
  for (uint32_t i = 0; i < 32; ++i) {
    io_uring_prep_nop(r->sqe(Tag{5, 1, 0, i}.pack()));
  }
  EXPECT_EQ(r->queued(), 32u);
  std::vector<bool> seen(32, false);
  unsigned got = 0;
  while (got < 32) {
    ASSERT_EQ(r->submit_and_wait(1'000'000'000), 0);
    got += r->reap([&](const io_uring_cqe& cqe) {
      const Tag t = Tag::unpack(cqe.user_data);
      EXPECT_EQ(t.kind, 5);
      EXPECT_EQ(cqe.res, 0);
      seen.at(t.slot) = true;
    });
  }
  for (bool s : seen) {
    EXPECT_TRUE(s);
  }
  EXPECT_EQ(r->counters().sqes, 32u);
  EXPECT_EQ(r->counters().cqes, 32u);
  EXPECT_EQ(r->counters().enters, 1u);  // one enter submitted 32 and waited
}

TEST(Ring, FlushesWhenSubmissionQueueIsFull) {
  auto r = make_ring(8);
  ASSERT_NE(r, nullptr);
  for (uint32_t i = 0; i < 20; ++i) {
    io_uring_prep_nop(r->sqe(Tag{5, 0, 0, i}.pack()));
  }
  EXPECT_GE(r->counters().full_flushes, 2u);
  unsigned got = 0;
  for (int tries = 0; got < 20 && tries < 100; ++tries) {
    ASSERT_EQ(r->submit_and_wait(100'000'000), 0);
    got += r->reap([](const io_uring_cqe&) {});
  }
  EXPECT_EQ(got, 20u);
}

// Far more operations than the completion queue holds, taken without a reap in between:
// the ring must not spin on a submit the kernel refuses for an overcommitted CQ, and
// every completion must still come, exactly once (STYLE.md section 10, 1).
TEST(Ring, OvercommittedCompletionQueueIsDrainedNotSpunOn) {
  auto r = make_ring(8);  // 8 SQEs, 32 CQEs
  ASSERT_NE(r, nullptr);
  constexpr uint32_t kOps = 4000;
  const auto t0 = std::chrono::steady_clock::now();
  for (uint32_t i = 0; i < kOps; ++i) {
    io_uring_prep_nop(r->sqe(Tag{5, 0, 0, i}.pack()));
  }
  std::vector<int> seen(kOps, 0);
  unsigned got = 0;
  for (int tries = 0; got < kOps && tries < 1000; ++tries) {
    ASSERT_EQ(r->submit_and_wait(10'000'000), 0);
    got += r->reap([&](const io_uring_cqe& cqe) { ++seen.at(Tag::unpack(cqe.user_data).slot); });
  }
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
  EXPECT_EQ(got, kOps);
  for (uint32_t i = 0; i < kOps; ++i) {
    ASSERT_EQ(seen[i], 1) << "operation " << i;
  }
  EXPECT_EQ(r->inflight(), 0u);
}

TEST(Ring, WaitTimesOutWithoutError) {
  auto r = make_ring();
  ASSERT_NE(r, nullptr);
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(r->submit_and_wait(20'000'000), 0);
  const auto waited = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(waited, std::chrono::milliseconds(15));
  EXPECT_EQ(r->reap([](const io_uring_cqe&) {}), 0u);
}

// A connected TCP pair on loopback.
struct TcpPair {
  int a = -1, b = -1;
  TcpPair() {
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    EXPECT_EQ(bind(l, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    EXPECT_EQ(listen(l, 1), 0);
    EXPECT_EQ(getsockname(l, reinterpret_cast<sockaddr*>(&addr), &len), 0);
    a = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    EXPECT_EQ(connect(a, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    b = accept4(l, nullptr, nullptr, SOCK_CLOEXEC);
    close(l);
  }
  ~TcpPair() {
    close(a);
    close(b);
  }
};

TEST(Ring, SendsAndReceivesOnTcpSocket) {
  auto r = make_ring();
  ASSERT_NE(r, nullptr);
  TcpPair p;
  std::vector<char> out(100000), in(100000, 0);
  for (size_t i = 0; i < out.size(); ++i) {
    out[i] = static_cast<char>(i * 7 + 1);
  }
  io_uring_prep_send(r->sqe(Tag{9, 1, 0, 0}.pack()), p.a, out.data(), out.size(), 0);
  io_uring_prep_recv(r->sqe(Tag{9, 2, 0, 0}.pack()), p.b, in.data(), in.size(), MSG_WAITALL);
  int sent = -1, received = -1;
  for (int tries = 0; (sent < 0 || received < 0) && tries < 100; ++tries) {
    ASSERT_EQ(r->submit_and_wait(100'000'000), 0);
    r->reap([&](const io_uring_cqe& cqe) {
      (Tag::unpack(cqe.user_data).op == 1 ? sent : received) = cqe.res;
    });
  }
  EXPECT_EQ(sent, 100000);
  EXPECT_EQ(received, 100000);
  EXPECT_EQ(in, out);
}

TEST(Ring, ZeroCopySendPostsNotificationAndReportsCopy) {
  auto r = make_ring();
  ASSERT_NE(r, nullptr);
  if (!r->features().send_zc) {
    GTEST_SKIP() << "kernel has no IORING_OP_SEND_ZC";
  }
  TcpPair p;
  std::vector<char> out(256 * 1024, 'z'), in(out.size());
  io_uring_prep_send_zc(r->sqe(Tag{9, 1, 0, 0}.pack()), p.a, out.data(), out.size(), 0,
                        kSendZcReportUsage);
  io_uring_prep_recv(r->sqe(Tag{9, 2, 0, 0}.pack()), p.b, in.data(), in.size(), MSG_WAITALL);
  bool got_more = false, got_notif = false, copied = false;
  int sent = -1, received = -1;
  for (int tries = 0; (!got_notif || received < 0) && tries < 100; ++tries) {
    ASSERT_EQ(r->submit_and_wait(100'000'000), 0);
    r->reap([&](const io_uring_cqe& cqe) {
      if (Tag::unpack(cqe.user_data).op == 2) {
        received = cqe.res;
      } else if (cqe.flags & IORING_CQE_F_NOTIF) {
        got_notif = true;
        copied = (static_cast<uint32_t>(cqe.res) & kNotifUsageZcCopied) != 0;
      } else {
        sent = cqe.res;
        got_more = (cqe.flags & IORING_CQE_F_MORE) != 0;
      }
    });
  }
  EXPECT_EQ(sent, static_cast<int>(out.size()));
  EXPECT_TRUE(got_more) << "a zero-copy send announces its notification with F_MORE";
  EXPECT_TRUE(got_notif);
  EXPECT_EQ(received, static_cast<int>(out.size()));
  // Loopback delivers by copying the pages: the kernel says so in the notification.
  EXPECT_TRUE(copied);
}

// Runs `send` then a receive of `n` bytes on p.b and returns what each CQE said.
std::pair<int, int> send_and_receive(Ring& r, int recv_fd, char* in, size_t n) {
  io_uring_sqe* rs = r.sqe(Tag{9, 2, 0, 0}.pack());
  io_uring_prep_recv(rs, recv_fd, in, n, MSG_WAITALL);
  int sent = -1, received = -1;
  for (int tries = 0; (sent < 0 || received < 0) && tries < 100; ++tries) {
    EXPECT_EQ(r.submit_and_wait(100'000'000), 0);
    r.reap([&](const io_uring_cqe& cqe) {
      if (Tag::unpack(cqe.user_data).op == 2) {
        received = cqe.res;
      } else if ((cqe.flags & IORING_CQE_F_NOTIF) == 0) {
        sent = cqe.res;
      }
    });
  }
  return {sent, received};
}

TEST(Ring, RegisteredFilesCarrySendsAndReceives) {
  auto r = make_ring();
  ASSERT_NE(r, nullptr);
  ASSERT_TRUE(r->features().fixed_files);
  TcpPair p;
  const int fa = r->install_file(p.a), fb = r->install_file(p.b);
  ASSERT_GE(fa, 0);
  ASSERT_GE(fb, 0);
  EXPECT_NE(fa, fb);
  std::vector<char> out(70000, 'f'), in(out.size());
  io_uring_sqe* s = r->sqe(Tag{9, 1, 0, 0}.pack());
  io_uring_prep_send(s, p.a, out.data(), out.size(), 0);
  Ring::use_file(s, fa);
  EXPECT_EQ(s->fd, fa);
  EXPECT_NE(s->flags & IOSQE_FIXED_FILE, 0);
  // The receive names the plain descriptor: both ways work side by side.
  EXPECT_EQ(send_and_receive(*r, p.b, in.data(), in.size()), std::make_pair(70000, 70000));
  EXPECT_EQ(in, out);
  r->remove_file(fa);
  r->remove_file(fb);
  // A freed slot is handed out again.
  const int again = r->install_file(p.a);
  EXPECT_TRUE(again == fa || again == fb) << again;
  r->remove_file(again);
  // A slot < 0 leaves the SQE on its plain descriptor.
  io_uring_sqe plain{};
  plain.fd = 42;
  Ring::use_file(&plain, -1);
  EXPECT_EQ(plain.fd, 42);
  EXPECT_EQ(plain.flags & IOSQE_FIXED_FILE, 0);
}

TEST(Ring, RegisteredBufferFeedsAZeroCopySend) {
  auto r = make_ring();
  ASSERT_NE(r, nullptr);
  if (!r->features().send_zc || !r->features().fixed_buffers) {
    GTEST_SKIP() << "kernel lacks SEND_ZC or sparse registered buffers";
  }
  TcpPair p;
  std::vector<char> out(1 << 20), in(256 * 1024);
  for (size_t i = 0; i < out.size(); ++i) {
    out[i] = static_cast<char>(i * 13 + 5);
  }
  absl::StatusOr<int> slot = r->install_buffer(out.data(), out.size());
  ASSERT_TRUE(slot.ok()) << slot.status();
  // A piece from the middle of the registered buffer.
  io_uring_prep_send_zc_fixed(r->sqe(Tag{9, 1, 0, 0}.pack()), p.a, out.data() + 4096, in.size(), 0,
                              0, static_cast<unsigned>(*slot));
  EXPECT_EQ(send_and_receive(*r, p.b, in.data(), in.size()),
            std::make_pair(static_cast<int>(in.size()), static_cast<int>(in.size())));
  EXPECT_EQ(std::memcmp(in.data(), out.data() + 4096, in.size()), 0);
  r->remove_buffer(*slot);
  // The kernel's limit is 1 GiB per buffer; refused before the kernel is asked.
  absl::StatusOr<int> huge = r->install_buffer(out.data(), (size_t{1} << 30) + 1);
  EXPECT_EQ(huge.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(Ring, MemlockLimitRefusesALargeRegisteredBufferCleanly) {
  testing::MemlockLimit limit(8 << 20);  // a non-root user's default here
  ASSERT_TRUE(limit.ok());
  std::vector<char> big(64 << 20), small(1 << 20);
  absl::Status big_status;
  bool small_ok = false, dropped = false;
  std::thread t([&] {
    dropped = testing::drop_ipc_lock_on_this_thread();
    auto r = make_ring();
    if (r == nullptr || !r->features().fixed_buffers) {
      return;
    }
    absl::StatusOr<int> b = r->install_buffer(big.data(), big.size());
    big_status = b.status();
    absl::StatusOr<int> s = r->install_buffer(small.data(), small.size());
    small_ok = s.ok();
  });
  t.join();
  ASSERT_TRUE(dropped);
  EXPECT_EQ(big_status.code(), absl::StatusCode::kResourceExhausted) << big_status;
  EXPECT_NE(big_status.message().find("RLIMIT_MEMLOCK"), std::string_view::npos) << big_status;
  EXPECT_TRUE(small_ok) << "1 MiB fits in the limit";
}

std::unique_ptr<EventLoop> make_loop() {
  absl::StatusOr<std::unique_ptr<EventLoop>> l = EventLoop::start(RingOptions{}, "rx-test");
  EXPECT_TRUE(l.ok()) << l.status();
  return l.ok() ? std::move(*l) : nullptr;
}

TEST(EventLoop, RunsTasksPostedFromManyThreads) {
  auto loop = make_loop();
  ASSERT_NE(loop, nullptr);
  std::atomic<int> ran{0};
  std::atomic<bool> wrong_thread{false};
  constexpr int kThreads = 4, kPerThread = 5000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kPerThread; ++i) {
        loop->post([&] {
          if (!loop->in_loop_thread()) {
            wrong_thread = true;
          }
          ran.fetch_add(1, std::memory_order_relaxed);
        });
      }
    });
  }
  for (auto& t : threads) {
    t.join();
  }
  std::promise<void> done;
  loop->post([&] { done.set_value(); });
  ASSERT_EQ(done.get_future().wait_for(std::chrono::seconds(10)), std::future_status::ready);
  EXPECT_EQ(ran.load(), kThreads * kPerThread);
  EXPECT_FALSE(wrong_thread.load());
  // Wake-ups are syscalls; a busy loop must need far fewer of them than tasks.
  EXPECT_LT(loop->counters().wakeups, static_cast<uint64_t>(kThreads * kPerThread));
}

TEST(EventLoop, SleepingLoopWakesForAPost) {
  auto loop = make_loop();
  ASSERT_NE(loop, nullptr);
  for (int i = 0; i < 20; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));  // let it fall asleep
    std::promise<void> done;
    loop->post([&] { done.set_value(); });
    ASSERT_EQ(done.get_future().wait_for(std::chrono::seconds(5)), std::future_status::ready)
        << "post " << i << " did not wake the loop";
  }
  EXPECT_GE(loop->counters().wakeups, 1u);
}

TEST(EventLoop, CallReturnsAfterTheTaskRanOnTheLoopThread) {
  auto loop = make_loop();
  ASSERT_NE(loop, nullptr);
  for (int i = 0; i < 50; ++i) {
    int seen = 0;  // plain int: the call's return must order the write before the read
    bool on_loop = false;
    ASSERT_TRUE(loop->call([&] {
      std::this_thread::sleep_for(std::chrono::microseconds(i % 5 == 0 ? 500 : 0));
      on_loop = loop->in_loop_thread();
      seen = i + 1;
    }));
    EXPECT_EQ(seen, i + 1) << "call " << i << " returned before its task ran";
    EXPECT_TRUE(on_loop);
  }
  // From the loop thread it runs at once, before the task that called it returns.
  std::atomic<int> order{0};
  ASSERT_TRUE(loop->call([&] {
    loop->call([&] { order.store(1); });
    order.store(order.load() == 1 ? 2 : -1);
  }));
  EXPECT_EQ(order.load(), 2);
  loop->stop();
  EXPECT_FALSE(loop->call([] {})) << "a stopped loop runs nothing";
}

struct Recorder : CompletionHandler {
  std::atomic<int> count{0};
  std::atomic<uint32_t> last_slot{0};
  void on_completion(Tag tag, int32_t res, uint32_t) noexcept override {
    if (res == 0 && tag.op == 4) {
      last_slot = tag.slot;
      count.fetch_add(1);
    }
  }
};

// A loop that has stopped runs what is still handed to it on the thread that stopped it
// (or posts), instead of dropping it: a dropped task loses a callback or leaks the
// descriptor it carries.
TEST(EventLoop, TasksPostedToAStoppedLoopStillRun) {
  auto loop = EventLoop::start(RingOptions{}, "rx-test");
  ASSERT_TRUE(loop.ok()) << loop.status();
  std::atomic<int> ran{0};
  (*loop)->stop();
  (*loop)->post([&] { ran.fetch_add(1); });
  EXPECT_EQ(ran.load(), 1) << "a task posted after stop() was dropped";
  // A late task that posts again (a callback starting another transfer) runs that too.
  (*loop)->post([&, l = loop->get()] {
    ran.fetch_add(1);
    l->post([&] { ran.fetch_add(1); });
  });
  EXPECT_EQ(ran.load(), 3);
  loop->reset();
}

// drain_and_stop keeps the loop turning until its owner says it is idle, then runs the
// owner's last step and every task still queued on the loop thread.
TEST(EventLoop, DrainRunsUntilIdleThenTheLastStepOnTheLoopThread) {
  auto loop = EventLoop::start(RingOptions{}, "rx-test");
  ASSERT_TRUE(loop.ok()) << loop.status();
  std::atomic<int> turns{0};
  std::atomic<bool> last_on_loop{false};
  (*loop)->drain_and_stop([&] { return turns.fetch_add(1) >= 3; },
                          [&, l = loop->get()] { last_on_loop = l->in_loop_thread(); },
                          1'000'000'000);
  EXPECT_GE(turns.load(), 4);
  EXPECT_TRUE(last_on_loop.load());
}

TEST(EventLoop, DispatchesCompletionsByKind) {
  auto loop = make_loop();
  ASSERT_NE(loop, nullptr);
  Recorder rec;
  loop->post([&] {
    loop->set_handler(7, &rec);
    for (uint32_t i = 1; i <= 10; ++i) {
      io_uring_prep_nop(loop->ring().sqe(Tag{7, 4, 0, i}.pack()));
    }
  });
  for (int i = 0; i < 500 && rec.count.load() < 10; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  EXPECT_EQ(rec.count.load(), 10);
  EXPECT_EQ(loop->counters().stale, 0u);
}

TEST(EventLoop, CallsTickPeriodically) {
  auto loop = make_loop();
  ASSERT_NE(loop, nullptr);
  std::atomic<int> ticks{0};
  loop->post([&] { loop->set_tick([&] { ticks.fetch_add(1); }, 5'000'000); });
  for (int i = 0; i < 1000 && ticks.load() < 5; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  EXPECT_GE(ticks.load(), 5);
}

}  // namespace
}  // namespace ringxfer::ring
