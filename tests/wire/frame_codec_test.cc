#include <array>
#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "support/bytes.h"
#include "wire/codec.h"

namespace ringxfer::wire {
namespace {

using testing::as_bytes;
using testing::Bytes;
using testing::patch_le;
using testing::prefix;
using testing::read_le;

constexpr uint64_t kU64Max = std::numeric_limits<uint64_t>::max();

// ---- Frame builders: a valid frame of each kind, encoded by the codec itself. ----

enum class Kind {
  kHello,
  kHelloAck,
  kAuthChallenge,
  kAuthProof,
  kRequest,
  kCompletion,
  kCancel,
  kData,
  kDataBatch
};

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::kHello:
      return "hello";
    case Kind::kHelloAck:
      return "hello_ack";
    case Kind::kAuthChallenge:
      return "auth_challenge";
    case Kind::kAuthProof:
      return "auth_proof";
    case Kind::kRequest:
      return "request";
    case Kind::kCompletion:
      return "completion";
    case Kind::kCancel:
      return "cancel";
    case Kind::kData:
      return "data";
    case Kind::kDataBatch:
      return "data_batch";
  }
  return "?";
}

template <typename Fn>
Bytes encode_into(size_t size, Fn&& fn) {
  Bytes out(size);
  Result<size_t> n = fn(MutableByteSpan(out));
  EXPECT_TRUE(n.ok()) << to_string(n.error());
  EXPECT_EQ(n.ok() ? *n : 0, size);
  return out;
}

Bytes hello_frame(const Hello& h) {
  return encode_into(hello_frame_bytes(h.key.size(), h.auth.size()),
                     [&](MutableByteSpan o) { return encode_hello(h, o); });
}
Bytes hello_ack_frame(const HelloAck& a) {
  return encode_into(hello_ack_frame_bytes(a.key.size(), a.message.size()),
                     [&](MutableByteSpan o) { return encode_hello_ack(a, o); });
}
Bytes auth_challenge_frame(const AuthChallenge& c) {
  return encode_into(auth_challenge_frame_bytes(),
                     [&](MutableByteSpan o) { return encode_auth_challenge(c, o); });
}
Bytes auth_proof_frame(const AuthProof& a) {
  return encode_into(auth_proof_frame_bytes(),
                     [&](MutableByteSpan o) { return encode_auth_proof(a, o); });
}
Bytes request_frame(OpKind op, uint64_t id, const std::vector<Segment>& segs) {
  return encode_into(request_frame_bytes(segs.size()),
                     [&](MutableByteSpan o) { return encode_request(op, id, segs, o); });
}
Bytes completion_frame(const Completion& c) {
  return encode_into(completion_frame_bytes(c.message.size()),
                     [&](MutableByteSpan o) { return encode_completion(c, o); });
}
Bytes cancel_frame(const Cancel& c) {
  return encode_into(kCancelFrameBytes, [&](MutableByteSpan o) { return encode_cancel(c, o); });
}
Bytes data_frame(const DataHeader& d) {
  return encode_into(kDataFrameBytes, [&](MutableByteSpan o) { return encode_data(d, o); });
}
Bytes batch_frame(uint64_t id, const std::vector<BatchEntry>& entries) {
  return encode_into(data_batch_frame_bytes(entries.size()),
                     [&](MutableByteSpan o) { return encode_data_batch(id, entries, o); });
}

const std::string kAuth = "token-bytes";

Hello sample_hello() {
  Hello h;
  h.channel = ChannelKind::kData;
  h.stripe = 3;
  h.capabilities = kCapDataBatch | kCapZeroCopy;
  h.instance_id = 0x1122334455667788;
  h.key = "prefill-0";
  h.auth = as_bytes(kAuth);
  return h;
}

HelloAck sample_hello_ack() {
  HelloAck a;
  a.status = 9;
  a.capabilities = kCapDataBatch;
  a.instance_id = 42;
  a.key = "decode-7";
  a.message = "duplicate connection";
  return a;
}

// Distinct bytes in every position, so a field read from the wrong place shows.
template <size_t N>
std::array<uint8_t, N> pattern(uint8_t first) {
  std::array<uint8_t, N> a{};
  for (size_t i = 0; i < N; ++i) {
    a[i] = static_cast<uint8_t>(first + i);
  }
  return a;
}

AuthChallenge sample_auth_challenge() {
  return AuthChallenge{0x0a0b0c0d, pattern<kAuthNonceBytes>(0x10), pattern<kAuthMacBytes>(0x40),
                       0x1122334455667788};
}

AuthProof sample_auth_proof() { return AuthProof{77, pattern<kAuthMacBytes>(0x90)}; }

// Keys of every shape: the codec carries them; only the target's registry judges them.
const std::vector<Segment> kSegments = {
    {1, 0x0102030405060708, 0, 4096}, {2, kU64Max, 100, 7}, {3, 0, (uint64_t{1} << 39), 1}};
const std::vector<BatchEntry> kEntries = {{0, 8, 0}, {1, 8, 16}, {7, 3, 1}};

Completion sample_completion() {
  Completion c;
  c.transfer_id = 99;
  c.op = OpKind::kRead;
  c.status = 11;
  c.message = "offset+size beyond region 3";
  return c;
}

Cancel sample_cancel() {
  Cancel c;
  c.transfer_id = 0x0102030405060708;
  c.seq = 0x11223344;
  c.op = OpKind::kWrite;
  c.sent_bytes = (uint64_t{1} << 33) + 5;
  c.status = 9;  // FAILED_PRECONDITION
  return c;
}

DataHeader sample_data() { return DataHeader{77, 5, 4096, 65536}; }

Bytes valid_frame(Kind k) {
  switch (k) {
    case Kind::kHello:
      return hello_frame(sample_hello());
    case Kind::kHelloAck:
      return hello_ack_frame(sample_hello_ack());
    case Kind::kAuthChallenge:
      return auth_challenge_frame(sample_auth_challenge());
    case Kind::kAuthProof:
      return auth_proof_frame(sample_auth_proof());
    case Kind::kRequest:
      return request_frame(OpKind::kWrite, 1234, kSegments);
    case Kind::kCompletion:
      return completion_frame(sample_completion());
    case Kind::kCancel:
      return cancel_frame(sample_cancel());
    case Kind::kData:
      return data_frame(sample_data());
    case Kind::kDataBatch:
      return batch_frame(55, kEntries);
  }
  return {};
}

