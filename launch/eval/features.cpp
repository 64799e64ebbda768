// The features of windows that the methods of bfm eval learn from (launch/eval/evaluate.h): the raw parcel means
// per time patch (ridge), the generator's latent networks recovered from them (oracle, synthetic corpora), and the
// encoder's tokens (probe, finetune, scratch, clip; on the CPU or one GPU per rank). Kept apart from the
// methods so that the model and its device are met in this one file.
#include "launch/eval/features.h"

#include <algorithm>
#include <functional>
#include <map>
#include <memory>

#include "base/error.h"
#include "launch/eval/stats.h"
#include "model/placement.h"

namespace bfm::launch::eval {

// Features of a window: the parcel means of each time patch (raw), [n_t * P].
std::vector<double> raw_features(const EvalData& data, const std::vector<WindowRef>& windows, int patch_len) {
  const int64_t T = data.window, P = data.n_parcels, nt = T / patch_len;
  std::vector<double> out(windows.size() * size_t(nt * P), 0.0);
  for (size_t w = 0; w < windows.size(); ++w) {
    const EvalRun& r = data.subjects[size_t(windows[w].subject)].runs[size_t(windows[w].run)];
    for (int64_t t = 0; t < T; ++t) {
      const float* row = &r.timeseries[size_t((windows[w].start + t) * P)];
      double* f = &out[w * size_t(nt * P) + size_t((t / patch_len) * P)];
      for (int64_t p = 0; p < P; ++p) f[p] += row[p] / double(patch_len);
    }
  }
  return out;
}

// Features of a window from the generator's known networks (synthetic corpora): per time patch, the least-squares
// latent activity l = (A A^T)^-1 A xbar of the patch's parcel means xbar, A the window's subject's own maps as its
// scans saw them (EvalData::subject_maps), or the group maps [K, P] where the ground truth has none; [n_t * K].
std::vector<double> oracle_features(const EvalData& data, const std::vector<double>& raw,
                                    const std::vector<WindowRef>& windows, int n_time) {
  const int K = data.n_networks;
  const int64_t P = data.n_parcels, n = static_cast<int64_t>(windows.size());
  std::map<int, std::vector<double>> pinvs;  // by subject index: (A A^T)^-1 A
  const auto pinv_of = [&](int subject) -> const std::vector<double>& {
    auto it = pinvs.find(subject);
    if (it != pinvs.end()) return it->second;
    const auto own = data.subject_maps.find(data.subjects[size_t(subject)].id);
    const std::vector<float>& A = own != data.subject_maps.end() ? own->second : data.network_maps;
    std::vector<double> g(static_cast<size_t>(K) * K, 0.0), pinv(static_cast<size_t>(K) * P);
    for (int a = 0; a < K; ++a)
      for (int b = 0; b < K; ++b)
        for (int64_t p = 0; p < P; ++p) g[size_t(a * K + b)] += double(A[size_t(a * P + p)]) * A[size_t(b * P + p)];
    for (int a = 0; a < K; ++a) g[size_t(a * K + a)] += 1e-9;
    for (int a = 0; a < K; ++a)
      for (int64_t p = 0; p < P; ++p) pinv[size_t(a * P + p)] = A[size_t(a * P + p)];
    solve_spd(g, pinv, K, int(P));  // pinv <- G^-1 A
    return pinvs.emplace(subject, std::move(pinv)).first->second;
  };
  std::vector<double> out(static_cast<size_t>(n) * n_time * K, 0.0);
  for (int64_t w = 0; w < n; ++w)
    for (int j = 0; j < n_time; ++j) {
      const std::vector<double>& pinv = pinv_of(windows[size_t(w)].subject);
      const double* x = &raw[size_t((w * n_time + j) * P)];
      for (int a = 0; a < K; ++a) {
        double v = 0;
        for (int64_t p = 0; p < P; ++p) v += pinv[size_t(a * P + p)] * x[p];
        out[size_t((w * n_time + j) * K + a)] = v;
      }
    }
  return out;
}

namespace {

// The principal components of samples given by their moments: sum [w], the lower triangle of the sum of outer
// products cross [w, w] (row-major, q <= p filled) and their count n. Covariance with divisor n, its eigenvectors by
// descending eigenvalue; the top max_components, or (explained < 1) the fewest whose variance reaches that fraction
// of the total, at least 1. Sign convention, so that the basis does not depend on the rotations' order: each row's
// largest entry positive. What fit_pca (parcel space) and fit_token_basis (token space) share.
struct Components {
  std::vector<double> mean;      // [w]
  std::vector<double> basis;     // [C, w], unit rows
  std::vector<double> variance;  // [C]
  double total_variance = 0;
};
Components principal_components(const double* sum, const double* cross, double n, int64_t w, int max_components,
                                double explained) {
  Components out;
  out.mean.resize(size_t(w));
  for (int64_t p = 0; p < w; ++p) out.mean[size_t(p)] = sum[p] / n;
  std::vector<double> cov(size_t(w * w));
  for (int64_t p = 0; p < w; ++p)
    for (int64_t q = 0; q <= p; ++q)
      cov[size_t(p * w + q)] = cov[size_t(q * w + p)] = cross[p * w + q] / n - out.mean[size_t(p)] * out.mean[size_t(q)];
  for (int64_t p = 0; p < w; ++p) out.total_variance += cov[size_t(p * w + p)];
  std::vector<double> values, vectors;
  symmetric_eigen(cov, int(w), &values, &vectors);
  int components = 0;
  for (double kept = 0; components < max_components && (explained >= 1 || kept < explained * out.total_variance);
       ++components)
    kept += values[size_t(components)];
  components = std::max(components, 1);
  out.variance.assign(values.begin(), values.begin() + components);
  out.basis.assign(vectors.begin(), vectors.begin() + components * w);
  for (int c = 0; c < components; ++c) {
    double* row = &out.basis[size_t(c * w)];
    const double* big = std::max_element(row, row + w, [](double a, double b) { return std::abs(a) < std::abs(b); });
    if (*big < 0)
      for (int64_t p = 0; p < w; ++p) row[p] = -row[p];
  }
  return out;
}

}  // namespace

PcaBasis fit_pca(const EvalData& data, const std::vector<int>& subjects, int patch_len, int max_components,
                 double explained) {
  const int64_t P = data.n_parcels, L = patch_len;
  require(max_components >= 1 && max_components <= P, "eval: pca with ", max_components, " components of ", P,
          " parcels");
  PcaBasis out;
  out.n_parcels = int(P), out.patch_len = patch_len;
  // Sums of the patch means and of their outer products (lower triangle), then the covariance.
  std::vector<double> sum(size_t(P), 0.0), cross(size_t(P * P), 0.0), xbar(static_cast<size_t>(P));
  for (int s : subjects)
    for (const EvalRun& r : data.subjects[size_t(s)].runs)
      for (int64_t t0 = 0; t0 + L <= r.length; t0 += L) {
        std::fill(xbar.begin(), xbar.end(), 0.0);
        for (int64_t t = t0; t < t0 + L; ++t)
          for (int64_t p = 0; p < P; ++p) xbar[size_t(p)] += r.timeseries[size_t(t * P + p)] / double(L);
        for (int64_t p = 0; p < P; ++p) {
          sum[size_t(p)] += xbar[size_t(p)];
          for (int64_t q = 0; q <= p; ++q) cross[size_t(p * P + q)] += xbar[size_t(p)] * xbar[size_t(q)];
        }
        ++out.patches;
      }
  require(out.patches >= 2, data.corpus, ": pca: fewer than 2 patches of pre-training subjects to fit on");
  Components pc = principal_components(sum.data(), cross.data(), double(out.patches), P, max_components, explained);
  out.components = int(pc.variance.size());
  out.mean = std::move(pc.mean), out.basis = std::move(pc.basis), out.variance = std::move(pc.variance);
  out.total_variance = pc.total_variance;
  return out;
}

std::vector<double> pca_features(const PcaBasis& pca, const std::vector<double>& raw, int64_t n_windows, int n_time) {
  const int64_t P = pca.n_parcels, C = pca.components;
  require(int64_t(raw.size()) == n_windows * n_time * P, "pca_features: raw features of another shape");
  std::vector<double> out(size_t(n_windows * n_time * C), 0.0), centred(static_cast<size_t>(P));
  for (int64_t w = 0; w < n_windows * n_time; ++w) {
    for (int64_t p = 0; p < P; ++p) centred[size_t(p)] = raw[size_t(w * P + p)] - pca.mean[size_t(p)];
    for (int64_t c = 0; c < C; ++c) {
      double v = 0;
      for (int64_t p = 0; p < P; ++p) v += pca.basis[size_t(c * P + p)] * centred[size_t(p)];
      out[size_t(w * C + c)] = v;
    }
  }
  return out;
}

namespace {

// Runs the encoder (all tokens, no mask) over this rank's share of `windows` (w = rank, rank + R, ...) and hands each
// window's tokens [N, D] (token j * P + p) to `take(w, tokens)`. device: auto | cpu | cuda (one GPU per rank, float32,
// so that a GPU's tokens match the CPU's to about 1e-5).
void encode_windows(const model::BrainModel& source, const EvalData& data, const std::vector<WindowRef>& windows,
                    runtime::Communicator& comm, const std::string& device,
                    const std::function<void(size_t, const float*)>& take) {
  const model::ModelConfig& c = source.config();
  const int64_t T = c.window, P = c.n_parcels, D = c.d_model, N = c.n_tokens();
  const model::Placement placement = model::choose_placement(c, device, model::Precision::fp32, "eval --device");
  const std::unique_ptr<model::BrainModel> encoder = model::make_model(c, placement);
  encoder->load_params(source.params_copy().data());
  // Windows per forward: 32 on the CPU; on the GPU as many as keep a batch near 32k tokens (the model keeps every
  // layer's activations), at least 1 and at most 256.
  const int batch = placement.gpu ? int(std::clamp<int64_t>(32768 / std::max<int64_t>(1, N), 1, 256)) : 32;
  std::vector<float> x(static_cast<size_t>(batch) * T * P);
  std::vector<size_t> mine;
  for (size_t w = size_t(comm.rank()); w < windows.size(); w += size_t(comm.size())) mine.push_back(w);
  for (size_t first = 0; first < mine.size(); first += size_t(batch)) {
    const size_t b = std::min<size_t>(size_t(batch), mine.size() - first);
    for (size_t i = 0; i < b; ++i) {
      const WindowRef& w = windows[mine[first + i]];
      copy_window(data, w.subject, w.run, w.start, &x[i * size_t(T * P)]);
    }
    model::Batch in;
    in.size = int(b);
    in.x = x.data();
    in.encoder_only = true;
    encoder->forward(in, "eval window");
    const std::vector<float> enc = encoder->encoder_out();  // [b, N, D]
    for (size_t i = 0; i < b; ++i) take(mine[first + i], &enc[i * size_t(N * D)]);
  }
}

}  // namespace

std::vector<WindowRef> unlabelled_windows(const EvalData& data, const std::vector<int>& subjects, int64_t max_windows) {
  std::vector<WindowRef> all;
  for (int s : subjects)
    for (size_t r = 0; r < data.subjects[size_t(s)].runs.size(); ++r)
      for (int64_t t = 0; t + data.window <= data.subjects[size_t(s)].runs[r].length; t += data.window)
        all.push_back({s, int(r), t});
  if (int64_t(all.size()) <= max_windows) return all;
  std::vector<WindowRef> out;  // evenly spread: the i-th of max_windows at i * size / max_windows
  for (int64_t i = 0; i < max_windows; ++i) out.push_back(all[size_t(i * int64_t(all.size()) / max_windows)]);
  return out;
}

TokenBasis fit_token_basis(const model::BrainModel& model, const EvalData& data, const std::vector<WindowRef>& windows,
                           runtime::Communicator& comm, const std::string& device, int max_components,
                           double explained) {
  const int64_t D = model.config().d_model, N = model.config().n_tokens();
  require(max_components >= 1 && max_components <= D, "eval: ", max_components, " token components of d_model ", D);
  // Sums of the tokens and of their outer products on each rank, reduced, then the covariance. The count travels
  // with the sums (last entry) so that every rank divides by the same number.
  std::vector<double> sums(size_t(D + D * D + 1), 0.0);
  encode_windows(model, data, windows, comm, device, [&](size_t, const float* tokens) {
    for (int64_t t = 0; t < N; ++t) {
      const float* e = tokens + t * D;
      for (int64_t a = 0; a < D; ++a) {
        sums[size_t(a)] += e[a];
        double* row = &sums[size_t(D + a * D)];
        for (int64_t b = 0; b <= a; ++b) row[b] += double(e[a]) * e[b];
      }
    }
    sums.back() += double(N);
  });
  if (comm.size() > 1) comm.allreduce_sum_host(sums.data(), int64_t(sums.size()));
  TokenBasis out;
  out.d_model = int(D);
  out.tokens = int64_t(sums.back());
  require(out.tokens >= 2, data.corpus, ": the probe's token basis: no window of a pre-training subject to fit on");
  Components pc = principal_components(sums.data(), sums.data() + D, sums.back(), D, max_components, explained);
  out.components = int(pc.variance.size());
  out.mean = std::move(pc.mean), out.basis = std::move(pc.basis), out.variance = std::move(pc.variance);
  out.total_variance = pc.total_variance;
  return out;
}

TokenBasis fit_probe_basis(const model::BrainModel& model, const EvalData& data, const std::vector<int>& subjects,
                           runtime::Communicator& comm, const std::string& device, int asked) {
  const model::ModelConfig& mc = model.config();
  const int64_t cap = std::max<int64_t>(1, 4096 / mc.n_tokens());
  const int components = int(std::min<int64_t>({asked > 0 ? asked : mc.d_model, mc.d_model, cap}));
  const int64_t max_windows = std::clamp<int64_t>((int64_t(1) << 19) / mc.n_tokens(), 1, 4096);
  return fit_token_basis(model, data, unlabelled_windows(data, subjects, max_windows), comm, device, components,
                         asked > 0 ? 1.0 : 0.9);
}

TokenProjection token_projection(const TokenBasis& b) {
  TokenProjection p{b.d_model, b.components, b.basis, std::vector<double>(size_t(b.components), 0.0)};
  for (int k = 0; k < b.components; ++k)
    for (int a = 0; a < b.d_model; ++a) p.bias[size_t(k)] -= b.basis[size_t(k * b.d_model + a)] * b.mean[size_t(a)];
  return p;
}

TokenProjection token_projection(const model::TaskHead& head) {
  const int64_t CD = int64_t(head.components()) * head.d_model();
  return {head.d_model(), head.components(), std::vector<double>(head.proj_weight(), head.proj_weight() + CD),
          std::vector<double>(head.proj_bias(), head.proj_bias() + head.components())};
}

std::vector<double> window_features(const model::BrainModel& source, const EvalData& data,
                                    const std::vector<WindowRef>& windows, runtime::Communicator& comm,
                                    const std::string& device, TokenPool pool, const TokenProjection* projection) {
  const model::ModelConfig& c = source.config();
  const int64_t P = c.n_parcels, D = c.d_model, nt = c.n_time();
  require(pool != TokenPool::per_token || (projection && projection->d_model == D), "window_features: per_token "
          "needs a projection of the model's width");
  const int64_t C = projection ? projection->components : 0;
  const int64_t width = pool == TokenPool::per_patch ? nt * D : pool == TokenPool::per_parcel ? P * D : nt * P * C;
  // Features in float32 wherever they are computed, as the encoder gives them; summed over the ranks in float32.
  std::vector<float> out(windows.size() * size_t(width), 0.0f);
  encode_windows(source, data, windows, comm, device, [&](size_t w, const float* enc) {
    float* f = &out[w * size_t(width)];
    for (int64_t j = 0; j < nt; ++j)
      for (int64_t p = 0; p < P; ++p) {
        const float* e = enc + (j * P + p) * D;
        if (pool == TokenPool::per_token) {
          for (int64_t k = 0; k < C; ++k) {
            double v = projection->bias[size_t(k)];
            for (int64_t a = 0; a < D; ++a) v += projection->weight[size_t(k * D + a)] * e[a];
            f[(j * P + p) * C + k] = float(v);
          }
          continue;
        }
        const bool per_patch = pool == TokenPool::per_patch;
        float* to = per_patch ? f + j * D : f + p * D;
        const float n = per_patch ? float(P) : float(nt);  // what the mean is over
        for (int64_t k = 0; k < D; ++k) to[k] += e[k] / n;
      }
  });
  if (comm.size() > 1) comm.allreduce_sum(out.data(), int64_t(out.size()));
  return std::vector<double>(out.begin(), out.end());
}

}  // namespace bfm::launch::eval
