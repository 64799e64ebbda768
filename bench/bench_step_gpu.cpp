// One training step (forward, fused losses, backward, clipping, AdamW) of the brain model on the GPU, timed with
// the step's own host synchronisation (one per step: the losses and the gradient norm are read back).
//   bench_step_gpu --model brainlm|causal [--batch B] [--steps N] [--warmup N] [--precision bf16|fp32]
//                  [--peak-tflops F] [--profile]
//   brainlm: P=424, T=200, L=20 (N = 4,240 tokens), D=768, 12 layers, 12 heads, MAE with mask ratio 0.75 (1,060
//            visible tokens), decoder 512 wide, 8 heads, 4 layers over all 4,240 tokens.
//   causal:  the same encoder over all 4,240 tokens, time-causal attention, next-patch loss.
// Model FLOPs count every matrix product of forward and backward (2 per multiply-add; backward twice forward) and
// attention's score and value products (causal: only the visible key blocks), not the recomputation inside the
// fused attention backward, as in the usual MFU definition. Prints one CSV row:
//   bfm,<model>,<precision>,<batch>,<ms_per_step>,<samples_per_s>,<model_tflops>,<mfu>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "io/synthetic_windows.h"
#include "model/cpu/cpu_model.h"
#include "model/cuda/cuda_model.h"
#include "model/masking.h"
#include "runtime/progress.h"
#include "base/rng.h"

namespace {

// Forward FLOPs of one sample through a transformer stack of n tokens (attention over `visible_pairs` query-key
// pairs per head).
double stack_flops(int layers, double n, double width, double hidden, double visible_pairs) {
  const double linear = 2.0 * n * (width * 3 * width + width * width + 2 * width * hidden);
  const double attention = 2.0 * 2.0 * visible_pairs * width;  // QK^T and PV over all heads
  return layers * (linear + attention);
}

}  // namespace

int main(int argc, char** argv) {
  std::string which = "brainlm", precision = "bf16";
  int batch = 32, steps = 10, warmup = 3;
  double peak = 989.0;  // H100/H200 SXM dense bf16, TFLOP/s (datasheet)
  bool profile = false;
  for (int i = 1; i < argc; ++i)
    if (!std::strcmp(argv[i], "--profile")) profile = true;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--model")) which = argv[i + 1];
    else if (!std::strcmp(argv[i], "--batch")) batch = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--steps")) steps = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--warmup")) warmup = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--precision")) precision = argv[i + 1];
    else if (!std::strcmp(argv[i], "--peak-tflops")) peak = std::atof(argv[i + 1]);
  }
  bfm::model::ModelConfig c;
  c.n_parcels = 424, c.window = 200, c.patch_len = 20, c.d_model = 768, c.n_heads = 12, c.n_layers = 12;
  c.mlp_ratio = 4;
  if (which == "brainlm") {
    c.mae = true, c.mask_ratio = 0.75;
    c.decoder = bfm::model::DecoderConfig{512, 8, 4};
  } else if (which == "causal") {
    c.causal = true;
  } else {
    std::fprintf(stderr, "bench_step_gpu: unknown --model %s (brainlm or causal)\n", which.c_str());
    return 2;
  }
  try {
    bfm::model::CpuBrainModel cpu(c);
    cpu.initialize(0);
    bfm::model::CudaBrainModel model(c, bfm::model::parse_precision(precision));
    model.load_params(cpu.params());

    bfm::io::SyntheticWindows data({c.n_parcels, c.window, 0, 6, 16, 0.3, 1.5, 1});
    bfm::Rng rng(1);
    std::vector<float> x(int64_t(batch) * c.window * c.n_parcels);
    std::vector<uint8_t> mask(int64_t(batch) * c.n_tokens());
    data.sample(batch, rng, x.data(), nullptr, nullptr);
    if (c.mae)
      bfm::model::make_masks(mask.data(), batch, c.n_time(), c.n_parcels, c.mask_ratio,
                             bfm::model::MaskStrategy::random, rng);
    bfm::model::Batch b{batch, x.data(), c.mae ? mask.data() : nullptr, nullptr};

    std::vector<double> times;
    double loss = 0;
    for (int s = 0; s < warmup + steps; ++s) {
      bfm::Stopwatch t;
      const auto r = model.train_step(b, 1e-4);
      const double dt = t.seconds();
      if (s >= warmup) times.push_back(dt);
      loss = r.losses.total.value_or(-1);
    }
    std::sort(times.begin(), times.end());
    const double step_s = times[times.size() / 2];
    if (profile) {  // a few more steps with an event between every two ops: where the time goes
      model.set_profiling(true);
      const int n = 3;
      for (int s = 0; s < n; ++s) model.train_step(b, 1e-4);
      auto prof = model.take_profile();
      std::sort(prof.begin(), prof.end(), [](const auto& l, const auto& r) { return l.second > r.second; });
      double sum = 0;
      for (const auto& p : prof) sum += p.second / n;
      std::fprintf(stderr, "profile of %s %s batch %d (ms per step, %.1f ms accounted):\n", which.c_str(),
                   precision.c_str(), batch, sum);
      for (const auto& p : prof)
        std::fprintf(stderr, "  %-40s %8.2f  %5.1f%%\n", p.first.c_str(), p.second / n, 100.0 * p.second / n / sum);
    }

    const double N = c.n_tokens(), D = c.d_model, F = c.mlp_hidden();
    double fwd = 0;
    if (c.mae) {
      const double n_vis = N - c.n_masked_tokens(), Dd = c.decoder->d_model;
      fwd += stack_flops(c.n_layers, n_vis, D, F, n_vis * n_vis);
      fwd += 2.0 * n_vis * D * Dd;                                                     // decoder.embed
      fwd += stack_flops(c.decoder->n_layers, N, Dd, c.dec_mlp_hidden(), N * N);
      fwd += 2.0 * N * Dd * c.patch_len;                                               // head
    } else {
      const double nt = c.n_time(), P = c.n_parcels;
      const double pairs = P * P * nt * (nt + 1) / 2;  // query patch j sees key patches 0..j
      fwd += stack_flops(c.n_layers, N, D, F, pairs);
      fwd += 2.0 * N * D * c.patch_len;
    }
    fwd += 2.0 * N * c.patch_len * D;  // patch embedding (all tokens counted: an upper bound of a few MFLOPs)
    const double flops = 3.0 * fwd * batch;
    const double tflops = flops / step_s / 1e12;
    std::fprintf(stderr, "bench_step_gpu: %s %s batch %d: %.2f ms/step, loss %.4f, %.1f GB on the device\n",
                 which.c_str(), precision.c_str(), batch, step_s * 1e3, loss, model.device_bytes() / 1e9);
    std::printf("bfm,%s,%s,%d,%.2f,%.1f,%.1f,%.3f\n", which.c_str(), precision.c_str(), batch, step_s * 1e3,
                batch / step_s, tflops, tflops / peak);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_step_gpu: %s\n", e.what());
    return 1;
  }
  return 0;
}
