// Writes a Hugging Face folder of a real model's shape with seeded random weights, for the memory
// benchmarks (bench/big_model_memory.sh): config.json, sharded safetensors (at most --shard-gb per
// shard, as the hub shards them) and model.safetensors.index.json. Each shard is streamed to disk
// tensor by tensor, so writing a 13 GB model needs a few MB of memory. Values ~ U(-0.03, 0.03),
// norms 1.0, in bf16 or f32. Not a model anyone should run; the shapes are what matter.
//   make_random_model OUT_DIR --shape tinyllama-1.1b|llama2-7b|llama2-13b [--dtype bf16|f32]
//                     [--shard-gb 5] [--seed 1]
#include <fmt/core.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/projections.h"
#include "core/rng.h"
#include "model/config.h"

using namespace qlora;
namespace fs = std::filesystem;

namespace {

struct NamedShape {
  std::string name;
  std::vector<int64_t> shape;
};

LlamaConfig shape_config(const std::string& shape) {
  LlamaConfig c;
  c.vocab_size = 32000;
  c.rms_norm_eps = 1e-5;
  c.max_position_embeddings = 4096;
  c.bos_token_id = 1;
  c.eos_token_ids = {2};
  if (shape == "tinyllama-1.1b") {  // TinyLlama/TinyLlama-1.1B-Chat-v1.0
    c.hidden_size = 2048, c.intermediate_size = 5632, c.num_hidden_layers = 22;
    c.num_attention_heads = 32, c.num_key_value_heads = 4, c.max_position_embeddings = 2048;
  } else if (shape == "llama2-7b") {  // meta-llama/Llama-2-7b-hf
    c.hidden_size = 4096, c.intermediate_size = 11008, c.num_hidden_layers = 32;
    c.num_attention_heads = 32, c.num_key_value_heads = 32;
  } else if (shape == "llama2-13b") {  // meta-llama/Llama-2-13b-hf
    c.hidden_size = 5120, c.intermediate_size = 13824, c.num_hidden_layers = 40;
    c.num_attention_heads = 40, c.num_key_value_heads = 40;
  } else {
    throw std::runtime_error("unknown --shape " + shape + "; expected tinyllama-1.1b, llama2-7b or llama2-13b");
  }
  c.head_dim = c.hidden_size / c.num_attention_heads;
  return c;
}

std::vector<NamedShape> tensors_of(const LlamaConfig& c) {
  std::vector<NamedShape> out = {{"model.embed_tokens.weight", {c.vocab_size, c.hidden_size}}};
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    out.push_back({p + "input_layernorm.weight", {c.hidden_size}});
    for (int proj = 0; proj < kProjCount; ++proj) {
      const auto [o, i] = c.projection_shape(proj);
      out.push_back({p + projection_path(proj) + ".weight", {o, i}});
    }
    out.push_back({p + "post_attention_layernorm.weight", {c.hidden_size}});
  }
  out.push_back({"model.norm.weight", {c.hidden_size}});
  out.push_back({"lm_head.weight", {c.vocab_size, c.hidden_size}});
  return out;
}

int64_t numel(const std::vector<int64_t>& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

// One shard: header, then each tensor's values generated and written in 1 MiB chunks.
void write_shard(const fs::path& path, const std::vector<NamedShape>& tensors, bool bf16, Rng& rng) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  header["__metadata__"] = {{"format", "pt"}};
  const size_t elem = bf16 ? 2 : 4;
  size_t offset = 0;
  for (const NamedShape& t : tensors) {
    const size_t bytes = size_t(numel(t.shape)) * elem;
    header[t.name] = {{"dtype", bf16 ? "BF16" : "F32"}, {"shape", t.shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string json = header.dump();
  json.append((8 - json.size() % 8) % 8, ' ');
  std::ofstream out(path, std::ios::binary);
  const uint64_t n = json.size();
  out.write(reinterpret_cast<const char*>(&n), 8);
  out.write(json.data(), std::streamsize(json.size()));
  std::vector<uint16_t> b16(1 << 19);
  std::vector<float> f32(1 << 18);
  for (const NamedShape& t : tensors) {
    const bool norm = t.shape.size() == 1;
    for (int64_t done = 0, total = numel(t.shape); done < total;) {
      const int64_t chunk = std::min<int64_t>(total - done, bf16 ? int64_t(b16.size()) : int64_t(f32.size()));
      for (int64_t i = 0; i < chunk; ++i) {
        const float v = norm ? 1.0f : 0.06f * (rng.uniform() - 0.5f);
        if (bf16) b16[size_t(i)] = f32_to_bf16(v);
        else f32[size_t(i)] = v;
      }
      if (bf16) out.write(reinterpret_cast<const char*>(b16.data()), std::streamsize(chunk * 2));
      else out.write(reinterpret_cast<const char*>(f32.data()), std::streamsize(chunk * 4));
      done += chunk;
    }
  }
  if (!out) throw std::runtime_error("cannot write " + path.string());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    fmt::print(stderr, "usage: make_random_model OUT_DIR --shape tinyllama-1.1b|llama2-7b|llama2-13b "
                       "[--dtype bf16|f32] [--shard-gb 5] [--seed 1]\n");
    return 2;
  }
  try {
    const fs::path dir = argv[1];
    std::string shape = "tinyllama-1.1b", dtype = "bf16";
    double shard_gb = 5.0;
    uint64_t seed = 1;
    for (int i = 2; i + 1 < argc; i += 2) {
      const std::string k = argv[i], v = argv[i + 1];
      if (k == "--shape") shape = v;
      else if (k == "--dtype") dtype = v;
      else if (k == "--shard-gb") shard_gb = std::stod(v);
      else if (k == "--seed") seed = std::stoull(v);
      else throw std::runtime_error("unknown option " + k);
    }
    const LlamaConfig c = shape_config(shape);
    fs::create_directories(dir);
    nlohmann::json config = c.to_hf_json();
    config["torch_dtype"] = dtype == "bf16" ? "bfloat16" : "float32";
    std::ofstream(dir / "config.json") << config.dump(2) << "\n";

    // Shards of at most shard_gb, in tensor order.
    const size_t limit = size_t(shard_gb * 1e9), elem = dtype == "bf16" ? 2 : 4;
    std::vector<std::vector<NamedShape>> shards(1);
    size_t in_shard = 0, total = 0;
    for (const NamedShape& t : tensors_of(c)) {
      const size_t bytes = size_t(numel(t.shape)) * elem;
      if (in_shard > 0 && in_shard + bytes > limit) shards.emplace_back(), in_shard = 0;
      shards.back().push_back(t);
      in_shard += bytes, total += bytes;
    }
    Rng rng(seed);
    nlohmann::json map = nlohmann::json::object();
    for (size_t s = 0; s < shards.size(); ++s) {
      const std::string file = fmt::format("model-{:05d}-of-{:05d}.safetensors", s + 1, shards.size());
      fmt::print(stderr, "writing {} ({} tensors)\n", file, shards[s].size());
      write_shard(dir / file, shards[s], dtype == "bf16", rng);
      for (const NamedShape& t : shards[s]) map[t.name] = file;
    }
    std::ofstream(dir / "model.safetensors.index.json")
        << nlohmann::json{{"metadata", {{"total_size", total}}}, {"weight_map", map}}.dump(2) << "\n";
    fmt::print("{}: {} ({} params, {:.2f} GB in {} shards)\n", dir.string(), shape, c.parameter_count(),
               double(total) / 1e9, shards.size());
  } catch (const std::exception& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
  return 0;
}
