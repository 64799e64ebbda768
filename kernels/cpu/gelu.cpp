// tanh-GELU, elementwise over the cores; the oracle of kernels/cuda/gelu.cu (same formulas, same constants).
// Four lanes at a time through exp4 (kernels/cpu/vec_math.h): glibc's tanhf cost a fifth of a training step.
#include "kernels/gelu.h"

#include <algorithm>
#include <cmath>

#include "kernels/cpu/vec_math.h"
#include "base/error.h"

namespace bfm::kernels::cpu {
namespace {
constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kCoeff = 0.044715f;

// With a = sqrt(2/pi) (u + 0.044715 u^3) and s = sigmoid(2a) = (1 + tanh a) / 2, gelu(u) = u s: written so, the
// far negative tail has no cancellation in 1 + tanh a.
inline Float4 sigmoid_2a(Float4 u) { return 1.0f / (1.0f + exp4(-2.0f * kSqrt2OverPi * (u + kCoeff * u * u * u))); }

inline Float4 gelu4(Float4 u) { return u * sigmoid_2a(u); }

// d/du [0.5 u (1 + tanh a)] = 0.5 (1 + tanh a) + 0.5 u (1 - tanh^2 a) a' = s + 2 u s (1 - s) a',
// a' = sqrt(2/pi) (1 + 3 * 0.044715 u^2)
inline Float4 gelu_grad4(Float4 u) {
  const Float4 s = sigmoid_2a(u);
  const Float4 da = kSqrt2OverPi * (1.0f + 3.0f * kCoeff * u * u);
  return s + 2.0f * u * s * (1.0f - s) * da;
}

// Applies f to [begin, end) in whole vectors, the ragged tail through a zero-padded vector.
template <class F>
inline void for_each4(int64_t begin, int64_t end, F f) {
  int64_t i = begin;
  for (; i + 4 <= end; i += 4) f(i, 4);
  if (i < end) f(i, static_cast<int>(end - i));
}

inline Float4 load_partial(const float* p, int n) {
  float tmp[4] = {0, 0, 0, 0};
  std::memcpy(tmp, p, sizeof(float) * n);
  return load4(tmp);
}
}  // namespace

void gelu_forward(float* y, const float* x, int64_t n) {
  require(n >= 0, "gelu_forward: bad size n=", n);
  const int64_t blocks = (n + 1023) / 1024;
#pragma omp parallel for schedule(static)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    for_each4(blk * 1024, std::min(n, (blk + 1) * 1024), [&](int64_t i, int lanes) {
      const Float4 v = gelu4(lanes == 4 ? load4(x + i) : load_partial(x + i, lanes));
      float out[4];
      store4(out, v);
      std::memcpy(y + i, out, sizeof(float) * lanes);
    });
  }
}

void gelu_backward(float* dx, const float* dy, const float* x, int64_t n) {
  require(n >= 0, "gelu_backward: bad size n=", n);
  const int64_t blocks = (n + 1023) / 1024;
#pragma omp parallel for schedule(static)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    for_each4(blk * 1024, std::min(n, (blk + 1) * 1024), [&](int64_t i, int lanes) {
      const Float4 g = gelu_grad4(lanes == 4 ? load4(x + i) : load_partial(x + i, lanes));
      const Float4 upstream = lanes == 4 ? load4(dy + i) : load_partial(dy + i, lanes);
      float out[4];
      store4(out, upstream * g);
      for (int l = 0; l < lanes; ++l) dx[i + l] += out[l];
    });
  }
}

}  // namespace bfm::kernels::cpu
