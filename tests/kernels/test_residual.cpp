// residual_forward, including the in-place form out == a that the transformer block uses (h = h + f(h)).
#include "kernels/residual.h"

#include <gtest/gtest.h>

#include <vector>

#include "reference.h"

namespace {

using namespace bfm::test;
namespace cpu = bfm::kernels::cpu;

TEST(ResidualTest, AddsElementwise) {
  const std::vector<float> a = random_floats(1037, 1), b = random_floats(1037, 2);
  std::vector<float> out(a.size(), 9.0f);
  cpu::residual_forward(out.data(), a.data(), b.data(), static_cast<int64_t>(a.size()));
  for (size_t i = 0; i < a.size(); ++i) ASSERT_EQ(out[i], a[i] + b[i]) << i;
}

TEST(ResidualTest, InPlace) {
  std::vector<float> h = random_floats(513, 3);
  const std::vector<float> h0 = h, f = random_floats(513, 4);
  cpu::residual_forward(h.data(), h.data(), f.data(), static_cast<int64_t>(h.size()));
  for (size_t i = 0; i < h.size(); ++i) ASSERT_EQ(h[i], h0[i] + f[i]) << i;
}

}  // namespace
