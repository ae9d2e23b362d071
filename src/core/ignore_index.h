// The label that means "no loss here": prompt tokens under response-only loss, padding, and the
// last position of a sequence. PyTorch's CrossEntropyLoss ignore_index, so label arrays written by
// transformers' collators mean the same to us. Tested in tests/data/test_example_encoder.cpp and
// tests/unit/test_train_ops.cpp.
#pragma once
#include <cstdint>

namespace qlora {

inline constexpr int32_t kIgnoreIndex = -100;

}  // namespace qlora
