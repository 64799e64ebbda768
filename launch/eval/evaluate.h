// bfm eval: what pre-training buys downstream, on the corpus' held-out subjects, method beside method on the same
// splits (docs/EVALUATION.md).
//
// Stimulus tasks, within each held-out subject (trials of launch/eval/data.h):
//   category   decode the stimulus category from the trial's window (classification)
//   embedding  decode the stimulus embedding (regression)
//   retrieval  rank the fold's distinct test stimuli by correlation with the decoded embedding: top-1 / top-5
//              identification against chance; `clip` does it zero-shot with a contrastive model's projections
//   encoding   predict each parcel's mean response over the trial's window from the stimulus embedding
// k-fold cross-validation by stimulus (a stimulus is in one fold only), training windows that overlap a test window
// in time purged; regularisation chosen by inner cross-validation inside the training folds only; few-shot curves
// over the fraction of the subject's training trials used (the first ones in time, as a shorter scan would give).
// Subject tasks, across subjects: diagnosis and sex (classification), age and score (regression), trained on the
// pre-training subjects' labels and tested on the held-out subjects with a fraction of their scan time.
//
// Methods:
//   ridge        per-subject ridge from scratch on the window's parcel means per time patch (the older practice)
//   ridge_pop    the same features, ridge over the pre-training subjects' trials plus the subject's
//   pca          the same ridge on the window's principal components (per time patch, fitted on the pre-training
//                subjects' unlabelled time series; the fewest explaining 90 % of their variance, at most d_model): the
//                unsupervised linear baseline
//   pca_pop      the same features, over the pre-training subjects' trials plus the subject's
//   probe        linear probe (ridge) on the frozen pre-trained encoder's features, the subject's trials only
//   probe_pop    the same features, over the pre-training subjects' trials plus the subject's
//   random       the untrained control: the same probe on the same architecture with its initial weights (seed
//                options.seed + 1) and as many components per token, so that "pre-training helps" means more than
//                "random features help"
//   random_pop   the same features, over the pre-training subjects' trials plus the subject's
//   finetune     the tokens of the model fine-tuned on the task (bfm finetune) through its task head's projection,
//                ridge over the pre-training subjects' trials plus the subject's
//   scratch      the same architecture and head trained on the task from a random initialisation, likewise
//   clip         zero-shot retrieval with the contrastive projections (contrastive checkpoints only)
//   connectivity ridge on the parcel correlation matrix (subject tasks' baseline); probe: the mean encoder features
//
// The label-scarce protocol (--labelled-subjects K): the population methods learn from the labels of only K
// pre-training subjects (chosen by a seed; named "ridge_pop@K"), while the PCA basis and pre-training used every
// subject unlabelled. Paired comparisons: the best pre-trained method against each baseline, the mean difference
// over held-out subjects with its 95 % paired t interval.
//
// The task registry is tasks.h; each step of evaluate() lives in its own file (docs/EVALUATION.md, "The code").
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "launch/eval/data.h"
#include "launch/eval/tasks.h"
#include "model/brain_model.h"
#include "model/task_head.h"
#include "runtime/comm.h"

