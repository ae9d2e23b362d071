// Code values of the quantized data types, bit for bit as bitsandbytes defines them: NF4 and FP4
// (4-bit, index = nibble) and the signed 8-bit dynamic map used for double quantization.
// Plus the rounding tables: bitsandbytes maps a scaled value v in [-1, 1] to the code whose
// sorted position is #{bounds < v}, bounds being the f32 midpoints between neighbouring sorted
// code values (torch.bucketize(v, bounds), right=False): a value exactly on a midpoint takes the
// lower code. Tested in tests/quant/test_codebooks.cpp and test_bnb_golden.cpp.
#pragma once
#include <array>
#include <cstdint>

#include "quant/quant_tensor.h"

namespace qlora {

extern const std::array<float, 16> kNf4Code;       // get_4bit_type("nf4")
extern const std::array<float, 16> kFp4Code;       // get_4bit_type("fp4")
extern const std::array<float, 256> kDynamicCode;  // create_dynamic_map(signed=True)
extern const std::array<float, 16> kInt4Code;      // (i - 8) / 7: absmax int4; -8/7 is never chosen

const std::array<float, 16>& code_4bit(QuantType type);

// Sorted-code midpoints and the code index of each sorted position.
template <int N>
struct CodeBounds {
  std::array<float, N - 1> bounds{};
  std::array<uint8_t, N> order{};

  // The code index for a scaled value (finite, in [-1, 1]).
  uint8_t encode(float v) const {
    int lo = 0, hi = N - 1;  // first bound >= v, by binary search over [lo, hi)
    while (lo < hi) {
      int mid = (lo + hi) / 2;
      if (bounds[mid] < v) lo = mid + 1;
      else hi = mid;
    }
    return order[lo];
  }
};

const CodeBounds<16>& bounds_4bit(QuantType type);
const CodeBounds<256>& bounds_dynamic();

}  // namespace qlora
