// Gradient buckets: the all-reduce of the gradient arena in pieces that start while backward still runs.
// Backward produces the last tensors of the arena first, so the buckets are formed from the END of the arena
// backwards: each is a contiguous range of whole tensors of at least bucket_bytes (the last one formed, which holds
// the arena's first tensor, may be smaller). Bucket 0 holds the arena's last tensors.
//
// Per step: begin_step(grads, comm); tensor_ready(i) as backward finishes tensor i; finish(scale). Buckets are started
// strictly in bucket order (a complete bucket waits for the ones before it), so every rank starts the same
// collectives in the same order, whatever order its tensors became ready in.
//
// hidden_fraction(): the share of the last step's all-reduce time that overlapped backward, measured on this rank's
// clock as  sum_b (t_finish - t_start[b])+ / sum_b (t_done[b] - t_start[b]),  where t_start[b] is when bucket b was
// started, t_finish when finish() began, and t_done[b] when finish()'s wait for b returned. A bucket is only seen
// complete by that wait, so one that finished early counts its whole interval up to t_finish as hidden (which it was:
// nothing waited for it), and the exposed part of every bucket is the time finish() spent waiting past t_finish.
// Buckets started by finish() itself count as not hidden at all.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "runtime/comm.h"
#include "runtime/progress.h"

namespace bfm::runtime {

class GradientBuckets {
 public:
  // tensors: {offset, size} in floats, in arena order (increasing, non-overlapping; gaps between them are reduced
  // with the bucket that spans them). bucket_bytes > 0.
  GradientBuckets(const std::vector<std::pair<int64_t, int64_t>>& tensors, int64_t bucket_bytes);

  // grads: the gradient arena, in the memory comm works on (host for self/mpi, device for nccl).
  void begin_step(float* grads, Communicator& comm);
  // Tensor tensor_index (in the constructor's list) has its final gradient: a bucket whose tensors are all ready is
  // started (in bucket order); the communicator is given a chance to progress whenever a bucket is in flight.
  void tensor_ready(size_t tensor_index);
  // Starts every bucket not yet started (tensors never marked ready included), waits for all, then multiplies the
  // buckets' ranges by scale (e.g. 1 / world size) in one fixed loop. With a device arena (nccl) the loop cannot run
  // on the host: scale must be 1 there, and the caller folds it into the optimizer's gradient scale.
  void finish(float scale);

  int n_buckets() const { return static_cast<int>(ranges_.size()); }
  // {offset, size} in floats of each bucket, bucket 0 first (the arena's last tensors).
  const std::vector<std::pair<int64_t, int64_t>>& ranges() const { return ranges_; }
  double hidden_fraction() const { return hidden_fraction_; }
  // Seconds the last finish() spent waiting for the all-reduces: the communication backward did not hide.
  double exposed_seconds() const { return exposed_seconds_; }

 private:
  void start_ready_buckets();
  void start(size_t bucket, Communicator& comm);

  std::vector<std::pair<int64_t, int64_t>> ranges_;
  std::vector<size_t> bucket_of_;         // tensor -> bucket
  std::vector<int64_t> tensors_in_;       // bucket -> its number of tensors
  // The step in flight.
  float* grads_ = nullptr;
  Communicator* comm_ = nullptr;
  std::vector<char> tensor_done_;
  std::vector<int64_t> missing_;          // bucket -> tensors not yet ready
  std::vector<int64_t> handles_;          // bucket -> its all-reduce
  std::vector<double> started_at_;        // bucket -> step_clock_ seconds when started
  size_t next_bucket_ = 0;                // buckets before it have started
  Stopwatch step_clock_;                  // restarted by begin_step
  double hidden_fraction_ = 0, exposed_seconds_ = 0;
};

}  // namespace bfm::runtime
