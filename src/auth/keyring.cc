// Reading and checking key files (format in keyring.h). Every buffer that held secret
// bytes, as hex or as bytes, is wiped before it is freed.
#include "auth/keyring.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "base/check.h"
#include "base/errno_status.h"
#include "base/status_macros.h"

namespace ringxfer::auth {
namespace {

// Wipes a string that held key file text when it goes out of scope.
class WipedString {
 public:
  WipedString() = default;
  WipedString(const WipedString&) = delete;
  WipedString& operator=(const WipedString&) = delete;
  ~WipedString() { OPENSSL_cleanse(s.data(), s.size()); }

  std::string s;
};

// Closes a file descriptor when it goes out of scope.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd_ >= 0) {
      ::close(fd_);
    }
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

// Reads at most kFileBytesMax bytes of a regular file that only its owner may access.
// The checks are made on the open descriptor, so the file checked is the file read.
absl::Status read_key_file(const std::string& path, std::string* out) {
  // O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused below.
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
  if (fd.get() < 0) {
    return base::errno_to_status(errno, absl::StrFormat("keyring %s", path));
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) {
    return base::errno_to_status(errno, absl::StrFormat("keyring %s", path));
  }
  if (!S_ISREG(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrFormat("keyring %s: not a regular file", path));
  }
  if ((st.st_mode & 077) != 0) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "keyring %s: mode %04o lets group or others access the secrets: chmod 600 it", path,
        static_cast<unsigned>(st.st_mode & 07777)));
  }
  if (st.st_size > static_cast<off_t>(kFileBytesMax)) {
    return absl::InvalidArgumentError(absl::StrFormat("keyring %s: %d bytes, over the limit of %d",
                                                      path, static_cast<int64_t>(st.st_size),
                                                      kFileBytesMax));
  }
  // One byte more than the limit, so a file that grew since fstat is caught.
  out->resize(kFileBytesMax + 1);
  size_t got = 0;
  while (got < out->size()) {
    const ssize_t n = ::read(fd.get(), out->data() + got, out->size() - got);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0) {
      return base::errno_to_status(errno, absl::StrFormat("keyring %s", path));
    }
    if (n == 0) {
      break;
    }
    got += static_cast<size_t>(n);
  }
  if (got > kFileBytesMax) {
    return absl::InvalidArgumentError(
        absl::StrFormat("keyring %s: over the limit of %d bytes", path, kFileBytesMax));
  }
  // Shrinking in place keeps the buffer; the caller wipes all of it.
  out->resize(got);
  return absl::OkStatus();
}

bool is_blank(char c) { return c == ' ' || c == '\t' || c == '\r'; }

int hex_value(char c) {
  if (c >= '0' && c <= '9') {
    return c - '0';
  }
  if (c >= 'a' && c <= 'f') {
    return c - 'a' + 10;
  }
  if (c >= 'A' && c <= 'F') {
    return c - 'A' + 10;
  }
  return -1;
}

// Splits `line` (comment already cut) into blank-separated fields; at most 3 are kept,
// which is enough to tell "too many".
size_t split_fields(std::string_view line, std::string_view fields[3]) {
  size_t count = 0;
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && is_blank(line[i])) {
      ++i;
    }
    const size_t start = i;
    while (i < line.size() && !is_blank(line[i])) {
      ++i;
    }
    if (i > start) {
      if (count < 3) {
        fields[count] = line.substr(start, i - start);
      }
      ++count;
    }
  }
  return count;
}

// Decimal 1..4294967295, digits only. Returns 0 when `s` is not one.
uint32_t parse_id(std::string_view s) {
  if (s.empty() || s.size() > 10) {
    return 0;
  }
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') {
      return 0;
    }
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  return v <= UINT32_MAX ? static_cast<uint32_t>(v) : 0;
}

// The checks both constructors share, on one key. `where` names it in errors.
absl::Status check_key(const AuthKey& key, const std::string& where) {
  if (key.id == 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: key id 0; ids are 1..4294967295", where));
  }
  if (key.secret.size() < kSecretBytesMin || key.secret.size() > kSecretBytesMax) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: key %d has a %d-byte secret; it must be %d..%d bytes", where, key.id,
                        key.secret.size(), kSecretBytesMin, kSecretBytesMax));
  }
  return absl::OkStatus();
}

}  // namespace

