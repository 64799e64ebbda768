// The NCCL back-end of the communicator (runtime/comm.h): float collectives on device buffers, on a CUDA stream of
// the communicator's own, over the ranks of a host communicator (mpi, or self in a world of one) that also carries the
// host scalars, the barrier and the bootstrap: rank 0's ncclUniqueId, broadcast as one float per byte (every byte
// value is exact in a float, so no bit pattern can be altered on the way).
// NCCL counts are size_t, so no range is split. A blocking call returns after the stream has finished; a started
// all-reduce is an event recorded behind it on the stream, and wait() polls that event. NCCL progresses on its own,
// so progress() has nothing to do. Every wait for the device polls under the host communicator's timeout
// (Communicator::set_timeout); on a timeout the NCCL communicator is aborted (ncclCommAbort) and the error thrown.
#include <cuda_runtime.h>
#include <nccl.h>

#include <cstring>
#include <functional>
#include <map>
#include <string>

#include "runtime/comm.h"
#include "base/error.h"
#include "runtime/progress.h"

namespace bfm::runtime {

namespace {

class BlockedScope {
 public:
  explicit BlockedScope(double& total) : total_(total) {}
  ~BlockedScope() { total_ += watch_.seconds(); }
  BlockedScope(const BlockedScope&) = delete;
  BlockedScope& operator=(const BlockedScope&) = delete;

