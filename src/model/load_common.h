// Internal to the model loader and exporters: the RoPE row orders of GGUF "llama" and llama2.c
// (adjacent pairs) against HF's rotate_half, and llama.cpp's projection names. The formats present
// their tensors through ModelSource (model_source.h). Tested through tests/unit/test_loader.cpp.
#pragma once
#include <cstdint>
#include <string_view>

#include "core/tensor.h"

namespace qlora {

// Rows h*D + j*(D/2) + i of the result are rows h*D + 2*i + j of `w` (i < D/2, j in {0, 1}):
// from llama.cpp / llama2.c interleaved RoPE order back to HF's rotate_half order. `w` has
// n_heads*D rows (a matrix or a bias vector); any dtype.
Tensor unpermute_rope_rows(const Tensor& w, int64_t n_heads);
// Both directions of that row order, per head: HF's rotate_half (row j*(D/2)+i) and the adjacent
// pairs of GGUF "llama" / llama2.c (row 2*i+j). to_adjacent_pairs = true goes HF -> GGUF.
Tensor reorder_rope_rows(const Tensor& w, int64_t n_heads, bool to_adjacent_pairs);

// llama.cpp's name of projection `index` in a GGUF block: "attn_q", ..., "ffn_down".
std::string_view gguf_projection_name(int index);
// llama.cpp's name of a block's stacked experts (E, out, in) for `part` 0 gate, 1 up, 2 down:
// "ffn_gate_exps", "ffn_up_exps", "ffn_down_exps".
std::string_view gguf_expert_stack_name(int part);

}  // namespace qlora
