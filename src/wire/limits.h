// Every limit of ringxfer's wire protocol, in one place. The decoder rejects a frame
// that exceeds any of them, and the encoder refuses to produce one, so two engines
// never disagree about what is acceptable. Changing a value here changes what the
// protocol accepts: bump kVersionMax if it shrinks a limit peers may rely on.
#pragma once

#include <cstddef>
#include <cstdint>

namespace ringxfer::wire {

// "RXFR" as bytes on the wire (little-endian u32).
inline constexpr uint32_t kMagic = 0x52465852;

// Protocol versions this build speaks; every header carries the sender's version.
// Version 2 numbers every request in the frame header (the request sequence) and carries
// that number in the completion and data frames that answer it; version 1 had none.
// Version 3 names each segment's region by id and key (frames.h); version 2 segments had
// no key, and a target that accepted them would serve any region whose id was guessed.
inline constexpr uint8_t kVersionMin = 3;
inline constexpr uint8_t kVersionMax = 3;
inline constexpr uint8_t kVersion = kVersionMax;

// Size of the fixed header that starts every frame.
inline constexpr size_t kHeaderBytes = 24;

// Engine key in a hello (bytes, UTF-8 not enforced): 1..kKeyBytesMax.
inline constexpr size_t kKeyBytesMax = 255;
// Authentication bytes in a hello: empty, or kHelloAuthBytes from an initiator that
// authenticates (frames.h); the decoder takes up to this many, so a later format fits.
inline constexpr size_t kAuthBytesMax = 1024;
// Human-readable message in a completion or a hello reply.
inline constexpr size_t kMessageBytesMax = 1024;

// Data connections per peer; a hello's stripe index is below this.
inline constexpr uint32_t kStripesMax = 16;

// Segments in one request, entries in one data batch; also the bound on a data
// frame's segment index.
inline constexpr uint32_t kSegmentsMax = 8192;
// One segment, and the sum of a request's segments (1 TiB).
inline constexpr uint64_t kSegmentBytesMax = uint64_t{1} << 40;
inline constexpr uint64_t kTransferBytesMax = uint64_t{1} << 40;
// Payload of one data frame (a stripe chunk) and of one data batch.
inline constexpr uint64_t kDataPayloadBytesMax = uint64_t{1} << 30;
inline constexpr uint64_t kBatchPayloadBytesMax = uint64_t{64} << 20;

// Authentication (frames.h): nonces and proofs (HMAC-SHA256) are 32 bytes each.
inline constexpr size_t kAuthNonceBytes = 32;
inline constexpr size_t kAuthMacBytes = 32;
// A hello's auth bytes when the initiator authenticates: key id, initiator nonce.
inline constexpr size_t kHelloAuthBytes = 4 + kAuthNonceBytes;

// Fixed parts of the bodies; variable parts follow them.
inline constexpr size_t kHelloFixedBytes = 24;
inline constexpr size_t kHelloAckFixedBytes = 24;
inline constexpr size_t kRequestFixedBytes = 16;
inline constexpr size_t kSegmentBytes = 32;  // one (memory id, key, offset, length) entry
inline constexpr size_t kCompletionFixedBytes = 16;
inline constexpr size_t kDataBodyBytes = 24;
inline constexpr size_t kBatchFixedBytes = 16;
inline constexpr size_t kBatchEntryBytes = 16;  // one (segment, length, offset) entry
inline constexpr size_t kAuthChallengeBodyBytes = 8 + kAuthNonceBytes + kAuthMacBytes + 8;
inline constexpr size_t kAuthProofBodyBytes = 8 + kAuthMacBytes;
inline constexpr size_t kCancelBodyBytes = 24;

// Largest body of each frame type: what a receiver must be ready to buffer.
inline constexpr size_t kHelloBodyBytesMax = kHelloFixedBytes + kKeyBytesMax + kAuthBytesMax;
inline constexpr size_t kHelloAckBodyBytesMax =
    kHelloAckFixedBytes + kKeyBytesMax + kMessageBytesMax;
inline constexpr size_t kRequestBodyBytesMax = kRequestFixedBytes + kSegmentsMax * kSegmentBytes;
inline constexpr size_t kCompletionBodyBytesMax = kCompletionFixedBytes + kMessageBytesMax;
inline constexpr size_t kBatchBodyBytesMax = kBatchFixedBytes + kSegmentsMax * kBatchEntryBytes;
// The largest body of any frame type.
inline constexpr size_t kBodyBytesMax = kRequestBodyBytesMax;

// Parts one transfer may be split into (the initiator's ring threads).
inline constexpr uint16_t kPartsMax = 64;

// Highest canonical status code (absl::StatusCode / gRPC) a completion may carry.
inline constexpr uint16_t kStatusCodeMax = 16;

}  // namespace ringxfer::wire
