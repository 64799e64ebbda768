#include "io/synthetic_corpus.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <numbers>
#include <sstream>

#include "io/corpus_manifest.h"
#include "io/shard.h"
#include "io/synthetic_windows.h"
#include "base/error.h"
#include "base/rng.h"

#ifdef BFM_WITH_HDF5
#include "io/h5_arrays.h"
#include "io/shard_reader.h"
#include "io/shard_writer.h"
#endif

namespace bfm::io {

namespace {

// Stream keys: (seed, subject index, what). The group's draws use an index no subject has.
constexpr uint64_t kGroupIndex = ~0ULL;
constexpr uint64_t kTraits = 1, kMaps = 2, kRunBase = 16, kSiteBase = 1000;

constexpr double kTrs[3] = {0.8, 1.5, 2.0};
constexpr double kGains[3] = {1.0, 1.3, 0.8};
constexpr double kNoises[3] = {0.5, 0.7, 0.9};

#ifdef BFM_WITH_HDF5
std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

std::string fmt(double v) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}
#endif

}  // namespace

SyntheticCorpus::SyntheticCorpus(const SyntheticCorpusConfig& c) : config_(c) {
  require(c.n_subjects > 0, "bfm synth: --subjects must be positive, got ", c.n_subjects);
  require(c.n_parcels >= 8, "bfm synth: --parcels must be at least 8, got ", c.n_parcels);
  require(c.minutes > 0 && std::isfinite(c.minutes), "bfm synth: --minutes must be positive, got ", c.minutes);
  require(c.n_studies >= 1, "bfm synth: --studies must be at least 1, got ", c.n_studies);
  require(c.sites_per_study >= 1 && c.sites_per_study <= 100, "bfm synth: --sites must be in 1..100, got ",
          c.sites_per_study);
  require(c.n_networks >= 6, "bfm synth: at least 6 networks are needed (the trait effects use networks 0..5), got ",
          c.n_networks);
  require(c.n_categories >= 1 && c.n_clips >= c.n_categories, "bfm synth: need n_clips >= n_categories >= 1");
  require(c.stim_dim >= 1, "bfm synth: --stim-dim must be positive, got ", c.stim_dim);
  require(c.subjects_per_shard >= 1, "bfm synth: subjects per shard must be positive");
  require(c.chunk_rows >= 1 && c.chunk_rows <= (int64_t(1) << 20), "bfm synth: --chunk-rows must be 1 to 1048576, got ",
          c.chunk_rows);
  const int P = c.n_parcels, K = c.n_networks, C = c.n_categories, S = c.stim_dim, N = c.n_clips;

  for (int s = 0; s < c.n_studies; ++s) {
    SyntheticStudy st;
    char name[32];
    std::snprintf(name, sizeof name, "study%02d", s + 1);
    st.name = name;
    st.tr = kTrs[s % 3];
    st.has_task = s % 3 != 2;  // every third study is rest only
    studies_.push_back(st);
  }
  // Known, sparse trait effects on the coupling of named network pairs (the decoding targets and their sizes).
  effects_ = {{"diagnosis", "patient = 1, control = 0", 0, 1, 0.30},
              {"age", "(age - 45) / 15", 2, 3, -0.12},
              {"sex", "F = +0.5, M = -0.5", 4, 5, 0.20},
              {"score", "score (standard normal)", 1, 2, 0.12}};

  Rng rng = Rng::stream(c.seed, kGroupIndex, 0);
  maps_ = random_network_maps(rng, P, K, xyz_);
  // Sites, from streams of their own (so that adding sites changes nothing else). A study's first site has the
  // study's base gain and noise; the others scatter around them.
  for (int s = 0; s < c.n_studies; ++s)
    for (int e = 0; e < c.sites_per_study; ++e) {
      const int index = static_cast<int>(sites_.size());
      Rng srng = Rng::stream(c.seed, kGroupIndex, kSiteBase + uint64_t(index));
      SyntheticSite site;
      char name[32];
      std::snprintf(name, sizeof name, "site%02d", index + 1);
      site.name = name;
      site.study = s;
      site.gain = kGains[s % 3] * (e == 0 ? 1.0 : 0.75 + 0.5 * srng.uniform());
      site.noise = kNoises[s % 3] * (e == 0 ? 1.0 : 0.75 + 0.5 * srng.uniform());
      // Coil profile: a random direction, relative gain 1 + 0.25 * (direction . xyz) over the unit ball.
      double dir[3], norm = 0;
      for (double& v : dir) {
        v = srng.normal();
        norm += v * v;
      }
      norm = std::sqrt(norm) + 1e-12;
      site.bias.resize(P);
      for (int p = 0; p < P; ++p) {
        double d = 0;
        for (int a = 0; a < 3; ++a) d += dir[a] / norm * xyz_[size_t(p) * 3 + a];
        site.bias[p] = static_cast<float>(1.0 + 0.25 * d);
      }
      studies_[s].sites.push_back(index);
      sites_.push_back(std::move(site));
    }
  freq_hz_.resize(K);
  for (auto& f : freq_hz_) f = 0.01 + 0.09 * rng.uniform();
  group_coupling_.assign(int64_t(K) * K, 0.0f);
  for (int a = 0; a < K; ++a)
    for (int b = 0; b < K; ++b)
      if (a != b) group_coupling_[a * K + b] = static_cast<float>(0.1 * rng.normal());
  category_response_.resize(int64_t(C) * K);
  for (auto& v : category_response_) v = static_cast<float>(rng.normal());
  category_embedding_.resize(int64_t(C) * S);
  for (auto& v : category_embedding_) v = static_cast<float>(rng.normal());
  clip_category_.resize(N);
  clip_response_.resize(int64_t(N) * K);
  clip_embedding_.resize(int64_t(N) * S);
  for (int i = 0; i < N; ++i) {
    const int cat = i % C;
    clip_category_[i] = cat;
    for (int k = 0; k < K; ++k)
      clip_response_[int64_t(i) * K + k] = category_response_[int64_t(cat) * K + k] + 0.5f * float(rng.normal());
    for (int s = 0; s < S; ++s)
      clip_embedding_[int64_t(i) * S + s] = category_embedding_[int64_t(cat) * S + s] + 0.5f * float(rng.normal());
  }
}

