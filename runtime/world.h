// The set of processes a command runs on: the MPI world under mpirun or srun, a world of one otherwise (a build
// without MPI, or a plain `bfm ...` that Open MPI starts as a singleton). MPI starts on first use, so commands that
// never need it (init, forward, config, info) never pay for it, and it is finalised at exit.
#pragma once

#ifdef BFM_WITH_MPI
#include <mpi.h>
#endif

namespace bfm::runtime {

struct World {
  int rank = 0;
  int size = 1;
  int local_rank = 0;  // this process's rank among those on its node (picks its GPU)
  int local_size = 1;
#ifdef BFM_WITH_MPI
  MPI_Comm comm = MPI_COMM_WORLD;
#endif
};

// Starts MPI (MPI_THREAD_FUNNELED) on the first call.
const World& world();

// Whether world() has been called (and so MPI, where built, is running).
bool world_started();

// This process's rank and the number of ranks as its launcher tells them, MPI started or not: world() once started,
// else Open MPI's (OMPI_COMM_WORLD_RANK/SIZE), PMIx's (PMIX_RANK) or Slurm's (SLURM_PROCID/SLURM_NTASKS) variables;
// {0, 1} outside a launcher. For reporting an error once per job, which may happen before MPI starts.
struct RankInWorld {
  int rank = 0, size = 1;
};
RankInWorld rank_in_world();

// After an error on one rank: ends every rank of a world larger than one (MPI_Abort), so that none waits forever
// in a collective. Returns only in a world of one.
void abort_world(int exit_code);

// How long MPI_Finalize may wait for the other ranks at exit before this rank ends without it (exit status 76, one
// line on stderr): default 300 s; pretrain sets train.collective_timeout_s (0: wait forever).
void set_exit_deadline(double seconds);

}  // namespace bfm::runtime
