// LlamaConfig <-> Hugging Face config.json. Field names and defaults follow transformers'
// LlamaConfig, MistralConfig, MixtralConfig, Qwen2Config, Qwen3Config and Qwen3MoeConfig (Qwen2
// always has q/k/v biases; Qwen3 normalises each head of q and k; Mixtral and Qwen3-MoE route each
// token to experts; Mistral, Mixtral and Qwen2 may carry a sliding window). Every error
// names the key and the source file.
#include "model/config.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <sstream>

#include "core/checked_size.h"
#include "core/error.h"
#include "core/projections.h"

namespace qlora {
namespace {

using json = nlohmann::json;

struct Family {
  const char* model_type;
  const char* architecture;
};
constexpr Family kFamilies[] = {
    {"llama", "LlamaForCausalLM"},
    {"mistral", "MistralForCausalLM"},
    {"qwen2", "Qwen2ForCausalLM"},
    {"qwen3", "Qwen3ForCausalLM"},
    {"mixtral", "MixtralForCausalLM"},
    {"qwen3_moe", "Qwen3MoeForCausalLM"},
};
constexpr const char* kSupported =
    "LlamaForCausalLM (llama), MistralForCausalLM (mistral), MixtralForCausalLM (mixtral), Qwen2ForCausalLM (qwen2), "
    "Qwen3ForCausalLM (qwen3), Qwen3MoeForCausalLM (qwen3_moe)";

const Family* family_by_type(const std::string& t) {
  for (const auto& f : kFamilies)
    if (t == f.model_type) return &f;
  return nullptr;
}
const Family* family_by_arch(const std::string& a) {
  for (const auto& f : kFamilies)
    if (a == f.architecture) return &f;
  return nullptr;
}

// Typed accessors: absent or null keys give the default; a wrong type is an error naming both.
class Fields {
 public:
  Fields(const json& j, const std::string& source) : j_(j), source_(source) {}

  bool present(const char* key) const { return j_.contains(key) && !j_[key].is_null(); }

  [[noreturn]] void wrong(const char* key, const char* expected, const json& v) const {
    fail("config", "key '{}' in {}: expected {}, got {} {}", key, source_, expected, v.type_name(),
         v.dump());
  }
  int64_t integer(const char* key, const json& v) const {
    if (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max()))
      wrong(key, "an integer that fits int64", v);
    if (v.is_number_integer()) return v.get<int64_t>();
    // Some exporters write 2048.0; accept integral floats. The range test comes first: casting a
    // double outside int64 (1e30) is undefined behaviour. 2^63 is exact in a double.
    if (v.is_number_float()) {
      const double d = v.get<double>();
      if (!(d >= -0x1p63 && d < 0x1p63)) wrong(key, "an integer that fits int64", v);
      if (std::trunc(d) == d) return int64_t(d);
    }
    wrong(key, "an integer", v);
  }
  int64_t get_int(const char* key, int64_t fallback) const {
    return present(key) ? integer(key, j_[key]) : fallback;
  }
  int64_t require_int(const char* key) const {
    if (!present(key)) fail("config", "key '{}' is missing from {}", key, source_);
    return integer(key, j_[key]);
  }
  double get_double(const char* key, double fallback) const {
    if (!present(key)) return fallback;
    const json& v = j_[key];
    if (!v.is_number()) wrong(key, "a number", v);
    return v.get<double>();
  }
  bool get_bool(const char* key, bool fallback) const {
    if (!present(key)) return fallback;
    const json& v = j_[key];
    if (!v.is_boolean()) wrong(key, "a bool", v);
    return v.get<bool>();
  }
  std::string get_string(const char* key, const std::string& fallback) const {
    if (!present(key)) return fallback;
    const json& v = j_[key];
    if (!v.is_string()) wrong(key, "a string", v);
    return v.get<std::string>();
  }
  const json& at(const char* key) const { return j_[key]; }