int64_t SyntheticCorpus::n_shards() const {
  return (config_.n_subjects + config_.subjects_per_shard - 1) / config_.subjects_per_shard;
}

int64_t SyntheticCorpus::shard_subjects(int64_t shard) const {
  const int64_t first = shard * config_.subjects_per_shard;
  return std::max<int64_t>(0, std::min(config_.n_subjects, first + config_.subjects_per_shard) - first);
}

std::vector<int64_t> SyntheticCorpus::missing_shards(const std::string& dir) const {
  std::vector<int64_t> missing;
  for (int64_t j = 0; j < n_shards(); ++j)
    if (!std::filesystem::exists(std::filesystem::path(dir) / shard_file_name(j))) missing.push_back(j);
  return missing;
}

SyntheticSubject SyntheticCorpus::subject(int64_t index) const {
  const int K = config_.n_networks;
  Rng rng = Rng::stream(config_.seed, uint64_t(index), kTraits);
  SyntheticSubject s;
  s.study = static_cast<int>(index % config_.n_studies);
  s.site = studies_[s.study].sites[size_t((index / config_.n_studies) % config_.sites_per_study)];
  char id[48];
  std::snprintf(id, sizeof id, "%s/sub-%06lld", studies_[s.study].name.c_str(), static_cast<long long>(index));
  s.id = id;
  s.age = static_cast<float>(18 + 62 * rng.uniform());
  // Built as std::string first: assigning the ternary's const char* trips a GCC 12 -Wrestrict false positive.
  s.sex = std::string(rng.uniform() < 0.5 ? "F" : "M");
  s.diagnosis = std::string(rng.uniform() < 0.3 ? "patient" : "control");
  s.score = static_cast<float>(rng.normal());
  s.coupling_deviation.assign(int64_t(K) * K, 0.0f);
  for (int a = 0; a < K; ++a)
    for (int b = 0; b < K; ++b)
      if (a != b) s.coupling_deviation[a * K + b] = static_cast<float>(config_.coupling_sd * rng.normal());
  s.coupling.resize(int64_t(K) * K);
  for (int i = 0; i < K * K; ++i) s.coupling[i] = group_coupling_[i] + s.coupling_deviation[i];
  for (int k = 0; k < K; ++k) s.coupling[k * K + k] += 1.0f;
  for (const auto& e : effects_) {
    double v = 0;
    if (e.trait == "diagnosis") v = s.diagnosis == "patient" ? 1.0 : 0.0;
    if (e.trait == "age") v = (s.age - 45.0) / 15.0;
    if (e.trait == "sex") v = s.sex == "F" ? 0.5 : -0.5;
    if (e.trait == "score") v = s.score;
    s.coupling[e.network_a * K + e.network_b] += static_cast<float>(e.effect * v);
    s.coupling[e.network_b * K + e.network_a] += static_cast<float>(e.effect * v);
  }
  return s;
}