// Decodes `b` as a whole frame of kind `k`; returns the error (kNone on success).
DecodeError decode_as(Kind k, const Bytes& b) {
  const ByteSpan in(b);
  switch (k) {
    case Kind::kHello:
      return decode_hello(in).error();
    case Kind::kHelloAck:
      return decode_hello_ack(in).error();
    case Kind::kAuthChallenge:
      return decode_auth_challenge(in).error();
    case Kind::kAuthProof:
      return decode_auth_proof(in).error();
    case Kind::kRequest:
      return decode_request(in).error();
    case Kind::kCompletion:
      return decode_completion(in).error();
    case Kind::kCancel:
      return decode_cancel(in).error();
    case Kind::kData:
      return decode_data(in).error();
    case Kind::kDataBatch:
      return decode_data_batch(in).error();
  }
  return DecodeError::kNone;
}

// Decodes `body` with the body decoder of kind `k`; returns the error (kNone on success).
DecodeError decode_body_as(Kind k, const FrameHeader& h, const Bytes& body) {
  const ByteSpan b(body);
  switch (k) {
    case Kind::kHello:
      return decode_hello_body(h, b).error();
    case Kind::kHelloAck:
      return decode_hello_ack_body(h, b).error();
    case Kind::kAuthChallenge:
      return decode_auth_challenge_body(h, b).error();
    case Kind::kAuthProof:
      return decode_auth_proof_body(h, b).error();
    case Kind::kRequest:
      return decode_request_body(h, b).error();
    case Kind::kCompletion:
      return decode_completion_body(h, b).error();
    case Kind::kCancel:
      return decode_cancel_body(h, b).error();
    case Kind::kData:
      return decode_data_body(h, b).error();
    case Kind::kDataBatch:
      return decode_data_batch_body(h, b).error();
  }
  return DecodeError::kNone;
}

constexpr Kind kAllKinds[] = {Kind::kHello,     Kind::kHelloAck, Kind::kAuthChallenge,
                              Kind::kAuthProof, Kind::kRequest,  Kind::kCompletion,
                              Kind::kCancel,    Kind::kData,     Kind::kDataBatch};

// ---- Round trips ----

TEST(FrameCodec, RoundTripsHello) {
  const Hello h = sample_hello();
  const Bytes b = hello_frame(h);
  Result<Hello> d = decode_hello(b);
  ASSERT_TRUE(d.ok()) << to_string(d.error());
  EXPECT_EQ(d->version_min, kVersionMin);
  EXPECT_EQ(d->version_max, kVersionMax);
  EXPECT_EQ(d->channel, ChannelKind::kData);
  EXPECT_EQ(d->stripe, 3);
  EXPECT_EQ(d->capabilities, h.capabilities);
  EXPECT_EQ(d->instance_id, h.instance_id);
  EXPECT_EQ(d->key, "prefill-0");
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(d->auth.data()), d->auth.size()), kAuth);
}

TEST(FrameCodec, RoundTripsControlHelloWithoutAuth) {
  Hello h;
  h.key = "k";
  const Bytes b = hello_frame(h);
  Result<Hello> d = decode_hello(b);
  ASSERT_TRUE(d.ok()) << to_string(d.error());
  EXPECT_EQ(d->channel, ChannelKind::kControl);
  EXPECT_EQ(d->stripe, 0);
  EXPECT_EQ(d->key, "k");
  EXPECT_TRUE(d->auth.empty());
}

TEST(FrameCodec, RoundTripsHelloAck) {
  const HelloAck a = sample_hello_ack();
  const Bytes b = hello_ack_frame(a);
  Result<HelloAck> d = decode_hello_ack(b);
  ASSERT_TRUE(d.ok()) << to_string(d.error());
  EXPECT_EQ(d->version, kVersion);
  EXPECT_EQ(d->status, 9);
  EXPECT_EQ(d->capabilities, kCapDataBatch);
  EXPECT_EQ(d->instance_id, 42u);
  EXPECT_EQ(d->key, "decode-7");
  EXPECT_EQ(d->message, "duplicate connection");
}

TEST(FrameCodec, RoundTripsAuthChallenge) {
  const Bytes b = auth_challenge_frame(sample_auth_challenge());
  EXPECT_EQ(b.size(), kHeaderBytes + 80);
  Result<AuthChallenge> d = decode_auth_challenge(b);
  ASSERT_TRUE(d.ok()) << to_string(d.error());
  EXPECT_EQ(*d, sample_auth_challenge());
}

TEST(FrameCodec, RoundTripsAuthProof) {
  const Bytes b = auth_proof_frame(sample_auth_proof());
  EXPECT_EQ(b.size(), kHeaderBytes + 40);
  Result<AuthProof> d = decode_auth_proof(b);
  ASSERT_TRUE(d.ok()) << to_string(d.error());
  EXPECT_EQ(*d, sample_auth_proof());
}

TEST(FrameCodec, RoundTripsAuthFramesAtLimits) {
  AuthChallenge c{0xffffffff, {}, {}};
  c.nonce.fill(0xff);
  c.mac.fill(0xff);
  Result<AuthChallenge> dc = decode_auth_challenge(auth_challenge_frame(c));
  ASSERT_TRUE(dc.ok()) << to_string(dc.error());
  EXPECT_EQ(*dc, c);
  const AuthProof p{1, {}};  // the smallest key id, an all-zero mac
  Result<AuthProof> dp = decode_auth_proof(auth_proof_frame(p));
  ASSERT_TRUE(dp.ok()) << to_string(dp.error());
  EXPECT_EQ(*dp, p);
}

// ---- A hello's auth bytes ----

TEST(FrameCodec, RoundTripsHelloAuthInsideAHello) {
  const HelloAuth auth{0xfeedf00d, pattern<kAuthNonceBytes>(0xc0)};
  std::array<std::byte, kHelloAuthBytes> buf{};
  Result<size_t> n = encode_hello_auth(auth, buf);
  ASSERT_TRUE(n.ok()) << to_string(n.error());
  EXPECT_EQ(*n, kHelloAuthBytes);
  EXPECT_EQ(read_le(Bytes(buf.begin(), buf.end()), 0, 4), 0xfeedf00du);
  EXPECT_EQ(buf[4], std::byte{0xc0});
  EXPECT_EQ(buf[35], std::byte{0xdf});

  Hello h = sample_hello();
  h.auth = buf;
  const Bytes b = hello_frame(h);
  Result<Hello> d = decode_hello(b);
  ASSERT_TRUE(d.ok()) << to_string(d.error());
  Result<HelloAuth> da = decode_hello_auth(d->auth);
  ASSERT_TRUE(da.ok()) << to_string(da.error());
  EXPECT_EQ(*da, auth);
}

