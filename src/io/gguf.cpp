// GGUF reader. Layout (ggml/docs/gguf.md): magic "GGUF", u32 version, tensor count and metadata
// count (u64; u32 in v1), metadata key/value pairs, tensor infos (name, n_dims, dims innermost
// first, u32 type, u64 offset), padding to general.alignment (default 32), then the data section.
// Version 1 spells every count, string length, array length and dimension as u32.
// Every read is bounds-checked, so a truncated or corrupt file fails with a message naming it.
#include "io/gguf.h"

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "core/checked_size.h"
#include "core/error.h"
#include "io/ggml_dequant.h"
#include "io/mapped_file.h"

namespace qlora {
namespace {

constexpr uint64_t kDefaultAlignment = 32;
constexpr int kMaxArrayDepth = 8;  // nested arrays deeper than this are certainly corrupt
constexpr uint32_t kMaxDims = 4;   // GGML_MAX_DIMS

enum ValueType : uint32_t {
  kU8 = 0, kI8 = 1, kU16 = 2, kI16 = 3, kU32 = 4, kI32 = 5, kF32 = 6, kBool = 7,
  kString = 8, kArray = 9, kU64 = 10, kI64 = 11, kF64 = 12,
};

const char* value_type_name(const GgufValue& v) {
  switch (v.value.index()) {
    case 0: return "unsigned integer";
    case 1: return "integer";
    case 2: return "float";
    case 3: return "bool";
    case 4: return "string";
    default: return "array";
  }
}

// f32 metadata (e.g. rms epsilon 1e-5) widens through its shortest decimal form, so the double
// is 1e-5 rather than 9.99999974738e-06 and a config written back reads as the writer meant.
double widen_f32(float f) {
  char buf[32];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, f);
  if (ec != std::errc()) return double(f);
  return std::strtod(std::string(buf, end).c_str(), nullptr);
}

// Bounds-checked little-endian cursor over the mapping.
class Reader {
 public:
  Reader(const uint8_t* data, size_t size, const std::string& path, uint32_t version)
      : data_(data), size_(size), path_(path), version_(version) {}

  size_t pos() const { return pos_; }
  size_t remaining() const { return size_ - pos_; }