 private:
  const json& j_;
  const std::string& source_;
};

RopeScaling parse_rope_scaling(const json& v, const std::string& source) {
  RopeScaling rs;
  if (v.is_null()) return rs;
  if (!v.is_object())
    fail("config", "key 'rope_scaling' in {}: expected an object or null, got {} {}", source,
         v.type_name(), v.dump());
  const Fields f(v, source);
  std::string type = f.get_string("rope_type", "");
  if (type.empty()) type = f.get_string("type", "");
  if (type == "default" || type.empty()) return rs;  // transformers treats these as "no scaling"
  if (type != "llama3" && type != "linear")
    fail("config", "key 'rope_scaling' in {}: unsupported rope type '{}'; supported: llama3, linear "
                   "(or null)",
         source, type);
  rs.type = type;
  rs.factor = f.get_double("factor", 1.0);
  if (type == "llama3") {
    rs.low_freq_factor = f.get_double("low_freq_factor", rs.low_freq_factor);
    rs.high_freq_factor = f.get_double("high_freq_factor", rs.high_freq_factor);
    rs.original_max_position_embeddings =
        f.get_int("original_max_position_embeddings", rs.original_max_position_embeddings);
  }
  return rs;
}

}  // namespace

LlamaConfig LlamaConfig::from_hf_json(const json& j, const std::string& source) {
  if (!j.is_object())
    fail("config", "{}: expected a JSON object, got {}", source, j.type_name());
  const Fields f(j, source);
  LlamaConfig c;

  // Family: from `architectures[0]` and `model_type`; each, when given, must be supported.
  std::string arch;
  if (f.present("architectures")) {
    const json& a = f.at("architectures");
    if (!a.is_array() || a.empty() || !a[0].is_string())
      f.wrong("architectures", "a non-empty list of strings", a);
    arch = a[0].get<std::string>();
  }
  const std::string model_type = f.get_string("model_type", "");
  const Family* fam = nullptr;
  if (!arch.empty()) {
    fam = family_by_arch(arch);
    if (!fam) fail("config", "unsupported architecture {} in {}; supported: {}", arch, source, kSupported);
  }
  if (!model_type.empty()) {
    const Family* by_type = family_by_type(model_type);
    if (!by_type)
      fail("config", "unsupported architecture {} in {}; supported: {}",
           arch.empty() ? "model_type " + model_type : arch + " (model_type " + model_type + ")", source,
           kSupported);
    if (fam && fam != by_type)
      fail("config", "{}: architectures[0] {} does not match model_type {}; expected model_type {}",
           source, arch, model_type, fam->model_type);
    fam = by_type;
  }
  if (!fam)
    fail("config", "{}: neither 'model_type' nor 'architectures' is set; expected one of: {}", source,
         kSupported);
  c.model_type = fam->model_type;
  c.architecture = fam->architecture;

  c.vocab_size = f.require_int("vocab_size");
  c.hidden_size = f.require_int("hidden_size");
  c.intermediate_size = f.require_int("intermediate_size");
  c.num_hidden_layers = f.require_int("num_hidden_layers");
  c.num_attention_heads = f.require_int("num_attention_heads");
  c.num_key_value_heads = f.get_int("num_key_value_heads", c.num_attention_heads);
  if (c.num_attention_heads <= 0)
    fail("config", "key 'num_attention_heads' in {}: expected a positive integer, got {}", source,
         c.num_attention_heads);
  if (f.present("head_dim")) {
    c.head_dim = f.get_int("head_dim", 0);
  } else {
    if (c.hidden_size % c.num_attention_heads != 0)
      fail("config", "{}: hidden_size {} is not divisible by num_attention_heads {} (and no head_dim "
                     "is given)",
           source, c.hidden_size, c.num_attention_heads);
    c.head_dim = c.hidden_size / c.num_attention_heads;
  }
  c.max_position_embeddings = f.get_int("max_position_embeddings", c.max_position_embeddings);
  c.rms_norm_eps = f.get_double("rms_norm_eps", c.rms_norm_eps);
  c.rope_theta = f.get_double("rope_theta", c.rope_theta);
  if (j.contains("rope_scaling")) c.rope_scaling = parse_rope_scaling(j["rope_scaling"], source);
  // transformers >= 5 writes both into one `rope_parameters` object ({rope_theta, rope_type, ...}).
  if (j.contains("rope_parameters") && !j["rope_parameters"].is_null()) {
    const json& rp = j["rope_parameters"];
    if (!rp.is_object())
      fail("config", "key 'rope_parameters' in {}: expected an object or null, got {}", source, rp.type_name());
    c.rope_theta = Fields(rp, source).get_double("rope_theta", c.rope_theta);
    c.rope_scaling = parse_rope_scaling(rp, source);
  }
  c.tie_word_embeddings = f.get_bool("tie_word_embeddings", false);
  // Qwen2's attention always has q/k/v biases (transformers hard-codes bias=True there).
  c.attention_bias = c.model_type == "qwen2" ? true : f.get_bool("attention_bias", false);
  c.mlp_bias = f.get_bool("mlp_bias", false);
  if (c.model_type == "mixtral") {
    c.num_local_experts = f.get_int("num_local_experts", 8);
    c.num_experts_per_tok = f.get_int("num_experts_per_tok", 2);
    c.router_aux_loss_coef = f.get_double("router_aux_loss_coef", 0.001);
    c.output_router_logits = f.get_bool("output_router_logits", false);
    c.moe_intermediate_size = c.intermediate_size;
    if (f.get_double("router_jitter_noise", 0.0) != 0.0)
      fail("config", "key 'router_jitter_noise' in {}: router jitter is not supported; expected 0", source);
  } else if (c.model_type == "qwen3_moe") {
    // The Hub's configs say num_experts; transformers 5 writes its alias num_local_experts.
    c.num_local_experts = f.get_int("num_local_experts", f.get_int("num_experts", 128));
    c.num_experts_per_tok = f.get_int("num_experts_per_tok", 8);
    c.moe_intermediate_size = f.get_int("moe_intermediate_size", 768);
    c.norm_topk_prob = f.get_bool("norm_topk_prob", false);
    c.decoder_sparse_step = f.get_int("decoder_sparse_step", 1);
    if (f.present("mlp_only_layers") && !f.at("mlp_only_layers").is_null()) {
      const json& m = f.at("mlp_only_layers");
      if (!m.is_array())
        fail("config", "key 'mlp_only_layers' in {}: expected a list of layer indices, got {}", source, m.type_name());
      for (const auto& l : m) c.mlp_only_layers.push_back(f.integer("mlp_only_layers", l));
    }
    c.router_aux_loss_coef = f.get_double("router_aux_loss_coef", 0.001);
    c.output_router_logits = f.get_bool("output_router_logits", false);
  }
  if (c.model_type == "mistral" || c.model_type == "mixtral") {
    c.sliding_window = f.get_int("sliding_window", 0);
  } else if (c.model_type == "qwen2" && f.get_bool("use_sliding_window", false)) {
    c.sliding_window = f.get_int("sliding_window", 0);
  } else if ((c.model_type == "qwen3" || c.model_type == "qwen3_moe") && f.get_bool("use_sliding_window", false)) {
    // Qwen3 windows only the layers from max_window_layers on (its `layer_types`); one window for
    // every layer is what the engine has. No released Qwen3 checkpoint turns it on.
    fail("config", "key 'use_sliding_window' in {}: sliding-window attention is not supported for {}; "
                   "expected false",
         source, c.model_type);
  }
  c.qk_norm = c.model_type == "qwen3" || c.model_type == "qwen3_moe";
  c.bos_token_id = f.get_int("bos_token_id", -1);
  if (f.present("eos_token_id")) {
    const json& e = f.at("eos_token_id");
    if (e.is_array()) {
      for (const auto& id : e) c.eos_token_ids.push_back(f.integer("eos_token_id", id));
    } else {
      c.eos_token_ids.push_back(f.integer("eos_token_id", e));
    }
  }
  c.pad_token_id = f.get_int("pad_token_id", -1);
  // transformers >= 4.56 writes `dtype`; older versions `torch_dtype`.
  c.torch_dtype = f.get_string("torch_dtype", f.get_string("dtype", c.torch_dtype));
  c.validate(source);
  return c;
}

