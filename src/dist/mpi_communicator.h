// The MPI Communicator (OpenMPI from Debian; launch with mpirun). Built into qlora_dist_mpi when
// CMake finds MPI; without it, make_mpi_communicator throws Error saying so. MPI is initialised on
// first use and finalised at exit; every collective checks its return code and throws Error naming
// the call. Tested over 2 ranks in tests/dist/test_dist_trainer.cpp.
#pragma once
#include <memory>

#include "dist/communicator.h"

namespace qlora {

// Whether this build has MPI.
bool mpi_available();
// COMM_WORLD of this process (MPI_Init_thread on first call); throws Error without MPI.
std::shared_ptr<Communicator> make_mpi_communicator();

}  // namespace qlora
