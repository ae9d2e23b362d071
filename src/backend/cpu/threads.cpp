// Thread control shared by OpenMP and OpenBLAS, so one --threads flag governs both.
#include "backend/cpu/threads.h"

#include <omp.h>

#include <unistd.h>

#include <cstdlib>
#include <thread>

extern "C" void openblas_set_num_threads(int);

namespace qlora {

void set_num_threads(int n) {
  if (n <= 0) n = int(std::thread::hardware_concurrency());
  if (n <= 0) n = 1;
  omp_set_num_threads(n);
  openblas_set_num_threads(n);
}

int num_threads() { return omp_get_max_threads(); }

void prefer_passive_omp_wait(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") || std::getenv("GOMP_SPINCOUNT")) return;
  if (setenv("OMP_WAIT_POLICY", "PASSIVE", 1) != 0) return;
  execv("/proc/self/exe", argv);  // returns only on failure: carry on with the spinning default
}

}  // namespace qlora
