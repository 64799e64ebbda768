// The GPU model against the CPU model: one step in float32 (losses, every gradient tensor, parameters after AdamW),
// one step in bf16 (looser), repeatability, fine-tuning's path (encoder-only forward, backward from the encoder's
// output tokens), a training checkpoint's round trip, and 200 bf16 training steps whose held-out loss follows the CPU
// run's. Every test skips itself where there is no GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <barrier>
#include <cmath>
#include <memory>
#include <mutex>
#include <thread>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "../kernels/cuda_test_util.h"
#include "kernels/adamw.h"
#include "launch/train/run_config.h"
#include "launch/train/pretrain.h"
#include "model/cpu/cpu_model.h"
#include "model/cuda/cuda_model.h"
#include "model/masking.h"
#include "base/error.h"
#include "runtime/optimizer.h"
#include "base/rng.h"

namespace {

using bfm::launch::TrainOptions;

using bfm::model::CpuBrainModel;
using bfm::model::CudaBrainModel;
using bfm::model::Precision;
using bfm::model::ModelConfig;

ModelConfig small_config(const std::string& objectives) {
  ModelConfig c;
  c.n_parcels = 20, c.window = 40, c.patch_len = 10, c.d_model = 64, c.n_heads = 2, c.n_layers = 2;
  c.mlp_ratio = 4, c.mask_ratio = 0.5, c.stim_dim = 8, c.proj_dim = 16;
  c.mae = objectives.find("mae") != std::string::npos;
  c.causal = objectives.find("causal") != std::string::npos;
  c.contrastive = objectives.find("contrastive") != std::string::npos;
  if (c.mae) c.decoder = bfm::model::DecoderConfig{32, 1, 2};
  return c;
}

struct Inputs {
  std::vector<float> x, stim;
  std::vector<uint8_t> mask;
  bfm::model::Batch batch;
};

Inputs make_inputs(const ModelConfig& c, int B, uint64_t seed) {
  Inputs in;
  bfm::Rng rng(seed);
  in.x.resize(int64_t(B) * c.window * c.n_parcels);
  for (float& v : in.x) v = float(rng.normal());
  in.stim.resize(int64_t(B) * c.stim_dim);
  for (float& v : in.stim) v = float(rng.normal());
  in.mask.resize(int64_t(B) * c.n_tokens());
  bfm::model::make_masks(in.mask.data(), B, c.n_time(), c.n_parcels, c.mask_ratio, bfm::model::MaskStrategy::random,
                         rng);
  in.batch = {B, in.x.data(), c.mae ? in.mask.data() : nullptr, c.contrastive ? in.stim.data() : nullptr};
  return in;
}

// A CPU model whose every parameter is off its initial value (non-zero biases, LayerNorm weights off 1), so each
// gradient path carries signal.
std::unique_ptr<CpuBrainModel> perturbed_model(const ModelConfig& c, uint64_t seed) {
  auto m = std::make_unique<CpuBrainModel>(c);
  m->initialize(seed);
  bfm::Rng rng(seed + 99);
  for (int64_t i = 0; i < m->arena_size(); ++i) m->params()[i] += float(0.02 * rng.normal());
  return m;
}

std::vector<float> slice(const std::vector<float>& arena, const bfm::model::ParamInfo& p) {
  return {arena.begin() + p.offset, arena.begin() + p.offset + p.size};
}

void compare_step(const std::string& objectives, Precision precision, double loss_tol, double grad_tol,
                  double param_tol) {
  SCOPED_TRACE(objectives + (precision == Precision::fp32 ? " fp32" : " bf16"));
  const ModelConfig c = small_config(objectives);
  auto cpu = perturbed_model(c, 3);
  CudaBrainModel gpu(c, precision);
  gpu.load_params(cpu->params());
  const Inputs in = make_inputs(c, 6, 11);

  cpu->zero_grads();
  const auto lc = cpu->forward(in.batch);
  cpu->backward();
  gpu.zero_grads();
  const auto lg = gpu.forward_backward(in.batch);
  ASSERT_TRUE(lc.total && lg.total);
  EXPECT_NEAR(*lg.total, *lc.total, loss_tol * std::abs(*lc.total));
  if (lc.mae) {
    EXPECT_NEAR(*lg.mae, *lc.mae, loss_tol * std::abs(*lc.mae));
  }
  if (lc.causal) {
    EXPECT_NEAR(*lg.causal, *lc.causal, loss_tol * std::abs(*lc.causal));
  }
  if (lc.contrastive) {
    EXPECT_NEAR(*lg.contrastive, *lc.contrastive, loss_tol * std::abs(*lc.contrastive));
  }
  EXPECT_LT(bfm::test::norm_rel_error(gpu.encoder_out(), cpu->encoder_out()), loss_tol) << "encoder output";
  EXPECT_LT(bfm::test::norm_rel_error(gpu.pooled(), cpu->pooled()), loss_tol) << "pooled";
  EXPECT_EQ(gpu.reconstruction().empty(), cpu->reconstruction().empty());
  if (!cpu->reconstruction().empty()) {
    EXPECT_LT(bfm::test::norm_rel_error(gpu.reconstruction(), cpu->reconstruction()), loss_tol) << "reconstruction";
  }
  EXPECT_EQ(gpu.next_prediction().empty(), cpu->next_prediction().empty());
  if (!cpu->next_prediction().empty()) {
    EXPECT_LT(bfm::test::norm_rel_error(gpu.next_prediction(), cpu->next_prediction()), loss_tol) << "next_pred";
  }

  std::vector<float> g_gpu(cpu->arena_size()), g_cpu(cpu->grads(), cpu->grads() + cpu->arena_size());
  gpu.store_grads(g_gpu.data());
  EXPECT_EQ(bfm::test::count_nonfinite(g_gpu), 0u);
  for (const auto& p : cpu->layout().params()) {
    const auto want = slice(g_cpu, p);
    double norm = 0;
    for (float v : want) norm += double(v) * v;
    if (norm == 0) continue;  // e.g. a head that gets no gradient from this batch: checked equal below
    EXPECT_LT(bfm::test::norm_rel_error(slice(g_gpu, p), want), grad_tol) << "gradient of " << p.name;
  }

  // One AdamW step on the device against the CPU AdamW applied to the device's own gradients (so the optimizer is
  // checked apart from the gradients' precision: Adam's first step moves each weight by about lr * sign(g), which
  // flips for gradients near zero under any rounding difference).
  std::vector<bfm::runtime::ArenaSegment> segments;
  for (const auto& p : cpu->layout().params()) segments.push_back({p.offset, p.size, p.weight_decay});
  bfm::runtime::AdamW opt(cpu->arena_size(), segments, {});
  std::vector<float> p_cpu(cpu->arena_size());
  gpu.store_params(p_cpu.data());
  const double norm_cpu = opt.step(p_cpu.data(), g_gpu.data(), 1e-3);
  bool applied = false;
  const double norm_gpu = gpu.optimizer_step(1e-3, &applied);
  EXPECT_TRUE(applied);
  EXPECT_NEAR(norm_gpu, norm_cpu, 1e-5 * norm_cpu);
  std::vector<float> p_gpu(cpu->arena_size());
  gpu.store_params(p_gpu.data());
  for (const auto& p : cpu->layout().params())
    EXPECT_LT(bfm::test::norm_rel_error(slice(p_gpu, p), slice(p_cpu, p)), param_tol) << "parameter " << p.name;
  if (c.contrastive) {  // logit_scale stays clamped at ln(100) on both sides
    const int64_t o = cpu->layout().offset("logit_scale");
    EXPECT_LE(p_gpu[o], float(CpuBrainModel::kMaxLogitScale));
  }
}

TEST(GpuModel, Fp32StepMatchesCpuMae) {
  SKIP_WITHOUT_GPU();
  compare_step("mae+contrastive", Precision::fp32, 2e-5, 2e-4, 1e-6);
}

TEST(GpuModel, Fp32StepMatchesCpuCausal) {
  SKIP_WITHOUT_GPU();
  compare_step("causal+contrastive", Precision::fp32, 2e-5, 2e-4, 1e-6);
}

TEST(GpuModel, Bf16StepFollowsCpu) {
  SKIP_WITHOUT_GPU();
  // bf16 activations: losses within a per cent, gradients within a few per cent of the CPU's.
  compare_step("mae+contrastive", Precision::bf16, 1e-2, 6e-2, 1e-6);
  compare_step("causal", Precision::bf16, 1e-2, 6e-2, 1e-6);
}

TEST(GpuModel, Bf16StepRepeatsBitForBit) {
  SKIP_WITHOUT_GPU();
  const ModelConfig c = small_config("mae+contrastive");
  auto cpu = perturbed_model(c, 5);
  const Inputs in = make_inputs(c, 6, 12);
  std::vector<float> first;
  for (int run = 0; run < 2; ++run) {
    CudaBrainModel gpu(c, Precision::bf16);
    gpu.load_params(cpu->params());
    gpu.zero_grads();
    gpu.forward_backward(in.batch);
    std::vector<float> g(cpu->arena_size());
    gpu.store_grads(g.data());
    if (run == 0) first = g;
    else EXPECT_TRUE(g == first) << "two identical bf16 steps gave different gradients";
  }
}

bool is_head(const std::string& name) {
  return name.rfind("decoder.", 0) == 0 || name.rfind("next_head.", 0) == 0 || name.rfind("brain_proj.", 0) == 0 ||
         name.rfind("stim_proj.", 0) == 0 || name == "logit_scale";
}

// Fine-tuning's path against CpuBrainModel's: the encoder-only forward (pooled embedding, encoder output, no heads and
// no losses) and backward_tokens with a fixed random d_enc_out (every encoder and embedding gradient; the heads'
// gradients stay exactly zero), then that the gradient accumulates and an AdamW step runs on it.
void compare_finetune_path(const std::string& objectives, Precision precision, bool with_mask, double out_tol,
                    double grad_tol) {
  SCOPED_TRACE(objectives + (precision == Precision::fp32 ? " fp32" : " bf16") +
               (with_mask ? " (mask: visible tokens only)" : ""));
  const ModelConfig c = small_config(objectives);
  auto cpu = perturbed_model(c, 3);
  CudaBrainModel gpu(c, precision);
  gpu.load_params(cpu->params());
  Inputs in = make_inputs(c, 6, 11);
  if (!with_mask) in.batch.mask = nullptr;  // fine-tuning encodes every token
  in.batch.encoder_only = true;
  const int B = in.batch.size, D = c.d_model;
  const int64_t n = cpu->arena_size();
  const float scale = 0.5f;

  cpu->zero_grads();
  const auto lc = cpu->forward(in.batch);
  ASSERT_FALSE(lc.total.has_value());
  bfm::Rng rng(21);
  std::vector<float> d_enc(size_t(B) * cpu->encoder_tokens() * D);
  for (float& v : d_enc) v = float(rng.normal());
  cpu->backward_tokens(d_enc.data(), scale);
  const std::vector<float> g_cpu(cpu->grads(), cpu->grads() + n);

  // forward() with encoder_only: no head runs and no loss comes back.
  const auto lg = gpu.forward(in.batch);
  EXPECT_FALSE(lg.total || lg.mae || lg.causal || lg.contrastive) << "encoder_only computes no objective loss";
  EXPECT_TRUE(gpu.reconstruction().empty());
  EXPECT_TRUE(gpu.next_prediction().empty());
  EXPECT_EQ(gpu.encoder_tokens(), cpu->encoder_tokens());
  EXPECT_LT(bfm::test::norm_rel_error(gpu.pooled(), cpu->pooled()), out_tol) << "pooled (forward)";
  // forward_backward with encoder_only has nothing to back-propagate: the gradients stay as they are (zero).
  gpu.zero_grads();
  EXPECT_FALSE(gpu.forward_backward(in.batch).total.has_value());
  {
    std::vector<float> g(n, 1.0f);
    gpu.store_grads(g.data());
    for (const auto& p : cpu->layout().params()) {
      const auto got = slice(g, p);
      const auto bad = std::find_if(got.begin(), got.end(), [](float v) { return v != 0.0f; });
      EXPECT_TRUE(bad == got.end()) << "forward_backward(encoder_only) left " << p.name << "[" << (bad - got.begin())
                                    << "] = " << (bad == got.end() ? 0.0f : *bad) << " (should stay zero)";
    }
  }

  // forward_pooled implies encoder_only.
  bfm::model::Batch full = in.batch;
  full.encoder_only = false;
  gpu.zero_grads();
  const std::vector<float> pooled = gpu.forward_pooled(full);
  ASSERT_EQ(pooled.size(), size_t(B) * D);
  EXPECT_EQ(bfm::test::count_nonfinite(pooled), 0u);
  EXPECT_LT(bfm::test::norm_rel_error(pooled, cpu->pooled()), out_tol) << "pooled";
  EXPECT_LT(bfm::test::norm_rel_error(gpu.encoder_out(), cpu->encoder_out()), out_tol) << "encoder output";
  EXPECT_TRUE(gpu.reconstruction().empty());
  EXPECT_TRUE(gpu.next_prediction().empty());
  gpu.backward_tokens(d_enc.data(), scale);

  std::vector<float> g_gpu(n);
  gpu.store_grads(g_gpu.data());
  EXPECT_EQ(bfm::test::count_nonfinite(g_gpu), 0u);
  for (const auto& p : cpu->layout().params()) {
    const auto want = slice(g_cpu, p), got = slice(g_gpu, p);
    if (is_head(p.name)) {
      EXPECT_TRUE(want == std::vector<float>(p.size, 0.0f)) << "CPU gradient of head " << p.name;
      EXPECT_TRUE(got == std::vector<float>(p.size, 0.0f)) << "GPU gradient of head " << p.name;
      continue;
    }
    double norm = 0;
    for (float v : want) norm += double(v) * v;
    EXPECT_GT(norm, 0.0) << "no gradient reaches " << p.name;
    EXPECT_LT(bfm::test::norm_rel_error(got, want), grad_tol) << "gradient of " << p.name;
  }

  // grads += scale * ...: a second call with twice the scale leaves three times the first gradient.
  gpu.backward_tokens(d_enc.data(), 2 * scale);
  std::vector<float> g3(n), want3(n);
  gpu.store_grads(g3.data());
  for (int64_t i = 0; i < n; ++i) want3[i] = 3 * g_gpu[i];
  EXPECT_LT(bfm::test::norm_rel_error(g3, want3), 1e-5) << "backward_tokens does not accumulate";

  // One fine-tuning step: AdamW over the arena on these gradients (the global norm is theirs).
  double norm2 = 0;
  for (float v : g3) norm2 += double(v) * v;
  bool applied = false;
  const double norm = gpu.optimizer_step(1e-3, &applied);
  EXPECT_TRUE(applied);
  EXPECT_NEAR(norm, std::sqrt(norm2), 1e-5 * std::sqrt(norm2));
  EXPECT_EQ(gpu.steps_taken(), 1);
  std::vector<float> after(n);
  gpu.store_params(after.data());
  EXPECT_EQ(bfm::test::count_nonfinite(after), 0u);
  const std::vector<float> before(cpu->params(), cpu->params() + n);
  for (const auto& p : cpu->layout().params()) {
    if (!is_head(p.name)) {
      EXPECT_FALSE(slice(after, p) == slice(before, p)) << "the step left " << p.name << " unchanged";
    }
  }
}

TEST(GpuModel, Fp32FinetunePathMatchesCpuMaeContrastive) {
  SKIP_WITHOUT_GPU();
  compare_finetune_path("mae+contrastive", Precision::fp32, false, 2e-5, 2e-4);
  compare_finetune_path("mae+contrastive", Precision::fp32, true, 2e-5, 2e-4);
}

TEST(GpuModel, Fp32FinetunePathMatchesCpuCausal) {
  SKIP_WITHOUT_GPU();
  compare_finetune_path("causal", Precision::fp32, false, 2e-5, 2e-4);
}

TEST(GpuModel, Bf16FinetunePathFollowsCpu) {
  SKIP_WITHOUT_GPU();
  compare_finetune_path("mae+contrastive", Precision::bf16, false, 1e-2, 6e-2);
  compare_finetune_path("causal", Precision::bf16, false, 1e-2, 6e-2);
}

// A training checkpoint's round trip on the device: model A trains a few steps, its parameters, AdamW moments and
// step count go through host buffers (what bfm pretrain writes to a checkpoint) into a new model B, and one more
// identical step on A and on B ends in bit-identical parameters and moments.
void checkpoint_round_trip(const std::string& objectives, Precision precision) {
  SCOPED_TRACE(objectives + (precision == Precision::fp32 ? " fp32" : " bf16"));
  const ModelConfig c = small_config(objectives);
  auto init = perturbed_model(c, 7);
  const int64_t n = init->arena_size();
  const double lr = 2e-3;
  CudaBrainModel a(c, precision);
  a.load_params(init->params());
  for (int s = 0; s < 3; ++s) {
    const Inputs in = make_inputs(c, 6, 100 + s);
    const auto r = a.train_step(in.batch, lr);
    ASSERT_TRUE(r.applied) << "step " << s;
  }
  ASSERT_EQ(a.steps_taken(), 3);
  std::vector<float> params(n), m(n), v(n);
  a.store_params(params.data());
  a.store_moments(m.data(), v.data());
  const int64_t steps = a.steps_taken();
  EXPECT_EQ(bfm::test::count_nonfinite(params), 0u);
  EXPECT_FALSE(m == std::vector<float>(n, 0.0f)) << "no first moment after 3 steps";

  CudaBrainModel b(c, precision);
  b.load_params(params.data());
  b.load_moments(m.data(), v.data());
  b.set_steps_taken(steps);
  EXPECT_EQ(b.steps_taken(), steps);
  {  // what went in reads back unchanged
    std::vector<float> p2(n), m2(n), v2(n);
    b.store_params(p2.data());
    b.store_moments(m2.data(), v2.data());
    EXPECT_TRUE(p2 == params && m2 == m && v2 == v) << "load/store of the checkpoint state is not exact";
  }

  const Inputs in = make_inputs(c, 6, 200);
  const auto ra = a.train_step(in.batch, lr);
  const auto rb = b.train_step(in.batch, lr);
  ASSERT_TRUE(ra.applied && rb.applied);
  ASSERT_TRUE(ra.losses.total && rb.losses.total);
  EXPECT_EQ(*ra.losses.total, *rb.losses.total) << "the restored model's forward differs";
  EXPECT_EQ(ra.grad_norm, rb.grad_norm);
  EXPECT_EQ(a.steps_taken(), b.steps_taken());
  std::vector<float> pa(n), pb(n), ma(n), mb(n), va(n), vb(n);
  a.store_params(pa.data());
  b.store_params(pb.data());
  a.store_moments(ma.data(), va.data());
  b.store_moments(mb.data(), vb.data());
  EXPECT_FALSE(pa == params) << "the step changed nothing";
  int64_t differ = 0, first = -1;
  for (int64_t i = 0; i < n; ++i)
    if (std::memcmp(&pa[i], &pb[i], sizeof(float)) != 0) {
      if (first < 0) first = i;
      ++differ;
    }
  EXPECT_EQ(differ, 0) << "parameters differ after the resumed step (first at arena index " << first << ": "
                       << (first >= 0 ? pa[first] : 0.f) << " vs " << (first >= 0 ? pb[first] : 0.f) << ")";
  EXPECT_TRUE(ma == mb && va == vb) << "moments differ after the resumed step";
}

TEST(GpuModel, Bf16CheckpointRoundTripIsBitExact) {
  SKIP_WITHOUT_GPU();
  checkpoint_round_trip("mae+contrastive", Precision::bf16);
  checkpoint_round_trip("causal", Precision::bf16);
}

TEST(GpuModel, Fp32CheckpointRoundTripIsBitExact) {
  SKIP_WITHOUT_GPU();
  checkpoint_round_trip("causal+contrastive", Precision::fp32);
}

// An all-gather among threads of one process: each thread (a rank) deposits its block, all wait, each copies the
// whole (rank order); the second wait keeps a fast rank from overwriting the buffer before every copy is done.
class ThreadAllgather {
 public:
  explicit ThreadAllgather(int ranks) : ranks_(ranks), barrier_(ranks) {}
  bfm::model::Allgather for_rank(int rank) {
    return [this, rank](const float* mine, float* all, int64_t n) {
      {
        std::lock_guard<std::mutex> lock(mutex_);
        if (int64_t(buffer_.size()) < ranks_ * n) buffer_.resize(size_t(ranks_ * n));
        std::copy_n(mine, n, buffer_.data() + rank * n);
      }
      barrier_.arrive_and_wait();
      std::copy_n(buffer_.data(), ranks_ * n, all);
      barrier_.arrive_and_wait();
    };
  }