std::vector<float> SyntheticCorpus::subject_maps(int64_t index) const {
  std::vector<float> map(maps_.size());
  Rng rng = Rng::stream(config_.seed, uint64_t(index), kMaps);
  for (size_t i = 0; i < map.size(); ++i)
    map[i] = maps_[i] * static_cast<float>(1.0 + config_.map_jitter * rng.normal());
  return map;
}

std::vector<SyntheticCorpus::RunData> SyntheticCorpus::subject_runs(const SyntheticSubject& subj,
                                                                    int64_t index) const {
  const SyntheticCorpusConfig& c = config_;
  const SyntheticStudy& st = studies_[subj.study];
  const int P = c.n_parcels, K = c.n_networks, S = c.stim_dim;
  const double tr = st.tr;
  const int64_t total = std::max<int64_t>(16, std::llround(c.minutes * 60.0 / tr));

  // The subject's own maps, with the site's coil profile folded in.
  std::vector<float> map = subject_maps(index);
  const SyntheticSite& site = sites_[size_t(subj.site)];
  for (int k = 0; k < K; ++k)
    for (int p = 0; p < P; ++p) map[size_t(k) * P + p] *= site.bias[size_t(p)];
  // AR(2) coefficients per network at this TR, innovation scaled for unit stationary variance.
  std::vector<double> a1(K), a2(K), sigma(K);
  for (int k = 0; k < K; ++k) {
    const double r = std::exp(-tr / tau_s_), w = 2 * std::numbers::pi * freq_hz_[k] * tr;
    a1[k] = 2 * r * std::cos(w);
    a2[k] = -r * r;
    const double var = (1 - a2[k]) / ((1 + a2[k]) * ((1 - a2[k]) * (1 - a2[k]) - a1[k] * a1[k]));
    sigma[k] = 1.0 / std::sqrt(var);
  }
  // HRF sampled at the TR, scaled so that a sustained stimulus gives a unit response.
  std::vector<double> hrf(static_cast<size_t>(std::ceil(32.0 / tr)));
  for (size_t l = 0; l < hrf.size(); ++l) hrf[l] = canonical_hrf(double(l) * tr) * tr / (5.0 / 6.0);

  std::vector<RunData> runs;
  const int64_t task_len = st.has_task ? total / 2 : 0;
  runs.push_back({"rest", total - task_len, {}, {}, {}});
  if (task_len > 0) runs.push_back({"emovideo", task_len, {}, {}, {}});

  for (size_t r = 0; r < runs.size(); ++r) {
    RunData& run = runs[r];
    const int64_t T = run.length;
    Rng rng = Rng::stream(c.seed, uint64_t(index), kRunBase + r);
    // Clip schedule: a gap of 2-4 s, a clip of 4-8 s, and so on (task runs only).
    std::vector<int32_t> clip_at(T, -1);
    if (run.task != "rest") {
      int64_t t = 0;
      while (t < T) {
        t += std::max<int64_t>(1, std::llround((2.0 + 2.0 * rng.uniform()) / tr));
        const auto clip = static_cast<int32_t>(rng.below(uint64_t(c.n_clips)));
        const int64_t dur = std::max<int64_t>(1, std::llround((4.0 + 4.0 * rng.uniform()) / tr));
        for (int64_t u = t; u < std::min(T, t + dur); ++u) clip_at[u] = clip;
        t += dur;
      }
      run.stim.assign(T * S, 0.0f);
      run.label.assign(T, -1);
      for (int64_t t2 = 0; t2 < T; ++t2)
        if (clip_at[t2] >= 0) {
          std::copy_n(&clip_embedding_[int64_t(clip_at[t2]) * S], S, &run.stim[t2 * S]);
          run.label[t2] = clip_category_[clip_at[t2]];
        }
    }
    // Intrinsic dynamics z [T, K] after a burn-in of five damping times.
    std::vector<double> z(T * K), latent(K);
    const int64_t burn = static_cast<int64_t>(5 * tau_s_ / tr) + 8;
    for (int k = 0; k < K; ++k) {
      double s1 = 0, s2 = 0;
      for (int64_t t = -burn; t < T; ++t) {
        const double s = a1[k] * s1 + a2[k] * s2 + sigma[k] * rng.normal();
        s2 = s1;
        s1 = s;
        if (t >= 0) z[t * K + k] = s;
      }
    }
    run.timeseries.assign(T * P, 0.0f);
    std::vector<float> lat(K);
    for (int64_t t = 0; t < T; ++t) {
      for (int k = 0; k < K; ++k) {
        double v = 0;
        for (int m = 0; m < K; ++m) v += subj.coupling[k * K + m] * z[t * K + m];
        latent[k] = v;
      }
      if (run.task != "rest")
        for (size_t l = 0; l < hrf.size() && int64_t(l) <= t; ++l) {
          const int32_t clip = clip_at[t - int64_t(l)];
          if (clip < 0) continue;
          for (int k = 0; k < K; ++k) latent[k] += c.stim_gain * hrf[l] * clip_response_[int64_t(clip) * K + k];
        }
      float* row = &run.timeseries[t * P];
      for (int p = 0; p < P; ++p) row[p] = static_cast<float>(site.noise * rng.normal());
      for (int k = 0; k < K; ++k) {
        const float a = static_cast<float>(site.gain * latent[k]);
        const float* mk = &map[int64_t(k) * P];
        for (int p = 0; p < P; ++p) row[p] += a * mk[p];
      }
    }
    // z-score per parcel over the run.
    std::vector<double> mean(P, 0.0), sq(P, 0.0);
    for (int64_t t = 0; t < T; ++t)
      for (int p = 0; p < P; ++p) mean[p] += run.timeseries[t * P + p];
    for (int p = 0; p < P; ++p) mean[p] /= double(T);
    for (int64_t t = 0; t < T; ++t)
      for (int p = 0; p < P; ++p) {
        const double d = run.timeseries[t * P + p] - mean[p];
        sq[p] += d * d;
      }
    std::vector<float> fmean(P), inv(P);
    for (int p = 0; p < P; ++p) {
      fmean[p] = static_cast<float>(mean[p]);
      inv[p] = static_cast<float>(1.0 / std::sqrt(sq[p] / double(T) + 1e-12));
    }
    for (int64_t t = 0; t < T; ++t)
      for (int p = 0; p < P; ++p) run.timeseries[t * P + p] = (run.timeseries[t * P + p] - fmean[p]) * inv[p];
  }
  return runs;
}

