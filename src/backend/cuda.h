// The optional CUDA backend's entry points. Built from backend/cuda/ when QLORA_CUDA=ON; otherwise
// a stub translation unit (backend/cuda_stub/) answers "no GPU backend" without #ifdefs in callers.
#pragma once
#include <string>

namespace qlora {

bool cuda_backend_built();
// A one-line description of the CUDA devices, or why there are none.
std::string cuda_backend_info();

}  // namespace qlora
