// `qlora quantize MODEL --type nf4|fp4|int8 [--block-size N] [--double-quant] -o OUT [--json]`:
// quantizes the decoder's linear weights (q/k/v/o/gate/up/down of every layer; embeddings, norms
// and the LM head stay dense, as transformers' bitsandbytes integration does) and writes OUT as a
// Hugging Face folder: config.json with a quantization_config, model.safetensors, and the tokenizer
// files found beside the source. Dense tensors keep the source's stored dtype (bf16/f16/f32; f32
// when mixed or from a quantized GGUF) and the 4-bit quant_state says to dequantize to it. Reports
// per-tensor and total RMSE / max |error| against the f32
// weights and the storage bits per quantized parameter. The model streams through one tensor at
// a time (read, quantized or converted, written, released).
// Layouts (tested end to end in tests/quant/test_bnb_checkpoint.cpp):
//   nf4/fp4: bitsandbytes 4-bit (quant/bnb_format.h), loadable by transformers + bitsandbytes.
//   int8 without --block-size: LLM.int8's row-wise absmax layout, as transformers saves
//     load_in_8bit models: X.weight i8 (O, K) + X.SCB f32 (O) = per-row absmax; loadable there.
//   int8 with --block-size B: ours: X.weight i8 (O, K) + X.weight.absmax f32 (ceil(O*K / B)), blocks
//     over the row-major values; quantization_config {"quant_method": "qlora_int8_blockwise",
//     "block_size": B} (transformers does not load it).
#include <fmt/core.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "commands.h"
#include "core/error.h"
#include "io/atomic_file.h"
#include "model/model_source.h"
#include "progress.h"
#include "quant/bnb_format.h"
#include "quant/int8.h"
#include "quant/nf4.h"

