// GGUF v3 writer: typed metadata key/values and tensors (F32, F16, BF16, Q8_0), laid out as
// ggml/docs/gguf.md specifies (header, KVs, tensor infos with dimensions innermost first, data
// aligned to general.alignment = 32). Q8_0 rounds exactly as llama.cpp's quantize_row_q8_0_ref
// (d = amax/127 stored f16, q = roundf(x · (1/d))). The file is written atomically (temp file,
// fsync, rename); tensors may be declared and produced one at a time while it is written. Tested in tests/unit/test_merge_export.cpp (our reader reads it back) and
// tests/e2e/test_peft_roundtrip.cpp (gguf-py's GGUFReader reads it).
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "io/gguf.h"

namespace qlora {

// GGUF metadata value type ids (gguf.md).
enum class GgufType : uint32_t {
  U8 = 0, I8 = 1, U16 = 2, I16 = 3, U32 = 4, I32 = 5, F32 = 6, BOOL = 7, STRING = 8, ARRAY = 9,
  U64 = 10, I64 = 11, F64 = 12
};

// Q8_0 blocks (32 values: f16 scale + 32 int8) of n values (n % 32 == 0), llama.cpp's reference.
void quantize_q8_0(const float* x, int64_t n, uint8_t* out);
// `t` (any float dtype) encoded as `type` (F32, F16, BF16 or Q8_0); `name` is for messages.
std::vector<uint8_t> encode_ggml_tensor(const std::string& name, const Tensor& t, GgmlType type);

class GgufWriter {
 public:
  void add_u32(const std::string& key, uint32_t v);
  void add_i32(const std::string& key, int32_t v);
  void add_u64(const std::string& key, uint64_t v);
  void add_f32(const std::string& key, float v);
  void add_bool(const std::string& key, bool v);
  void add_string(const std::string& key, const std::string& v);
  void add_string_array(const std::string& key, const std::vector<std::string>& v);
  void add_i32_array(const std::string& key, const std::vector<int32_t>& v);
  void add_f32_array(const std::string& key, const std::vector<float>& v);
  // A value read by GgufFile, re-typed: GgufFile widens integers and floats, so `type` (and for
  // arrays `element_type`) says what to write; strings and bools keep theirs.
  void add_value(const std::string& key, const GgufValue& v, GgufType type, GgufType element_type = GgufType::U8);
  bool has(const std::string& key) const;

  // `t` (any float dtype; PyTorch shape, outermost first) converted to `type` now (F32, F16, BF16
  // or Q8_0; Q8_0 needs the innermost dimension to be a multiple of 32). Names must be unique.
  void add_tensor(const std::string& name, const Tensor& t, GgmlType type);
  // A tensor already encoded as `type` (any GGML type: blocks copied as they are, e.g. from another
  // GGUF file). `bytes` must be exactly the type's size for `shape`.
  void add_encoded_tensor(const std::string& name, const Shape& shape, uint32_t type, std::vector<uint8_t> bytes);

  // A tensor whose encoded data `write` asks its producer for, when its turn comes: a model is
  // written one tensor at a time.
  void declare_tensor(const std::string& name, const Shape& shape, GgmlType type);
  using TensorProducer = std::function<std::vector<uint8_t>(const std::string& name)>;
  // Writes the file atomically: the header, then each tensor's data in the order added (declared
  // tensors from `produce`, which must return exactly the declared size).
  void write(const std::string& path, const TensorProducer& produce = {}) const;

 private:
  struct Kv {
    std::string key;
    std::vector<uint8_t> bytes;  // type id + value, encoded
  };
  struct TensorEntry {
    std::string name;
    Shape shape;
    uint32_t type;
    size_t bytes;               // encoded size
    std::vector<uint8_t> data;  // empty for a declared tensor
  };
  void add_kv(const std::string& key, std::vector<uint8_t> bytes);
  std::vector<Kv> kvs_;
  std::vector<TensorEntry> tensors_;
};

}  // namespace qlora
