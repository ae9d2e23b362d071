// RoPE row orders and llama.cpp's projection names. See load_common.h.
#include "model/load_common.h"

#include <array>
#include <cstring>

#include "core/error.h"
#include "core/projections.h"

namespace qlora {

Tensor reorder_rope_rows(const Tensor& w, int64_t n_heads, bool to_adjacent_pairs) {
  QLORA_ASSERT(w.ndim() >= 1 && n_heads > 0 && w.dim(0) % n_heads == 0 && (w.dim(0) / n_heads) % 2 == 0,
               "reorder_rope_rows: {} rows do not split into {} heads of even size", w.dim(0), n_heads);
  const int64_t D = w.dim(0) / n_heads;
  const size_t row_bytes = w.nbytes() / size_t(w.dim(0));
  Tensor out = Tensor::zeros(w.shape(), w.dtype());
  const auto* src = static_cast<const uint8_t*>(w.raw());
  auto* dst = static_cast<uint8_t*>(out.raw());
  for (int64_t h = 0; h < n_heads; ++h)
    for (int64_t i = 0; i < D / 2; ++i)
      for (int64_t j = 0; j < 2; ++j) {
        const size_t pair_row = size_t(h * D + 2 * i + j), half_row = size_t(h * D + j * (D / 2) + i);
        const size_t to = to_adjacent_pairs ? pair_row : half_row, from = to_adjacent_pairs ? half_row : pair_row;
        std::memcpy(dst + to * row_bytes, src + from * row_bytes, row_bytes);
      }
  return out;
}

Tensor unpermute_rope_rows(const Tensor& w, int64_t n_heads) { return reorder_rope_rows(w, n_heads, false); }

std::string_view gguf_projection_name(int index) {
  static constexpr std::array<std::string_view, kProjCount> kNames = {"attn_q",   "attn_k", "attn_v",  "attn_output",
                                                                      "ffn_gate", "ffn_up", "ffn_down"};
  QLORA_ASSERT(index >= 0 && index < kProjCount, "projection index {}", index);
  return kNames[size_t(index)];
}

std::string_view gguf_expert_stack_name(int part) {
  static constexpr std::array<std::string_view, 3> kNames = {"ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"};
  QLORA_ASSERT(part >= 0 && part < 3, "expert part {}", part);
  return kNames[size_t(part)];
}

}  // namespace qlora