TEST(FrameCodec, RejectsHelloAuthOfAnyOtherLength) {
  const Bytes big(kAuthBytesMax, std::byte{1});
  for (size_t n : {size_t{0}, size_t{1}, size_t{4}, kHelloAuthBytes - 1, kHelloAuthBytes + 1,
                   size_t{64}, kAuthBytesMax}) {
    SCOPED_TRACE(n);
    EXPECT_EQ(decode_hello_auth(prefix(big, n)).error(), DecodeError::kLengthMismatch);
  }
  EXPECT_TRUE(decode_hello_auth(prefix(big, kHelloAuthBytes)).ok());
}

TEST(FrameCodec, RejectsHelloAuthWithKeyIdZero) {
  const Bytes zero(kHelloAuthBytes, std::byte{0});
  EXPECT_EQ(decode_hello_auth(zero).error(), DecodeError::kBadField);
  Bytes out(kHelloAuthBytes);
  EXPECT_EQ(encode_hello_auth(HelloAuth{}, out).error(), DecodeError::kBadField);
}

TEST(FrameCodec, HelloAuthEncoderRejectsEveryShortBuffer) {
  for (size_t n = 0; n < kHelloAuthBytes; ++n) {
    SCOPED_TRACE(n);
    Bytes out(n);
    EXPECT_EQ(encode_hello_auth(HelloAuth{1, {}}, out).error(), DecodeError::kBufferTooSmall);
  }
}

TEST(FrameCodec, RoundTripsRequestParts) {
  for (uint16_t parts : {uint16_t{0}, uint16_t{1}, uint16_t{2}, kPartsMax}) {
    std::vector<std::byte> b(request_frame_bytes(kSegments.size()));
    ASSERT_TRUE(encode_request(OpKind::kWrite, 5, kSegments, b, parts).ok());
    Result<Request> d = decode_request(b);
    ASSERT_TRUE(d.ok()) << to_string(d.error());
    EXPECT_EQ(d->parts, parts);
  }
  std::vector<std::byte> b(request_frame_bytes(kSegments.size()));
  EXPECT_EQ(encode_request(OpKind::kWrite, 5, kSegments, b, kPartsMax + 1).error(),
            DecodeError::kBadField);
}

TEST(FrameCodec, RoundTripsWriteAndReadRequests) {
  for (OpKind op : {OpKind::kWrite, OpKind::kRead}) {
    SCOPED_TRACE(static_cast<int>(op));
    const Bytes b = request_frame(op, 0xdeadbeefcafe, kSegments);
    Result<Request> d = decode_request(b);
    ASSERT_TRUE(d.ok()) << to_string(d.error());
    EXPECT_EQ(d->op, op);
    EXPECT_EQ(d->transfer_id, 0xdeadbeefcafeu);
    ASSERT_EQ(d->segments.size(), kSegments.size());
    std::vector<Segment> got(d->segments.begin(), d->segments.end());
    EXPECT_EQ(got, kSegments);
    EXPECT_EQ(d->total_bytes, 4096u + 7u + 1u);
  }
}

TEST(FrameCodec, RoundTripsCompletion) {
  const Bytes b = completion_frame(sample_completion());
  Result<Completion> d = decode_completion(b);
  ASSERT_TRUE(d.ok()) << to_string(d.error());
  EXPECT_EQ(d->transfer_id, 99u);
  EXPECT_EQ(d->op, OpKind::kRead);
  EXPECT_EQ(d->status, 11);
  EXPECT_EQ(d->message, "offset+size beyond region 3");
}

TEST(FrameCodec, RoundTripsCancel) {
  const Cancel c = sample_cancel();
  const Bytes b = cancel_frame(c);
  ASSERT_EQ(b.size(), kCancelFrameBytes);
  Result<Cancel> d = decode_cancel(b);
  ASSERT_TRUE(d.ok()) << to_string(d.error());
  EXPECT_EQ(*d, c);
  Cancel r;
  r.transfer_id = 3;
  r.seq = 1;
  r.op = OpKind::kRead;
  r.status = 1;  // CANCELLED
  Result<Cancel> dr = decode_cancel(cancel_frame(r));
  ASSERT_TRUE(dr.ok()) << to_string(dr.error());
  EXPECT_EQ(*dr, r);
}

TEST(FrameCodec, RefusesACancelWithoutACauseOrWithAReadsPayload) {
  Bytes out(kCancelFrameBytes);
  Cancel ok_status = sample_cancel();
  ok_status.status = 0;
  EXPECT_EQ(encode_cancel(ok_status, out).error(), DecodeError::kBadField);
  Cancel over = sample_cancel();
  over.status = kStatusCodeMax + 1;
  EXPECT_EQ(encode_cancel(over, out).error(), DecodeError::kBadField);
  Cancel read = sample_cancel();
  read.op = OpKind::kRead;
  EXPECT_EQ(encode_cancel(read, out).error(), DecodeError::kBadField);
  Cancel huge = sample_cancel();
  huge.sent_bytes = kTransferBytesMax + 1;
  EXPECT_EQ(encode_cancel(huge, out).error(), DecodeError::kLengthOverLimit);
  // The same on the decoding side, field by field in a valid frame.
  const Bytes good = cancel_frame(sample_cancel());
  auto patched = [&](size_t at, uint8_t v) {
    Bytes b = good;
    b[kHeaderBytes + at] = std::byte{v};
    return decode_cancel(b).error();
  };
  EXPECT_EQ(patched(16, 0), DecodeError::kBadField);  // status 0 (low byte; high is 0)
  EXPECT_EQ(patched(18, 3), DecodeError::kBadField);  // op
  EXPECT_EQ(patched(19, 1), DecodeError::kBadField);  // rsv
  EXPECT_EQ(patched(23, 1), DecodeError::kBadField);  // rsv
  EXPECT_EQ(patched(18, 2), DecodeError::kBadField);  // a read with sent bytes
}

TEST(FrameCodec, RoundTripsSuccessCompletionWithoutMessage) {
  Completion c;
  c.transfer_id = 1;
  const Bytes b = completion_frame(c);
  Result<Completion> d = decode_completion(b);
  ASSERT_TRUE(d.ok()) << to_string(d.error());
  EXPECT_EQ(d->status, 0);
  EXPECT_EQ(d->op, OpKind::kWrite);
  EXPECT_TRUE(d->message.empty());
}

TEST(FrameCodec, RoundTripsData) {
  const Bytes b = data_frame(sample_data());
  Result<DataHeader> d = decode_data(b);
  ASSERT_TRUE(d.ok()) << to_string(d.error());
  EXPECT_EQ(*d, sample_data());
}

TEST(FrameCodec, RoundTripsDataBatch) {
  const Bytes b = batch_frame(55, kEntries);
  Result<DataBatch> d = decode_data_batch(b);
  ASSERT_TRUE(d.ok()) << to_string(d.error());
  EXPECT_EQ(d->transfer_id, 55u);
  EXPECT_EQ(d->payload_bytes, 19u);
  std::vector<BatchEntry> got(d->entries.begin(), d->entries.end());
  EXPECT_EQ(got, kEntries);
}

