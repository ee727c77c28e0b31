// transport::RxFramer: the receive half of one connection, without I/O. It says where
// the next receive goes (the frame buffer, the payload's destinations, or scratch for a
// payload being dropped), takes what arrived, and turns the bytes into events: a whole
// frame (header and body), a payload done, more needed, a parked frame, or a bad
// header. One framing path for both kinds of connection:
//   - read-ahead (control connections): receive as much as has arrived into a buffer
//     and parse every whole frame in it; payload bytes that came with their header are
//     copied out of the buffer, the rest is received in place;
//   - exact (data connections and handshakes): receive exactly the current frame's
//     bytes, so no payload byte is ever copied and nothing past a hello is taken from a
//     socket that is handed to another ring.
// Knows frames (wire) but no sockets, rings or transfers.
#pragma once

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "wire/codec.h"

namespace ringxfer::transport::detail {

class RxFramer {
 public:
  enum class Event : uint8_t {
    kNeedMore,     // receive into next(), then received()
    kFrame,        // header() and body() hold a whole frame: handle it
    kPayloadDone,  // the payload of the last frame is placed (or dropped)
    kPartDone,     // the destinations given are full and more payload follows:
                   // payload_more() says where it goes
    kParked,       // park()ed: nothing happens until resume()
    kBad,          // the bytes are not a frame: bad_reason() says why
  };

  // Where the next receive lands: `len` bytes at `buf`, or the iovecs `iov`.
  struct Target {
    std::byte* buf = nullptr;
    size_t len = 0;
    std::span<iovec> iov;   // a payload's destinations (recvmsg)
    bool wait_all = false;  // MSG_WAITALL: wait for every byte asked for
    size_t bytes() const;
  };

  static constexpr size_t kIovMax = 1024;            // IOV_MAX: destinations of one recvmsg
  static constexpr size_t kScratchBytes = 64 << 10;  // one receive of dropped payload
  // Read-ahead buffer: this much while a connection waits (an idle connection costs
  // little), grown to hold a larger frame (up to the largest, header and body) only
  // while that frame is read, and shrunk back once it is handled.
  static constexpr size_t kReadAheadMinBytes = 16 << 10;
  static constexpr size_t kReadAheadBytes = wire::kHeaderBytes + wire::kBodyBytesMax + (64 << 10);

  // `prefix_bytes`: in exact mode, the first receive of a frame asks for this many
  // bytes (the shortest frame its channel carries: often the whole header and body in
  // one receive). A frame shorter than that is bad.
  RxFramer(bool read_ahead, size_t prefix_bytes) noexcept
      : read_ahead_(read_ahead), prefix_(prefix_bytes) {}
  RxFramer() = default;
  // Sets the mode before the first receive.
  void configure(bool read_ahead, size_t prefix_bytes) noexcept {
    read_ahead_ = read_ahead;
    prefix_ = prefix_bytes;
  }
  RxFramer(const RxFramer&) = delete;
  RxFramer& operator=(const RxFramer&) = delete;

  // Advances over what has arrived and says what to do next.
  Event step();

  // After kNeedMore: where to receive. Valid until received().
  Target next();
  // `n` > 0 bytes landed in the last Target.
  void received(size_t n);
  // The last receive failed without a byte (EINTR): next() may be asked again.
  void retry() noexcept { awaiting_ = false; }
  // Bytes the last Target asked for.
  size_t asked() const noexcept { return asked_; }

  // After kFrame, until the next step(): the frame.
  const wire::FrameHeader& header() const noexcept { return fh_; }
  wire::ByteSpan body() const noexcept {
    return {buf_.data() + pos_ + wire::kHeaderBytes, fh_.body_bytes};
  }
  // After kFrame whose header has payload_bytes > 0, the handler does one of these
  // (or the connection closes): the payload goes to `dest` (its lengths sum to the
  // payload, or to less: then kPartDone comes when they are full), is dropped, or the
  // frame waits (resume() delivers it again).
  void payload_to(std::vector<iovec> dest);
  // After kPartDone: the next part of the payload goes to `dest` (at most what is left).
  void payload_more(std::vector<iovec> dest);
  // Payload bytes of the current frame not yet placed or dropped.
  uint64_t payload_left() const noexcept { return left_; }
  void discard_payload();
  void park() noexcept;
  void resume() noexcept;
  bool parked() const noexcept { return state_ == State::kParked; }
  // After kPayloadDone: whether the payload was placed (not dropped), and its size.
  bool placed() const noexcept { return placed_; }
  uint64_t payload_bytes() const noexcept { return fh_.payload_bytes; }

  // After kBad.
  const std::string& bad_reason() const noexcept { return bad_; }
  // Payload bytes copied out of the read-ahead buffer so far.
  uint64_t copied_bytes() const noexcept { return copied_; }

 private:
  enum class State : uint8_t { kFrame, kDelivered, kPayload, kDiscard, kParked };
  void consume_buffered();
  void begin_payload();

  bool read_ahead_ = false;
  size_t prefix_ = wire::kHeaderBytes;
  State state_ = State::kFrame;
  std::vector<std::byte> buf_;
  size_t pos_ = 0;  // the current frame's first byte
  size_t end_ = 0;  // the end of the bytes received
  bool have_header_ = false;
  wire::FrameHeader fh_;
  size_t frame_bytes_ = 0;  // header and body of the current frame
  std::vector<iovec> dest_;
  size_t dest_pos_ = 0;
  uint64_t left_ = 0;  // payload bytes still to place or drop
  bool placed_ = false;
  std::unique_ptr<std::byte[]> scratch_;
  size_t asked_ = 0;
  bool awaiting_ = false;
  uint64_t copied_ = 0;
  std::string bad_;
};

}  // namespace ringxfer::transport::detail
