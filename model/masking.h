// Masks for the mae objective: which tokens of each sample the encoder does not see and the decoder reconstructs.
// Three strategies users expect (token i = j * P + p):
//   random  round(ratio * N) tokens drawn uniformly per sample (MAE / BERT);
//   tube    round(ratio * P) whole parcels masked across all time patches (spatial inpainting);
//   future  the last round(ratio * n_t) time patches, all parcels (forecasting); at least one patch stays visible.
// Every row of a batch masks the same number of tokens, so the encoder's visible sequences have one length.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace bfm {
class Rng;
}

namespace bfm::model {

enum class MaskStrategy { random, tube, future };

MaskStrategy parse_mask_strategy(const std::string& name);  // throws bfm::Error for an unknown name
const char* to_string(MaskStrategy strategy);

// How many tokens a strategy masks for this geometry (the same for every sample).
int masked_count(MaskStrategy strategy, double ratio, int n_time, int n_parcels);

// mask [B, N] (1 = masked), drawn from rng.
void make_masks(uint8_t* mask, int B, int n_time, int n_parcels, double ratio, MaskStrategy strategy, Rng& rng);

// Visible (unmasked) token indices of each row, ascending: [B, n_visible]. Throws bfm::Error naming `source` when
// rows mask different numbers of tokens or a row masks every token.
std::vector<int32_t> visible_indices(const uint8_t* mask, int B, int N, int* n_visible, const std::string& source);

}  // namespace bfm::model
