// Communicator: what data-parallel training needs from the processes it runs in (rank, size,
// in-place all-reduce of a flat buffer, broadcast, barrier). The trainer is handed one; there is no
// global state. make_local_communicator() is the single process (rank 0 of 1: every collective is
// the identity); dist/mpi_communicator.h gives the MPI one, and NCCL drops in behind the same
// interface. Tested in tests/unit/test_communicator.cpp and, over MPI, tests/dist/.
#pragma once
#include <cstddef>
#include <memory>

namespace qlora {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // Element-wise sum over the ranks, in place; every rank gets the sum. (MPI recommends, but does
  // not promise, the same bits on every rank; the trainer checks that its replicas stay identical.)
  virtual void all_reduce_sum(float* data, size_t n) = 0;
  virtual void all_reduce_sum(double* data, size_t n) = 0;
  // Non-blocking sum: starts it and returns; the buffer must not be touched until wait_all(),
  // which completes every sum started. Every rank must start the same sums in the same order.
  virtual void start_all_reduce_sum(float* data, size_t n) = 0;
  virtual void wait_all() = 0;
  // `bytes` from rank `root` to every rank.
  virtual void broadcast(void* data, size_t bytes, int root) = 0;
  virtual void barrier() = 0;
};

std::shared_ptr<Communicator> make_local_communicator();

}  // namespace qlora
