#include "transport/rx_framer.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_format.h"
#include "base/check.h"

// ThreadSanitizer cannot see the ordering a network protocol gives: bytes copied out of
// the read-ahead buffer here are read by another thread only after a completion frame
// went over a socket. The kernel's own writes into receive buffers are invisible to
// TSan; the copies that stand in for them are made invisible too.
#if defined(__SANITIZE_THREAD__)
#define RX_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define RX_TSAN 1
#endif
#endif
#ifdef RX_TSAN
// Dynamic annotations, exported by the TSan runtime to shared libraries.
extern "C" void AnnotateIgnoreWritesBegin(const char* file, int line);
extern "C" void AnnotateIgnoreWritesEnd(const char* file, int line);
#endif

namespace ringxfer::transport::detail {

size_t RxFramer::Target::bytes() const {
  if (buf != nullptr) {
    return len;
  }
  size_t n = 0;
  for (const iovec& v : iov) {
    n += v.iov_len;
  }
  return n;
}

RxFramer::Event RxFramer::step() {
  for (;;) {
    switch (state_) {
      case State::kParked:
        return Event::kParked;
      case State::kDelivered:
        // The handler took a frame without payload (one with payload must have said
        // where it goes, or parked it).
        RX_CHECK_MSG(fh_.payload_bytes == 0, "a frame's payload was left without a destination");
        pos_ += frame_bytes_;
        have_header_ = false;
        state_ = State::kFrame;
        continue;
      case State::kPayload:
      case State::kDiscard:
        consume_buffered();
        if (left_ > 0) {
          // A part's destinations are full: the handler says where the rest goes.
          return state_ == State::kPayload && dest_pos_ == dest_.size() ? Event::kPartDone
                                                                        : Event::kNeedMore;
        }
        state_ = State::kFrame;
        return Event::kPayloadDone;
      case State::kFrame:
        break;
    }
    if (pos_ == end_) {
      pos_ = end_ = 0;
    }
    const size_t avail = end_ - pos_;
    if (!have_header_) {
      if (avail < wire::kHeaderBytes) {
        return Event::kNeedMore;
      }
      wire::Result<wire::FrameHeader> h =
          wire::decode_header(wire::ByteSpan(buf_.data() + pos_, avail));
      if (!h.ok()) {
        bad_ = absl::StrFormat("bad frame header: %s", wire::to_string(h.error()));
        return Event::kBad;
      }
      fh_ = *h;
      have_header_ = true;
      frame_bytes_ = wire::kHeaderBytes + fh_.body_bytes;
      if (!read_ahead_ && avail > frame_bytes_) {
        // The prefix is never longer than the shortest frame the channel carries.
        bad_ = "frame shorter than its channel allows";
        return Event::kBad;
      }
    }
    if (avail < frame_bytes_) {
      return Event::kNeedMore;
    }
    state_ = State::kDelivered;
    return Event::kFrame;
  }
}

RxFramer::Target RxFramer::next() {
  RX_CHECK_MSG(!awaiting_, "a second receive while one is in flight");
  Target t;
  switch (state_) {
    case State::kFrame: {
      // Keep the unparsed tail at the front, then receive behind it.
      if (pos_ > 0) {
        std::memmove(buf_.data(), buf_.data() + pos_, end_ - pos_);
        end_ -= pos_;
        pos_ = 0;
      }
      if (read_ahead_) {
        // Room for the frame being read (once its header is known) and some read-ahead,
        // grown at most twofold per receive: a peer that announces a large frame and
        // sends little of it makes this hold about what it sent, not what it announced.
        const size_t need = have_header_ && frame_bytes_ > kReadAheadMinBytes
                                ? std::min({frame_bytes_ + kReadAheadMinBytes, kReadAheadBytes,
                                            std::max(kReadAheadMinBytes, 2 * end_)})
                                : kReadAheadMinBytes;
        if (buf_.size() < need) {
          buf_.resize(need);
        } else if (buf_.size() > need && end_ <= need) {
          // A large frame was handled: let its buffer go.
          std::vector<std::byte> small(need);
          std::memcpy(small.data(), buf_.data(), end_);
          buf_.swap(small);
        }
        t.buf = buf_.data() + end_;
        t.len = buf_.size() - end_;
      } else {
        const size_t want = have_header_ ? frame_bytes_ : std::max(prefix_, end_ + 1);
        if (buf_.size() < want) {
          buf_.resize(std::max(want, wire::kHeaderBytes + wire::kHelloBodyBytesMax));
        }
        t.buf = buf_.data() + end_;
        t.len = want - end_;
        t.wait_all = true;
      }
      break;
    }
    case State::kPayload: {
      RX_CHECK_MSG(dest_pos_ < dest_.size(), "a receive into a part that is full");
      const size_t n = std::min(dest_.size() - dest_pos_, kIovMax);
      t.iov = std::span<iovec>(dest_.data() + dest_pos_, n);
      t.wait_all = true;
      break;
    }
    case State::kDiscard:
      if (!scratch_) {
        scratch_ = std::make_unique<std::byte[]>(kScratchBytes);
      }
      t.buf = scratch_.get();
      t.len = static_cast<size_t>(std::min<uint64_t>(left_, kScratchBytes));
      t.wait_all = true;
      break;
    case State::kDelivered:
    case State::kParked:
      RX_CHECK_MSG(false, "no receive is due while a frame is delivered or parked");
  }
  asked_ = t.bytes();
  awaiting_ = true;
  return t;
}

void RxFramer::received(size_t n) {
  RX_CHECK_MSG(awaiting_ && n <= asked_, "received more than was asked for");
  awaiting_ = false;
  switch (state_) {
    case State::kFrame:
      end_ += n;
      break;
    case State::kPayload: {
      left_ -= n;
      while (n > 0) {
        iovec& v = dest_[dest_pos_];
        if (n >= v.iov_len) {
          n -= v.iov_len;
          ++dest_pos_;
        } else {
          v.iov_base = static_cast<std::byte*>(v.iov_base) + n;
          v.iov_len -= n;
          n = 0;
        }
      }
      break;
    }
    case State::kDiscard:
      left_ -= n;
      break;
    case State::kDelivered:
    case State::kParked:
      break;
  }
}

void RxFramer::begin_payload() {
  RX_CHECK_MSG(state_ == State::kDelivered, "a payload without its frame");
  pos_ += frame_bytes_;
  have_header_ = false;
  left_ = fh_.payload_bytes;
}

void RxFramer::payload_to(std::vector<iovec> dest) {
  begin_payload();
  dest_ = std::move(dest);
  dest_pos_ = 0;
  placed_ = true;
  state_ = State::kPayload;
}

void RxFramer::payload_more(std::vector<iovec> dest) {
  RX_CHECK_MSG(state_ == State::kPayload && dest_pos_ == dest_.size() && left_ > 0,
               "payload_more without a part done");
  dest_ = std::move(dest);
  dest_pos_ = 0;
}

void RxFramer::discard_payload() {
  begin_payload();
  dest_.clear();
  dest_pos_ = 0;
  placed_ = false;
  state_ = State::kDiscard;
}

void RxFramer::park() noexcept { state_ = State::kParked; }

void RxFramer::resume() noexcept {
  if (state_ == State::kParked) {
    state_ = State::kFrame;  // the frame is still whole in the buffer: step() delivers it
  }
}

// Moves payload bytes that were read ahead into the buffer to their destinations (or
// drops them).
void RxFramer::consume_buffered() {
  while (left_ > 0 && pos_ < end_) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(left_, end_ - pos_));
    if (state_ == State::kPayload) {
      if (dest_pos_ == dest_.size()) {
        return;  // the part is full: the rest waits in the buffer for the next
      }
      iovec& v = dest_[dest_pos_];
      n = std::min(n, v.iov_len);
#ifdef RX_TSAN
      AnnotateIgnoreWritesBegin(__FILE__, __LINE__);
#endif
      std::memcpy(v.iov_base, buf_.data() + pos_, n);
#ifdef RX_TSAN
      AnnotateIgnoreWritesEnd(__FILE__, __LINE__);
#endif
      v.iov_base = static_cast<std::byte*>(v.iov_base) + n;
      v.iov_len -= n;
      if (v.iov_len == 0) {
        ++dest_pos_;
      }
      copied_ += n;
    }
    pos_ += n;
    left_ -= n;
  }
}

}  // namespace ringxfer::transport::detail
