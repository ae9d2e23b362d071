// bitsandbytes 4-bit checkpoint layout: read and write (see bnb_format.h for the keys).
#include "quant/bnb_format.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "quant/codebooks.h"
#include "quant/double_quant.h"
#include "quant/nf4.h"

namespace qlora {

namespace {

constexpr std::string_view kStateTag = ".quant_state.bitsandbytes__";
// The suffixes of QuantState.as_dict(packed=True) after `X.weight.`.
constexpr const char* kStateSuffixes[] = {"absmax", "quant_map", "nested_absmax", "nested_quant_map"};

// Python's repr of a float (what json.dumps writes): the shortest round-trip digits, ".0" on
// integral values; fmt's "{}" already switches to exponent form where Python does (exp < -4, >= 16).
std::string python_float(double v) {
  std::string s = fmt::format("{}", v);
  if (s.find_first_of(".eni") == std::string::npos) s += ".0";
  return s;
}

Tensor bytes_tensor(const void* data, size_t n, DType dtype, Shape shape) {
  Tensor t = Tensor::zeros(std::move(shape), dtype);
  QLORA_ASSERT(t.nbytes() == n, "{} != {}", t.nbytes(), n);
  if (n) std::memcpy(t.raw(), data, n);
  return t;
}

Tensor f32_tensor(const float* data, size_t n) { return bytes_tensor(data, n * 4, DType::F32, {int64_t(n)}); }

// The tensor `key` with the given dtype and element count; fails naming the file otherwise.
Tensor get_checked(const SafetensorsFile& file, const std::string& key, DType dtype, int64_t numel) {
  if (!file.contains(key)) fail("bnb", "{}: 4-bit weight lacks {}", file.path(), key);
  Tensor t = file.get(key);
  if (t.dtype() != dtype || t.numel() != numel)
    fail("bnb", "{}: {} should be {} with {} values; got {}", file.path(), key, dtype_name(dtype), numel,
         t.describe());
  return t;
}

// An owned 1-D copy (the file's tensor may view a mapping the QuantTensor must not keep alive).
Tensor owned_1d(const Tensor& t) { return t.clone().reshape({t.numel()}); }

template <size_t N>
void check_code(const SafetensorsFile& file, const std::string& key, const Tensor& t,
                const std::array<float, N>& code) {
  if (std::memcmp(t.raw(), code.data(), N * sizeof(float)) != 0)
    fail("bnb", "{}: {} differs from bitsandbytes' standard code map; custom maps are not supported", file.path(),
         key);
}

}  // namespace

bool is_bnb_state_key(const std::string& key) {
  if (key.find(kStateTag) != std::string::npos) return true;
  for (const char* s : kStateSuffixes) {
    const std::string suffix = std::string(".weight.") + s;
    if (key.size() > suffix.size() && key.compare(key.size() - suffix.size(), suffix.size(), suffix) == 0) return true;
  }
  return false;
}

std::vector<std::string> bnb_4bit_names(const SafetensorsFile& file) {
  std::vector<std::string> names;
  for (const std::string& key : file.names()) {
    const size_t at = key.find(kStateTag);
    if (at != std::string::npos) names.push_back(key.substr(0, at));
  }
  std::sort(names.begin(), names.end());
  return names;
}

namespace {

// `X.weight.quant_state.bitsandbytes__nf4` (or __fp4) when the file has it, else "".
std::string bnb_state_key(const SafetensorsFile& file, const std::string& name) {
  for (const char* t : {"nf4", "fp4"})
    if (file.contains(name + std::string(kStateTag) + t)) return name + std::string(kStateTag) + t;
  return "";
}

}  // namespace

bool is_bnb_4bit_weight(const SafetensorsFile& file, const std::string& name) {
  return !bnb_state_key(file, name).empty();
}

BnbWeight read_bnb_4bit_header(const SafetensorsFile& file, const std::string& name) {
  const std::string state_key = bnb_state_key(file, name);
  if (state_key.empty())
    fail("bnb", "{}: {} has no {}nf4 or {}fp4 entry; not a bitsandbytes 4-bit weight", file.path(), name, kStateTag,
         kStateTag);
  const Tensor state = file.get(state_key);
  if (state.dtype() != DType::U8)
    fail("bnb", "{}: {} should be u8 (packed JSON); got {}", file.path(), state_key, state.describe());
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(std::string(state.data<char>(), size_t(state.numel())));
  } catch (const nlohmann::json::exception& e) {
    fail("bnb", "{}: {} is not valid JSON: {}", file.path(), state_key, e.what());
  }

