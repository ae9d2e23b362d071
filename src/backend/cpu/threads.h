// Thread count for the CPU kernels (OpenMP for our loops, OpenBLAS for GEMMs).
#pragma once

namespace qlora {

// Sets the number of threads used by OpenMP regions and OpenBLAS. n <= 0 means all cores.
void set_num_threads(int n);
int num_threads();

}  // namespace qlora

namespace qlora {

// OpenMP workers that spin while they wait for work take the cores other processes need, and a
// barrier then waits on a descheduled thread: beside two busy processes on 2 cores, a QLoRA step
// ran at 8 tok/s with libgomp's default spinning and 99.8 with OMP_WAIT_POLICY=PASSIVE (quiet:
// within noise of each other; docs/benchmarks.md). libgomp reads the policy once, when it loads,
// so a program's main calls this first: with neither OMP_WAIT_POLICY nor GOMP_SPINCOUNT set, it
// sets OMP_WAIT_POLICY=PASSIVE and re-executes the program (/proc/self/exe) with the same
// arguments. A user's own setting is left alone. Returns normally when nothing is to be done or
// the re-exec is impossible.
void prefer_passive_omp_wait(char** argv);

}  // namespace qlora
