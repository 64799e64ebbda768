// AdamW over the parameter arena with fp32 moments, global-norm gradient clipping, and the learning-rate schedule
// (linear warm-up, then cosine decay to min_lr_ratio * lr). Segments say which arena ranges take weight decay.
#pragma once

#include <cstdint>
#include <vector>

namespace bfm::runtime {

struct AdamWConfig {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.05;
  double grad_clip = 1.0;  // max global L2 norm; <= 0 turns clipping off
};

struct ArenaSegment {
  int64_t offset = 0;
  int64_t size = 0;
  bool weight_decay = false;
};

// lr at `step` (0-based) of `total_steps`: linear warm-up over warmup_steps, then cosine to min_ratio * base.
double learning_rate(double base, int64_t step, int64_t warmup_steps, int64_t total_steps, double min_ratio);

class AdamW {
 public:
  AdamW(int64_t arena_size, std::vector<ArenaSegment> segments, AdamWConfig config);

  // Global L2 norm of grads over the segments.
  double grad_norm(const float* grads) const;
  // Clips by the global norm, then updates every segment. Returns the norm before clipping.
  double step(float* params, const float* grads, double lr);

  int64_t steps_taken() const { return step_; }
  std::vector<float>& first_moment() { return m_; }
  std::vector<float>& second_moment() { return v_; }
  void set_steps_taken(int64_t step) { step_ = step; }
  const AdamWConfig& config() const { return config_; }

 private:
  std::vector<ArenaSegment> segments_;
  AdamWConfig config_;
  std::vector<float> m_, v_;
  int64_t step_ = 0;
};

}  // namespace bfm::runtime
