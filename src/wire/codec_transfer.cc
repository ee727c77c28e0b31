// The frame codec: requests, completions, data frames and data batches.
#include "wire/codec.h"

#include "wire/codec_internal.h"

namespace ringxfer::wire {

using namespace codec_internal;  // NOLINT: the codec's own helpers

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
    store_le<uint64_t>(p + 8, s.key);
    store_le<uint64_t>(p + 16, s.offset);
    store_le<uint64_t>(p + 24, s.length);
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

// ---- Cancel ----

namespace {
DecodeError check_cancel(const Cancel& c) noexcept {
  if (c.status == 0 || !valid_status(c.status) || !valid_op(static_cast<uint8_t>(c.op))) {
    return DecodeError::kBadField;
  }
  if (c.op == OpKind::kRead && c.sent_bytes != 0) {
    return DecodeError::kBadField;  // a read's initiator sends no payload
  }
  if (c.sent_bytes > kTransferBytesMax) {
    return DecodeError::kLengthOverLimit;
  }
  return DecodeError::kNone;
}
}  // namespace

Result<Cancel> decode_cancel_body(const FrameHeader& header, ByteSpan body) noexcept {
  if (header.type != FrameType::kCancel) {
    return DecodeError::kUnknownType;
  }
  if (body.size() < header.body_bytes) {
    return DecodeError::kTruncated;
  }
  if (header.body_bytes != kCancelBodyBytes) {
    return DecodeError::kLengthMismatch;
  }
  const std::byte* p = body.data();
  Cancel c;
  c.seq = header.seq;
  c.transfer_id = load_le<uint64_t>(p);
  c.sent_bytes = load_le<uint64_t>(p + 8);
  c.status = load_le<uint16_t>(p + 16);
  const uint8_t op = load_le<uint8_t>(p + 18);
  if (!valid_op(op) || load_le<uint8_t>(p + 19) != 0 || load_le<uint32_t>(p + 20) != 0) {
    return DecodeError::kBadField;
  }
  c.op = static_cast<OpKind>(op);
  if (DecodeError e = check_cancel(c); e != DecodeError::kNone) {
    return e;
  }
  return c;
}

Result<size_t> encode_cancel(const Cancel& cancel, MutableByteSpan out) noexcept {
  if (DecodeError e = check_cancel(cancel); e != DecodeError::kNone) {
    return e;
  }
  if (DecodeError e = begin_frame(FrameType::kCancel, kCancelBodyBytes, 0, out, cancel.seq);
      e != DecodeError::kNone) {
    return e;
  }
  std::byte* p = out.data() + kHeaderBytes;
  store_le<uint64_t>(p, cancel.transfer_id);
  store_le<uint64_t>(p + 8, cancel.sent_bytes);
  store_le<uint16_t>(p + 16, cancel.status);
  store_le<uint8_t>(p + 18, static_cast<uint8_t>(cancel.op));
  store_le<uint8_t>(p + 19, 0);
  store_le<uint32_t>(p + 20, 0);
  return kCancelFrameBytes;
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

}  // namespace ringxfer::wire
