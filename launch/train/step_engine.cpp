#include "launch/train/step_engine.h"

#include <algorithm>
#include <cmath>

#include "base/error.h"
#include "base/stopwatch.h"

namespace bfm::launch {

namespace {

// Sums of the losses present over micro-batches (and ranks), and how many each.
struct LossSums {
  double v[4] = {0, 0, 0, 0};  // total, mae, causal, contrastive
  double n[4] = {0, 0, 0, 0};
  void add(const model::Losses& l) {
    const std::optional<double>* f[4] = {&l.total, &l.mae, &l.causal, &l.contrastive};
    for (int i = 0; i < 4; ++i)
      if (f[i]->has_value()) v[i] += **f[i], n[i] += 1;
  }
  void allreduce(runtime::Communicator& comm) {
    double buf[8];
    for (int i = 0; i < 4; ++i) buf[i] = v[i], buf[4 + i] = n[i];
    comm.allreduce_sum_host(buf, 8);
    for (int i = 0; i < 4; ++i) v[i] = buf[i], n[i] = buf[4 + i];
  }
  model::Losses result(bool mean) const {
    model::Losses l;
    std::optional<double>* f[4] = {&l.total, &l.mae, &l.causal, &l.contrastive};
    for (int i = 0; i < 4; ++i)
      if (n[i] > 0) *f[i] = mean ? v[i] / n[i] : v[i];
    return l;
  }
};

}  // namespace

StepEngine::StepEngine(model::BrainModel& model, runtime::Communicator& comm, const StepOptions& options)
    : model_(model), comm_(comm), options_(options) {
  const model::GradientView g = model_.gradients();
  const auto bucket_bytes = static_cast<int64_t>(options_.bucket_mb * (1 << 20));
  reported_.assign(g.tensors.size(), 0);
  if (g.on_device && (comm_.size() > 1 || options_.gpu_comm == "nccl"))
    device_comm_ = runtime::make_communicator(options_.gpu_comm == "mpi" ? "mpi" : options_.gpu_comm, true, &why_host_);
  if (device_comm_) device_comm_->set_timeout(options_.collective_timeout_s);
  const bool nccl = device_comm_ && std::string(device_comm_->backend()) == "nccl";
  if (!g.on_device) {
    // CPU ranks: the buckets' all-reduces start while backward goes on.
    overlap_ = std::make_unique<runtime::GradientBuckets>(g.tensors, bucket_bytes);
  } else if (nccl && options_.gpu_overlap) {
    // GPU ranks with NCCL: the same buckets over the device arena's tensors (its padded offsets), each all-reduce
    // started on the communicator's stream once backward has enqueued its tensors' gradient kernels, ordered after
    // them by an event on the model's stream.
    device_comm_->set_producer_stream(g.stream);
    overlap_ = std::make_unique<runtime::GradientBuckets>(g.tensors, bucket_bytes);
  }
  const auto& params = model_.layout().params();
  on_ready_ = [this, &params](const std::string& prefix) {
    for (size_t i = 0; i < params.size(); ++i)
      if (!reported_[i] && params[i].name.compare(0, prefix.size(), prefix) == 0) {
        reported_[i] = 1;
        overlap_->tensor_ready(i);
      }
  };
}

StepEngine::~StepEngine() = default;

std::string StepEngine::describe() const {
  if (!device_comm_) return comm_.backend();
  const std::string b = device_comm_->backend();
  return b + (b == "nccl" ? " on the device" : " through the host") + (why_host_.empty() ? "" : " (" + why_host_ + ")");
}

void StepEngine::set_context(const std::string& context) {
  comm_.set_context(context);
  if (device_comm_) device_comm_->set_context(context);
}

double StepEngine::communication_seconds() const { return comm_.blocked_seconds() + device_comm_seconds_; }

int StepEngine::n_buckets() const { return overlap_ ? overlap_->n_buckets() : 0; }

StepResult StepEngine::step(int micro_batches, const MicroStep& forward_backward, double lr, double head_lr) {
  require(micro_batches >= 1, "StepEngine::step: ", micro_batches, " micro-batches");
  const bool mean = options_.reduction == StepOptions::Reduction::mean;
  const int ranks = comm_.size();
  model::GradientView g = model_.gradients();
  // Where the mean over micro-batches and ranks is taken: a host arena is scaled once after its all-reduce (in the
  // buckets' fixed loop); a device arena cannot be scaled there, so backward takes 1 / (micro-batches x ranks).
  const bool bucketed = overlap_ && !model_.optimizer_sharded();
  float scale = 1.0f;
  if (mean) scale = g.on_device ? 1.0f / float(micro_batches * ranks) : 1.0f / float(micro_batches);

  model_.zero_grads();
  if (head_.grads) std::fill_n(head_.grads, head_.size, 0.0f);
  LossSums sums;
  bool finite = true;
  for (int a = 0; a < micro_batches; ++a) {
    const bool hook = bucketed && a + 1 == micro_batches;
    if (hook) {
      overlap_->begin_step(g.data, g.on_device ? *device_comm_ : comm_);
      std::fill(reported_.begin(), reported_.end(), 0);
    }
    const model::Losses l = forward_backward(a, scale, hook ? on_ready_ : model::ReadyHook{});
    sums.add(l);
    finite = finite && l.total && std::isfinite(*l.total);
  }
  if (!model_.optimizer_sharded()) {
    const Stopwatch clock;
    if (bucketed) {
      overlap_->finish(mean && !g.on_device ? 1.0f / float(ranks) : 1.0f);
      hidden_sum_ += overlap_->hidden_fraction();
    } else if (device_comm_ && std::string(device_comm_->backend()) == "nccl") {
      device_comm_->allreduce_sum(g.data, g.size);
    } else if (device_comm_) {  // a GPU model's gradients through the host
      staging_.resize(size_t(model_.arena_size()));
      model_.store_grads(staging_.data());
      device_comm_->allreduce_sum(staging_.data(), model_.arena_size());
      model_.load_grads(staging_.data());
    }
    if (g.on_device) device_comm_seconds_ += clock.seconds();
  }
  if (head_.grads && ranks > 1) {
    comm_.allreduce_sum(head_.grads, head_.size);
    if (mean)
      for (int64_t i = 0; i < head_.size; ++i) head_.grads[i] *= 1.0f / float(ranks);
  }
  if (ranks > 1) {  // skip the step on every rank when any rank's loss was not finite
    double flag = finite ? 0.0 : 1.0;
    comm_.allreduce_max_host(&flag, 1);
    finite = flag == 0.0;
  }
  StepResult r;
  if (finite) r.grad_norm = model_.optimizer_step(lr, &r.applied);
  if (r.applied && head_.optimizer) head_.optimizer->step(head_.params, head_.grads, head_lr);
  sums.allreduce(comm_);
  r.losses = sums.result(mean);
  ++steps_;
  return r;
}

model::Losses StepEngine::reduce_losses(const std::vector<model::Losses>& per_micro_batch) {
  LossSums sums;
  for (const model::Losses& l : per_micro_batch) sums.add(l);
  sums.allreduce(comm_);
  return sums.result(options_.reduction == StepOptions::Reduction::mean);
}

}  // namespace bfm::launch
