// QuantTensor storage accounting. Tested in tests/quant/test_nf4.cpp (bits_per_param).
#include "core/quant_tensor.h"

namespace qlora {

double QuantTensor::bits_per_param() const {
  const int64_t n = numel();
  if (n == 0) return 0.0;
  auto bytes = [](const Tensor& t) { return t.defined() ? double(t.nbytes()) : 0.0; };
  double bits = bytes(codes) * 8.0;
  if (double_quant) {
    bits += bytes(absmax_codes) * 8.0 + bytes(nested_absmax) * 8.0 + 32.0;  // + offset
  } else {
    bits += bytes(absmax) * 8.0;
  }
  return bits / double(n);
}

}  // namespace qlora
