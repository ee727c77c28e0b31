#include "auth/keyring.h"

#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gtest/gtest.h"

namespace ringxfer::auth {
namespace {

// Secrets whose hex a test can look for in error messages. Every row's secret field is
// one of these, or a prefix or extension of one.
const std::string kHexA(64, 'a');                                          // 32 bytes of 0xaa
const std::string kHexB = "0123456789abcdef" + std::string(48, 'b');       // 32 bytes
const std::string kHexLong = std::string(64, 'c') + std::string(64, 'C');  // 64 bytes

std::vector<uint8_t> bytes_of(const std::string& hex) {
  std::vector<uint8_t> out;
  for (size_t i = 0; i < hex.size(); i += 2) {
    out.push_back(static_cast<uint8_t>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  }
  return out;
}

// A fresh directory per test, removed with its files.
class KeyringFile : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "keyring_test_XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    for (const std::string& f : files_) {
      ::unlink(f.c_str());
    }
    ::rmdir((dir_ + "/subdir").c_str());
    ::rmdir(dir_.c_str());
  }

  // Writes `text` to a new file in the test's directory with `mode` (umask aside).
  std::string write(const std::string& name, const std::string& text, mode_t mode = 0600) {
    const std::string path = dir_ + "/" + name;
    {
      std::ofstream out(path, std::ios::binary | std::ios::trunc);
      out << text;
    }
    EXPECT_EQ(::chmod(path.c_str(), mode), 0);
    files_.push_back(path);
    return path;
  }

  std::string dir_;
  std::vector<std::string> files_;
};

// ---- Parsing: one table, a row per way a file can be right or wrong. ----

struct ParseRow {
  const char* name;
  std::string text;
  absl::StatusCode code;  // kOk: loads
  const char* message;    // a part of the error message ("line 3: ..."), or nullptr
};

const ParseRow kParseRows[] = {
    {"two keys with comments and blank lines",
     "# rotation: new key goes second first\n\n1 " + kHexA + "\n\t \n  42\t" + kHexB +
         "   # old\n# end\n",
     absl::StatusCode::kOk, nullptr},
    {"crlf line ends and no final newline", "1 " + kHexA + "\r\n2 " + kHexB, absl::StatusCode::kOk,
     nullptr},
    {"largest id, longest secret, upper case hex", "4294967295 " + kHexLong + "\n",
     absl::StatusCode::kOk, nullptr},
    {"id not a number", "1 " + kHexA + "\nx2 " + kHexB + "\n", absl::StatusCode::kInvalidArgument,
     "line 2: the id is not a decimal number"},
    {"id negative", "-1 " + kHexA + "\n", absl::StatusCode::kInvalidArgument,
     "line 1: the id is not"},
    {"id 0", "0 " + kHexA + "\n", absl::StatusCode::kInvalidArgument, "line 1: the id is not"},
    {"id over 32 bits", "4294967296 " + kHexA + "\n", absl::StatusCode::kInvalidArgument,
     "line 1: the id is not"},
    {"id with 11 digits", "00000000001 " + kHexA + "\n", absl::StatusCode::kInvalidArgument,
     "line 1: the id is not"},
    {"bad hex", "1 " + kHexA.substr(0, 62) + "g0\n", absl::StatusCode::kInvalidArgument,
     "line 1: the secret has a character that is not a hex digit"},
    {"odd hex length", "1 " + kHexA + "a\n", absl::StatusCode::kInvalidArgument,
     "line 1: the secret has an odd number (65) of hex digits"},
    {"short key", "# short\n7 " + kHexA.substr(0, 62) + "\n", absl::StatusCode::kInvalidArgument,
     "line 2: key 7 has a 31-byte secret; it must be 32..64 bytes"},
    {"long key", "7 " + kHexLong + "cc\n", absl::StatusCode::kInvalidArgument,
     "line 1: key 7 has a 65-byte secret"},
    {"duplicate id", "5 " + kHexA + "\n6 " + kHexB + "\n5 " + kHexB + "\n",
     absl::StatusCode::kInvalidArgument, "line 3: key id 5 appears twice"},
    {"id without secret", "5\n", absl::StatusCode::kInvalidArgument,
     "line 1: 1 fields; expected two"},
    {"secret first, id second", kHexA + " 5\n", absl::StatusCode::kInvalidArgument,
     "line 1: the id is not"},
    {"three fields", "5 " + kHexA + " " + kHexB + "\n", absl::StatusCode::kInvalidArgument,
     "line 1: 3 fields"},
    {"empty file", "", absl::StatusCode::kInvalidArgument, ": no key"},
    {"only comments and blanks", "# nothing yet\n\n   # really\n",
     absl::StatusCode::kInvalidArgument, ": no key"},
};