TEST(FrameCodec, TwoStepDecodeMatchesWholeFrameDecode) {
  for (Kind k : kAllKinds) {
    SCOPED_TRACE(kind_name(k));
    const Bytes b = valid_frame(k);
    Result<FrameHeader> h = decode_header(b);
    ASSERT_TRUE(h.ok()) << to_string(h.error());
    EXPECT_EQ(h->version, kVersion);
    EXPECT_EQ(kHeaderBytes + h->body_bytes, b.size());
    const Bytes body(b.begin() + kHeaderBytes, b.end());
    const DecodeError e = decode_body_as(k, *h, body);
    EXPECT_EQ(e, DecodeError::kNone) << to_string(e);
    EXPECT_EQ(decode_as(k, b), DecodeError::kNone);
  }
}

TEST(FrameCodec, IgnoresBytesAfterTheFrame) {
  for (Kind k : kAllKinds) {
    SCOPED_TRACE(kind_name(k));
    Bytes b = valid_frame(k);
    b.resize(b.size() + 100, std::byte{0xee});
    EXPECT_EQ(decode_as(k, b), DecodeError::kNone);
  }
}

// The exact bytes of one data frame: pins the layout (little-endian, field order) so
// that a change to the wire format cannot pass unnoticed.
TEST(FrameCodec, EncodesDataFrameToKnownBytes) {
  const Bytes b =
      data_frame(DataHeader{0x0102030405060708, 0x1a0b, 0x0000001415161718, 300, 0x21222324});
  const std::vector<uint8_t> expected = {
      'R',  'X',  'F',  'R',  3,    16,   0,    0,     // magic, version, type, flags
      24,   0,    0,    0,    0x24, 0x23, 0x22, 0x21,  // body_bytes, request sequence
      0x2c, 0x01, 0,    0,    0,    0,    0,    0,     // payload_bytes = 300
      0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01,  // transfer id
      0x0b, 0x1a, 0,    0,    0,    0,    0,    0,     // segment, reserved
      0x18, 0x17, 0x16, 0x15, 0x14, 0,    0,    0,     // offset
  };
  ASSERT_EQ(b.size(), expected.size());
  for (size_t i = 0; i < b.size(); ++i) {
    EXPECT_EQ(static_cast<uint8_t>(b[i]), expected[i]) << "byte " << i;
  }
}

// The exact bytes of one auth proof: pins its layout as EncodesDataFrameToKnownBytes does.
TEST(FrameCodec, EncodesAuthProofToKnownBytes) {
  AuthProof p{0x01020304, {}};
  p.mac = pattern<kAuthMacBytes>(0xa0);
  const Bytes b = auth_proof_frame(p);
  std::vector<uint8_t> expected = {
      'R', 'X', 'F', 'R', 3, 7, 0, 0,  // magic, version, type, flags
      40,  0,   0,   0,   0, 0, 0, 0,  // body_bytes, request sequence 0
      0,   0,   0,   0,   0, 0, 0, 0,  // payload_bytes 0
      4,   3,   2,   1,   0, 0, 0, 0,  // key id, reserved
  };
  for (uint8_t i = 0; i < kAuthMacBytes; ++i) {
    expected.push_back(static_cast<uint8_t>(0xa0 + i));
  }
  ASSERT_EQ(b.size(), expected.size());
  for (size_t i = 0; i < b.size(); ++i) {
    EXPECT_EQ(static_cast<uint8_t>(b[i]), expected[i]) << "byte " << i;
  }
}

// The exact bytes of a read request: pins the segment layout (id, key, offset, length).
TEST(FrameCodec, EncodesRequestToKnownBytes) {
  const std::vector<Segment> segs = {
      {0x0102030405060708, 0x1112131415161718, 0x0000002122232425, 0x0000003132333435}};
  Bytes b(request_frame_bytes(1));
  ASSERT_TRUE(encode_request(OpKind::kRead, 0x4142434445464748, segs, b, 2, 0x51525354).ok());
  const std::vector<uint8_t> expected = {
      'R',  'X',  'F',  'R',  3,    4,    0,    0,     // magic, version, type, flags
      48,   0,    0,    0,    0x54, 0x53, 0x52, 0x51,  // body_bytes, request sequence
      0,    0,    0,    0,    0,    0,    0,    0,     // payload_bytes 0
      0x48, 0x47, 0x46, 0x45, 0x44, 0x43, 0x42, 0x41,  // transfer id
      1,    0,    0,    0,    2,    0,    0,    0,     // segment count, parts, reserved
      0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01,  // memory id
      0x18, 0x17, 0x16, 0x15, 0x14, 0x13, 0x12, 0x11,  // key
      0x25, 0x24, 0x23, 0x22, 0x21, 0,    0,    0,     // offset
      0x35, 0x34, 0x33, 0x32, 0x31, 0,    0,    0,     // length
  };
  ASSERT_EQ(b.size(), expected.size());
  for (size_t i = 0; i < b.size(); ++i) {
    EXPECT_EQ(static_cast<uint8_t>(b[i]), expected[i]) << "byte " << i;
  }
  Result<Request> d = decode_request(b);
  ASSERT_TRUE(d.ok()) << to_string(d.error());
  EXPECT_EQ(d->segments[0], segs[0]);
}

// ---- Truncation ----

TEST(FrameCodec, RejectsEveryTruncation) {
  for (Kind k : kAllKinds) {
    const Bytes b = valid_frame(k);
    for (size_t n = 0; n < b.size(); ++n) {
      SCOPED_TRACE(std::string(kind_name(k)) + " cut at " + std::to_string(n));
      // An exact-size copy: ASan reports any read past the cut.
      EXPECT_EQ(decode_as(k, prefix(b, n)), DecodeError::kTruncated);
    }
  }
}

TEST(FrameCodec, BodyDecodersRejectShortBodies) {
  for (Kind k : kAllKinds) {
    const Bytes b = valid_frame(k);
    Result<FrameHeader> h = decode_header(b);
    ASSERT_TRUE(h.ok());
    for (size_t n = 0; n < h->body_bytes; ++n) {
      SCOPED_TRACE(std::string(kind_name(k)) + " body cut at " + std::to_string(n));
      const Bytes body(b.begin() + kHeaderBytes, b.begin() + kHeaderBytes + n);
      EXPECT_EQ(decode_body_as(k, *h, body), DecodeError::kTruncated);
    }
  }
}

// ---- Bad fields: one table, one row per field and value. ----

struct BadField {
  const char* name;
  Kind kind;
  size_t offset;  // within the frame
  size_t width;   // bytes
  uint64_t value;
  DecodeError expected;
};

