// Thread count for the CPU kernels (OpenMP for our loops, OpenBLAS for GEMMs).
#pragma once

namespace qlora {

// Sets the number of threads used by OpenMP regions and OpenBLAS. n <= 0 means all cores. It is
// also the most fit_threads_to_load will use.
void set_num_threads(int n);
int num_threads();

// On a busy machine fewer threads are faster. Every parallel region ends in a barrier, and with
// other processes on the cores one of our threads is often descheduled there, so the others wait
// a time slice: beside two busy processes on 2 cores a QLoRA bf16 step with 2 threads ran at 16%
// of its quiet speed, with 1 thread at 62-69% (one thread alone, quiet: 85-90% of two).
// fit_threads_to_load, called between steps on the thread that runs them, sets the thread count
// to the CPUs that other runnable tasks leave free (`procs_running` in /proc/stat, less this
// thread, smoothed over calls), at least 1 and at most set_num_threads' count.
// Tasks at low priority (nice) count as load too, though they would yield: beside only such
// tasks it takes fewer threads than it could. QLORA_FIT_THREADS=0 turns it off (a fixed count).
// Returns the count now set.
int fit_threads_to_load();
// The rule: CPUs online less the other runnable tasks (rounded), within [1, requested].
int threads_for_load(int requested, int online_cpus, double other_runnable);

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