 private:
  double& total_;
  Stopwatch watch_;
};

class NcclCommunicator final : public Communicator {
 public:
  explicit NcclCommunicator(std::unique_ptr<Communicator> host) : host_(std::move(host)) {
    require(host_ != nullptr, "nccl communicator: no host communicator");
    rank_ = host_->rank();
    size_ = host_->size();
    check_cuda(cudaGetDevice(&device_), "cudaGetDevice");
    check_cuda(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
    ncclUniqueId id;
    std::memset(&id, 0, sizeof id);
    if (rank_ == 0) check_nccl(ncclGetUniqueId(&id), "ncclGetUniqueId");
    float bytes[sizeof id.internal];
    for (size_t i = 0; i < sizeof id.internal; ++i) bytes[i] = static_cast<unsigned char>(id.internal[i]);
    host_->broadcast(bytes, static_cast<int64_t>(sizeof id.internal), 0);
    for (size_t i = 0; i < sizeof id.internal; ++i) id.internal[i] = static_cast<char>(static_cast<unsigned char>(bytes[i]));
    check_nccl(ncclCommInitRank(&comm_, size_, id, rank_), "ncclCommInitRank");
  }

  ~NcclCommunicator() override {
    for (auto& [handle, event] : pending_) cudaEventDestroy(event);
    if (comm_ != nullptr) ncclCommDestroy(comm_);
    if (producer_event_ != nullptr) cudaEventDestroy(producer_event_);
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }

  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const char* backend() const override { return "nccl"; }

  void allreduce_sum(float* data, int64_t n) override {
    BlockedScope blocked(blocked_);
    if (!check_count("allreduce_sum", n)) return;
    wait_for_producer();
    check_nccl(ncclAllReduce(data, data, static_cast<size_t>(n), ncclFloat, ncclSum, comm_, stream_), "ncclAllReduce");
    synchronize("ncclAllReduce");
  }

  void allgather(const float* send, float* recv, int64_t n) override {
    BlockedScope blocked(blocked_);
    if (!check_count("allgather", n)) return;
    check_nccl(ncclAllGather(send, recv, static_cast<size_t>(n), ncclFloat, comm_, stream_), "ncclAllGather");
    synchronize("ncclAllGather");
  }

  void reduce_scatter_sum(const float* send, float* recv, int64_t n) override {
    BlockedScope blocked(blocked_);
    if (!check_count("reduce_scatter_sum", n)) return;
    check_nccl(ncclReduceScatter(send, recv, static_cast<size_t>(n), ncclFloat, ncclSum, comm_, stream_),
               "ncclReduceScatter");
    synchronize("ncclReduceScatter");
  }

  void broadcast(float* data, int64_t n, int root) override {
    BlockedScope blocked(blocked_);
    require(root >= 0 && root < size_, "nccl communicator: broadcast from root ", root, " on rank ", rank_,
            " in a world of ", size_);
    if (!check_count("broadcast", n)) return;
    check_nccl(ncclBroadcast(data, data, static_cast<size_t>(n), ncclFloat, root, comm_, stream_), "ncclBroadcast");
    synchronize("ncclBroadcast");
  }

  void allreduce_sum_host(double* data, int64_t n) override {
    BlockedScope blocked(blocked_);
    host_->allreduce_sum_host(data, n);
  }
  void allreduce_max_host(double* data, int64_t n) override {
    BlockedScope blocked(blocked_);
    host_->allreduce_max_host(data, n);
  }
  void barrier() override {
    BlockedScope blocked(blocked_);
    synchronize("barrier");
    host_->barrier();
  }

  void set_producer_stream(void* stream) override { producer_ = static_cast<cudaStream_t>(stream); }

  int64_t start_allreduce_sum(float* data, int64_t n) override {
    BlockedScope blocked(blocked_);
    check_count("start_allreduce_sum", n);
    wait_for_producer();
    if (n > 0)
      check_nccl(ncclAllReduce(data, data, static_cast<size_t>(n), ncclFloat, ncclSum, comm_, stream_),
                 "ncclAllReduce (started)");
    cudaEvent_t event = nullptr;
    check_cuda(cudaEventCreateWithFlags(&event, cudaEventDisableTiming), "cudaEventCreateWithFlags");
    check_cuda(cudaEventRecord(event, stream_), "cudaEventRecord");
    pending_.emplace(next_handle_, event);
    return next_handle_++;
  }

  void progress() override {}

  void wait(int64_t handle) override {
    BlockedScope blocked(blocked_);
    auto it = pending_.find(handle);
    require(it != pending_.end(), "nccl communicator: wait on unknown handle ", handle, " on rank ", rank_,
            " (never started, or already waited for)");
    cudaEvent_t event = it->second;
    pending_.erase(it);
    cudaError_t status = cudaSuccess;
    watched("wait (bucketed ncclAllReduce)", [&] {
      status = cudaEventQuery(event);
      return status != cudaErrorNotReady;
    });
    cudaEventDestroy(event);
    check_cuda(status, "cudaEventQuery (wait)");
    check_async("wait");
  }

  // The timeout is the host communicator's: it watches the device's waits too, and asks the other ranks over MPI.
  void set_timeout(double seconds) override {
    Communicator::set_timeout(seconds);
    host_->set_timeout(seconds);
  }
  void set_context(const std::string& context) override {
    Communicator::set_context(context);
    host_->set_context(context);
  }
  void watch_wait(const char* op, const std::function<bool()>& done) override { host_->watch_wait(op, done); }

  void wait_all() override {
    while (!pending_.empty()) wait(pending_.begin()->first);
  }

  double blocked_seconds() const override { return blocked_; }

 private:
  // false when there is nothing to do (NCCL is not asked about empty ranges).
  bool check_count(const char* op, int64_t n) const {
    require(n >= 0, "nccl communicator: ", op, " of ", n, " elements on rank ", rank_);
    return n > 0;
  }
  void check_nccl(ncclResult_t result, const char* op) const {
    if (result == ncclSuccess) return;
    fail("nccl communicator: ", op, " failed on rank ", rank_, " of ", size_, " (GPU ", device_, "): ",
         ncclGetErrorString(result));
  }
  void check_cuda(cudaError_t status, const char* op) const {
    if (status == cudaSuccess) return;
    fail("nccl communicator: ", op, " failed on rank ", rank_, " of ", size_, " (GPU ", device_, "): ",
         cudaGetErrorString(status));
  }
  // An error NCCL found while the operation ran (a peer gone, a network failure).
  void check_async(const char* op) const {
    ncclResult_t async = ncclSuccess;
    check_nccl(ncclCommGetAsyncError(comm_, &async), op);
    check_nccl(async, op);
  }
  // Waits for the stream under the host's timeout. Polling (rather than cudaStreamSynchronize) lets a rank whose peer
  // is gone notice it: NCCL's own error (check_async) or the timeout; then the NCCL communicator is aborted, which
  // stops its kernels, so that the process can exit instead of waiting on the device forever.
  void synchronize(const char* op) {
    cudaError_t status = cudaSuccess;
    watched(op, [&] {
      status = cudaStreamQuery(stream_);
      return status != cudaErrorNotReady;
    });
    check_cuda(status, op);
    check_async(op);
  }
  template <class Done>
  void watched(const char* op, Done&& done) {
    try {
      host_->watch_wait(op, [&] {
        if (done()) return true;
        ncclResult_t async = ncclSuccess;
        // A peer NCCL knows to be gone ends the wait at once (check_async then reports it).
        return ncclCommGetAsyncError(comm_, &async) == ncclSuccess && async != ncclSuccess && async != ncclInProgress;
      });
    } catch (const CollectiveTimeout&) {
      ncclCommAbort(comm_);
      comm_ = nullptr;
      throw;
    }
  }

  // The communicator's stream waits (on the device) for what the producer stream has enqueued so far.
  void wait_for_producer() {
    if (producer_ == nullptr) return;
    if (producer_event_ == nullptr)
      check_cuda(cudaEventCreateWithFlags(&producer_event_, cudaEventDisableTiming), "cudaEventCreateWithFlags");
    check_cuda(cudaEventRecord(producer_event_, producer_), "cudaEventRecord (producer)");
    check_cuda(cudaStreamWaitEvent(stream_, producer_event_, 0), "cudaStreamWaitEvent (producer)");
  }

  std::unique_ptr<Communicator> host_;
  int rank_ = 0, size_ = 1, device_ = 0;
  cudaStream_t stream_ = nullptr;
  cudaStream_t producer_ = nullptr;
  cudaEvent_t producer_event_ = nullptr;
  ncclComm_t comm_ = nullptr;
  std::map<int64_t, cudaEvent_t> pending_;
  int64_t next_handle_ = 1;
  double blocked_ = 0;
};

}  // namespace

std::unique_ptr<Communicator> make_nccl_communicator(std::unique_ptr<Communicator> host) {
  return std::make_unique<NcclCommunicator>(std::move(host));
}

}  // namespace bfm::runtime
