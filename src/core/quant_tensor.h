// QuantTensor: a frozen weight stored block-wise in 4 bits (NF4 or FP4) as bitsandbytes stores it:
// packed codes (two per byte, high nibble = first element), one absmax per block of `block_size`
// elements (f32, or double-quantized: u8 codes into the 8-bit dynamic map + one f32 absmax per
// 256 constants + the mean offset), and the code tables the kernels read (bitsandbytes'
// quant_map and nested_quant_map). Logical shape (O, K) row-major like the f32 weight it
// replaces. Every part is a Tensor, so a QuantTensor lives on a device like any weight
// (Backend::to_device). Built by quant/nf4.h; tested in tests/quant/test_nf4.cpp.
#pragma once
#include <cstdint>

#include "core/tensor.h"

namespace qlora {

// NF4 and FP4 as bitsandbytes; INT4 = symmetric absmax int4 (round(7·x/absmax), codes k/7), the
// uniform baseline the QLoRA paper compares NF4 against at equal bits (not a bitsandbytes type).
enum class QuantType : uint8_t { NF4, FP4, INT4 };

struct QuantTensor {
  QuantType type = QuantType::NF4;
  Shape shape;                  // logical shape, e.g. (O, K)
  int64_t block_size = 64;      // elements per absmax
  Tensor codes;                 // u8 (ceil(numel / 2))
  Tensor code;                  // f32 (16): the value of each 4-bit code
  // Without double quantization: absmax f32 (n_blocks).
  Tensor absmax;
  // With double quantization (bitsandbytes compress_statistics): absmax is stored as
  //   absmax[i] = nested_code[absmax_codes[i]] * nested_absmax[i / nested_block_size] + offset
  bool double_quant = false;
  Tensor absmax_codes;          // u8 (n_blocks)
  Tensor nested_absmax;         // f32 (ceil(n_blocks / nested_block_size))
  Tensor nested_code;           // f32 (256): the signed 8-bit dynamic map
  int64_t nested_block_size = 256;
  float offset = 0.0f;          // mean of the absmax values, subtracted before quantizing

  int64_t numel() const { return shape_numel(shape); }
  int64_t n_blocks() const { return (numel() + block_size - 1) / block_size; }
  Device device() const { return codes.device(); }
  bool on_host() const { return codes.on_host(); }
  // Storage in bits per parameter, counting codes and constants (≈ 4.5 for block 64; ≈ 4.127 with
  // double quantization); the two code tables are shared constants and not counted.
  double bits_per_param() const;
};

}  // namespace qlora
