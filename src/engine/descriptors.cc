// Packed descriptors: "RXED" or "RXMD", a format version byte, then fields in a fixed
// order, little-endian, strings as u16 length + bytes. unpack() checks every length.
// Formats: EngineDesc 1; MemoryDesc 2 (format 1 had no region key).
#include <cstring>
#include <string>

#include "absl/strings/str_format.h"
#include "ringxfer/descriptors.h"
#include "wire/byte_order.h"
#include "wire/limits.h"

namespace ringxfer {
namespace {

constexpr uint8_t kEngineDescFormat = 1;
constexpr uint8_t kMemoryDescFormat = 2;
constexpr size_t kStringBytesMax = 4096;

class Writer {
 public:
  Writer(const char magic[4], uint8_t format) {
    out_.append(magic, 4);
    put<uint8_t>(format);
  }
  template <typename T>
  void put(T v) {
    std::byte b[sizeof(T)];
    wire::detail::store_le<T>(b, v);
    out_.append(reinterpret_cast<const char*>(b), sizeof(T));
  }
  void str(const std::string& s) {
    put<uint16_t>(static_cast<uint16_t>(s.size()));
    out_.append(s);
  }
  std::string take() { return std::move(out_); }

 private:
  std::string out_;
};

class Reader {
 public:
  // `older`: what to say about a format older than `format` (what it lacked, what to do).
  Reader(std::string_view in, const char magic[4], uint8_t format, const char* what,
         const char* older = "")
      : in_(in), what_(what) {
    if (in_.size() < 5 || std::memcmp(in_.data(), magic, 4) != 0) {
      error_ = absl::StrFormat("%s.unpack: not a packed %s (bad magic)", what_, what_);
      return;
    }
    const uint8_t got = static_cast<uint8_t>(in_[4]);
    if (got < format) {
      error_ =
          absl::StrFormat("%s.unpack: packed by an older ringxfer (format %d, this build %d)%s",
                          what_, got, format, older);
      return;
    }
    if (got > format) {
      error_ = absl::StrFormat(
          "%s.unpack: packed by a newer ringxfer (format %d, this build %d): upgrade this engine",
          what_, got, format);
      return;
    }
    pos_ = 5;
  }
  template <typename T>
  T get() {
    if (!error_.empty() || in_.size() - pos_ < sizeof(T)) {
      fail();
      return T{};
    }
    T v = wire::detail::load_le<T>(reinterpret_cast<const std::byte*>(in_.data() + pos_));
    pos_ += sizeof(T);
    return v;
  }
  std::string str() {
    const uint16_t n = get<uint16_t>();
    if (!error_.empty() || n > kStringBytesMax || in_.size() - pos_ < n) {
      fail();
      return {};
    }
    std::string s(in_.substr(pos_, n));
    pos_ += n;
    return s;
  }
  absl::Status finish() {
    if (error_.empty() && pos_ != in_.size()) {
      error_ = absl::StrFormat("%s.unpack: %d unexpected trailing bytes", what_, in_.size() - pos_);
    }
    return error_.empty() ? absl::OkStatus() : absl::InvalidArgumentError(error_);
  }

 private:
  void fail() {
    if (error_.empty()) {
      error_ = absl::StrFormat("%s.unpack: truncated or malformed at byte %d of %d", what_, pos_,
                               in_.size());
    }
  }
  std::string_view in_;
  const char* what_;
  size_t pos_ = 0;
  std::string error_;
};

}  // namespace

std::string EngineDesc::pack() const {
  Writer w("RXED", kEngineDescFormat);
  w.str(key);
  w.str(node_id);
  w.str(hostname);
  w.str(host);
  w.put<uint16_t>(port);
  w.put<uint32_t>(static_cast<uint32_t>(pid));
  w.put<uint32_t>(protocol_version);
  return w.take();
}

absl::StatusOr<EngineDesc> EngineDesc::unpack(std::string_view bytes) {
  Reader r(bytes, "RXED", kEngineDescFormat, "EngineDesc");
  EngineDesc d;
  d.key = r.str();
  d.node_id = r.str();
  d.hostname = r.str();
  d.host = r.str();
  d.port = r.get<uint16_t>();
  d.pid = static_cast<int32_t>(r.get<uint32_t>());
  d.protocol_version = r.get<uint32_t>();
  absl::Status st = r.finish();
  if (!st.ok()) {
    return st;
  }
  if (d.key.empty() || d.key.size() > wire::kKeyBytesMax) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "EngineDesc.unpack: key length %d is outside 1..%d", d.key.size(), wire::kKeyBytesMax));
  }
  return d;
}

std::string MemoryDesc::pack() const {
  Writer w("RXMD", kMemoryDescFormat);
  w.str(engine_key);
  w.put<uint64_t>(id);
  w.put<uint32_t>(static_cast<uint32_t>(device_id));
  w.put<uint64_t>(size);
  w.put<uint8_t>(static_cast<uint8_t>(location));
  w.put<uint64_t>(address);
  w.put<uint64_t>(rkey);
  return w.take();
}

absl::StatusOr<MemoryDesc> MemoryDesc::unpack(std::string_view bytes) {
  Reader r(bytes, "RXMD", kMemoryDescFormat, "MemoryDesc",
           ": it has no region key, which this version needs to address remote memory; "
           "re-register the memory with an up-to-date engine and re-exchange its descriptor");
  MemoryDesc d;
  d.engine_key = r.str();
  d.id = r.get<uint64_t>();
  d.device_id = static_cast<int32_t>(r.get<uint32_t>());
  d.size = r.get<uint64_t>();
  const uint8_t loc = r.get<uint8_t>();
  d.address = r.get<uint64_t>();
  d.rkey = r.get<uint64_t>();
  absl::Status st = r.finish();
  if (!st.ok()) {
    return st;
  }
  if (loc > static_cast<uint8_t>(MemoryLocation::kGpu)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("MemoryDesc.unpack: location %d is neither CPU (0) nor GPU (1)", loc));
  }
  d.location = static_cast<MemoryLocation>(loc);
  if (d.engine_key.empty() || d.id == 0 || d.size == 0 || d.rkey == 0) {
    return absl::InvalidArgumentError(
        "MemoryDesc.unpack: empty engine key, memory id 0, size 0 or region key 0");
  }
  return d;
}

}  // namespace ringxfer
