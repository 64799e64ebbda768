// What the ranks found, brought together (collective over the communicator, every rank calls each in the same
// order): the result rows through one all-reduce, in rank order; the encoding maps summed; the prediction lines
// through per-rank files that rank 0 joins under one header. Notes are not gathered: they depend on data every rank
// sees alike, except the rare per-subject skips, of which rank 0's are kept.
#pragma once

#include <vector>

#include "launch/eval/evaluate.h"
#include "launch/eval/scope.h"

namespace bfm::launch::eval {

// Every rank's rows, rank 0's first, on every rank. Throws bfm::Error for a task, method or metric the registry does
// not name (launch/eval/tasks.h); methods: every name a row may carry (method_names).
std::vector<ResultRow> gather_rows(const std::vector<ResultRow>& mine, const EvalData& data,
                                   const std::vector<std::string>& methods, runtime::Communicator& comm);

// report.encoding_map: per method, the per-parcel r summed over the ranks' subject x folds and divided by their
// number (report.encoding_folds).
void gather_encoding_maps(RankResults& mine, runtime::Communicator& comm, EvalReport& report);

// predictions/<task>.csv under options.predictions_dir (none when it is empty): every rank's lines, rank 0's first.
void write_predictions(const RankResults& mine, const EvalScope& scope);

}  // namespace bfm::launch::eval