LlamaConfig LlamaConfig::from_hf_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) fail("config", "cannot open {}", path);
  std::stringstream ss;
  ss << in.rdbuf();
  json j;
  try {
    j = json::parse(ss.str());
  } catch (const json::exception& e) {
    fail("config", "malformed JSON in {}: {}", path, e.what());
  }
  return from_hf_json(j, path);
}

json LlamaConfig::to_hf_json() const {
  json j;
  j["architectures"] = {architecture};
  j["model_type"] = model_type;
  j["vocab_size"] = vocab_size;
  j["hidden_size"] = hidden_size;
  j["intermediate_size"] = intermediate_size;
  j["num_hidden_layers"] = num_hidden_layers;
  j["num_attention_heads"] = num_attention_heads;
  j["num_key_value_heads"] = num_key_value_heads;
  j["head_dim"] = head_dim;
  j["max_position_embeddings"] = max_position_embeddings;
  j["rms_norm_eps"] = rms_norm_eps;
  j["rope_theta"] = rope_theta;
  if (rope_scaling.type.empty()) {
    j["rope_scaling"] = nullptr;
  } else {
    json rs{{"rope_type", rope_scaling.type}, {"factor", rope_scaling.factor}};
    if (rope_scaling.type == "llama3") {
      rs["low_freq_factor"] = rope_scaling.low_freq_factor;
      rs["high_freq_factor"] = rope_scaling.high_freq_factor;
      rs["original_max_position_embeddings"] = rope_scaling.original_max_position_embeddings;
    }
    j["rope_scaling"] = rs;
  }
  j["tie_word_embeddings"] = tie_word_embeddings;
  if (model_type != "qwen2") j["attention_bias"] = attention_bias;
  if (model_type == "llama" || model_type == "mistral") j["mlp_bias"] = mlp_bias;
  if (model_type == "mixtral") {
    j["num_local_experts"] = num_local_experts;
    j["router_jitter_noise"] = 0.0;
  } else if (model_type == "qwen3_moe") {
    j["num_experts"] = num_local_experts;
    j["moe_intermediate_size"] = moe_intermediate_size;
    j["norm_topk_prob"] = norm_topk_prob;
    j["decoder_sparse_step"] = decoder_sparse_step;
    j["mlp_only_layers"] = mlp_only_layers;
  }
  if (moe()) {
    j["num_experts_per_tok"] = num_experts_per_tok;
    j["router_aux_loss_coef"] = router_aux_loss_coef;
    j["output_router_logits"] = output_router_logits;
  }
  if (model_type == "mistral" || model_type == "mixtral") {
    j["sliding_window"] = sliding_window > 0 ? json(sliding_window) : json(nullptr);
  } else if (model_type == "qwen2") {
    j["use_sliding_window"] = sliding_window > 0;
    if (sliding_window > 0) j["sliding_window"] = sliding_window;
  } else if (model_type == "qwen3" || model_type == "qwen3_moe") {
    j["use_sliding_window"] = false;
  }
  j["bos_token_id"] = bos_token_id >= 0 ? json(bos_token_id) : json(nullptr);
  if (eos_token_ids.empty()) {
    j["eos_token_id"] = nullptr;
  } else if (eos_token_ids.size() == 1) {
    j["eos_token_id"] = eos_token_ids[0];
  } else {
    j["eos_token_id"] = eos_token_ids;
  }
  if (pad_token_id >= 0) j["pad_token_id"] = pad_token_id;
  j["torch_dtype"] = torch_dtype;
  j["hidden_act"] = "silu";
  return j;
}