constexpr size_t B = kHeaderBytes;  // body offset

const BadField kBadFields[] = {
    // Header, on frames of every kind.
    {"magic", Kind::kHello, 0, 4, 0x52465853, DecodeError::kBadMagic},
    {"magic zero", Kind::kData, 0, 4, 0, DecodeError::kBadMagic},
    {"version 0", Kind::kHello, 4, 1, 0, DecodeError::kBadVersion},
    {"version 1", Kind::kData, 4, 1, 1, DecodeError::kBadVersion},
    {"version 2 (no region keys)", Kind::kData, 4, 1, 2, DecodeError::kBadVersion},
    {"version 2 request", Kind::kRequest, 4, 1, 2, DecodeError::kBadVersion},
    {"version 4", Kind::kData, 4, 1, 4, DecodeError::kBadVersion},
    {"version 255", Kind::kCompletion, 4, 1, 255, DecodeError::kBadVersion},
    {"type 0", Kind::kHello, 5, 1, 0, DecodeError::kUnknownType},
    {"type 9", Kind::kRequest, 5, 1, 9, DecodeError::kUnknownType},
    {"cancel as a request", Kind::kRequest, 5, 1, 8, DecodeError::kLengthOverLimit},
    {"cancel body too long", Kind::kCancel, 8, 4, kCancelBodyBytes + 1,
     DecodeError::kLengthOverLimit},
    {"cancel body too short", Kind::kCancel, 8, 4, kCancelBodyBytes - 1,
     DecodeError::kLengthMismatch},
    {"payload on a cancel", Kind::kCancel, 16, 8, 1, DecodeError::kLengthOverLimit},
    {"type 15", Kind::kAuthProof, 5, 1, 15, DecodeError::kUnknownType},
    {"type 255", Kind::kData, 5, 1, 255, DecodeError::kUnknownType},
    {"header flags", Kind::kHello, 6, 2, 1, DecodeError::kBadField},
    {"hello request sequence", Kind::kHello, 12, 4, 0x80000000, DecodeError::kBadField},
    {"ack request sequence", Kind::kHelloAck, 12, 4, 1, DecodeError::kBadField},
    {"challenge request sequence", Kind::kAuthChallenge, 12, 4, 1, DecodeError::kBadField},
    {"proof request sequence", Kind::kAuthProof, 12, 4, 0xffffffff, DecodeError::kBadField},
    {"challenge flags", Kind::kAuthChallenge, 6, 2, 0x8000, DecodeError::kBadField},
    {"challenge body too long", Kind::kAuthChallenge, 8, 4, kAuthChallengeBodyBytes + 1,
     DecodeError::kLengthOverLimit},
    {"challenge body too short", Kind::kAuthChallenge, 8, 4, kAuthChallengeBodyBytes - 1,
     DecodeError::kLengthMismatch},
    {"challenge body of a proof", Kind::kAuthChallenge, 8, 4, kAuthProofBodyBytes,
     DecodeError::kLengthMismatch},
    {"challenge body zero", Kind::kAuthChallenge, 8, 4, 0, DecodeError::kLengthMismatch},
    {"proof body too long", Kind::kAuthProof, 8, 4, kAuthProofBodyBytes + 1,
     DecodeError::kLengthOverLimit},
    {"proof body of a challenge", Kind::kAuthProof, 8, 4, kAuthChallengeBodyBytes,
     DecodeError::kLengthOverLimit},
    {"proof body too short", Kind::kAuthProof, 8, 4, kAuthProofBodyBytes - 1,
     DecodeError::kLengthMismatch},
    {"payload on a challenge", Kind::kAuthChallenge, 16, 8, 1, DecodeError::kLengthOverLimit},
    {"payload on a proof", Kind::kAuthProof, 16, 8, kU64Max, DecodeError::kLengthOverLimit},
    {"hello body over limit", Kind::kHello, 8, 4, kHelloBodyBytesMax + 1,
     DecodeError::kLengthOverLimit},
    {"request body over limit", Kind::kRequest, 8, 4, 0xffffffff, DecodeError::kLengthOverLimit},
    {"completion body over limit", Kind::kCompletion, 8, 4, kCompletionBodyBytesMax + 1,
     DecodeError::kLengthOverLimit},
    {"batch body over limit", Kind::kDataBatch, 8, 4, kBatchBodyBytesMax + 1,
     DecodeError::kLengthOverLimit},
    {"data body too long", Kind::kData, 8, 4, kDataBodyBytes + 1, DecodeError::kLengthOverLimit},
    {"data body too short", Kind::kData, 8, 4, kDataBodyBytes - 1, DecodeError::kLengthMismatch},
    {"hello body below fixed part", Kind::kHello, 8, 4, kHelloFixedBytes,
     DecodeError::kLengthMismatch},
    {"request body below fixed part", Kind::kRequest, 8, 4, 3, DecodeError::kLengthMismatch},
    {"payload on a hello", Kind::kHello, 16, 8, 1, DecodeError::kLengthOverLimit},
    {"payload on a completion", Kind::kCompletion, 16, 8, kU64Max, DecodeError::kLengthOverLimit},
    {"payload on a request", Kind::kRequest, 16, 8, 1, DecodeError::kLengthOverLimit},
    {"data payload zero", Kind::kData, 16, 8, 0, DecodeError::kLengthMismatch},
    {"data payload over limit", Kind::kData, 16, 8, kDataPayloadBytesMax + 1,
     DecodeError::kLengthOverLimit},
    {"batch payload over limit", Kind::kDataBatch, 16, 8, kBatchPayloadBytesMax + 1,
     DecodeError::kLengthOverLimit},
    {"batch payload zero", Kind::kDataBatch, 16, 8, 0, DecodeError::kLengthMismatch},
    // Hello body.
    {"hello version_min 0", Kind::kHello, B + 0, 1, 0, DecodeError::kBadVersion},
    {"hello empty version range", Kind::kHello, B + 0, 2, 0x0102, DecodeError::kBadVersion},
    {"hello channel", Kind::kHello, B + 2, 1, 2, DecodeError::kBadField},
    {"hello stripe over limit", Kind::kHello, B + 3, 1, kStripesMax, DecodeError::kBadField},
    {"hello control with stripe", Kind::kHello, B + 2, 2, 0x0100, DecodeError::kBadField},
    {"hello empty key", Kind::kHello, B + 4, 2, 0, DecodeError::kBadField},
    {"hello key too long", Kind::kHello, B + 4, 2, kKeyBytesMax + 1, DecodeError::kKeyTooLong},
    {"hello key length too large", Kind::kHello, B + 4, 2, 10, DecodeError::kLengthMismatch},
    {"hello key length too small", Kind::kHello, B + 4, 2, 8, DecodeError::kLengthMismatch},
    {"hello auth over limit", Kind::kHello, B + 6, 2, kAuthBytesMax + 1,
     DecodeError::kLengthOverLimit},
    {"hello auth length", Kind::kHello, B + 6, 2, 0, DecodeError::kLengthMismatch},
    // HelloAck body.
    {"ack version 0", Kind::kHelloAck, B + 0, 1, 0, DecodeError::kBadVersion},
    {"ack version 2", Kind::kHelloAck, B + 0, 1, 2, DecodeError::kBadVersion},
    {"ack version 4", Kind::kHelloAck, B + 0, 1, 4, DecodeError::kBadVersion},
    {"ack reserved", Kind::kHelloAck, B + 1, 1, 1, DecodeError::kBadField},
    {"ack status", Kind::kHelloAck, B + 2, 2, kStatusCodeMax + 1, DecodeError::kBadField},
    {"ack empty key", Kind::kHelloAck, B + 4, 2, 0, DecodeError::kBadField},
    {"ack key too long", Kind::kHelloAck, B + 4, 2, 300, DecodeError::kKeyTooLong},
    {"ack message over limit", Kind::kHelloAck, B + 6, 2, kMessageBytesMax + 1,
     DecodeError::kLengthOverLimit},
    {"ack message length", Kind::kHelloAck, B + 6, 2, 3, DecodeError::kLengthMismatch},
    // AuthChallenge body.
    {"challenge key id 0", Kind::kAuthChallenge, B + 0, 4, 0, DecodeError::kBadField},
    {"challenge reserved low byte", Kind::kAuthChallenge, B + 4, 1, 1, DecodeError::kBadField},
    {"challenge reserved high byte", Kind::kAuthChallenge, B + 7, 1, 0x80, DecodeError::kBadField},
    // AuthProof body.
    {"proof key id 0", Kind::kAuthProof, B + 0, 4, 0, DecodeError::kBadField},
    {"proof reserved", Kind::kAuthProof, B + 4, 4, 0xffffffff, DecodeError::kBadField},
    {"proof reserved high byte", Kind::kAuthProof, B + 7, 1, 1, DecodeError::kBadField},
    // Request body.
    {"request reserved", Kind::kRequest, B + 14, 2, 1, DecodeError::kBadField},
    {"request parts over limit", Kind::kRequest, B + 12, 2, kPartsMax + 1, DecodeError::kBadField},
    {"request no segments", Kind::kRequest, B + 8, 4, 0, DecodeError::kBadField},
    {"request too many segments", Kind::kRequest, B + 8, 4, kSegmentsMax + 1,
     DecodeError::kTooManySegments},
    {"request segment count", Kind::kRequest, B + 8, 4, 4, DecodeError::kLengthMismatch},
    // Segments: +0 memory id, +8 key, +16 offset, +24 length.
    {"request zero-length segment", Kind::kRequest, B + 16 + 24, 8, 0, DecodeError::kBadField},
    {"request offset overflow", Kind::kRequest, B + 16 + 16, 8, kU64Max - 100,
     DecodeError::kOffsetOverflow},
    {"request segment over limit", Kind::kRequest, B + 16 + 24, 8, kSegmentBytesMax + 1,
     DecodeError::kLengthOverLimit},
    {"request range over limit", Kind::kRequest, B + 16 + 16, 8, kSegmentBytesMax,
     DecodeError::kLengthOverLimit},
    {"request last segment overflow", Kind::kRequest, B + 16 + 64 + 16, 8, kU64Max,
     DecodeError::kOffsetOverflow},
    {"request last segment zero length", Kind::kRequest, B + 16 + 64 + 24, 8, 0,
     DecodeError::kBadField},
    // Completion body.
    {"completion status", Kind::kCompletion, B + 8, 2, kStatusCodeMax + 1, DecodeError::kBadField},
    {"completion op 0", Kind::kCompletion, B + 10, 1, 0, DecodeError::kBadField},
    {"completion op 3", Kind::kCompletion, B + 10, 1, 3, DecodeError::kBadField},
    {"completion reserved byte", Kind::kCompletion, B + 11, 1, 1, DecodeError::kBadField},
    {"completion reserved word", Kind::kCompletion, B + 14, 2, 1, DecodeError::kBadField},
    {"completion message over limit", Kind::kCompletion, B + 12, 2, kMessageBytesMax + 1,
     DecodeError::kLengthOverLimit},
    {"completion message length", Kind::kCompletion, B + 12, 2, 0, DecodeError::kLengthMismatch},
    // Cancel body.
    {"cancel status 0", Kind::kCancel, B + 16, 2, 0, DecodeError::kBadField},
    {"cancel status", Kind::kCancel, B + 16, 2, kStatusCodeMax + 1, DecodeError::kBadField},
    {"cancel op 0", Kind::kCancel, B + 18, 1, 0, DecodeError::kBadField},
    {"cancel read with bytes", Kind::kCancel, B + 18, 1, 2, DecodeError::kBadField},
    {"cancel reserved byte", Kind::kCancel, B + 19, 1, 1, DecodeError::kBadField},
    {"cancel reserved word", Kind::kCancel, B + 20, 4, 1, DecodeError::kBadField},
    {"cancel sent over limit", Kind::kCancel, B + 8, 8, kTransferBytesMax + 1,
     DecodeError::kLengthOverLimit},
    // Data body.
    {"data reserved", Kind::kData, B + 12, 4, 1, DecodeError::kBadField},
    {"data segment over limit", Kind::kData, B + 8, 4, kSegmentsMax, DecodeError::kTooManySegments},
    {"data offset overflow", Kind::kData, B + 16, 8, kU64Max - 10, DecodeError::kOffsetOverflow},
    {"data range over limit", Kind::kData, B + 16, 8, kSegmentBytesMax,
     DecodeError::kLengthOverLimit},
    // Data batch body.
    {"batch reserved", Kind::kDataBatch, B + 12, 4, 1, DecodeError::kBadField},
    {"batch no entries", Kind::kDataBatch, B + 8, 4, 0, DecodeError::kBadField},
    {"batch too many entries", Kind::kDataBatch, B + 8, 4, kSegmentsMax + 1,
     DecodeError::kTooManySegments},
    {"batch entry count", Kind::kDataBatch, B + 8, 4, 2, DecodeError::kLengthMismatch},
    {"batch entry segment", Kind::kDataBatch, B + 16, 4, kSegmentsMax,
     DecodeError::kTooManySegments},
    {"batch entry zero length", Kind::kDataBatch, B + 16 + 4, 4, 0, DecodeError::kBadField},
    {"batch entry offset overflow", Kind::kDataBatch, B + 16 + 8, 8, kU64Max - 2,
     DecodeError::kOffsetOverflow},
    {"batch payload sum", Kind::kDataBatch, 16, 8, 20, DecodeError::kLengthMismatch},
    {"batch entry length vs sum", Kind::kDataBatch, B + 16 + 4, 4, 9, DecodeError::kLengthMismatch},
};

