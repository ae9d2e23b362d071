// Internal to the model loader: what every format shares. A format presents its tensors under
// Hugging Face names through a TensorLookup; assemble_weights() then checks each against the
// config (presence, shape, floating dtype), undoes the adjacent-pair RoPE row order where the
// format uses it, and converts (matrices to the weight dtype, norms and biases to f32).
// Tested through load_model in tests/unit/test_loader.cpp.
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "core/tensor.h"
#include "model/loader.h"
#include "model/weights.h"

namespace qlora {

// One tensor as a format stores it.
struct SourceTensor {
  Shape shape;                  // outermost first, as stored
  std::string file;             // for messages: the file holding it
  std::string name_in_file;     // for messages: its name there (may differ from the HF name)
  std::string stored_type;      // for file_dtype: "bf16", "Q4_1", ...
  int64_t rope_heads = 0;       // > 0: rows are in adjacent-pair RoPE order over this many heads
  std::function<Tensor()> load; // the data (any float dtype; zero-copy where possible)
};

// HF name -> the tensor, or nullopt when the file lacks it.
using TensorLookup = std::function<std::optional<SourceTensor>(const std::string& hf_name)>;

// Fills model.weights and model.file_dtype from `lookup` for model.config; `where` names the
// model (a folder or file) in a missing-tensor error.
void assemble_weights(LlamaModelFile& model, const TensorLookup& lookup, const LoadOptions& options,
                      const std::string& where);

// Rows h*D + j*(D/2) + i of the result are rows h*D + 2*i + j of `w` (i < D/2, j in {0, 1}):
// from llama.cpp / llama2.c interleaved RoPE order back to HF's rotate_half order. `w` has
// n_heads*D rows (a matrix or a bias vector); any dtype.
Tensor unpermute_rope_rows(const Tensor& w, int64_t n_heads);
// Both directions of that row order, per head: HF's rotate_half (row j*(D/2)+i) and the adjacent
// pairs of GGUF "llama" / llama2.c (row 2*i+j). to_adjacent_pairs = true goes HF -> GGUF.
Tensor reorder_rope_rows(const Tensor& w, int64_t n_heads, bool to_adjacent_pairs);

// llama.cpp's name of projection `index` in a GGUF block: "attn_q", ..., "ffn_down".
std::string_view gguf_projection_name(int index);

LlamaModelFile load_hf_folder(const std::string& dir, const LoadOptions& options);
LlamaModelFile load_gguf_model(const std::string& path, const LoadOptions& options);
LlamaModelFile load_llama2c_model(const std::string& path, const LoadOptions& options);

}  // namespace qlora
