// The statistics of downstream evaluation (bfm eval): the metrics the field reports, ridge regression with its
// regularisation chosen by inner cross-validation, and the cross-validation splitter that keeps stimuli (or runs)
// and overlapping time windows apart. Plain C++ in float64, no BLAS: the systems here are at most a few thousand
// wide, and the results must not depend on the build.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace bfm::launch::eval {

// ---- metrics ------------------------------------------------------------------------------------------------------
// Fraction of predictions equal to the truth.
double accuracy(const std::vector<int>& truth, const std::vector<int>& predicted);
// Mean over the classes present in `truth` of the recall of that class (scikit-learn's balanced_accuracy_score).
double balanced_accuracy(const std::vector<int>& truth, const std::vector<int>& predicted);
// Area under the ROC curve of scores for the positives (truth != 0), ties counted one half (the Mann-Whitney
// statistic; scikit-learn's roc_auc_score). NaN when a class is absent.
double auc(const std::vector<int>& positive, const std::vector<double>& score);
// Multi-class: the mean over classes c present in truth (with both outcomes present) of auc(truth == c, scores[:, c]),
// scores [n, n_classes] row-major (one-vs-rest, macro average).
double auc_ovr(const std::vector<int>& truth, const std::vector<double>& scores, int n_classes);
// Pearson correlation of two equal-length vectors; NaN when either is constant.
double pearson(const double* a, const double* b, int64_t n, int64_t stride_a = 1, int64_t stride_b = 1);
// Coefficient of determination 1 - SS_res / SS_tot (scikit-learn's r2_score for one output).
double r2(const double* truth, const double* predicted, int64_t n, int64_t stride_t = 1, int64_t stride_p = 1);
// Identification: for each row i of `predicted` [n, d], the candidates [m, d] ranked by Pearson correlation with it;
// rank_i = the number of candidates scoring strictly higher than its true candidate target[i]. Returns the ranks.
std::vector<int> identification_ranks(const std::vector<double>& predicted, const std::vector<double>& candidates,
                                      const std::vector<int>& target, int d, bool cosine = false);
// Fraction of ranks below k (top-k accuracy).
double top_k(const std::vector<int>& ranks, int k);

struct MeanSpread {
  double mean = 0, sd = 0;  // sd with n - 1 (0 for one value); NaN values are left out
  int n = 0;
};
MeanSpread mean_spread(const std::vector<double>& values);

// ---- paired comparisons ----------------------------------------------------------------------------------------------
// The quantile of Student's t distribution with df degrees of freedom (df > 0, 0 < p < 1): its CDF (the regularised
// incomplete beta function, by its continued fraction) inverted by bisection, to about 1e-12.
double student_t_quantile(double p, double df);
// The mean of paired differences with its two-sided `level` interval by the paired t test: mean -+ t_{(1+level)/2,
// n-1} sd / sqrt(n). NaN values are left out; the interval is NaN with fewer than 2 differences.
struct PairedInterval {
  double mean = 0, sd = 0, low = 0, high = 0;
  int n = 0;
};
PairedInterval paired_t_interval(const std::vector<double>& differences, double level = 0.95);

// ---- principal components ----------------------------------------------------------------------------------------
// The eigen-decomposition of the symmetric a [n, n] (row-major, destroyed) by cyclic Jacobi rotations: eigenvalues in
// descending order, and the eigenvectors as the rows of vectors [n, n] (unit length, in the same order).
void symmetric_eigen(std::vector<double>& a, int n, std::vector<double>* values, std::vector<double>* vectors);

