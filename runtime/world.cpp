#include "runtime/world.h"

#include <cstdlib>
#include <utility>

#include "base/error.h"
#include "runtime/watchdog.h"

namespace bfm::runtime {

namespace {
World the_world;
bool started = false;

double exit_deadline_s = 300;

#ifdef BFM_WITH_MPI
// MPI_Finalize waits for every rank (Open MPI's closing fence): a rank stopped after the command's work would keep the
// others here forever, its outputs written, the job never ending. The watchdog ends this rank instead.
void finalize_at_exit() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return;
  const Watchdog deadline("MPI_Finalize", exit_deadline_s,
                          "the command had finished, its outputs are whole");
  MPI_Finalize();
}
#endif
}  // namespace

const World& world() {
  if (started) return the_world;
  started = true;
#ifdef BFM_WITH_MPI
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    int provided = 0;
    require(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided) == MPI_SUCCESS,
            "MPI_Init_thread failed");
    std::atexit(finalize_at_exit);
  }
  MPI_Comm_rank(MPI_COMM_WORLD, &the_world.rank);
  MPI_Comm_size(MPI_COMM_WORLD, &the_world.size);
  // The ranks that share this node's memory (and GPUs): this rank's place among them.
  MPI_Comm node;
  if (MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, the_world.rank, MPI_INFO_NULL, &node) == MPI_SUCCESS) {
    MPI_Comm_rank(node, &the_world.local_rank);
    MPI_Comm_size(node, &the_world.local_size);
    MPI_Comm_free(&node);
  }
#endif
  return the_world;
}

bool world_started() { return started; }

RankInWorld rank_in_world() {
  if (started) return {the_world.rank, the_world.size};
  auto number = [](const char* name) {
    const char* text = std::getenv(name);
    return text != nullptr && *text != 0 ? std::atoi(text) : -1;
  };
  for (auto [rank, size] : {std::pair{"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"},
                            std::pair{"PMIX_RANK", "SLURM_NTASKS"}, std::pair{"SLURM_PROCID", "SLURM_NTASKS"}})
    if (number(rank) >= 0 && number(size) >= 1) return {number(rank), number(size)};
  return {};
}

void abort_world(int exit_code) {
#ifdef BFM_WITH_MPI
  if (started && the_world.size > 1) MPI_Abort(MPI_COMM_WORLD, exit_code);
#endif
  (void)exit_code;
}

void set_exit_deadline(double seconds) { exit_deadline_s = seconds; }

}  // namespace bfm::runtime
