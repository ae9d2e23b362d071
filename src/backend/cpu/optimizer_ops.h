// Optimizer kernels on the CPU, on one page of state at a time (the optimizers in optim/ walk the
// pages and derive the scalars): AdamW as torch computes it on CPU (AVX2 lanes, the scalar loop's
// operations), 8-bit AdamW as bitsandbytes' CPU backend (blockwise dynamic-map state, requantized
// with the new block absmax), bitsandbytes' 32-bit update, and the gradient reductions of
// clipping and the NaN guard. OpenMP above 16K elements.
// Tested in tests/parity/test_optim_parity.cpp (against torch and bitsandbytes) and
// tests/unit/test_optim.cpp.
#pragma once
#include <array>
#include <cstdint>

#include "backend/backend.h"

namespace qlora::cpu {

void adamw_step(float* p, const float* g, float* m, float* v, int64_t n, const AdamWScalars& k);
void adamw8bit_step(float* p, const float* g, uint8_t* q1, uint8_t* q2, float* absmax1, float* absmax2, int64_t n,
                    const DynamicMaps& maps, const AdamW8bitScalars& k);
void adamw32bit_bnb_step(float* p, const float* g, float* m, float* v, int64_t n, const AdamW8bitScalars& k);

// Quantizes x[0, n) (n <= 256, one block) against a sorted 256-entry code by the rule of
// bitsandbytes' CUDA optimizer kernel (kOptimizerStatic8bit2StateBlockwise, quantize_2D): absmax
// = max |x|, and x / absmax takes kernel_code_8bit's code (quantize.h: the nearest by f32
// midpoints; a tie keeps the bisection's pivot). The kernel divides with __fdividef (approximate)
// where we divide exactly. An all-zero block maps to the code's zero. Returns absmax.
float quantize_block_8bit(const float* x, int64_t n, const float* code, uint8_t* q);

double sum_squares(const float* x, int64_t n);
bool all_finite(const float* x, int64_t n);
void scale(float* x, int64_t n, float factor);

}  // namespace qlora::cpu
