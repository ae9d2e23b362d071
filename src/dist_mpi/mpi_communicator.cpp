// MPI Communicator over MPI_COMM_WORLD. See dist/mpi_communicator.h.
#include "dist/mpi_communicator.h"

#include <mpi.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstdlib>

#include "core/error.h"

namespace qlora {
namespace {

void check(int rc, const char* call) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, text, &len);
  fail("dist", "{} failed: {}", call, std::string(text, size_t(len)));
}

class MpiCommunicator final : public Communicator {
 public:
  MpiCommunicator() {
    int initialized = 0;
    check(MPI_Initialized(&initialized), "MPI_Initialized");
    if (!initialized) {
      int provided = 0;
      // FUNNELED: only the thread that made the communicator calls MPI (OpenMP workers never do).
      check(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
      std::atexit([] {
        int finalized = 0;
        MPI_Finalized(&finalized);
        if (!finalized) MPI_Finalize();
      });
    }
    // Errors come back as codes (check() turns them into Error) instead of aborting the job.
    check(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
    check(MPI_Comm_rank(MPI_COMM_WORLD, &rank_), "MPI_Comm_rank");
    check(MPI_Comm_size(MPI_COMM_WORLD, &size_), "MPI_Comm_size");
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  void all_reduce_sum(float* data, size_t n) override { reduce(data, n, MPI_FLOAT); }
  void all_reduce_sum(double* data, size_t n) override { reduce(data, n, MPI_DOUBLE); }
  void broadcast(void* data, size_t bytes, int root) override {
    auto* p = static_cast<unsigned char*>(data);
    for (size_t done = 0; done < bytes;) {
      const int chunk = int(std::min<size_t>(bytes - done, INT_MAX));
      check(MPI_Bcast(p + done, chunk, MPI_BYTE, root, MPI_COMM_WORLD), "MPI_Bcast");
      done += size_t(chunk);
    }
  }
  void barrier() override { check(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier"); }

 private:
  template <typename T>
  void reduce(T* data, size_t n, MPI_Datatype type) {
    // MPI counts are int: large buffers go in chunks.
    for (size_t done = 0; done < n;) {
      const int chunk = int(std::min<size_t>(n - done, INT_MAX / 8));
      check(MPI_Allreduce(MPI_IN_PLACE, data + done, chunk, type, MPI_SUM, MPI_COMM_WORLD), "MPI_Allreduce");
      done += size_t(chunk);
    }
  }
  int rank_ = 0, size_ = 1;
};

}  // namespace

bool mpi_available() { return true; }

std::shared_ptr<Communicator> make_mpi_communicator() {
  static std::shared_ptr<Communicator> world = std::make_shared<MpiCommunicator>();
  return world;
}

}  // namespace qlora