#ifdef BFM_WITH_HDF5

void SyntheticCorpus::write_shards(const std::string& dir, int rank, int ranks,
                                   const std::function<void()>& on_subject) const {
  write_shards(dir, shards_for(n_shards(), ShardPart{}, rank, ranks), on_subject);
}

void SyntheticCorpus::write_shards(const std::string& dir, const std::vector<int64_t>& shards,
                                   const std::function<void()>& on_subject) const {
  const SyntheticCorpusConfig& c = config_;
  ShardHeader header;
  header.n_parcels = c.n_parcels;
  header.atlas = "synthetic-" + std::to_string(c.n_parcels);
  header.parcel_coords.resize(xyz_.size());
  for (size_t i = 0; i < xyz_.size(); ++i) header.parcel_coords[i] = static_cast<float>(70.0 * xyz_[i]);
  header.storage = c.float16 ? Storage::float16 : Storage::float32;
  header.chunk_rows = c.chunk_rows;
  header.stimulus_dim = c.stim_dim;
  header.labels = true;
  header.score_names = {"score"};
  header.converter = "bfm synth (seed " + std::to_string(c.seed) + ")";
  header.preprocessing = "synthetic (io/synthetic_corpus.h); z-scored per parcel per run";
  header.preprocessing_options =
      R"({"synthetic":true,"detrend":false,"scaling":"zscore","target_tr":0,"confounds":"none","scrub_fd":0})";

  for (const int64_t j : shards) {
    require(j >= 0 && j < n_shards(), "synth: shard ", j, " is not one of the corpus's ", n_shards());
    const std::string path = (std::filesystem::path(dir) / shard_file_name(j)).string();
    ShardWriter writer(path, header);
    const int64_t first = j * c.subjects_per_shard, last = std::min(c.n_subjects, first + c.subjects_per_shard);
    for (int64_t i = first; i < last; ++i) {
      const SyntheticSubject s = subject(i);
      writer.add_subject({s.id, s.age, s.sex, s.diagnosis, {s.score}});
      const SyntheticStudy& st = studies_[s.study];
      for (const RunData& run : subject_runs(s, i)) {
        RunView view;
        view.meta.subject = s.id;
        view.meta.session = "ses-1";
        view.meta.study = st.name;
        view.meta.task = run.task;
        view.meta.site = sites_[size_t(s.site)].name;
        view.meta.tr = st.tr;
        view.meta.length = run.length;
        view.timeseries = run.timeseries.data();
        view.stim_embedding = run.stim.empty() ? nullptr : run.stim.data();
        view.labels = run.label.empty() ? nullptr : run.label.data();
        writer.add_run(view);
      }
      if (on_subject) on_subject();
    }
    writer.commit();
  }
}

