// The frames of ringxfer's wire protocol, version 3, and the typed errors of its
// decoder. Pure data: no sockets, no allocation. Decoded frames hold views into the
// caller's input bytes and are valid only as long as those bytes are.
//
// Every frame is   header (24 bytes) | body (header.body_bytes) | payload (header.payload_bytes)
// All integers are little-endian; "rsv" fields are zero on the wire and checked.
//
// Header:
//   0 u32 magic (kMagic)   4 u8 version   5 u8 type   6 u16 flags (rsv)
//   8 u32 body_bytes      12 u32 seq     16 u64 payload_bytes
// seq is the request sequence: the initiator numbers each request it sends to a peer
// (1, 2, ..., skipping 0 and numbers still in flight); the completion and every data
// frame of that transfer carry it, so a late frame of an earlier request with the same
// transfer id never matches a newer one. 0 in hellos, hello acks and the auth frames.
// Only kData and kDataBatch frames carry payload; for every other type it is 0.
//
// Control channel:
//   kHello / kHelloAck, kWriteRequest / kReadRequest, kCompletion, and (initiator ->
//   target, when both hellos name kCapCancel) kCancel: the initiator stopped a transfer
//   whose request it sent (its local memory was deregistered) and says how many
//   payload bytes of it it sent, so the target finishes it at once instead of waiting
//   for bytes that will never come.
// Data channels:
//   kHello / kHelloAck to open, then kData and kDataBatch.
// Either channel, when the initiator authenticates (issue 11; src/auth computes the
// proofs): a hello whose auth bytes are a HelloAuth, then
//   kAuthChallenge  target -> initiator: the key id, the target's nonce and its proof;
//   kAuthProof      initiator -> target: the key id and the initiator's proof;
// each side checks the other's proof before it trusts the connection.
// The target's hello ack follows the initiator's proof; the challenge carries the
// target's instance id, which its proof covers along with its key.
//
// Body layouts (offsets within the body):
//   Hello:      0 u8 version_min  1 u8 version_max  2 u8 channel  3 u8 stripe
//               4 u16 key_len  6 u16 auth_len  8 u64 capabilities  16 u64 instance_id
//               24 key[key_len]  auth[auth_len]
//   Hello auth: empty, or (authenticating, HelloAuth) 0 u32 key_id  4 nonce[32]
//   HelloAck:   0 u8 version  1 u8 rsv  2 u16 status  4 u16 key_len  6 u16 message_len
//               8 u64 capabilities  16 u64 instance_id  24 key[key_len]  message[message_len]
//   Request:    0 u64 transfer_id  8 u32 segment_count  12 u16 parts  14 u16 rsv
//               16 segment_count x { u64 memory_id, u64 key, u64 offset, u64 length }
//               (key: the region's key from its MemoryDesc; the target serves a
//               segment only when id and key both match a region it registered)
//   Completion: 0 u64 transfer_id  8 u16 status  10 u8 op  11 u8 rsv  12 u16 message_len
//               14 u16 rsv  16 message[message_len]
//   Data:       0 u64 transfer_id  8 u32 segment  12 u32 rsv  16 u64 offset
//               (payload_bytes bytes of data for segment `segment` at `offset` follow)
//   DataBatch:  0 u64 transfer_id  8 u32 entry_count  12 u32 rsv
//               16 entry_count x { u32 segment, u32 length, u64 offset }
//               (the entries' payloads follow back to back; their lengths sum to
//               payload_bytes)
//   AuthChallenge: 0 u32 key_id  4 u32 rsv  8 nonce[32]  40 mac[32]
//                  72 u64 instance_id                                (80 bytes)
//   AuthProof:     0 u32 key_id  4 u32 rsv  8 mac[32]                 (40 bytes)
//   Cancel:     0 u64 transfer_id  8 u64 sent_bytes  16 u16 status  18 u8 op  19 u8 rsv
//               20 u32 rsv                                            (24 bytes)
//               (sent_bytes: payload bytes of the write the initiator sent and will
//               send, 0 for a read; status: why, a canonical code, not 0)
// Key ids are 1..2^32-1; 0 names no key and is refused (kBadField).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <span>
#include <string_view>

#include "base/check.h"
#include "wire/byte_order.h"
#include "wire/limits.h"

