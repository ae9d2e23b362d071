// Thread count for the CPU kernels (OpenMP for our loops, OpenBLAS for GEMMs).
#pragma once

namespace qlora {

// Sets the number of threads used by OpenMP regions and OpenBLAS. n <= 0 means all cores.
void set_num_threads(int n);
int num_threads();

}  // namespace qlora
