// libFuzzer target for one wire decoder entry point, chosen at build time by
// RX_FUZZ_ENTRY. Besides memory safety (ASan/UBSan), it checks a property: whatever
// decodes re-encodes to exactly the bytes it was decoded from.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "wire/codec.h"

namespace {

using namespace ringxfer::wire;

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "wire fuzz property failed: %s\n", what);
  std::abort();
}

// The encoder's output must equal the first `n` bytes of the input.
template <typename Encode>
[[maybe_unused]] void expect_reencodes(ByteSpan in, size_t frame_bytes, Encode&& encode) {
  std::vector<std::byte> out(frame_bytes);
  Result<size_t> n = encode(MutableByteSpan(out));
  if (!n.ok()) {
    fail("decoded frame does not re-encode");
  }
  if (*n != frame_bytes || std::memcmp(out.data(), in.data(), frame_bytes) != 0) {
    fail("re-encoded frame differs from input");
  }
}

[[maybe_unused]] size_t frame_size(ByteSpan in) {
  return kHeaderBytes + decode_header(in)->body_bytes;
}

void fuzz_one(ByteSpan in) {
#if RX_FUZZ_ENTRY == 0
  Result<FrameHeader> h = decode_header(in);
  if (h.ok()) {
    if (h->body_bytes > kBodyBytesMax) {
      fail("header body over kBodyBytesMax");
    }
    if (h->type != FrameType::kData && h->type != FrameType::kDataBatch && h->payload_bytes != 0) {
      fail("payload on a control frame");
    }
    const bool opens = h->type == FrameType::kHello || h->type == FrameType::kHelloAck ||
                       h->type == FrameType::kAuthChallenge || h->type == FrameType::kAuthProof;
    if (opens && h->seq != 0) {
      fail("request sequence on a handshake frame");
    }
  }
#elif RX_FUZZ_ENTRY == 1
  Result<Hello> r = decode_hello(in);
  if (r.ok()) {
    expect_reencodes(in, frame_size(in), [&](MutableByteSpan o) { return encode_hello(*r, o); });
    // Auth bytes that decode as a HelloAuth re-encode to themselves too.
    Result<HelloAuth> a = decode_hello_auth(r->auth);
    if (a.ok()) {
      expect_reencodes(r->auth, kHelloAuthBytes,
                       [&](MutableByteSpan o) { return encode_hello_auth(*a, o); });
    } else if (r->auth.size() != kHelloAuthBytes && a.error() != DecodeError::kLengthMismatch) {
      fail("hello auth of the wrong length is not a length mismatch");
    }
  }
#elif RX_FUZZ_ENTRY == 2
  Result<HelloAck> r = decode_hello_ack(in);
  if (r.ok()) {
    expect_reencodes(in, frame_size(in),
                     [&](MutableByteSpan o) { return encode_hello_ack(*r, o); });
  }
#elif RX_FUZZ_ENTRY == 3
  Result<Request> r = decode_request(in);
  if (r.ok()) {
    std::vector<Segment> segs(r->segments.begin(), r->segments.end());
    expect_reencodes(in, frame_size(in), [&](MutableByteSpan o) {
      return encode_request(r->op, r->transfer_id, segs, o, r->parts, r->seq);
    });
  }
#elif RX_FUZZ_ENTRY == 4
  Result<Completion> r = decode_completion(in);
  if (r.ok()) {
    expect_reencodes(in, frame_size(in),
                     [&](MutableByteSpan o) { return encode_completion(*r, o); });
  }
#elif RX_FUZZ_ENTRY == 5
  Result<DataHeader> r = decode_data(in);
  if (r.ok()) {
    expect_reencodes(in, frame_size(in), [&](MutableByteSpan o) { return encode_data(*r, o); });
  }
#elif RX_FUZZ_ENTRY == 6
  Result<DataBatch> r = decode_data_batch(in);
  if (r.ok()) {
    std::vector<BatchEntry> entries(r->entries.begin(), r->entries.end());
    expect_reencodes(in, frame_size(in), [&](MutableByteSpan o) {
      return encode_data_batch(r->transfer_id, entries, o, r->seq);
    });
  }
#elif RX_FUZZ_ENTRY == 7
  Result<AuthChallenge> r = decode_auth_challenge(in);
  if (r.ok()) {
    expect_reencodes(in, frame_size(in),
                     [&](MutableByteSpan o) { return encode_auth_challenge(*r, o); });
  }
#elif RX_FUZZ_ENTRY == 8
  Result<AuthProof> r = decode_auth_proof(in);
  if (r.ok()) {
    expect_reencodes(in, frame_size(in),
                     [&](MutableByteSpan o) { return encode_auth_proof(*r, o); });
  }
#elif RX_FUZZ_ENTRY == 9
  Result<Cancel> r = decode_cancel(in);
  if (r.ok()) {
    expect_reencodes(in, frame_size(in), [&](MutableByteSpan o) { return encode_cancel(*r, o); });
    if (r->status == 0 || (r->op == OpKind::kRead && r->sent_bytes != 0)) {
      fail("a cancel without a cause, or a read's with payload, decoded");
    }
  }
#else
#error "RX_FUZZ_ENTRY must be 0..9"
#endif
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Copy into an exact-size heap buffer so ASan sees any read past the end.
  std::vector<std::byte> in(size);
  if (size != 0) {
    std::memcpy(in.data(), data, size);
  }
  fuzz_one(ByteSpan(in));
  return 0;
}
