// A stack of pre-LayerNorm transformer blocks followed by its final LayerNorm (MODEL_SPEC "Transformer block"):
//   h = h + proj(attn(ln1(h)));  h = h + fc2(gelu_tanh(fc1(ln2(h))));  out = ln_f(h)
// The encoder and the MAE decoder are each one TransformerStack over the same parameter arena, told apart by the
// name prefix ("" or "decoder."). forward() keeps what backward() needs; backward() recomputes nothing but the
// attention scores (inside the attention kernel).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "model/params.h"

namespace bfm::model {

// Offsets (into the parameter / gradient arenas) of one block's tensors.
struct BlockOffsets {
  int64_t ln1_w, ln1_b, qkv_w, qkv_b, proj_w, proj_b, ln2_w, ln2_b, fc1_w, fc1_b, fc2_w, fc2_b;
  static BlockOffsets find(const ParamLayout& layout, const std::string& prefix);
};

class TransformerStack {
 public:
  // prefix "" for the encoder ("blocks.{i}.", "ln_f."), "decoder." for the decoder.
  TransformerStack(const ParamLayout& layout, const std::string& prefix, int n_layers, int width, int n_heads,
                   int hidden, float ln_eps);

  // in [B, n, width] -> out [B, n, width]. causal_block = 0 bidirectional, P for time-causal (kernels/attention.h).
  void forward(float* out, const float* in, const float* params, int B, int n, int causal_block);
  // dout [B, n, width] of the last forward -> din [B, n, width] += ...; parameter gradients += ... into grads.
  // on_ready (may be empty) is called with a name prefix ("decoder.blocks.3.", "ln_f.") as soon as the gradients of
  // the tensors under it are final, so that their all-reduce can start while backward goes on.
  void backward(float* din, const float* dout, const float* params, float* grads,
                const std::function<void(const std::string&)>& on_ready = {});

  int width() const { return width_; }

 private:
  struct LayerActivations {
    std::vector<float> ln1, ln1_mean, ln1_rstd;  // [M, W], [M], [M]
    std::vector<float> qkv;                      // [M, 3W]
    std::vector<float> attn, lse;                // [M, W], [B, H, n]
    std::vector<float> mid;                      // [M, W] residual stream after the attention branch
    std::vector<float> ln2, ln2_mean, ln2_rstd;  // [M, W], [M], [M]
    std::vector<float> fc1, gelu;                // [M, F] before and after the activation
  };

  std::string prefix_;
  int n_layers_, width_, n_heads_, hidden_;
  float eps_;
  std::vector<BlockOffsets> blocks_;
  int64_t lnf_w_, lnf_b_;

  // Shapes of the last forward.
  int B_ = 0, n_ = 0, causal_block_ = 0;
  std::vector<std::vector<float>> residual_;  // n_layers + 1 of [M, W]: input of each block, then the last output
  std::vector<LayerActivations> layers_;
  std::vector<float> lnf_mean_, lnf_rstd_;
  // Backward scratch, shared by all layers.
  std::vector<float> d_residual_, d_mid_, d_ln_, d_qkv_, d_attn_, d_fc1_, d_gelu_;
};

}  // namespace bfm::model
