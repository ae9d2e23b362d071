// MPI Communicator over MPI_COMM_WORLD. See dist/mpi_communicator.h.
#include "dist/mpi_communicator.h"

#include <mpi.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

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

// How long one collective may wait for the other ranks before this rank gives up (a rank that
// died is noticed by mpirun; one that hangs is not): QLORA_DIST_TIMEOUT_S, default 30 minutes,
// longer than any step or checkpoint save a rank waits out.
double collective_timeout_seconds() {
  const char* env = std::getenv("QLORA_DIST_TIMEOUT_S");
  if (!env || !*env) return 1800;
  char* end = nullptr;
  const double s = std::strtod(env, &end);
  if (*end != '\0' || !(s > 0)) fail("dist", "QLORA_DIST_TIMEOUT_S is '{}'; expected a number of seconds > 0", env);
  return s;
}

// MPI counts are int: calls `f(first, count)` over [0, n) in pieces MPI can count (INT_MAX / 8
// elements, so a piece's bytes stay within int too for types up to 8 bytes).
template <typename F>
void in_pieces(size_t n, F f) {
  for (size_t done = 0; done < n;) {
    const int count = int(std::min<size_t>(n - done, INT_MAX / 8));
    f(done, count);
    done += size_t(count);
  }
}

class MpiCommunicator final : public Communicator {
 public:
  MpiCommunicator() : timeout_s_(collective_timeout_seconds()) {
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
    watchdog_ = std::thread([this] { watch(); });
  }
  ~MpiCommunicator() override {
    stop_ = true;
    if (watchdog_.joinable()) watchdog_.join();
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  void all_reduce_sum(float* data, size_t n) override { reduce(data, n, MPI_FLOAT); }
  void all_reduce_sum(double* data, size_t n) override { reduce(data, n, MPI_DOUBLE); }
  void broadcast(void* data, size_t bytes, int root) override {
    const Waiting waiting(*this, "MPI_Bcast");
    auto* p = static_cast<unsigned char*>(data);
    in_pieces(bytes, [&](size_t first, int count) {
      check(MPI_Bcast(p + first, count, MPI_BYTE, root, MPI_COMM_WORLD), "MPI_Bcast");
    });
  }
  void start_all_reduce_sum(float* data, size_t n) override {
    in_pieces(n, [&](size_t first, int count) {
      pending_.emplace_back();
      check(MPI_Iallreduce(MPI_IN_PLACE, data + first, count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &pending_.back()),
            "MPI_Iallreduce");
    });
    // Without an asynchronous progress thread MPI moves non-blocking collectives on only inside
    // MPI calls: testing the ones in flight here lets them advance while the backward runs.
    int all_done = 0;
    check(MPI_Testall(int(pending_.size()), pending_.data(), &all_done, MPI_STATUSES_IGNORE), "MPI_Testall");
  }
  void wait_all() override {
    const Waiting waiting(*this, "MPI_Waitall");
    check(MPI_Waitall(int(pending_.size()), pending_.data(), MPI_STATUSES_IGNORE), "MPI_Waitall");
    pending_.clear();
  }
  void barrier() override {
    const Waiting waiting(*this, "MPI_Barrier");
    check(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier");
  }

 private:
  // Marks this rank as inside a collective for the watchdog, for the scope of the call.
  struct Waiting {
    Waiting(MpiCommunicator& c, const char* call) : comm(c) {
      comm.call_ = call;
      comm.since_ns_ = std::chrono::steady_clock::now().time_since_epoch().count();
    }
    ~Waiting() { comm.since_ns_ = 0; }
    MpiCommunicator& comm;
  };

  // A collective that has waited past the timeout ends this process (exit code 124): mpirun then
  // ends the whole job non-zero, where the ranks would otherwise wait forever on a hung one.
  void watch() {
    while (!stop_) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      const int64_t since = since_ns_;
      if (since == 0) continue;
      const double waited =
          double(std::chrono::steady_clock::now().time_since_epoch().count() - since) * 1e-9;
      if (waited > timeout_s_) {
        std::fprintf(stderr,
                     "[dist] rank %d: %s has waited %.0f s for the other ranks (QLORA_DIST_TIMEOUT_S %.0f): a rank "
                     "died or hangs; ending the job\n",
                     rank_, call_.load(), waited, timeout_s_);
        std::fflush(stderr);
        std::_Exit(124);
      }
    }
  }

  template <typename T>
  void reduce(T* data, size_t n, MPI_Datatype type) {
    const Waiting waiting(*this, "MPI_Allreduce");
    in_pieces(n, [&](size_t first, int count) {
      check(MPI_Allreduce(MPI_IN_PLACE, data + first, count, type, MPI_SUM, MPI_COMM_WORLD), "MPI_Allreduce");
    });
  }
  int rank_ = 0, size_ = 1;
  const double timeout_s_;
  std::atomic<int64_t> since_ns_{0};  // when the current collective began (steady clock), 0 = none
  std::atomic<const char*> call_{""};
  std::atomic<bool> stop_{false};
  std::thread watchdog_;
  std::vector<MPI_Request> pending_;  // started by start_all_reduce_sum, completed by wait_all
};

}  // namespace

bool mpi_available() { return true; }

std::shared_ptr<Communicator> make_mpi_communicator() {
  static std::shared_ptr<Communicator> world = std::make_shared<MpiCommunicator>();
  return world;
}

}  // namespace qlora
