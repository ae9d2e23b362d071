// create_dynamic_map: bitsandbytes' 8-bit dynamic maps derived as bitsandbytes derives them (see
// codebooks.h). Unlike codebooks.cpp this file keeps the compiler's default FMA contraction: the
// map's linspace (start + step * i) must contract as ATen's vectorised kernel does to give
// bitsandbytes' values bit for bit (tests/parity/test_optim_parity.cpp).
#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.h"
#include "quant/codebooks.h"

namespace qlora {

namespace {

// torch.linspace(start, end, steps, dtype=float32) on CPU: a f32 step, the first half counted up
// from start and the second half down from end (ATen's RangeFactoriesKernel).
std::vector<float> linspace_f32(float start, float end, int64_t steps) {
  std::vector<float> out(static_cast<size_t>(steps));
  const float step = (end - start) / float(steps - 1);
  const int64_t halfway = steps / 2;
  for (int64_t i = 0; i < steps; ++i)
    out[size_t(i)] = i < halfway ? start + step * float(i) : end - step * float(steps - i - 1);
  return out;
}

}  // namespace

std::array<float, 256> create_dynamic_map(bool is_signed) {
  constexpr int kMaxExponentBits = 7, kNonSignBits = 7;
  std::vector<float> data;
  for (int i = 0; i < kMaxExponentBits; ++i) {
    const int64_t fraction_items = is_signed ? (int64_t(1) << (i + kNonSignBits - kMaxExponentBits)) + 1
                                             : (int64_t(1) << (i + kNonSignBits - kMaxExponentBits + 1)) + 1;
    const std::vector<float> bounds = linspace_f32(0.1f, 1.0f, fraction_items);
    // Python: (10 ** (-(7 - 1) + i)) * means, the scalar rounded to f32 by ATen before the multiply.
    const float scale = float(std::pow(10.0, double(-(kMaxExponentBits - 1) + i)));
    for (size_t k = 0; k + 1 < bounds.size(); ++k) {
      const float mean = (bounds[k] + bounds[k + 1]) / 2.0f;
      data.push_back(scale * mean);
      if (is_signed) data.push_back(-(scale * mean));
    }
  }
  // additional_items = 2^(7 - 7) - 1 = 0: nothing more.
  data.push_back(0.0f);
  data.push_back(1.0f);
  QLORA_ASSERT(data.size() == 256, "dynamic map has {} values", data.size());
  std::sort(data.begin(), data.end());
  std::array<float, 256> out{};
  std::copy(data.begin(), data.end(), out.begin());
  return out;
}

const std::array<float, 256>& dynamic_map_unsigned() {
  static const std::array<float, 256> map = create_dynamic_map(false);
  return map;
}

}  // namespace qlora
