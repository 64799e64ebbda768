#include "io/synthetic_windows.h"

#include <cmath>
#include <numbers>

#include "base/error.h"
#include "base/rng.h"

namespace bfm::io {

std::vector<float> random_network_maps(Rng& rng, int P, int K, std::vector<double>& xyz) {
  xyz.assign(3 * int64_t(P), 0.0);
  for (int p = 0; p < P; ++p) {
    double v[3], r2;
    do {
      for (double& a : v) a = 2 * rng.uniform() - 1;
      r2 = v[0] * v[0] + v[1] * v[1] + v[2] * v[2];
    } while (r2 > 1);
    for (int a = 0; a < 3; ++a) xyz[3 * p + a] = v[a];
  }
  std::vector<int> centre(K);
  for (int k = 0; k < K; ++k) centre[k] = static_cast<int>(rng.below(P));
  std::vector<float> maps(int64_t(K) * P, 0.0f);
  for (int p = 0; p < P; ++p) {
    int nearest = 0;
    double best = 1e9;
    for (int k = 0; k < K; ++k) {
      double d2 = 0;
      for (int a = 0; a < 3; ++a) d2 += std::pow(xyz[3 * p + a] - xyz[3 * centre[k] + a], 2);
      if (d2 < best) best = d2, nearest = k;
      maps[int64_t(k) * P + p] = static_cast<float>(0.4 * std::exp(-d2 / (2 * 0.4 * 0.4)));
    }
    maps[int64_t(nearest) * P + p] = static_cast<float>(0.8 + 0.4 * rng.uniform());
  }
  return maps;
}

double canonical_hrf(double seconds) {
  const double u = seconds;
  if (u <= 0) return 0.0;
  return std::pow(u, 5) * std::exp(-u) / 120.0 - std::pow(u, 15) * std::exp(-u) / (6.0 * 1.307674368e12);
}

SyntheticWindows::SyntheticWindows(const SyntheticWindowsConfig& c) : config_(c) {
  require(c.n_parcels > 0 && c.window > 1 && c.n_networks > 0 && c.n_categories > 0,
          "synthetic windows: sizes must be positive");
  Rng rng = Rng::stream(c.seed, 0xB7A1);
  const int P = c.n_parcels, K = c.n_networks, C = c.n_categories, S = c.stim_dim;

  std::vector<double> xyz;
  maps_ = random_network_maps(rng, P, K, xyz);
  freq_.resize(K);
  for (int k = 0; k < K; ++k) freq_[k] = 0.02 + 0.10 * rng.uniform();
  response_.resize(int64_t(C) * K);
  for (auto& a : response_) a = static_cast<float>(rng.normal());
  category_embedding_.resize(int64_t(C) * std::max(S, 0));
  for (auto& e : category_embedding_) e = static_cast<float>(rng.normal());
  // Double-gamma HRF (peak about 5 samples, undershoot about 15), one sample per time point.
  hrf_.resize(24);
  for (size_t t = 0; t < hrf_.size(); ++t) {
    hrf_[t] = canonical_hrf(double(t));
  }
}

void SyntheticWindows::sample(int B, Rng& rng, float* x, float* stim, int32_t* category) const {
  const SyntheticWindowsConfig& c = config_;
  const int T = c.window, P = c.n_parcels, K = c.n_networks, S = c.stim_dim;
  const int burn_in = 64;
  // Each window is the middle third of a run three windows long, z-scored over the whole run (as the data pipeline
  // z-scores per run), so amplitudes inside the window keep their meaning.
  const int R = 3 * T, start = T;
  std::vector<double> latent(int64_t(R) * K), run(int64_t(R) * P);
  for (int b = 0; b < B; ++b) {
    // Intrinsic dynamics: a damped AR(2) oscillator per network, random phase.
    for (int k = 0; k < K; ++k) {
      const double r = 0.95, w = 2 * std::numbers::pi * freq_[k];
      const double a1 = 2 * r * std::cos(w), a2 = -r * r;
      double s1 = 0, s2 = 0;
      for (int t = -burn_in; t < R; ++t) {
        const double s = a1 * s1 + a2 * s2 + 0.3 * rng.normal();
        s2 = s1;
        s1 = s;
        if (t >= 0) latent[int64_t(t) * K + k] = s;
      }
    }
    // Stimulus: a block of the category's network response inside the window, convolved with the HRF.
    const int cat = static_cast<int>(rng.below(c.n_categories));
    const int onset = start + static_cast<int>(rng.below(std::max(1, T / 2)));
    const int duration = std::max(2, T / 4);
    for (int t = onset; t < R; ++t) {
      double drive = 0;
      for (size_t lag = 0; lag < hrf_.size() && int(lag) <= t; ++lag) {
        const int ts = t - int(lag);
        if (ts >= onset && ts < onset + duration) drive += hrf_[lag];
      }
      for (int k = 0; k < K; ++k) latent[int64_t(t) * K + k] += c.stim_gain * response_[int64_t(cat) * K + k] * drive;
    }
    for (int t = 0; t < R; ++t)
      for (int p = 0; p < P; ++p) {
        double v = c.noise * rng.normal();
        for (int k = 0; k < K; ++k) v += maps_[int64_t(k) * P + p] * latent[int64_t(t) * K + k];
        run[int64_t(t) * P + p] = v;
      }
    float* out = x + int64_t(b) * T * P;
    for (int p = 0; p < P; ++p) {
      double mean = 0, var = 0;
      for (int t = 0; t < R; ++t) mean += run[int64_t(t) * P + p];
      mean /= R;
      for (int t = 0; t < R; ++t) var += std::pow(run[int64_t(t) * P + p] - mean, 2);
      const double inv = 1.0 / std::sqrt(var / R + 1e-12);
      for (int t = 0; t < T; ++t)
        out[int64_t(t) * P + p] = static_cast<float>((run[int64_t(start + t) * P + p] - mean) * inv);
    }
    if (stim)
      for (int s = 0; s < S; ++s)
        stim[int64_t(b) * S + s] = static_cast<float>(category_embedding_[int64_t(cat) * S + s] + 0.1 * rng.normal());
    if (category) category[b] = cat;
  }
}

}  // namespace bfm::io
