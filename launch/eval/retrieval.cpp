// Retrieval among candidate stimuli: decoded per method, and zero-shot (clip) (retrieval.h).
#include "launch/eval/retrieval.h"

#include <algorithm>
#include <string>

#include "launch/eval/stats.h"
#include "launch/eval/tasks.h"

namespace bfm::launch::eval {

namespace {

// The candidates of a set of trials: their distinct stimuli in first-seen order, and per trial the index of its own.
struct Candidates {
  std::vector<int64_t> stimuli;
  std::vector<int> target;
};
Candidates candidates_of(const EvalData& data, const std::vector<int64_t>& trials) {
  Candidates c;
  for (int64_t r : trials) {
    const int64_t st = data.trials[size_t(r)].stimulus;
    auto it = std::find(c.stimuli.begin(), c.stimuli.end(), st);
    c.target.push_back(int(it - c.stimuli.begin()));
    if (it == c.stimuli.end()) c.stimuli.push_back(st);
  }
  return c;
}

// top1, top5 and the candidates' count of one fold; top1_novel over the test trials of novel stimuli (scope.h,
// seen_stimuli), where the fold has any: the same candidates, the stimuli that no population method learned from.
void add_identification_rows(const EvalScope& scope, const std::string& method, double fraction,
                             const std::string& subject, int fold, const std::vector<int64_t>& test,
                             const std::vector<int>& ranks, size_t candidates, RankResults& out) {
  out.add("retrieval", method, fraction, subject, fold, "top1", top_k(ranks, 1));
  out.add("retrieval", method, fraction, subject, fold, "top5", top_k(ranks, 5));
  std::vector<int> novel;
  for (size_t i = 0; i < test.size(); ++i)
    if (!scope.seen_stimuli[size_t(scope.data.trials[size_t(test[i])].stimulus)]) novel.push_back(ranks[i]);
  if (!novel.empty()) out.add("retrieval", method, fraction, subject, fold, "top1_novel", top_k(novel, 1));
  out.add("retrieval", method, fraction, subject, fold, kCandidates, double(candidates));
}

}  // namespace

void add_retrieval_rows(const EvalScope& scope, const std::string& method, double fraction, const std::string& subject,
                        int fold, const std::vector<double>& pred, const std::vector<int64_t>& test, RankResults& out) {
  const EvalData& data = scope.data;
  const int64_t S = data.stim_dim;
  const Candidates c = candidates_of(data, test);  // the fold's distinct test stimuli
  std::vector<double> cand;
  for (int64_t st : c.stimuli)
    for (int64_t j = 0; j < S; ++j) cand.push_back(data.stimuli[size_t(st)][size_t(j)]);
  const auto ranks = identification_ranks(pred, cand, c.target, int(S));
  add_identification_rows(scope, method, fraction, subject, fold, test, ranks, c.stimuli.size(), out);
}

void zero_shot_retrieval(const EvalScope& scope, const model::BrainModel& pretrained, const TrialCv& cv,
                         const TrialFeatures& features, RankResults& out) {
  const EvalData& data = scope.data;
  const int64_t S = data.stim_dim;
  if (S == 0 || data.trials.empty()) return;
  const model::ModelConfig& mc = pretrained.config();
  if (!mc.contrastive) {
    out.note("retrieval: no zero-shot `clip` row, the checkpoint was not pre-trained with the contrastive objective");
    return;
  }
  // brain side: brain_proj(pooled); stimulus side: stim_proj(s); cosine similarity as in training.
  const int D = mc.d_model, E = mc.proj_dim;
  const std::vector<float> params = pretrained.params_copy();
  const float* wb = params.data() + pretrained.layout().offset("brain_proj.weight");
  const float* ws = params.data() + pretrained.layout().offset("stim_proj.weight");
  const auto& feat = features.at("pretrained").x;  // [trials, nt * D] per time patch means; pooled = their mean
  const int nt = mc.n_time();
  auto brain_of = [&](int64_t i, std::vector<double>& to) {  // brain_proj(pooled) of trial i, appended
    for (int e = 0; e < E; ++e) {
      double v = 0;
      for (int d = 0; d < D; ++d) {
        double pooled = 0;
        for (int j = 0; j < nt; ++j) pooled += feat[size_t(i) * size_t(nt * D) + size_t(j * D + d)] / nt;
        v += double(wb[size_t(e * D + d)]) * pooled;
      }
      to.push_back(v);
    }
  };
  // The candidates are each fold's distinct test stimuli, as for the decoded rows (add_retrieval_rows), so that
  // `clip` and the decoders share one chance level and one table column. (Ranking among all of the subject's
  // stimuli instead, as bfm did before, gave ~55 candidates and a chance of ~0.018 that the headline table, which
  // prints one chance per task, showed as the decoders' ~0.091.) Zero-shot: the same at every fraction, so each
  // fold is ranked once and its rows repeated.
  int last_fold = -1;
  std::string last_subject;
  std::vector<int> ranks;
  size_t n_candidates = 0;
  cross_validate(cv, scope, "retrieval", 1, "", out, [&](const CvSplit& split) {
    if (split.fold != last_fold || split.subject_id != last_subject) {
      last_fold = split.fold, last_subject = split.subject_id;
      std::vector<double> brain, cand;
      for (int64_t i : split.test) brain_of(i, brain);
      const Candidates c = candidates_of(data, split.test);
      for (int64_t st : c.stimuli)
        for (int e = 0; e < E; ++e) {
          double v = 0;
          for (int64_t j = 0; j < S; ++j) v += double(ws[size_t(e * S + j)]) * data.stimuli[size_t(st)][size_t(j)];
          cand.push_back(v);
        }
      ranks = identification_ranks(brain, cand, c.target, E, /*cosine=*/true);
      n_candidates = c.stimuli.size();
    }
    add_identification_rows(scope, "clip", split.fraction, split.subject_id, split.fold, split.test, ranks, n_candidates,
                            out);
  });
}

}  // namespace bfm::launch::eval
