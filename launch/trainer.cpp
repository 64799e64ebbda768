#include "launch/trainer.h"

#include <cmath>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "io/synthetic_windows.h"
#include "model/masking.h"
#include "runtime/device.h"
#include "runtime/error.h"
#ifdef BFM_WITH_CUDA
#include "model/gpu_model.h"
#endif
#include "runtime/optimizer.h"
#include "runtime/progress.h"
#include "runtime/rng.h"

namespace bfm::launch {

namespace {

struct BatchBuffers {
  std::vector<float> x, stim;
  std::vector<uint8_t> mask;
  model::Batch batch;
};

void draw_batch(BatchBuffers& b, const RunConfig& rc, const io::SyntheticWindows& data, Rng& data_rng,
                Rng& mask_rng) {
  const auto& m = rc.model;
  const int B = rc.train.batch_size;
  b.x.resize(int64_t(B) * m.window * m.n_parcels);
  if (m.contrastive) b.stim.resize(int64_t(B) * m.stim_dim);
  data.sample(B, data_rng, b.x.data(), m.contrastive ? b.stim.data() : nullptr, nullptr);
  if (m.mae) {
    b.mask.resize(int64_t(B) * m.n_tokens());
    model::make_masks(b.mask.data(), B, m.n_time(), m.n_parcels, m.mask_ratio, rc.train.mask_strategy, mask_rng);
  }
  b.batch = {B, b.x.data(), m.mae ? b.mask.data() : nullptr, m.contrastive ? b.stim.data() : nullptr};
}

std::string describe(const char* what, const model::Losses& l) {
  std::ostringstream os;
  os << what << ":";
  for (const auto& [name, v] : named_losses(l)) os << " " << name << " " << v;
  return os.str();
}

// train.device: "auto" takes the GPU where the build and the machine have one.
bool use_gpu(const std::string& device, const std::string& source) {
#ifdef BFM_WITH_CUDA
  if (device == "cpu") return false;
  const bool have = runtime::cuda_device_count() > 0;
  require(have || device != "cuda", source, ": train.device = \"cuda\" but this machine has no CUDA GPU (",
          runtime::describe_devices(), ")");
  return have;
#else
  require(device != "cuda", source, ": train.device = \"cuda\" but this bfm was built without CUDA (BFM_WITH_CUDA=OFF)");
  return false;
#endif
}

}  // namespace

bool train_on_gpu(const RunConfig& rc) {
#ifdef BFM_WITH_CUDA
  return use_gpu(rc.train.device, rc.source) &&
         (rc.train.device == "cuda" || model::GpuBrainModel::unsupported(rc.model).empty());
#else
  return use_gpu(rc.train.device, rc.source);
#endif
}

std::vector<std::pair<std::string, double>> named_losses(const model::Losses& l) {
  std::vector<std::pair<std::string, double>> out;
  if (l.total) out.emplace_back("loss", *l.total);
  if (l.mae) out.emplace_back("mae", *l.mae);
  if (l.causal) out.emplace_back("causal", *l.causal);
  if (l.contrastive) out.emplace_back("contrastive", *l.contrastive);
  return out;
}

TrainResult pretrain(const RunConfig& rc, const TrainOptions& options) {
  const auto& m = rc.model;
  const auto& t = rc.train;
  TrainResult result;
  result.model = std::make_unique<model::BrainModel>(m);
  model::BrainModel& model = *result.model;
  model.initialize(t.seed);
#ifdef BFM_WITH_CUDA
  std::unique_ptr<model::GpuBrainModel> gpu;
  const std::string gpu_gap = model::GpuBrainModel::unsupported(m);
  if (use_gpu(t.device, rc.source) && (t.device == "cuda" || gpu_gap.empty())) {
    gpu = std::make_unique<model::GpuBrainModel>(m, model::parse_gpu_precision(t.precision), t.optimizer);
    gpu->load_params(model.params());
  }
  const bool on_gpu = gpu != nullptr;
  if (!on_gpu && t.device == "auto" && !gpu_gap.empty() && runtime::cuda_device_count() > 0 && options.verbose)
    runtime::log_line("pretrain: on the CPU although there is a GPU: " + gpu_gap);
#else
  use_gpu(t.device, rc.source);
  const bool on_gpu = false;
#endif

  io::SyntheticWindows data({m.n_parcels, m.window, m.contrastive ? m.stim_dim : 0, rc.data.n_networks,
                             rc.data.n_categories, rc.data.noise, rc.data.stim_gain, rc.data.seed});
  Rng data_rng = Rng::stream(t.seed, 1), mask_rng = Rng::stream(t.seed, 2);
  // A fixed held-out batch from its own stream: the loss people watch, not the noisy training batch.
  Rng val_data_rng = Rng::stream(t.seed, 3), val_mask_rng = Rng::stream(t.seed, 4);
  BatchBuffers validation, batch;
  draw_batch(validation, rc, data, val_data_rng, val_mask_rng);

  std::vector<runtime::ArenaSegment> segments;
  for (const auto& p : model.layout().params()) segments.push_back({p.offset, p.size, p.weight_decay});
  runtime::AdamW optimizer(model.arena_size(), segments, t.optimizer);
  const float max_logit_scale = static_cast<float>(model::BrainModel::kMaxLogitScale);
  float* logit_scale = m.contrastive ? model.params() + model.layout().offset("logit_scale") : nullptr;

  std::ofstream metrics;
  if (!options.metrics_path.empty()) {
    metrics.open(options.metrics_path, std::ios::trunc);
    require(static_cast<bool>(metrics), options.metrics_path, ": cannot write");
  }
  auto evaluate = [&](int64_t step) {
#ifdef BFM_WITH_CUDA
    const model::Losses l = on_gpu ? gpu->forward(validation.batch, "held-out batch")
                                   : model.forward(validation.batch, "held-out batch");
#else
    const model::Losses l = model.forward(validation.batch, "held-out batch");
#endif
    if (metrics.is_open()) {
      nlohmann::json j{{"step", step}, {"split", "validation"}};
      for (const auto& [name, v] : named_losses(l)) j[name] = v;
      metrics << j.dump() << "\n" << std::flush;
    }
    return l;
  };

  if (options.verbose)
    runtime::log_line("pretrain: " + std::to_string(model.arena_size()) + " parameters, objectives " +
                      nlohmann::json(m.objectives()).dump() + ", " + std::to_string(m.n_tokens()) +
                      " tokens per window, batch " + std::to_string(t.batch_size) + ", " + std::to_string(t.steps) +
                      " steps, on " + (on_gpu ? "the GPU (" + t.precision + ")" : std::string("the CPU")));
  result.first = evaluate(0);
  if (options.verbose) runtime::log_line(describe("held-out loss at step 0", result.first));

  runtime::Stopwatch clock;
  const int64_t tokens_per_sample = m.mae ? m.n_tokens() - m.n_masked_tokens() : m.n_tokens();
  for (int64_t step = 0; step < t.steps; ++step) {
    draw_batch(batch, rc, data, data_rng, mask_rng);
    const double lr = runtime::learning_rate(t.optimizer.lr, step, t.warmup_steps, t.steps, t.min_lr_ratio);
    double norm = 0;
    model::Losses losses;
#ifdef BFM_WITH_CUDA
    if (on_gpu) {
      const model::GpuStepResult r = gpu->train_step(batch.batch, lr);
      losses = r.losses;
      norm = r.grad_norm;
      if (!r.applied) {
        ++result.skipped_steps;
        runtime::log_line("step " + std::to_string(step + 1) + ": non-finite loss or gradient, update skipped");
      }
    }
#endif
    if (!on_gpu) losses = model.forward(batch.batch);
    if (on_gpu) {
      // done above
    } else if (!losses.total || !std::isfinite(*losses.total)) {
      ++result.skipped_steps;  // a non-finite loss: skip the update rather than poison the weights
      runtime::log_line("step " + std::to_string(step + 1) + ": non-finite loss, update skipped");
    } else {
      model.zero_grads();
      model.backward();
      norm = optimizer.grad_norm(model.grads());
      if (!std::isfinite(norm)) {
        ++result.skipped_steps;
        runtime::log_line("step " + std::to_string(step + 1) + ": non-finite gradient, update skipped");
      } else {
        optimizer.step(model.params(), model.grads(), lr);
        if (logit_scale && *logit_scale > max_logit_scale) *logit_scale = max_logit_scale;
      }
    }
    if (metrics.is_open()) {
      nlohmann::json j{{"step", step + 1}, {"split", "train"}, {"lr", lr}, {"grad_norm", norm}};
      for (const auto& [name, v] : named_losses(losses)) j[name] = v;
      metrics << j.dump() << "\n";
    }
    if (options.verbose && ((step + 1) % t.log_every == 0 || step + 1 == t.steps)) {
      const double elapsed = clock.seconds();
      runtime::ProgressFields f;
      f.step = step + 1;
      f.total_steps = t.steps;
      f.losses = named_losses(losses);
      f.lr = lr;
      f.grad_norm = norm;
      f.samples_per_s = double(step + 1) * t.batch_size / elapsed;
      f.tokens_per_s = f.samples_per_s * double(tokens_per_sample);
      f.elapsed_s = elapsed;
      runtime::log_line(runtime::format_progress(f));
    }
  }
  result.seconds = clock.seconds();
  result.last = evaluate(t.steps);
#ifdef BFM_WITH_CUDA
  if (on_gpu) gpu->store_params(model.params());  // the checkpoint is written from the CPU arena
#endif
  if (options.verbose) {
    std::string line = describe(("held-out loss after " + std::to_string(t.steps) + " steps").c_str(), result.last);
    if (result.first.total && result.last.total) {
      std::ostringstream os;
      os.precision(3);
      os << " (" << 100.0 * (1.0 - *result.last.total / *result.first.total) << "% below step 0)";
      line += os.str();
    }
    runtime::log_line(line);
    if (result.skipped_steps)
      runtime::log_line(std::to_string(result.skipped_steps) + " steps skipped for non-finite values");
  }
  return result;
}

}  // namespace bfm::launch