TEST_F(KeyringFile, ParsesOrRefusesEveryRow) {
  for (const ParseRow& row : kParseRows) {
    SCOPED_TRACE(row.name);
    const std::string path = write("keys", row.text);
    absl::StatusOr<Keyring> ring = Keyring::load_file(path);
    ASSERT_EQ(ring.status().code(), row.code) << ring.status();
    if (ring.ok()) {
      continue;
    }
    const std::string message(ring.status().message());
    EXPECT_NE(message.find("keyring " + path), std::string::npos) << message;
    EXPECT_NE(message.find(row.message), std::string::npos) << message;
    // No secret, and no piece of one, in an error.
    for (const std::string& hex : {kHexA, kHexB, kHexLong}) {
      EXPECT_EQ(message.find(hex.substr(0, 16)), std::string::npos) << message;
      EXPECT_EQ(message.find(hex.substr(hex.size() - 16)), std::string::npos) << message;
    }
  }
}

TEST_F(KeyringFile, LoadsKeysInFileOrder) {
  const std::string path =
      write("keys", "# current first\n42 " + kHexB + "\n1 " + kHexA + "\n3 " + kHexLong + "\n");
  absl::StatusOr<Keyring> ring = Keyring::load_file(path);
  ASSERT_TRUE(ring.ok()) << ring.status();
  EXPECT_EQ(ring->size(), 3u);
  EXPECT_EQ(ring->current().id, 42u);
  EXPECT_EQ(ring->current().secret, bytes_of(kHexB));
  ASSERT_NE(ring->find(1), nullptr);
  EXPECT_EQ(ring->find(1)->secret, bytes_of(kHexA));
  ASSERT_NE(ring->find(3), nullptr);
  EXPECT_EQ(ring->find(3)->secret.size(), 64u);
  EXPECT_EQ(ring->find(3)->secret.back(), 0xcc);
  EXPECT_EQ(ring->find(42), &ring->current());
  EXPECT_EQ(ring->find(2), nullptr);
  EXPECT_EQ(ring->find(0), nullptr);
}

// ---- The file itself ----

TEST_F(KeyringFile, RefusesFilesGroupOrOthersMayAccess) {
  for (mode_t mode : {0640, 0604, 0660, 0644, 0610, 0601, 0620, 0602, 0700 | 0007}) {
    SCOPED_TRACE(mode);
    const std::string path = write("keys", "1 " + kHexA + "\n", mode);
    absl::StatusOr<Keyring> ring = Keyring::load_file(path);
    ASSERT_EQ(ring.status().code(), absl::StatusCode::kFailedPrecondition) << ring.status();
    const std::string message(ring.status().message());
    EXPECT_NE(message.find(path), std::string::npos) << message;
    EXPECT_NE(message.find("chmod 600"), std::string::npos) << message;
    EXPECT_EQ(message.find(kHexA.substr(0, 16)), std::string::npos) << message;
  }
}

TEST_F(KeyringFile, AcceptsFilesOnlyTheOwnerMayAccess) {
  for (mode_t mode : {0600, 0400}) {
    SCOPED_TRACE(mode);
    const std::string path = write("keys", "1 " + kHexA + "\n", mode);
    absl::StatusOr<Keyring> ring = Keyring::load_file(path);
    ASSERT_TRUE(ring.ok()) << ring.status();
    EXPECT_EQ(ring->current().id, 1u);
  }
}

