// Batch::target_count. See batch.h.
#include "model/batch.h"

#include <algorithm>

#include "core/ignore_index.h"

namespace qlora {

int64_t Batch::target_count() const {
  return int64_t(std::count_if(targets.begin(), targets.end(), [](int32_t t) { return t != kIgnoreIndex; }));
}

}  // namespace qlora