  BnbWeight w;
  QuantTensor& q = w.q;
  try {
    const std::string qt = j.at("quant_type").get<std::string>();
    if (qt != state_key.substr(state_key.size() - 3))
      fail("bnb", "{}: {} says quant_type \"{}\"", file.path(), state_key, qt);
    q.type = qt == "nf4" ? QuantType::NF4 : QuantType::FP4;
    q.block_size = j.at("blocksize").get<int64_t>();
    w.dtype = j.at("dtype").get<std::string>();
    q.shape = j.at("shape").get<Shape>();
    q.double_quant = j.contains("nested_blocksize");
    if (q.double_quant) {
      q.nested_block_size = j.at("nested_blocksize").get<int64_t>();
      q.offset = float(j.at("nested_offset").get<double>());
      if (j.value("nested_dtype", "float32") != "float32")
        fail("bnb", "{}: {}: nested_dtype {} is not supported; expected float32", file.path(), state_key,
             j["nested_dtype"].dump());
    }
  } catch (const nlohmann::json::exception& e) {
    fail("bnb", "{}: {}: missing or mistyped field: {}", file.path(), state_key, e.what());
  }
  if (q.block_size < 1 || q.nested_block_size < 1 || q.shape.empty() ||
      std::any_of(q.shape.begin(), q.shape.end(), [](int64_t d) { return d < 1; }))
    fail("bnb", "{}: {}: invalid blocksize {} or shape {}", file.path(), state_key, q.block_size, shape_str(q.shape));
  if (w.dtype != "float32" && w.dtype != "bfloat16" && w.dtype != "float16")
    fail("bnb", "{}: {}: dtype \"{}\" is not supported; expected float32, bfloat16 or float16", file.path(), state_key,
         w.dtype);

  return w;
}

void release_bnb_4bit(const SafetensorsFile& file, const std::string& name) {
  for (const std::string& part : {name, name + ".absmax", name + ".nested_absmax"}) file.release(part);
}

BnbWeight read_bnb_4bit(const SafetensorsFile& file, const std::string& name) {
  BnbWeight w = read_bnb_4bit_header(file, name);
  QuantTensor& q = w.q;
  const int64_t n_blocks = q.n_blocks();
  const Tensor packed = get_checked(file, name, DType::U8, (q.numel() + 1) / 2);
  q.codes = owned_1d(packed);
  check_code(file, name + ".quant_map", get_checked(file, name + ".quant_map", DType::F32, 16), code_4bit(q.type));
  q.code = code_4bit_tensor(q.type);
  if (q.double_quant) {
    q.absmax_codes = owned_1d(get_checked(file, name + ".absmax", DType::U8, n_blocks));
    const int64_t n_nested = (n_blocks + q.nested_block_size - 1) / q.nested_block_size;
    q.nested_absmax = owned_1d(get_checked(file, name + ".nested_absmax", DType::F32, n_nested));
    check_code(file, name + ".nested_quant_map", get_checked(file, name + ".nested_quant_map", DType::F32, 256),
               kDynamicCode);
    q.nested_code = dynamic_code_tensor();
  } else {
    q.absmax = owned_1d(get_checked(file, name + ".absmax", DType::F32, n_blocks));
  }
  return w;
}

std::map<std::string, BnbWeight> read_bnb_quantized(const SafetensorsFile& file) {
  std::map<std::string, BnbWeight> out;
  for (const std::string& name : bnb_4bit_names(file)) out.emplace(name, read_bnb_4bit(file, name));
  return out;
}

std::string bnb_quant_state_json(const QuantTensor& q, const std::string& dtype) {
  // Key order and separators of json.dumps(as_dict(packed=True)'s non-tensor items).
  std::string shape;
  for (size_t i = 0; i < q.shape.size(); ++i) shape += (i ? ", " : "") + std::to_string(q.shape[i]);
  std::string s = fmt::format(R"({{"quant_type": "{}", "blocksize": {}, "dtype": "{}", "shape": [{}])",
                              quant_type_name(q.type), q.block_size, dtype, shape);
  if (q.double_quant)
    s += fmt::format(R"(, "nested_blocksize": {}, "nested_dtype": "float32", "nested_offset": {})", q.nested_block_size,
                     python_float(double(q.offset)));
  return s + "}";
}

