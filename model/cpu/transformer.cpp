#include "model/cpu/transformer.h"

#include <algorithm>

#include "kernels/attention.h"
#include "kernels/gelu.h"
#include "kernels/layernorm.h"
#include "kernels/linear.h"
#include "kernels/residual.h"

namespace bfm::model {

namespace k = bfm::kernels::cpu;

namespace {
void zero(std::vector<float>& v) { std::fill(v.begin(), v.end(), 0.0f); }
}  // namespace

BlockOffsets BlockOffsets::find(const ParamLayout& layout, const std::string& prefix) {
  auto at = [&](const char* name) { return layout.offset(prefix + name); };
  return {at("ln1.weight"),       at("ln1.bias"),      at("attn.qkv.weight"), at("attn.qkv.bias"),
          at("attn.proj.weight"), at("attn.proj.bias"), at("ln2.weight"),      at("ln2.bias"),
          at("mlp.fc1.weight"),   at("mlp.fc1.bias"),  at("mlp.fc2.weight"),  at("mlp.fc2.bias")};
}

TransformerStack::TransformerStack(const ParamLayout& layout, const std::string& prefix, int n_layers, int width,
                                   int n_heads, int hidden, float ln_eps)
    : prefix_(prefix), n_layers_(n_layers), width_(width), n_heads_(n_heads), hidden_(hidden), eps_(ln_eps) {
  for (int i = 0; i < n_layers; ++i)
    blocks_.push_back(BlockOffsets::find(layout, prefix + "blocks." + std::to_string(i) + "."));
  lnf_w_ = layout.offset(prefix + "ln_f.weight");
  lnf_b_ = layout.offset(prefix + "ln_f.bias");
  layers_.resize(n_layers);
  residual_.resize(n_layers + 1);
}

void TransformerStack::forward(float* out, const float* in, const float* params, int B, int n, int causal_block) {
  B_ = B;
  n_ = n;
  causal_block_ = causal_block;
  const int64_t M = int64_t(B) * n;
  const int W = width_, F = hidden_, H = n_heads_;
  for (auto& r : residual_) r.resize(M * W);
  std::copy(in, in + M * W, residual_[0].begin());
  const float* p = params;
  for (int l = 0; l < n_layers_; ++l) {
    const BlockOffsets& o = blocks_[l];
    LayerActivations& a = layers_[l];
    a.ln1.resize(M * W), a.ln1_mean.resize(M), a.ln1_rstd.resize(M), a.qkv.resize(M * 3 * W);
    a.attn.resize(M * W), a.lse.resize(int64_t(B) * H * n), a.mid.resize(M * W);
    a.ln2.resize(M * W), a.ln2_mean.resize(M), a.ln2_rstd.resize(M), a.fc1.resize(M * F), a.gelu.resize(M * F);
    const float* h = residual_[l].data();

    k::layernorm_forward(a.ln1.data(), a.ln1_mean.data(), a.ln1_rstd.data(), h, p + o.ln1_w, p + o.ln1_b, M, W, eps_);
    k::linear_forward(a.qkv.data(), a.ln1.data(), p + o.qkv_w, p + o.qkv_b, M, W, 3 * W);
    k::attention_forward(a.attn.data(), a.lse.data(), a.qkv.data(), B, n, H, W / H, causal_block);
    k::linear_forward(a.mid.data(), a.attn.data(), p + o.proj_w, p + o.proj_b, M, W, W);
    k::residual_forward(a.mid.data(), a.mid.data(), h, M * W);

    k::layernorm_forward(a.ln2.data(), a.ln2_mean.data(), a.ln2_rstd.data(), a.mid.data(), p + o.ln2_w, p + o.ln2_b,
                         M, W, eps_);
    k::linear_forward(a.fc1.data(), a.ln2.data(), p + o.fc1_w, p + o.fc1_b, M, W, F);
    k::gelu_forward(a.gelu.data(), a.fc1.data(), M * F);
    float* next = residual_[l + 1].data();
    k::linear_forward(next, a.gelu.data(), p + o.fc2_w, p + o.fc2_b, M, F, W);
    k::residual_forward(next, next, a.mid.data(), M * W);
  }
  lnf_mean_.resize(M);
  lnf_rstd_.resize(M);
  k::layernorm_forward(out, lnf_mean_.data(), lnf_rstd_.data(), residual_[n_layers_].data(), p + lnf_w_, p + lnf_b_,
                       M, W, eps_);
}

void TransformerStack::backward(float* din, const float* dout, const float* params, float* grads,
                                const std::function<void(const std::string&)>& on_ready) {
  const int B = B_, n = n_, H = n_heads_, W = width_, F = hidden_;
  const int64_t M = int64_t(B) * n;
  const float* p = params;
  float* g = grads;
  d_residual_.assign(M * W, 0.0f);
  d_mid_.resize(M * W), d_ln_.resize(M * W), d_qkv_.resize(M * 3 * W), d_attn_.resize(M * W);
  d_fc1_.resize(M * F), d_gelu_.resize(M * F);

  // out = ln_f(h_L): d_residual = dL/dh_L.
  k::layernorm_backward(d_residual_.data(), g + lnf_w_, g + lnf_b_, dout, residual_[n_layers_].data(), p + lnf_w_,
                        lnf_mean_.data(), lnf_rstd_.data(), M, W);
  if (on_ready) on_ready(prefix_ + "ln_f.");

  for (int l = n_layers_ - 1; l >= 0; --l) {
    const BlockOffsets& o = blocks_[l];
    const LayerActivations& a = layers_[l];
    // MLP branch, h_{l+1} = mid + fc2(gelu(fc1(ln2(mid)))): the residual path passes d_residual to mid unchanged.
    std::copy(d_residual_.begin(), d_residual_.end(), d_mid_.begin());
    zero(d_gelu_);
    k::linear_backward(d_gelu_.data(), g + o.fc2_w, g + o.fc2_b, d_residual_.data(), a.gelu.data(), p + o.fc2_w, M, F,
                       W);
    zero(d_fc1_);
    k::gelu_backward(d_fc1_.data(), d_gelu_.data(), a.fc1.data(), M * F);
    zero(d_ln_);
    k::linear_backward(d_ln_.data(), g + o.fc1_w, g + o.fc1_b, d_fc1_.data(), a.ln2.data(), p + o.fc1_w, M, W, F);
    k::layernorm_backward(d_mid_.data(), g + o.ln2_w, g + o.ln2_b, d_ln_.data(), a.mid.data(), p + o.ln2_w,
                          a.ln2_mean.data(), a.ln2_rstd.data(), M, W);

    // Attention branch, mid = h_l + proj(attn(ln1(h_l))).
    std::copy(d_mid_.begin(), d_mid_.end(), d_residual_.begin());
    zero(d_attn_);
    k::linear_backward(d_attn_.data(), g + o.proj_w, g + o.proj_b, d_mid_.data(), a.attn.data(), p + o.proj_w, M, W, W);
    zero(d_qkv_);
    k::attention_backward(d_qkv_.data(), d_attn_.data(), a.qkv.data(), a.attn.data(), a.lse.data(), B, n, H, W / H,
                          causal_block_);
    zero(d_ln_);
    k::linear_backward(d_ln_.data(), g + o.qkv_w, g + o.qkv_b, d_qkv_.data(), a.ln1.data(), p + o.qkv_w, M, W, 3 * W);
    k::layernorm_backward(d_residual_.data(), g + o.ln1_w, g + o.ln1_b, d_ln_.data(), residual_[l].data(),
                          p + o.ln1_w, a.ln1_mean.data(), a.ln1_rstd.data(), M, W);
    if (on_ready) on_ready(prefix_ + "blocks." + std::to_string(l) + ".");
  }
  k::residual_forward(din, din, d_residual_.data(), M * W);
}

}  // namespace bfm::model
