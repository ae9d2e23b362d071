// Errors: exceptions for bad input ("[module] what; expected X, got Y"), an assert macro for
// internal invariants. The library never calls exit(); the CLI catches Error and exits non-zero.
#pragma once
#include <fmt/format.h>
#include <stdexcept>
#include <string>

namespace qlora {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Throws Error("[module] message").
template <typename... Args>
[[noreturn]] void fail(std::string_view module, fmt::format_string<Args...> format, Args&&... args) {
  throw Error(fmt::format("[{}] {}", module, fmt::format(format, std::forward<Args>(args)...)));
}

[[noreturn]] void assert_failed(const char* expr, const char* file, int line, const std::string& msg);

}  // namespace qlora

// Internal invariant: a failure is a bug in qlora, not in the user's input.
#define QLORA_ASSERT(cond, ...)                                                              \
  do {                                                                                       \
    if (!(cond)) ::qlora::assert_failed(#cond, __FILE__, __LINE__, ::fmt::format("" __VA_ARGS__)); \
  } while (0)
