// Overflow-checked size arithmetic for the readers of untrusted files (safetensors, GGUF, PEFT,
// llama2.c, config.json). A crafted header can choose element counts whose byte size wraps
// around 2^64 to a small number, so a "size matches the file" check passes and the reads then run
// past the mapping; every such product and sum goes through these functions instead, and a result
// above kMaxCheckedSize (int64 max, so it also fits Shape, numel and size_t) is an Error naming
// the module and what was being sized. Tested in tests/unit/test_checked_size.cpp.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <span>
#include <string_view>

namespace qlora {

inline constexpr uint64_t kMaxCheckedSize = uint64_t(std::numeric_limits<int64_t>::max());

// a * b and a + b, or Error("[module] what: a x b overflows; expected at most kMaxCheckedSize").
// `what` names the file and the tensor/field in the message; it is only read on failure.
uint64_t checked_mul(uint64_t a, uint64_t b, std::string_view module, std::string_view what);
uint64_t checked_add(uint64_t a, uint64_t b, std::string_view module, std::string_view what);
// The product of all factors (1 for none), checked after each step; each factor must fit too.
uint64_t checked_product(std::span<const uint64_t> factors, std::string_view module, std::string_view what);
uint64_t checked_product(std::initializer_list<uint64_t> factors, std::string_view module, std::string_view what);
// The sum of all terms (0 for none), checked after each step.
uint64_t checked_sum(std::initializer_list<uint64_t> terms, std::string_view module, std::string_view what);

}  // namespace qlora
