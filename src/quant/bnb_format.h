// bitsandbytes 4-bit checkpoints as transformers saves them (save_pretrained of a model loaded with
// BitsAndBytesConfig(load_in_4bit=True)): every quantized linear `X.weight` becomes the tensors of
// bitsandbytes' QuantState.as_dict(packed=True):
//   X.weight                              u8 (ceil(numel/2), 1)  packed codes, high nibble first
//   X.weight.absmax                       f32 (n_blocks), or u8 (n_blocks) codes with double quant
//   X.weight.quant_map                    f32 (16)   the NF4 / FP4 code values
//   X.weight.nested_absmax                f32 (ceil(n_blocks / 256))      } double quant only
//   X.weight.nested_quant_map             f32 (256)  the dynamic 8-bit map }
//   X.weight.quant_state.bitsandbytes__nf4 (or __fp4)  u8: JSON {"quant_type", "blocksize", "dtype",
//       "shape", and with double quant "nested_blocksize", "nested_dtype", "nested_offset"}, written
//       exactly as Python's json.dumps writes it (", " and ": " separators, float repr).
// The reader checks the code maps against ours and every size against the JSON; the writer makes
// the same keys and bytes, so each side loads the other's files. Tested in
// tests/quant/test_bnb_checkpoint.cpp against a checkpoint transformers 5.23 + bitsandbytes 0.50.2
// wrote (tests/quant/golden/make_bnb_checkpoint_golden.py, which also loads ours back).
#pragma once
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "io/safetensors.h"
#include "core/quant_tensor.h"

namespace qlora {

// A 4-bit weight and the dtype bitsandbytes dequantizes it to ("float32", "bfloat16", "float16").
struct BnbWeight {
  QuantTensor q;
  std::string dtype = "float32";
};

// Names (`X.weight`) of the 4-bit weights in a file: those with a quant_state.bitsandbytes__ entry.
std::vector<std::string> bnb_4bit_names(const SafetensorsFile& file);
// True for the tensors that belong to a 4-bit weight's state (absmax, quant_map, ...), not the
// weight itself: what a loader skips when it lists a file's dense tensors.
bool is_bnb_state_key(const std::string& key);

// True when `name` (`X.weight`) is stored as a bitsandbytes 4-bit weight (has a quant_state entry).
bool is_bnb_4bit_weight(const SafetensorsFile& file, const std::string& name);
// One 4-bit weight. Throws Error naming the file and tensor on a missing or inconsistent part.
BnbWeight read_bnb_4bit(const SafetensorsFile& file, const std::string& name);
// A 4-bit weight's quant_state alone (type, block sizes, dtype, shape), validated; no data read.
BnbWeight read_bnb_4bit_header(const SafetensorsFile& file, const std::string& name);
// Drops the mapped pages of a 4-bit weight's codes and constants (after read_bnb_4bit copied them).
void release_bnb_4bit(const SafetensorsFile& file, const std::string& name);
// Every 4-bit weight in the file, by name.
std::map<std::string, BnbWeight> read_bnb_quantized(const SafetensorsFile& file);

// The packed quant_state JSON, byte for byte as bitsandbytes writes it.
std::string bnb_quant_state_json(const QuantTensor& q, const std::string& dtype = "float32");
// The tensors for `name` in QuantState.as_dict(packed=True) order, weight first.
std::vector<std::pair<std::string, Tensor>> bnb_4bit_tensors(const std::string& name, const BnbWeight& w);

// Streaming: declares the tensors of a 4-bit weight of `shape` (bnb_4bit_tensors' order, the
// quant_state JSON deferred with a bound on its length), then writes them once it is quantized.
void declare_bnb_4bit(const std::string& name, const Shape& shape, QuantType type, int64_t block_size,
                      bool double_quant, const std::string& dtype,
                      std::vector<SafetensorsStreamWriter::Entry>& entries,
                      std::vector<SafetensorsStreamWriter::Deferred>& deferred);
void write_bnb_4bit(SafetensorsStreamWriter& writer, const std::string& name, const BnbWeight& w);

// Writes the 4-bit weights (bnb layout) and the dense tensors to one safetensors file, atomically,
// all sorted by name (as transformers' save_pretrained lists them), metadata {"format": "pt"}.
void write_bnb_quantized(const std::string& path, const std::map<std::string, BnbWeight>& quantized,
                         const std::vector<std::pair<std::string, Tensor>>& dense);

}  // namespace qlora