// Far above any real model (vocab 256k, hidden 16k, intermediate 53k, 128 heads, 126 layers in
// Llama 3.1 405B), and low enough that a product of two dimensions (q_dim, kv_dim, C*F) stays
// far from int64 overflow. parameter_count, which multiplies more, is checked as well.
constexpr int64_t kMaxDim = int64_t(1) << 24;
constexpr int64_t kMaxLayers = int64_t(1) << 16;
constexpr int64_t kMaxPositions = int64_t(1) << 31;

void LlamaConfig::validate(const std::string& source) const {
  auto positive = [&](const char* key, int64_t v, int64_t max = kMaxDim) {
    if (v <= 0) fail("config", "key '{}' in {}: expected a positive integer, got {}", key, source, v);
    if (v > max) fail("config", "key '{}' in {}: expected at most {}, got {}", key, source, max, v);
  };
  positive("vocab_size", vocab_size);
  positive("hidden_size", hidden_size);
  positive("intermediate_size", intermediate_size);
  positive("num_hidden_layers", num_hidden_layers, kMaxLayers);
  positive("num_attention_heads", num_attention_heads);
  positive("num_key_value_heads", num_key_value_heads);
  positive("head_dim", head_dim);
  positive("max_position_embeddings", max_position_embeddings, kMaxPositions);
  if (num_attention_heads % num_key_value_heads != 0)
    fail("config", "{}: num_attention_heads {} must be a multiple of num_key_value_heads {} (GQA groups)",
         source, num_attention_heads, num_key_value_heads);
  if (head_dim % 2 != 0)
    fail("config", "key 'head_dim' in {}: RoPE needs an even head_dim, got {}", source, head_dim);
  if (!(rms_norm_eps > 0))
    fail("config", "key 'rms_norm_eps' in {}: expected a positive number, got {}", source, rms_norm_eps);
  if (!(rope_theta > 0))
    fail("config", "key 'rope_theta' in {}: expected a positive number, got {}", source, rope_theta);
  if (!rope_scaling.type.empty()) {
    if (rope_scaling.type != "llama3" && rope_scaling.type != "linear")
      fail("config", "key 'rope_scaling' in {}: unsupported rope type '{}'; supported: llama3, linear",
           source, rope_scaling.type);
    if (!(rope_scaling.factor > 0))
      fail("config", "key 'rope_scaling.factor' in {}: expected a positive number, got {}", source,
           rope_scaling.factor);
    if (rope_scaling.type == "llama3" &&
        (!(rope_scaling.high_freq_factor > rope_scaling.low_freq_factor) ||
         rope_scaling.original_max_position_embeddings <= 0))
      fail("config", "key 'rope_scaling' in {}: llama3 scaling needs high_freq_factor > "
                     "low_freq_factor and original_max_position_embeddings > 0; got {}, {}, {}",
           source, rope_scaling.high_freq_factor, rope_scaling.low_freq_factor,
           rope_scaling.original_max_position_embeddings);
  }
  if (mlp_bias)
    fail("config", "key 'mlp_bias' in {}: MLP biases are not supported; expected false, got true", source);
  if (moe()) {
    positive("num_local_experts", num_local_experts, int64_t(1) << 12);
    if (num_experts_per_tok < 1 || num_experts_per_tok > num_local_experts)
      fail("config", "key 'num_experts_per_tok' in {}: expected 1 to the number of experts ({}), got {}", source,
           num_local_experts, num_experts_per_tok);
    positive("moe_intermediate_size", moe_intermediate_size);
    positive("decoder_sparse_step", decoder_sparse_step, kMaxLayers);
    // Every expert matrix is a tensor of its own: a config of 2^16 layers × 2^12 experts would
    // name 800 M of them before a single weight is read. 2^20 is 20× DeepSeek-V3's count.
    constexpr int64_t kMaxExpertMatrices = int64_t(1) << 20;
    if (num_hidden_layers * num_local_experts * 3 > kMaxExpertMatrices)
      fail("config", "{}: {} layers × {} experts × 3 is more than {} expert matrices; not a real model", source,
           num_hidden_layers, num_local_experts, kMaxExpertMatrices);
    for (int64_t l : mlp_only_layers)
      if (l < 0 || l >= num_hidden_layers)
        fail("config", "key 'mlp_only_layers' in {}: layer {} is not in 0..{}", source, l, num_hidden_layers - 1);
  }
  if (sliding_window < 0)
    fail("config", "key 'sliding_window' in {}: expected a non-negative integer, got {}", source,
         sliding_window);
  // Token ids are not range-checked against vocab_size: real configs are often sloppy there
  // (a pad id one past the vocabulary) and an id that is never produced is harmless.
  for (int64_t id : eos_token_ids)
    if (id < 0) fail("config", "key 'eos_token_id' in {}: expected non-negative ids, got {}", source, id);
}

