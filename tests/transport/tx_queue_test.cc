// TxQueue without sockets: every short send at every byte, frames queued from inside a
// completion, items retired only after the send that carried their last byte.
#include "transport/tx_queue.h"

#include <cstring>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace ringxfer::transport::detail {
namespace {

// Items whose bytes are known: a frame of `head` bytes and payload pieces.
struct Fixture {
  std::vector<std::vector<std::byte>> payloads;  // owned here; items point into them
  std::vector<std::byte> expected;               // the stream, item after item
  uint8_t next = 1;

  SendItem item(size_t head, std::vector<size_t> pieces, bool zero_copy = false) {
    SendItem it;
    it.frame.resize(head);
    for (std::byte& b : it.frame) {
      b = std::byte{next++};
    }
    expected.insert(expected.end(), it.frame.begin(), it.frame.end());
    for (size_t n : pieces) {
      payloads.emplace_back(n);
      for (std::byte& b : payloads.back()) {
        b = std::byte{next++};
      }
      expected.insert(expected.end(), payloads.back().begin(), payloads.back().end());
    }
    it.iov.push_back(iovec{it.frame.data(), it.frame.size()});
    for (size_t i = payloads.size() - pieces.size(); i < payloads.size(); ++i) {
      it.iov.push_back(iovec{payloads[i].data(), payloads[i].size()});
    }
    it.payload = head;  // used as the item's name below
    it.zero_copy = zero_copy;
    return it;
  }
};

// Appends the first `n` bytes of a gathered send to `stream`.
void take(const TxQueue::Send& s, size_t n, std::vector<std::byte>& stream) {
  for (const iovec& v : s.iov) {
    const size_t k = std::min(n, v.iov_len);
    const auto* p = static_cast<const std::byte*>(v.iov_base);
    stream.insert(stream.end(), p, p + k);
    n -= k;
  }
}

TEST(TxQueue, GathersWholeItemsAndRetiresThemInOrderAfterTheirSend) {
  Fixture f;
  TxQueue q;
  q.push(f.item(3, {5}));
  q.push(f.item(4, {}));
  q.push(f.item(6, {1, 2}));
  const TxQueue::Send s = q.gather(false);
  EXPECT_EQ(s.items, 3u);
  EXPECT_EQ(s.iov.size(), 6u);
  EXPECT_EQ(s.bytes, f.expected.size());
  EXPECT_TRUE(q.busy());
  EXPECT_EQ(q.gather(false).items, 0u) << "a second send while one is in flight";
  std::vector<SendItem> retired;
  q.complete(s.bytes, retired);
  ASSERT_EQ(retired.size(), 3u);
  EXPECT_EQ(retired[0].payload, 3u);
  EXPECT_EQ(retired[1].payload, 4u);
  EXPECT_EQ(retired[2].payload, 6u);
  EXPECT_TRUE(q.empty());
  EXPECT_FALSE(q.busy());
}

// Every first send cut at every byte, then the rest sent whole or cut again: the stream
// carries every byte exactly once, in order, and an item is retired exactly when its
// last byte has been sent.
TEST(TxQueue, ShortSendsAtEveryByteSendEveryByteOnce) {
  for (size_t cut = 0; cut <= 24; ++cut) {
    for (size_t cut2 = 0; cut2 <= 24; cut2 += 5) {
      SCOPED_TRACE("cut " + std::to_string(cut) + ", then " + std::to_string(cut2));
      Fixture f;
      TxQueue q;
      q.push(f.item(4, {3, 2}));  // bytes 0..8
      q.push(f.item(5, {}));      // 9..13
      q.push(f.item(2, {8}));     // 14..23
      const size_t ends[] = {9, 14, 24};
      std::vector<std::byte> stream;
      size_t retired_total = 0;
      size_t sends = 0;
      std::vector<size_t> cuts = {cut, cut2};
      while (!q.empty()) {
        ASSERT_LT(++sends, 64u) << "no progress";
        const TxQueue::Send s = q.gather(false);
        ASSERT_GT(s.items, 0u);
        const size_t n = sends <= cuts.size() ? std::min(cuts[sends - 1], s.bytes) : s.bytes;
        take(s, n, stream);
        std::vector<SendItem> retired;
        q.complete(n, retired);
        retired_total += retired.size();
        size_t finished = 0;
        for (size_t e : ends) {
          finished += stream.size() >= e ? 1 : 0;
        }
        EXPECT_EQ(retired_total, finished) << "after " << stream.size() << " bytes";
      }
      EXPECT_EQ(stream, f.expected);
    }
  }
}

// Handling a retired item queues a frame on the same connection and starts the next
// send, as a completion that answers a request does: the new send carries only bytes
// not sent before, and never an item that was retired.
TEST(TxQueue, FramesQueuedFromInsideACompletionAreSentOnceAfterTheRest) {
  for (size_t cut = 0; cut <= 20; ++cut) {
    SCOPED_TRACE("cut " + std::to_string(cut));
    Fixture f;
    TxQueue q;
    q.push(f.item(6, {4}));  // 0..9
    q.push(f.item(5, {5}));  // 10..19
    std::vector<std::byte> stream;
    TxQueue::Send s = q.gather(false);
    take(s, cut, stream);
    std::vector<SendItem> retired;
    q.complete(cut, retired);
    bool pushed = false;
    for (SendItem& item : retired) {
      (void)item;
      q.push(f.item(3, {}));  // the "completion" frame
      pushed = true;
      const TxQueue::Send next = q.gather(false);
      ASSERT_GT(next.items, 0u);
      take(next, next.bytes, stream);
      std::vector<SendItem> more;
      q.complete(next.bytes, more);
      for (const SendItem& m : more) {
        for (const SendItem& r : retired) {
          EXPECT_NE(&m, &r);
        }
      }
    }
    while (!q.empty()) {
      const TxQueue::Send next = q.gather(false);
      take(next, next.bytes, stream);
      std::vector<SendItem> more;
      q.complete(next.bytes, more);
    }
    // Completion frames join the stream after the bytes already queued.
    std::vector<std::byte> want(f.expected.begin(), f.expected.begin() + 20);
    std::vector<std::byte> tail(f.expected.begin() + 20, f.expected.end());
    if (pushed) {
      // Items retired by the first send were handled before the rest was sent.
      EXPECT_EQ(stream.size(), f.expected.size());
      std::vector<std::byte> sorted = stream, all = f.expected;
      std::sort(sorted.begin(), sorted.end());
      std::sort(all.begin(), all.end());
      EXPECT_EQ(sorted, all) << "a byte was sent twice or not at all";
    } else {
      EXPECT_EQ(stream, f.expected);
    }
    // The first 20 bytes keep their order whatever was queued in between.
    std::vector<std::byte> firsts;
    for (std::byte b : stream) {
      if (std::to_integer<int>(b) <= std::to_integer<int>(want.back()) &&
          std::find(want.begin(), want.end(), b) != want.end()) {
        firsts.push_back(b);
      }
    }
    EXPECT_EQ(firsts, want);
  }
}

// push_next puts a frame behind whatever has started (in flight, or the partly sent
// front after a short send) and ahead of everything that has not: at every cut of the
// first send, the stream is the started items whole, then the new frame, then the rest.
TEST(TxQueue, PushNextGoesAheadOfEveryItemNotStarted) {
  for (size_t cut = 0; cut <= 14; ++cut) {
    for (bool inflight : {true, false}) {
      SCOPED_TRACE("cut " + std::to_string(cut) + (inflight ? ", in flight" : ", completed"));
      Fixture f;
      TxQueue q;
      q.push(f.item(4, {3}));  // bytes 0..6: the hello
      q.push(f.item(5, {2}));  // 7..13: a request queued behind it
      const TxQueue::Send s = q.gather(/*alone=*/true);
      ASSERT_EQ(s.items, 1u);
      std::vector<std::byte> stream;
      const size_t n = std::min<size_t>(cut, s.bytes);
      take(s, n, stream);
      std::vector<SendItem> retired;
      if (!inflight) {
        q.complete(n, retired);
      }
      Fixture g;
      g.next = 200;
      q.push_next(g.item(3, {}));  // the answer
      if (inflight) {
        q.complete(n, retired);
      }
      while (!q.empty()) {
        const TxQueue::Send t = q.gather(false);
        ASSERT_GT(t.items, 0u);
        take(t, t.bytes, stream);
        q.complete(t.bytes, retired);
      }
      // A send that completed having moved nothing left the hello unstarted: the new
      // frame goes ahead of it too.
      const size_t started = inflight || n > 0 ? 7 : 0;
      std::vector<std::byte> want(f.expected.begin(), f.expected.begin() + started);
      want.insert(want.end(), g.expected.begin(), g.expected.end());
      want.insert(want.end(), f.expected.begin() + started, f.expected.end());
      EXPECT_EQ(stream, want);
    }
  }
}

TEST(TxQueue, ZeroCopyItemsGoAloneAndStopAGather) {
  Fixture f;
  TxQueue q;
  q.push(f.item(2, {3}));
  q.push(f.item(2, {3}, /*zero_copy=*/true));
  q.push(f.item(2, {3}));
  TxQueue::Send s = q.gather(false);
  EXPECT_EQ(s.items, 1u) << "a zero-copy item joined a copied send";
  std::vector<SendItem> r;
  q.complete(s.bytes, r);
  s = q.gather(true);
  EXPECT_EQ(s.items, 1u);
  EXPECT_EQ(s.bytes, 5u);
  q.complete(s.bytes, r);
  s = q.gather(false);
  EXPECT_EQ(s.items, 1u);
  q.complete(s.bytes, r);
  EXPECT_EQ(r.size(), 3u);
}

TEST(TxQueue, GathersAtMostIovMaxIovecs) {
  Fixture f;
  TxQueue q;
  for (int i = 0; i < 600; ++i) {
    q.push(f.item(1, {1}));
  }
  const TxQueue::Send s = q.gather(false);
  EXPECT_LE(s.iov.size(), TxQueue::kIovMax);
  EXPECT_EQ(s.items, TxQueue::kIovMax / 2);
  std::vector<std::byte> stream;
  take(s, s.bytes, stream);
  std::vector<SendItem> r;
  q.complete(s.bytes, r);
  while (!q.empty()) {
    const TxQueue::Send n = q.gather(false);
    take(n, n.bytes, stream);
    q.complete(n.bytes, r);
  }
  EXPECT_EQ(stream, f.expected);
  EXPECT_EQ(r.size(), 600u);
}

TEST(TxQueue, DroppingKeepsTheSendInFlightAndStartedItems) {
  Fixture f;
  TxQueue q;
  q.push(f.item(4, {4}));
  q.push(f.item(4, {4}));
  TxQueue::Send s = q.gather(true);  // the first item only
  ASSERT_EQ(s.items, 1u);
  q.push(f.item(4, {4}));
  std::vector<SendItem> dropped;
  q.drop_unstarted_if([](const SendItem& it) { return it.frame.size() == 4; }, dropped);
  EXPECT_EQ(dropped.size(), 2u) << "only waiting, unstarted items are dropped";
  EXPECT_EQ(q.size(), 1u);
  std::vector<SendItem> r;
  q.complete(3, r);  // a short send: the item has started
  EXPECT_TRUE(r.empty());
  q.push(f.item(2, {}));
  dropped.clear();
  q.drop_unstarted_if([](const SendItem&) { return true; }, dropped);
  EXPECT_EQ(dropped.size(), 1u) << "the started item must finish";
  s = q.gather(false);
  dropped.clear();
  q.drop_waiting(dropped);
  EXPECT_EQ(dropped.size(), 0u) << "the item in flight was dropped";
  q.cancel_inflight();  // its CQE came with an error
  q.drop_all(dropped);
  EXPECT_EQ(dropped.size(), 1u);
  EXPECT_TRUE(q.empty());
}

// frame_bytes() counts the frames of every queued item, through every way an item
// leaves: retired after its send, dropped unstarted, dropped waiting, dropped at close.
TEST(TxQueue, CountsTheFrameBytesOfEveryQueuedItem) {
  Fixture f;
  TxQueue q;
  q.push(f.item(10, {100}));
  q.push(f.item(20, {}));
  q.push_next(f.item(5, {}));
  EXPECT_EQ(q.frame_bytes(), 35u);  // payload is not counted
  TxQueue::Send s = q.gather(false);
  std::vector<SendItem> r;
  q.complete(5 + 10 + 50, r);  // the first item whole, the second half
  EXPECT_EQ(r.size(), 1u);
  EXPECT_EQ(q.frame_bytes(), 30u);
  s = q.gather(false);
  q.complete(s.bytes, r);
  EXPECT_EQ(q.frame_bytes(), 0u);
  q.push(f.item(7, {}));
  q.push(f.item(8, {}));
  q.push(f.item(9, {}));
  std::vector<SendItem> dropped;
  q.drop_unstarted_if([](const SendItem& it) { return it.frame.size() == 8; }, dropped);
  EXPECT_EQ(q.frame_bytes(), 16u);
  s = q.gather(true);
  q.drop_waiting(dropped);
  EXPECT_EQ(q.frame_bytes(), 7u);
  q.cancel_inflight();
  q.drop_all(dropped);
  EXPECT_EQ(q.frame_bytes(), 0u);
}

}  // namespace
}  // namespace ringxfer::transport::detail
