// Thread control shared by OpenMP and OpenBLAS, so one --threads flag governs both.
#include "backend/cpu/threads.h"

#include <omp.h>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <string>
#include <string_view>
#include <thread>

extern "C" void openblas_set_num_threads(int);

namespace qlora {

namespace {

// What set_num_threads asked for (0: not called yet, then all cores), and the smoothed count of
// other runnable tasks (negative: no sample yet).
int requested_threads = 0;
double other_runnable = -1;

void apply_threads(int n) {
  omp_set_num_threads(n);
  openblas_set_num_threads(n);
}

int all_cores() {
  const int n = int(std::thread::hardware_concurrency());
  return n > 0 ? n : 1;
}

// procs_running from /proc/stat: tasks runnable now, this one included; -1 when unreadable.
int procs_running() {
  std::ifstream in("/proc/stat");
  std::string key;
  while (in >> key) {
    if (key == "procs_running") {
      int n = -1;
      in >> n;
      return n;
    }
    in.ignore(std::numeric_limits<std::streamsize>::max(), '\n');
  }
  return -1;
}

}  // namespace

void set_num_threads(int n) {
  if (n <= 0) n = all_cores();
  requested_threads = n;
  apply_threads(n);
}

int num_threads() { return omp_get_max_threads(); }

int threads_for_load(int requested, int online_cpus, double other_runnable) {
  const long free_cpus = std::lround(double(online_cpus) - other_runnable);
  return int(std::clamp<long>(free_cpus, 1, std::max(requested, 1)));
}

int fit_threads_to_load() {
  if (requested_threads <= 0) requested_threads = num_threads();
  const char* off = std::getenv("QLORA_FIT_THREADS");
  if (off && std::string_view(off) == "0") return num_threads();
  const int running = procs_running();
  if (running < 1) return num_threads();  // no /proc: leave the count alone
  const double sample = double(running - 1);
  // Half of each new sample: a process that shows up for one sample costs no thread.
  other_runnable = other_runnable < 0 ? sample : 0.5 * other_runnable + 0.5 * sample;
  const int n = threads_for_load(requested_threads, all_cores(), other_runnable);
  if (n != num_threads()) apply_threads(n);
  return n;
}

void prefer_passive_omp_wait(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") || std::getenv("GOMP_SPINCOUNT")) return;
  if (setenv("OMP_WAIT_POLICY", "PASSIVE", 1) != 0) return;
  execv("/proc/self/exe", argv);  // returns only on failure: carry on with the spinning default
}

}  // namespace qlora