int64_t LlamaConfig::parameter_count() const {
  // validate() bounds each dimension, not their products: L * 3 * C * F can still pass int64.
  const std::string what = fmt::format("parameter count (vocab_size {}, hidden_size {}, intermediate_size {}, "
                                       "num_hidden_layers {}, q_dim {}, kv_dim {})",
                                       vocab_size, hidden_size, intermediate_size, num_hidden_layers, q_dim(), kv_dim());
  const auto mul = [&](std::initializer_list<uint64_t> f) { return checked_product(f, "config", what); };
  const auto sum = [&](std::initializer_list<uint64_t> t) { return checked_sum(t, "config", what); };
  const uint64_t C = uint64_t(hidden_size), F = uint64_t(intermediate_size), V = uint64_t(vocab_size);
  const uint64_t Q = uint64_t(q_dim()), KV = uint64_t(kv_dim()), L = uint64_t(num_hidden_layers);
  const uint64_t D = uint64_t(head_dim);
  const uint64_t E = uint64_t(num_local_experts), Fe = uint64_t(moe_intermediate_size);
  const uint64_t L_moe = uint64_t(moe_layer_count());
  const uint64_t per_layer = sum({mul({2, C}),                                 // input/post-attention norms
                                  mul({C, Q}), mul({2, C, KV}),                // q, k, v
                                  mul({Q, C}),                                 // o
                                  attention_bias ? sum({Q, mul({2, KV})}) : 0,
                                  qk_norm ? mul({2, D}) : 0});                 // q_norm, k_norm
  const uint64_t dense_mlp = mul({3, C, F});                                   // gate, up, down
  const uint64_t sparse_mlp = moe() ? sum({mul({E, 3, C, Fe}), mul({E, C})}) : 0;  // experts, router
  return int64_t(sum({mul({V, C}), mul({L, per_layer}), mul({L - L_moe, dense_mlp}), mul({L_moe, sparse_mlp}),
                      C,                                                       // final norm
                      tie_word_embeddings ? 0 : mul({V, C})}));
}

bool LlamaConfig::moe_layer(int64_t l) const {
  if (!moe() || l < 0 || l >= num_hidden_layers || (l + 1) % decoder_sparse_step != 0) return false;
  return std::find(mlp_only_layers.begin(), mlp_only_layers.end(), l) == mlp_only_layers.end();
}

int64_t LlamaConfig::moe_layer_count() const {
  int64_t n = 0;
  for (int64_t l = 0; l < num_hidden_layers; ++l) n += moe_layer(l);
  return n;
}

std::pair<int64_t, int64_t> LlamaConfig::projection_shape(int index) const {
  switch (index) {
    case kProjQ: return {q_dim(), hidden_size};
    case kProjK:
    case kProjV: return {kv_dim(), hidden_size};
    case kProjO: return {hidden_size, q_dim()};
    case kProjGate:
    case kProjUp: return {intermediate_size, hidden_size};
    case kProjDown: return {hidden_size, intermediate_size};
  }
  fail("config", "projection index {} out of range [0, {})", index, int(kProjCount));
}

}  // namespace qlora
