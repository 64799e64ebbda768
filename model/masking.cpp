#include "model/masking.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "base/error.h"
#include "base/rng.h"

namespace bfm::model {

namespace {
int round_half_even(double v) { return static_cast<int>(std::nearbyint(v)); }

// The first k entries of a uniformly random permutation of 0..n-1 (partial Fisher-Yates).
void choose(std::vector<int>& pool, int k, Rng& rng) {
  const int n = static_cast<int>(pool.size());
  std::iota(pool.begin(), pool.end(), 0);
  for (int i = 0; i < k; ++i) std::swap(pool[i], pool[i + static_cast<int>(rng.below(n - i))]);
}
}  // namespace

MaskStrategy parse_mask_strategy(const std::string& name) {
  if (name == "random") return MaskStrategy::random;
  if (name == "tube") return MaskStrategy::tube;
  if (name == "future") return MaskStrategy::future;
  fail("unknown mask strategy \"", name, "\" (known: random, tube, future)");
}

const char* to_string(MaskStrategy strategy) {
  switch (strategy) {
    case MaskStrategy::random: return "random";
    case MaskStrategy::tube: return "tube";
    case MaskStrategy::future: return "future";
  }
  return "?";
}

int masked_count(MaskStrategy strategy, double ratio, int n_time, int n_parcels) {
  const int N = n_time * n_parcels;
  switch (strategy) {
    case MaskStrategy::random: return std::clamp(round_half_even(ratio * N), 1, N - 1);
    case MaskStrategy::tube: return std::clamp(round_half_even(ratio * n_parcels), 1, n_parcels - 1) * n_time;
    case MaskStrategy::future: return std::clamp(round_half_even(ratio * n_time), 1, n_time - 1) * n_parcels;
  }
  return 0;
}

void make_masks(uint8_t* mask, int B, int n_time, int n_parcels, double ratio, MaskStrategy strategy, Rng& rng) {
  const int N = n_time * n_parcels;
  require(strategy != MaskStrategy::tube || n_parcels > 1, "tube masking needs at least 2 parcels");
  require(strategy != MaskStrategy::future || n_time > 1, "future masking needs at least 2 time patches");
  require(N > 1, "masking needs at least 2 tokens");
  const int count = masked_count(strategy, ratio, n_time, n_parcels);
  std::vector<int> pool(strategy == MaskStrategy::tube ? n_parcels : N);
  for (int b = 0; b < B; ++b) {
    uint8_t* row = mask + static_cast<int64_t>(b) * N;
    std::fill(row, row + N, uint8_t{0});
    switch (strategy) {
      case MaskStrategy::random:
        choose(pool, count, rng);
        for (int k = 0; k < count; ++k) row[pool[k]] = 1;
        break;
      case MaskStrategy::tube: {
        const int parcels = count / n_time;
        choose(pool, parcels, rng);
        for (int k = 0; k < parcels; ++k)
          for (int j = 0; j < n_time; ++j) row[j * n_parcels + pool[k]] = 1;
        break;
      }
      case MaskStrategy::future:
        std::fill(row + (N - count), row + N, uint8_t{1});
        break;
    }
  }
}

std::vector<int32_t> visible_indices(const uint8_t* mask, int B, int N, int* n_visible, const std::string& source) {
  int expected = -1;
  std::vector<int32_t> index;
  for (int b = 0; b < B; ++b) {
    const uint8_t* row = mask + static_cast<int64_t>(b) * N;
    int visible = 0;
    for (int i = 0; i < N; ++i) visible += row[i] == 0;
    if (expected < 0) expected = visible;
    require(visible == expected, source, ": mask row ", b, " leaves ", visible, " tokens visible, row 0 leaves ",
            expected, " (every row must mask the same number of tokens)");
    require(visible > 0, source, ": mask row ", b, " masks all ", N, " tokens; the encoder needs at least one");
    for (int i = 0; i < N; ++i)
      if (row[i] == 0) index.push_back(i);
  }
  *n_visible = expected < 0 ? 0 : expected;
  return index;
}

}  // namespace bfm::model
