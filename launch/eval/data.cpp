#include "launch/eval/data.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "io/json_file.h"
#ifdef BFM_WITH_HDF5
#include "io/corpus.h"
#include "io/h5_arrays.h"
#include "io/corpus_manifest.h"
#endif

namespace bfm::launch::eval {

#ifdef BFM_WITH_HDF5

namespace {

// The first `n` of ids in a fixed order that does not depend on the order the manifest lists them in.
std::vector<std::string> first_sorted(std::vector<std::string> ids, int64_t n) {
  std::sort(ids.begin(), ids.end());
  if (n > 0 && int64_t(ids.size()) > n) ids.resize(static_cast<size_t>(n));
  return ids;
}

}  // namespace

EvalData load_eval_data(const std::string& corpus_dir, const EvalDataOptions& options) {
  require(options.window > 0, "eval: the window length must be positive");
  const io::CorpusManifest manifest = io::read_corpus_manifest(corpus_dir);
  io::Corpus corpus(corpus_dir, manifest.shard_files);
  std::vector<std::string> held = manifest.test, candidates = manifest.train;
  if (options.held_out_include_validation) held.insert(held.end(), manifest.validation.begin(), manifest.validation.end());
  if (!options.heldout_study.empty()) {
    // Leave one study out: its subjects (any split) are new; the training split's others are the population.
    std::set<std::string> in_study, studies;
    for (int64_t s = 0; s < corpus.n_shards(); ++s)
      for (const io::Run& run : corpus.shard(s).runs()) {
        studies.insert(run.study);
        if (run.study == options.heldout_study) in_study.insert(run.subject);
      }
    std::string names;
    for (const std::string& s : studies) names += (names.empty() ? "" : ", ") + (s.empty() ? "\"\"" : s);
    require(!in_study.empty(), corpus_dir, ": --heldout-study ", options.heldout_study,
            ": no run of the corpus belongs to that study (its studies: ", names, ")");
    held.assign(in_study.begin(), in_study.end());
    std::erase_if(candidates, [&](const std::string& id) { return in_study.count(id) > 0; });
  }
  held = options.load_held_out ? first_sorted(held, options.max_held_out) : std::vector<std::string>{};
  require(!held.empty() || !options.load_held_out, manifest.path,
          ": the corpus split has no held-out (validation or test) subject to evaluate on");
  const std::vector<std::string> population = first_sorted(candidates, options.max_population);

  std::map<std::string, std::pair<std::string, bool>> wanted;  // id -> (split, held out)
  for (const auto& id : population) wanted[id] = {"train", false};
  if (options.heldout_study.empty())
    for (const auto& id : manifest.test) wanted.erase(id);
  for (const auto& id : held) {
    const auto in = [&](const std::vector<std::string>& split) {
      return std::find(split.begin(), split.end(), id) != split.end();
    };
    // A left-out study's subjects keep their split's name, "train" included (new to a model pre-trained without it).
    wanted[id] = {in(manifest.test) ? "test" : in(manifest.validation) ? "validation" : "train", true};
  }

  EvalData data;
  data.corpus = corpus_dir;
  data.window = options.window;
  std::map<std::string, int> subject_index;
  int64_t global_run = 0;
  for (int64_t s = 0; s < corpus.n_shards(); ++s) {
    const io::ShardReader& shard = corpus.shard(s);
    const io::ShardHeader& h = shard.header();
    if (s == 0) {
      data.n_parcels = h.n_parcels;
      data.parcel_labels = h.parcel_labels;
      data.parcel_coords = h.parcel_coords;
      data.score_names = h.score_names;
      data.stim_dim = h.stimulus_dim;
    }
    require(h.stimulus_dim == data.stim_dim, shard.path(), ": stimulus embeddings of size ", h.stimulus_dim,
            " where the corpus' first shard has ", data.stim_dim);
    for (int64_t r = 0; r < int64_t(shard.runs().size()); ++r, ++global_run) {
      const io::Run& meta = shard.runs()[size_t(r)];
      auto want = wanted.find(meta.subject);
      if (want == wanted.end()) continue;
      auto [it, added] = subject_index.emplace(meta.subject, int(data.subjects.size()));
      if (added) {
        const io::Subject& src = shard.subjects()[size_t(shard.subject_of(r))];
        EvalSubject subject;
        subject.id = meta.subject;
        subject.split = want->second.first;
        subject.held_out = want->second.second;
        subject.age = src.age;
        subject.sex = src.sex;
        subject.diagnosis = src.diagnosis;
        subject.scores = src.scores;
        data.subjects.push_back(std::move(subject));
      }
      const int si = it->second;
      EvalRun run;
      run.global_run = global_run;
      run.task = meta.task;
      run.tr = meta.tr;
      run.length = meta.length;
      run.timeseries = shard.read_window(r, 0, meta.length);
      for (float v : run.timeseries)
        require(std::isfinite(v), shard.path(), ": run ", r, " of subject ", meta.subject, " holds a non-finite value");
      if (const int64_t S = data.stim_dim; S > 0) {
        run.stim.resize(size_t(meta.length * S));
        shard.read_stimulus(r, 0, meta.length, run.stim.data());
      }
      if (h.labels) {
        run.label.resize(size_t(meta.length));
        shard.read_labels(r, 0, meta.length, run.label.data());
      }
      data.subjects[size_t(si)].runs.push_back(std::move(run));
      add_trials(data, si, int(data.subjects[size_t(si)].runs.size()) - 1);
    }
  }
  // The generator's network maps, where the corpus is synthetic: the `oracle` methods' known structure.
  const std::string truth = (std::filesystem::path(corpus_dir) / "ground_truth.h5").string();
  if (std::filesystem::exists(truth)) {
    io::H5ArrayReader gt(truth);
    if (gt.has("networks/maps")) {
      const io::Array<float> maps = gt.read_f32("networks/maps");
      require(maps.shape.size() == 2 && maps.shape[1] == data.n_parcels, truth, ": networks/maps is not [K, ",
              data.n_parcels, "] (the corpus' parcels)");
      data.n_networks = int(maps.shape[0]);
      data.network_maps = maps.data;
    }
    // Subject-index order of ground_truth.h5's subjects/* rows: the ids in ground_truth.json.
    const std::string truth_json = (std::filesystem::path(corpus_dir) / "ground_truth.json").string();
    if (std::filesystem::exists(truth_json) && gt.has("subjects/coupling") && data.n_networks > 0) {
      const nlohmann::json j = io::read_json_file(truth_json);
      const std::vector<std::string> ids = j.value("subjects", std::vector<std::string>{});
      const io::Array<float> coupling = gt.read_f32("subjects/coupling");
      const int64_t K = data.n_networks;
      require(coupling.shape.size() == 3 && coupling.shape[0] == int64_t(ids.size()) && coupling.shape[1] == K &&
                  coupling.shape[2] == K,
              truth, ": subjects/coupling is not [", ids.size(), ", ", K, ", ", K, "] (", truth_json, "'s subjects)");
      for (size_t i = 0; i < ids.size(); ++i)
        data.true_coupling[ids[i]].assign(coupling.data.begin() + int64_t(i) * K * K,
                                          coupling.data.begin() + int64_t(i + 1) * K * K);
      if (gt.has("subjects/maps") && gt.has("subjects/site") && gt.has("sites/bias")) {
        const int64_t P = data.n_parcels;
        const io::Array<float> maps = gt.read_f32("subjects/maps");
        const io::Array<float> site = gt.read_f32("subjects/site");
        const io::Array<float> bias = gt.read_f32("sites/bias");
        require(maps.shape == std::vector<int64_t>{int64_t(ids.size()), K, P} &&
                    site.shape == std::vector<int64_t>{int64_t(ids.size())} && bias.shape.size() == 2 &&
                    bias.shape[1] == P,
                truth, ": subjects/maps, subjects/site or sites/bias do not have the shapes of ", truth_json,
                "'s subjects, ", K, " networks and ", P, " parcels");
        std::set<std::string> loaded;
        for (const auto& s : data.subjects) loaded.insert(s.id);
        for (size_t i = 0; i < ids.size(); ++i) {
          if (!loaded.count(ids[i])) continue;
          const auto e = static_cast<int64_t>(site.data[i]);
          require(e >= 0 && e < bias.shape[0], truth, ": subjects/site of ", ids[i], " is ", e, ", not a site");
          std::vector<float>& m = data.subject_maps[ids[i]];
          m.assign(maps.data.begin() + int64_t(i) * K * P, maps.data.begin() + int64_t(i + 1) * K * P);
          for (int64_t k = 0; k < K; ++k)
            for (int64_t p = 0; p < P; ++p) m[size_t(k * P + p)] *= bias.data[size_t(e * P + p)];
        }
      }
    }
  }
  std::set<std::string> found;
  for (const auto& s : data.subjects) found.insert(s.id);
  for (const auto& id : held)
    require(found.count(id), manifest.path, ": held-out subject ", id, " is listed but no shard holds its runs");
  return data;
}

#endif  // BFM_WITH_HDF5

void add_trials(EvalData& data, int si, int ri) {
  const EvalRun& run = data.subjects.at(size_t(si)).runs.at(size_t(ri));
  const int64_t S = data.stim_dim;
  if (run.label.empty()) return;
  // Stimuli are matched by their embedding (data.stimulus_index: every embedding seen so far).
  auto& index = data.stimulus_index;
  for (int64_t t = 0; t < run.length;) {
    if (run.label[size_t(t)] < 0) {
      ++t;
      continue;
    }
    int64_t e = t + 1;
    auto same = [&](int64_t a, int64_t b) {
      return run.label[size_t(a)] == run.label[size_t(b)] &&
             (S == 0 || std::memcmp(&run.stim[size_t(a * S)], &run.stim[size_t(b * S)], size_t(S) * 4) == 0);
    };
    while (e < run.length && same(e, t)) ++e;
    if (t + data.window <= run.length) {
      EvalTrial trial;
      trial.subject = si;
      trial.run = ri;
      trial.onset = t;
      trial.duration = e - t;
      trial.label = run.label[size_t(t)];
      data.n_categories = std::max(data.n_categories, trial.label + 1);
      if (S > 0) {
        std::vector<float> key(&run.stim[size_t(t * S)], &run.stim[size_t(t * S)] + S);
        auto [it, added] = index.emplace(key, int64_t(data.stimuli.size()));
        if (added) data.stimuli.push_back(key);
        trial.stimulus = it->second;
      } else {  // no embedding to match on: every trial its own stimulus
        trial.stimulus = int64_t(data.stimuli.size());
        data.stimuli.emplace_back();
      }
      data.trials.push_back(trial);
    }
    t = e;
  }
}

void copy_window(const EvalData& data, int subject, int run, int64_t start, float* out) {
  const EvalRun& r = data.subjects.at(static_cast<size_t>(subject)).runs.at(static_cast<size_t>(run));
  require(start >= 0 && start + data.window <= r.length, "eval: window [", start, ", ", start + data.window,
          ") outside run of length ", r.length, " of subject ", data.subjects[size_t(subject)].id);
  std::copy_n(&r.timeseries[size_t(start * data.n_parcels)], data.window * data.n_parcels, out);
}

}  // namespace bfm::launch::eval
