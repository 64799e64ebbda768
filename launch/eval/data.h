// What downstream evaluation reads from a corpus: the subjects it evaluates on (held out from pre-training) and the
// subjects whose labelled data a population model may learn from (the pre-training split), each with its runs in
// memory, the stimulus trials of its task runs, and its traits. Needs HDF5 (the corpus' shards).
//
// A trial is one showing of a stimulus (a clip): a maximal stretch of time points of a run with the same label and
// stimulus embedding (label >= 0). Its window is the `window` time points from the stimulus onset (the brain response
// peaks about 5 s later, inside the window); a trial whose window runs past the end of its run is dropped. Stimuli
// are identified across subjects by their embedding (the same clip shown to two subjects is one stimulus), or, in a
// corpus without embeddings, by the trial itself.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace bfm::launch::eval {

struct EvalRun {
  int64_t global_run = 0;
  std::string task;
  double tr = 0;
  int64_t length = 0;
  std::vector<float> timeseries;  // [length, P]
  std::vector<float> stim;        // [length, S] (empty when the corpus has none)
  std::vector<int32_t> label;     // [length] (empty when the corpus has none)
};

struct EvalTrial {
  int subject = 0;         // index into EvalData::subjects
  int run = 0;             // index into that subject's runs
  int64_t onset = 0;       // first time point of the stimulus and of the window
  int64_t duration = 0;    // time points the stimulus is on screen
  int64_t stimulus = 0;    // index into EvalData::stimuli
  int label = -1;          // category, -1 when the corpus has no labels
};

struct EvalSubject {
  std::string id;
  std::string split;   // "train", "validation", "test"
  bool held_out = false;  // evaluated on (not in the pre-training split)
  float age = 0;
  std::string sex, diagnosis;
  std::vector<float> scores;  // ShardHeader::score_names
  std::vector<EvalRun> runs;
};

struct EvalData {
  std::string corpus;
  int64_t n_parcels = 0, window = 0, stim_dim = 0;
  int n_categories = 0;  // 1 + the largest label seen
  std::vector<std::string> parcel_labels;
  std::vector<float> parcel_coords;  // [P, 3] or empty
  std::vector<std::string> score_names;
  std::vector<EvalSubject> subjects;
  std::vector<EvalTrial> trials;
  std::vector<std::vector<float>> stimuli;  // the distinct stimulus embeddings ([S] each; empty vectors without S)
  std::map<std::vector<float>, int64_t> stimulus_index;  // embedding -> index into stimuli (add_trials keeps it)
  // A synthetic corpus' generator maps (ground_truth.h5 beside the shards, networks/maps [K, P]); empty otherwise.
  int n_networks = 0;
  std::vector<float> network_maps;
  // Each subject's own maps as its scans saw them (subjects/maps times its site's coil profile sites/bias, [K, P], by
  // id; ground truth format 2); the oracle uses them where present, the group maps otherwise.
  std::map<std::string, std::vector<float>> subject_maps;
  // And each subject's true coupling matrix M_i ([K, K], subjects/coupling, by id): the traits' known structure.
  std::map<std::string, std::vector<float>> true_coupling;
};

struct EvalDataOptions {
  int64_t window = 0;                 // T: the model's window
  int64_t max_held_out = 0;           // at most this many held-out subjects (0: all)
  int64_t max_population = 0;         // at most this many pre-training subjects for population models (0: all)
  bool held_out_include_validation = true;  // validation and test subjects are both held out from pre-training
  bool load_held_out = true;          // false: the pre-training subjects only (fine-tuning never touches the others)
  // Leave one study out: the subjects with a run of this study (any split) are the held-out ones, and the population
  // is the training split's subjects without one; "" = the corpus' own split.
  std::string heldout_study;
};

#ifdef BFM_WITH_HDF5
// Reads the corpus folder (manifest.json and its shards). Throws bfm::Error naming the corpus when it has no held-out
// subject or no shard matches the manifest.
EvalData load_eval_data(const std::string& corpus_dir, const EvalDataOptions& options);
#endif

// Adds the trials of run `run` of subject `subject` (already in data.subjects) to data.trials and data.stimuli, as
// load_eval_data does for every run it reads (also for data made in memory: tests, the GPU check).
void add_trials(EvalData& data, int subject, int run);

// The window [T, P] of a trial (or any run position) as float32.
void copy_window(const EvalData& data, int subject, int run, int64_t start, float* out);

}  // namespace bfm::launch::eval
