#include "runtime/optimizer.h"

#include <cmath>
#include <numbers>

#include "kernels/adamw.h"
#include "base/error.h"

namespace bfm::runtime {

double learning_rate(double base, int64_t step, int64_t warmup_steps, int64_t total_steps, double min_ratio) {
  if (warmup_steps > 0 && step < warmup_steps) return base * double(step + 1) / double(warmup_steps);
  const int64_t decay_steps = total_steps - warmup_steps;
  if (decay_steps <= 0) return base;
  const double progress = std::min(1.0, double(step - warmup_steps) / double(decay_steps));
  const double cosine = 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
  return base * (min_ratio + (1.0 - min_ratio) * cosine);
}

AdamW::AdamW(int64_t arena_size, std::vector<ArenaSegment> segments, AdamWConfig config)
    : segments_(std::move(segments)), config_(config), m_(arena_size, 0.0f), v_(arena_size, 0.0f) {
  for (const auto& s : segments_)
    require(s.offset >= 0 && s.offset + s.size <= arena_size, "AdamW: segment [", s.offset, ", ", s.offset + s.size,
            ") outside the arena of ", arena_size);
}

double AdamW::grad_norm(const float* grads) const {
  double sum = 0.0;
  for (const auto& s : segments_) sum += kernels::cpu::sum_of_squares(grads + s.offset, s.size);
  return std::sqrt(sum);
}

double AdamW::step(float* params, const float* grads, double lr) {
  const double norm = grad_norm(grads);
  const double scale = (config_.grad_clip > 0 && norm > config_.grad_clip) ? config_.grad_clip / norm : 1.0;
  ++step_;
  for (const auto& s : segments_)
    kernels::cpu::adamw_update(params + s.offset, m_.data() + s.offset, v_.data() + s.offset, grads + s.offset,
                               s.size, float(lr), float(config_.beta1), float(config_.beta2), float(config_.eps),
                               s.weight_decay ? float(config_.weight_decay) : 0.0f, float(scale), step_);
  return norm;
}

}  // namespace bfm::runtime
