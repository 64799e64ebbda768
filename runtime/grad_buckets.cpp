#include "runtime/grad_buckets.h"

#include <algorithm>
#include <cstring>

#include "base/error.h"

namespace bfm::runtime {

GradientBuckets::GradientBuckets(const std::vector<std::pair<int64_t, int64_t>>& tensors, int64_t bucket_bytes) {
  require(bucket_bytes > 0, "gradient buckets: bucket size ", bucket_bytes, " bytes (must be positive)");
  int64_t end = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto [offset, size] = tensors[i];
    require(size >= 0 && offset >= end, "gradient buckets: tensor ", i, " at offset ", offset, " of size ", size,
            " is not after the previous tensor's end ", end, " (tensors must be in arena order, not overlapping)");
    end = offset + size;
  }
  const auto end_of = [&](size_t i) { return tensors[i].first + tensors[i].second; };
  bucket_of_.resize(tensors.size());
  // From the arena's end backwards: grow each bucket by whole tensors until it spans bucket_bytes.
  for (size_t last = tensors.size(); last-- > 0;) {
    size_t first = last;
    while (first > 0 && (end_of(last) - tensors[first].first) * int64_t{sizeof(float)} < bucket_bytes) --first;
    for (size_t i = first; i <= last; ++i) bucket_of_[i] = ranges_.size();
    ranges_.emplace_back(tensors[first].first, end_of(last) - tensors[first].first);
    tensors_in_.push_back(static_cast<int64_t>(last - first + 1));
    last = first;
  }
}

void GradientBuckets::begin_step(float* grads, Communicator& comm) {
  require(comm_ == nullptr, "gradient buckets: begin_step before the previous step's finish()");
  grads_ = grads;
  comm_ = &comm;
  tensor_done_.assign(bucket_of_.size(), 0);
  missing_ = tensors_in_;
  handles_.assign(ranges_.size(), -1);
  started_at_.assign(ranges_.size(), 0.0);
  next_bucket_ = 0;
  step_clock_.restart();
}

void GradientBuckets::tensor_ready(size_t tensor_index) {
  require(comm_ != nullptr, "gradient buckets: tensor_ready(", tensor_index, ") outside a step (no begin_step)");
  require(tensor_index < bucket_of_.size(), "gradient buckets: tensor ", tensor_index, " of ", bucket_of_.size());
  require(!tensor_done_[tensor_index], "gradient buckets: tensor ", tensor_index, " marked ready twice in one step");
  tensor_done_[tensor_index] = 1;
  --missing_[bucket_of_[tensor_index]];
  start_ready_buckets();
  if (next_bucket_ > 0) comm_->progress();
}

void GradientBuckets::start_ready_buckets() {
  while (next_bucket_ < ranges_.size() && missing_[next_bucket_] == 0) start(next_bucket_++, *comm_);
}

void GradientBuckets::start(size_t bucket, Communicator& comm) {
  handles_[bucket] = comm.start_allreduce_sum(grads_ + ranges_[bucket].first, ranges_[bucket].second);
  started_at_[bucket] = step_clock_.seconds();
}

void GradientBuckets::finish(float scale) {
  require(comm_ != nullptr, "gradient buckets: finish() outside a step (no begin_step)");
  require(scale == 1.0f || std::strcmp(comm_->backend(), "nccl") != 0, "gradient buckets: scale ", scale,
          " on a device arena (nccl): pass 1 and fold the scale into the optimizer's gradient scale");
  Communicator& comm = *comm_;
  comm_ = nullptr;  // the step is over, also when a wait below throws
  const double finish_at = step_clock_.seconds();
  while (next_bucket_ < ranges_.size()) start(next_bucket_++, comm);
  double hidden = 0, total = 0;
  for (size_t b = 0; b < ranges_.size(); ++b) {
    comm.wait(handles_[b]);
    const double done_at = step_clock_.seconds();
    hidden += std::max(0.0, finish_at - started_at_[b]);
    total += done_at - started_at_[b];
  }
  exposed_seconds_ = step_clock_.seconds() - finish_at;
  hidden_fraction_ = total > 0 ? hidden / total : 0.0;
  if (scale != 1.0f)
    for (const auto& [offset, size] : ranges_)
      for (float *g = grads_ + offset, *end = g + size; g < end; ++g) *g *= scale;
}

}  // namespace bfm::runtime
