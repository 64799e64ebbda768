// Synthetic fMRI windows with known structure, generated in memory: what the quick start and the tests train on
// until a corpus is given (`bfm synth` writes whole corpora to shards).
//
// Each window is parcel activity driven by K latent networks with smooth spatial maps over parcels placed in 3-D:
//   x[t, p] = sum_k map[k, p] (s_k(t) + a[c, k] h(t - onset)) + noise
// s_k is an AR(2) oscillator with its own frequency (intrinsic dynamics, so the next time patch is predictable);
// the maps make parcels co-vary (so masked parcels are recoverable from visible ones); a stimulus of category c
// adds a block response a[c, :] shaped by a haemodynamic response h; the window's stimulus embedding is the
// category's vector plus noise (so brain and stimulus can be paired). Each window is cut from a longer run that is
// z-scored per parcel, as the data pipeline does.
#pragma once

#include <cstdint>
#include <vector>

namespace bfm {
class Rng;
}

namespace bfm::io {

// Shared with io/synthetic_corpus.h (`bfm synth`).
// P parcels at random points of the unit ball (xyz [P, 3]) and K smooth network maps over them ([K, P]): a parcel
// belongs mostly to its nearest network centre (as parcels fall into the canonical resting-state networks) and a
// little to the others, falling off with distance. Draws from rng only.
std::vector<float> random_network_maps(Rng& rng, int P, int K, std::vector<double>& xyz);
// The canonical double-gamma haemodynamic response at `seconds` after a unit impulse (peak about 5 s, undershoot
// about 15 s).
double canonical_hrf(double seconds);

struct SyntheticWindowsConfig {
  int n_parcels = 64;
  int window = 64;
  int stim_dim = 16;
  int n_networks = 6;
  int n_categories = 16;
  double noise = 0.3;        // observation noise relative to unit-variance latents
  double stim_gain = 1.5;    // size of the stimulus response relative to intrinsic dynamics
  uint64_t seed = 0;         // fixes maps, frequencies and category vectors (the "ground truth")
};

class SyntheticWindows {
 public:
  explicit SyntheticWindows(const SyntheticWindowsConfig& config);

  // x [B, T, P] and, when stim is not null, stim [B, S]; category [B] may be null. Draws from rng only.
  void sample(int B, Rng& rng, float* x, float* stim, int32_t* category) const;

  const SyntheticWindowsConfig& config() const { return config_; }
  const std::vector<float>& network_maps() const { return maps_; }  // [K, P]

 private:
  SyntheticWindowsConfig config_;
  std::vector<float> maps_;        // [K, P]
  std::vector<double> freq_;       // [K] cycles per time point
  std::vector<float> response_;    // [C, K]
  std::vector<float> category_embedding_;  // [C, S]
  std::vector<double> hrf_;        // haemodynamic response, sampled per time point
};

}  // namespace bfm::io
