// The features of windows that the methods of bfm eval learn from (docs/EVALUATION.md, "Methods"): the raw parcel
// means per time patch (ridge, ridge_pop), the generator's latent networks recovered from them (oracle, oracle_pop;
// synthetic corpora), and the encoder's tokens (probe, probe_pop, finetune, scratch: each token reduced to a few
// values; clip: pooled). The one place where evaluation meets the model and its device.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "launch/eval/data.h"
#include "model/brain_model.h"
#include "model/task_head.h"
#include "runtime/comm.h"

namespace bfm::launch::eval {

// A window of a run: subject and run indices into EvalData, first time point.
struct WindowRef {
  int subject = 0, run = 0;
  int64_t start = 0;
};

// Features of a window: the parcel means of each time patch (raw), [n_t * P].
std::vector<double> raw_features(const EvalData& data, const std::vector<WindowRef>& windows, int patch_len);

// Features of a window from the generator's known networks (synthetic corpora): per time patch, the least-squares
// latent activity l = (A A^T)^-1 A xbar of the patch's parcel means xbar (raw: raw_features of the same windows), A
// the window's subject's own maps as its scans saw them (EvalData::subject_maps), or the group maps [K, P] where the
// ground truth has none; [n_t * K].
std::vector<double> oracle_features(const EvalData& data, const std::vector<double>& raw,
                                    const std::vector<WindowRef>& windows, int n_time);

// The unsupervised linear baseline (pca, pca_pop): principal components of the parcel space, fitted on every
// non-overlapping patch of patch_len time points (parcel means, as raw_features makes them) of every run of the
// `subjects` given (the pre-training subjects, without any label). Components in descending order of variance: the
// fewest whose variance reaches the fraction `explained` of the total, at most max_components (explained >= 1: that
// many).
struct PcaBasis {
  int n_parcels = 0, components = 0, patch_len = 0;
  int64_t patches = 0;                // patches the basis was fitted on
  std::vector<double> mean;           // [P]
  std::vector<double> basis;          // [C, P], unit rows
  std::vector<double> variance;       // [C]: the components' variances (divisor: patches)
  double total_variance = 0;          // the trace of the patches' covariance
};
PcaBasis fit_pca(const EvalData& data, const std::vector<int>& subjects, int patch_len, int max_components,
                  double explained = 1.0);
// The windows' raw features [n, n_time * P] (raw_features) projected per time patch: (xbar - mean) basis^T,
// [n, n_time * C].
std::vector<double> pca_features(const PcaBasis& pca, const std::vector<double>& raw, int64_t n_windows, int n_time);

// How window_features pools the encoder's tokens (token j * P + p: time patch j, parcel p).
enum class TokenPool {
  per_patch,   // per time patch, the mean over parcels: [n_t * D] (pooled)
  per_parcel,  // per parcel, the mean over time patches: [P * D] (the parcels' own features: model connectivity)
  per_token,   // every token through a TokenProjection: [n_t * P * C] (probe, finetune, scratch)
};

// The principal components of the encoder's token space (D numbers per token), fitted without labels on the tokens of
// pre-training windows: the probe keeps every token (time patch x parcel), each reduced to its top C components, so
// that it neither averages the parcels away (a ridge on the mean over parcels reads a pattern over parcels only where
// the encoder put each parcel in its own directions) nor grows to n_t * P * D columns.
struct TokenBasis {
  int d_model = 0, components = 0;
  int64_t tokens = 0;               // tokens the basis was fitted on
  std::vector<double> mean;         // [D]
  std::vector<double> basis;        // [C, D], unit rows
  std::vector<double> variance;     // [C] (divisor: tokens)
  double total_variance = 0;
};
// Fitted on the encoder's tokens of `windows` (split over the ranks, their sums reduced): the top max_components
// components (explained < 1: the fewest reaching that fraction of the variance, at most max_components).
TokenBasis fit_token_basis(const model::BrainModel& model, const EvalData& data, const std::vector<WindowRef>& windows,
                           runtime::Communicator& comm, const std::string& device, int max_components,
                           double explained = 1.0);
// Non-overlapping windows of the given subjects' runs (every run, rest or task; no label read), at most max_windows,
// spread evenly over them: what fit_token_basis is fitted on.
std::vector<WindowRef> unlabelled_windows(const EvalData& data, const std::vector<int>& subjects, int64_t max_windows);
// The probe's basis of a model (bfm eval's probe, and the projection a fine-tuned task head starts from): fitted on at
// most 4,096 unlabelled windows and 2^19 tokens of `subjects` (so that the D x D sums stay small on a large model),
// `asked` components (0: the fewest explaining 90 % of the token variance, as the PCA baseline chooses for the
// parcels), never so many that a window's N x C values pass 4,096 (the population ridge solves a d x d system per
// penalty), at least 1.
TokenBasis fit_probe_basis(const model::BrainModel& model, const EvalData& data, const std::vector<int>& subjects,
                           runtime::Communicator& comm, const std::string& device, int asked);

// A linear map of each token, z = weight x + bias (weight [C, D], bias [C]): a TokenBasis's projection (bias
// -basis mean) or a fine-tuned task head's (model/task_head.h).
struct TokenProjection {
  int d_model = 0, components = 0;
  std::vector<double> weight, bias;
};
TokenProjection token_projection(const TokenBasis& basis);
TokenProjection token_projection(const model::TaskHead& head);

// The encoder features of windows (model run over all tokens), pooled as `pool` says, [n_windows, width] row-major.
// Windows split over the ranks and summed back. device: auto | cpu | cuda (one GPU per rank, float32, so the
// features match the CPU's to about 1e-5).
// per_token needs `projection`.
std::vector<double> window_features(const model::BrainModel& model, const EvalData& data,
                                    const std::vector<WindowRef>& windows, runtime::Communicator& comm,
                                    const std::string& device = "cpu", TokenPool pool = TokenPool::per_patch,
                                    const TokenProjection* projection = nullptr);

}  // namespace bfm::launch::eval