std::vector<std::pair<std::string, Tensor>> bnb_4bit_tensors(const std::string& name, const BnbWeight& w) {
  const QuantTensor& q = w.q;
  if (!q.codes.defined() || q.codes.numel() != (q.numel() + 1) / 2)
    fail("bnb", "{}: {} codes for shape {}; expected {}", name, q.codes.defined() ? q.codes.numel() : 0,
         shape_str(q.shape), (q.numel() + 1) / 2);
  if (!q.on_host()) fail("bnb", "{}: the 4-bit weight lives on {}; copy it to the host first", name, q.device().name());
  std::vector<std::pair<std::string, Tensor>> out;
  out.emplace_back(name, q.codes.reshape({q.codes.numel(), 1}));
  out.emplace_back(name + ".absmax", q.double_quant ? q.absmax_codes : q.absmax);
  out.emplace_back(name + ".quant_map", f32_tensor(code_4bit(q.type).data(), 16));
  if (q.double_quant) {
    out.emplace_back(name + ".nested_absmax", q.nested_absmax);
    out.emplace_back(name + ".nested_quant_map", f32_tensor(kDynamicCode.data(), 256));
  }
  const std::string json = bnb_quant_state_json(q, w.dtype);
  out.emplace_back(name + std::string(kStateTag) + std::string(quant_type_name(q.type)),
                   bytes_tensor(json.data(), json.size(), DType::U8, {int64_t(json.size())}));
  return out;
}

void declare_bnb_4bit(const std::string& name, const Shape& shape, QuantType type, int64_t block_size,
                      bool double_quant, const std::string& dtype,
                      std::vector<SafetensorsStreamWriter::Entry>& entries,
                      std::vector<SafetensorsStreamWriter::Deferred>& deferred) {
  const int64_t n = shape_numel(shape), blocks = (n + block_size - 1) / block_size;
  entries.push_back({name, DType::U8, {(n + 1) / 2, 1}});
  entries.push_back({name + ".absmax", double_quant ? DType::U8 : DType::F32, {blocks}});
  entries.push_back({name + ".quant_map", DType::F32, {16}});
  QuantTensor q;  // only what the JSON says: shape, type, block sizes; offset 0 renders as "0.0"
  q.shape = shape, q.type = type, q.block_size = block_size, q.double_quant = double_quant;
  if (double_quant) {
    q.nested_block_size = kNestedBlockSize;
    const int64_t nested = (blocks + kNestedBlockSize - 1) / kNestedBlockSize;
    entries.push_back({name + ".nested_absmax", DType::F32, {nested}});
    entries.push_back({name + ".nested_quant_map", DType::F32, {256}});
  }
  // The offset's repr ("0.0" here) is at most 24 characters ("-1.2345678901234567e-308").
  const size_t bound = bnb_quant_state_json(q, dtype).size() + 24;
  deferred.push_back({name + std::string(kStateTag) + std::string(quant_type_name(type)), bound});
}

void write_bnb_4bit(SafetensorsStreamWriter& writer, const std::string& name, const BnbWeight& w) {
  std::vector<std::pair<std::string, Tensor>> parts = bnb_4bit_tensors(name, w);
  for (size_t i = 0; i + 1 < parts.size(); ++i) writer.write(parts[i].first, parts[i].second);
  const Tensor& json = parts.back().second;
  writer.write_deferred(parts.back().first, std::string(static_cast<const char*>(json.raw()), json.nbytes()));
}

void write_bnb_quantized(const std::string& path, const std::map<std::string, BnbWeight>& quantized,
                         const std::vector<std::pair<std::string, Tensor>>& dense) {
  std::vector<std::pair<std::string, Tensor>> all = dense;
  for (const auto& [name, w] : quantized) {
    auto parts = bnb_4bit_tensors(name, w);
    all.insert(all.end(), parts.begin(), parts.end());
  }
  std::sort(all.begin(), all.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  for (size_t i = 1; i < all.size(); ++i)
    if (all[i].first == all[i - 1].first) fail("bnb", "{}: tensor {} given twice", path, all[i].first);
  write_safetensors(path, all, {{"format", "pt"}});
}

}  // namespace qlora
