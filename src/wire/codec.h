// Encoding and decoding of the frames in wire/frames.h: pure functions over byte spans.
// Decoders never read outside their input, never allocate and never throw; they
// return the first DecodeError they meet, in the order the fields are laid out.
// Encoders check the same rules, so an encoded frame always decodes.
//
// A stream reader uses the two-step form: decode_header() on kHeaderBytes, then the
// body decoder of header.type on exactly header.body_bytes bytes. The whole-frame
// decoders (decode_hello() ...) do both on a buffer that starts with a frame;
// bytes past the body are ignored (they are payload or the next frame).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "wire/frames.h"
#include "wire/limits.h"

namespace ringxfer::wire {

using ByteSpan = std::span<const std::byte>;
using MutableByteSpan = std::span<std::byte>;

// ---- Sizes of encoded frames (header + body, without payload). ----
constexpr size_t hello_frame_bytes(size_t key_bytes, size_t auth_bytes) noexcept {
  return kHeaderBytes + kHelloFixedBytes + key_bytes + auth_bytes;
}
constexpr size_t hello_ack_frame_bytes(size_t key_bytes, size_t message_bytes) noexcept {
  return kHeaderBytes + kHelloAckFixedBytes + key_bytes + message_bytes;
}
constexpr size_t request_frame_bytes(size_t segments) noexcept {
  return kHeaderBytes + kRequestFixedBytes + segments * kSegmentBytes;
}
constexpr size_t completion_frame_bytes(size_t message_bytes) noexcept {
  return kHeaderBytes + kCompletionFixedBytes + message_bytes;
}
constexpr size_t auth_challenge_frame_bytes() noexcept {
  return kHeaderBytes + kAuthChallengeBodyBytes;
}
constexpr size_t auth_proof_frame_bytes() noexcept { return kHeaderBytes + kAuthProofBodyBytes; }
inline constexpr size_t kDataFrameBytes = kHeaderBytes + kDataBodyBytes;
inline constexpr size_t kCancelFrameBytes = kHeaderBytes + kCancelBodyBytes;
constexpr size_t data_batch_frame_bytes(size_t entries) noexcept {
  return kHeaderBytes + kBatchFixedBytes + entries * kBatchEntryBytes;
}

// ---- Decoding. ----

// Checks magic, version, type, reserved fields, and the body and payload lengths
// against the limits of the frame's type. Needs kHeaderBytes of input.
Result<FrameHeader> decode_header(ByteSpan in) noexcept;

// Body decoders: `header` came from decode_header(), `body` holds at least
// header.body_bytes bytes (only those are read). The header's type must match.
Result<Hello> decode_hello_body(const FrameHeader& header, ByteSpan body) noexcept;
Result<HelloAck> decode_hello_ack_body(const FrameHeader& header, ByteSpan body) noexcept;
Result<AuthChallenge> decode_auth_challenge_body(const FrameHeader& header, ByteSpan body) noexcept;
Result<AuthProof> decode_auth_proof_body(const FrameHeader& header, ByteSpan body) noexcept;
// For kWriteRequest and kReadRequest alike; the type gives Request::op.
Result<Request> decode_request_body(const FrameHeader& header, ByteSpan body) noexcept;
Result<Completion> decode_completion_body(const FrameHeader& header, ByteSpan body) noexcept;
Result<Cancel> decode_cancel_body(const FrameHeader& header, ByteSpan body) noexcept;
Result<DataHeader> decode_data_body(const FrameHeader& header, ByteSpan body) noexcept;
Result<DataBatch> decode_data_batch_body(const FrameHeader& header, ByteSpan body) noexcept;

// Whole-frame decoders: header and body at the start of `in`. A frame of another
// type than the one asked for is kUnknownType.
Result<Hello> decode_hello(ByteSpan in) noexcept;
Result<HelloAck> decode_hello_ack(ByteSpan in) noexcept;
Result<AuthChallenge> decode_auth_challenge(ByteSpan in) noexcept;
Result<AuthProof> decode_auth_proof(ByteSpan in) noexcept;
Result<Request> decode_request(ByteSpan in) noexcept;
Result<Completion> decode_completion(ByteSpan in) noexcept;
Result<Cancel> decode_cancel(ByteSpan in) noexcept;
Result<DataHeader> decode_data(ByteSpan in) noexcept;
Result<DataBatch> decode_data_batch(ByteSpan in) noexcept;

// ---- A hello's auth bytes (Hello::auth), when the initiator authenticates. ----

// Decodes Hello::auth: exactly kHelloAuthBytes (else kLengthMismatch), key id not 0
// (kBadField). An empty span means the hello does not authenticate: check that first.
Result<HelloAuth> decode_hello_auth(ByteSpan auth) noexcept;
// Writes kHelloAuthBytes at the start of `out`, for Hello::auth to point at.
Result<size_t> encode_hello_auth(const HelloAuth& auth, MutableByteSpan out) noexcept;

// ---- Encoding. Each returns the bytes written at the start of `out`. ----
Result<size_t> encode_hello(const Hello& hello, MutableByteSpan out) noexcept;
Result<size_t> encode_hello_ack(const HelloAck& ack, MutableByteSpan out) noexcept;
// Writes auth_challenge_frame_bytes() / auth_proof_frame_bytes().
Result<size_t> encode_auth_challenge(const AuthChallenge& challenge, MutableByteSpan out) noexcept;
Result<size_t> encode_auth_proof(const AuthProof& proof, MutableByteSpan out) noexcept;
// `parts`: 0 or 1 for a whole transfer, else 2..kPartsMax (see Request::parts).
// `seq`: the request sequence (frames.h), carried in the header.
Result<size_t> encode_request(OpKind op, uint64_t transfer_id, std::span<const Segment> segments,
                              MutableByteSpan out, uint16_t parts = 0, uint32_t seq = 0) noexcept;
Result<size_t> encode_completion(const Completion& completion, MutableByteSpan out) noexcept;
// Writes kCancelFrameBytes. A status of 0 (OK), or sent_bytes on a read, is kBadField.
Result<size_t> encode_cancel(const Cancel& cancel, MutableByteSpan out) noexcept;
// Writes header and body (kDataFrameBytes); the caller sends `length` payload bytes next.
Result<size_t> encode_data(const DataHeader& data, MutableByteSpan out) noexcept;
// Writes header and entry table; the caller sends the entries' payloads next, in order.
Result<size_t> encode_data_batch(uint64_t transfer_id, std::span<const BatchEntry> entries,
                                 MutableByteSpan out, uint32_t seq = 0) noexcept;

}  // namespace ringxfer::wire
