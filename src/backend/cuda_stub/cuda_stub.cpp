// Linked when QLORA_CUDA=OFF: reports that there is no GPU backend.
#include "backend/cuda.h"

namespace qlora {

bool cuda_backend_built() { return false; }
std::string cuda_backend_info() { return "no GPU backend (built with QLORA_CUDA=OFF)"; }

}  // namespace qlora
