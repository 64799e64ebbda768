// The summary of bfm eval's result rows: per task, method, metric and fraction the mean and spread over held-out
// subjects x folds (the subject tasks: their bootstrap sd), with the chance level. Made after the gather over ranks
// and again when a report is read back or the parts of a job array are merged (report.h).
#pragma once

#include "launch/eval/evaluate.h"

namespace bfm::launch::eval {

// (Re)computes report.summary from report.rows: mean and sd per task, method, metric and fraction, with chance; then
// report.comparisons: for each decoding task, K of report.labelled and fraction, the pre-trained method with the best
// mean main metric (probe, probe_pop, finetune of that K) against each baseline present (ridge, ridge_pop, scratch,
// pca, pca_pop, random, random_pop of that K): per held-out subject its mean over folds, the paired differences over
// the subjects both have, their mean and 95 % paired t interval.
void summarize(EvalReport& report);

}  // namespace bfm::launch::eval
