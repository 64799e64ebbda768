// The model's sizes and objectives: every dimension of MODEL_SPEC.md, plus provenance for released checkpoints.
// The same struct is read from a TOML run config (launch/) and from a checkpoint's config.json (model/released_checkpoint).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace bfm::model {

struct DecoderConfig {
  int d_model = 0;
  int n_heads = 0;
  int n_layers = 0;
};

struct ModelConfig {
  // Input
  int n_parcels = 0;  // P
  int window = 0;     // T time points per sample
  int patch_len = 0;  // L time points per token
  // Encoder
  int d_model = 0;   // D
  int n_heads = 0;   // H
  int n_layers = 0;
  double mlp_ratio = 4.0;  // F = mlp_ratio * D (must be a whole number)
  // Objectives: "mae" or "causal" (at most one), optionally "contrastive".
  bool mae = false;
  bool causal = false;
  bool contrastive = false;
  double mask_ratio = 0.75;
  std::optional<DecoderConfig> decoder;  // required by mae
  int stim_dim = 0;                      // S, contrastive only (0 = none)
  int proj_dim = 0;                      // E, contrastive only (0 = none)
  double ln_eps = 1e-5;
  double weight_mae = 1.0, weight_causal = 1.0, weight_contrastive = 1.0;
  // Provenance (released checkpoints)
  std::string atlas = "none";
  double tr_seconds = 0.0;
  int64_t train_steps = 0;
  int64_t train_subjects = 0;
  std::vector<std::string> train_datasets;
  // The pre-training corpus' provenance as JSON text (atlas, its SHA-256, parcel labels, preprocessing:
  // launch/data/provenance.h), config.json's "data_provenance"; "" = not known (synthetic windows, older checkpoints).
  std::string data_provenance;

  int n_time() const { return window / patch_len; }  // n_t
  int n_tokens() const { return n_time() * n_parcels; }  // N
  int head_dim() const { return d_model / n_heads; }
  int mlp_hidden() const;      // F
  int dec_mlp_hidden() const;  // Fd
  // round(mask_ratio * N) with ties to even, as Python's round().
  int n_masked_tokens() const;
  std::vector<std::string> objectives() const;  // in the order mae/causal, contrastive

  // Throws bfm::Error naming `source` and the first inconsistent field (T % L != 0, D % H != 0, mae without a
  // decoder, both mae and causal, contrastive without stim_dim/proj_dim, a fractional mlp_ratio * D, ...).
  void validate(const std::string& source) const;
};

// config.json of a released checkpoint (MODEL_SPEC "Released checkpoint").
nlohmann::json to_checkpoint_json(const ModelConfig& config);
// Reads config.json contents; `source` (the file) is named in every error: a missing key, a wrong type, a format
// other than "bfm-checkpoint", a format_version newer than this build reads, an unknown objective.
ModelConfig from_checkpoint_json(const nlohmann::json& json, const std::string& source);

}  // namespace bfm::model