TEST(FrameCodec, RejectsEveryBadField) {
  for (const BadField& row : kBadFields) {
    SCOPED_TRACE(row.name);
    Bytes b = valid_frame(row.kind);
    ASSERT_NE(read_le(b, row.offset, row.width), row.value) << "row changes nothing";
    patch_le(b, row.offset, row.width, row.value);
    EXPECT_EQ(decode_as(row.kind, b), row.expected)
        << "got " << to_string(decode_as(row.kind, b)) << ", want " << to_string(row.expected);
  }
}

TEST(FrameCodec, RejectsRequestWhoseSegmentsSumOverLimit) {
  // Each segment is within its own limit; together they exceed kTransferBytesMax.
  Bytes b = request_frame(OpKind::kRead, 1, {{1, 11, 0, 1}, {2, 22, 0, 1}});
  patch_le(b, B + 16 + 24, 8, kSegmentBytesMax);
  patch_le(b, B + 16 + kSegmentBytes + 24, 8, kSegmentBytesMax);
  EXPECT_EQ(decode_request(b).error(), DecodeError::kLengthOverLimit);
}

TEST(FrameCodec, RejectsBodyLongerThanItsFields) {
  // body_bytes one larger than the fields account for, with the byte present.
  for (Kind k :
       {Kind::kHello, Kind::kHelloAck, Kind::kRequest, Kind::kCompletion, Kind::kDataBatch}) {
    SCOPED_TRACE(kind_name(k));
    Bytes b = valid_frame(k);
    patch_le(b, 8, 4, read_le(b, 8, 4) + 1);
    b.push_back(std::byte{0});
    EXPECT_EQ(decode_as(k, b), DecodeError::kLengthMismatch);
  }
}

