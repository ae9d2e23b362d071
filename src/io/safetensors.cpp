// safetensors reader (memory-mapped, zero-copy) and atomic writer. Format:
// https://github.com/huggingface/safetensors#format — u64 LE header size N, N bytes of JSON,
// then the byte buffer that every data_offsets pair indexes (relative to the buffer start).
#include "io/safetensors.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/checked_size.h"
#include "core/error.h"
#include "io/json_unique.h"
#include "io/mapped_file.h"

namespace qlora {
namespace {

// The reference implementation refuses headers above 100 MB; so do we (a corrupt length would
// otherwise make us parse the whole file as JSON).
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

struct DtypeName {
  const char* name;
  DType dtype;
};
constexpr DtypeName kDtypes[] = {
    {"F32", DType::F32}, {"F16", DType::F16}, {"BF16", DType::BF16}, {"F64", DType::F64},
    {"I8", DType::I8},   {"U8", DType::U8},   {"I16", DType::I16},   {"I32", DType::I32},
    {"I64", DType::I64}, {"BOOL", DType::BOOL},
};

DType parse_dtype(const std::string& s, const std::string& path, const std::string& tensor) {
  for (const auto& d : kDtypes)
    if (s == d.name) return d.dtype;
  fail("safetensors", "{}: tensor {} has unknown dtype \"{}\"; expected one of F32, F16, BF16, F64, "
                      "I8, U8, I16, I32, I64, BOOL",
       path, tensor, s);
}

const char* dtype_label(DType dtype) {
  for (const auto& d : kDtypes)
    if (d.dtype == dtype) return d.name;
  QLORA_ASSERT(false, "no safetensors name for dtype {}", dtype_name(dtype));
  return "";
}

uint64_t json_u64(const nlohmann::ordered_json& j, const std::string& path, const std::string& tensor,
                  const char* field) {
  if (!j.is_number_unsigned() && !(j.is_number_integer() && j.get<int64_t>() >= 0))
    fail("safetensors", "{}: tensor {}: {} must hold non-negative integers; got {}", path, tensor,
         field, j.dump());
  return j.get<uint64_t>();
}

}  // namespace

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  MappedFile map = map_file(path);
  SafetensorsFile file;
  file.path_ = path;
  file.mapping_ = map.owner;
  file.base_ = map.data;

  if (map.size < 8)
    fail("safetensors", "{} is truncated: expected at least 8 bytes (the header length), got {}", path,
         map.size);
  uint64_t header_len;
  std::memcpy(&header_len, map.data, 8);
  if (header_len > map.size - 8)
    fail("safetensors", "{}: header length {} runs past the end of the file; expected at most {}", path,
         header_len, map.size - 8);
  if (header_len > kMaxHeaderBytes)
    fail("safetensors", "{}: header length {} exceeds the {}-byte limit", path, header_len,
         kMaxHeaderBytes);
  const size_t data_start = 8 + size_t(header_len);
  const size_t data_bytes = map.size - data_start;

  nlohmann::ordered_json header;
  std::optional<std::string> duplicate;
  try {
    header = parse_json_unique_keys<nlohmann::ordered_json>(map.data + 8, map.data + data_start, duplicate);
  } catch (const nlohmann::json::exception& e) {
    fail("safetensors", "{}: malformed JSON header: {}", path, e.what());
  }
  if (duplicate) fail("safetensors", "{}: the header names {} twice", path, *duplicate);
  if (!header.is_object())
    fail("safetensors", "{}: header must be a JSON object; got {}", path, header.type_name());