namespace bfm::launch::eval {

struct EvalOptions {
  std::vector<std::string> tasks = task_names();  // every task of the registry (launch/eval/tasks.h)
  int folds = 5;
  std::string cv_unit = "stimulus";  // what a fold keeps whole within a subject: "stimulus" or "run"
  std::vector<double> fractions = {0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0};
  uint64_t seed = 0;
  int bootstrap = 200;          // resamples of the held-out subjects for the subject tasks' spread
  std::string predictions_dir;  // per-prediction CSVs (for independent checks); empty: none
  bool verbose = true;
  // A job array over held-out subjects: this part evaluates the held-out subjects i with i % parts == part (in
  // corpus order) on the stimulus tasks; part 0 also runs the subject tasks over all held-out subjects. merge_reports joins.
  int part = 0, parts = 1;
  std::string device = "auto";  // the encoder features: auto (a GPU where there is one) | cpu | cuda
  // The label-scarce protocol: for each K, the population methods use the labels of K pre-training subjects only
  // (-1: all of them); ascending, -1 last. The K subjects are the first K of the pre-training subjects shuffled by
  // labelled_seed, so a smaller K's subjects are among a larger one's.
  std::vector<int> labelled = {-1};
  // The PCA baseline's components: 0 chooses the fewest explaining 90 % of the pre-training subjects' variance, at
  // most d_model; N > 0 keeps N (at most the parcels).
  int pca_components = 0;
  // The probe's features: each token of the window reduced to its top components in the encoder's token space (fitted
  // on pre-training subjects' windows without labels). 0 chooses automatically (launch/eval/decoding.cpp,
  // probe_components); N > 0 keeps N (at most d_model).
  int probe_components = 0;
  uint64_t labelled_seed = 0;
};

// A fine-tuned (or from-scratch) model and the task head trained with it: its features are the model's tokens
// through the head's projection.
struct TunedModel {
  const model::BrainModel* model = nullptr;
  const model::TaskHead* head = nullptr;
};

// A model whose features a method uses: the pre-trained one (probe, probe_pop, clip), or one fine-tuned per task.
struct EvalModels {
  const model::BrainModel* pretrained = nullptr;
  std::map<std::string, TunedModel> finetuned;  // task (and the label-scarce suffix) -> model and head
  std::map<std::string, TunedModel> scratch;
};

struct ResultRow {
  std::string task, method;
  double fraction = 1;
  std::string subject;  // a held-out subject, or "all" (subject tasks)
  int fold = -1;        // -1: over all folds / subjects
  std::string metric;
  double value = 0;
};

struct SummaryRow {
  std::string task, method, metric;
  double fraction = 1;
  double mean = 0, sd = 0;  // over subjects x folds (stimulus tasks), bootstrap sd (subject tasks)
  int n = 0;
  double chance = 0;
};

// The best pre-trained method against a baseline on one task, at one fraction and K: the mean over held-out subjects
// of the paired difference of their main metric (each subject's mean over folds), with its 95 % paired t interval.
struct Comparison {
  std::string task, metric, method, baseline;  // method: the pre-trained one with the best mean
  int labelled = -1;                           // K, -1: every pre-training subject's labels
  double fraction = 1;
  double mean = 0, low = 0, high = 0, sd = 0;
  int n = 0;                                   // held-out subjects with both
};

// The K pre-training subjects whose labels the population methods used, for each K (-1: all).
struct LabelledGroup {
  int k = -1;
  std::vector<std::string> subjects;
};

struct EvalReport {
  std::vector<ResultRow> rows;
  std::vector<SummaryRow> summary;
  std::map<std::string, std::vector<double>> encoding_map;  // method -> per-parcel mean r at fraction 1
  std::map<std::string, double> encoding_folds;             // method -> subject x folds averaged into it
  std::vector<std::string> notes;                           // what was skipped, and why
  std::vector<Comparison> comparisons;                      // made by summarize() from rows and summary
  std::vector<LabelledGroup> labelled;                      // --labelled-subjects, as evaluated
  nlohmann::json pca;  // the PCA basis' size and explained variance (config.json "pca"); null without one
  nlohmann::json probe_basis;  // the probe's token basis: components, explained variance (config.json "probe_basis")
  std::vector<std::string> pca_table;  // pca.csv's lines (header first): mean, then each component with its variance
  std::vector<std::string> probe_table;  // probe_basis.csv's lines, the same layout over the token space's dims
  nlohmann::json stimridge;  // the stimulus map's penalty and size (config.json "stimridge"); null without one
  std::vector<std::string> stimridge_table;  // stimridge.csv's lines: mean and scale of the raw features, then per
                                             // embedding dimension its bias and weights
  int held_out_subjects = 0, population_subjects = 0;
  int64_t trials = 0;
  int n_categories = 0;  // for the category task's chance level
};

// Collective over comm: the held-out subjects are split over the ranks, the window features computed in parallel;
// every rank returns the whole report.
EvalReport evaluate(const EvalData& data, const EvalModels& models, const EvalOptions& options,
                    runtime::Communicator& comm);

}  // namespace bfm::launch::eval

