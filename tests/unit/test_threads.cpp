// The CPU backend's thread count on a busy machine (backend/cpu/threads.h): the rule, and the
// governor reading /proc/stat with this test's own busy threads as the other load.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "backend/cpu/threads.h"

namespace qlora {
namespace {

TEST(ThreadsForLoad, FreeCpusWithinOneAndTheRequestedCount) {
  EXPECT_EQ(threads_for_load(2, 2, 0.0), 2);  // quiet
  EXPECT_EQ(threads_for_load(2, 2, 0.4), 2);  // a passing process
  EXPECT_EQ(threads_for_load(2, 2, 1.0), 1);  // one busy process on 2 cores
  EXPECT_EQ(threads_for_load(2, 2, 2.0), 1);  // one per core: never below 1
  EXPECT_EQ(threads_for_load(2, 2, 9.0), 1);
  EXPECT_EQ(threads_for_load(4, 64, 3.0), 4);  // a big host: never above what was asked
  EXPECT_EQ(threads_for_load(16, 16, 5.0), 11);
  EXPECT_EQ(threads_for_load(0, 2, 0.0), 1);
}

// As many spinning threads as the machine has CPUs are runnable at every sample, so whatever
// else runs beside the test, no CPU is free and the governor drops to one thread; with
// QLORA_FIT_THREADS=0 it leaves the count alone.
TEST(FitThreadsToLoad, DropsToOneThreadWhileEveryCpuIsBusy) {
  const int cpus = int(std::max(1u, std::thread::hardware_concurrency()));
  set_num_threads(cpus);
  std::atomic<bool> stop{false};
  std::vector<std::thread> busy;
  for (int i = 0; i < cpus; ++i)
    busy.emplace_back([&stop] {
      while (!stop.load(std::memory_order_relaxed)) {
      }
    });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  int n = 0;
  for (int i = 0; i < 4; ++i) n = fit_threads_to_load();
  EXPECT_EQ(n, 1);
  EXPECT_EQ(num_threads(), 1);
  setenv("QLORA_FIT_THREADS", "0", 1);
  set_num_threads(cpus);
  EXPECT_EQ(fit_threads_to_load(), cpus);
  unsetenv("QLORA_FIT_THREADS");
  stop = true;
  for (std::thread& t : busy) t.join();
  set_num_threads(cpus);
}

}  // namespace
}  // namespace qlora
