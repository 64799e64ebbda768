// Whole-model gradient check: the analytic gradient of loss_total against central finite differences, for every
// parameter tensor of tiny models of every objective combination (odd sizes: P = 7, N = 21, dh = 4 and 8).
// The directional derivative along a random direction per tensor is compared, so each tensor is checked as a whole;
// a few single elements per tensor are checked as well.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "model/cpu/cpu_model.h"
#include "model/masking.h"
#include "base/rng.h"

namespace {

using bfm::model::CpuBrainModel;
using bfm::model::ModelConfig;

ModelConfig tiny(bool mae, bool causal, bool contrastive) {
  ModelConfig c;
  c.n_parcels = 7, c.window = 15, c.patch_len = 5, c.d_model = 16, c.n_heads = 2, c.n_layers = 2, c.mlp_ratio = 2;
  c.mae = mae, c.causal = causal, c.contrastive = contrastive;
  c.mask_ratio = 0.6;
  if (mae) c.decoder = bfm::model::DecoderConfig{12, 3, 1};
  c.stim_dim = 5, c.proj_dim = 6;
  c.weight_mae = 1.0, c.weight_causal = 0.7, c.weight_contrastive = 0.5;
  return c;
}

struct Inputs {
  std::vector<float> x, stim;
  std::vector<uint8_t> mask;
  bfm::model::Batch batch;
};

Inputs make_inputs(const ModelConfig& c, int B, uint64_t seed) {
  bfm::Rng rng(seed);
  Inputs in;
  in.x.resize(size_t(B) * c.window * c.n_parcels);
  for (auto& v : in.x) v = float(rng.normal());
  in.stim.resize(size_t(B) * c.stim_dim);
  for (auto& v : in.stim) v = float(rng.normal());
  in.mask.resize(size_t(B) * c.n_tokens());
  bfm::model::make_masks(in.mask.data(), B, c.n_time(), c.n_parcels, c.mask_ratio, bfm::model::MaskStrategy::random,
                         rng);
  in.batch = {B, in.x.data(), in.mask.data(), in.stim.data()};
  return in;
}

// Parameters away from the symmetric initialisation, so that every path carries gradient.
void randomise(CpuBrainModel& model, uint64_t seed) {
  bfm::Rng rng(seed);
  for (const auto& p : model.layout().params()) {
    float* w = model.params() + p.offset;
    for (int64_t i = 0; i < p.size; ++i) {
      const bool is_norm = p.name.find("ln") != std::string::npos && p.name.find(".weight") != std::string::npos;
      w[i] = float(is_norm ? 1.0 + 0.2 * rng.normal() : 0.25 * rng.normal());
    }
    if (p.name == "logit_scale") w[0] = 1.5f;
  }
}

double loss_of(CpuBrainModel& model, const bfm::model::Batch& batch) { return *model.forward(batch).total; }

void check_gradients(const ModelConfig& config, int B) {
  CpuBrainModel model(config);
  randomise(model, 11);
  const Inputs in = make_inputs(config, B, 5);
  model.zero_grads();
  ASSERT_TRUE(model.forward(in.batch).total.has_value());
  model.backward();
  const std::vector<float> grad(model.grads(), model.grads() + model.arena_size());

  bfm::Rng rng(99);
  for (const auto& p : model.layout().params()) {
    SCOPED_TRACE(p.name);
    float* w = model.params() + p.offset;
    const std::vector<float> saved(w, w + p.size);
    // Directional derivative along a random unit direction u.
    std::vector<double> u(p.size);
    double norm = 0;
    for (auto& v : u) {
      v = rng.normal();
      norm += v * v;
    }
    norm = std::sqrt(norm);
    double analytic = 0;
    for (int64_t i = 0; i < p.size; ++i) analytic += (u[i] /= norm) * grad[p.offset + i];
    const double eps = 2e-3;
    for (int64_t i = 0; i < p.size; ++i) w[i] = float(saved[i] + eps * u[i]);
    const double plus = loss_of(model, in.batch);
    for (int64_t i = 0; i < p.size; ++i) w[i] = float(saved[i] - eps * u[i]);
    const double minus = loss_of(model, in.batch);
    std::copy(saved.begin(), saved.end(), w);
    const double numeric = (plus - minus) / (2 * eps);
    EXPECT_NEAR(analytic, numeric, 3e-3 + 2e-2 * std::abs(numeric)) << "directional derivative";
    // The analytic gradient must not be trivially zero where the loss depends on the tensor.
    if (std::abs(numeric) > 1e-3) {
      EXPECT_GT(std::abs(analytic), 0.0);
    }

    // Two single elements.
    for (int k = 0; k < 2; ++k) {
      const int64_t i = int64_t(rng.below(uint64_t(p.size)));
      w[i] = saved[i] + float(eps);
      const double lp = loss_of(model, in.batch);
      w[i] = saved[i] - float(eps);
      const double lm = loss_of(model, in.batch);
      w[i] = saved[i];
      const double fd = (lp - lm) / (double(saved[i] + float(eps)) - double(saved[i] - float(eps)));
      EXPECT_NEAR(grad[p.offset + i], fd, 3e-3 + 3e-2 * std::abs(fd)) << "element " << i;
    }
  }
}

TEST(ModelGradcheck, Mae) { check_gradients(tiny(true, false, false), 2); }
TEST(ModelGradcheck, MaeContrastive) { check_gradients(tiny(true, false, true), 3); }
TEST(ModelGradcheck, Causal) { check_gradients(tiny(false, true, false), 2); }
TEST(ModelGradcheck, CausalContrastive) { check_gradients(tiny(false, true, true), 3); }

}  // namespace

