// Memory estimator: enumerates the tensors TrainModel would hold for a config and sums their bytes
// per category exactly as build_model_weights, LlamaModel::Impl::run and the optimizers allocate
// them; activations both as run() accounts them (saved per block + backward working set + loss
// chunk, all at once) and as they are really alive at the step's peak.
// Legend: B batch, T sequence, N = B*T rows, C hidden, F ffn, V vocab, L layers, R rank, E experts.
// The formulas are written out in docs/memory.md.
#include "train/memory_estimate.h"

#include <filesystem>

#include <fmt/core.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <map>

#include "core/error.h"
#include "core/projections.h"
#include "backend/backend.h"

namespace qlora {

namespace {

// Process baseline of a CPU training run beyond the tensors counted here: the binary and its
// libraries, OpenBLAS' per-thread GEMM buffers, OpenMP stacks, the tokenizer, allocator slack and
// kernel temporaries (attention, dequantized tiles). Calibrated on SmolLM2-135M runs (docs/memory.md).
constexpr size_t kProcessOverheadBytes = size_t(32) << 20;
// The paged optimizer store maps one page (1 MiB) of state at a time.
constexpr size_t kPagedResidentBytes = size_t(1) << 20;

// A parameter tensor of the model.
struct TensorSpec {
  enum Kind { Embed, Head, Norm, Bias, Projection, Router } kind;
  int64_t rows, cols;  // (out, in) for matrices; (n, 1) for vectors
  std::string projection;  // for Projection: "q_proj", ...
  int64_t numel() const { return rows * cols; }
  bool matrix() const { return kind == Embed || kind == Head || kind == Projection || kind == Router; }
};

std::vector<TensorSpec> model_tensors(const LlamaConfig& c, int64_t E) {
  const int64_t C = c.hidden_size;
  std::vector<TensorSpec> out;
  auto projection = [&](int p) {
    const auto [rows, cols] = c.projection_shape(p);
    out.push_back({TensorSpec::Projection, rows, cols, std::string(projection_name(p))});
  };
  out.push_back({TensorSpec::Embed, c.vocab_size, C, ""});
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    out.push_back({TensorSpec::Norm, C, 1, ""});
    out.push_back({TensorSpec::Norm, C, 1, ""});
    for (int p = kProjQ; p <= kProjO; ++p) projection(p);
    if (c.qk_norm) {  // Qwen3's q_norm, k_norm
      out.push_back({TensorSpec::Norm, c.head_dim, 1, ""});
      out.push_back({TensorSpec::Norm, c.head_dim, 1, ""});
    }
    if (c.attention_bias)
      for (int p = kProjQ; p <= kProjV; ++p) out.push_back({TensorSpec::Bias, c.projection_shape(p).first, 1, ""});
    for (int64_t e = 0; e < E; ++e)
      for (int p = kProjGate; p <= kProjDown; ++p) projection(p);
    if (E > 1) out.push_back({TensorSpec::Router, E, C, ""});
  }
  out.push_back({TensorSpec::Norm, C, 1, ""});
  if (!c.tie_word_embeddings) out.push_back({TensorSpec::Head, c.vocab_size, C, ""});
  return out;
}

size_t ceil_div(size_t a, size_t b) { return (a + b - 1) / b; }

std::string lower(std::string s) {
  for (char& ch : s) ch = char(std::tolower(static_cast<unsigned char>(ch)));
  return s;
}

// Resident optimizer bytes for the trainable tensors `sizes` (element counts).
size_t optimizer_bytes(const std::string& optimizer, const std::vector<int64_t>& sizes) {
  size_t total = 0;
  for (int64_t n : sizes) {
    if (optimizer == "adamw8bit" && n >= kOptim8bitMinElements)
      total += 2 * size_t(n) + 2 * sizeof(float) * ceil_div(size_t(n), size_t(kOptim8bitBlock));
    else
      total += 2 * sizeof(float) * size_t(n);
  }
  return total;
}

void check_options(const EstimateOptions& o) {
  if (o.method != "full" && o.method != "lora" && o.method != "qlora")
    fail("estimate", "unknown --method '{}'; expected full, lora or qlora", o.method);
  if (o.optimizer != "adamw" && o.optimizer != "adamw8bit" && o.optimizer != "paged")
    fail("estimate", "unknown --optimizer '{}'; expected adamw, adamw8bit or paged", o.optimizer);
  if (o.seq <= 0) fail("estimate", "--seq must be positive; got {}", o.seq);
  if (o.batch <= 0) fail("estimate", "--batch must be positive; got {}", o.batch);
  if (o.lora_r <= 0) fail("estimate", "--rank must be positive; got {}", o.lora_r);
  if (o.compute != "f32" && o.compute != "bf16")
    fail("estimate", "unknown compute dtype '{}'; expected f32 or bf16", o.compute);
  if (o.n_experts < 1 || o.experts_per_token < 1 || o.experts_per_token > o.n_experts)
    fail("estimate", "experts: need 1 <= experts_per_token <= n_experts; got {} of {}", o.experts_per_token,
         o.n_experts);
  for (const std::string& m : o.target_modules)
    if (projection_index(m) < 0) fail("estimate", "unknown target module '{}'; expected one of {}", m, projection_list());
  if (o.method != "full" && o.target_modules.empty()) fail("estimate", "no LoRA target modules");
  const std::string& s = o.source_dtype;
  if (s != "bf16" && s != "f16" && s != "f32" && s != "quantized" && s != "bnb-4bit")
    fail("estimate", "unknown source dtype '{}'; expected bf16, f16, f32, quantized or bnb-4bit", s);
  const int64_t bs = o.quant_block_size;
  if (bs <= 0) fail("estimate", "quantization block size must be positive; got {}", bs);
}

// The precision with the method's default filled in and aliases resolved; throws on bad combinations.
std::string resolve_precision(const EstimateOptions& o) {
  std::string p = lower(o.precision);
  if (p.empty()) p = o.method == "qlora" ? "nf4" : "fp32";
  if (p == "f32" || p == "float32") p = "fp32";
  if (p == "fp16" || p == "f16" || p == "bfloat16" || p == "float16") p = "bf16";
  if (p != "fp32" && p != "bf16" && p != "int8" && p != "nf4" && p != "fp4")
    fail("estimate", "unknown --precision '{}'; expected fp32, bf16, fp16, int8, nf4 or fp4", o.precision);
  const bool four_bit = p == "nf4" || p == "fp4";
  if (o.method == "qlora" && !four_bit)
    fail("estimate", "--precision {} does not fit --method qlora (a 4-bit base); use nf4 or fp4, or --method lora", p);
  if (o.method != "qlora" && four_bit)
    fail("estimate", "--precision {} is a frozen 4-bit base: use --method qlora", p);
  return p;
}

// How the source stores a tensor (EstimateOptions::source_dtype), as ModelSource::load hands it out.
struct Stored {
  enum Kind { Bf16, F16, F32, Dequantized, Bnb4 } kind;
  double bytes_per_value;  // of the file: the pages a load touches
};

Stored stored_as(const EstimateOptions& o, int64_t parameters, const TensorSpec& t) {
  const std::string& s = o.source_dtype;
  if (s == "bf16") return {Stored::Bf16, 2};
  if (s == "f16") return {Stored::F16, 2};
  if (s == "f32") return {Stored::F32, 4};
  if (s == "bnb-4bit")  // 4-bit projections (codes + 8-bit constants); the rest as saved, bf16
    return t.kind == TensorSpec::Projection ? Stored{Stored::Bnb4, 0.52} : Stored{Stored::Bf16, 2};
  // GGUF block types: the file's average width (Q4_K_M is ~4.8 bits), else Q4_K's 4.5 bits.
  const double width = o.source_file_bytes > 0 ? double(o.source_file_bytes) / double(parameters) : 0.5625;
  return {Stored::Dequantized, width};
}

// Bytes of a frozen dense matrix as build_model_weights keeps it (ModelWeights::Builder::frozen):
// bf16 with bf16 compute or a bf16 source (a zero-copy view of the file), else f32.
size_t frozen_matrix_bytes(Stored::Kind kind, bool bf16_compute) {
  return bf16_compute || kind == Stored::Bf16 ? 2 : 4;
}

// The memory a tensor needs beyond what the built model keeps, while build_model_weights turns it
// into its final form: the pages of the file it touches (released after use unless the result is a
// view of them), the f32 values a GGUF block type dequantizes to, the bf16 rounding of a bf16-compute
// load, and the f32 widening the quantizer or a conversion makes. The steps follow one another and
// each frees the previous one's temporary; they are summed, which overstates the worst case by at
// most one temporary.
size_t load_transient(const TensorSpec& t, Stored s, bool full, bool quantize, bool bf16_compute) {
  const size_t n = size_t(t.numel());
  const size_t pages = size_t(std::ceil(double(n) * s.bytes_per_value));
  if (!t.matrix()) return pages + 4 * n;  // a norm or bias: widened to f32, a few KB
  if (quantize && s.kind == Stored::Bnb4) return pages;  // taken as stored, copied out
  const size_t dequantized = s.kind == Stored::Dequantized || s.kind == Stored::Bnb4 ? 4 * n : 0;
  const bool f32_values = s.kind == Stored::F32 || dequantized;
  const size_t rounded = bf16_compute && s.kind != Stored::Bf16 ? 2 * n : 0;  // at_load_width
  if (quantize || full) {
    // quantize_4bit / the f32 master widen whatever is not f32 already.
    const size_t widened = f32_values && !rounded ? 0 : 4 * n;
    return pages + dequantized + rounded + widened;
  }
  // A frozen matrix: kept as loaded when its width is already the kept one (the pages are then the
  // weights themselves); otherwise the pages and any temporary go once the kept copy exists.
  const size_t kept = frozen_matrix_bytes(s.kind, bf16_compute);
  const bool view = (s.kind == Stored::Bf16 && kept == 2) || (s.kind == Stored::F32 && kept == 4);
  if (view) return 0;
  const size_t widened = f32_values || rounded ? 0 : 4 * n;  // f16 -> f32
  return pages + (kept == 2 ? dequantized : 0) + widened;
}

void finish_total(MemoryEstimate& m) {
  m.total = m.textbook ? m.training_sum() : std::max(m.training_sum(), m.load_peak + m.overhead);
}

}  // namespace

