// The single-process Communicator. See communicator.h.
#include "dist/communicator.h"

namespace qlora {
namespace {

class LocalCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  void all_reduce_sum(float*, size_t) override {}
  void all_reduce_sum(double*, size_t) override {}
  void start_all_reduce_sum(float*, size_t) override {}
  void wait_all() override {}
  void broadcast(void*, size_t, int) override {}
  void barrier() override {}
};

}  // namespace

std::shared_ptr<Communicator> make_local_communicator() { return std::make_shared<LocalCommunicator>(); }

}  // namespace qlora
