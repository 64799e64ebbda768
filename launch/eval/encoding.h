// The encoding task of bfm eval (docs/EVALUATION.md, "Tasks"): each parcel's mean response over a trial's window
// predicted from the stimulus embedding, within each held-out subject, on the same outer folds as decoding (cv.h).
// The brain model has no stimulus-to-brain pathway, so only ridge (per subject) and ridge_pop (population) run.
#pragma once

#include "launch/eval/cv.h"
#include "launch/eval/scope.h"

namespace bfm::launch::eval {

// r and R² per subject x fold x fraction (the mean over parcels), and at fraction 1 the per-parcel r summed into
// out.encoding_sum for the encoding map; a note where the corpus has no stimulus embeddings or no trials.
void encode_stimuli(const EvalScope& scope, const TrialCv& cv, RankResults& out);

}  // namespace bfm::launch::eval