namespace ringxfer::wire {

enum class FrameType : uint8_t {
  kHello = 1,
  kHelloAck = 2,
  kWriteRequest = 3,
  kReadRequest = 4,
  kCompletion = 5,
  kAuthChallenge = 6,
  kAuthProof = 7,
  kCancel = 8,
  kData = 16,
  kDataBatch = 17,
};

enum class ChannelKind : uint8_t {
  kControl = 0,
  kData = 1,
};

// The operation a request or completion belongs to, seen from the initiator.
enum class OpKind : uint8_t {
  kWrite = 1,  // initiator memory -> target memory
  kRead = 2,   // target memory -> initiator memory
};

// Capability bits of a hello. Unknown bits are ignored: peers use the intersection.
inline constexpr uint64_t kCapDataBatch = uint64_t{1} << 0;
inline constexpr uint64_t kCapZeroCopy = uint64_t{1} << 1;
inline constexpr uint64_t kCapGpuStaging = uint64_t{1} << 2;
inline constexpr uint64_t kCapCancel = uint64_t{1} << 3;  // the target understands kCancel

enum class DecodeError : uint8_t {
  kNone = 0,
  kTruncated,        // the input ends before the frame does
  kBadMagic,         // the header does not start with kMagic
  kBadVersion,       // header version outside [kVersionMin, kVersionMax], or an empty range
  kUnknownType,      // frame type not in FrameType
  kLengthOverLimit,  // a body, payload, segment, auth or message length above its limit
  kTooManySegments,  // segment count or segment index above kSegmentsMax
  kKeyTooLong,       // engine key longer than kKeyBytesMax
  kOffsetOverflow,   // offset + length wraps around 2^64
  kLengthMismatch,   // a length field disagrees with the bytes that carry it
  kBadField,         // a reserved field is non-zero, or an enumerated field is out of range
  kBufferTooSmall,   // encoding only: the output span is shorter than the frame
};

// A stable name for logs and test output ("truncated", "bad magic", ...).
std::string_view to_string(DecodeError error) noexcept;

// A value or a DecodeError. Never allocates, never throws.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(const T& value) noexcept : value_(value) {}    // NOLINT(google-explicit-constructor)
  Result(DecodeError error) noexcept : error_(error) {  // NOLINT(google-explicit-constructor)
    RX_DCHECK(error != DecodeError::kNone);
  }

  bool ok() const noexcept { return error_ == DecodeError::kNone; }
  DecodeError error() const noexcept { return error_; }
  const T& value() const noexcept {
    RX_CHECK(ok());
    return value_;
  }
  const T& operator*() const noexcept { return value(); }
  const T* operator->() const noexcept { return &value(); }

 private:
  T value_{};
  DecodeError error_ = DecodeError::kNone;
};

struct FrameHeader {
  uint8_t version = kVersion;
  FrameType type = FrameType::kHello;
  uint32_t seq = 0;  // the request sequence (see the layout above)
  uint32_t body_bytes = 0;
  uint64_t payload_bytes = 0;
};

struct Hello {
  uint8_t version_min = kVersionMin;
  uint8_t version_max = kVersionMax;
  ChannelKind channel = ChannelKind::kControl;
  uint8_t stripe = 0;  // data channels: 0..kStripesMax-1; control: 0
  uint64_t capabilities = 0;
  uint64_t instance_id = 0;         // random per engine start; breaks simultaneous-connect ties
  std::string_view key;             // the sender's engine key, 1..kKeyBytesMax bytes
  std::span<const std::byte> auth;  // empty, or a HelloAuth (encode_hello_auth)
};

// The auth bytes of an initiator's hello when it authenticates: which key, and the
// initiator's fresh nonce.
struct HelloAuth {
  uint32_t key_id = 0;  // 1..2^32-1
  std::array<uint8_t, kAuthNonceBytes> nonce{};
  friend bool operator==(const HelloAuth&, const HelloAuth&) = default;
};

// The target's answer to a hello with auth: its nonce, and its proof over both nonces.
struct AuthChallenge {
  uint32_t key_id = 0;  // the hello's key id, echoed
  std::array<uint8_t, kAuthNonceBytes> nonce{};
  std::array<uint8_t, kAuthMacBytes> mac{};
  uint64_t instance_id = 0;  // the target's (its hello ack carries the same)
  friend bool operator==(const AuthChallenge&, const AuthChallenge&) = default;
};

// The initiator's proof, sent once the target's has checked out.
struct AuthProof {
  uint32_t key_id = 0;
  std::array<uint8_t, kAuthMacBytes> mac{};
  friend bool operator==(const AuthProof&, const AuthProof&) = default;
};

struct HelloAck {
  uint8_t version = kVersion;  // the version both sides will speak
  uint16_t status = 0;         // canonical status code; 0 accepts the connection
  uint64_t capabilities = 0;
  uint64_t instance_id = 0;
  std::string_view key;      // the replier's engine key, 1..kKeyBytesMax bytes
  std::string_view message;  // why, when status != 0
};

// One (memory id, key, offset, length) range of a registered region: the peer names
// the region by its id and its key (MemoryDesc::rkey).
struct Segment {
  uint64_t memory_id = 0;
  uint64_t key = 0;
  uint64_t offset = 0;
  uint64_t length = 0;
  friend bool operator==(const Segment&, const Segment&) = default;
};

