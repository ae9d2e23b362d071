// Crash-safe output: every file and folder qlora writes appears complete or not at all. A file is
// written to a temp file beside its target, fsynced, renamed over the target, and the directory is
// fsynced so the rename itself survives a power cut. A folder is built beside its target the same
// way and renamed into place (an existing folder is moved aside first, then deleted).
// An append-only log (metrics.jsonl) cannot be replaced whole at every line: AppendFile checks
// every write and fsync instead. Every product file goes through one of these; nothing else in
// src/ or tools/ opens a file for writing. Every error names the file and the module that was
// writing it. Tested in tests/unit/test_atomic_file.cpp (content, replacement, a write that fails
// with EFBIG/ENOSPC leaves the old file and no temp file, appends to /dev/full fail).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace qlora {

// A file being written: open() creates "<path>.tmp.<pid>"; commit() fsyncs, closes and renames
// it over `path` and fsyncs the directory. Destroyed uncommitted, the temp file is removed and
// `path` is untouched.
class AtomicFile {
 public:
  AtomicFile(std::string path, std::string_view module);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, size_t bytes);
  void write(std::string_view text) { write(text.data(), text.size()); }
  // Overwrites bytes already written (or leaves a hole to fill later) at `offset`, without moving
  // the position of write().
  void write_at(uint64_t offset, const void* data, size_t bytes);
  void commit();
  const std::string& temp_path() const { return tmp_; }

 private:
  std::string path_, tmp_, module_;
  int fd_ = -1;
};

// The whole file at once.
void write_file_atomically(const std::string& path, std::string_view contents, std::string_view module);

// `from` copied to `to` through an AtomicFile (a tokenizer file beside an exported model).
void copy_file_atomically(const std::string& from, const std::string& to, std::string_view module);

// A file appended to line by line; every write is checked (a short write is retried, an error
// such as ENOSPC throws naming the file). sync() makes what was appended durable.
class AppendFile {
 public:
  AppendFile(std::string path, std::string_view module);
  ~AppendFile();
  AppendFile(const AppendFile&) = delete;
  AppendFile& operator=(const AppendFile&) = delete;

  void append(std::string_view text);
  void sync();
  const std::string& path() const { return path_; }

 private:
  std::string path_, module_;
  int fd_ = -1;
};

// fsync of a directory (a rename or a new entry in it becomes durable).
void fsync_directory(const std::string& dir, std::string_view module);

// A folder being built: path() is "<dir>.tmp-<pid>" (created empty, any leftover of ours removed);
// commit() fsyncs it and renames it to `dir`, replacing an existing folder (moved aside to
// "<dir>.old-<pid>" first, removed after), then fsyncs the parent. Destroyed uncommitted, the
// temp folder is removed.
class AtomicDirectory {
 public:
  AtomicDirectory(std::string dir, std::string_view module);
  ~AtomicDirectory();
  AtomicDirectory(const AtomicDirectory&) = delete;
  AtomicDirectory& operator=(const AtomicDirectory&) = delete;

  const std::string& path() const { return tmp_; }
  void commit();

 private:
  std::string dir_, tmp_, module_;
  bool committed_ = false;
};

}  // namespace qlora
