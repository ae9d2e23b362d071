// llama2.c checkpoint reader, v0 ("legacy") layout as Karpathy's run.c reads it: a header of
// 7 int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len; a negative
// vocab_size means an untied classifier follows), then float32 tensors, layers stacked:
// token_embedding (V, C); rms_att (L, C); wq (L, H*D, C); wk (L, Hkv*D, C); wv (L, Hkv*D, C);
// wo (L, C, H*D); rms_ffn (L, C); w1 (L, F, C); w2 (L, C, F); w3 (L, F, C); rms_final (C);
// freq_cos (seq_len, D/2); freq_sin (seq_len, D/2); [wcls (V, C)].
// The file size must match the header exactly. Tensors are zero-copy views of the mapping, in the
// file's own orientation (q/k rows in adjacent-pair RoPE order; the model loader permutes them).
// Tested in tests/unit/test_llama2c.cpp.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "core/tensor.h"

namespace qlora {

struct Llama2cHeader {
  int64_t dim = 0;         // C
  int64_t hidden_dim = 0;  // F
  int64_t n_layers = 0;    // L
  int64_t n_heads = 0;     // H
  int64_t n_kv_heads = 0;  // Hkv
  int64_t vocab_size = 0;  // V (absolute value of the header field)
  int64_t seq_len = 0;
  bool shared_classifier = true;  // header vocab_size > 0: wcls is the token embedding

  int64_t head_size() const { return dim / n_heads; }              // D
  int64_t kv_dim() const { return n_kv_heads * head_size(); }      // Hkv*D
  // Number of float32 values the file holds after the header; throws Error naming `source`
  // when the count does not fit int64.
  int64_t float_count(std::string_view source = "llama2.c header") const;
};

struct Llama2cCheckpoint {
  std::string path;
  Llama2cHeader header;
  Tensor token_embedding;     // (V, C)
  Tensor rms_att;             // (L, C)
  Tensor wq, wk, wv, wo;      // (L, H*D, C), (L, Hkv*D, C), (L, Hkv*D, C), (L, C, H*D)
  Tensor rms_ffn;             // (L, C)
  Tensor w1, w2, w3;          // gate (L, F, C), down (L, C, F), up (L, F, C)
  Tensor rms_final;           // (C)
  Tensor freq_cos, freq_sin;  // (seq_len, D/2)
  Tensor wcls;                // (V, C); the same tensor as token_embedding when shared

  // Maps and validates the file; throws Error naming it on a bad header or a size mismatch.
  static Llama2cCheckpoint open(const std::string& path);
};

}  // namespace qlora