 private:
  int64_t ranks_;
  std::barrier<> barrier_;
  std::mutex mutex_;
  std::vector<float> buffer_;
};

struct RankResult {
  bfm::model::Losses losses;
  std::vector<float> grads;
};

// R ranks (threads) of one back-end, each with its B rows of the global batch `in`, the contrastive group set.
template <typename MakeModel>
std::vector<RankResult> run_group(const ModelConfig& c, const std::vector<float>& params, const Inputs& in, int B,
                                  int R, MakeModel make) {
  ThreadAllgather gather(R);
  std::vector<RankResult> out(static_cast<size_t>(R));
  std::vector<std::string> errors(static_cast<size_t>(R));
  std::vector<std::thread> threads;
  for (int r = 0; r < R; ++r)
    threads.emplace_back([&, r] {
      try {
        std::unique_ptr<bfm::model::BrainModel> m = make();
        m->load_params(params.data());
        m->set_contrastive_group(r, R, gather.for_rank(r));
        bfm::model::Batch b = in.batch;
        b.size = B;
        b.x += int64_t(r) * B * c.window * c.n_parcels;
        if (b.mask) b.mask += int64_t(r) * B * c.n_tokens();
        b.stim += int64_t(r) * B * c.stim_dim;
        m->zero_grads();
        out[size_t(r)].losses = m->forward_backward(b);
        out[size_t(r)].grads.resize(size_t(m->arena_size()));
        m->store_grads(out[size_t(r)].grads.data());
      } catch (const std::exception& e) {
        errors[size_t(r)] = e.what();
      }
    });
  for (auto& t : threads) t.join();
  for (int r = 0; r < R; ++r) EXPECT_EQ(errors[size_t(r)], "") << "rank " << r;
  return out;
}

TEST(GpuModel, ContrastiveGroupOverRanksMatchesCpu) {
  SKIP_WITHOUT_GPU();
  // Two ranks (threads) share CLIP's negatives through an all-gather: on the GPU (fp32) as on the CPU, rank by rank;
  // and the group's contrastive loss is the one-model loss over the global batch.
  const ModelConfig c = small_config("mae+contrastive");
  auto cpu = perturbed_model(c, 5);
  const std::vector<float> params(cpu->params(), cpu->params() + cpu->arena_size());
  const int B = 3, R = 2;
  const Inputs in = make_inputs(c, B * R, 23);
  const auto on_cpu = run_group(c, params, in, B, R, [&] { return std::make_unique<CpuBrainModel>(c); });
  const auto on_gpu =
      run_group(c, params, in, B, R, [&] { return std::make_unique<CudaBrainModel>(c, Precision::fp32); });
  ASSERT_EQ(on_cpu.size(), size_t(R));
  ASSERT_EQ(on_gpu.size(), size_t(R));
  cpu->zero_grads();
  const auto whole = cpu->forward(in.batch);
  ASSERT_TRUE(whole.contrastive);
  for (int r = 0; r < R; ++r) {
    SCOPED_TRACE("rank " + std::to_string(r));
    const auto& g = on_gpu[size_t(r)];
    const auto& h = on_cpu[size_t(r)];
    ASSERT_TRUE(g.losses.contrastive && h.losses.contrastive && g.losses.mae && h.losses.mae);
    EXPECT_NEAR(*h.losses.contrastive, *whole.contrastive, 1e-5 * std::abs(*whole.contrastive));
    EXPECT_NEAR(*g.losses.contrastive, *h.losses.contrastive, 2e-5 * std::abs(*h.losses.contrastive));
    EXPECT_NEAR(*g.losses.mae, *h.losses.mae, 2e-5 * std::abs(*h.losses.mae));
    EXPECT_EQ(bfm::test::count_nonfinite(g.grads), 0u);
    for (const auto& p : cpu->layout().params()) {
      const auto want = slice(h.grads, p);
      double norm = 0;
      for (float v : want) norm += double(v) * v;
      if (norm == 0) continue;
      EXPECT_LT(bfm::test::norm_rel_error(slice(g.grads, p), want), 2e-4) << "gradient of " << p.name;
    }
  }
}

TEST(GpuModel, UnsupportedHeadDimIsAClearError) {
  SKIP_WITHOUT_GPU();
  ModelConfig c = small_config("causal");
  c.n_heads = 4;  // head dim 16
  try {
    CudaBrainModel gpu(c, Precision::bf16);
    FAIL() << "no error for head dim 16";
  } catch (const bfm::Error& e) {
    EXPECT_NE(std::string(e.what()).find("head dim"), std::string::npos) << e.what();
  }
}

// 200 steps of bfm pretrain on the GPU in bf16 and on the CPU, same seed and data: the held-out losses before and
// after agree, and both fall.
TEST(GpuModel, Bf16TrainingFollowsCpu) {
  SKIP_WITHOUT_GPU();
  const std::vector<std::string> base = {
      "model.n_parcels=16", "model.window=32", "model.patch_len=4", "model.d_model=64", "model.n_heads=2",
      "model.n_layers=2", "model.decoder.d_model=32", "model.decoder.n_layers=2", "model.decoder.n_heads=1",
      "train.steps=200", "train.batch_size=16", "train.lr=2e-3", "train.warmup_steps=20", "model.stim_dim=8",
      "model.proj_dim=16", "data.noise=0.1", "data.stim_gain=3", "model.mask_ratio=0.5",
      "model.objectives=[\"mae\", \"contrastive\"]"};
  auto with = [&](const char* device) {
    auto o = base;
    o.push_back(std::string("train.device=") + device);
    return bfm::launch::load_run_config("", o);
  };
  const auto cpu = bfm::launch::pretrain(with("cpu"), TrainOptions::quiet());
  const auto gpu = bfm::launch::pretrain(with("cuda"), TrainOptions::quiet());
  ASSERT_TRUE(cpu.last.mae && gpu.last.mae && cpu.last.contrastive && gpu.last.contrastive);
  std::printf("held-out losses, cpu: total %.4f -> %.4f (mae %.4f -> %.4f, contrastive %.4f -> %.4f)\n",
              *cpu.first.total, *cpu.last.total, *cpu.first.mae, *cpu.last.mae, *cpu.first.contrastive,
              *cpu.last.contrastive);
  std::printf("held-out losses, gpu: total %.4f -> %.4f (mae %.4f -> %.4f, contrastive %.4f -> %.4f)\n",
              *gpu.first.total, *gpu.last.total, *gpu.first.mae, *gpu.last.mae, *gpu.first.contrastive,
              *gpu.last.contrastive);
  EXPECT_EQ(gpu.skipped_steps, 0);
  EXPECT_NEAR(*gpu.first.total, *cpu.first.total, 1e-2 * *cpu.first.total);
  // Both runs learn (the contrastive loss falls far below chance, ln 16 = 2.77) and end close together: bf16
  // rounding sends the two runs down different paths, so only the level is compared, not the trajectory.
  EXPECT_LT(*gpu.last.total, 0.8 * *gpu.first.total);
  EXPECT_NEAR(*gpu.last.total, *cpu.last.total, 0.1 * *cpu.last.total);
  EXPECT_NEAR(*gpu.last.mae, *cpu.last.mae, 0.1 * *cpu.last.mae);
  EXPECT_NEAR(*gpu.last.contrastive, *cpu.last.contrastive, 0.25 * *cpu.last.contrastive + 0.05);
}

}  // namespace
