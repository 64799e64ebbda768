// The decoding tasks of bfm eval (docs/EVALUATION.md, "Tasks"): within each held-out subject, the stimulus category
// (classification) and the stimulus embedding (regression; retrieval ranks the fold's test stimuli by the decoded
// embedding) from the trial's window. Every method of the table in "Methods" runs on the same outer folds (cv.h):
// per-subject ridge on the subject's training trials, population ridge on the pre-training subjects' trials plus them.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "launch/eval/cv.h"
#include "launch/eval/evaluate.h"
#include "launch/eval/features.h"
#include "launch/eval/population_ridge.h"
#include "launch/eval/scope.h"

namespace bfm::launch::eval {

// The window features of every trial (index into EvalData::trials), [n_trials, d] row-major.
struct FeatureSet {
  int d = 0;
  std::vector<double> x;
};
// By what reads them: "raw" (ridge, ridge_pop), "pca" (pca, pca_pop), "stimridge" (stimridge, stimridge_pop: the
// stimulus embedding decoded from the raw window by the population's ridge, below), "probe" (probe, probe_pop: every
// token on the token basis), "pretrained" (the encoder's output per time patch, mean over parcels: clip) and, for a
// synthetic corpus with its generator's maps, "oracle" (oracle, oracle_pop).
using TrialFeatures = std::map<std::string, FeatureSet>;

// The linear counterpart of the contrastive objective: ridge from the raw window (its patch means, as ridge reads
// it) to the stimulus embedding, fitted on every pre-training subject's stimulus trials, the pairing contrastive
// pre-training learns from; no category label is read. Its decoded embedding is the stimridge methods' features, so
// that a pre-trained model that saw the stimuli is compared with a linear model that saw the same.
struct StimulusMap {
  Linear map;           // raw features [d] -> embedding [S]
  double alpha = 0;     // chosen by cross-validation over the pre-training subjects (PopulationRidge)
  int64_t trials = 0;   // pre-training trials it was fitted on
  int subjects = 0;
};

// The trial features the decoding tasks read; none where no decoding task is asked for or there is no trial.
// The PCA basis is fitted on the pre-training subjects' time series (options.pca_components, or the fewest components
// explaining 90 % of their variance, at most d_model: the width of the encoder's features per time patch) and
// returned in *pca (untouched where none is fitted); the stimulus map (for the category task, where the corpus has
// stimulus embeddings and there are pre-training subjects) in *stim_map. Collective over scope.comm (the encoder's
// windows are split over the ranks).
TrialFeatures trial_features(const EvalScope& scope, const model::BrainModel& pretrained, PcaBasis* pca,
                             TokenBasis* probe_basis, StimulusMap* stim_map);

// category, embedding and retrieval, every method on this rank's held-out subjects. Collective over scope.comm where a
// fine-tuned or scratch model gives features.
void decode_stimuli(const EvalScope& scope, const EvalModels& models, const TrialCv& cv, const TrialFeatures& features,
                    RankResults& out);

}  // namespace bfm::launch::eval