// Fine-tuning's path: a task loss on the encoder's output tokens, here sum(w * encoder_out) with a fixed random w
// (so dLoss/dencoder_out = w), sent back with backward_tokens, against finite differences of that loss; the heads get
// nothing.
void check_token_gradients(const ModelConfig& config, int B) {
  CpuBrainModel model(config);
  randomise(model, 13);
  Inputs in = make_inputs(config, B, 7);
  in.batch.mask = nullptr;  // fine-tuning runs the encoder over all tokens
  in.batch.encoder_only = true;
  bfm::Rng rng(3);
  std::vector<float> w(size_t(B) * config.n_tokens() * config.d_model);
  for (auto& v : w) v = float(rng.normal());
  auto task_loss = [&] {
    EXPECT_FALSE(model.forward(in.batch).total.has_value()) << "encoder_only computes no objective loss";
    double s = 0;
    const std::vector<float>& out = model.encoder_out_ref();
    EXPECT_EQ(out.size(), w.size());
    for (size_t i = 0; i < w.size(); ++i) s += double(w[i]) * out[i];
    return s;
  };
  model.zero_grads();
  task_loss();
  ASSERT_TRUE(model.reconstruction().empty() && model.next_prediction().empty());
  std::vector<std::string> ready;
  model.backward_tokens(w.data(), 1.0f, [&](const std::string& prefix) { ready.push_back(prefix); });
  const std::vector<float> grad(model.grads(), model.grads() + model.arena_size());

  for (const auto& p : model.layout().params()) {
    SCOPED_TRACE(p.name);
    bool covered = false;
    for (const auto& prefix : ready) covered |= p.name.rfind(prefix, 0) == 0;
    EXPECT_TRUE(covered) << "no on_ready prefix covers it";
    const bool head = p.name.rfind("decoder.", 0) == 0 || p.name.rfind("next_head.", 0) == 0 ||
                      p.name.rfind("brain_proj.", 0) == 0 || p.name.rfind("stim_proj.", 0) == 0 ||
                      p.name == "logit_scale";
    float* x = model.params() + p.offset;
    const std::vector<float> saved(x, x + p.size);
    for (int k = 0; k < 3; ++k) {
      const int64_t i = int64_t(rng.below(uint64_t(p.size)));
      const double eps = 2e-3;
      x[i] = saved[i] + float(eps);
      const double lp = task_loss();
      x[i] = saved[i] - float(eps);
      const double lm = task_loss();
      x[i] = saved[i];
      const double fd = (lp - lm) / (double(saved[i] + float(eps)) - double(saved[i] - float(eps)));
      if (head) {
        EXPECT_EQ(grad[p.offset + i], 0.0f);
        EXPECT_EQ(fd, 0.0);
      } else {
        EXPECT_NEAR(grad[p.offset + i], fd, 3e-3 + 3e-2 * std::abs(fd)) << "element " << i;
      }
    }
  }
  // scale multiplies the whole gradient.
  model.zero_grads();
  task_loss();
  model.backward_tokens(w.data(), 0.5f);
  for (int64_t i = 0; i < model.arena_size(); ++i) ASSERT_FLOAT_EQ(model.grads()[i], 0.5f * grad[i]) << i;
}

TEST(ModelGradcheck, TokenPathMaeContrastive) { check_token_gradients(tiny(true, false, true), 3); }
TEST(ModelGradcheck, TokenPathCausal) { check_token_gradients(tiny(false, true, false), 2); }
