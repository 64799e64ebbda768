// Retrieval (identification): rank a set of candidate stimuli by their similarity with what the brain data gave, and
// count how often the true stimulus comes first (top-1) or among the first five (top-5). Two kinds run side by side:
// the embedding decoded by each method of decoding.h, ranked among the fold's distinct test stimuli by correlation,
// and `clip`, zero-shot with a contrastive checkpoint's own projections (cosine of brain_proj(pooled) and
// stim_proj(s), as in training; none of the new subject's data is learned from), ranked among the same candidates.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "launch/eval/cv.h"
#include "launch/eval/data.h"
#include "launch/eval/decoding.h"
#include "launch/eval/scope.h"

namespace bfm::launch::eval {

// The retrieval rows of one method on one fold: pred [n_test, S] the embeddings decoded for the trials `test`, ranked
// among the distinct stimuli of those trials (top1, top5, and top1_novel over the trials of novel stimuli).
void add_retrieval_rows(const EvalScope& scope, const std::string& method, double fraction, const std::string& subject,
                        int fold, const std::vector<double>& pred, const std::vector<int64_t>& test, RankResults& out);

// `clip` rows (per fold, among the fold's distinct test stimuli as add_retrieval_rows; the same at every fraction)
// for this rank's held-out subjects, from the pre-trained model's trial features (features["pretrained"]); a note
// instead where the checkpoint has no contrastive projections.
void zero_shot_retrieval(const EvalScope& scope, const model::BrainModel& pretrained, const TrialCv& cv,
                         const TrialFeatures& features, RankResults& out);

}  // namespace bfm::launch::eval