QuantBytes quantized_bytes(int64_t n, int bits, int64_t block_size, bool double_quant, int64_t nested_block,
                           bool offset) {
  QLORA_ASSERT(n >= 0 && block_size > 0 && nested_block > 0, "bad quantization shape");
  QuantBytes q;
  q.codes = ceil_div(size_t(n) * size_t(bits), 8);
  const size_t blocks = ceil_div(size_t(n), size_t(block_size));
  if (double_quant)
    q.constants = blocks + sizeof(float) * ceil_div(blocks, size_t(nested_block)) + (offset ? sizeof(float) : 0);
  else
    q.constants = blocks * sizeof(float);
  return q;
}

TextbookBytes textbook_bytes_per_param(const std::string& precision) {
  const std::string p = lower(precision);
  if (p == "fp32" || p == "f32" || p.empty()) return {4, 4, 8};
  // Mixed precision (Micikevicius et al. 2018): 16-bit weights and gradients, and in the optimizer an
  // fp32 master copy beside fp32 m and v -> 2 + 2 + 12 = 16 bytes per parameter.
  if (p == "bf16" || p == "fp16" || p == "f16") return {2, 2, 12};
  if (p == "int8") return {1, 1, 2};
  fail("estimate", "no textbook bytes for --precision '{}' with full fine-tuning; expected fp32, bf16, fp16 or int8",
       precision);
}