TEST_F(KeyringFile, RefusesADirectory) {
  const std::string path = dir_ + "/subdir";
  ASSERT_EQ(::mkdir(path.c_str(), 0700), 0);
  absl::StatusOr<Keyring> ring = Keyring::load_file(path);
  EXPECT_EQ(ring.status().code(), absl::StatusCode::kFailedPrecondition) << ring.status();
  EXPECT_NE(ring.status().message().find("not a regular file"), std::string::npos) << ring.status();
}

TEST_F(KeyringFile, RefusesAFifoWithoutWaitingForAWriter) {
  const std::string path = dir_ + "/fifo";
  ASSERT_EQ(::mkfifo(path.c_str(), 0600), 0);
  files_.push_back(path);
  absl::StatusOr<Keyring> ring = Keyring::load_file(path);
  EXPECT_EQ(ring.status().code(), absl::StatusCode::kFailedPrecondition) << ring.status();
}

TEST_F(KeyringFile, MissingFileErrorNamesThePath) {
  const std::string path = dir_ + "/no-such-keys";
  absl::StatusOr<Keyring> ring = Keyring::load_file(path);
  EXPECT_EQ(ring.status().code(), absl::StatusCode::kNotFound) << ring.status();
  EXPECT_NE(ring.status().message().find(path), std::string::npos) << ring.status();
}

TEST_F(KeyringFile, RefusesAFileOverTheSizeLimit) {
  std::string text = "1 " + kHexA + "\n";
  text += std::string(kFileBytesMax, '#');
  const std::string path = write("keys", text);
  absl::StatusOr<Keyring> ring = Keyring::load_file(path);
  EXPECT_EQ(ring.status().code(), absl::StatusCode::kInvalidArgument) << ring.status();
}

// ---- Keys from elsewhere ----

TEST(Keyring, FromKeysKeepsOrder) {
  absl::StatusOr<Keyring> ring =
      Keyring::from_keys({AuthKey{9, bytes_of(kHexA)}, AuthKey{3, bytes_of(kHexLong)}});
  ASSERT_TRUE(ring.ok()) << ring.status();
  EXPECT_EQ(ring->current().id, 9u);
  ASSERT_NE(ring->find(3), nullptr);
  EXPECT_EQ(ring->find(3)->secret, bytes_of(kHexLong));
  EXPECT_EQ(ring->find(4), nullptr);

  Keyring moved = std::move(*ring);
  EXPECT_EQ(moved.current().id, 9u);
  EXPECT_EQ(ring->size(), 0u);  // NOLINT(bugprone-use-after-move): moved-from is empty
}

TEST(Keyring, FromKeysRefusesWhatAFileMayNotHold) {
  struct Row {
    const char* name;
    std::vector<AuthKey> keys;
    const char* message;
  };
  const std::vector<uint8_t> a = bytes_of(kHexA);
  const Row rows[] = {
      {"no key", {}, "no key"},
      {"id 0", {AuthKey{0, a}}, "key #1: key id 0"},
      {"short secret",
       {AuthKey{1, a}, AuthKey{2, std::vector<uint8_t>(31, 1)}},
       "key #2: key 2 has a 31-byte secret"},
      {"long secret", {AuthKey{1, std::vector<uint8_t>(65, 1)}}, "key 1 has a 65-byte secret"},
      {"duplicate id",
       {AuthKey{1, a}, AuthKey{2, a}, AuthKey{1, a}},
       "key #3: id 1 repeats key #1"},
      {"too many keys", std::vector<AuthKey>(kKeysMax + 1, AuthKey{1, a}), "over the limit"},
  };
  for (const Row& row : rows) {
    SCOPED_TRACE(row.name);
    absl::StatusOr<Keyring> ring = Keyring::from_keys(row.keys);
    ASSERT_EQ(ring.status().code(), absl::StatusCode::kInvalidArgument) << ring.status();
    EXPECT_NE(ring.status().message().find(row.message), std::string::npos) << ring.status();
  }
}

}  // namespace
}  // namespace ringxfer::auth