TEST(FrameCodec, RejectsFrameOfAnotherType) {
  for (Kind k : kAllKinds) {
    for (Kind other : kAllKinds) {
      if (k == other) {
        continue;
      }
      SCOPED_TRACE(std::string(kind_name(k)) + " as " + kind_name(other));
      EXPECT_EQ(decode_as(other, valid_frame(k)), DecodeError::kUnknownType);
    }
  }
}

TEST(FrameCodec, NamesEveryError) {
  EXPECT_EQ(to_string(DecodeError::kTruncated), "truncated");
  EXPECT_EQ(to_string(DecodeError::kOffsetOverflow), "offset+length overflow");
  for (int e = 0; e <= static_cast<int>(DecodeError::kBufferTooSmall); ++e) {
    EXPECT_NE(to_string(static_cast<DecodeError>(e)), "unknown decode error") << e;
  }
}

// ---- Limits: every field at its limit is accepted. ----

TEST(FrameCodec, AcceptsHelloAtLimits) {
  const std::string key(kKeyBytesMax, 'k');
  const std::vector<std::byte> auth(kAuthBytesMax, std::byte{0x5a});
  Hello h;
  h.channel = ChannelKind::kData;
  h.stripe = kStripesMax - 1;
  h.capabilities = kU64Max;
  h.instance_id = kU64Max;
  h.key = key;
  h.auth = auth;
  const Bytes b = hello_frame(h);
  EXPECT_EQ(b.size(), kHeaderBytes + kHelloBodyBytesMax);
  Result<Hello> d = decode_hello(b);
  ASSERT_TRUE(d.ok()) << to_string(d.error());
  EXPECT_EQ(d->key, key);
  EXPECT_EQ(d->auth.size(), kAuthBytesMax);
  EXPECT_EQ(d->stripe, kStripesMax - 1);
}

TEST(FrameCodec, AcceptsHelloAckAndCompletionAtLimits) {
  const std::string key(kKeyBytesMax, 'a');
  const std::string message(kMessageBytesMax, 'm');
  HelloAck a;
  a.status = kStatusCodeMax;
  a.key = key;
  a.message = message;
  const Bytes ba = hello_ack_frame(a);
  Result<HelloAck> da = decode_hello_ack(ba);
  ASSERT_TRUE(da.ok()) << to_string(da.error());
  EXPECT_EQ(da->message.size(), kMessageBytesMax);

  Completion c;
  c.transfer_id = kU64Max;
  c.status = kStatusCodeMax;
  c.message = message;
  const Bytes bc = completion_frame(c);
  Result<Completion> dc = decode_completion(bc);
  ASSERT_TRUE(dc.ok()) << to_string(dc.error());
  EXPECT_EQ(dc->transfer_id, kU64Max);
  EXPECT_EQ(dc->message, message);
}

TEST(FrameCodec, AcceptsRequestAtLimits) {
  std::vector<Segment> segs(kSegmentsMax);
  for (uint32_t i = 0; i < kSegmentsMax; ++i) {
    segs[i] = Segment{i, ~uint64_t{i}, kSegmentBytesMax / 2, kTransferBytesMax / kSegmentsMax / 2};
  }
  segs[0] = Segment{kU64Max, kU64Max, 0, kTransferBytesMax / 2};  // one segment of 2^39 bytes
  const Bytes b = request_frame(OpKind::kRead, kU64Max, segs);
  EXPECT_EQ(b.size(), kHeaderBytes + kRequestBodyBytesMax);
  Result<Request> d = decode_request(b);
  ASSERT_TRUE(d.ok()) << to_string(d.error());
  EXPECT_EQ(d->segments.size(), kSegmentsMax);
  EXPECT_EQ(d->segments[kSegmentsMax - 1], segs.back());
  EXPECT_LE(d->total_bytes, kTransferBytesMax);

  // A single segment reaching exactly the end of the addressable range.
  const Bytes bo = request_frame(OpKind::kWrite, 0, {{7, 8, 1, kSegmentBytesMax - 1}});
  Result<Request> one = decode_request(bo);
  ASSERT_TRUE(one.ok()) << to_string(one.error());
}

TEST(FrameCodec, AcceptsDataAtLimits) {
  const DataHeader d{kU64Max, kSegmentsMax - 1, kSegmentBytesMax - kDataPayloadBytesMax,
                     kDataPayloadBytesMax};
  Result<DataHeader> got = decode_data(data_frame(d));
  ASSERT_TRUE(got.ok()) << to_string(got.error());
  EXPECT_EQ(*got, d);
}