int64_t count_parameters(const LlamaConfig& config, int64_t n_experts) {
  if (n_experts < 1) fail("estimate", "n_experts must be >= 1; got {}", n_experts);
  int64_t n = 0;
  for (const TensorSpec& t : model_tensors(config, n_experts)) n += t.numel();
  return n;
}

size_t process_overhead_bytes() { return kProcessOverheadBytes; }

MemoryEstimate estimate_memory_textbook(int64_t parameters, const EstimateOptions& options) {
  check_options(options);
  if (!options.textbook) fail("estimate", "a bare parameter count supports only --textbook arithmetic");
  if (options.method != "full")
    fail("estimate", "--method {} needs the model's shape (a preset or a model), not only a parameter count",
         options.method);
  if (parameters <= 0) fail("estimate", "--params must be positive; got {}", parameters);
  const TextbookBytes b = textbook_bytes_per_param(resolve_precision(options));
  MemoryEstimate m;
  m.textbook = true;
  m.parameters = m.trainable_parameters = parameters;
  const double n = double(parameters);
  m.weights = size_t(std::llround(n * b.weights));
  m.gradients = size_t(std::llround(n * b.gradients));
  m.optimizer = size_t(std::llround(n * b.optimizer));
  if (options.optimizer == "adamw8bit") m.optimizer = size_t(std::llround(n * 2.0));
  finish_total(m);
  return m;
}

