// AtomicFile, AtomicDirectory and the fsync helpers. See atomic_file.h.
#include "io/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "core/error.h"

namespace qlora {
namespace fs = std::filesystem;

namespace {

std::string parent_of(const std::string& path) {
  const std::string parent = fs::path(path).parent_path().string();
  return parent.empty() ? "." : parent;
}

void fsync_path(const std::string& path, bool directory, std::string_view module) {
  const int fd = ::open(path.c_str(), (directory ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
  if (fd < 0) fail(module, "cannot open {} to fsync it: {}", path, std::strerror(errno));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  // Some filesystems cannot fsync a directory (EINVAL): the data itself was synced already.
  if (rc != 0 && !(directory && err == EINVAL)) fail(module, "cannot fsync {}: {}", path, std::strerror(err));
}

// Writes all `bytes` at the file position (offset < 0) or at `offset`: a short write is continued,
// EINTR retried; ENOSPC, EFBIG or EIO throw naming `what`.
void write_all(int fd, const void* data, size_t bytes, int64_t offset, const std::string& what,
               std::string_view module) {
  const char* p = static_cast<const char*>(data);
  while (bytes > 0) {
    const ssize_t w = offset < 0 ? ::write(fd, p, bytes) : ::pwrite(fd, p, bytes, off_t(offset));
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) fail(module, "cannot write {}: {}", what, w < 0 ? std::strerror(errno) : "no progress (disk full?)");
    p += w;
    bytes -= size_t(w);
    if (offset >= 0) offset += w;
  }
}

}  // namespace

AtomicFile::AtomicFile(std::string path, std::string_view module)
    : path_(std::move(path)), tmp_(path_ + ".tmp." + std::to_string(::getpid())), module_(module) {
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) fail(module_, "cannot create {}: {}", tmp_, std::strerror(errno));
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) {
    ::close(fd_);
    ::unlink(tmp_.c_str());
  }
}

void AtomicFile::write(const void* data, size_t bytes) {
  QLORA_ASSERT(fd_ >= 0, "write to {} after commit", path_);
  write_all(fd_, data, bytes, -1, tmp_, module_);
}

void AtomicFile::write_at(uint64_t offset, const void* data, size_t bytes) {
  QLORA_ASSERT(fd_ >= 0, "write to {} after commit", path_);
  write_all(fd_, data, bytes, int64_t(offset), tmp_, module_);
}

void AtomicFile::commit() {
  QLORA_ASSERT(fd_ >= 0, "commit of {} twice", path_);
  if (::fsync(fd_) != 0) fail(module_, "cannot fsync {}: {}", tmp_, std::strerror(errno));
  const int rc = ::close(fd_);
  fd_ = -1;
  if (rc != 0) {
    const int err = errno;
    ::unlink(tmp_.c_str());
    fail(module_, "cannot close {}: {}", tmp_, std::strerror(err));
  }
  if (std::rename(tmp_.c_str(), path_.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp_.c_str());
    fail(module_, "cannot rename {} to {}: {}", tmp_, path_, std::strerror(err));
  }
  fsync_directory(parent_of(path_), module_);
}

void write_file_atomically(const std::string& path, std::string_view contents, std::string_view module) {
  AtomicFile f(path, module);
  f.write(contents);
  f.commit();
}

void copy_file_atomically(const std::string& from, const std::string& to, std::string_view module) {
  const int in = ::open(from.c_str(), O_RDONLY | O_CLOEXEC);
  if (in < 0) fail(module, "cannot open {}: {}", from, std::strerror(errno));
  try {
    AtomicFile out(to, module);
    char buf[1 << 16];
    for (;;) {
      const ssize_t n = ::read(in, buf, sizeof(buf));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) fail(module, "cannot read {}: {}", from, std::strerror(errno));
      if (n == 0) break;
      out.write(buf, size_t(n));
    }
    out.commit();
  } catch (...) {
    ::close(in);
    throw;
  }
  ::close(in);
}

AppendFile::AppendFile(std::string path, std::string_view module) : path_(std::move(path)), module_(module) {
  fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd_ < 0) fail(module_, "cannot open {} to append to it: {}", path_, std::strerror(errno));
}

AppendFile::~AppendFile() {
  if (fd_ >= 0) ::close(fd_);
}

void AppendFile::append(std::string_view text) { write_all(fd_, text.data(), text.size(), -1, path_, module_); }

void AppendFile::sync() {
  if (::fsync(fd_) != 0 && errno != EINVAL) fail(module_, "cannot fsync {}: {}", path_, std::strerror(errno));
}

void fsync_directory(const std::string& dir, std::string_view module) { fsync_path(dir, true, module); }

AtomicDirectory::AtomicDirectory(std::string dir, std::string_view module)
    : dir_(std::move(dir)), tmp_(dir_ + ".tmp-" + std::to_string(::getpid())), module_(module) {
  std::error_code ec;
  fs::remove_all(tmp_, ec);  // a leftover of an earlier attempt by a process with our pid
  if (!fs::create_directories(tmp_, ec) || ec)
    fail(module_, "cannot create {}: {}", tmp_, ec ? ec.message() : "it exists");
}

AtomicDirectory::~AtomicDirectory() {
  if (committed_) return;
  std::error_code ec;
  fs::remove_all(tmp_, ec);
}

void AtomicDirectory::commit() {
  QLORA_ASSERT(!committed_, "commit of {} twice", dir_);
  fsync_directory(tmp_, module_);
  // rename() cannot replace a non-empty folder: move an existing one aside first, put the new one
  // in place, then delete the old. A crash in between leaves "<dir>.old-<pid>" and at worst no
  // <dir>, never a half-written <dir>.
  std::error_code ec;
  const std::string old = dir_ + ".old-" + std::to_string(::getpid());
  const bool replacing = fs::exists(dir_, ec);
  if (replacing) {
    fs::remove_all(old, ec);
    fs::rename(dir_, old, ec);
    if (ec) fail(module_, "cannot move the existing {} aside: {}", dir_, ec.message());
  }
  fs::rename(tmp_, dir_, ec);
  if (ec) {
    // Put the old folder back, so a failed commit leaves what was there before.
    std::error_code back;
    if (replacing) fs::rename(old, dir_, back);
    fail(module_, "cannot rename {} to {}: {}", tmp_, dir_, ec.message());
  }
  committed_ = true;
  fsync_directory(parent_of(fs::absolute(dir_).string()), module_);
  if (replacing) fs::remove_all(old, ec);
}

}  // namespace qlora
