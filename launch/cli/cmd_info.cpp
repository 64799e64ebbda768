// bfm info: what this build can do on this machine.
#include <iostream>

#include <CLI/CLI.hpp>

#include "launch/cli/commands.h"
#include "runtime/blas_core.h"
#include "runtime/device.h"

namespace bfm::launch {

Command add_info_command(CLI::App& app) {
  app.add_subcommand("info", "Print the version, build options and the devices found");
  return [] {
    std::cout << "bfm " << BFM_VERSION << "\n";
#ifdef BFM_WITH_MPI
    std::cout << "mpi: yes\n";
#else
    std::cout << "mpi: no\n";
#endif
#ifdef BFM_WITH_HDF5
    std::cout << "hdf5: yes\n";
#else
    std::cout << "hdf5: no\n";
#endif
#ifdef BFM_WITH_CUDA
    std::cout << "cuda: built\n";
#else
    std::cout << "cuda: not built\n";
#endif
    std::cout << "blas core: " << runtime::blas_core_name() << "\n";
    std::cout << "devices: " << runtime::describe_devices() << std::endl;
    return 0;
  };
}

}  // namespace bfm::launch