MemoryEstimate estimate_memory(const LlamaConfig& c, const EstimateOptions& o) {
  check_options(o);
  const std::string precision = resolve_precision(o);
  const int64_t E = o.n_experts, R = o.lora_r;
  const bool full = o.method == "full", qlora = o.method == "qlora";
  const bool bf16 = precision == "bf16" || o.compute == "bf16";
  const std::vector<TensorSpec> tensors = model_tensors(c, E);

  MemoryEstimate m;
  m.textbook = o.textbook;
  for (const TensorSpec& t : tensors) m.parameters += t.numel();
  if (full && o.textbook) {
    MemoryEstimate t = estimate_memory_textbook(m.parameters, o);
    return t;
  }

  auto targeted = [&](const TensorSpec& t) {
    return t.kind == TensorSpec::Projection &&
           std::find(o.target_modules.begin(), o.target_modules.end(), t.projection) != o.target_modules.end();
  };
  std::vector<int64_t> trainable_sizes;  // element counts of the tensors the optimizer keeps state for

  for (const TensorSpec& t : tensors) {
    const size_t n = size_t(t.numel());
    if (full) {
      trainable_sizes.push_back(t.numel());
      m.trainable_parameters += t.numel();
      if (precision == "int8") {
        // Not a mode of this engine: the textbook's 1-byte weights and gradients.
        m.weights += n;
        m.gradients += n;
      } else {
        // f32 trains in place; bf16 keeps a bf16 compute copy of every matrix beside the f32 master.
        m.weights += 4 * n + (bf16 && t.matrix() ? 2 * n : 0);
        m.gradients += 4 * n;
      }
      continue;
    }
    // LoRA / QLoRA: frozen base; vectors stay f32.
    if (!t.matrix()) {
      m.weights += 4 * n;
    } else if (qlora && (o.textbook || t.kind == TensorSpec::Projection)) {
      // QLoRA's 4-bit base covers the decoder projections; the textbook quantizes every matrix.
      const QuantBytes q = quantized_bytes(t.numel(), 4, o.quant_block_size, o.double_quant);
      m.weights += q.codes;
      m.quant_constants += q.constants;
    } else {
      m.weights += precision == "int8" ? n : frozen_matrix_bytes(stored_as(o, m.parameters, t).kind, bf16) * n;
    }
    if (targeted(t)) {
      const int64_t a = R * t.cols, b = t.rows * R;  // A (R, in), B (out, R)
      trainable_sizes.push_back(a);
      trainable_sizes.push_back(b);
      m.trainable_parameters += a + b;
      m.adapters += sizeof(float) * size_t(a + b);
      m.gradients += sizeof(float) * size_t(a + b);
    }
  }

  if (o.textbook) {
    // Adapters: fp32 values, fp32 gradients, Adam m and v in fp32 (8-bit with adamw8bit).
    m.optimizer = size_t(m.trainable_parameters) * (o.optimizer == "adamw8bit" ? 2 : 8);
    finish_total(m);
    return m;
  }

  const size_t state = optimizer_bytes(o.optimizer, trainable_sizes);
  if (o.optimizer == "paged") {
    m.optimizer = std::min(state, kPagedResidentBytes);
    m.optimizer_spilled = state - m.optimizer;
  } else {
    m.optimizer = state;
  }

  // Activations, as LlamaModel::Impl::run counts them (buffers of float, f32 even with bf16 compute).
  const size_t N = size_t(o.batch * o.seq), C = size_t(c.hidden_size), H = size_t(c.num_attention_heads);
  const size_t qd = size_t(c.q_dim()), kvd = size_t(c.kv_dim()), L = size_t(c.num_hidden_layers);
  const size_t F_act = size_t(c.intermediate_size * o.experts_per_token);
  size_t lora_inputs = 0;  // xa (N, R) per adapted projection call
  if (!full)
    for (const std::string& p : o.target_modules)
      lora_inputs += (p == "gate_proj" || p == "up_proj" || p == "down_proj") ? size_t(o.experts_per_token) : 1;
  // h1, x_mid, h2 (N, C); rstd1, rstd2 (N); q, attn (N, qd); k, v (N, kvd); lse (B, H, T);
  // gate, up, act (N, F); xa (N, R) per adapter; with qk_norm, q and k before their head norms
  // (N, qd), (N, kvd) and their rstd (N, H), (N, Hkv).
  const size_t Hkv = size_t(c.num_key_value_heads), qk_norm = c.qk_norm ? 1 : 0;
  const size_t block = N * (3 * C + 2 + 2 * qd + 2 * kvd + H + 3 * F_act + size_t(R) * lora_inputs +
                            qk_norm * (qd + kvd + H + Hkv));
  // dh (N, C); d_attn, dq (N, qd); dk, dv (N, kvd); d_act, dgate, dup (N, F); with qk_norm the
  // gradients before the head norms (N, qd), (N, kvd).
  const size_t grads = N * (C + 2 * qd + 2 * kvd + 3 * F_act + qk_norm * (qd + kvd));
  // TrainModel keeps one workspace per (B, T), reused by every step: the block inputs of every
  // block + the final hidden state (L + 1 of (N, C)), the final norm's output and rstd, dhf, dx and
  // a scratch output (N, C) each, the block gradient buffers, and the activations of every kept
  // block (or, with checkpointing, one working block that is recomputed).
  const size_t inputs = (L + 1) * N * C + N * C + N;
  const size_t chunk = std::min<size_t>(N, size_t(kLossChunkRows));
  // Its own accounting (MemoryStats::activations_peak): saved + working, where the working set
  // counts the recompute block and scratch (checkpointing only), grads, dx, dhf, and the loss
  // chunk as logits and their gradient.
  {
    const size_t saved = inputs + (o.checkpointing ? 0 : L * block);
    const size_t working = (o.checkpointing ? block + N * C : 0) + grads + 2 * N * C + chunk * size_t(c.vocab_size) * 2;
    m.activations_engine = (saved + working) * sizeof(float);
  }
  // What is resident (every workspace buffer is zero-filled at allocation, so all of it is touched)
  // plus cross_entropy's per-call buffers: h and dh chunks (chunk, C) and one logits chunk
  // (chunk, V), the logits gradient being computed in place.
  m.activations = (inputs + 3 * N * C + grads + (o.checkpointing ? block : L * block) +
                   chunk * (2 * C + size_t(c.vocab_size))) *
                  sizeof(float);

  m.overhead = kProcessOverheadBytes;
  // Loading streams the source tensor by tensor (build_model_weights): at its peak the process
  // holds the model built so far — at most all of it, the flat parameter and gradient buffers being
  // allocated up front — and the transient of the tensor in hand.
  size_t transient = 0;
  for (const TensorSpec& t : tensors)
    transient = std::max(transient, load_transient(t, stored_as(o, m.parameters, t), full,
                                                   qlora && t.kind == TensorSpec::Projection, bf16));
  m.load_peak = m.weights + m.quant_constants + m.adapters + m.gradients + transient;
  finish_total(m);
  return m;
}

