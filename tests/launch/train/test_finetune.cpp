// Fine-tuning (launch/train/finetune.h) on an in-memory synthetic corpus: the task loss on held-back pre-training subjects
// falls, on the CPU; on a GPU (skipped where there is none) it falls as well and follows the CPU run (bf16 against
// float32), and the fine-tuned weights come back to the host.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <set>
#include <vector>

#include "io/synthetic_corpus.h"
#include "launch/eval/data.h"
#include "launch/eval/evaluate.h"
#include "launch/eval/features.h"
#include "launch/train/finetune.h"
#include "model/cpu/cpu_model.h"
#include "runtime/comm.h"
#include "runtime/device.h"

namespace {

using namespace bfm;

launch::eval::EvalData make_data(int64_t window) {
  io::SyntheticCorpusConfig c;
  c.n_subjects = 24;
  c.n_parcels = 16;
  c.minutes = 12;
  c.n_studies = 2;
  c.n_categories = 3;
  c.n_clips = 30;
  c.stim_dim = 6;
  c.seed = 4;
  io::SyntheticCorpus corpus(c);
  launch::eval::EvalData data;
  data.corpus = "in-memory synthetic corpus";
  data.n_parcels = c.n_parcels;
  data.window = window;
  data.stim_dim = c.stim_dim;
  for (int64_t i = 0; i < c.n_subjects; ++i) {
    const io::SyntheticSubject s = corpus.subject(i);
    launch::eval::EvalSubject e;
    e.id = s.id;
    e.held_out = i >= 20;
    e.split = e.held_out ? "test" : "train";
    e.age = s.age, e.sex = s.sex, e.diagnosis = s.diagnosis;
    data.subjects.push_back(e);
    for (auto& r : corpus.subject_runs(s, i)) {
      launch::eval::EvalRun run;
      run.task = r.task;
      run.tr = corpus.studies()[size_t(s.study)].tr;
      run.length = r.length;
      run.timeseries = std::move(r.timeseries);
      run.stim = std::move(r.stim);
      run.label = std::move(r.label);
      data.subjects.back().runs.push_back(std::move(run));
      launch::eval::add_trials(data, int(i), int(data.subjects.back().runs.size()) - 1);
    }
  }
  return data;
}

model::ModelConfig tiny() {
  model::ModelConfig c;
  c.n_parcels = 16, c.window = 12, c.patch_len = 6, c.d_model = 64, c.n_heads = 2, c.n_layers = 1, c.mlp_ratio = 2;
  c.mae = true;
  c.mask_ratio = 0.5;
  c.decoder = model::DecoderConfig{32, 1, 1};
  return c;
}

launch::FinetuneOptions options(const std::string& device) {
  launch::FinetuneOptions o;
  o.task = "category";
  o.steps = 120;
  o.batch_size = 16;
  o.lr = 3e-3;
  o.head_lr = 3e-2;
  o.device = device;
  o.verbose = false;
  return o;
}

TEST(Finetune, TrialsComeFromTaskRunsWithinTheirRun) {
  const auto data = make_data(12);
  ASSERT_GT(data.trials.size(), 200u);
  EXPECT_EQ(data.n_categories, 3);
  for (const auto& t : data.trials) {
    const auto& run = data.subjects[size_t(t.subject)].runs[size_t(t.run)];
    ASSERT_LE(t.onset + data.window, run.length);
    ASSERT_EQ(run.label[size_t(t.onset)], t.label);
    ASSERT_TRUE(t.onset == 0 || run.label[size_t(t.onset - 1)] != t.label ||
                std::vector<float>(&run.stim[size_t((t.onset - 1) * 6)], &run.stim[size_t(t.onset * 6)]) !=
                    data.stimuli[size_t(t.stimulus)])
        << "a trial starts where its stimulus starts";
  }
}

TEST(Finetune, CpuLowersTheHeldBackLoss) {
  const auto data = make_data(12);
  model::CpuBrainModel init(tiny());
  init.initialize(1);
  auto comm = runtime::make_self_communicator();
  const auto r = launch::finetune(init, data, options("cpu"), *comm);
  EXPECT_GT(r.validation_trials, 0);
  EXPECT_NEAR(r.first_validation_loss, std::log(3.0), 0.15);
  EXPECT_LT(r.last_validation_loss, r.first_validation_loss - 0.05);
  EXPECT_GT(r.validation_accuracy, 0.45);
  // The encoder moved, and the head is the trained one.
  double moved = 0;
  const std::vector<float> trained = r.model->params_copy();
  for (int64_t i = 0; i < init.arena_size(); ++i) moved += std::abs(trained[size_t(i)] - init.params()[i]);
  EXPECT_GT(moved, 1e-3);
  EXPECT_EQ(r.head.outputs(), 3);
  EXPECT_EQ(r.head.tokens(), 32);
  const int64_t C = r.head.components();
  EXPECT_GE(C, 1);
  EXPECT_EQ(r.head.size(), C * 64 + C + 3 * 32 * C + 3);
}

// Linear probe, then fine-tune: through the head-only steps the encoder stays bit for bit where it started while the
// head learns; after them the encoder moves too. (A frozen encoder that still moved, or a head-only phase that never
// ended, fails one of the two.)
TEST(Finetune, HeadOnlyStepsKeepTheEncoderThenReleaseIt) {
  const auto data = make_data(12);
  model::CpuBrainModel init(tiny());
  init.initialize(1);
  auto comm = runtime::make_self_communicator();
  auto o = options("cpu");
  o.steps = 120;
  o.head_steps = 120;
  const auto probe = launch::finetune(init, data, o, *comm);
  const std::vector<float> frozen = probe.model->params_copy();
  for (int64_t i = 0; i < init.arena_size(); ++i) ASSERT_EQ(frozen[size_t(i)], init.params()[i]) << "parameter " << i;
  EXPECT_LT(probe.last_validation_loss, probe.first_validation_loss - 0.02) << "the head alone learns";
  o.steps = 140;  // 120 head-only steps, then 20 of everything
  const auto both = launch::finetune(init, data, o, *comm);
  const std::vector<float> trained = both.model->params_copy();
  double moved = 0;
  for (int64_t i = 0; i < init.arena_size(); ++i) moved += std::abs(trained[size_t(i)] - init.params()[i]);
  EXPECT_GT(moved, 1e-3);
}

TEST(Finetune, GpuFollowsTheCpu) {
#ifndef BFM_WITH_CUDA
  GTEST_SKIP() << "built without CUDA";
#else
  if (runtime::cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  const auto data = make_data(12);
  model::CpuBrainModel init(tiny());
  init.initialize(1);
  auto comm = runtime::make_self_communicator();
  const auto cpu = launch::finetune(init, data, options("cpu"), *comm);
  const auto gpu = launch::finetune(init, data, options("cuda"), *comm);
  EXPECT_NEAR(gpu.first_validation_loss, cpu.first_validation_loss, 2e-2);
  EXPECT_LT(gpu.last_validation_loss, gpu.first_validation_loss - 0.05);
  EXPECT_NEAR(gpu.last_validation_loss, cpu.last_validation_loss, 0.1);
  double moved = 0;
  const std::vector<float> trained = gpu.model->params_copy();
  for (int64_t i = 0; i < init.arena_size(); ++i) {
    ASSERT_TRUE(std::isfinite(trained[size_t(i)]));
    moved += std::abs(trained[size_t(i)] - init.params()[i]);
  }
  EXPECT_GT(moved, 1e-3) << "the GPU's weights did not come back";
#endif
}

}  // namespace

namespace {

TEST(EvalFeatures, GpuMatchesCpu) {
#ifndef BFM_WITH_CUDA
  GTEST_SKIP() << "built without CUDA";
#else
  if (runtime::cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  const auto data = make_data(12);
  model::CpuBrainModel m(tiny());
  m.initialize(5);
  std::vector<launch::eval::WindowRef> windows;
  for (size_t i = 0; i < data.trials.size(); i += 7)
    windows.push_back({data.trials[i].subject, data.trials[i].run, data.trials[i].onset});
  auto comm = runtime::make_self_communicator();
  const auto cpu = launch::eval::window_features(m, data, windows, *comm, "cpu");
  const auto gpu = launch::eval::window_features(m, data, windows, *comm, "cuda");
  ASSERT_EQ(cpu.size(), gpu.size());
  ASSERT_EQ(cpu.size(), windows.size() * size_t(2 * 64));
  double num = 0, den = 0;
  for (size_t i = 0; i < cpu.size(); ++i) {
    num += (cpu[i] - gpu[i]) * (cpu[i] - gpu[i]);
    den += cpu[i] * cpu[i];
  }
  EXPECT_LT(std::sqrt(num / den), 1e-4) << "GPU (fp32) features differ from the CPU's";
  // The probe's path: the token basis fitted from the GPU's tokens, and every token projected on it.
  const auto basis_cpu = launch::eval::fit_token_basis(m, data, windows, *comm, "cpu", 5);
  const auto basis_gpu = launch::eval::fit_token_basis(m, data, windows, *comm, "cuda", 5);
  ASSERT_EQ(basis_gpu.components, 5);
  for (int c = 0; c < 4; ++c) {
    EXPECT_NEAR(basis_gpu.variance[size_t(c)], basis_cpu.variance[size_t(c)], 1e-3 * basis_cpu.variance[0]) << c;
    // A component well apart from its neighbours is determined up to its sign (the sign is fixed by convention).
    const auto& v = basis_cpu.variance;
    const double gap = std::min(c > 0 ? v[size_t(c - 1)] - v[size_t(c)] : 1e300,
                                v[size_t(c)] - v[size_t(c + 1)]);
    if (gap < 1e-2 * v[0]) continue;
    double dot = 0;
    for (int a = 0; a < basis_cpu.d_model; ++a)
      dot += basis_cpu.basis[size_t(c * basis_cpu.d_model + a)] * basis_gpu.basis[size_t(c * basis_cpu.d_model + a)];
    EXPECT_GT(dot, 0.999) << "component " << c << " of the GPU's token basis";
  }
  const launch::eval::TokenProjection projection = launch::eval::token_projection(basis_cpu);
  const auto tok_cpu = launch::eval::window_features(m, data, windows, *comm, "cpu",
                                                     launch::eval::TokenPool::per_token, &projection);
  const auto tok_gpu = launch::eval::window_features(m, data, windows, *comm, "cuda",
                                                     launch::eval::TokenPool::per_token, &projection);
  ASSERT_EQ(tok_cpu.size(), tok_gpu.size());
  num = den = 0;
  for (size_t i = 0; i < tok_cpu.size(); ++i) {
    num += (tok_cpu[i] - tok_gpu[i]) * (tok_cpu[i] - tok_gpu[i]);
    den += tok_cpu[i] * tok_cpu[i];
  }
  EXPECT_LT(std::sqrt(num / den), 1e-4) << "GPU (fp32) token features differ from the CPU's";
#endif
}

}  // namespace

namespace {

// Cross-validation by run: with every subject's task run cut in two, each subject has exactly two folds (one per
// run), and with cv_unit "stimulus" as many as asked.
TEST(EvalProtocol, CvByRunKeepsRunsWhole) {
  auto data = make_data(12);
  launch::eval::EvalData split = data;
  split.trials.clear();
  split.stimuli.clear();
  split.stimulus_index.clear();
  for (int s = 0; s < int(split.subjects.size()); ++s) {
    auto& runs = split.subjects[size_t(s)].runs;
    std::vector<launch::eval::EvalRun> cut;
    for (auto& r : runs) {
      if (r.label.empty() || r.task == "rest") {
        cut.push_back(r);
        continue;
      }
      const int64_t half = r.length / 2, P = split.n_parcels, S = split.stim_dim;
      for (int part = 0; part < 2; ++part) {
        launch::eval::EvalRun h = r;
        const int64_t a = part * half, b = part ? r.length : half;
        h.length = b - a;
        h.timeseries.assign(r.timeseries.begin() + a * P, r.timeseries.begin() + b * P);
        h.stim.assign(r.stim.begin() + a * S, r.stim.begin() + b * S);
        h.label.assign(r.label.begin() + a, r.label.begin() + b);
        cut.push_back(std::move(h));
      }
    }
    runs = std::move(cut);
    for (int r = 0; r < int(runs.size()); ++r) launch::eval::add_trials(split, s, r);
  }
  model::CpuBrainModel m(tiny());
  m.initialize(2);
  launch::eval::EvalModels models;
  models.pretrained = &m;
  launch::eval::EvalOptions o;
  o.tasks = {"category"};
  o.fractions = {1.0};
  o.verbose = false;
  auto comm = runtime::make_self_communicator();
  for (const std::string unit : {"run", "stimulus"}) {
    o.cv_unit = unit;
    const auto report = launch::eval::evaluate(split, models, o, *comm);
    std::map<std::string, std::set<int>> folds;
    for (const auto& r : report.rows)
      if (r.method == "ridge" && r.metric == "accuracy") folds[r.subject].insert(r.fold);
    ASSERT_EQ(folds.size(), 4u) << unit;  // the 4 held-out subjects
    for (const auto& [subject, f] : folds) EXPECT_EQ(f.size(), unit == "run" ? 2u : 5u) << subject << " " << unit;
  }
}

}  // namespace
