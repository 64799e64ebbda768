// The subject tasks of bfm eval (docs/EVALUATION.md, "Tasks"): a trait of each held-out subject (diagnosis and sex,
// classified; age and the first score, regressed), learned by ridge from the pre-training subjects' traits and
// tested on every held-out subject with the first fraction of each of its runs. Methods: connectivity (Fisher-z
// parcel correlations, the field's baseline), probe (the pre-trained encoder's features averaged over the subject's
// windows) and, for a synthetic corpus, oracle (the subject's true coupling matrix). Spread: bootstrap over the
// held-out subjects.
#pragma once

#include "launch/eval/evaluate.h"
#include "launch/eval/scope.h"

namespace bfm::launch::eval {

// Part 0 of a job array only (the subject tasks span every held-out subject). Collective over scope.comm (the
// encoder's windows are split over the ranks); every rank computes the same rows, and rank 0 keeps them.
void evaluate_subject_tasks(const EvalScope& scope, const model::BrainModel& pretrained, RankResults& out);

}  // namespace bfm::launch::eval