// ---------------------------------------------------------------------------------------------
// Presets: values of the models' Hugging Face config.json.

namespace {

struct Preset {
  LlamaConfig config;
  int64_t experts = 1, experts_per_token = 1;
  int64_t nominal = 0;
};

LlamaConfig llama_shape(int64_t V, int64_t C, int64_t F, int64_t L, int64_t H, int64_t Hkv) {
  LlamaConfig c;
  c.vocab_size = V, c.hidden_size = C, c.intermediate_size = F, c.num_hidden_layers = L;
  c.num_attention_heads = H, c.num_key_value_heads = Hkv, c.head_dim = C / H;
  c.rms_norm_eps = 1e-5;
  c.torch_dtype = "bfloat16";
  return c;
}

const std::map<std::string, Preset>& presets() {
  static const std::map<std::string, Preset> table = [] {
    std::map<std::string, Preset> t;
    Preset p;
    p.config = llama_shape(32000, 4096, 11008, 32, 32, 32);  // meta-llama/Llama-2-7b-hf
    p.config.max_position_embeddings = 4096;
    p.nominal = 7'000'000'000;
    t["llama-7b"] = p;
    p.config = llama_shape(32000, 5120, 13824, 40, 40, 40);  // meta-llama/Llama-2-13b-hf
    p.config.max_position_embeddings = 4096;
    p.nominal = 13'000'000'000;
    t["llama-13b"] = p;
    p.config = llama_shape(32000, 4096, 14336, 32, 32, 8);  // mistralai/Mistral-7B-v0.1
    p.config.model_type = "mistral", p.config.architecture = "MistralForCausalLM";
    p.config.sliding_window = 4096, p.config.max_position_embeddings = 32768;
    p.nominal = 7'000'000'000;
    t["mistral-7b"] = p;
    p.config = llama_shape(128256, 4096, 14336, 32, 32, 8);  // meta-llama/Meta-Llama-3-8B
    p.config.rope_theta = 500000.0, p.config.max_position_embeddings = 8192;
    p.nominal = 8'000'000'000;
    t["llama3-8b"] = p;
    p.config = llama_shape(32000, 4096, 14336, 32, 32, 8);  // mistralai/Mixtral-8x7B-v0.1
    p.config.model_type = "mixtral", p.config.architecture = "MixtralForCausalLM";
    p.config.rope_theta = 1e6, p.config.max_position_embeddings = 32768;
    p.experts = 8, p.experts_per_token = 2;  // num_local_experts, num_experts_per_tok
    p.nominal = 56'000'000'000;               // "8x7B"
    t["mixtral-8x7b"] = p;
    p = Preset();
    p.config = llama_shape(151936, 4096, 12288, 36, 32, 8);  // Qwen/Qwen3-8B
    p.config.model_type = "qwen3", p.config.architecture = "Qwen3ForCausalLM";
    p.config.head_dim = 128, p.config.qk_norm = true, p.config.rms_norm_eps = 1e-6;
    p.config.rope_theta = 1e6, p.config.max_position_embeddings = 40960;
    p.nominal = 8'000'000'000;
    t["qwen3-8b"] = p;
    // Qwen/Qwen3-30B-A3B: 128 experts of moe_intermediate_size 768, 8 per token (norm_topk_prob),
    // every layer sparse, no shared expert.
    p.config = llama_shape(151936, 2048, 768, 48, 32, 4);
    p.config.model_type = "qwen3_moe", p.config.architecture = "Qwen3MoeForCausalLM";
    p.config.head_dim = 128, p.config.qk_norm = true, p.config.rms_norm_eps = 1e-6;
    p.config.rope_theta = 1e6, p.config.max_position_embeddings = 40960;
    p.experts = 128, p.experts_per_token = 8;
    p.nominal = 30'000'000'000;  // "30B"
    t["qwen3-30b-a3b"] = p;
    return t;
  }();
  return table;
}

const Preset& find_preset(const std::string& name) {
  auto it = presets().find(lower(name));
  if (it == presets().end()) {
    std::string known;
    for (const auto& [k, v] : presets()) known += (known.empty() ? "" : ", ") + k;
    fail("estimate", "unknown --preset '{}'; expected one of {}", name, known);
  }
  return it->second;
}

}  // namespace

