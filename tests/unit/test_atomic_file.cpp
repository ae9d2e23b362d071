// io/atomic_file.h: a committed file has exactly its content and replaces the old one; an
// uncommitted or failed write leaves the old file as it was and no temp file behind; a folder
// appears complete or not at all and replaces an existing one; errors name the file and module.
// A full disk is simulated two ways that need no root: RLIMIT_FSIZE (writes past the limit fail
// with EFBIG, as ENOSPC would on a full filesystem) and /dev/full (every write fails with ENOSPC).
#include <gtest/gtest.h>
#include <sys/resource.h>

#include <csignal>
#include <filesystem>

#include "io/atomic_file.h"
#include "io_test_util.h"

namespace qlora {
namespace {

namespace fs = std::filesystem;
using test::expect_error;
using test::TempDir;

std::string read_text(const std::string& path) {
  const std::vector<uint8_t> b = test::read_bytes(path);
  return std::string(b.begin(), b.end());
}

size_t entries(const std::string& dir) {
  size_t n = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir)) ++n;
  return n;
}

TEST(AtomicFile, WritesAndReplaces) {
  TempDir dir;
  const std::string path = dir.file("a.json");
  write_file_atomically(path, "first", "test");
  EXPECT_EQ(read_text(path), "first");
  write_file_atomically(path, "second, longer", "test");
  EXPECT_EQ(read_text(path), "second, longer");
  EXPECT_EQ(entries(dir.path()), 1u);  // no temp file left
}

TEST(AtomicFile, UncommittedLeavesTheOldFile) {
  TempDir dir;
  const std::string path = dir.file("a.bin");
  write_file_atomically(path, "old", "test");
  {
    AtomicFile f(path, "test");
    f.write("new content that never lands");
    EXPECT_TRUE(fs::exists(f.temp_path()));
  }  // destroyed without commit, as when an exception unwinds a writer
  EXPECT_EQ(read_text(path), "old");
  EXPECT_EQ(entries(dir.path()), 1u);
}

TEST(AtomicFile, ErrorsNameTheFileAndModule) {
  TempDir dir;
  expect_error([&] { write_file_atomically(dir.file("missing/sub/x.json"), "x", "export"); },
               {"[export]", "missing/sub/x.json"});
  // A directory in the way of the rename: the temp file is removed again.
  fs::create_directories(dir.file("target/inner"));
  expect_error([&] { write_file_atomically(dir.file("target"), "x", "train"); }, {"[train]", "cannot rename"});
  EXPECT_EQ(entries(dir.path()), 1u);
}

// Lowers this process's file size limit for its lifetime (SIGXFSZ ignored, so a write past the
// limit fails with EFBIG instead of killing the test).
class FileSizeLimit {
 public:
  explicit FileSizeLimit(rlim_t bytes) {
    getrlimit(RLIMIT_FSIZE, &saved_);
    old_handler_ = std::signal(SIGXFSZ, SIG_IGN);
    rlimit r = saved_;
    r.rlim_cur = bytes;
    setrlimit(RLIMIT_FSIZE, &r);
  }
  ~FileSizeLimit() {
    setrlimit(RLIMIT_FSIZE, &saved_);
    std::signal(SIGXFSZ, old_handler_);
  }

 private:
  rlimit saved_{};
  void (*old_handler_)(int) = nullptr;
};

TEST(AtomicFile, AFailedWriteLeavesTheOldFileAndNoTemp) {
  TempDir dir;
  const std::string path = dir.file("config.yaml");
  write_file_atomically(path, "the old, complete config\n", "test");
  const std::string big(4096, 'x');
  {
    FileSizeLimit limit(1000);
    expect_error([&] { write_file_atomically(path, big, "train"); }, {"[train]", "cannot write", "config.yaml.tmp."});
    // Streamed writes fail the same way, at the write that crosses the limit.
    expect_error(
        [&] {
          AtomicFile f(path, "train");
          for (int i = 0; i < 8; ++i) f.write(big.data(), 256);
          f.commit();
        },
        {"[train]", "cannot write"});
    copy_file_atomically(path, dir.file("copy"), "export");  // under the limit: succeeds
  }
  EXPECT_EQ(read_text(path), "the old, complete config\n");
  EXPECT_EQ(read_text(dir.file("copy")), "the old, complete config\n");
  EXPECT_EQ(entries(dir.path()), 2u);  // config.yaml and copy: no temp file left
}

TEST(AtomicFile, CopyIsCompleteOrAbsent) {
  TempDir dir;
  const std::string big(5000, 'y');
  write_file_atomically(dir.file("src"), big, "test");
  write_file_atomically(dir.file("dst"), "old", "test");
  {
    FileSizeLimit limit(1000);
    expect_error([&] { copy_file_atomically(dir.file("src"), dir.file("dst"), "export"); },
                 {"[export]", "cannot write", "dst.tmp."});
  }
  EXPECT_EQ(read_text(dir.file("dst")), "old");
  copy_file_atomically(dir.file("src"), dir.file("dst"), "export");
  EXPECT_EQ(read_text(dir.file("dst")), big);
  EXPECT_EQ(entries(dir.path()), 2u);
  expect_error([&] { copy_file_atomically(dir.file("absent"), dir.file("x"), "export"); }, {"[export]", "absent"});
}

TEST(AppendFile, AppendsAndReportsAFullDisk) {
  TempDir dir;
  {
    AppendFile f(dir.file("log.jsonl"), "train");
    f.append("one\n");
    f.append("two\n");
    f.sync();
  }
  {
    AppendFile f(dir.file("log.jsonl"), "train");  // appends, never truncates
    f.append("three\n");
  }
  EXPECT_EQ(read_text(dir.file("log.jsonl")), "one\ntwo\nthree\n");
  if (!fs::exists("/dev/full")) GTEST_SKIP() << "no /dev/full";
  AppendFile full("/dev/full", "train");
  expect_error([&] { full.append("a line\n"); }, {"[train]", "cannot write /dev/full", "No space left"});
}

TEST(AtomicDirectory, AppearsCompleteAndReplaces) {
  TempDir dir;
  const std::string target = dir.file("checkpoint-1");
  {
    AtomicDirectory d(target, "test");
    write_file_atomically(d.path() + "/a", "1", "test");
    EXPECT_FALSE(fs::exists(target));
    d.commit();
  }
  EXPECT_EQ(read_text(target + "/a"), "1");
  {
    AtomicDirectory d(target, "test");
    write_file_atomically(d.path() + "/b", "2", "test");
    d.commit();
  }
  EXPECT_FALSE(fs::exists(target + "/a"));  // the old folder was replaced, not merged
  EXPECT_EQ(read_text(target + "/b"), "2");
  {
    AtomicDirectory d(target, "test");
    write_file_atomically(d.path() + "/c", "3", "test");
  }  // not committed: the last complete folder stays
  EXPECT_EQ(read_text(target + "/b"), "2");
  EXPECT_EQ(entries(dir.path()), 1u);  // no .tmp- or .old- folder left
}

}  // namespace
}  // namespace qlora
