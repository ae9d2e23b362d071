// io/atomic_file.h: a committed file has exactly its content and replaces the old one; an
// uncommitted or failed write leaves the old file as it was and no temp file behind; a folder
// appears complete or not at all and replaces an existing one; errors name the file and module.
#include <gtest/gtest.h>

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