TEST(FrameCodec, AcceptsDataBatchAtLimits) {
  std::vector<BatchEntry> entries(kSegmentsMax);
  for (uint32_t i = 0; i < kSegmentsMax; ++i) {
    entries[i] = BatchEntry{i, static_cast<uint32_t>(kBatchPayloadBytesMax / kSegmentsMax), i};
  }
  const Bytes b = batch_frame(3, entries);
  EXPECT_EQ(b.size(), kHeaderBytes + kBatchBodyBytesMax);
  Result<DataBatch> d = decode_data_batch(b);
  ASSERT_TRUE(d.ok()) << to_string(d.error());
  EXPECT_EQ(d->payload_bytes, kBatchPayloadBytesMax);
  EXPECT_EQ(d->entries[kSegmentsMax - 1], entries.back());
}

// ---- Encoders refuse what decoders would reject. ----

TEST(FrameCodec, EncodersRejectWhatDecodersReject) {
  Bytes out(1 << 20);
  const std::string long_key(kKeyBytesMax + 1, 'x');
  const std::string long_message(kMessageBytesMax + 1, 'x');

  Hello h = sample_hello();
  h.key = long_key;
  EXPECT_EQ(encode_hello(h, out).error(), DecodeError::kKeyTooLong);
  h.key = "";
  EXPECT_EQ(encode_hello(h, out).error(), DecodeError::kBadField);
  h = sample_hello();
  h.stripe = kStripesMax;
  EXPECT_EQ(encode_hello(h, out).error(), DecodeError::kBadField);
  h = sample_hello();
  h.version_min = kVersionMax + 1;
  EXPECT_EQ(encode_hello(h, out).error(), DecodeError::kBadVersion);

  HelloAck a = sample_hello_ack();
  a.message = long_message;
  EXPECT_EQ(encode_hello_ack(a, out).error(), DecodeError::kLengthOverLimit);
  a = sample_hello_ack();
  a.status = kStatusCodeMax + 1;
  EXPECT_EQ(encode_hello_ack(a, out).error(), DecodeError::kBadField);

  EXPECT_EQ(encode_request(OpKind::kWrite, 1, {}, out).error(), DecodeError::kBadField);
  std::vector<Segment> too_many(kSegmentsMax + 1, Segment{1, 2, 0, 1});
  EXPECT_EQ(encode_request(OpKind::kWrite, 1, too_many, out).error(),
            DecodeError::kTooManySegments);
  const std::vector<Segment> overflow = {{1, 2, kU64Max, 2}};
  EXPECT_EQ(encode_request(OpKind::kRead, 1, overflow, out).error(), DecodeError::kOffsetOverflow);
  const std::vector<Segment> zero = {{1, 2, 0, 0}};
  EXPECT_EQ(encode_request(OpKind::kRead, 1, zero, out).error(), DecodeError::kBadField);

  EXPECT_EQ(encode_auth_challenge(AuthChallenge{}, out).error(), DecodeError::kBadField);
  EXPECT_EQ(encode_auth_proof(AuthProof{}, out).error(), DecodeError::kBadField);

  Completion c = sample_completion();
  c.status = 1000;
  EXPECT_EQ(encode_completion(c, out).error(), DecodeError::kBadField);

  EXPECT_EQ(encode_data(DataHeader{1, 0, 0, 0}, out).error(), DecodeError::kBadField);
  EXPECT_EQ(encode_data(DataHeader{1, kSegmentsMax, 0, 1}, out).error(),
            DecodeError::kTooManySegments);
  EXPECT_EQ(encode_data(DataHeader{1, 0, 0, kDataPayloadBytesMax + 1}, out).error(),
            DecodeError::kLengthOverLimit);
  EXPECT_EQ(encode_data(DataHeader{1, 0, kU64Max, 1}, out).error(), DecodeError::kOffsetOverflow);

  EXPECT_EQ(encode_data_batch(1, {}, out).error(), DecodeError::kBadField);
  const std::vector<BatchEntry> big(kSegmentsMax, BatchEntry{0, 1u << 31, 0});
  EXPECT_EQ(encode_data_batch(1, big, out).error(), DecodeError::kLengthOverLimit);
}

TEST(FrameCodec, EncodersRejectEveryShortBuffer) {
  for (Kind k : kAllKinds) {
    const size_t full = valid_frame(k).size();
    for (size_t n = 0; n < full; ++n) {
      SCOPED_TRACE(std::string(kind_name(k)) + " buffer " + std::to_string(n));
      Bytes out(n);
      Result<size_t> r = size_t{0};
      switch (k) {
        case Kind::kHello:
          r = encode_hello(sample_hello(), out);
          break;
        case Kind::kHelloAck:
          r = encode_hello_ack(sample_hello_ack(), out);
          break;
        case Kind::kAuthChallenge:
          r = encode_auth_challenge(sample_auth_challenge(), out);
          break;
        case Kind::kAuthProof:
          r = encode_auth_proof(sample_auth_proof(), out);
          break;
        case Kind::kRequest:
          r = encode_request(OpKind::kWrite, 1234, kSegments, out);
          break;
        case Kind::kCompletion:
          r = encode_completion(sample_completion(), out);
          break;
        case Kind::kCancel:
          r = encode_cancel(sample_cancel(), out);
          break;
        case Kind::kData:
          r = encode_data(sample_data(), out);
          break;
        case Kind::kDataBatch:
          r = encode_data_batch(55, kEntries, out);
          break;
      }
      EXPECT_EQ(r.error(), DecodeError::kBufferTooSmall);
    }
  }
}

}  // namespace
}  // namespace ringxfer::wire

namespace ringxfer::wire {
namespace {

using testing::Bytes;
// Since version 2: every frame that answers a request carries its sequence in the header.
TEST(FrameCodec, CarriesTheRequestSequenceInEveryFrameOfATransfer) {
  Bytes out(4096);
  const std::vector<Segment> segs = {{1, 2, 0, 10}};
  ASSERT_TRUE(encode_request(OpKind::kRead, 5, segs, out, 0, 0xfeedbeef).ok());
  EXPECT_EQ(decode_request(out)->seq, 0xfeedbeefu);
  Completion c;
  c.transfer_id = 5;
  c.op = OpKind::kRead;
  c.seq = 7;
  ASSERT_TRUE(encode_completion(c, out).ok());
  EXPECT_EQ(decode_completion(out)->seq, 7u);
  ASSERT_TRUE(encode_data(DataHeader{5, 0, 0, 10, 9}, out).ok());
  EXPECT_EQ(decode_data(out)->seq, 9u);
  const std::vector<BatchEntry> entries = {{0, 10, 0}};
  ASSERT_TRUE(encode_data_batch(5, entries, out, 11).ok());
  EXPECT_EQ(decode_data_batch(out)->seq, 11u);
}

}  // namespace
}  // namespace ringxfer::wire
