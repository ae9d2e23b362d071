// Overflow-checked size arithmetic; see checked_size.h.
#include "core/checked_size.h"

#include "core/error.h"

namespace qlora {

uint64_t checked_mul(uint64_t a, uint64_t b, std::string_view module, std::string_view what) {
  uint64_t r = 0;
  if (__builtin_mul_overflow(a, b, &r) || r > kMaxCheckedSize)
    fail(module, "{}: size {} x {} overflows; expected at most {}", what, a, b, kMaxCheckedSize);
  return r;
}

uint64_t checked_add(uint64_t a, uint64_t b, std::string_view module, std::string_view what) {
  uint64_t r = 0;
  if (__builtin_add_overflow(a, b, &r) || r > kMaxCheckedSize)
    fail(module, "{}: size {} + {} overflows; expected at most {}", what, a, b, kMaxCheckedSize);
  return r;
}

uint64_t checked_product(std::span<const uint64_t> factors, std::string_view module, std::string_view what) {
  uint64_t r = 1;
  for (uint64_t f : factors) {
    // A zero factor makes the product 0 whatever follows, but each factor must still fit int64
    // on its own (it becomes a Shape dimension).
    if (f > kMaxCheckedSize) fail(module, "{}: size {} exceeds {}", what, f, kMaxCheckedSize);
    r = checked_mul(r, f, module, what);
  }
  return r;
}

uint64_t checked_product(std::initializer_list<uint64_t> factors, std::string_view module, std::string_view what) {
  return checked_product(std::span<const uint64_t>(factors.begin(), factors.size()), module, what);
}

uint64_t checked_sum(std::initializer_list<uint64_t> terms, std::string_view module, std::string_view what) {
  uint64_t r = 0;
  for (uint64_t t : terms) r = checked_add(r, t, module, what);
  return r;
}

}  // namespace qlora
