// Ridge over many subjects' rows plus a few of one new subject's: the population methods of bfm eval (ridge_pop,
// probe_pop, oracle_pop, finetune, scratch, and encoding's ridge_pop). The pre-training subjects' sufficient
// statistics are summed once, so each outer fold of each held-out subject costs one solve, not one pass over the
// population; the penalty is chosen once, by cross-validation over the pre-training subjects.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace bfm::launch::eval {

// A linear map fitted elsewhere: y = ((x - mean) / scale) W + b.
struct Linear {
  int d = 0, k = 0;
  std::vector<double> mean, scale, w, b;
  std::vector<double> predict(const std::vector<double>& x, int64_t n) const;
};

// Ridge over the pre-training subjects' rows plus a few of one subject's: the population's sufficient statistics
// are summed once (per inner fold, to choose alpha by cross-validation over population subjects), and a subject's
// rows are added to them per fit. Features standardised with the population's means and scales. The population's
// regularised system is factored once (Cholesky, at the chosen alpha); a fit with r subject rows is that system
// plus a rank r + 2 update (the rows, and the intercept's centring moving with them), solved by the Woodbury
// identity in O(d^2 r) instead of a new O(d^3) factorisation, where r is under a third of d (else solved anew).
class PopulationRidge {
 public:
  PopulationRidge(const std::vector<double>& x, const std::vector<double>& y, int d, int k,
                  const std::vector<int64_t>& group, const std::vector<double>& alphas, uint64_t seed);

  double alpha() const { return alpha_; }

  // The population plus rows of (x, y) of one subject.
  Linear fit_with(const std::vector<double>& x, const std::vector<double>& y, const std::vector<int64_t>& rows) const;

 private:
  struct Stats {
    Stats() = default;
    Stats(int d, int k) : xx(size_t(d) * d, 0.0), xy(size_t(d) * k, 0.0), sx(size_t(d), 0.0), sy(size_t(k), 0.0) {}
    std::vector<double> xx, xy, sx, sy;  // sums of z z^T (lower triangle), z y^T, z, y
    double n = 0;
    void add(const Stats& o, double sign) {
      for (size_t i = 0; i < xx.size(); ++i) xx[i] += sign * o.xx[i];
      for (size_t i = 0; i < xy.size(); ++i) xy[i] += sign * o.xy[i];
      for (size_t i = 0; i < sx.size(); ++i) sx[i] += sign * o.sx[i];
      for (size_t i = 0; i < sy.size(); ++i) sy[i] += sign * o.sy[i];
      n += sign * o.n;
    }
  };

  void add(Stats& s, const double* x, const double* y) const;
  Linear solve(const Stats& s, double alpha) const;
  // fit_with by the Woodbury identity on factor_.
  Linear fit_low_rank(const std::vector<double>& x, const std::vector<double>& y,
                      const std::vector<int64_t>& rows) const;
  // The fitted map from the system's solution w [d, k] and the statistics it came from (the intercept).
  Linear to_linear(const Stats& s, std::vector<double> w) const;

  int d_ = 0, k_ = 0;
  std::vector<double> mean_, scale_;
  Stats total_;
  double alpha_ = 1;
  std::vector<double> factor_;  // Cholesky factor of the population's centred Gram matrix + alpha_ I [d, d]
};

}  // namespace bfm::launch::eval
