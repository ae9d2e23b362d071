// QuantTensor: a frozen weight stored block-wise in 4 bits (NF4 or FP4) as bitsandbytes stores it:
// packed codes (two per byte, high nibble = first element), one absmax per block of `block_size`
// elements (f32, or double-quantized: u8 codes into the 8-bit dynamic map + one f32 absmax per
// 256 constants + the mean offset). Logical shape (N, K) row-major like the f32 weight it replaces.
#pragma once
#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace qlora {

// NF4 and FP4 as bitsandbytes; INT4 = symmetric absmax int4 (round(7·x/absmax), codes k/7), the
// uniform baseline the QLoRA paper compares NF4 against at equal bits (not a bitsandbytes type).
enum class QuantType : uint8_t { NF4, FP4, INT4 };

struct QuantTensor {
  QuantType type = QuantType::NF4;
  Shape shape;                  // logical shape, e.g. (N, K)
  int64_t block_size = 64;      // elements per absmax
  std::vector<uint8_t> codes;   // ceil(numel / 2) bytes
  // Without double quantization: absmax (n_blocks) f32.
  std::vector<float> absmax;
  // With double quantization (bitsandbytes compress_statistics): absmax is stored as
  //   absmax[i] = dynamic_map[absmax_codes[i]] * nested_absmax[i / nested_block_size] + offset
  bool double_quant = false;
  std::vector<uint8_t> absmax_codes;   // (n_blocks)
  std::vector<float> nested_absmax;    // (ceil(n_blocks / nested_block_size))
  int64_t nested_block_size = 256;
  float offset = 0.0f;                 // mean of the absmax values, subtracted before quantizing

  int64_t numel() const { return shape_numel(shape); }
  int64_t n_blocks() const { return (numel() + block_size - 1) / block_size; }
  // Storage in bits per parameter, counting codes and constants (≈ 4.5 for block 64; ≈ 4.127 with
  // double quantization).
  double bits_per_param() const;
};

}  // namespace qlora