  size_t order = 0;
  for (const auto& [name, value] : header.items()) {
    if (name == "__metadata__") {
      if (!value.is_object()) fail("safetensors", "{}: __metadata__ must be an object", path);
      for (const auto& [k, v] : value.items()) {
        if (!v.is_string())
          fail("safetensors", "{}: __metadata__ value for {} must be a string; got {}", path, k,
               v.type_name());
        file.metadata_[k] = v.get<std::string>();
      }
      continue;
    }
    if (!value.is_object() || !value.contains("dtype") || !value.contains("shape") ||
        !value.contains("data_offsets"))
      fail("safetensors", "{}: tensor {} must be an object with dtype, shape and data_offsets; got {}",
           path, name, value.dump());
    const auto& dtype_j = value["dtype"];
    if (!dtype_j.is_string())
      fail("safetensors", "{}: tensor {} has a non-string dtype {}", path, name, dtype_j.dump());
    Entry e{};
    e.dtype = parse_dtype(dtype_j.get<std::string>(), path, name);
    const auto& shape_j = value["shape"];
    if (!shape_j.is_array()) fail("safetensors", "{}: tensor {}: shape must be an array", path, name);
    std::vector<uint64_t> dims;
    for (const auto& d : shape_j) dims.push_back(json_u64(d, path, name, "shape"));
    const std::string what = fmt::format("{}: tensor {} with shape {}", path, name, shape_j.dump());
    const uint64_t numel = checked_product(dims, "safetensors", what);
    for (uint64_t d : dims) e.shape.push_back(int64_t(d));
    const auto& off_j = value["data_offsets"];
    if (!off_j.is_array() || off_j.size() != 2)
      fail("safetensors", "{}: tensor {}: data_offsets must be [begin, end]; got {}", path, name,
           off_j.dump());
    const uint64_t begin = json_u64(off_j[0], path, name, "data_offsets");
    const uint64_t end = json_u64(off_j[1], path, name, "data_offsets");
    if (begin > end || end > data_bytes)
      fail("safetensors", "{}: tensor {} has data_offsets [{}, {}] outside the data section; expected "
                          "begin <= end <= {} (file truncated?)",
           path, name, begin, end, data_bytes);
    const uint64_t expected = checked_mul(numel, dtype_size(e.dtype), "safetensors", what);
    if (end - begin != expected)
      fail("safetensors", "{}: tensor {} has {} bytes; expected {} for shape {} and dtype {}", path,
           name, end - begin, expected, shape_str(e.shape), dtype_j.get<std::string>());
    e.begin = data_start + size_t(begin);
    e.end = data_start + size_t(end);
    e.order = order++;
    file.entries_.emplace(name, std::move(e));
  }

  std::vector<std::pair<const std::string*, const Entry*>> sorted;
  for (const auto& [name, e] : file.entries_)
    if (e.end > e.begin) sorted.push_back({&name, &e});  // empty tensors occupy no bytes
  std::sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) {
    return a.second->begin != b.second->begin ? a.second->begin < b.second->begin
                                              : a.second->end < b.second->end;
  });
  for (size_t i = 1; i < sorted.size(); ++i) {
    const Entry* prev = sorted[i - 1].second;
    const Entry* cur = sorted[i].second;
    if (prev->end > cur->begin)
      fail("safetensors", "{}: tensors {} and {} have overlapping data_offsets", path,
           *sorted[i - 1].first, *sorted[i].first);
  }
  return file;
}

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::string> out(entries_.size());
  for (const auto& [name, e] : entries_) out[e.order] = name;
  return out;
}

DType SafetensorsFile::dtype(const std::string& name) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) fail("safetensors", "tensor {} not found in {}", name, path_);
  return it->second.dtype;
}

Shape SafetensorsFile::shape(const std::string& name) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) fail("safetensors", "tensor {} not found in {}", name, path_);
  return it->second.shape;
}

void SafetensorsFile::release(const std::string& name) const {
  auto it = entries_.find(name);
  if (it == entries_.end() || !base_) return;
  release_mapped_pages(base_ + it->second.begin, it->second.end - it->second.begin);
}

Tensor SafetensorsFile::get(const std::string& name) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) fail("safetensors", "tensor {} not found in {}", name, path_);
  const Entry& e = it->second;
  const size_t bytes = e.end - e.begin;
  const uint8_t* p = base_ ? base_ + e.begin : nullptr;
  // The format does not align tensor data; view it in place when the address suits the dtype
  // (the usual case, since writers pad the header to 8 bytes), copy it otherwise.
  if (p && reinterpret_cast<uintptr_t>(p) % dtype_size(e.dtype) == 0) {
    prefetch_mapped_pages(p, bytes);
    return Tensor(e.shape, e.dtype, Storage::borrow(const_cast<uint8_t*>(p), bytes, mapping_));
  }
  Tensor out = Tensor::zeros(e.shape, e.dtype);
  if (bytes) std::memcpy(out.raw(), p, bytes);
  return out;
}

const char* safetensors_dtype_name(DType dtype) { return dtype_label(dtype); }

}  // namespace qlora
