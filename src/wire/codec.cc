// The frame codec: the header, decode errors' names and whole-frame decoders.
#include "wire/codec.h"

#include "wire/codec_internal.h"

namespace ringxfer::wire {

using namespace codec_internal;  // NOLINT: the codec's own helpers

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
  if (load_le<uint16_t>(p + 6) != 0 || (is_handshake(h.type) && h.seq != 0)) {
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

// ---- Whole frames ----

Result<Hello> decode_hello(ByteSpan in) noexcept {
  return decode_whole<Hello>(in, is_type<FrameType::kHello>, decode_hello_body);
}
Result<HelloAck> decode_hello_ack(ByteSpan in) noexcept {
  return decode_whole<HelloAck>(in, is_type<FrameType::kHelloAck>, decode_hello_ack_body);
}
Result<AuthChallenge> decode_auth_challenge(ByteSpan in) noexcept {
  return decode_whole<AuthChallenge>(in, is_type<FrameType::kAuthChallenge>,
                                     decode_auth_challenge_body);
}
Result<AuthProof> decode_auth_proof(ByteSpan in) noexcept {
  return decode_whole<AuthProof>(in, is_type<FrameType::kAuthProof>, decode_auth_proof_body);
}
Result<Request> decode_request(ByteSpan in) noexcept {
  return decode_whole<Request>(in, is_request, decode_request_body);
}
Result<Completion> decode_completion(ByteSpan in) noexcept {
  return decode_whole<Completion>(in, is_type<FrameType::kCompletion>, decode_completion_body);
}
Result<Cancel> decode_cancel(ByteSpan in) noexcept {
  return decode_whole<Cancel>(in, is_type<FrameType::kCancel>, decode_cancel_body);
}
Result<DataHeader> decode_data(ByteSpan in) noexcept {
  return decode_whole<DataHeader>(in, is_type<FrameType::kData>, decode_data_body);
}
Result<DataBatch> decode_data_batch(ByteSpan in) noexcept {
  return decode_whole<DataBatch>(in, is_type<FrameType::kDataBatch>, decode_data_batch_body);
}

}  // namespace ringxfer::wire
