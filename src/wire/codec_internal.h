// Private to src/wire: the limits by frame type, field checks and frame helpers shared
// by the codec's files (codec.cc: header, whole frames; codec_handshake.cc: hello,
// hello ack and the auth frames; codec_transfer.cc: requests, completions and data
// frames).
#pragma once

#include <cstring>
#include <string_view>

#include "wire/byte_order.h"
#include "wire/codec.h"

namespace ringxfer::wire::codec_internal {

using detail::load_le;
using detail::store_le;

struct TypeLimits {
  size_t body_min;
  size_t body_max;
  uint64_t payload_min;
  uint64_t payload_max;
};

// Body and payload bounds of each frame type. A body shorter than its fixed part is
// a length mismatch; one longer than the type allows is over the limit.
constexpr bool limits_for(uint8_t type, TypeLimits* out) noexcept {
  switch (static_cast<FrameType>(type)) {
    case FrameType::kHello:
      *out = {kHelloFixedBytes + 1, kHelloBodyBytesMax, 0, 0};
      return true;
    case FrameType::kHelloAck:
      *out = {kHelloAckFixedBytes + 1, kHelloAckBodyBytesMax, 0, 0};
      return true;
    case FrameType::kAuthChallenge:
      *out = {kAuthChallengeBodyBytes, kAuthChallengeBodyBytes, 0, 0};
      return true;
    case FrameType::kAuthProof:
      *out = {kAuthProofBodyBytes, kAuthProofBodyBytes, 0, 0};
      return true;
    case FrameType::kWriteRequest:
    case FrameType::kReadRequest:
      *out = {kRequestFixedBytes + kSegmentBytes, kRequestBodyBytesMax, 0, 0};
      return true;
    case FrameType::kCompletion:
      *out = {kCompletionFixedBytes, kCompletionBodyBytesMax, 0, 0};
      return true;
    case FrameType::kCancel:
      *out = {kCancelBodyBytes, kCancelBodyBytes, 0, 0};
      return true;
    case FrameType::kData:
      *out = {kDataBodyBytes, kDataBodyBytes, 1, kDataPayloadBytesMax};
      return true;
    case FrameType::kDataBatch:
      *out = {kBatchFixedBytes + kBatchEntryBytes, kBatchBodyBytesMax, 1, kBatchPayloadBytesMax};
      return true;
  }
  return false;
}

constexpr bool add_overflows(uint64_t a, uint64_t b) noexcept { return a + b < a; }

// The rules one range (offset, length) of a segment obeys, for encoder and decoder.
constexpr DecodeError check_range(uint64_t offset, uint64_t length) noexcept {
  if (length == 0) {
    return DecodeError::kBadField;
  }
  if (add_overflows(offset, length)) {
    return DecodeError::kOffsetOverflow;
  }
  if (offset + length > kSegmentBytesMax) {
    return DecodeError::kLengthOverLimit;
  }
  return DecodeError::kNone;
}

constexpr bool valid_status(uint16_t status) noexcept { return status <= kStatusCodeMax; }

constexpr bool valid_op(uint8_t op) noexcept {
  return op == static_cast<uint8_t>(OpKind::kWrite) || op == static_cast<uint8_t>(OpKind::kRead);
}

inline DecodeError check_hello(const Hello& h) noexcept {
  if (h.version_min == 0 || h.version_min > h.version_max) {
    return DecodeError::kBadVersion;
  }
  const auto channel = static_cast<uint8_t>(h.channel);
  if (channel > static_cast<uint8_t>(ChannelKind::kData)) {
    return DecodeError::kBadField;
  }
  if (h.stripe >= kStripesMax || (h.channel == ChannelKind::kControl && h.stripe != 0)) {
    return DecodeError::kBadField;
  }
  if (h.key.empty()) {
    return DecodeError::kBadField;
  }
  if (h.key.size() > kKeyBytesMax) {
    return DecodeError::kKeyTooLong;
  }
  if (h.auth.size() > kAuthBytesMax) {
    return DecodeError::kLengthOverLimit;
  }
  return DecodeError::kNone;
}

inline DecodeError check_hello_ack(const HelloAck& a) noexcept {
  if (a.version < kVersionMin || a.version > kVersionMax) {
    return DecodeError::kBadVersion;
  }
  if (!valid_status(a.status) || a.key.empty()) {
    return DecodeError::kBadField;
  }
  if (a.key.size() > kKeyBytesMax) {
    return DecodeError::kKeyTooLong;
  }
  if (a.message.size() > kMessageBytesMax) {
    return DecodeError::kLengthOverLimit;
  }
  return DecodeError::kNone;
}

inline DecodeError check_completion(const Completion& c) noexcept {
  if (!valid_op(static_cast<uint8_t>(c.op)) || !valid_status(c.status)) {
    return DecodeError::kBadField;
  }
  if (c.message.size() > kMessageBytesMax) {
    return DecodeError::kLengthOverLimit;
  }
  return DecodeError::kNone;
}

inline DecodeError check_data(const DataHeader& d) noexcept {
  if (d.segment >= kSegmentsMax) {
    return DecodeError::kTooManySegments;
  }
  if (d.length > kDataPayloadBytesMax) {
    return DecodeError::kLengthOverLimit;
  }
  return check_range(d.offset, d.length);
}

inline DecodeError check_batch_entry(const BatchEntry& e) noexcept {
  if (e.segment >= kSegmentsMax) {
    return DecodeError::kTooManySegments;
  }
  return check_range(e.offset, e.length);
}

// Frames that open a connection: they carry no request sequence (seq 0).
constexpr bool is_handshake(FrameType t) noexcept {
  return t == FrameType::kHello || t == FrameType::kHelloAck || t == FrameType::kAuthChallenge ||
         t == FrameType::kAuthProof;
}

// Common prefix of every encoder: validates the size and writes the header.
inline DecodeError begin_frame(FrameType type, size_t body_bytes, uint64_t payload_bytes,
                               MutableByteSpan out, uint32_t seq = 0) noexcept {
  if (out.size() < kHeaderBytes + body_bytes) {
    return DecodeError::kBufferTooSmall;
  }
  std::byte* p = out.data();
  store_le<uint32_t>(p, kMagic);
  store_le<uint8_t>(p + 4, kVersion);
  store_le<uint8_t>(p + 5, static_cast<uint8_t>(type));
  store_le<uint16_t>(p + 6, 0);
  store_le<uint32_t>(p + 8, static_cast<uint32_t>(body_bytes));
  store_le<uint32_t>(p + 12, seq);
  store_le<uint64_t>(p + 16, payload_bytes);
  return DecodeError::kNone;
}

inline void put_bytes(std::byte* p, const void* src, size_t n) noexcept {
  if (n != 0) {
    std::memcpy(p, src, n);
  }
}

inline std::string_view as_chars(ByteSpan s) noexcept {
  return {reinterpret_cast<const char*>(s.data()), s.size()};
}

// Shared by the whole-frame decoders: header, type check, then the body decoder.
template <typename T>
inline Result<T> decode_whole(ByteSpan in, bool (*type_ok)(FrameType),
                              Result<T> (*body)(const FrameHeader&, ByteSpan) noexcept) noexcept {
  Result<FrameHeader> h = decode_header(in);
  if (!h.ok()) {
    return h.error();
  }
  if (!type_ok(h->type)) {
    return DecodeError::kUnknownType;
  }
  if (in.size() - kHeaderBytes < h->body_bytes) {
    return DecodeError::kTruncated;
  }
  return body(*h, in.subspan(kHeaderBytes, h->body_bytes));
}

template <FrameType kType>
inline bool is_type(FrameType t) {
  return t == kType;
}

inline bool is_request(FrameType t) {
  return t == FrameType::kWriteRequest || t == FrameType::kReadRequest;
}

}  // namespace ringxfer::wire::codec_internal
