// The communicator of distributed pre-training (data parallel): the collectives the trainer needs, behind one
// interface with three back-ends.
//   self  a world of one: every collective is the identity (or a copy); no MPI, no GPU.
//   mpi   host buffers over a duplicate of an MPI communicator (runtime/comm_mpi.cpp); counts above INT_MAX are
//         split into several MPI calls; errors return (MPI_ERRORS_RETURN) and throw.
//   nccl  device buffers over NCCL on the communicator's own CUDA stream (runtime/comm_nccl.cu); the host scalars,
//         the barrier and the bootstrap of the NCCL id go through a host communicator (mpi, or self in a world of one).
// Every call is collective unless it says otherwise: all ranks make the same calls, in the same order, with the same
// counts. A failed call throws bfm::Error naming the operation and the rank.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "base/error.h"

#ifdef BFM_WITH_MPI
#include <mpi.h>
#endif

namespace bfm::runtime {

// A collective that did not complete within the communicator's timeout: some rank stopped answering (stopped,
// hung, dead, or its node lost). The message names the collective, the context (the step), the waiting rank and the
// ranks it waited for. launch/main.cpp reports it on every rank that saw it and ends the job with
// kExitCollectiveTimeout, so that the scheduler requeues it and the next run resumes from the last checkpoint.
class CollectiveTimeout : public Error {
 public:
  using Error::Error;
};
inline constexpr int kExitCollectiveTimeout = 76;

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual const char* backend() const = 0;  // "self", "mpi", "nccl"

  // Blocking collectives. Buffers are host memory for self/mpi, device memory for nccl (then they run on the
  // communicator's stream and return after it has finished; the caller's writes to `data`/`send` must be complete,
  // its stream synchronised, before the call). send and recv must not overlap, except the in-place all-gather:
  // send == recv + rank() * n_per_rank.
  virtual void allreduce_sum(float* data, int64_t n) = 0;                                   // in place
  virtual void allgather(const float* send, float* recv, int64_t n_per_rank) = 0;           // recv: size()*n, rank order
  virtual void reduce_scatter_sum(const float* send, float* recv, int64_t n_per_rank) = 0;  // send: size()*n
  virtual void broadcast(float* data, int64_t n, int root) = 0;

  // Host-side scalars (losses, norms, counters) in double, always on the host, whatever the back-end.
  virtual void allreduce_sum_host(double* data, int64_t n) = 0;
  virtual void allreduce_max_host(double* data, int64_t n) = 0;
  virtual void barrier() = 0;

  // Non-blocking all-reduce (sum, in place) of one range, for gradient buckets: returns a handle; progress() lets
  // the library advance pending operations (MPI_Testall on the CPU); wait(h) completes one; wait_all() all.
  // Ranks must start their operations in the same order (GradientBuckets does). progress() and wait() are local.
  // A wait on a handle never returned, or already completed, throws.
  virtual int64_t start_allreduce_sum(float* data, int64_t n) = 0;
  virtual void progress() = 0;
  virtual void wait(int64_t handle) = 0;
  virtual void wait_all() = 0;

  // Device back-ends (nccl): every collective started after this call first waits, on the device, for the work
  // enqueued on `stream` (a cudaStream_t) up to the moment it is started, so that an all-reduce can start while the
  // kernels that produce later gradients still run. nullptr (the default) orders nothing. Host back-ends ignore it.
  virtual void set_producer_stream(void* stream) { (void)stream; }

  // The collective timeout: a blocking call, or a wait, that has not completed after `seconds` (0: never) asks the
  // other ranks where they are (the ranks waiting in a collective answer; a stopped, hung or dead one cannot),
  // cancels nothing, and throws CollectiveTimeout naming the operation, the context and the ranks that did not
  // answer. While waiting, a rank polls (and sleeps between polls after the first 100 ms), so a rank whose peer is
  // stopped does not spin a core. `context` ("step 120") is named in the report.
  virtual void set_timeout(double seconds) { timeout_s_ = seconds; }
  double timeout() const { return timeout_s_; }
  virtual void set_context(const std::string& context) { context_ = context; }
  const std::string& context() const { return context_; }

  // Polls done() until it returns true, under the timeout, as the communicator's own waits do: for a back-end whose
  // completion is not an MPI request (a CUDA stream, an event). `op` names the operation in a report. The host
  // back-ends serve the other ranks' questions while waiting; the default (a world of one) has no one to ask.
  virtual void watch_wait(const char* op, const std::function<bool()>& done);

  // Seconds spent blocked inside this communicator's calls (waits included) since construction: what the progress
  // line reports as communication time.
  virtual double blocked_seconds() const = 0;

 protected:
  double timeout_s_ = 0;
  std::string context_;
};

std::unique_ptr<Communicator> make_self_communicator();

#ifdef BFM_WITH_MPI
// Duplicates comm (MPI_Comm_dup), so that its traffic never matches anyone else's; MPI must be running
// (runtime::world()).
std::unique_ptr<Communicator> make_mpi_communicator(MPI_Comm comm);
namespace detail {
// As above, with at most max_count elements per MPI call: the tests split small counts to exercise the path that
// counts above INT_MAX take.
std::unique_ptr<Communicator> make_mpi_communicator(MPI_Comm comm, int64_t max_count);
}  // namespace detail
#endif

namespace detail {
// The most ranks that use one device, given each rank's device id (its GPU's UUID); 0 where every rank has its own,
// or where a rank names none ("": no GPU to compare, so no sharing is claimed).
int most_ranks_on_one_device(const std::vector<std::string>& device_ids);
}  // namespace detail

#ifdef BFM_WITH_NCCL
// An NCCL communicator over the same ranks as `host` (mpi on the world, or self: with no MPI only a world of one is
// possible), which it keeps for the host scalars and the barrier. Rank 0 makes the NCCL unique id and broadcasts it
// over `host`. The caller has selected the GPU (cudaSetDevice to its local rank) before; the communicator makes its
// own CUDA stream on that device.
std::unique_ptr<Communicator> make_nccl_communicator(std::unique_ptr<Communicator> host);
#endif

// backend: "self", "mpi", "nccl" or "auto": nccl where built, the training runs on the GPU and every rank has a GPU
// of its own, else mpi where MPI is built (on the world: runtime::world()), else self. A back-end this build lacks,
// nccl with on_gpu false, or nccl where ranks share a GPU (NCCL takes one rank per device) throws. Collective: every
// rank of the world calls it. `why_host`, where given, is set to why "auto" on the GPU took the host path ("" where it
// did not): for the log, so that a user who expected NCCL reads the reason.
std::unique_ptr<Communicator> make_communicator(const std::string& backend, bool on_gpu,
                                                std::string* why_host = nullptr);

}  // namespace bfm::runtime