void SyntheticCorpus::write_ground_truth(const std::string& dir) const {
  const SyntheticCorpusConfig& c = config_;
  const int64_t P = c.n_parcels, K = c.n_networks, C = c.n_categories, S = c.stim_dim, N = c.n_clips;
  const int64_t n = c.n_subjects, ns = c.n_studies;
  H5ArrayWriter h5((std::filesystem::path(dir) / "ground_truth.h5").string());
  std::vector<float> coords(xyz_.size());
  for (size_t i = 0; i < xyz_.size(); ++i) coords[i] = static_cast<float>(70.0 * xyz_[i]);
  h5.write_f32("parcels/coords", {P, 3}, coords.data());
  h5.write_f32("networks/maps", {K, P}, maps_.data());
  std::vector<float> f(freq_hz_.begin(), freq_hz_.end());
  h5.write_f32("networks/freq_hz", {K}, f.data());
  h5.write_scalar_f32("networks/tau_s", static_cast<float>(tau_s_));
  h5.write_f32("networks/group_coupling", {K, K}, group_coupling_.data());
  for (const auto& e : effects_) {
    std::vector<float> m(K * K, 0.0f);
    m[e.network_a * K + e.network_b] = m[e.network_b * K + e.network_a] = static_cast<float>(e.effect);
    h5.write_f32("effects/" + e.trait, {K, K}, m.data());
  }
  std::vector<float> dev(n * K * K), coupling(n * K * K), age(n), sex(n), dx(n), score(n), study(n), site(n);
  std::vector<float> maps(n * K * P);
  for (int64_t i = 0; i < n; ++i) {
    const SyntheticSubject s = subject(i);
    const std::vector<float> m = subject_maps(i);
    std::copy(m.begin(), m.end(), maps.begin() + i * K * P);
    site[i] = static_cast<float>(s.site);
    std::copy(s.coupling_deviation.begin(), s.coupling_deviation.end(), dev.begin() + i * K * K);
    std::copy(s.coupling.begin(), s.coupling.end(), coupling.begin() + i * K * K);
    age[i] = s.age;
    sex[i] = s.sex == "F" ? 1.0f : 0.0f;
    dx[i] = s.diagnosis == "patient" ? 1.0f : 0.0f;
    score[i] = s.score;
    study[i] = static_cast<float>(s.study);
  }
  h5.write_f32("subjects/coupling_deviation", {n, K, K}, dev.data());
  h5.write_f32("subjects/coupling", {n, K, K}, coupling.data());
  h5.write_f32("subjects/age", {n}, age.data());
  h5.write_f32("subjects/sex_female", {n}, sex.data());
  h5.write_f32("subjects/patient", {n}, dx.data());
  h5.write_f32("subjects/score", {n}, score.data());
  h5.write_f32("subjects/study", {n}, study.data());
  h5.write_f32("subjects/site", {n}, site.data());
  h5.write_f32("subjects/maps", {n, K, P}, maps.data());
  h5.write_f32("categories/response", {C, K}, category_response_.data());
  h5.write_f32("categories/embedding", {C, S}, category_embedding_.data());
  h5.write_f32("clips/response", {N, K}, clip_response_.data());
  h5.write_f32("clips/embedding", {N, S}, clip_embedding_.data());
  std::vector<float> cat(clip_category_.begin(), clip_category_.end());
  h5.write_f32("clips/category", {N}, cat.data());
  std::vector<float> tr(ns), task(ns);
  for (int64_t s = 0; s < ns; ++s) {
    tr[s] = static_cast<float>(studies_[s].tr);
    task[s] = studies_[s].has_task ? 1.0f : 0.0f;
  }
  h5.write_f32("studies/tr", {ns}, tr.data());
  h5.write_f32("studies/has_task", {ns}, task.data());
  const auto ne = static_cast<int64_t>(sites_.size());
  std::vector<float> gain(ne), noise(ne), site_study(ne), bias(ne * P);
  for (int64_t e = 0; e < ne; ++e) {
    gain[e] = static_cast<float>(sites_[e].gain);
    noise[e] = static_cast<float>(sites_[e].noise);
    site_study[e] = static_cast<float>(sites_[e].study);
    std::copy(sites_[e].bias.begin(), sites_[e].bias.end(), bias.begin() + e * P);
  }
  h5.write_f32("sites/gain", {ne}, gain.data());
  h5.write_f32("sites/noise", {ne}, noise.data());
  h5.write_f32("sites/study", {ne}, site_study.data());
  h5.write_f32("sites/bias", {ne, P}, bias.data());
  h5.write_scalar_f32("config/stim_gain", static_cast<float>(c.stim_gain));
  h5.write_scalar_f32("config/map_jitter", static_cast<float>(c.map_jitter));
  h5.write_scalar_f32("config/coupling_sd", static_cast<float>(c.coupling_sd));
  h5.commit();

  // The names and tables HDF5 float arrays cannot carry.
  std::ostringstream js;
  js << "{\n  \"format\": \"bfm-synth-ground-truth\", \"format_version\": 2,\n"
     << "  \"seed\": " << c.seed << ", \"n_subjects\": " << n << ", \"n_parcels\": " << P << ", \"n_networks\": " << K
     << ", \"n_categories\": " << C << ", \"n_clips\": " << N << ", \"stim_dim\": " << S
     << ", \"minutes\": " << fmt(c.minutes) << ",\n"
     << "  \"stim_gain\": " << fmt(c.stim_gain) << ", \"map_jitter\": " << fmt(c.map_jitter)
     << ", \"coupling_sd\": " << fmt(c.coupling_sd) << ", \"tau_s\": " << fmt(tau_s_) << ",\n"
     << "  \"stimulus_timing\": \"stim_embedding and label are those of the clip on screen at each time point "
        "(not HRF-lagged)\",\n  \"studies\": [";
  for (int64_t s = 0; s < ns; ++s) {
    const auto& st = studies_[s];
    js << (s ? ",\n    " : "\n    ") << "{\"name\": " << json_string(st.name) << ", \"tr\": " << fmt(st.tr)
       << ", \"tasks\": " << (st.has_task ? "[\"rest\", \"emovideo\"]" : "[\"rest\"]") << ", \"sites\": [";
    for (size_t e = 0; e < st.sites.size(); ++e) js << (e ? ", " : "") << json_string(sites_[size_t(st.sites[e])].name);
    js << "]}";
  }
  js << "\n  ],\n  \"sites\": [";
  for (size_t e = 0; e < sites_.size(); ++e) {
    const auto& st_site = sites_[e];
    js << (e ? ",\n    " : "\n    ") << "{\"name\": " << json_string(st_site.name) << ", \"study\": "
       << json_string(studies_[size_t(st_site.study)].name) << ", \"gain\": " << fmt(st_site.gain) << ", \"noise\": "
       << fmt(st_site.noise) << "}";
  }
  js << "\n  ],\n  \"trait_effects\": [";
  for (size_t e = 0; e < effects_.size(); ++e) {
    const auto& ef = effects_[e];
    js << (e ? ",\n    " : "\n    ") << "{\"trait\": " << json_string(ef.trait) << ", \"coding\": "
       << json_string(ef.coding) << ", \"networks\": [" << ef.network_a << ", " << ef.network_b
       << "], \"effect\": " << fmt(ef.effect) << "}";
  }
  js << "\n  ],\n  \"subjects\": [";
  for (int64_t i = 0; i < n; ++i) js << (i ? ", " : "") << json_string(subject(i).id);
  js << "]\n}\n";
  const auto path = std::filesystem::path(dir) / "ground_truth.json";
  const auto tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp);
    out << js.str();
    require(bool(out), tmp, ": cannot write the ground truth");
  }
  std::filesystem::rename(tmp, path);
}

