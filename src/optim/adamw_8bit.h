// The pieces of bitsandbytes' blockwise 8-bit optimizer state that tests need to see: the dynamic
// maps (create_dynamic_map) and the CPU kernel's block quantizer. Used by adamw_8bit.cpp; tested
// in tests/parity/test_optim_parity.cpp (maps and codes bit for bit against bitsandbytes 0.50.2).
#pragma once
#include <array>
#include <cstdint>

namespace qlora {

inline constexpr int64_t kOptim8bitBlock = 256;        // bnb's optimizer block size
inline constexpr int64_t kOptim8bitMinElements = 4096;  // bnb's min_8bit_size: smaller tensors keep f32 state

// bitsandbytes.functional.create_dynamic_map(signed, max_exponent_bits=7, total_bits=8), derived
// the way it derives it (torch.linspace in f32, midpoints, f32 scaling by 10^-k, sorted).
std::array<float, 256> create_dynamic_map(bool is_signed);
const std::array<float, 256>& dynamic_map_unsigned();  // create_dynamic_map(false), cached

// Quantizes x[0, n) (n <= 256, one block) against a sorted 256-entry code as bnb's CPU kernel
// (quantize_block in csrc/cpu_ops.cpp) does: absmax = max |x|; each x / absmax goes to the code at
// its binary-search position, moved one up when that neighbour is strictly closer. Returns absmax.
// An all-zero block maps to the code's zero.
float quantize_block_8bit(const float* x, int64_t n, const std::array<float, 256>& code, uint8_t* q);

}  // namespace qlora
