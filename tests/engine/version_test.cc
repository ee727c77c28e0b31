// Links the installed shape of the library (libringxfer.so and its public headers
// only) to check that the public surface is usable on its own.
#include "ringxfer/ringxfer.h"

#include <cstring>

#include "gtest/gtest.h"

namespace {

TEST(PublicApi, LibraryVersionMatchesHeader) {
  EXPECT_STREQ(ringxfer::version_string(), RINGXFER_VERSION_STRING);
  EXPECT_GE(RINGXFER_VERSION_MAJOR, 0);
}

TEST(PublicApi, ProtocolVersionRangeIsNotEmpty) {
  EXPECT_GE(ringxfer::protocol_version_min(), 1);
  EXPECT_LE(ringxfer::protocol_version_min(), ringxfer::protocol_version_max());
}

}  // namespace
