// RxFramer without sockets: a stream of frames cut at every length, in both modes, with
// payloads placed, dropped and parked.
#include "transport/rx_framer.h"

#include <cstring>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "wire/codec.h"

namespace ringxfer::transport::detail {
namespace {

using Bytes = std::vector<std::byte>;
using Event = RxFramer::Event;

Bytes completion(uint64_t id) {
  wire::Completion c;
  c.transfer_id = id;
  c.seq = static_cast<uint32_t>(id);
  c.op = wire::OpKind::kWrite;
  Bytes b(wire::completion_frame_bytes(0));
  EXPECT_TRUE(wire::encode_completion(c, b).ok());
  return b;
}

Bytes data(uint64_t id, size_t n, uint8_t fill) {
  Bytes b(wire::kDataFrameBytes);
  EXPECT_TRUE(wire::encode_data(wire::DataHeader{id, 0, 0, n, 1}, b).ok());
  b.resize(b.size() + n, std::byte{fill});
  return b;
}

Bytes batch(uint64_t id, size_t a, size_t b2, uint8_t fill) {
  const std::vector<wire::BatchEntry> e = {{0, static_cast<uint32_t>(a), 0},
                                           {1, static_cast<uint32_t>(b2), 0}};
  Bytes b(wire::data_batch_frame_bytes(2));
  EXPECT_TRUE(wire::encode_data_batch(id, e, b, 1).ok());
  for (size_t i = 0; i < a + b2; ++i) {
    b.push_back(std::byte{static_cast<uint8_t>(fill + i)});
  }
  return b;
}

// What a connection saw: one line per frame and its payload's bytes.
struct Seen {
  std::vector<std::string> frames;
  std::vector<Bytes> payloads;
};

// Feeds `stream` to a framer, each receive returning at most `cut` bytes (and never more
// than the framer asked for), places payloads of frames with an even transfer id and
// drops the others. With `part` > 0 a placed payload goes through one buffer of `part`
// bytes, part after part (as GPU staging receives through a slab). Returns false if the
// framer got stuck or reported a bad frame.
bool run(RxFramer& f, const Bytes& stream, size_t cut, Seen& seen, std::string* bad = nullptr,
         size_t part = 0) {
  size_t at = 0;
  std::vector<Bytes> dest_store;
  Bytes slab(part);
  size_t given = 0;  // bytes of `slab` the part in progress covers
  auto next_part = [&] {
    given = static_cast<size_t>(std::min<uint64_t>(part, f.payload_left()));
    return std::vector<iovec>{iovec{slab.data(), given}};
  };
  auto take_part = [&] {
    dest_store.back().insert(dest_store.back().end(), slab.begin(),
                             slab.begin() + static_cast<std::ptrdiff_t>(given));
  };
  for (int guard = 0; guard < 100000; ++guard) {
    const Event e = f.step();
    switch (e) {
      case Event::kFrame: {
        const wire::FrameHeader& h = f.header();
        seen.frames.push_back(std::to_string(static_cast<int>(h.type)) + "/" +
                              std::to_string(h.body_bytes) + "/" + std::to_string(h.payload_bytes));
        if (h.payload_bytes > 0) {
          const uint64_t id = wire::detail::load_le<uint64_t>(f.body().data());
          if (id % 2 == 0 && part > 0) {
            dest_store.emplace_back();
            given = static_cast<size_t>(std::min<uint64_t>(part, h.payload_bytes));
            f.payload_to({iovec{slab.data(), given}});
          } else if (id % 2 == 0) {
            // Two destinations, to cross an iovec boundary.
            dest_store.emplace_back(h.payload_bytes);
            Bytes& d = dest_store.back();
            const size_t half = d.size() / 2;
            f.payload_to({iovec{d.data(), half}, iovec{d.data() + half, d.size() - half}});
          } else {
            f.discard_payload();
          }
        }
        break;
      }
      case Event::kPartDone:
        if (part == 0) {
          return false;
        }
        take_part();
        f.payload_more(next_part());
        break;
      case Event::kPayloadDone:
        if (f.placed() && part > 0) {
          take_part();
          seen.payloads.push_back(dest_store.back());
        } else if (f.placed()) {
          seen.payloads.push_back(dest_store.back());
        } else {
          seen.payloads.push_back(Bytes{});
        }
        break;
      case Event::kNeedMore: {
        if (at == stream.size()) {
          return true;
        }
        RxFramer::Target t = f.next();
        const size_t n = std::min({cut, t.bytes(), stream.size() - at});
        if (t.buf != nullptr) {
          std::memcpy(t.buf, stream.data() + at, n);
        } else {
          size_t left = n, off = at;
          for (const iovec& v : t.iov) {
            const size_t k = std::min(left, v.iov_len);
            std::memcpy(v.iov_base, stream.data() + off, k);
            off += k;
            left -= k;
          }
        }
        at += n;
        f.received(n);
        break;
      }
      case Event::kParked:
        return false;
      case Event::kBad:
        if (bad != nullptr) {
          *bad = f.bad_reason();
        }
        return false;
    }
  }
  return false;
}

TEST(RxFramer, EveryStreamCutAtEveryLengthGivesTheSameFramesInBothModes) {
  Bytes stream;
  for (const Bytes& b : {data(2, 100, 0x10), completion(3), batch(4, 7, 9, 0x20), data(5, 33, 1),
                         completion(6), data(8, 1, 0x30)}) {
    stream.insert(stream.end(), b.begin(), b.end());
  }
  Seen want;
  {
    RxFramer f(true, 0);
    ASSERT_TRUE(run(f, stream, stream.size(), want));
  }
  ASSERT_EQ(want.frames.size(), 6u);
  ASSERT_EQ(want.payloads.size(), 4u);
  EXPECT_EQ(want.payloads[0], Bytes(100, std::byte{0x10}));
  EXPECT_TRUE(want.payloads[2].empty()) << "an odd id's payload is dropped";
  for (bool read_ahead : {true, false}) {
    for (size_t cut = 1; cut <= stream.size(); ++cut) {
      SCOPED_TRACE((read_ahead ? "read-ahead, cut " : "exact, cut ") + std::to_string(cut));
      RxFramer f(read_ahead, read_ahead ? 0 : 40);
      Seen seen;
      ASSERT_TRUE(run(f, stream, cut, seen));
      EXPECT_EQ(seen.frames, want.frames);
      EXPECT_EQ(seen.payloads, want.payloads);
      if (!read_ahead) {
        EXPECT_EQ(f.copied_bytes(), 0u) << "exact mode copied payload";
      }
    }
  }
}

TEST(RxFramer, APayloadPlacedPartByPartThroughOneBufferArrivesWhole) {
  // GPU staging receives a payload larger than a slab into the slab, part after part.
  Bytes stream;
  for (const Bytes& b : {data(2, 100, 0x10), completion(3), batch(4, 7, 9, 0x20), data(5, 33, 1),
                         data(8, 1, 0x30), data(10, 64, 0x40)}) {
    stream.insert(stream.end(), b.begin(), b.end());
  }
  Seen want;
  {
    RxFramer f(true, 0);
    ASSERT_TRUE(run(f, stream, stream.size(), want));
  }
  for (size_t part : {1, 3, 16, 64, 200}) {
    for (bool read_ahead : {true, false}) {
      for (size_t cut : {size_t{1}, size_t{5}, size_t{37}, stream.size()}) {
        SCOPED_TRACE("part " + std::to_string(part) + (read_ahead ? " read-ahead" : " exact") +
                     ", cut " + std::to_string(cut));
        RxFramer f(read_ahead, read_ahead ? 0 : 40);
        Seen seen;
        ASSERT_TRUE(run(f, stream, cut, seen, nullptr, part));
        EXPECT_EQ(seen.frames, want.frames);
        EXPECT_EQ(seen.payloads, want.payloads);
      }
    }
  }
}

TEST(RxFramer, ExactModeNeverReceivesPastTheFrame) {
  // A hello followed by other bytes: an exact framer asks for no byte past the hello,
  // so the socket can be handed to another ring with the rest still in it.
  wire::Hello h;
  h.key = "peer";
  Bytes hello(wire::hello_frame_bytes(4, 0));
  ASSERT_TRUE(wire::encode_hello(h, hello).ok());
  RxFramer f(false, 48);
  size_t taken = 0;
  while (f.step() == Event::kNeedMore) {
    RxFramer::Target t = f.next();
    ASSERT_LE(taken + t.bytes(), hello.size()) << "asked past the frame";
    std::memcpy(t.buf, hello.data() + taken, t.bytes());
    taken += t.bytes();
    f.received(t.bytes());
  }
  EXPECT_EQ(taken, hello.size());
  EXPECT_EQ(f.header().type, wire::FrameType::kHello);
}

// Issue 11: a control connection's read-ahead buffer is small while it waits (2,000
// idle connections once held 256 KiB each), grows only while a frame larger than it is
// read, and shrinks again once that frame is handled.
TEST(RxFramer, TheReadAheadBufferGrowsOnlyForALargeFrame) {
  RxFramer f(true, 48);
  ASSERT_EQ(f.step(), Event::kNeedMore);
  RxFramer::Target t = f.next();
  EXPECT_LE(t.bytes(), RxFramer::kReadAheadMinBytes) << "an idle connection's buffer";
  f.retry();
  std::vector<wire::Segment> segs(6000);
  for (size_t i = 0; i < segs.size(); ++i) {
    segs[i] = wire::Segment{1, 0, i * 8, 8};
  }
  Bytes req(wire::request_frame_bytes(segs.size()));
  ASSERT_TRUE(wire::encode_request(wire::OpKind::kRead, 9, segs, req, 0, 1).ok());
  ASSERT_GT(req.size(), 2 * RxFramer::kReadAheadMinBytes);
  const Bytes done = completion(4);
  req.insert(req.end(), done.begin(), done.end());
  size_t at = 0;
  std::vector<wire::FrameType> frames;
  for (int guard = 0; guard < 1000 && frames.size() < 2; ++guard) {
    const Event e = f.step();
    if (e == Event::kFrame) {
      frames.push_back(f.header().type);
      continue;
    }
    ASSERT_EQ(e, Event::kNeedMore);
    t = f.next();
    const size_t n = std::min(t.bytes(), req.size() - at);
    ASSERT_GT(n, 0u);
    std::memcpy(t.buf, req.data() + at, n);
    at += n;
    f.received(n);
  }
  ASSERT_EQ(frames.size(), 2u);
  EXPECT_EQ(frames[0], wire::FrameType::kReadRequest);
  EXPECT_EQ(frames[1], wire::FrameType::kCompletion);
  ASSERT_EQ(f.step(), Event::kNeedMore);
  t = f.next();
  EXPECT_LE(t.bytes(), RxFramer::kReadAheadMinBytes) << "the buffer shrinks back";
}

TEST(RxFramer, AParkedFrameComesAgainAfterResume) {
  const Bytes d = data(2, 10, 0x55);
  RxFramer f(false, 48);
  RxFramer::Target t = f.next();
  ASSERT_EQ(t.bytes(), 48u);
  std::memcpy(t.buf, d.data(), 48);
  f.received(48);
  ASSERT_EQ(f.step(), Event::kFrame);
  f.park();
  EXPECT_EQ(f.step(), Event::kParked);
  EXPECT_TRUE(f.parked());
  f.resume();
  ASSERT_EQ(f.step(), Event::kFrame);
  EXPECT_EQ(f.header().payload_bytes, 10u);
  Bytes dest(10);
  f.payload_to({iovec{dest.data(), dest.size()}});
  ASSERT_EQ(f.step(), Event::kNeedMore);
  t = f.next();
  ASSERT_EQ(t.bytes(), 10u);
  std::memcpy(t.iov[0].iov_base, d.data() + 48, 10);
  f.received(10);
  EXPECT_EQ(f.step(), Event::kPayloadDone);
  EXPECT_EQ(dest, Bytes(10, std::byte{0x55}));
}

TEST(RxFramer, BadBytesAreReportedNotParsed) {
  Bytes junk(64, std::byte{0x41});
  for (bool read_ahead : {true, false}) {
    RxFramer f(read_ahead, 48);
    Seen seen;
    std::string why;
    EXPECT_FALSE(run(f, junk, junk.size(), seen, &why));
    EXPECT_EQ(why, "bad frame header: bad magic");
  }
  // Exact mode: a frame shorter than the channel's prefix.
  Bytes two = completion(1);
  const Bytes more = completion(2);
  two.insert(two.end(), more.begin(), more.end());
  RxFramer f(false, 48);
  Seen seen;
  std::string why;
  EXPECT_FALSE(run(f, two, two.size(), seen, &why));
  EXPECT_EQ(why, "frame shorter than its channel allows");
}

}  // namespace
}  // namespace ringxfer::transport::detail
