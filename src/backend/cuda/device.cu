// CUDA backend entry points: device discovery. Kernels arrive with the CUDA backend issue.
#include <cuda_runtime.h>

#include <string>

#include "backend/cuda.h"

namespace qlora {

bool cuda_backend_built() { return true; }

std::string cuda_backend_info() {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) return std::string("CUDA backend built; no device: ") + cudaGetErrorString(err);
  std::string out = "CUDA backend built; " + std::to_string(count) + " device(s)";
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, i) == cudaSuccess) out += std::string("; ") + prop.name;
  }
  return out;
}

}  // namespace qlora
