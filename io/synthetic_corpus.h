// A synthetic multi-study fMRI corpus with known structure, written as shards (docs/FORMAT.md) with its ground truth
// beside it (docs/FORMAT.md, "Synthetic corpus ground truth"). What `bfm synth` makes.
//
// Generative model, per run of subject i (study s, TR = tr_s) at time point t and parcel p:
//   z(t)    = K independent AR(2) oscillators (network k at freq_hz[k], damping time tau_s), unit variance
//   l(t)    = M_i z(t) + stim_gain * sum_lag hrf(lag * tr_s) u(t - lag)      latent network activity [K]
//   x(t, p) = gain_e * bias_e[p] * sum_k map_i[k, p] l_k(t) + noise_e * n(t, p)   then z-scored per parcel per run
// M_i = I + G + D_i + sum_j trait_ij E_j: the coupling (mixing) matrix, group coupling G, the subject's own deviation
// D_i, and the trait effects E_j (diagnosis, age, sex, score; each a sparse symmetric K x K matrix, so that a trait
// changes the correlation of two named networks by a known amount). map_i = group map * (1 + map_jitter * n).
// Subject i scans at site e of its study (sites_per_study sites each): scanner gain gain_e, noise sd noise_e and a
// smooth receive-coil profile bias_e[p] over the parcels' coordinates (so sites differ in SNR per parcel, which
// survives the z-scoring).
// u(t) is the response pattern of the clip on screen at time t (zero between clips and in rest runs): the clip's
// category pattern plus clip-specific variation. The stimulus embedding and label stored per time point are those of
// the clip on screen at t (not HRF-lagged): the brain response to it peaks about 5 s later.
//
// Everything is drawn from Rng::stream(seed, ...) keyed by what it describes (group, subject, run), so a corpus
// depends only on its config, never on how many ranks made it. Per time point the cost is O(K * P).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace bfm::io {

struct SyntheticCorpusConfig {
  int64_t n_subjects = 100;
  int n_parcels = 400;
  double minutes = 10.0;  // of scanning per subject (rest, plus an equal share of task where the study has one)
  int n_studies = 3;
  int sites_per_study = 2;  // scanners per study: gain, noise and coil profile each
  int n_networks = 8;
  int n_categories = 27;
  int n_clips = 2000;
  int stim_dim = 32;
  uint64_t seed = 0;
  bool float16 = false;
  int64_t subjects_per_shard = 256;
  int64_t chunk_rows = 256;   // time points per HDF5 chunk of the shards (docs/FORMAT.md)
  double stim_gain = 1.0;     // stimulus-driven latent amplitude relative to the unit-variance intrinsic dynamics
  double map_jitter = 0.15;   // relative per-subject deviation of the network maps
  double coupling_sd = 0.08;  // sd of each off-diagonal entry of a subject's coupling deviation D_i
};

// One study: its TR, its sites (indices into SyntheticCorpus::sites) and whether it has the emotion-video task.
struct SyntheticStudy {
  std::string name;
  double tr = 2.0;
  bool has_task = false;
  std::vector<int> sites;
};

// One scanner: gain, noise sd and coil profile (a relative gain per parcel, 1 + 0.25 * (direction . xyz)).
struct SyntheticSite {
  std::string name;  // "siteNN", numbered over all studies
  int study = 0;
  double gain = 1.0, noise = 0.5;
  std::vector<float> bias;  // [P]
};

// A subject's traits and its coupling matrix (deterministic from the seed and the subject index).
struct SyntheticSubject {
  std::string id;  // "<study>/sub-<index>"
  int study = 0;
  int site = 0;  // index into SyntheticCorpus::sites
  float age = 0;
  std::string sex;        // "F" or "M"
  std::string diagnosis;  // "control" or "patient"
  float score = 0;
  std::vector<float> coupling_deviation;  // D_i [K, K]
  std::vector<float> coupling;            // M_i [K, K]
};

// A trait effect: M += value * matrix, with value the trait's coded value (see `coded`).
struct TraitEffect {
  std::string trait;    // "diagnosis", "age", "sex", "score"
  std::string coding;   // how the trait becomes a number
  int network_a = 0, network_b = 0;
  double effect = 0;    // added to M[a, b] and M[b, a] per unit of the coded trait
};

class SyntheticCorpus {
 public:
  explicit SyntheticCorpus(const SyntheticCorpusConfig& config);

  const SyntheticCorpusConfig& config() const { return config_; }
  const std::vector<SyntheticStudy>& studies() const { return studies_; }
  const std::vector<SyntheticSite>& sites() const { return sites_; }
  const std::vector<TraitEffect>& trait_effects() const { return effects_; }
  int64_t n_shards() const;
  SyntheticSubject subject(int64_t index) const;
  // Subject `index`'s own network maps map_i [K, P] (ground_truth.h5 subjects/maps).
  std::vector<float> subject_maps(int64_t index) const;

  // Writes dir/shard-<j>.h5 for every shard j with j % ranks == rank (shard j holds subjects
  // [j * subjects_per_shard, (j + 1) * subjects_per_shard)). on_subject is called after each subject.
  // Needs HDF5 (throws bfm::Error otherwise).
  void write_shards(const std::string& dir, int rank, int ranks, const std::function<void()>& on_subject) const;
  // Writes dir/shard-<j>.h5 for each j in `shards` (a part of the corpus: io/corpus_manifest.h, shards_for).
  void write_shards(const std::string& dir, const std::vector<int64_t>& shards,
                    const std::function<void()>& on_subject) const;
  // Subjects in shard j.
  int64_t shard_subjects(int64_t shard) const;
  // The shards j in [0, n_shards) whose dir/shard-<j>.h5 does not exist.
  std::vector<int64_t> missing_shards(const std::string& dir) const;
  // dir/ground_truth.h5 and dir/ground_truth.json (one process).
  void write_ground_truth(const std::string& dir) const;
  // dir/manifest.json from the shards written (one process, after every rank's write_shards). Checks that every
  // shard is there and is this config's (parcels, storage, subject ids): throws bfm::Error naming missing shards or
  // the first one from another config.
  void write_manifest(const std::string& dir) const;

  // Runs of one subject into memory (what write_shards stores): timeseries [T, P] z-scored, stim [T, S], label [T].
  struct RunData {
    std::string task;  // "rest" or "emovideo"
    int64_t length = 0;
    std::vector<float> timeseries, stim;
    std::vector<int32_t> label;
  };
  std::vector<RunData> subject_runs(const SyntheticSubject& subject, int64_t index) const;

 private:
  SyntheticCorpusConfig config_;
  std::vector<SyntheticStudy> studies_;
  std::vector<SyntheticSite> sites_;
  std::vector<TraitEffect> effects_;
  std::vector<double> xyz_;             // [P, 3] unit ball
  std::vector<float> maps_;             // [K, P] group maps
  std::vector<float> group_coupling_;   // G [K, K]
  std::vector<double> freq_hz_;         // [K]
  double tau_s_ = 8.0;
  std::vector<float> category_response_;   // [C, K]
  std::vector<float> category_embedding_;  // [C, S]
  std::vector<float> clip_response_;       // [n_clips, K]
  std::vector<float> clip_embedding_;      // [n_clips, S]
  std::vector<int32_t> clip_category_;     // [n_clips]
};

}  // namespace bfm::io
