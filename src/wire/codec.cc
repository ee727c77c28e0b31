#include "wire/codec.h"

#include <cstring>

namespace ringxfer::wire {
namespace {

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
    case FrameType::kWriteRequest:
    case FrameType::kReadRequest:
      *out = {kRequestFixedBytes + kSegmentBytes, kRequestBodyBytesMax, 0, 0};
      return true;
    case FrameType::kCompletion:
      *out = {kCompletionFixedBytes, kCompletionBodyBytesMax, 0, 0};
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

DecodeError check_hello(const Hello& h) noexcept {
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

DecodeError check_hello_ack(const HelloAck& a) noexcept {
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

DecodeError check_completion(const Completion& c) noexcept {
  if (!valid_op(static_cast<uint8_t>(c.op)) || !valid_status(c.status)) {
    return DecodeError::kBadField;
  }
  if (c.message.size() > kMessageBytesMax) {
    return DecodeError::kLengthOverLimit;
  }
  return DecodeError::kNone;
}

DecodeError check_data(const DataHeader& d) noexcept {
  if (d.segment >= kSegmentsMax) {
    return DecodeError::kTooManySegments;
  }
  if (d.length > kDataPayloadBytesMax) {
    return DecodeError::kLengthOverLimit;
  }
  return check_range(d.offset, d.length);
}

DecodeError check_batch_entry(const BatchEntry& e) noexcept {
  if (e.segment >= kSegmentsMax) {
    return DecodeError::kTooManySegments;
  }
  return check_range(e.offset, e.length);
}

// Common prefix of every encoder: validates the size and writes the header.
DecodeError begin_frame(FrameType type, size_t body_bytes, uint64_t payload_bytes,
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

void put_bytes(std::byte* p, const void* src, size_t n) noexcept {
  if (n != 0) {
    std::memcpy(p, src, n);
  }
}

std::string_view as_chars(ByteSpan s) noexcept {
  return {reinterpret_cast<const char*>(s.data()), s.size()};
}

// Shared by the whole-frame decoders: header, type check, then the body decoder.
template <typename T>
Result<T> decode_whole(ByteSpan in, bool (*type_ok)(FrameType),
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
bool is_type(FrameType t) {
  return t == kType;
}

bool is_request(FrameType t) {
  return t == FrameType::kWriteRequest || t == FrameType::kReadRequest;
}

}  // namespace

std::string_view to_string(DecodeError error) noexcept {
  switch (error) {
    case DecodeError::kNone:
      return "ok";
    case DecodeError::kTruncated:
      return "truncated";
    case DecodeError::kBadMagic:
      return "bad magic";
    case DecodeError::kBadVersion:
      return "bad version";
    case DecodeError::kUnknownType:
      return "unknown frame type";
    case DecodeError::kLengthOverLimit:
      return "length over limit";
    case DecodeError::kTooManySegments:
      return "segment count over limit";
    case DecodeError::kKeyTooLong:
      return "key too long";
    case DecodeError::kOffsetOverflow:
      return "offset+length overflow";
    case DecodeError::kLengthMismatch:
      return "length mismatch";
    case DecodeError::kBadField:
      return "bad field";
    case DecodeError::kBufferTooSmall:
      return "buffer too small";
  }
  return "unknown decode error";
}

// ---- Header ----

Result<FrameHeader> decode_header(ByteSpan in) noexcept {
  if (in.size() < kHeaderBytes) {
    return DecodeError::kTruncated;
  }
  const std::byte* p = in.data();
  if (load_le<uint32_t>(p) != kMagic) {
    return DecodeError::kBadMagic;
  }
  FrameHeader h;
  h.version = load_le<uint8_t>(p + 4);
  if (h.version < kVersionMin || h.version > kVersionMax) {
    return DecodeError::kBadVersion;
  }
  const uint8_t type = load_le<uint8_t>(p + 5);
  TypeLimits limits{};
  if (!limits_for(type, &limits)) {
    return DecodeError::kUnknownType;
  }
  h.type = static_cast<FrameType>(type);
  h.seq = load_le<uint32_t>(p + 12);
  const bool handshake = h.type == FrameType::kHello || h.type == FrameType::kHelloAck;
  if (load_le<uint16_t>(p + 6) != 0 || (handshake && h.seq != 0)) {
    return DecodeError::kBadField;
  }
  h.body_bytes = load_le<uint32_t>(p + 8);
  h.payload_bytes = load_le<uint64_t>(p + 16);
  if (h.body_bytes > limits.body_max || h.payload_bytes > limits.payload_max) {
    return DecodeError::kLengthOverLimit;
  }
  if (h.body_bytes < limits.body_min || h.payload_bytes < limits.payload_min) {
    return DecodeError::kLengthMismatch;
  }
  return h;
}

// ---- Hello ----

Result<Hello> decode_hello_body(const FrameHeader& header, ByteSpan body) noexcept {
  if (header.type != FrameType::kHello) {
    return DecodeError::kUnknownType;
  }
  if (body.size() < header.body_bytes) {
    return DecodeError::kTruncated;
  }
  if (header.body_bytes < kHelloFixedBytes) {
    return DecodeError::kLengthMismatch;
  }
  const std::byte* p = body.data();
  Hello h;
  h.version_min = load_le<uint8_t>(p);
  h.version_max = load_le<uint8_t>(p + 1);
  const uint8_t channel = load_le<uint8_t>(p + 2);
  h.stripe = load_le<uint8_t>(p + 3);
  const uint16_t key_len = load_le<uint16_t>(p + 4);
  const uint16_t auth_len = load_le<uint16_t>(p + 6);
  h.capabilities = load_le<uint64_t>(p + 8);
  h.instance_id = load_le<uint64_t>(p + 16);
  if (h.version_min == 0 || h.version_min > h.version_max) {
    return DecodeError::kBadVersion;
  }
  if (channel > static_cast<uint8_t>(ChannelKind::kData)) {
    return DecodeError::kBadField;
  }
  h.channel = static_cast<ChannelKind>(channel);
  if (h.stripe >= kStripesMax || (h.channel == ChannelKind::kControl && h.stripe != 0) ||
      key_len == 0) {
    return DecodeError::kBadField;
  }
  if (key_len > kKeyBytesMax) {
    return DecodeError::kKeyTooLong;
  }
  if (auth_len > kAuthBytesMax) {
    return DecodeError::kLengthOverLimit;
  }
  // Lengths are checked before any view is formed, so no view reaches past the body.
  if (size_t{kHelloFixedBytes} + key_len + auth_len != header.body_bytes) {
    return DecodeError::kLengthMismatch;
  }
  h.key = as_chars(body.subspan(kHelloFixedBytes, key_len));
  h.auth = body.subspan(kHelloFixedBytes + key_len, auth_len);
  return h;
}

Result<size_t> encode_hello(const Hello& hello, MutableByteSpan out) noexcept {
  if (DecodeError e = check_hello(hello); e != DecodeError::kNone) {
    return e;
  }
  const size_t body = kHelloFixedBytes + hello.key.size() + hello.auth.size();
  if (DecodeError e = begin_frame(FrameType::kHello, body, 0, out); e != DecodeError::kNone) {
    return e;
  }
  std::byte* p = out.data() + kHeaderBytes;
  store_le<uint8_t>(p, hello.version_min);
  store_le<uint8_t>(p + 1, hello.version_max);
  store_le<uint8_t>(p + 2, static_cast<uint8_t>(hello.channel));
  store_le<uint8_t>(p + 3, hello.stripe);
  store_le<uint16_t>(p + 4, static_cast<uint16_t>(hello.key.size()));
  store_le<uint16_t>(p + 6, static_cast<uint16_t>(hello.auth.size()));
  store_le<uint64_t>(p + 8, hello.capabilities);
  store_le<uint64_t>(p + 16, hello.instance_id);
  put_bytes(p + kHelloFixedBytes, hello.key.data(), hello.key.size());
  put_bytes(p + kHelloFixedBytes + hello.key.size(), hello.auth.data(), hello.auth.size());
  return kHeaderBytes + body;
}

// ---- HelloAck ----

Result<HelloAck> decode_hello_ack_body(const FrameHeader& header, ByteSpan body) noexcept {
  if (header.type != FrameType::kHelloAck) {
    return DecodeError::kUnknownType;
  }
  if (body.size() < header.body_bytes) {
    return DecodeError::kTruncated;
  }
  if (header.body_bytes < kHelloAckFixedBytes) {
    return DecodeError::kLengthMismatch;
  }
  const std::byte* p = body.data();
  HelloAck a;
  a.version = load_le<uint8_t>(p);
  const uint8_t reserved = load_le<uint8_t>(p + 1);
  a.status = load_le<uint16_t>(p + 2);
  const uint16_t key_len = load_le<uint16_t>(p + 4);
  const uint16_t message_len = load_le<uint16_t>(p + 6);
  a.capabilities = load_le<uint64_t>(p + 8);
  a.instance_id = load_le<uint64_t>(p + 16);
  if (a.version < kVersionMin || a.version > kVersionMax) {
    return DecodeError::kBadVersion;
  }
  if (reserved != 0 || !valid_status(a.status) || key_len == 0) {
    return DecodeError::kBadField;
  }
  if (key_len > kKeyBytesMax) {
    return DecodeError::kKeyTooLong;
  }
  if (message_len > kMessageBytesMax) {
    return DecodeError::kLengthOverLimit;
  }
  if (size_t{kHelloAckFixedBytes} + key_len + message_len != header.body_bytes) {
    return DecodeError::kLengthMismatch;
  }
  a.key = as_chars(body.subspan(kHelloAckFixedBytes, key_len));
  a.message = as_chars(body.subspan(kHelloAckFixedBytes + key_len, message_len));
  return a;
}

Result<size_t> encode_hello_ack(const HelloAck& ack, MutableByteSpan out) noexcept {
  if (DecodeError e = check_hello_ack(ack); e != DecodeError::kNone) {
    return e;
  }
  const size_t body = kHelloAckFixedBytes + ack.key.size() + ack.message.size();
  if (DecodeError e = begin_frame(FrameType::kHelloAck, body, 0, out); e != DecodeError::kNone) {
    return e;
  }
  std::byte* p = out.data() + kHeaderBytes;
  store_le<uint8_t>(p, ack.version);
  store_le<uint8_t>(p + 1, 0);
  store_le<uint16_t>(p + 2, ack.status);
  store_le<uint16_t>(p + 4, static_cast<uint16_t>(ack.key.size()));
  store_le<uint16_t>(p + 6, static_cast<uint16_t>(ack.message.size()));
  store_le<uint64_t>(p + 8, ack.capabilities);
  store_le<uint64_t>(p + 16, ack.instance_id);
  put_bytes(p + kHelloAckFixedBytes, ack.key.data(), ack.key.size());
  put_bytes(p + kHelloAckFixedBytes + ack.key.size(), ack.message.data(), ack.message.size());
  return kHeaderBytes + body;
}

// ---- Requests ----

Result<Request> decode_request_body(const FrameHeader& header, ByteSpan body) noexcept {
  if (!is_request(header.type)) {
    return DecodeError::kUnknownType;
  }
  if (body.size() < header.body_bytes) {
    return DecodeError::kTruncated;
  }
  if (header.body_bytes < kRequestFixedBytes) {
    return DecodeError::kLengthMismatch;
  }
  const std::byte* p = body.data();
  Request r;
  r.seq = header.seq;
  r.op = header.type == FrameType::kWriteRequest ? OpKind::kWrite : OpKind::kRead;
  r.transfer_id = load_le<uint64_t>(p);
  const uint32_t count = load_le<uint32_t>(p + 8);
  r.parts = load_le<uint16_t>(p + 12);
  if (r.parts > kPartsMax || load_le<uint16_t>(p + 14) != 0 || count == 0) {
    return DecodeError::kBadField;
  }
  if (count > kSegmentsMax) {
    return DecodeError::kTooManySegments;
  }
  if (kRequestFixedBytes + size_t{count} * kSegmentBytes != header.body_bytes) {
    return DecodeError::kLengthMismatch;
  }
  r.segments = PackedTable<Segment>(body.subspan(kRequestFixedBytes, count * kSegmentBytes), count);
  for (const Segment s : r.segments) {
    if (DecodeError e = check_range(s.offset, s.length); e != DecodeError::kNone) {
      return e;
    }
    r.total_bytes += s.length;  // at most kSegmentsMax * 2^40: no wrap
  }
  if (r.total_bytes > kTransferBytesMax) {
    return DecodeError::kLengthOverLimit;
  }
  return r;
}

Result<size_t> encode_request(OpKind op, uint64_t transfer_id, std::span<const Segment> segments,
                              MutableByteSpan out, uint16_t parts, uint32_t seq) noexcept {
  if (!valid_op(static_cast<uint8_t>(op)) || segments.empty() || parts > kPartsMax) {
    return DecodeError::kBadField;
  }
  if (segments.size() > kSegmentsMax) {
    return DecodeError::kTooManySegments;
  }
  uint64_t total = 0;
  for (const Segment& s : segments) {
    if (DecodeError e = check_range(s.offset, s.length); e != DecodeError::kNone) {
      return e;
    }
    total += s.length;
  }
  if (total > kTransferBytesMax) {
    return DecodeError::kLengthOverLimit;
  }
  const size_t body = kRequestFixedBytes + segments.size() * kSegmentBytes;
  const FrameType type = op == OpKind::kWrite ? FrameType::kWriteRequest : FrameType::kReadRequest;
  if (DecodeError e = begin_frame(type, body, 0, out, seq); e != DecodeError::kNone) {
    return e;
  }
  std::byte* p = out.data() + kHeaderBytes;
  store_le<uint64_t>(p, transfer_id);
  store_le<uint32_t>(p + 8, static_cast<uint32_t>(segments.size()));
  store_le<uint16_t>(p + 12, parts);
  store_le<uint16_t>(p + 14, 0);
  p += kRequestFixedBytes;
  for (const Segment& s : segments) {
    store_le<uint64_t>(p, s.memory_id);
    store_le<uint64_t>(p + 8, s.offset);
    store_le<uint64_t>(p + 16, s.length);
    p += kSegmentBytes;
  }
  return kHeaderBytes + body;
}

// ---- Completion ----

Result<Completion> decode_completion_body(const FrameHeader& header, ByteSpan body) noexcept {
  if (header.type != FrameType::kCompletion) {
    return DecodeError::kUnknownType;
  }
  if (body.size() < header.body_bytes) {
    return DecodeError::kTruncated;
  }
  if (header.body_bytes < kCompletionFixedBytes) {
    return DecodeError::kLengthMismatch;
  }
  const std::byte* p = body.data();
  Completion c;
  c.seq = header.seq;
  c.transfer_id = load_le<uint64_t>(p);
  c.status = load_le<uint16_t>(p + 8);
  const uint8_t op = load_le<uint8_t>(p + 10);
  if (!valid_op(op) || !valid_status(c.status) || load_le<uint8_t>(p + 11) != 0 ||
      load_le<uint16_t>(p + 14) != 0) {
    return DecodeError::kBadField;
  }
  c.op = static_cast<OpKind>(op);
  const uint16_t message_len = load_le<uint16_t>(p + 12);
  if (message_len > kMessageBytesMax) {
    return DecodeError::kLengthOverLimit;
  }
  if (kCompletionFixedBytes + size_t{message_len} != header.body_bytes) {
    return DecodeError::kLengthMismatch;
  }
  c.message = as_chars(body.subspan(kCompletionFixedBytes, message_len));
  return c;
}

Result<size_t> encode_completion(const Completion& completion, MutableByteSpan out) noexcept {
  if (DecodeError e = check_completion(completion); e != DecodeError::kNone) {
    return e;
  }
  const size_t body = kCompletionFixedBytes + completion.message.size();
  if (DecodeError e = begin_frame(FrameType::kCompletion, body, 0, out, completion.seq);
      e != DecodeError::kNone) {
    return e;
  }
  std::byte* p = out.data() + kHeaderBytes;
  store_le<uint64_t>(p, completion.transfer_id);
  store_le<uint16_t>(p + 8, completion.status);
  store_le<uint8_t>(p + 10, static_cast<uint8_t>(completion.op));
  store_le<uint8_t>(p + 11, 0);
  store_le<uint16_t>(p + 12, static_cast<uint16_t>(completion.message.size()));
  store_le<uint16_t>(p + 14, 0);
  put_bytes(p + kCompletionFixedBytes, completion.message.data(), completion.message.size());
  return kHeaderBytes + body;
}

// ---- Data ----

Result<DataHeader> decode_data_body(const FrameHeader& header, ByteSpan body) noexcept {
  if (header.type != FrameType::kData) {
    return DecodeError::kUnknownType;
  }
  if (body.size() < header.body_bytes) {
    return DecodeError::kTruncated;
  }
  if (header.body_bytes != kDataBodyBytes) {
    return DecodeError::kLengthMismatch;
  }
  const std::byte* p = body.data();
  if (load_le<uint32_t>(p + 12) != 0) {
    return DecodeError::kBadField;
  }
  DataHeader d;
  d.seq = header.seq;
  d.transfer_id = load_le<uint64_t>(p);
  d.segment = load_le<uint32_t>(p + 8);
  d.offset = load_le<uint64_t>(p + 16);
  d.length = header.payload_bytes;
  if (DecodeError e = check_data(d); e != DecodeError::kNone) {
    return e;
  }
  return d;
}

Result<size_t> encode_data(const DataHeader& data, MutableByteSpan out) noexcept {
  if (DecodeError e = check_data(data); e != DecodeError::kNone) {
    return e;
  }
  if (DecodeError e = begin_frame(FrameType::kData, kDataBodyBytes, data.length, out, data.seq);
      e != DecodeError::kNone) {
    return e;
  }
  std::byte* p = out.data() + kHeaderBytes;
  store_le<uint64_t>(p, data.transfer_id);
  store_le<uint32_t>(p + 8, data.segment);
  store_le<uint32_t>(p + 12, 0);
  store_le<uint64_t>(p + 16, data.offset);
  return kDataFrameBytes;
}

// ---- Data batch ----

Result<DataBatch> decode_data_batch_body(const FrameHeader& header, ByteSpan body) noexcept {
  if (header.type != FrameType::kDataBatch) {
    return DecodeError::kUnknownType;
  }
  if (body.size() < header.body_bytes) {
    return DecodeError::kTruncated;
  }
  if (header.body_bytes < kBatchFixedBytes) {
    return DecodeError::kLengthMismatch;
  }
  const std::byte* p = body.data();
  DataBatch b;
  b.seq = header.seq;
  b.transfer_id = load_le<uint64_t>(p);
  const uint32_t count = load_le<uint32_t>(p + 8);
  if (load_le<uint32_t>(p + 12) != 0 || count == 0) {
    return DecodeError::kBadField;
  }
  if (count > kSegmentsMax) {
    return DecodeError::kTooManySegments;
  }
  if (kBatchFixedBytes + size_t{count} * kBatchEntryBytes != header.body_bytes) {
    return DecodeError::kLengthMismatch;
  }
  b.entries =
      PackedTable<BatchEntry>(body.subspan(kBatchFixedBytes, count * kBatchEntryBytes), count);
  uint64_t sum = 0;
  for (const BatchEntry e : b.entries) {
    if (DecodeError err = check_batch_entry(e); err != DecodeError::kNone) {
      return err;
    }
    sum += e.length;  // at most kSegmentsMax * 2^32: no wrap
  }
  if (sum != header.payload_bytes) {
    return DecodeError::kLengthMismatch;
  }
  b.payload_bytes = sum;
  return b;
}

Result<size_t> encode_data_batch(uint64_t transfer_id, std::span<const BatchEntry> entries,
                                 MutableByteSpan out, uint32_t seq) noexcept {
  if (entries.empty()) {
    return DecodeError::kBadField;
  }
  if (entries.size() > kSegmentsMax) {
    return DecodeError::kTooManySegments;
  }
  uint64_t sum = 0;
  for (const BatchEntry& e : entries) {
    if (DecodeError err = check_batch_entry(e); err != DecodeError::kNone) {
      return err;
    }
    sum += e.length;
  }
  if (sum > kBatchPayloadBytesMax) {
    return DecodeError::kLengthOverLimit;
  }
  const size_t body = kBatchFixedBytes + entries.size() * kBatchEntryBytes;
  if (DecodeError e = begin_frame(FrameType::kDataBatch, body, sum, out, seq);
      e != DecodeError::kNone) {
    return e;
  }
  std::byte* p = out.data() + kHeaderBytes;
  store_le<uint64_t>(p, transfer_id);
  store_le<uint32_t>(p + 8, static_cast<uint32_t>(entries.size()));
  store_le<uint32_t>(p + 12, 0);
  p += kBatchFixedBytes;
  for (const BatchEntry& e : entries) {
    store_le<uint32_t>(p, e.segment);
    store_le<uint32_t>(p + 4, e.length);
    store_le<uint64_t>(p + 8, e.offset);
    p += kBatchEntryBytes;
  }
  return kHeaderBytes + body;
}

// ---- Whole frames ----

Result<Hello> decode_hello(ByteSpan in) noexcept {
  return decode_whole<Hello>(in, is_type<FrameType::kHello>, decode_hello_body);
}
Result<HelloAck> decode_hello_ack(ByteSpan in) noexcept {
  return decode_whole<HelloAck>(in, is_type<FrameType::kHelloAck>, decode_hello_ack_body);
}
Result<Request> decode_request(ByteSpan in) noexcept {
  return decode_whole<Request>(in, is_request, decode_request_body);
}
Result<Completion> decode_completion(ByteSpan in) noexcept {
  return decode_whole<Completion>(in, is_type<FrameType::kCompletion>, decode_completion_body);
}
Result<DataHeader> decode_data(ByteSpan in) noexcept {
  return decode_whole<DataHeader>(in, is_type<FrameType::kData>, decode_data_body);
}
Result<DataBatch> decode_data_batch(ByteSpan in) noexcept {
  return decode_whole<DataBatch>(in, is_type<FrameType::kDataBatch>, decode_data_batch_body);
}

}  // namespace ringxfer::wire
