#include "base/status_macros.h"

#include <cerrno>
#include <string>

#include "base/check.h"
#include "base/errno_status.h"
#include "gtest/gtest.h"

namespace ringxfer::base {
namespace {

absl::Status fail_if(bool fail) {
  return fail ? absl::InvalidArgumentError("size is 0") : absl::OkStatus();
}

absl::StatusOr<int> value_or_error(bool fail) {
  if (fail) {
    return absl::NotFoundError("memory id 7");
  }
  return 41;
}

int g_steps = 0;

absl::Status two_steps(bool fail_first) {
  g_steps = 0;
  RX_RETURN_IF_ERROR(fail_if(fail_first));
  ++g_steps;
  RX_RETURN_IF_ERROR(fail_if(false));
  ++g_steps;
  return absl::OkStatus();
}

absl::StatusOr<int> plus_one(bool fail) {
  RX_ASSIGN_OR_RETURN(int v, value_or_error(fail));
  return v + 1;
}

TEST(StatusMacros, ReturnIfErrorStopsAtFirstError) {
  absl::Status s = two_steps(true);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "size is 0");
  EXPECT_EQ(g_steps, 0);
  EXPECT_TRUE(two_steps(false).ok());
  EXPECT_EQ(g_steps, 2);
}

TEST(StatusMacros, AssignOrReturnPassesValueAndError) {
  absl::StatusOr<int> ok = plus_one(false);
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(*ok, 42);
  absl::StatusOr<int> bad = plus_one(true);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(bad.status().message(), "memory id 7");
}

TEST(ErrnoStatus, MapsConnectionFailuresToUnavailable) {
  for (int e : {ECONNREFUSED, ECONNRESET, EPIPE, ENOTCONN, EHOSTUNREACH, ECONNABORTED}) {
    SCOPED_TRACE(e);
    EXPECT_EQ(errno_to_status(e, "connect").code(), absl::StatusCode::kUnavailable);
  }
}

TEST(ErrnoStatus, MapsOtherErrnos) {
  EXPECT_TRUE(errno_to_status(0, "x").ok());
  EXPECT_EQ(errno_to_status(ETIMEDOUT, "x").code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(errno_to_status(EINVAL, "x").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(errno_to_status(ENOMEM, "x").code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(errno_to_status(EPERM, "x").code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(errno_to_status(ENOSYS, "x").code(), absl::StatusCode::kUnimplemented);
}

TEST(ErrnoStatus, MessageNamesContextAndErrno) {
  const absl::Status s = errno_to_status(ECONNREFUSED, "connect 127.0.0.1:9");
  const std::string m(s.message());
  EXPECT_NE(m.find("connect 127.0.0.1:9"), std::string::npos) << m;
  EXPECT_NE(m.find("refused"), std::string::npos) << m;
  EXPECT_NE(m.find("errno 111"), std::string::npos) << m;
}

TEST(CheckDeathTest, FailedCheckAbortsWithCondition) {
  EXPECT_DEATH(RX_CHECK_MSG(1 + 1 == 3, "arithmetic"), "check failed.*1 \\+ 1 == 3: arithmetic");
}

}  // namespace
}  // namespace ringxfer::base
