// train/metrics_log.h: a fresh log replaces an old one; a resumed log keeps the lines before the
// checkpoint's step and that step's training line, drops later lines and a torn last line (with a
// warning naming the file and line), and appends after them.
#include <gtest/gtest.h>

#include "io_test_util.h"
#include "train/metrics_log.h"

namespace qlora {
namespace {

using test::TempDir;

std::string read_text(const std::string& path) {
  const std::vector<uint8_t> b = test::read_bytes(path);
  return std::string(b.begin(), b.end());
}

TEST(MetricsLog, CreateReplacesAnOldLog) {
  TempDir dir;
  const std::string path = dir.file("metrics.jsonl");
  test::write_text(path, "{\"step\":1,\"loss\":2.0}\n");
  {
    MetricsLog log = MetricsLog::create(path);
    EXPECT_TRUE(log.kept().empty());
    log.write({{"step", 1}, {"loss", 3.0}});
  }
  EXPECT_EQ(read_text(path), "{\"loss\":3.0,\"step\":1}\n");
}

TEST(MetricsLog, ResumeCutsBackToTheCheckpointStep) {
  TempDir dir;
  const std::string path = dir.file("metrics.jsonl");
  // A run that evaluated at 0 and 2, saved at step 2 and was killed during step 4's line.
  test::write_text(path,
                   "{\"step\":0,\"val_loss\":5.0}\n"
                   "{\"step\":1,\"loss\":4.0}\n"
                   "{\"step\":2,\"loss\":3.5}\n"
                   "{\"step\":2,\"val_loss\":3.9}\n"
                   "{\"step\":3,\"loss\":3.0}\n"
                   "{\"step\":4,\"lo");
  MetricsLog log = MetricsLog::resume(path, 2);
  ASSERT_EQ(log.kept().size(), 3u);
  EXPECT_EQ(log.kept()[2]["loss"], 3.5);
  ASSERT_EQ(log.warnings().size(), 1u);
  EXPECT_NE(log.warnings()[0].find("metrics.jsonl: line 6"), std::string::npos) << log.warnings()[0];
  log.write({{"step", 2}, {"val_loss", 3.9}});  // the resumed run evaluates at its first step again
  log.write({{"step", 3}, {"loss", 3.0}});
  EXPECT_EQ(read_text(path),
            "{\"step\":0,\"val_loss\":5.0}\n"
            "{\"loss\":4.0,\"step\":1}\n"
            "{\"loss\":3.5,\"step\":2}\n"
            "{\"step\":2,\"val_loss\":3.9}\n"
            "{\"loss\":3.0,\"step\":3}\n");
}

TEST(MetricsLog, ResumeWithoutALogStartsEmpty) {
  TempDir dir;
  MetricsLog log = MetricsLog::resume(dir.file("metrics.jsonl"), 7);
  EXPECT_TRUE(log.kept().empty());
  EXPECT_TRUE(log.warnings().empty());
  log.write({{"step", 7}, {"val_loss", 1.0}});
  EXPECT_EQ(read_text(dir.file("metrics.jsonl")), "{\"step\":7,\"val_loss\":1.0}\n");
}

}  // namespace
}  // namespace qlora
