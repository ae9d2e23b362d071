// The MPI Communicator (OpenMPI from Debian; launch with mpirun). Built into qlora_dist_mpi when
// CMake finds MPI; without it, make_mpi_communicator throws Error saying so. MPI is initialised on
// first use and finalised at exit; every collective checks its return code and throws Error naming
// the call. A collective that waits longer than QLORA_DIST_TIMEOUT_S (default 1800 s) for the
// other ranks ends the process with exit code 124, so a hung rank ends the job (mpirun already
// ends it when a rank dies). Tested over 2 ranks in tests/dist/dist_trainer.cpp.
#pragma once
#include <memory>

#include "dist/communicator.h"

namespace qlora {

// Whether this build has MPI.
bool mpi_available();
// COMM_WORLD of this process (MPI_Init_thread on first call); throws Error without MPI.
std::shared_ptr<Communicator> make_mpi_communicator();

}  // namespace qlora
