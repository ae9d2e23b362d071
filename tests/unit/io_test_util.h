// Helpers for the io/model unit tests: a self-deleting temp folder, raw file writing, an
// "expect an Error whose message contains ..." check, and a minimal GGUF writer (v1-v3) for
// hand-made test files. Test-only code; used by test_safetensors, test_gguf, test_llama2c,
// test_loader.
#pragma once
#include <gtest/gtest.h>
#include <stdlib.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "core/error.h"

namespace qlora::test {

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "qlora-test-XXXXXX").string();
    if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

inline void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
}
inline void write_text(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::trunc) << text;
}
inline std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

// Runs `fn`, expects qlora::Error, and checks the message contains every piece.
inline void expect_error(const std::function<void()>& fn, const std::vector<std::string>& pieces) {
  try {
    fn();
  } catch (const qlora::Error& e) {
    const std::string msg = e.what();
    for (const auto& p : pieces) EXPECT_NE(msg.find(p), std::string::npos) << "message: " << msg << "\nmissing: " << p;
    return;
  }
  ADD_FAILURE() << "expected qlora::Error mentioning " << (pieces.empty() ? "" : pieces[0]);
}

// Little-endian byte sink.
struct Bytes {
  std::vector<uint8_t> b;
  template <typename T>
  void put(T v) {
    const size_t n = b.size();
    b.resize(n + sizeof(T));
    std::memcpy(b.data() + n, &v, sizeof(T));
  }
  void put_raw(const void* p, size_t n) {
    const auto* c = static_cast<const uint8_t*>(p);
    b.insert(b.end(), c, c + n);
  }
};

// Hand-written GGUF files: metadata and tensors appended in order, written with the given
// version's integer widths (v1: u32 counts/lengths/dims).
class GgufBuilder {
 public:
  explicit GgufBuilder(uint32_t version = 3, uint64_t alignment = 32) : version_(version), alignment_(alignment) {}

  void kv_u32(const std::string& k, uint32_t v) { key(k, 4); meta_.put(v); ++n_kv_; }
  void kv_i32(const std::string& k, int32_t v) { key(k, 5); meta_.put(v); ++n_kv_; }
  void kv_f32(const std::string& k, float v) { key(k, 6); meta_.put(v); ++n_kv_; }
  void kv_u64(const std::string& k, uint64_t v) { key(k, 10); meta_.put(v); ++n_kv_; }
  void kv_bool(const std::string& k, bool v) { key(k, 7); meta_.put(uint8_t(v)); ++n_kv_; }
  void kv_str(const std::string& k, const std::string& v) { key(k, 8); str(meta_, v); ++n_kv_; }
  void kv_str_array(const std::string& k, const std::vector<std::string>& v) {
    key(k, 9);
    meta_.put(uint32_t(8));
    size(meta_, v.size());
    for (const auto& s : v) str(meta_, s);
    ++n_kv_;
  }
  void kv_i32_array(const std::string& k, const std::vector<int32_t>& v) {
    key(k, 9);
    meta_.put(uint32_t(5));
    size(meta_, v.size());
    for (int32_t x : v) meta_.put(x);
    ++n_kv_;
  }
  // dims innermost first, as GGUF lists them; `data` already in the type's block layout.
  void tensor(const std::string& name, std::vector<uint64_t> dims, uint32_t type, std::vector<uint8_t> data) {
    tensors_.push_back({name, std::move(dims), type, std::move(data), 0});
  }
  void tensor_f32(const std::string& name, std::vector<uint64_t> dims, const std::vector<float>& v) {
    std::vector<uint8_t> d(v.size() * 4);
    std::memcpy(d.data(), v.data(), d.size());
    tensor(name, std::move(dims), 0, std::move(d));
  }

  std::vector<uint8_t> bytes() {
    Bytes out;
    out.put_raw("GGUF", 4);
    out.put(version_);
    size(out, tensors_.size());
    size(out, n_kv_);
    out.put_raw(meta_.b.data(), meta_.b.size());
    uint64_t offset = 0;
    for (auto& t : tensors_) {
      t.offset = offset;
      offset += (t.data.size() + alignment_ - 1) / alignment_ * alignment_;
    }
    for (const auto& t : tensors_) {
      str(out, t.name);
      out.put(uint32_t(t.dims.size()));
      for (uint64_t d : t.dims) size(out, d);
      out.put(t.type);
      out.put(t.offset);
    }
    while (out.b.size() % alignment_) out.b.push_back(0);
    for (size_t i = 0; i < tensors_.size(); ++i) {
      const auto& t = tensors_[i];
      out.put_raw(t.data.data(), t.data.size());
      if (i + 1 < tensors_.size())
        while ((out.b.size()) % alignment_) out.b.push_back(0);
    }
    return out.b;
  }
  void write(const std::string& path) { write_bytes(path, bytes()); }

 private:
  struct T {
    std::string name;
    std::vector<uint64_t> dims;
    uint32_t type;
    std::vector<uint8_t> data;
    uint64_t offset;
  };
  void size(Bytes& out, uint64_t n) {
    if (version_ == 1) out.put(uint32_t(n));
    else out.put(n);
  }
  void str(Bytes& out, const std::string& s) {
    size(out, s.size());
    out.put_raw(s.data(), s.size());
  }
  void key(const std::string& k, uint32_t type) {
    str(meta_, k);
    meta_.put(type);
  }
  uint32_t version_;
  uint64_t alignment_;
  Bytes meta_;
  uint64_t n_kv_ = 0;
  std::vector<T> tensors_;
};

}  // namespace qlora::test
