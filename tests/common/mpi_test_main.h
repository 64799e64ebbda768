// The main() of a GoogleTest program run under mpirun: MPI up first (runtime::world(), a world of one without
// mpirun), only rank 0 prints, and the program fails on every rank when a test failed on any.
#pragma once

#include <gtest/gtest.h>

#include "runtime/world.h"

#ifdef BFM_WITH_MPI
#include <mpi.h>
#endif

namespace bfm::test {

inline int run_mpi_tests(int argc, char** argv) {
  const bfm::runtime::World& world = bfm::runtime::world();  // MPI_Init_thread where built; finalised at exit
  ::testing::InitGoogleTest(&argc, argv);
  if (world.rank != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  int failed = RUN_ALL_TESTS() != 0;
#ifdef BFM_WITH_MPI
  MPI_Allreduce(MPI_IN_PLACE, &failed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
#endif
  return failed;
}

}  // namespace bfm::test
