// One training step (forward + backward + AdamW) of the brain model on the CPU, timed.
// The reference size: P=64, T=64, L=8, D=128, 4 layers, 4 heads, batch 16, mae 0.75 (decoder 64 wide,
// 2 layers). Prints one JSON line; bench/run_cpu_step.sh puts it beside PyTorch's number for the same model.
//   bench_step [--threads N] [--steps N] [--warmup N] [--objectives mae|causal|mae+contrastive]
#include <omp.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "io/synthetic_windows.h"
#include "model/cpu/cpu_model.h"
#include "model/masking.h"
#include "runtime/optimizer.h"
#include "runtime/blas_core.h"
#include "runtime/progress.h"
#include "base/rng.h"

int main(int argc, char** argv) {
  bfm::runtime::select_blas_core(argv);
  int threads = omp_get_max_threads(), steps = 20, warmup = 3, batch = 16;
  std::string objectives = "mae";
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--threads")) threads = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--steps")) steps = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--warmup")) warmup = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--batch")) batch = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--objectives")) objectives = argv[i + 1];
  }
  omp_set_num_threads(threads);

  bfm::model::ModelConfig c;
  c.n_parcels = 64, c.window = 64, c.patch_len = 8, c.d_model = 128, c.n_heads = 4, c.n_layers = 4;
  c.mlp_ratio = 4, c.mask_ratio = 0.75;
  c.mae = objectives.find("mae") != std::string::npos;
  c.causal = objectives.find("causal") != std::string::npos;
  c.contrastive = objectives.find("contrastive") != std::string::npos;
  if (c.mae) c.decoder = bfm::model::DecoderConfig{64, 4, 2};
  c.stim_dim = 16, c.proj_dim = 32;
  bfm::model::CpuBrainModel model(c);
  model.initialize(0);

  bfm::io::SyntheticWindows data({c.n_parcels, c.window, c.stim_dim, 6, 16, 0.3, 1.5, 1});
  bfm::Rng rng(1);
  std::vector<float> x(int64_t(batch) * c.window * c.n_parcels), stim(int64_t(batch) * c.stim_dim);
  std::vector<uint8_t> mask(int64_t(batch) * c.n_tokens());
  data.sample(batch, rng, x.data(), stim.data(), nullptr);
  bfm::model::make_masks(mask.data(), batch, c.n_time(), c.n_parcels, c.mask_ratio, bfm::model::MaskStrategy::random,
                         rng);
  bfm::model::Batch b{batch, x.data(), c.mae ? mask.data() : nullptr, c.contrastive ? stim.data() : nullptr};

  std::vector<bfm::runtime::ArenaSegment> segments;
  for (const auto& p : model.layout().params()) segments.push_back({p.offset, p.size, p.weight_decay});
  bfm::runtime::AdamW optimizer(model.arena_size(), segments, {});

  std::vector<double> fwd, bwd, opt, total;
  for (int s = 0; s < warmup + steps; ++s) {
    bfm::Stopwatch t0;
    model.zero_grads();
    model.forward(b);
    const double t_fwd = t0.seconds();
    model.backward();
    const double t_bwd = t0.seconds();
    optimizer.step(model.params(), model.grads(), 1e-4);
    const double t_all = t0.seconds();
    if (s >= warmup) {
      fwd.push_back(t_fwd);
      bwd.push_back(t_bwd - t_fwd);
      opt.push_back(t_all - t_bwd);
      total.push_back(t_all);
    }
  }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  std::printf(
      "{\"impl\": \"bfm\", \"blas_core\": \"%s\", \"objectives\": \"%s\", \"threads\": %d, \"batch\": %d, \"step_ms\": %.2f, "
      "\"forward_ms\": %.2f, \"backward_ms\": %.2f, \"optimizer_ms\": %.2f, \"samples_per_s\": %.1f}\n",
      bfm::runtime::blas_core_name().c_str(), objectives.c_str(), threads, batch, 1e3 * median(total), 1e3 * median(fwd), 1e3 * median(bwd), 1e3 * median(opt),
      batch / median(total));
  return 0;
}
