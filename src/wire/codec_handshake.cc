// The frame codec: hello, hello ack, a hello's auth bytes, and the auth frames.
#include "wire/codec.h"

#include "wire/codec_internal.h"

namespace ringxfer::wire {

using namespace codec_internal;  // NOLINT: the codec's own helpers

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

// ---- A hello's auth bytes ----

Result<HelloAuth> decode_hello_auth(ByteSpan auth) noexcept {
  if (auth.size() != kHelloAuthBytes) {
    return DecodeError::kLengthMismatch;
  }
  HelloAuth a;
  a.key_id = load_le<uint32_t>(auth.data());
  if (a.key_id == 0) {
    return DecodeError::kBadField;
  }
  std::memcpy(a.nonce.data(), auth.data() + 4, kAuthNonceBytes);
  return a;
}

Result<size_t> encode_hello_auth(const HelloAuth& auth, MutableByteSpan out) noexcept {
  if (auth.key_id == 0) {
    return DecodeError::kBadField;
  }
  if (out.size() < kHelloAuthBytes) {
    return DecodeError::kBufferTooSmall;
  }
  store_le<uint32_t>(out.data(), auth.key_id);
  put_bytes(out.data() + 4, auth.nonce.data(), kAuthNonceBytes);
  return kHelloAuthBytes;
}

// ---- AuthChallenge ----

Result<AuthChallenge> decode_auth_challenge_body(const FrameHeader& header,
                                                 ByteSpan body) noexcept {
  if (header.type != FrameType::kAuthChallenge) {
    return DecodeError::kUnknownType;
  }
  if (body.size() < header.body_bytes) {
    return DecodeError::kTruncated;
  }
  if (header.body_bytes != kAuthChallengeBodyBytes) {
    return DecodeError::kLengthMismatch;
  }
  const std::byte* p = body.data();
  AuthChallenge c;
  c.key_id = load_le<uint32_t>(p);
  if (c.key_id == 0 || load_le<uint32_t>(p + 4) != 0) {
    return DecodeError::kBadField;
  }
  std::memcpy(c.nonce.data(), p + 8, kAuthNonceBytes);
  std::memcpy(c.mac.data(), p + 8 + kAuthNonceBytes, kAuthMacBytes);
  c.instance_id = load_le<uint64_t>(p + 8 + kAuthNonceBytes + kAuthMacBytes);
  return c;
}

Result<size_t> encode_auth_challenge(const AuthChallenge& challenge, MutableByteSpan out) noexcept {
  if (challenge.key_id == 0) {
    return DecodeError::kBadField;
  }
  if (DecodeError e = begin_frame(FrameType::kAuthChallenge, kAuthChallengeBodyBytes, 0, out);
      e != DecodeError::kNone) {
    return e;
  }
  std::byte* p = out.data() + kHeaderBytes;
  store_le<uint32_t>(p, challenge.key_id);
  store_le<uint32_t>(p + 4, 0);
  put_bytes(p + 8, challenge.nonce.data(), kAuthNonceBytes);
  put_bytes(p + 8 + kAuthNonceBytes, challenge.mac.data(), kAuthMacBytes);
  store_le<uint64_t>(p + 8 + kAuthNonceBytes + kAuthMacBytes, challenge.instance_id);
  return auth_challenge_frame_bytes();
}

// ---- AuthProof ----

Result<AuthProof> decode_auth_proof_body(const FrameHeader& header, ByteSpan body) noexcept {
  if (header.type != FrameType::kAuthProof) {
    return DecodeError::kUnknownType;
  }
  if (body.size() < header.body_bytes) {
    return DecodeError::kTruncated;
  }
  if (header.body_bytes != kAuthProofBodyBytes) {
    return DecodeError::kLengthMismatch;
  }
  const std::byte* p = body.data();
  AuthProof a;
  a.key_id = load_le<uint32_t>(p);
  if (a.key_id == 0 || load_le<uint32_t>(p + 4) != 0) {
    return DecodeError::kBadField;
  }
  std::memcpy(a.mac.data(), p + 8, kAuthMacBytes);
  return a;
}

Result<size_t> encode_auth_proof(const AuthProof& proof, MutableByteSpan out) noexcept {
  if (proof.key_id == 0) {
    return DecodeError::kBadField;
  }
  if (DecodeError e = begin_frame(FrameType::kAuthProof, kAuthProofBodyBytes, 0, out);
      e != DecodeError::kNone) {
    return e;
  }
  std::byte* p = out.data() + kHeaderBytes;
  store_le<uint32_t>(p, proof.key_id);
  store_le<uint32_t>(p + 4, 0);
  put_bytes(p + 8, proof.mac.data(), kAuthMacBytes);
  return auth_proof_frame_bytes();
}

}  // namespace ringxfer::wire
