// A recipe's suite in GoogleTest, one test suite per tier (docs/sweep.md, "Greenness"): run by
// agent/tests/suite/producers.rs through the real sweep, which reads what GoogleTest writes.
// FAIL names the tiers that fail, in lowercase (a comma-separated environment variable).
#include <cstdlib>
#include <string>

#include <gtest/gtest.h>

static bool failing(const char* tier) {
  const char* fail = std::getenv("FAIL");
  return fail != nullptr && ("," + std::string(fail) + ",").find("," + std::string(tier) + ",") != std::string::npos;
}

TEST(Install, AppAnswers) { EXPECT_FALSE(failing("install")); }
TEST(Install, DatabaseReady) { SUCCEED(); }

// A check that fails, then the test skips itself: GoogleTest writes <failure> then <skipped>.
TEST(Backup, RestoreKeepsPosts) {
  EXPECT_FALSE(failing("backup")) << "posts lost after restore";
  if (failing("backup")) GTEST_SKIP() << "restore cannot go on";
}
TEST(Backup, ArchiveIsWritten) { SUCCEED(); }
TEST(Backup, DISABLED_Offsite) { FAIL() << "never run"; }

// A tier whose only test is disabled: it never runs, so the tier is not green.
TEST(Upgrade, DISABLED_FromLastRelease) { SUCCEED(); }

TEST(Functional, LoginWorks) { EXPECT_FALSE(failing("functional")); }
TEST(Functional, OptionalFeature) { GTEST_SKIP() << "feature off"; }