LlamaConfig preset_config(const std::string& name) { return find_preset(name).config; }
int64_t preset_experts(const std::string& name) { return find_preset(name).experts; }
int64_t preset_experts_per_token(const std::string& name) { return find_preset(name).experts_per_token; }
int64_t preset_nominal_parameters(const std::string& name) { return find_preset(name).nominal; }

std::vector<std::string> preset_names() {
  std::vector<std::string> out;
  for (const auto& [k, v] : presets()) out.push_back(k);
  return out;
}

int64_t parse_parameter_count(const std::string& text) {
  std::string s = lower(text);
  double scale = 1;
  if (!s.empty()) {
    const char last = s.back();
    if (last == 'k') scale = 1e3;
    if (last == 'm') scale = 1e6;
    if (last == 'b' || last == 'g') scale = 1e9;
    if (last == 't') scale = 1e12;
    if (scale != 1) s.pop_back();
  }
  size_t used = 0;
  double value = 0;
  try {
    value = std::stod(s, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (s.empty() || used != s.size() || !(value > 0) || !std::isfinite(value))
    fail("estimate", "--params '{}' is not a parameter count; expected e.g. 7B, 1.5e9 or 135M", text);
  return int64_t(std::llround(value * scale));
}

// ---------------------------------------------------------------------------------------------

nlohmann::json MemoryEstimate::to_json() const {
  nlohmann::json j = {{"weights", weights},
                      {"gradients", gradients},
                      {"optimizer", optimizer},
                      {"adapters", adapters},
                      {"quant_constants", quant_constants},
                      {"activations", activations},
                      {"activations_engine", activations_engine},
                      {"overhead", overhead},
                      {"load_peak", load_peak},
                      {"optimizer_spilled", optimizer_spilled},
                      {"total", total},
                      {"parameters", parameters},
                      {"trainable_parameters", trainable_parameters},
                      {"textbook", textbook}};
  return j;
}

std::string MemoryEstimate::table() const {
  std::string out = fmt::format("{:<18} {:>10} {:>18}\n", "category", "GB", "bytes");
  auto row = [&out](const char* name, size_t bytes) {
    out += fmt::format("{:<18} {:>10.2f} {:>18}\n", name, double(bytes) / 1e9, bytes);
  };
  row("weights", weights);
  row("gradients", gradients);
  row("optimizer", optimizer);
  row("adapters", adapters);
  row("quant constants", quant_constants);
  row("activations", activations);
  row("overhead", overhead);
  if (!textbook) row("load peak", load_peak);
  if (optimizer_spilled) row("optimizer (disk)", optimizer_spilled);
  out += fmt::format("{:-<48}\n", "");
  row("total", total);
  out += fmt::format("parameters {} ({:.2f} B), trainable {} ({:.4f}%)\n", parameters, double(parameters) / 1e9,
                     trainable_parameters,
                     parameters ? 100.0 * double(trainable_parameters) / double(parameters) : 0.0);
  if (!textbook && total > training_sum())
    out += "the peak is the load: the built model plus one tensor being converted (see docs/memory.md)\n";
  return out;
}

uint64_t source_weight_bytes(const std::string& path) {
  namespace fs = std::filesystem;
  if (!fs::is_directory(path)) return fs::file_size(path);
  uint64_t total = 0;
  for (const auto& entry : fs::directory_iterator(path))
    if (entry.is_regular_file() && entry.path().extension() == ".safetensors") total += entry.file_size();
  return total;
}

std::string estimate_source_dtype(const std::string& stored_types) {
  const std::string first = lower(stored_types.substr(0, stored_types.find('+')));
  if (first == "bf16" || first == "f16" || first == "f32") return first;
  if (first == "f64") return "f32";
  if (first.rfind("bnb-", 0) == 0) return "bnb-4bit";
  return "quantized";  // GGUF block types: Q4_K, Q8_0, ...
}

}  // namespace qlora