namespace qlora::cli {

namespace {
namespace fs = std::filesystem;

struct QuantizeCliOptions {
  std::string model_path;
  std::string type = "nf4";
  int64_t block_size = 0;  // 0: 64 for 4-bit, one row for int8
  bool double_quant = false;
  std::string rounding = "cuda";  // which bitsandbytes the bytes match (BnbRounding)
  std::string out;
  bool json = false;
};

struct ErrorStats {
  double sum_sq = 0.0;
  double max_abs = 0.0;
};

ErrorStats compare(const float* ref, const float* got, int64_t n) {
  ErrorStats s;
  for (int64_t i = 0; i < n; ++i) {
    const double d = double(got[i]) - double(ref[i]);
    s.sum_sq += d * d;
    s.max_abs = std::max(s.max_abs, std::abs(d));
  }
  return s;
}

nlohmann::json quantization_config(const QuantizeCliOptions& o) {
  if (o.type == "int8" && o.block_size > 0)
    return {{"quant_method", "qlora_int8_blockwise"}, {"block_size", o.block_size}};
  const bool four = o.type != "int8";
  // Field for field what transformers 5.23 writes for a BitsAndBytesConfig.
  return {{"_load_in_4bit", four},
          {"_load_in_8bit", !four},
          {"bnb_4bit_compute_dtype", "float32"},
          {"bnb_4bit_quant_storage", "uint8"},
          {"bnb_4bit_quant_type", four ? o.type : "fp4"},
          {"bnb_4bit_use_double_quant", four && o.double_quant},
          {"llm_int8_enable_fp32_cpu_offload", false},
          {"llm_int8_has_fp16_weight", false},
          {"llm_int8_skip_modules", nullptr},
          {"llm_int8_threshold", 6.0},
          {"load_in_4bit", four},
          {"load_in_8bit", !four},
          {"quant_method", "bitsandbytes"}};
}

nlohmann::json source_config(const ModelSource& file) {
  if (file.format() == "hf") {
    std::ifstream in(fs::path(file.path()) / "config.json");
    std::stringstream ss;
    ss << in.rdbuf();
    return nlohmann::json::parse(ss.str());  // ModelSource::open already parsed it successfully
  }
  return file.config().to_hf_json();
}

void copy_tokenizer_files(const ModelSource& file, const fs::path& out) {
  const fs::path dir = fs::is_directory(file.path()) ? fs::path(file.path()) : fs::path(file.path()).parent_path();
  for (const char* name : {"tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json",
                           "added_tokens.json", "vocab.json", "merges.txt", "chat_template.jinja",
                           "generation_config.json"}) {
    const fs::path src = dir / name;
    if (fs::exists(src) && !fs::equivalent(dir, out))
      copy_file_atomically(src.string(), (out / name).string(), "quantize");
  }
}

void run_quantize(const QuantizeCliOptions& o) {
  const bool is_int8 = o.type == "int8";
  const QuantType qtype = o.type == "fp4" ? QuantType::FP4 : QuantType::NF4;
  if (is_int8 && o.double_quant) fail("quantize", "--double-quant applies to nf4/fp4 only; got --type int8");
  if (o.block_size < 0) fail("quantize", "--block-size must be positive; got {}", o.block_size);
  const int64_t block = o.block_size > 0 ? o.block_size : (is_int8 ? 0 : 64);

  const fs::path out(o.out);
  if (fs::exists(out) && !fs::is_directory(out)) fail("quantize", "output {} exists and is not a folder", o.out);

  // Streamed: each tensor is read, quantized or converted, written and released in turn.
  const ModelSource file = ModelSource::open(o.model_path);
  const LlamaConfig& c = file.config();
  // Dense tensors go back in the dtype the source stored (bf16/f16/f32; f32 for mixed or
  // quantized sources), and the 4-bit weights dequantize to it, as transformers does.
  const std::string stored = file.stored_types();
  const DType keep = stored == "bf16" ? DType::BF16 : stored == "f16" ? DType::F16 : DType::F32;
  const std::string keep_name = keep == DType::BF16 ? "bfloat16" : keep == DType::F16 ? "float16" : "float32";

  std::set<std::string> linears;  // the decoder projections' weights
  for (int64_t l = 0; l < c.num_hidden_layers; ++l)
    for (int proj = 0; proj < kProjCount; ++proj)
      linears.insert(fmt::format("model.layers.{}.{}.weight", l, projection_path(proj)));
  // int8: X.weight.absmax (blocks) or X.SCB (rows) beside the values.
  auto scale_name = [&](const std::string& weight) {
    return block > 0 ? weight + ".absmax" : weight.substr(0, weight.size() - 7) + ".SCB";
  };
  std::vector<SafetensorsStreamWriter::Entry> entries;
  std::vector<SafetensorsStreamWriter::Deferred> deferred;
  const std::vector<std::string> names = file.tensor_names();
  for (const std::string& name : names) {
    const Shape shape = file.expected_shape(name);
    if (!linears.count(name)) {
      entries.push_back({name, keep, shape});
    } else if (!is_int8) {
      declare_bnb_4bit(name, shape, qtype, block, o.double_quant, keep_name, entries, deferred);
    } else {
      const int64_t n = shape_numel(shape), scales = block > 0 ? (n + block - 1) / block : shape[0];
      entries.push_back({name, DType::I8, shape});
      entries.push_back({scale_name(name), DType::F32, {scales}});
    }
  }
  fs::create_directories(out);
  SafetensorsStreamWriter writer((out / "model.safetensors").string(), std::move(entries), std::move(deferred),
                                 {{"format", "pt"}});

  nlohmann::json tensors = nlohmann::json::array();
  double total_sq = 0.0, total_max = 0.0, total_bits = 0.0;
  int64_t total_n = 0;
  ProgressBar bar("quantize", int64_t(linears.size()));
  int64_t done = 0;
  for (const std::string& name : names) {
    const Tensor t = file.load(name);
    if (!linears.count(name)) {
      writer.write(name, t.to(keep));
      file.release(name);
      continue;
    }
    const Tensor x = t.to(DType::F32);
    file.release(name);
    const int64_t n = x.numel();
    std::vector<float> back(static_cast<size_t>(n));
    double bits = 0.0;
    if (!is_int8) {
      const BnbWeight bw{quantize_4bit(x.data<float>(), x.shape(), qtype, block, o.double_quant,
                                       o.rounding == "cpu" ? BnbRounding::Cpu : BnbRounding::Cuda), keep_name};
      dequantize_4bit(bw.q, back.data());
      bits = bw.q.bits_per_param() * double(n);
      write_bnb_4bit(writer, name, bw);
    } else {
      const int64_t rows = x.dim(0), cols = x.numel() / rows;
      const Int8Quantized q8 = quantize_int8_blockwise(x.data<float>(), n, block > 0 ? block : cols);
      dequantize_int8(q8, back.data());
      bits = 8.0 * double(n) + 32.0 * double(q8.absmax.size());
      Tensor values = Tensor::zeros(x.shape(), DType::I8);
      std::copy(q8.values.begin(), q8.values.end(), values.data<int8_t>());
      writer.write(name, values);
      writer.write(scale_name(name), Tensor::from_vector(q8.absmax, {int64_t(q8.absmax.size())}));
    }
    const ErrorStats s = compare(x.data<float>(), back.data(), n);
    total_sq += s.sum_sq;
    total_max = std::max(total_max, s.max_abs);
    total_bits += bits;
    total_n += n;
    tensors.push_back({{"name", name},
                       {"shape", x.shape()},
                       {"rmse", std::sqrt(s.sum_sq / double(n))},
                       {"max_abs", s.max_abs},
                       {"bits_per_param", bits / double(n)}});
    bar.update(++done, name);
  }
  bar.finish();
  writer.commit();
  nlohmann::json config = source_config(file);
  config["quantization_config"] = quantization_config(o);
  write_file_atomically((out / "config.json").string(), config.dump(2) + "\n", "quantize");
  copy_tokenizer_files(file, out);

  const double rmse = total_n ? std::sqrt(total_sq / double(total_n)) : 0.0;
  const double bpp = total_n ? total_bits / double(total_n) : 0.0;
  if (o.json) {
    nlohmann::json j = {{"model", file.path()},
                        {"output", o.out},
                        {"type", o.type},
                        {"block_size", block},
                        {"double_quant", o.double_quant},
                        {"quantized_params", total_n},
                        {"bits_per_param", bpp},
                        {"rmse", rmse},
                        {"max_abs", total_max},
                        {"tensors", tensors}};
    fmt::print("{}\n", j.dump(2));
    return;
  }
  for (const auto& t : tensors)
    fmt::print("{:<40} rmse {:.3e}  max {:.3e}  {:.3f} bits/param\n", t["name"].get<std::string>(),
               t["rmse"].get<double>(), t["max_abs"].get<double>(), t["bits_per_param"].get<double>());
  fmt::print("total: {} params as {}{} (block {}), rmse {:.3e}, max |err| {:.3e}, {:.3f} bits/param -> {}\n", total_n,
             o.type, o.double_quant ? " + double quant" : "", block > 0 ? std::to_string(block) : "row", rmse,
             total_max, bpp, o.out);
}

}  // namespace

void register_quantize(CLI::App& app) {
  auto o = std::make_shared<QuantizeCliOptions>();
  CLI::App* cmd = app.add_subcommand(
      "quantize", "Quantize a model's decoder linear weights (nf4/fp4 as bitsandbytes 4-bit, or int8) to an HF folder");
  cmd->add_option("model", o->model_path, "model: HF folder, .gguf or llama2.c .bin")->required();
  cmd->add_option("--type", o->type, "nf4 | fp4 | int8")->check(CLI::IsMember({"nf4", "fp4", "int8"}));
  cmd->add_option("--block-size", o->block_size,
                  "values per absmax (4-bit: 32..4096, default 64; int8: default one row, LLM.int8 layout)");
  cmd->add_flag("--double-quant", o->double_quant, "quantize the 4-bit absmax constants too (QLoRA)");
  cmd->add_option("--bnb-rounding", o->rounding,
                  "cuda: bytes as bitsandbytes' CUDA kernels write them (default); cpu: as bitsandbytes on the CPU")
      ->check(CLI::IsMember({"cuda", "cpu"}))
      ->capture_default_str();
  cmd->add_option("-o,--output", o->out, "output folder")->required();
  cmd->add_flag("--json", o->json, "print a JSON report");
  cmd->callback([o] { run_quantize(*o); });
}

}  // namespace qlora::cli
