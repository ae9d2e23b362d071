// Internal-invariant failures: reported as Error so the CLI still exits cleanly with a message.
#include "core/error.h"

namespace qlora {

void assert_failed(const char* expr, const char* file, int line, const std::string& msg) {
  throw Error(fmt::format("[internal] assertion `{}` failed at {}:{}{}{}", expr, file, line,
                          msg.empty() ? "" : ": ", msg));
}

}  // namespace qlora