Keyring& Keyring::operator=(Keyring&& other) noexcept {
  if (this != &other) {
    wipe();
    keys_ = std::move(other.keys_);
    other.wipe();  // in case the move left anything behind
    other.keys_.clear();
  }
  return *this;
}

Keyring::~Keyring() { wipe(); }

void Keyring::wipe() noexcept {
  for (AuthKey& key : keys_) {
    OPENSSL_cleanse(key.secret.data(), key.secret.size());
  }
}

const AuthKey& Keyring::current() const {
  RX_CHECK(!keys_.empty());
  return keys_.front();
}

const AuthKey* Keyring::find(uint32_t id) const {
  for (const AuthKey& key : keys_) {
    if (key.id == id) {
      return &key;
    }
  }
  return nullptr;
}

absl::StatusOr<Keyring> Keyring::from_keys(std::vector<AuthKey> keys) {
  Keyring ring;  // owns the secrets from here on, so an error wipes them too
  ring.keys_ = std::move(keys);
  if (ring.keys_.empty()) {
    return absl::InvalidArgumentError("keyring: no key");
  }
  if (ring.keys_.size() > kKeysMax) {
    return absl::InvalidArgumentError(
        absl::StrFormat("keyring: %d keys, over the limit of %d", ring.keys_.size(), kKeysMax));
  }
  for (size_t i = 0; i < ring.keys_.size(); ++i) {
    const std::string where = absl::StrFormat("keyring: key #%d", i + 1);
    RX_RETURN_IF_ERROR(check_key(ring.keys_[i], where));
    for (size_t j = 0; j < i; ++j) {
      if (ring.keys_[j].id == ring.keys_[i].id) {
        return absl::InvalidArgumentError(
            absl::StrFormat("%s: id %d repeats key #%d", where, ring.keys_[i].id, j + 1));
      }
    }
  }
  return ring;
}

absl::StatusOr<Keyring> Keyring::load_file(const std::string& path) {
  WipedString text;
  RX_RETURN_IF_ERROR(read_key_file(path, &text.s));

  Keyring ring;
  const std::string_view all(text.s);
  size_t line_no = 0;
  size_t pos = 0;
  while (pos < all.size()) {
    ++line_no;
    size_t end = all.find('\n', pos);
    if (end == std::string_view::npos) {
      end = all.size();
    }
    std::string_view line = all.substr(pos, end - pos);
    pos = end + 1;
    // '#' never appears in an id or in hex, so it starts a comment wherever it is.
    line = line.substr(0, line.find('#'));
    std::string_view fields[3];
    const size_t count = split_fields(line, fields);
    if (count == 0) {
      continue;
    }
    const std::string where = absl::StrFormat("keyring %s line %d", path, line_no);
    if (count != 2) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: %d fields; expected two, \"<id> <secret-hex>\"", where, count));
    }
    if (ring.keys_.size() == kKeysMax) {
      return absl::InvalidArgumentError(absl::StrFormat("%s: more than %d keys", where, kKeysMax));
    }
    // In the ring from the start, so that any error below wipes it with the others.
    AuthKey& key = ring.keys_.emplace_back();
    key.id = parse_id(fields[0]);
    if (key.id == 0) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: the id is not a decimal number in 1..4294967295", where));
    }
    const std::string_view hex = fields[1];
    if (hex.size() % 2 != 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: the secret has an odd number (%d) of hex digits", where, hex.size()));
    }
    // Reserved to size: no reallocation leaves an unwiped copy behind.
    key.secret.reserve(hex.size() / 2);
    for (size_t i = 0; i < hex.size(); i += 2) {
      const int hi = hex_value(hex[i]);
      const int lo = hex_value(hex[i + 1]);
      if (hi < 0 || lo < 0) {
        return absl::InvalidArgumentError(
            absl::StrFormat("%s: the secret has a character that is not a hex digit", where));
      }
      key.secret.push_back(static_cast<uint8_t>((hi << 4) | lo));
    }
    RX_RETURN_IF_ERROR(check_key(key, where));
    for (size_t j = 0; j + 1 < ring.keys_.size(); ++j) {
      if (ring.keys_[j].id == key.id) {
        return absl::InvalidArgumentError(
            absl::StrFormat("%s: key id %d appears twice", where, key.id));
      }
    }
  }
  if (ring.keys_.empty()) {
    return absl::InvalidArgumentError(absl::StrFormat("keyring %s: no key", path));
  }
  return ring;
}

}  // namespace ringxfer::auth