void SyntheticCorpus::write_manifest(const std::string& dir) const {
  const std::vector<int64_t> missing = missing_shards(dir);
  require(missing.empty(), dir, ": missing ", shard_list(missing, n_shards()),
          "; write them first (bfm synth --part I/N with the same options)");
  std::vector<ShardSummary> shards;
  for (int64_t j = 0; j < n_shards(); ++j) {
    ShardReader reader((std::filesystem::path(dir) / shard_file_name(j)).string());
    // A shard of another corpus (other options) in the folder: its parcels, storage or subjects differ.
    const int64_t first = j * config_.subjects_per_shard, n = shard_subjects(j);
    const auto& h = reader.header();
    bool same = h.n_parcels == config_.n_parcels && h.stimulus_dim == config_.stim_dim &&
                (h.storage == Storage::float16) == config_.float16 && h.chunk_rows == config_.chunk_rows &&
                h.converter == "bfm synth (seed " + std::to_string(config_.seed) + ")" &&
                static_cast<int64_t>(reader.subjects().size()) == n;
    for (int64_t i = 0; same && i < n; ++i) same = reader.subjects()[i].id == subject(first + i).id;
    require(same, reader.path(), ": not a shard of this corpus (its parcels, storage, chunks, seed or subjects differ "
            "from these options'); write it again with the same options as the other parts");
    shards.push_back(summarize(reader));
  }
  bfm::io::write_manifest(dir, shards, config_.seed, SplitFractions{});
}

#else

void SyntheticCorpus::write_shards(const std::string&, int, int, const std::function<void()>&) const {
  fail("bfm synth needs HDF5: this bfm was built without it (BFM_WITH_HDF5=OFF)");
}
void SyntheticCorpus::write_shards(const std::string&, const std::vector<int64_t>&,
                                   const std::function<void()>&) const {
  fail("bfm synth needs HDF5: this bfm was built without it (BFM_WITH_HDF5=OFF)");
}
void SyntheticCorpus::write_ground_truth(const std::string&) const {
  fail("bfm synth needs HDF5: this bfm was built without it (BFM_WITH_HDF5=OFF)");
}
void SyntheticCorpus::write_manifest(const std::string&) const {
  fail("bfm synth needs HDF5: this bfm was built without it (BFM_WITH_HDF5=OFF)");
}

#endif

}  // namespace bfm::io