// One entry of a data batch: `length` bytes for segment `segment` at `offset`.
struct BatchEntry {
  uint32_t segment = 0;
  uint32_t length = 0;
  uint64_t offset = 0;
  friend bool operator==(const BatchEntry&, const BatchEntry&) = default;
};

// A read-only view of a packed little-endian table of `Entry`, as decoded from a frame.
// Indexing is bounds-checked; the table was validated when it was decoded.
template <typename Entry>
class PackedTable {
 public:
  PackedTable() = default;
  PackedTable(std::span<const std::byte> bytes, uint32_t count) noexcept
      : bytes_(bytes), count_(count) {}

  uint32_t size() const noexcept { return count_; }
  bool empty() const noexcept { return count_ == 0; }
  Entry operator[](uint32_t i) const noexcept;

  class Iterator {
   public:
    using iterator_category = std::input_iterator_tag;
    using value_type = Entry;
    using difference_type = std::ptrdiff_t;
    using pointer = void;
    using reference = Entry;

    Iterator() = default;
    Iterator(const PackedTable* t, uint32_t i) noexcept : t_(t), i_(i) {}
    Entry operator*() const noexcept { return (*t_)[i_]; }
    Iterator& operator++() noexcept {
      ++i_;
      return *this;
    }
    Iterator operator++(int) noexcept {
      Iterator old = *this;
      ++i_;
      return old;
    }
    bool operator==(const Iterator& o) const noexcept { return i_ == o.i_; }

   private:
    const PackedTable* t_ = nullptr;
    uint32_t i_ = 0;
  };
  Iterator begin() const noexcept { return Iterator(this, 0); }
  Iterator end() const noexcept { return Iterator(this, count_); }

 private:
  std::span<const std::byte> bytes_;
  uint32_t count_ = 0;
};

template <>
inline Segment PackedTable<Segment>::operator[](uint32_t i) const noexcept {
  RX_CHECK(i < count_);
  const std::byte* p = bytes_.data() + size_t{i} * kSegmentBytes;
  return Segment{detail::load_le<uint64_t>(p), detail::load_le<uint64_t>(p + 8),
                 detail::load_le<uint64_t>(p + 16), detail::load_le<uint64_t>(p + 24)};
}

template <>
inline BatchEntry PackedTable<BatchEntry>::operator[](uint32_t i) const noexcept {
  RX_CHECK(i < count_);
  const std::byte* p = bytes_.data() + size_t{i} * kBatchEntryBytes;
  return BatchEntry{detail::load_le<uint32_t>(p), detail::load_le<uint32_t>(p + 4),
                    detail::load_le<uint64_t>(p + 8)};
}

// A write or read request as decoded. Encoding takes the segments as a span instead.
struct Request {
  OpKind op = OpKind::kWrite;
  uint64_t transfer_id = 0;
  // The transfer is this many parts, each a request with the same id on its own
  // connection set (one per initiator ring thread); 0 and 1 mean a whole transfer.
  uint16_t parts = 0;
  uint32_t seq = 0;          // from the header
  uint64_t total_bytes = 0;  // sum of the segments' lengths (decoded, not on the wire)
  PackedTable<Segment> segments;
};

struct Completion {
  uint64_t transfer_id = 0;
  uint32_t seq = 0;  // the request's sequence (header)
  OpKind op = OpKind::kWrite;
  uint16_t status = 0;       // canonical status code (absl::StatusCode), 0 = OK
  std::string_view message;  // empty on success
};

// The initiator gave up a transfer whose request it sent (frames.h, "Cancel").
struct Cancel {
  uint64_t transfer_id = 0;
  uint32_t seq = 0;  // the request's sequence (header)
  OpKind op = OpKind::kWrite;
  uint64_t sent_bytes = 0;  // a write's payload bytes that were or will be sent; 0 for a read
  uint16_t status = 0;      // canonical status code, not 0
  friend bool operator==(const Cancel&, const Cancel&) = default;
};

// The header of one data frame; `length` payload bytes follow it on the wire.
struct DataHeader {
  uint64_t transfer_id = 0;
  uint32_t segment = 0;
  uint64_t offset = 0;  // within the segment
  uint64_t length = 0;  // payload bytes, 1..kDataPayloadBytesMax
  uint32_t seq = 0;     // the request's sequence (header)
  friend bool operator==(const DataHeader&, const DataHeader&) = default;
};

// A data batch as decoded; the entries' payloads follow it back to back.
struct DataBatch {
  uint64_t transfer_id = 0;
  uint32_t seq = 0;  // the request's sequence (header)
  uint64_t payload_bytes = 0;
  PackedTable<BatchEntry> entries;
};

}  // namespace ringxfer::wire
