// GGUF reader (versions 1-3). Metadata values keep their GGUF type; tensors are memory-mapped and
// dequantized on request (F32, F16, BF16, Q8_0, Q4_0, Q4_1). Spec: ggml/docs/gguf.md.
// GGUF lists dimensions innermost first; GgufTensorInfo::shape is already PyTorch order
// (outermost first). Tested in tests/unit/test_gguf.cpp.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "core/tensor.h"

namespace qlora {

// GGML tensor type ids as the spec numbers them.
enum class GgmlType : uint32_t {
  F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8,
  Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, BF16 = 30
};
std::string ggml_type_name(uint32_t type);

struct GgufValue;
using GgufArray = std::vector<GgufValue>;
// One metadata value: integers widen to int64/uint64, floats to double, arrays nest.
struct GgufValue {
  std::variant<uint64_t, int64_t, double, bool, std::string, std::shared_ptr<GgufArray>> value;

  bool is_string() const { return std::holds_alternative<std::string>(value); }
  bool is_array() const { return std::holds_alternative<std::shared_ptr<GgufArray>>(value); }
  // Conversions throw Error("[gguf] key ...: expected ..., got ...") on a type mismatch; `key`
  // is only for the message.
  int64_t as_int(const std::string& key) const;
  double as_float(const std::string& key) const;
  bool as_bool(const std::string& key) const;
  const std::string& as_string(const std::string& key) const;
  const GgufArray& as_array(const std::string& key) const;
};

struct GgufTensorInfo {
  std::string name;
  Shape shape;           // outermost first
  uint32_t type = 0;     // GgmlType id
  uint64_t offset = 0;   // relative to the start of the data section
  uint64_t nbytes = 0;
};

class GgufFile {
 public:
  // Maps and validates the file: magic, version, counts, every tensor's type, size and offset
  // inside the file, no overlaps. Throws Error naming the file (and tensor) on any problem.
  static GgufFile open(const std::string& path);

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  const std::map<std::string, GgufValue>& metadata() const { return metadata_; }
  bool has(const std::string& key) const { return metadata_.count(key) != 0; }
  const GgufValue& get(const std::string& key) const;  // throws Error naming the missing key
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* find_tensor(const std::string& name) const;  // nullptr when absent

  // The tensor as f32 (dequantized/converted), or as stored for F32/F16/BF16 when
  // `keep_float_dtype` (then zero-copy, viewing the mapping).
  Tensor load(const std::string& name, bool keep_float_dtype = false) const;
  // Sub-tensor `index` along the outermost dimension (shape[1:]), as load() gives a whole tensor:
  // one expert of a stacked (E, out, in) ffn_*_exps tensor, without reading the others. Throws
  // Error naming the tensor when the index is out of range or a slice is not whole blocks.
  Tensor load_slice(const std::string& name, int64_t index, bool keep_float_dtype = false) const;
  // Drops the pages of a tensor's data (or of one slice) from the resident set (io/mapped_file.h).
  void release(const std::string& name) const;
  void release_slice(const std::string& name, int64_t index) const;

 private:
  // Where slice `index` of `info` starts and its bytes (index -1: the whole tensor).
  std::pair<const uint8_t*, uint64_t> span(const GgufTensorInfo& info, int64_t index) const;
  Tensor decode(const GgufTensorInfo& info, const uint8_t* src, uint64_t nbytes, Shape shape,
                bool keep_float_dtype) const;

  std::string path_;
  uint32_t version_ = 0;
  std::map<std::string, GgufValue> metadata_;
  std::vector<GgufTensorInfo> tensors_;
  std::shared_ptr<void> mapping_;
  const uint8_t* data_ = nullptr;  // start of the tensor data section
  size_t data_bytes_ = 0;
};

}  // namespace qlora
