// Built without MPI (CMake found none): the MPI Communicator reports that. See dist/mpi_communicator.h.
#include "core/error.h"
#include "dist/mpi_communicator.h"

namespace qlora {

bool mpi_available() { return false; }

std::shared_ptr<Communicator> make_mpi_communicator() {
  fail("dist", "this build has no MPI: install libopenmpi-dev and rebuild to train across processes");
}

}  // namespace qlora
