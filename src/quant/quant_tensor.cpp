// QuantTensor storage accounting. Tested in tests/quant/test_nf4.cpp (bits_per_param).
#include "quant/quant_tensor.h"

namespace qlora {

double QuantTensor::bits_per_param() const {
  const int64_t n = numel();
  if (n == 0) return 0.0;
  double bits = double(codes.size()) * 8.0;
  if (double_quant) {
    bits += double(absmax_codes.size()) * 8.0 + double(nested_absmax.size()) * 32.0 + 32.0;  // + offset
  } else {
    bits += double(absmax.size()) * 32.0;
  }
  return bits / double(n);
}

}  // namespace qlora