  void need(uint64_t bytes, const char* what) const {
    if (bytes > remaining())
      fail("gguf", "{} is truncated: reading {} needs {} bytes at offset {}; expected a file of at "
                   "least {} bytes, got {}",
           path_, what, bytes, pos_, pos_ + bytes, size_);
  }
  template <typename T>
  T read(const char* what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  // Counts, lengths and dimensions: u32 in v1, u64 afterwards.
  uint64_t read_size(const char* what) {
    return version_ == 1 ? uint64_t(read<uint32_t>(what)) : read<uint64_t>(what);
  }
  std::string read_string(const char* what) {
    const uint64_t n = read_size(what);
    need(n, what);
    std::string s(reinterpret_cast<const char*>(data_ + pos_), size_t(n));
    pos_ += size_t(n);
    return s;
  }

  // The fewest bytes a value of `type` occupies: its scalar size, a string's or an array's
  // header (an unknown type fails when its first element is read).
  uint64_t min_value_bytes(uint32_t type) const {
    const uint64_t size_bytes = version_ == 1 ? 4 : 8;
    switch (type) {
      case kU8: case kI8: case kBool: return 1;
      case kU16: case kI16: return 2;
      case kU32: case kI32: case kF32: return 4;
      case kU64: case kI64: case kF64: return 8;
      case kString: return size_bytes;
      case kArray: return 4 + size_bytes;
      default: return 1;
    }
  }

  GgufValue read_value(uint32_t type, const std::string& key, int depth) {
    GgufValue v;
    switch (type) {
      case kU8: v.value = uint64_t(read<uint8_t>(key.c_str())); break;
      case kI8: v.value = int64_t(read<int8_t>(key.c_str())); break;
      case kU16: v.value = uint64_t(read<uint16_t>(key.c_str())); break;
      case kI16: v.value = int64_t(read<int16_t>(key.c_str())); break;
      case kU32: v.value = uint64_t(read<uint32_t>(key.c_str())); break;
      case kI32: v.value = int64_t(read<int32_t>(key.c_str())); break;
      case kF32: v.value = widen_f32(read<float>(key.c_str())); break;
      case kBool: {
        const uint8_t b = read<uint8_t>(key.c_str());
        if (b > 1) fail("gguf", "{}: metadata {}: expected a bool (0 or 1), got {}", path_, key, b);
        v.value = b != 0;
        break;
      }
      case kString: v.value = read_string(key.c_str()); break;
      case kU64: v.value = read<uint64_t>(key.c_str()); break;
      case kI64: v.value = read<int64_t>(key.c_str()); break;
      case kF64: v.value = read<double>(key.c_str()); break;
      case kArray: {
        if (depth >= kMaxArrayDepth)
          fail("gguf", "{}: metadata {}: arrays nested deeper than {}", path_, key, kMaxArrayDepth);
        const uint32_t elem_type = read<uint32_t>(key.c_str());
        const uint64_t n = read_size(key.c_str());
        // Every element takes at least min_value_bytes, so a count whose elements cannot fit in
        // what remains is corrupt; checking first keeps a bad count from allocating gigabytes.
        const uint64_t bytes = checked_mul(n, min_value_bytes(elem_type), "gguf",
                                           fmt::format("{}: metadata {} ({} array elements)", path_, key, n));
        if (bytes > remaining())
          fail("gguf", "{} is truncated: metadata {} declares {} array elements ({} bytes at least); only {} "
                       "bytes remain",
               path_, key, n, bytes, remaining());
        auto array = std::make_shared<GgufArray>();
        array->reserve(size_t(n));
        for (uint64_t i = 0; i < n; ++i) array->push_back(read_value(elem_type, key, depth + 1));
        v.value = std::move(array);
        break;
      }
      default:
        fail("gguf", "{}: metadata {} has unknown value type {}; expected 0..12", path_, key, type);
    }
    return v;
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
  const std::string& path_;
  uint32_t version_;
};

}  // namespace

int64_t GgufValue::as_int(const std::string& key) const {
  if (auto* u = std::get_if<uint64_t>(&value)) {
    if (*u > uint64_t(std::numeric_limits<int64_t>::max()))
      fail("gguf", "key {}: expected an integer that fits int64, got {}", key, *u);
    return int64_t(*u);
  }
  if (auto* i = std::get_if<int64_t>(&value)) return *i;
  fail("gguf", "key {}: expected an integer, got a {}", key, value_type_name(*this));
}

double GgufValue::as_float(const std::string& key) const {
  if (auto* d = std::get_if<double>(&value)) return *d;
  if (auto* u = std::get_if<uint64_t>(&value)) return double(*u);
  if (auto* i = std::get_if<int64_t>(&value)) return double(*i);
  fail("gguf", "key {}: expected a number, got a {}", key, value_type_name(*this));
}

bool GgufValue::as_bool(const std::string& key) const {
  if (auto* b = std::get_if<bool>(&value)) return *b;
  fail("gguf", "key {}: expected a bool, got a {}", key, value_type_name(*this));
}

const std::string& GgufValue::as_string(const std::string& key) const {
  if (auto* s = std::get_if<std::string>(&value)) return *s;
  fail("gguf", "key {}: expected a string, got a {}", key, value_type_name(*this));
}

const GgufArray& GgufValue::as_array(const std::string& key) const {
  if (auto* a = std::get_if<std::shared_ptr<GgufArray>>(&value)) return **a;
  fail("gguf", "key {}: expected an array, got a {}", key, value_type_name(*this));
}

GgufFile GgufFile::open(const std::string& path) {
  MappedFile map = map_file(path);
  GgufFile file;
  file.path_ = path;
  file.mapping_ = map.owner;

  if (map.size < 8) fail("gguf", "{} is truncated: expected at least 8 bytes, got {}", path, map.size);
  if (std::memcmp(map.data, "GGUF", 4) != 0)
    fail("gguf", "{} is not a GGUF file; expected magic \"GGUF\", got bytes {:02x} {:02x} {:02x} {:02x}",
         path, map.data[0], map.data[1], map.data[2], map.data[3]);
  uint32_t version;
  std::memcpy(&version, map.data + 4, 4);
  if (version < 1 || version > 3)
    fail("gguf", "{}: unsupported GGUF version; expected 1, 2 or 3, got {}", path, version);
  file.version_ = version;

  Reader r(map.data, map.size, file.path_, version);
  r.read<uint32_t>("magic");
  r.read<uint32_t>("version");
  const uint64_t n_tensors = r.read_size("tensor count");
  const uint64_t n_kv = r.read_size("metadata count");
  // Each metadata pair and tensor info takes well over 8 bytes: larger counts are corrupt.
  if (n_kv > r.remaining() / 8 || n_tensors > r.remaining() / 8)
    fail("gguf", "{} is corrupt or truncated: {} metadata entries and {} tensors cannot fit in {} bytes",
         path, n_kv, n_tensors, map.size);

  for (uint64_t i = 0; i < n_kv; ++i) {
    std::string key = r.read_string("metadata key");
    const uint32_t type = r.read<uint32_t>(key.c_str());
    GgufValue value = r.read_value(type, key, 0);
    if (!file.metadata_.emplace(key, std::move(value)).second)
      fail("gguf", "{}: duplicate metadata key {}", path, key);
  }

  uint64_t alignment = kDefaultAlignment;
  if (file.has("general.alignment")) {
    const int64_t a = file.get("general.alignment").as_int("general.alignment");
    if (a <= 0 || (a & (a - 1)) != 0)
      fail("gguf", "{}: general.alignment must be a power of two; got {}", path, a);
    alignment = uint64_t(a);
  }

  file.tensors_.reserve(size_t(n_tensors));
  for (uint64_t i = 0; i < n_tensors; ++i) {
    GgufTensorInfo info;
    info.name = r.read_string("tensor name");
    const uint32_t n_dims = r.read<uint32_t>(info.name.c_str());
    if (n_dims < 1 || n_dims > kMaxDims)
      fail("gguf", "{}: tensor {} has {} dimensions; expected 1 to {}", path, info.name, n_dims, kMaxDims);
    std::vector<uint64_t> dims(n_dims);
    for (auto& d : dims) d = r.read_size(info.name.c_str());
    info.type = r.read<uint32_t>(info.name.c_str());
    info.offset = r.read<uint64_t>(info.name.c_str());

    const GgmlTypeTraits traits = ggml_type_traits(info.type);
    if (traits.block_elems == 0)
      fail("gguf", "{}: tensor {} has unknown GGML type {}", path, info.name, info.type);
    for (uint64_t d : dims) {
      if (d == 0 || d > (uint64_t(1) << 40))
        fail("gguf", "{}: tensor {} has an invalid dimension {}", path, info.name, d);
    }
    const std::string what = fmt::format("{}: tensor {} of type {}", path, info.name, traits.name);
    const uint64_t numel = checked_product(dims, "gguf", what);
    if (dims[0] % traits.block_elems != 0)
      fail("gguf", "{}: tensor {} of type {} has row length {}; expected a multiple of the block size {}",
           path, info.name, traits.name, dims[0], traits.block_elems);
    info.nbytes = checked_mul(numel / traits.block_elems, traits.block_bytes, "gguf", what);
    for (auto it = dims.rbegin(); it != dims.rend(); ++it) info.shape.push_back(int64_t(*it));
    if (info.offset % alignment != 0)
      fail("gguf", "{}: tensor {} has offset {}; expected a multiple of the alignment {}", path,
           info.name, info.offset, alignment);
    if (file.find_tensor(info.name) != nullptr)
      fail("gguf", "{}: duplicate tensor {}", path, info.name);
    file.tensors_.push_back(std::move(info));
  }

  const uint64_t data_start =
      checked_add(r.pos(), alignment - 1, "gguf", fmt::format("{}: data section (alignment {})", path, alignment)) /
      alignment * alignment;
  file.data_bytes_ = data_start < map.size ? size_t(map.size - data_start) : 0;
  file.data_ = map.data ? map.data + std::min<uint64_t>(data_start, map.size) : nullptr;

  // Every tensor inside the data section, none overlapping.
  std::vector<const GgufTensorInfo*> by_offset;
  for (const auto& t : file.tensors_) {
    if (t.offset > file.data_bytes_ || t.nbytes > file.data_bytes_ - t.offset)
      fail("gguf", "{} is truncated: tensor {} ({} bytes at data offset {}) ends past the end of the "
                   "data section; expected at most {} bytes, got {}",
           path, t.name, t.nbytes, t.offset, t.offset + t.nbytes, file.data_bytes_);
    by_offset.push_back(&t);
  }
  std::sort(by_offset.begin(), by_offset.end(),
            [](auto* a, auto* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const auto* prev = by_offset[i - 1];
    if (prev->offset + prev->nbytes > by_offset[i]->offset)
      fail("gguf", "{}: tensors {} and {} overlap", path, prev->name, by_offset[i]->name);
  }
  return file;
}

const GgufValue& GgufFile::get(const std::string& key) const {
  auto it = metadata_.find(key);
  if (it == metadata_.end()) fail("gguf", "{}: metadata key {} is missing", path_, key);
  return it->second;
}

const GgufTensorInfo* GgufFile::find_tensor(const std::string& name) const {
  for (const auto& t : tensors_)
    if (t.name == name) return &t;
  return nullptr;
}

std::pair<const uint8_t*, uint64_t> GgufFile::span(const GgufTensorInfo& info, int64_t index) const {
  if (index < 0) return {data_ + info.offset, info.nbytes};
  const int64_t n = info.shape.empty() ? 1 : info.shape[0];
  if (info.shape.size() < 2 || index >= n)
    fail("gguf", "tensor {} {} in {}: no slice {} along its outermost dimension", info.name, shape_str(info.shape),
         path_, index);
  if (info.nbytes % uint64_t(n) != 0)
    fail("gguf", "tensor {} in {}: {} bytes do not split into {} slices of whole blocks", info.name, path_,
         info.nbytes, n);
  const uint64_t bytes = info.nbytes / uint64_t(n);
  return {data_ + info.offset + uint64_t(index) * bytes, bytes};
}

void GgufFile::release(const std::string& name) const {
  if (const GgufTensorInfo* info = find_tensor(name)) release_mapped_pages(data_ + info->offset, info->nbytes);
}

void GgufFile::release_slice(const std::string& name, int64_t index) const {
  if (const GgufTensorInfo* info = find_tensor(name)) {
    const auto [src, bytes] = span(*info, index);
    release_mapped_pages(src, bytes);
  }
}

Tensor GgufFile::load(const std::string& name, bool keep_float_dtype) const {
  const GgufTensorInfo* info = find_tensor(name);
  if (!info) fail("gguf", "tensor {} not found in {}", name, path_);
  return decode(*info, data_ + info->offset, info->nbytes, info->shape, keep_float_dtype);
}

Tensor GgufFile::load_slice(const std::string& name, int64_t index, bool keep_float_dtype) const {
  const GgufTensorInfo* info = find_tensor(name);
  if (!info) fail("gguf", "tensor {} not found in {}", name, path_);
  const auto [src, bytes] = span(*info, index);
  return decode(*info, src, bytes, Shape(info->shape.begin() + 1, info->shape.end()), keep_float_dtype);
}

Tensor GgufFile::decode(const GgufTensorInfo& info, const uint8_t* src, uint64_t nbytes, Shape shape,
                        bool keep_float_dtype) const {
  DType stored = DType::F32;
  bool is_float = true;
  switch (GgmlType(info.type)) {
    case GgmlType::F32: stored = DType::F32; break;
    case GgmlType::F16: stored = DType::F16; break;
    case GgmlType::BF16: stored = DType::BF16; break;
    default: is_float = false;
  }
  // Zero-copy view when the caller takes the stored dtype (F32 is always f32) and the address is
  // aligned for it.
  if (is_float && (keep_float_dtype || stored == DType::F32) &&
      reinterpret_cast<uintptr_t>(src) % dtype_size(stored) == 0) {
    auto storage = Storage::borrow(const_cast<uint8_t*>(src), nbytes, mapping_);
    return Tensor(std::move(shape), stored, std::move(storage));
  }
  if (!ggml_type_dequantizable(info.type))
    fail("gguf", "tensor {} in {} has type {}, which qlora cannot dequantize; supported: F32, F16, BF16, Q8_0, "
         "Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K (requantize the file with llama-quantize, e.g. to "
         "Q4_K_M)", info.name, path_, ggml_type_name(info.type));
  Tensor out = Tensor::zeros(std::move(shape), is_float && keep_float_dtype ? stored : DType::F32);
  if (out.dtype() == DType::F32)
    dequantize_ggml(info.type, src, out.data<float>(), size_t(out.numel()));
  else
    std::memcpy(out.raw(), src, nbytes);  // unaligned f16/bf16 kept as stored
  return out;
}

}  // namespace qlora
