// ModelSource: a model on disk, opened but not loaded. It knows its config, where it came from and
// every tensor by Hugging Face name (shape and stored type from the file's index), and loads one
// tensor at a time on demand — validated against the config (present, shape, floating-point),
// q/k rows back in HF's rotate_half order, a zero-copy view of the mapped file where the stored
// dtype allows — and releases its pages after use. A consumer that walks the tensors one by one
// (LlamaModel, the exporters) therefore never holds more than a few tensors of the source,
// whatever the model's size. load_model() (model/loader.h) is the eager form.
// Sources: Hugging Face folders (single or sharded safetensors; bitsandbytes 4-bit weights kept as
// stored on request), GGUF files, llama2.c checkpoints, and a LlamaModelFile already in memory.
// Tested in tests/unit/test_model_source.cpp (streaming equals eager for every format).
#pragma once
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/quant_tensor.h"
#include "core/tensor.h"
#include "model/config.h"
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
  std::function<void()> release;              // drops the source's pages of it (may be empty)
  std::function<QuantTensor()> load_quantized;  // a bitsandbytes 4-bit weight as stored (else empty)
};

// HF name -> the tensor, or nullopt when the source lacks it.
using TensorLookup = std::function<std::optional<SourceTensor>(const std::string& hf_name)>;

// A tokenizer of `tokenizer_vocab` ids fits a model whose embedding has config.vocab_size rows when
// it is not larger: a larger embedding is padding (HF pads to a multiple of 64 or 128). A larger
// tokenizer would produce ids past the embedding, so this fails at load naming both sizes and
// both files, not later inside the embedding. Tested in tests/e2e/test_cli.cpp.
void check_tokenizer_fits(int64_t tokenizer_vocab, const std::string& tokenizer_name, const LlamaConfig& config,
                          const std::string& model_name);

class ModelSource {
 public:
  // `where` names the model (a folder or file) in a missing-tensor error.
  ModelSource(LlamaConfig config, std::string path, std::string format, std::string where, TensorLookup lookup);
  // Detects the format from the path (a folder, GGUF magic or *.gguf, *.bin) and opens it. Reads
  // the config and the tensor index, no weights. Errors name the file.
  static ModelSource open(const std::string& path);
  // A model already in memory; each load hands out its tensor and release() drops the source's
  // reference, so a consumer frees the dense weights as it goes. format() is the file's own
  // ("hf", "gguf", ...; "memory" when it has none), so exporters still find its tokenizer.
  static ModelSource from_file(LlamaModelFile file);

  const LlamaConfig& config() const;
  const std::string& path() const;
  const std::string& format() const;  // "hf" | "gguf" | "llama2c" | "memory"

  // The tensors a model of this config reads, in load order: embedding, per layer the input norm,
  // the projections (weight, then bias where the config has one), the q/k head norms (Qwen3), the
  // post-attention norm, then the final norm and (untied) the head.
  std::vector<std::string> tensor_names() const;
  // The shape the config gives a tensor (what load() checks the file against).
  Shape expected_shape(const std::string& name) const;
  // The tensor, validated and in HF row order, in its stored float dtype (f32, f16, bf16; a
  // quantized GGUF or bitsandbytes tensor dequantized to f32). Throws Error naming the file and
  // tensor when it is missing, has the wrong shape or is not floating-point.
  Tensor load(const std::string& name) const;
  // A bitsandbytes 4-bit weight exactly as stored (no dequantize/requantize), or nullopt when the
  // tensor is not one.
  std::optional<QuantTensor> load_quantized(const std::string& name) const;
  // Drops what the source holds of `name` (mapped pages, or the in-memory tensor).
  void release(const std::string& name) const;
  // Stored types over tensor_names(), most elements first: "Q4_1+Q8_0+F32". From the index only.
  std::string stored_types() const;
  // How the source stores one tensor ("bf16", "Q4_K", "bnb-nf4", ...). From the index only.
  std::string stored_type(const std::string& name) const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

// The opening half of each format (the index and config; no data), in load_hf.cpp, load_gguf.cpp
// and load_llama2c.cpp.
ModelSource open_hf_folder(const std::string& dir);
ModelSource open_gguf_model(const std::string& path);
ModelSource open_llama2c_model(const std::string& path);

}  // namespace qlora
