// GGUF v3 writer. See gguf_writer.h.
#include "io/gguf_writer.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/ggml_dequant.h"

namespace qlora {
namespace {

constexpr uint32_t kVersion = 3;
constexpr uint64_t kAlignment = 32;  // GGUF's default general.alignment
constexpr int64_t kQ8Block = 32;

template <typename T>
void put(std::vector<uint8_t>& out, T v) {
  const size_t at = out.size();
  out.resize(at + sizeof(T));
  std::memcpy(out.data() + at, &v, sizeof(T));
}
void put_string(std::vector<uint8_t>& out, const std::string& s) {
  put<uint64_t>(out, s.size());
  out.insert(out.end(), s.begin(), s.end());
}

// One scalar of `type` from a GgufValue (already checked to hold a number/bool/string).
void put_scalar(std::vector<uint8_t>& out, const std::string& key, const GgufValue& v, GgufType type) {
  switch (type) {
    case GgufType::U8: put<uint8_t>(out, uint8_t(v.as_int(key))); break;
    case GgufType::I8: put<int8_t>(out, int8_t(v.as_int(key))); break;
    case GgufType::U16: put<uint16_t>(out, uint16_t(v.as_int(key))); break;
    case GgufType::I16: put<int16_t>(out, int16_t(v.as_int(key))); break;
    case GgufType::U32: put<uint32_t>(out, uint32_t(v.as_int(key))); break;
    case GgufType::I32: put<int32_t>(out, int32_t(v.as_int(key))); break;
    case GgufType::U64: put<uint64_t>(out, uint64_t(v.as_int(key))); break;
    case GgufType::I64: put<int64_t>(out, int64_t(v.as_int(key))); break;
    case GgufType::F32: put<float>(out, float(v.as_float(key))); break;
    case GgufType::F64: put<double>(out, v.as_float(key)); break;
    case GgufType::BOOL: put<uint8_t>(out, v.as_bool(key) ? 1 : 0); break;
    case GgufType::STRING: put_string(out, v.as_string(key)); break;
    case GgufType::ARRAY: fail("gguf", "key {}: nested arrays are not supported by the writer", key);
  }
}

size_t ggml_row_bytes(GgmlType type, int64_t n) {
  switch (type) {
    case GgmlType::F32: return size_t(n) * 4;
    case GgmlType::F16:
    case GgmlType::BF16: return size_t(n) * 2;
    case GgmlType::Q8_0: return size_t(n / kQ8Block) * (2 + kQ8Block);
    default: fail("gguf", "the writer supports F32, F16, BF16 and Q8_0; got {}", ggml_type_name(uint32_t(type)));
  }
}

}  // namespace

void quantize_q8_0(const float* x, int64_t n, uint8_t* out) {
  QLORA_ASSERT(n % kQ8Block == 0, "q8_0 needs a multiple of 32 values, got {}", n);
  const int64_t blocks = n / kQ8Block;
#pragma omp parallel for if (blocks > 4096)
  for (int64_t b = 0; b < blocks; ++b) {
    const float* xb = x + b * kQ8Block;
    uint8_t* ob = out + b * (2 + kQ8Block);
    float amax = 0.0f;
    for (int64_t j = 0; j < kQ8Block; ++j) amax = std::max(amax, std::fabs(xb[j]));
    // llama.cpp quantize_row_q8_0_ref: the scale is rounded to f16 for storage but the values
    // are divided by the unrounded one.
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    const uint16_t dh = f32_to_f16(d);
    std::memcpy(ob, &dh, 2);
    for (int64_t j = 0; j < kQ8Block; ++j) ob[2 + j] = uint8_t(int8_t(std::roundf(xb[j] * id)));
  }
}

void GgufWriter::add_kv(const std::string& key, std::vector<uint8_t> bytes) {
  if (has(key)) fail("gguf", "metadata key {} added twice", key);
  kvs_.push_back({key, std::move(bytes)});
}
bool GgufWriter::has(const std::string& key) const {
  for (const Kv& kv : kvs_)
    if (kv.key == key) return true;
  return false;
}

void GgufWriter::add_u32(const std::string& key, uint32_t v) {
  std::vector<uint8_t> b;
  put<uint32_t>(b, uint32_t(GgufType::U32));
  put<uint32_t>(b, v);
  add_kv(key, std::move(b));
}
void GgufWriter::add_i32(const std::string& key, int32_t v) {
  std::vector<uint8_t> b;
  put<uint32_t>(b, uint32_t(GgufType::I32));
  put<int32_t>(b, v);
  add_kv(key, std::move(b));
}
void GgufWriter::add_u64(const std::string& key, uint64_t v) {
  std::vector<uint8_t> b;
  put<uint32_t>(b, uint32_t(GgufType::U64));
  put<uint64_t>(b, v);
  add_kv(key, std::move(b));
}
void GgufWriter::add_f32(const std::string& key, float v) {
  std::vector<uint8_t> b;
  put<uint32_t>(b, uint32_t(GgufType::F32));
  put<float>(b, v);
  add_kv(key, std::move(b));
}
void GgufWriter::add_bool(const std::string& key, bool v) {
  std::vector<uint8_t> b;
  put<uint32_t>(b, uint32_t(GgufType::BOOL));
  put<uint8_t>(b, v ? 1 : 0);
  add_kv(key, std::move(b));
}
void GgufWriter::add_string(const std::string& key, const std::string& v) {
  std::vector<uint8_t> b;
  put<uint32_t>(b, uint32_t(GgufType::STRING));
  put_string(b, v);
  add_kv(key, std::move(b));
}
void GgufWriter::add_string_array(const std::string& key, const std::vector<std::string>& v) {
  std::vector<uint8_t> b;
  put<uint32_t>(b, uint32_t(GgufType::ARRAY));
  put<uint32_t>(b, uint32_t(GgufType::STRING));
  put<uint64_t>(b, v.size());
  for (const auto& s : v) put_string(b, s);
  add_kv(key, std::move(b));
}
void GgufWriter::add_i32_array(const std::string& key, const std::vector<int32_t>& v) {
  std::vector<uint8_t> b;
  put<uint32_t>(b, uint32_t(GgufType::ARRAY));
  put<uint32_t>(b, uint32_t(GgufType::I32));
  put<uint64_t>(b, v.size());
  for (int32_t x : v) put<int32_t>(b, x);
  add_kv(key, std::move(b));
}
void GgufWriter::add_f32_array(const std::string& key, const std::vector<float>& v) {
  std::vector<uint8_t> b;
  put<uint32_t>(b, uint32_t(GgufType::ARRAY));
  put<uint32_t>(b, uint32_t(GgufType::F32));
  put<uint64_t>(b, v.size());
  for (float x : v) put<float>(b, x);
  add_kv(key, std::move(b));
}

void GgufWriter::add_value(const std::string& key, const GgufValue& v, GgufType type, GgufType element_type) {
  std::vector<uint8_t> b;
  if (v.is_array()) {
    if (type != GgufType::ARRAY) fail("gguf", "key {}: an array value needs type ARRAY", key);
    const GgufArray& arr = v.as_array(key);
    put<uint32_t>(b, uint32_t(GgufType::ARRAY));
    put<uint32_t>(b, uint32_t(element_type));
    put<uint64_t>(b, arr.size());
    for (const GgufValue& e : arr) put_scalar(b, key, e, element_type);
  } else {
    put<uint32_t>(b, uint32_t(type));
    put_scalar(b, key, v, type);
  }
  add_kv(key, std::move(b));
}

std::vector<uint8_t> encode_ggml_tensor(const std::string& name, const Tensor& t, GgmlType type) {
  if (t.ndim() < 1 || t.ndim() > 4) fail("gguf", "tensor {}: {} dimensions; GGUF holds 1 to 4", name, t.ndim());
  const int64_t inner = t.dim(-1);
  if (type == GgmlType::Q8_0 && inner % kQ8Block != 0)
    fail("gguf", "tensor {}: Q8_0 needs the innermost dimension to be a multiple of 32; got {}", name,
         shape_str(t.shape()));
  const int64_t n = t.numel();
  std::vector<uint8_t> data(ggml_row_bytes(type, inner) * size_t(n / inner));
  const DType stored = type == GgmlType::F32 ? DType::F32 : type == GgmlType::F16 ? DType::F16 : DType::BF16;
  if (type != GgmlType::Q8_0 && t.dtype() == stored) {
    std::memcpy(data.data(), t.raw(), data.size());
    return data;
  }
  // Converted a chunk at a time through a small f32 buffer, so that encoding a 32000 x 4096
  // embedding holds its encoded bytes and the source, not also a whole-tensor f32 or f16 copy.
  const Tensor wide = t.dtype() == DType::F64 ? t.to(DType::F32) : t;  // (f64 only in tests)
  constexpr int64_t kChunk = 1 << 16;  // a multiple of the Q8_0 block, so blocks stay whole
  std::vector<float> f(size_t(std::min(n, kChunk)));
  for (int64_t begin = 0; begin < n; begin += kChunk) {
    const int64_t len = std::min(kChunk, n - begin);
    switch (wide.dtype()) {
      case DType::F32: std::memcpy(f.data(), wide.data<float>() + begin, size_t(len) * 4); break;
      case DType::BF16: convert_bf16_to_f32(wide.data<uint16_t>() + begin, f.data(), size_t(len)); break;
      case DType::F16: convert_f16_to_f32(wide.data<uint16_t>() + begin, f.data(), size_t(len)); break;
      default: fail("gguf", "tensor {}: cannot encode {} values", name, dtype_name(wide.dtype()));
    }
    switch (type) {
      case GgmlType::F32: std::memcpy(data.data() + size_t(begin) * 4, f.data(), size_t(len) * 4); break;
      case GgmlType::F16:
        convert_f32_to_f16(f.data(), reinterpret_cast<uint16_t*>(data.data()) + begin, size_t(len));
        break;
      case GgmlType::Q8_0: quantize_q8_0(f.data(), len, data.data() + size_t(begin / kQ8Block) * ggml_row_bytes(type, kQ8Block)); break;
      default:
        convert_f32_to_bf16(f.data(), reinterpret_cast<uint16_t*>(data.data()) + begin, size_t(len));
        break;
    }
  }
  return data;
}

void GgufWriter::add_tensor(const std::string& name, const Tensor& t, GgmlType type) {
  add_encoded_tensor(name, t.shape(), uint32_t(type), encode_ggml_tensor(name, t, type));
}

void GgufWriter::declare_tensor(const std::string& name, const Shape& shape, GgmlType type) {
  for (const TensorEntry& e : tensors_)
    if (e.name == name) fail("gguf", "tensor {} added twice", name);
  if (shape.empty() || shape.size() > 4) fail("gguf", "tensor {}: {} dimensions; GGUF holds 1 to 4", name, shape.size());
  const int64_t inner = shape.back();
  tensors_.push_back({name, shape, uint32_t(type), ggml_row_bytes(type, inner) * size_t(shape_numel(shape) / inner), {}});
}

void GgufWriter::add_encoded_tensor(const std::string& name, const Shape& shape, uint32_t type,
                                    std::vector<uint8_t> bytes) {
  for (const TensorEntry& e : tensors_)
    if (e.name == name) fail("gguf", "tensor {} added twice", name);
  const GgmlTypeTraits traits = ggml_type_traits(type);
  if (!traits.block_elems) fail("gguf", "tensor {}: unknown GGML type {}", name, type);
  if (shape.empty() || shape.size() > 4) fail("gguf", "tensor {}: {} dimensions; GGUF holds 1 to 4", name, shape.size());
  const int64_t inner = shape.back();
  if (inner % int64_t(traits.block_elems) != 0)
    fail("gguf", "tensor {}: {} needs the innermost dimension to be a multiple of {}; got {}", name, traits.name,
         traits.block_elems, shape_str(shape));
  const size_t want = size_t(shape_numel(shape) / int64_t(traits.block_elems)) * traits.block_bytes;
  if (bytes.size() != want)
    fail("gguf", "tensor {}: {} bytes for {} {}; expected {}", name, bytes.size(), traits.name, shape_str(shape), want);
  const size_t size = bytes.size();
  tensors_.push_back({name, shape, type, size, std::move(bytes)});
}

void GgufWriter::write(const std::string& path, const TensorProducer& produce) const {
  std::vector<uint8_t> head = {'G', 'G', 'U', 'F'};
  put<uint32_t>(head, kVersion);
  put<uint64_t>(head, tensors_.size());
  put<uint64_t>(head, kvs_.size());
  for (const Kv& kv : kvs_) {
    put_string(head, kv.key);
    head.insert(head.end(), kv.bytes.begin(), kv.bytes.end());
  }
  uint64_t offset = 0;
  for (const TensorEntry& e : tensors_) {
    put_string(head, e.name);
    put<uint32_t>(head, uint32_t(e.shape.size()));
    for (auto it = e.shape.rbegin(); it != e.shape.rend(); ++it) put<uint64_t>(head, uint64_t(*it));  // innermost first
    put<uint32_t>(head, uint32_t(e.type));
    put<uint64_t>(head, offset);
    offset += (e.bytes + kAlignment - 1) / kAlignment * kAlignment;
  }
  head.resize((head.size() + kAlignment - 1) / kAlignment * kAlignment, 0);

  // Readers never see a half-written file (io/atomic_file.h).
  AtomicFile file(path, "gguf");
  file.write(head.data(), head.size());
  static const uint8_t zeros[kAlignment] = {};
  for (const TensorEntry& e : tensors_) {
    std::vector<uint8_t> produced;
    if (e.data.empty() && e.bytes > 0) {
      if (!produce) fail("gguf", "{}: tensor {} was declared but no producer was given", path, e.name);
      produced = produce(e.name);
      if (produced.size() != e.bytes)
        fail("gguf", "{}: tensor {}: {} bytes produced; {} declared", path, e.name, produced.size(), e.bytes);
    }
    const std::vector<uint8_t>& data = e.data.empty() ? produced : e.data;
    file.write(data.data(), data.size());
    file.write(zeros, (kAlignment - data.size() % kAlignment) % kAlignment);
  }
  file.commit();
}

}  // namespace qlora