// ---- ridge ---------------------------------------------------------------------------------------------------------
// y = (x - mean) / scale . W + intercept, fitted by minimising |Y - XW|^2 + alpha |W|^2 on centred, standardised
// features (columns of zero variance are left at scale 1). Solved in the primal (d x d) or the dual (n x n) form,
// whichever is smaller, by Cholesky in float64; optional per-row weights.
class Ridge {
 public:
  // x [n, d], y [n, k] row-major; weights [n] or empty.
  void fit(const std::vector<double>& x, const std::vector<double>& y, int64_t n, int d, int k, double alpha,
           const std::vector<double>& weights = {});
  std::vector<double> predict(const std::vector<double>& x, int64_t n) const;  // [n, k]
  int d() const { return d_; }
  int k() const { return k_; }
  double alpha() const { return alpha_; }
  const std::vector<double>& coef() const { return w_; }         // [d, k] in the standardised feature space
  const std::vector<double>& intercept() const { return b_; }    // [k]

 private:
  int d_ = 0, k_ = 0;
  double alpha_ = 0;
  std::vector<double> mean_, scale_, w_, b_;
};

// The default grid of alpha (relative to the number of features after standardisation): 10^-2 .. 10^5.
std::vector<double> default_alphas();

// Splits rows into k folds by group: every group's rows go to one fold, groups spread so that fold sizes are as equal
// as they can be (groups in a fixed shuffled order, each to the currently smallest fold). Returns fold[row]. Fewer
// than k groups give as many folds as groups. The shuffle starts from the groups' order of first appearance in
// `group`, not from their values, so the folds depend on the rows alone: a held-out subject's folds do not change
// when other subjects (and so the numbering of the corpus' stimuli) do.
std::vector<int> group_folds(const std::vector<int64_t>& group, int k, uint64_t seed);

// Rows of one time series may overlap in time: interval [start, end) in series `series`. Returns the training rows
// (fold != test_fold) that do NOT overlap any test row's interval in the same series: the purge that keeps a test
// window's time points out of training (no leakage through neighbouring TRs).
std::vector<int64_t> purged_train_rows(const std::vector<int>& fold, int test_fold, const std::vector<int64_t>& series,
                                       const std::vector<int64_t>& start, const std::vector<int64_t>& end);

// Ridge with alpha chosen by inner grouped cross-validation on the training rows only (mean squared error of the
// coded targets, summed over outputs): the rows given, grouped by `group` (and purged by their intervals), k_inner
// folds. With fewer than two groups the middle of the grid is used. Returns the fitted model (on all rows given).
struct InnerCv {
  std::vector<double> alphas = default_alphas();
  int k_inner = 4;
  uint64_t seed = 0;
};
Ridge fit_ridge_cv(const std::vector<double>& x, const std::vector<double>& y, int d, int k,
                   const std::vector<int64_t>& rows, const std::vector<int64_t>& group,
                   const std::vector<int64_t>& series, const std::vector<int64_t>& start,
                   const std::vector<int64_t>& end, const InnerCv& cv, const std::vector<double>& weights = {});

// Solves a x = b in place for the symmetric positive definite a [n, n] (destroyed) and k right-hand sides b [n, k].
void solve_spd(std::vector<double>& a, std::vector<double>& b, int64_t n, int k);
// Its parts, for a factor kept and reused: a = L L^T in place (row-major; L in the lower triangle, the upper left
// undefined; throws bfm::Error when a is not positive definite), then L z = b and L^T x = z in place for b [n, k].
void cholesky_factor(double* a, int64_t n);
void cholesky_forward(const double* l, double* b, int64_t n, int k);
void cholesky_backward(const double* l, double* b, int64_t n, int k);
// Solves a x = b in place for a general a [n, n] (destroyed; Gaussian elimination with partial pivoting; small n).
void solve_general(std::vector<double>& a, std::vector<double>& b, int64_t n, int k);

// Gathers rows of a row-major [n, width] matrix.
std::vector<double> take_rows(const std::vector<double>& m, int width, const std::vector<int64_t>& rows);
// One-hot coding of classes in {-1, +1} (RidgeClassifier's), [n, n_classes].
std::vector<double> code_classes(const std::vector<int>& y, int n_classes);
std::vector<int> argmax_rows(const std::vector<double>& scores, int64_t n, int k);

}  // namespace bfm::launch::eval
