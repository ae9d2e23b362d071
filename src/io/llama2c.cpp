// llama2.c v0 checkpoint reader: header validation, exact size check, zero-copy tensor views.
#include "io/llama2c.h"

#include <cstring>

#include "core/checked_size.h"
#include "core/error.h"
#include "io/mapped_file.h"

namespace qlora {
namespace {

constexpr size_t kHeaderBytes = 7 * 4;
constexpr int64_t kMaxDim = int64_t(1) << 24;  // any field above this is not a real model

}  // namespace

int64_t Llama2cHeader::float_count(std::string_view source) const {
  // Each field may be up to kMaxDim = 2^24, so products such as L*C*C reach 2^72: checked, not
  // int64 arithmetic (a wrapped count could match a small file and map tensors past its end).
  const uint64_t C = uint64_t(dim), F = uint64_t(hidden_dim), L = uint64_t(n_layers), V = uint64_t(vocab_size),
                 D = uint64_t(head_size()), kv = uint64_t(kv_dim()), T = uint64_t(seq_len);
  const std::string what = fmt::format("{}: tensor sizes of the header", source);
  const auto mul = [&](std::initializer_list<uint64_t> f) { return checked_product(f, "llama2c", what); };
  const uint64_t n = checked_sum({mul({V, C}),                                    // token_embedding
                                  mul({L, C}),                                    // rms_att
                                  mul({L, C, C}), mul({2, L, kv, C}),             // wq, wk, wv
                                  mul({L, C, C}),                                 // wo
                                  mul({L, C}),                                    // rms_ffn
                                  mul({3, L, F, C}),                              // w1, w2, w3
                                  C,                                              // rms_final
                                  mul({2, T, D / 2}),                             // freq_cos, freq_sin
                                  shared_classifier ? uint64_t(0) : mul({V, C})},  // wcls
                                 "llama2c", what);
  return int64_t(n);
}

Llama2cCheckpoint Llama2cCheckpoint::open(const std::string& path) {
  MappedFile map = map_file(path);
  if (map.size < kHeaderBytes)
    fail("llama2c", "{} is truncated: expected at least the {}-byte header, got {} bytes", path,
         kHeaderBytes, map.size);
  int32_t raw[7];
  std::memcpy(raw, map.data, kHeaderBytes);
  const char* names[7] = {"dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len"};
  for (int i = 0; i < 7; ++i) {
    const int64_t v = i == 5 ? (raw[i] < 0 ? -int64_t(raw[i]) : raw[i]) : raw[i];
    if (v <= 0 || v > kMaxDim)
      fail("llama2c", "{}: header field {} must be in [1, {}]; got {} (not a llama2.c v0 checkpoint?)",
           path, names[i], kMaxDim, raw[i]);
  }
  Llama2cHeader h;
  h.dim = raw[0];
  h.hidden_dim = raw[1];
  h.n_layers = raw[2];
  h.n_heads = raw[3];
  h.n_kv_heads = raw[4];
  h.shared_classifier = raw[5] > 0;
  h.vocab_size = raw[5] < 0 ? -int64_t(raw[5]) : raw[5];
  h.seq_len = raw[6];
  if (h.dim % h.n_heads != 0 || h.head_size() % 2 != 0)
    fail("llama2c", "{}: dim {} must split into {} heads of even size", path, h.dim, h.n_heads);
  if (h.n_kv_heads > h.n_heads || h.n_heads % h.n_kv_heads != 0)
    fail("llama2c", "{}: n_heads {} must be a multiple of n_kv_heads {}", path, h.n_heads, h.n_kv_heads);

  const int64_t expected =
      int64_t(checked_sum({kHeaderBytes, checked_mul(4, uint64_t(h.float_count(path)), "llama2c", path)}, "llama2c", path));
  if (int64_t(map.size) != expected)
    fail("llama2c", "{}: file size does not match its header (dim {}, hidden_dim {}, n_layers {}, "
                    "n_heads {}, n_kv_heads {}, vocab_size {}, seq_len {}); expected {} bytes, got {}{}",
         path, h.dim, h.hidden_dim, h.n_layers, h.n_heads, h.n_kv_heads, raw[5], h.seq_len, expected,
         map.size, int64_t(map.size) < expected ? " (truncated)" : "");

  Llama2cCheckpoint ck;
  ck.path = path;
  ck.header = h;
  auto storage = Storage::borrow(const_cast<uint8_t*>(map.data), map.size, map.owner);
  size_t offset = kHeaderBytes;
  auto next = [&](Shape shape) {
    Tensor t(std::move(shape), DType::F32, storage, offset);
    offset += t.nbytes();
    return t;
  };
  const int64_t C = h.dim, F = h.hidden_dim, L = h.n_layers, V = h.vocab_size, kv = h.kv_dim();
  ck.token_embedding = next({V, C});
  ck.rms_att = next({L, C});
  ck.wq = next({L, C, C});
  ck.wk = next({L, kv, C});
  ck.wv = next({L, kv, C});
  ck.wo = next({L, C, C});
  ck.rms_ffn = next({L, C});
  ck.w1 = next({L, F, C});
  ck.w2 = next({L, C, F});
  ck.w3 = next({L, F, C});
  ck.rms_final = next({C});
  ck.freq_cos = next({h.seq_len, h.head_size() / 2});
  ck.freq_sin = next({h.seq_len, h.head_size() / 2});
  ck.wcls = h.shared_classifier ? ck.token_embedding : next({V, C});
  QLORA_ASSERT(offset == map.size, "llama2c: consumed {} of {} bytes", offset, map.size);
  return ck;
}

}  // namespace qlora
