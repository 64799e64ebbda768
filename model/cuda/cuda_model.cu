// CudaBrainModel: model/cpu/cpu_model.cpp's forward and backward, op for op, on the GPU (see gpu_model.h).
#include "model/cuda/cuda_model.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <map>
#include <type_traits>
#include <vector>

#include "kernels/adamw.h"
#include "kernels/attention.h"
#include "kernels/contrastive.h"
#include "kernels/cuda/common.cuh"
#include "kernels/gelu.h"
#include "kernels/layernorm.h"
#include "kernels/linear.h"
#include "kernels/mask_fill.h"
#include "kernels/mean_pool.h"
#include "kernels/mse_loss.h"
#include "kernels/patch_embed.h"
#include "kernels/residual.h"
#include "model/masking.h"
#include "model/placement.h"
#include "runtime/device.h"
#include "runtime/train_checkpoint.h"
#include "base/error.h"

namespace bfm::model {

namespace kc = bfm::kernels::cuda;
using kc::bf16;

namespace {

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) bfm::fail("GPU model: ", what, ": ", cudaGetErrorString(err));
}

// Host-side conversions of an activation element (float or bf16) for the work done on the host.
inline float to_float(float v) { return v; }
inline float to_float(bf16 v) { return __bfloat162float(v); }
template <typename T>
T from_float(float v) {
  if constexpr (std::is_same_v<T, float>) return v;
  else return __float2bfloat16(v);
}

// A device array that grows on demand and keeps its memory between steps.
template <typename U>
class DeviceVec {
 public:
  DeviceVec() = default;
  DeviceVec(const DeviceVec&) = delete;
  DeviceVec& operator=(const DeviceVec&) = delete;
  ~DeviceVec() { cudaFree(ptr_); }
  U* resize(int64_t n) {
    if (n > capacity_) {
      cudaFree(ptr_);
      ptr_ = nullptr;
      check(cudaMalloc(&ptr_, std::max<int64_t>(n, 1) * sizeof(U)), "cudaMalloc");
      capacity_ = n;
    }
    size_ = n;
    return ptr_;
  }
  U* get() const { return ptr_; }
  int64_t size() const { return size_; }
  size_t bytes() const { return size_t(capacity_) * sizeof(U); }
  void zero(cudaStream_t s) {
    if (size_ > 0) check(cudaMemsetAsync(ptr_, 0, size_ * sizeof(U), s), "cudaMemsetAsync");
  }

 private:
  U* ptr_ = nullptr;
  int64_t size_ = 0, capacity_ = 0;
};

template <typename U>
void copy_device(U* dst, const U* src, int64_t n, cudaStream_t s) {
  check(cudaMemcpyAsync(dst, src, n * sizeof(U), cudaMemcpyDeviceToDevice, s), "cudaMemcpyAsync");
}

__global__ void clamp_max_kernel(float* p, float max) {
  if (*p > max) *p = max;
}

constexpr int64_t kAlign = 64;  // elements: 256 bytes of fp32, 128 of bf16

// The GELU's backward runs in cuBLASLt's epilogue of the fc2 dx GEMM unless BFM_UNFUSED_GELU=1 asks for the
// separate kernel (kept for comparison: bench_step_gpu --profile shows both).
bool fused_gelu_backward() {
  static const bool fused = [] {
    const char* v = std::getenv("BFM_UNFUSED_GELU");
    return v == nullptr || std::string(v) != "1";
  }();
  return fused;
}

// Where a step's time goes, op by op: events recorded on the stream between ops (only when profiling is on), the
// time between one mark and the next charged to the first one's name.
class Profiler {
 public:
  ~Profiler() {
    for (auto& m : marks_) cudaEventDestroy(m.second);
  }
  bool on = false;
  void mark(cudaStream_t s, const char* name) {
    if (!on) return;
    if (used_ == marks_.size()) {
      cudaEvent_t e;
      check(cudaEventCreate(&e), "cudaEventCreate");
      marks_.push_back({name, e});
    }
    marks_[used_].first = name;
    check(cudaEventRecord(marks_[used_].second, s), "cudaEventRecord");
    ++used_;
  }
  // After the stream has synchronised: adds the intervals into totals (ms) and starts over.
  void collect() {
    for (size_t i = 0; i + 1 < used_; ++i) {
      float ms = 0;
      check(cudaEventElapsedTime(&ms, marks_[i].second, marks_[i + 1].second), "cudaEventElapsedTime");
      totals_[marks_[i].first] += ms;
    }
    used_ = 0;
  }
  std::vector<std::pair<std::string, double>> take() {
    std::vector<std::pair<std::string, double>> out(totals_.begin(), totals_.end());
    totals_.clear();
    return out;
  }

 private:
  std::vector<std::pair<const char*, cudaEvent_t>> marks_;
  size_t used_ = 0;
  std::map<std::string, double> totals_;
};

}  // namespace

// The parameter arena on the device: offsets of each tensor in padded coordinates.
struct DeviceLayout {
  std::vector<int64_t> offset;  // per ParamLayout entry
  int64_t total = 0;
  explicit DeviceLayout(const ParamLayout& layout) {
    for (const auto& p : layout.params()) {
      offset.push_back(total);
      total += (p.size + kAlign - 1) / kAlign * kAlign;
    }
  }
};

struct CudaBrainModel::Impl {
  virtual ~Impl() = default;
  virtual void load_params(const float* host) = 0;
  virtual void store(float* host, bool grads) const = 0;
  virtual void store_moments(float* m, float* v) const = 0;
  virtual void load_moments(const float* m, const float* v) = 0;
  virtual void load_grads(const float* host) = 0;
  virtual float* device_grads() = 0;
  virtual int64_t device_arena_size() const = 0;
  virtual void set_steps_taken(int64_t steps) = 0;
  virtual void zero_grads() = 0;
  virtual Losses run(const Batch& batch, bool backward, float scale, const std::string& source) = 0;
  // The hook backward calls as groups of gradients are enqueued (null: none); set by forward_backward for one call.
  const std::function<void(const std::string&)>* ready_ = nullptr;
  virtual void* stream() const = 0;
  virtual std::vector<std::pair<int64_t, int64_t>> device_tensors() const = 0;
  virtual void backward_tokens(const float* d_enc_out_host, float scale) = 0;
  virtual double optimizer_step(double lr, bool* applied) = 0;
  virtual int64_t steps_taken() const = 0;
  virtual std::vector<float> encoder_out() const = 0;
  virtual std::vector<float> pooled() const = 0;
  virtual std::vector<float> reconstruction() const = 0;
  virtual std::vector<float> next_prediction() const = 0;
  virtual int encoder_tokens() const = 0;
  virtual size_t device_bytes() const = 0;
  virtual void set_profiling(bool on) = 0;
  virtual std::vector<std::pair<std::string, double>> take_profile() = 0;
  ModelConfig config;
  ParamLayout layout;
  Precision precision;
  // The contrastive objective's group (set_contrastive_group): this rank, the ranks, their all-gather.
  int group_rank = 0, group_size = 1;
  Allgather allgather;
  Impl(const ModelConfig& c, Precision p) : config(c), layout((c.validate("model config"), c)), precision(p) {}
};

namespace {

// The parameter, mirror and gradient pointers of one tensor, looked up by name once.
struct Tensor {
  int64_t off = 0;
};

template <typename T>
class Model;

// One TransformerStack (encoder or decoder) on the GPU.
template <typename T>
class Stack {
 public:
  struct Block {
    int64_t ln1_w, ln1_b, qkv_w, qkv_b, proj_w, proj_b, ln2_w, ln2_b, fc1_w, fc1_b, fc2_w, fc2_b;
  };
  struct Acts {
    DeviceVec<T> ln1, qkv, attn, mid, ln2, fc1, gelu;
    DeviceVec<float> ln1_mean, ln1_rstd, ln2_mean, ln2_rstd, lse;
  };

  Stack(const ParamLayout& layout, const DeviceLayout& dl, const std::string& prefix, int n_layers, int width,
        int heads, int hidden, float eps, Profiler* prof)
      : prof_(prof), prefix_(prefix), n_layers_(n_layers), W_(width), H_(heads), F_(hidden), eps_(eps), acts_(n_layers),
        residual_(n_layers + 1) {
    auto at = [&](const std::string& name) {
      const auto& params = layout.params();
      for (size_t i = 0; i < params.size(); ++i)
        if (params[i].name == name) return dl.offset[i];
      bfm::fail("GPU model: no parameter '", name, "'");
    };
    for (int l = 0; l < n_layers; ++l) {
      const std::string p = prefix + "blocks." + std::to_string(l) + ".";
      blocks_.push_back({at(p + "ln1.weight"), at(p + "ln1.bias"), at(p + "attn.qkv.weight"), at(p + "attn.qkv.bias"),
                         at(p + "attn.proj.weight"), at(p + "attn.proj.bias"), at(p + "ln2.weight"),
                         at(p + "ln2.bias"), at(p + "mlp.fc1.weight"), at(p + "mlp.fc1.bias"),
                         at(p + "mlp.fc2.weight"), at(p + "mlp.fc2.bias")});
    }
    lnf_w_ = at(prefix + "ln_f.weight");
    lnf_b_ = at(prefix + "ln_f.bias");
  }

  // in [B, n, W] -> out [B, n, W]; P: master fp32, Wm: the GEMM mirror (T).
  void forward(T* out, const T* in, const float* P, const T* Wm, int B, int n, int causal_block, cudaStream_t s) {
    B_ = B, n_ = n, causal_ = causal_block;
    const int64_t M = int64_t(B) * n;
    for (auto& r : residual_) r.resize(M * W_);
    copy_device(residual_[0].get(), in, M * W_, s);
    for (int l = 0; l < n_layers_; ++l) {
      const Block& o = blocks_[l];
      Acts& a = acts_[l];
      const T* h = residual_[l].get();
      a.ln1.resize(M * W_), a.qkv.resize(M * 3 * W_), a.attn.resize(M * W_), a.mid.resize(M * W_);
      a.ln2.resize(M * W_), a.fc1.resize(M * F_), a.gelu.resize(M * F_);
      a.ln1_mean.resize(M), a.ln1_rstd.resize(M), a.ln2_mean.resize(M), a.ln2_rstd.resize(M);
      a.lse.resize(int64_t(B) * H_ * n);
      prof_->mark(s, "layernorm");
      kc::layernorm_forward<T>(a.ln1.get(), a.ln1_mean.get(), a.ln1_rstd.get(), h, P + o.ln1_w, P + o.ln1_b, M, W_,
                               eps_, s);
      prof_->mark(s, "linear qkv");
      kc::linear_forward<T>(a.qkv.get(), a.ln1.get(), Wm + o.qkv_w, Wm + o.qkv_b, M, W_, 3 * W_, s);
      prof_->mark(s, "attention forward");
      kc::attention_forward<T>(a.attn.get(), a.lse.get(), a.qkv.get(), B, n, H_, W_ / H_, causal_block, s);
      prof_->mark(s, "linear proj");
      kc::linear_forward<T>(a.mid.get(), a.attn.get(), Wm + o.proj_w, Wm + o.proj_b, M, W_, W_, s);
      prof_->mark(s, "residual");
      kc::residual_forward<T>(a.mid.get(), a.mid.get(), h, M * W_, s);
      prof_->mark(s, "layernorm");
      kc::layernorm_forward<T>(a.ln2.get(), a.ln2_mean.get(), a.ln2_rstd.get(), a.mid.get(), P + o.ln2_w,
                               P + o.ln2_b, M, W_, eps_, s);
      // fc1 with bias and GELU fused in cuBLASLt's epilogue: fc1 keeps the pre-activation for backward.
      prof_->mark(s, "linear fc1+gelu");
      kc::linear_forward<T>(a.gelu.get(), a.ln2.get(), Wm + o.fc1_w, Wm + o.fc1_b, M, W_, F_, s, a.fc1.get());
      T* next = residual_[l + 1].get();
      prof_->mark(s, "linear fc2");
      kc::linear_forward<T>(next, a.gelu.get(), Wm + o.fc2_w, Wm + o.fc2_b, M, F_, W_, s);
      prof_->mark(s, "residual");
      kc::residual_forward<T>(next, next, a.mid.get(), M * W_, s);
    }
    lnf_mean_.resize(M), lnf_rstd_.resize(M);
    prof_->mark(s, "layernorm");
    kc::layernorm_forward<T>(out, lnf_mean_.get(), lnf_rstd_.get(), residual_[n_layers_].get(), P + lnf_w_,
                             P + lnf_b_, M, W_, eps_, s);
  }

  // dout [B, n, W] -> din += ...; parameter gradients += into G. ready (may be null) is called with "ln_f." and
  // "blocks.<l>." (under the stack's prefix) once their gradient kernels are enqueued on s.
  void backward(T* din, const T* dout, const float* P, const T* Wm, float* G, cudaStream_t s,
                const std::function<void(const std::string&)>* ready = nullptr) {
    const int64_t M = int64_t(B_) * n_;
    d_res_.resize(M * W_), d_mid_.resize(M * W_), d_ln_.resize(M * W_), d_qkv_.resize(M * 3 * W_);
    d_attn_.resize(M * W_), d_fc1_.resize(M * F_);
    if (!fused_gelu_backward()) d_gelu_.resize(M * F_);
    prof_->mark(s, "copy/zero");
    d_res_.zero(s);
    prof_->mark(s, "layernorm backward");
    kc::layernorm_backward<T>(d_res_.get(), G + lnf_w_, G + lnf_b_, dout, residual_[n_layers_].get(), P + lnf_w_,
                              lnf_mean_.get(), lnf_rstd_.get(), M, W_, s);
    if (ready && *ready) (*ready)(prefix_ + "ln_f.");
    for (int l = n_layers_ - 1; l >= 0; --l) {
      const Block& o = blocks_[l];
      Acts& a = acts_[l];
      prof_->mark(s, "copy/zero");
      copy_device(d_mid_.get(), d_res_.get(), M * W_, s);
      prof_->mark(s, "linear fc2 backward (+gelu)");
      if (fused_gelu_backward()) {  // d_fc1 = gelu'(fc1) * (d_res W2), in the GEMM's epilogue
        kc::linear_backward<T>(d_fc1_.get(), G + o.fc2_w, G + o.fc2_b, d_res_.get(), a.gelu.get(), Wm + o.fc2_w, M,
                               F_, W_, s, /*accumulate_dx=*/false, a.fc1.get());
      } else {
        kc::linear_backward<T>(d_gelu_.get(), G + o.fc2_w, G + o.fc2_b, d_res_.get(), a.gelu.get(), Wm + o.fc2_w, M,
                               F_, W_, s, /*accumulate_dx=*/false);
        d_fc1_.zero(s);
        kc::gelu_backward<T>(d_fc1_.get(), d_gelu_.get(), a.fc1.get(), M * F_, s);
      }
      prof_->mark(s, "linear fc1 backward");
      kc::linear_backward<T>(d_ln_.get(), G + o.fc1_w, G + o.fc1_b, d_fc1_.get(), a.ln2.get(), Wm + o.fc1_w, M, W_,
                             F_, s, false);
      prof_->mark(s, "layernorm backward");
      kc::layernorm_backward<T>(d_mid_.get(), G + o.ln2_w, G + o.ln2_b, d_ln_.get(), a.mid.get(), P + o.ln2_w,
                                a.ln2_mean.get(), a.ln2_rstd.get(), M, W_, s);
      prof_->mark(s, "copy/zero");
      copy_device(d_res_.get(), d_mid_.get(), M * W_, s);
      prof_->mark(s, "linear proj backward");
      kc::linear_backward<T>(d_attn_.get(), G + o.proj_w, G + o.proj_b, d_mid_.get(), a.attn.get(), Wm + o.proj_w, M,
                             W_, W_, s, false);
      prof_->mark(s, "copy/zero");
      d_qkv_.zero(s);
      prof_->mark(s, "attention backward");
      kc::attention_backward<T>(d_qkv_.get(), d_attn_.get(), a.qkv.get(), a.attn.get(), a.lse.get(), B_, n_, H_,
                                W_ / H_, causal_, s);
      prof_->mark(s, "linear qkv backward");
      kc::linear_backward<T>(d_ln_.get(), G + o.qkv_w, G + o.qkv_b, d_qkv_.get(), a.ln1.get(), Wm + o.qkv_w, M, W_,
                             3 * W_, s, false);
      prof_->mark(s, "layernorm backward");
      kc::layernorm_backward<T>(d_res_.get(), G + o.ln1_w, G + o.ln1_b, d_ln_.get(), residual_[l].get(), P + o.ln1_w,
                                a.ln1_mean.get(), a.ln1_rstd.get(), M, W_, s);
      if (ready && *ready) (*ready)(prefix_ + "blocks." + std::to_string(l) + ".");
    }
    prof_->mark(s, "residual");
    kc::residual_forward<T>(din, din, d_res_.get(), M * W_, s);
  }

  size_t bytes() const {
    size_t b = 0;
    for (const auto& a : acts_)
      b += a.ln1.bytes() + a.qkv.bytes() + a.attn.bytes() + a.mid.bytes() + a.ln2.bytes() + a.fc1.bytes() +
           a.gelu.bytes() + a.ln1_mean.bytes() * 4 + a.lse.bytes();
    for (const auto& r : residual_) b += r.bytes();
    return b + d_res_.bytes() * 4 + d_qkv_.bytes() + d_fc1_.bytes() * 2;
  }

 private:
  Profiler* prof_;
  std::string prefix_;
  int n_layers_, W_, H_, F_;
  float eps_;
  std::vector<Block> blocks_;
  int64_t lnf_w_ = 0, lnf_b_ = 0;
  int B_ = 0, n_ = 0, causal_ = 0;
  std::vector<Acts> acts_;
  std::vector<DeviceVec<T>> residual_;
  DeviceVec<float> lnf_mean_, lnf_rstd_;
  DeviceVec<T> d_res_, d_mid_, d_ln_, d_qkv_, d_attn_, d_fc1_, d_gelu_;
};

template <typename T>
class Model final : public CudaBrainModel::Impl {
 public:
  Model(const ModelConfig& c, Precision p, const runtime::AdamWConfig& opt)
      : Impl(c, p), dl_(layout), opt_(opt),
        encoder_(layout, dl_, "", c.n_layers, c.d_model, c.n_heads, c.mlp_hidden(), float(c.ln_eps), &prof_) {
    check(cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking), "cudaStreamCreate");
    if (c.mae)
      decoder_ = std::make_unique<Stack<T>>(layout, dl_, "decoder.", c.decoder->n_layers, c.decoder->d_model,
                                            c.decoder->n_heads, c.dec_mlp_hidden(), float(c.ln_eps), &prof_);
    params_.resize(dl_.total), grads_.resize(dl_.total), m_.resize(dl_.total), v_.resize(dl_.total);
    params_.zero(s_), grads_.zero(s_), m_.zero(s_), v_.zero(s_);
    if constexpr (!std::is_same_v<T, float>) {
      mirror_.resize(dl_.total);
      mirror_.zero(s_);
    }
    // AdamW segments: every tensor, in device coordinates.
    std::vector<kc::AdamWSegment> segs;
    for (size_t i = 0; i < layout.params().size(); ++i) {
      const auto& pi = layout.params()[i];
      segs.push_back({dl_.offset[i], pi.size, pi.weight_decay ? 1 : 0});
      max_segment_ = std::max(max_segment_, pi.size);
    }
    n_segments_ = int(segs.size());
    segments_.resize(n_segments_);
    check(cudaMemcpyAsync(segments_.get(), segs.data(), segs.size() * sizeof(segs[0]), cudaMemcpyHostToDevice, s_),
          "upload segments");
    scalars_.resize(8);  // 0..2 losses, 3 norm, 4 clip scale, 5 finite (as int), 6..7 spare
    scalars_.zero(s_);
    check(cudaStreamSynchronize(s_), "init");
  }
  ~Model() override { cudaStreamDestroy(s_); }

  int64_t off(const char* name) const {
    const auto& params = layout.params();
    for (size_t i = 0; i < params.size(); ++i)
      if (params[i].name == name) return dl_.offset[i];
    bfm::fail("GPU model: no parameter '", name, "'");
  }
  const float* P() const { return params_.get(); }
  const T* Wm() const {
    if constexpr (std::is_same_v<T, float>) return params_.get();
    else return mirror_.get();
  }
  float* G() { return grads_.get(); }

  void load_params(const float* host) override {
    const auto& params = layout.params();
    for (size_t i = 0; i < params.size(); ++i)
      check(cudaMemcpyAsync(params_.get() + dl_.offset[i], host + params[i].offset, params[i].size * sizeof(float),
                            cudaMemcpyHostToDevice, s_),
            "upload parameters");
    if constexpr (!std::is_same_v<T, float>) kc::copy_to_mirror<T>(mirror_.get(), params_.get(), dl_.total, s_);
    check(cudaStreamSynchronize(s_), "upload parameters");
  }
  void store(float* host, bool grads) const override {
    const auto& params = layout.params();
    const float* src = grads ? grads_.get() : params_.get();
    for (size_t i = 0; i < params.size(); ++i)
      check(cudaMemcpyAsync(host + params[i].offset, src + dl_.offset[i], params[i].size * sizeof(float),
                            cudaMemcpyDeviceToHost, s_),
            "download parameters");
    check(cudaStreamSynchronize(s_), "download parameters");
  }
  void zero_grads() override { grads_.zero(s_); }
  void store_moments(float* m, float* v) const override {
    copy_arena(m, m_.get(), true);
    copy_arena(v, v_.get(), true);
  }
  void load_moments(const float* m, const float* v) override {
    copy_arena(const_cast<float*>(m), m_.get(), false);
    copy_arena(const_cast<float*>(v), v_.get(), false);
  }
  void load_grads(const float* host) override { copy_arena(const_cast<float*>(host), grads_.get(), false); }
  float* device_grads() override { return grads_.get(); }
  void* stream() const override { return s_; }
  std::vector<std::pair<int64_t, int64_t>> device_tensors() const override {
    std::vector<std::pair<int64_t, int64_t>> out;
    for (size_t i = 0; i < layout.params().size(); ++i) out.push_back({dl_.offset[i], layout.params()[i].size});
    return out;
  }
  int64_t device_arena_size() const override { return dl_.total; }
  void set_steps_taken(int64_t steps) override { step_ = steps; }
  // host (CPU layout) <-> device (padded layout), one tensor at a time.
  void copy_arena(float* host, float* device, bool to_host) const {
    const auto& params = layout.params();
    for (size_t i = 0; i < params.size(); ++i) {
      float* d = device + dl_.offset[i];
      float* h = host + params[i].offset;
      check(cudaMemcpyAsync(to_host ? h : d, to_host ? d : h, params[i].size * sizeof(float),
                            to_host ? cudaMemcpyDeviceToHost : cudaMemcpyHostToDevice, s_),
            "copy optimizer moments");
    }
    check(cudaStreamSynchronize(s_), "copy optimizer moments");
  }

  Losses run(const Batch& batch, bool backward, float scale, const std::string& source) override {
    const ModelConfig& c = config;
    const int B = batch.size, Tt = c.window, Pn = c.n_parcels, L = c.patch_len, D = c.d_model, N = c.n_tokens();
    require(B > 0 && batch.x != nullptr, source, ": empty batch");
    B_ = B;
    // Inputs to the device.
    prof_.mark(s_, "inputs and embedding");
    x_.resize(int64_t(B) * Tt * Pn);
    check(cudaMemcpyAsync(x_.get(), batch.x, x_.size() * sizeof(float), cudaMemcpyHostToDevice, s_), "upload x");
    patches_.resize(int64_t(B) * N * L);
    kc::patchify(patches_.get(), x_.get(), B, Tt, Pn, L, s_);
    const bool masked = c.mae && batch.mask != nullptr;
    masked_ = masked;
    if (masked) {
      std::vector<int32_t> visible = visible_indices(batch.mask, B, N, &n_enc_, source);
      mask_.resize(int64_t(B) * N);
      check(cudaMemcpyAsync(mask_.get(), batch.mask, int64_t(B) * N, cudaMemcpyHostToDevice, s_), "upload mask");
      visible_.resize(int64_t(visible.size()));
      check(cudaMemcpyAsync(visible_.get(), visible.data(), visible.size() * sizeof(int32_t), cudaMemcpyHostToDevice,
                            s_),
            "upload visible indices");
      check(cudaStreamSynchronize(s_), "upload");  // `visible` leaves scope
    } else {
      n_enc_ = N;
    }
    const int32_t* vis = masked ? visible_.get() : nullptr;
    const int64_t M = int64_t(B) * n_enc_;
    const float* P = this->P();
    const T* Wm = this->Wm();
    float* loss = scalars_.get();
    scalars_.zero(s_);

    tokens_.resize(M * D);
    kc::patch_embed_forward<T>(tokens_.get(), patches_.get(), P + off("patch_embed.weight"),
                               P + off("patch_embed.bias"), P + off("parcel_embed"), P + off("time_embed"), vis, B, N,
                               n_enc_, Pn, L, D, s_);
    enc_out_.resize(M * D);
    encoder_.forward(enc_out_.get(), tokens_.get(), P, Wm, B, n_enc_, c.causal ? Pn : 0, s_);
    prof_.mark(s_, "heads and losses");
    pooled_.resize(int64_t(B) * D);
    kc::mean_pool_forward<T>(pooled_.get(), enc_out_.get(), B, n_enc_, D, s_);

    Losses out;
    ran_decoder_ = masked && !batch.encoder_only;
    ran_next_ = c.causal && !batch.encoder_only;
    contrastive_ = c.contrastive && batch.stim != nullptr && !batch.encoder_only;
    if (batch.encoder_only) {  // embeddings and fine-tuning: no head, no loss, nothing to back-propagate here
      prof_.mark(s_, "end");
      check(cudaStreamSynchronize(s_), "encoder forward");
      prof_.collect();
      return out;
    }
    if (masked) {
      const int Dd = c.decoder->d_model;
      dec_z_.resize(M * Dd);
      kc::linear_forward<T>(dec_z_.get(), enc_out_.get(), Wm + off("decoder.embed.weight"),
                            Wm + off("decoder.embed.bias"), M, D, Dd, s_);
      dec_in_.resize(int64_t(B) * N * Dd);
      kc::mask_fill_forward<T>(dec_in_.get(), dec_z_.get(), P + off("decoder.mask_token"),
                               P + off("decoder.parcel_embed"), P + off("decoder.time_embed"), vis, B, N, n_enc_, Pn,
                               Dd, s_);
      dec_out_.resize(int64_t(B) * N * Dd);
      prof_.mark(s_, "decoder: embed and mask fill");
      decoder_->forward(dec_out_.get(), dec_in_.get(), P, Wm, B, N, 0, s_);
      prof_.mark(s_, "heads and losses");
      recon_.resize(int64_t(B) * N * L);
      kc::linear_forward<T>(recon_.get(), dec_out_.get(), Wm + off("decoder.head.weight"),
                            Wm + off("decoder.head.bias"), int64_t(B) * N, Dd, L, s_);
      d_recon_.resize(recon_.size());
      if (backward) d_recon_.zero(s_);
      kc::masked_mse<T>(loss + 0, backward ? d_recon_.get() : nullptr, recon_.get(), patches_.get(), mask_.get(), B,
                        N, L, float(scale * c.weight_mae), s_);
    }
    if (c.causal) {
      next_.resize(int64_t(B) * N * L);
      kc::linear_forward<T>(next_.get(), enc_out_.get(), Wm + off("next_head.weight"), Wm + off("next_head.bias"),
                            int64_t(B) * N, D, L, s_);
      d_next_.resize(next_.size());
      if (backward) d_next_.zero(s_);
      kc::next_patch_mse<T>(loss + 1, backward ? d_next_.get() : nullptr, next_.get(), patches_.get(), B, c.n_time(),
                            Pn, L, float(scale * c.weight_causal), s_);
    }
    if (contrastive_) {
      const int S = c.stim_dim, E = c.proj_dim;
      stim_f_.resize(int64_t(B) * S);
      check(cudaMemcpyAsync(stim_f_.get(), batch.stim, stim_f_.size() * sizeof(float), cudaMemcpyHostToDevice, s_),
            "upload stim");
      stim_.resize(int64_t(B) * S);
      kc::copy_to_mirror<T>(stim_.get(), stim_f_.get(), int64_t(B) * S, s_);
      brain_e_.resize(int64_t(B) * E), stim_e_.resize(int64_t(B) * E);
      kc::linear_forward<T>(brain_e_.get(), pooled_.get(), Wm + off("brain_proj.weight"), nullptr, B, D, E, s_);
      kc::linear_forward<T>(stim_e_.get(), stim_.get(), Wm + off("stim_proj.weight"), nullptr, B, S, E, s_);
      d_brain_.resize(int64_t(B) * E), d_stim_.resize(int64_t(B) * E);
      if (backward) d_brain_.zero(s_), d_stim_.zero(s_);
      if (group_size > 1) {
        group_contrastive(loss + 2, backward, float(scale * c.weight_contrastive));
      } else {
        kc::contrastive<T>(loss + 2, backward ? d_brain_.get() : nullptr, backward ? d_stim_.get() : nullptr,
                           backward ? G() + off("logit_scale") : nullptr, brain_e_.get(), stim_e_.get(),
                           P + off("logit_scale"), float(BrainModel::kMaxLogitScale), B, E,
                           float(scale * c.weight_contrastive), s_);
      }
    }
    if (backward) backward_pass();

    prof_.mark(s_, "read losses");
    float host_loss[3];
    check(cudaMemcpyAsync(host_loss, loss, sizeof(host_loss), cudaMemcpyDeviceToHost, s_), "read losses");
    check(cudaStreamSynchronize(s_), "step");
    prof_.collect();
    double total = 0;
    bool any = false;
    if (masked) out.mae = host_loss[0], total += c.weight_mae * host_loss[0], any = true;
    if (c.causal) out.causal = host_loss[1], total += c.weight_causal * host_loss[1], any = true;
    if (contrastive_) out.contrastive = host_loss[2], total += c.weight_contrastive * host_loss[2], any = true;
    if (any) out.total = total;
    return out;
  }

  // The contrastive loss over the group's global batch (BrainModel::set_contrastive_group), through the host: this
  // rank's brain and stimulus embeddings go down, the all-gather joins every rank's (rank order), the loss and its
  // gradient for every gathered row come from the CPU reference kernel (R B x R B logits of E: small beside the
  // step), and this rank's rows of the gradient go back up times the group size (the trainer averages summed
  // gradients over ranks); logit_scale's gradient once. The same loss on every rank, as on the CPU back-end.
  void group_contrastive(float* d_loss, bool backward, float dloss) {
    const int B = B_, E = config.proj_dim, R = group_size, rows = B * R;
    const int64_t n = int64_t(B) * E;
    host_t_.resize(size_t(2 * n));
    float logit_scale = 0;
    check(cudaMemcpyAsync(host_t_.data(), brain_e_.get(), n * sizeof(T), cudaMemcpyDeviceToHost, s_), "read brain_e");
    check(cudaMemcpyAsync(host_t_.data() + n, stim_e_.get(), n * sizeof(T), cudaMemcpyDeviceToHost, s_), "read stim_e");
    check(cudaMemcpyAsync(&logit_scale, P() + off("logit_scale"), sizeof(float), cudaMemcpyDeviceToHost, s_),
          "read logit_scale");
    check(cudaStreamSynchronize(s_), "contrastive embeddings");
    std::vector<float> mine(size_t(2 * n));
    for (size_t i = 0; i < mine.size(); ++i) mine[i] = to_float(host_t_[i]);
    std::vector<float> brain_all(size_t(rows) * E), stim_all(size_t(rows) * E);
    allgather(mine.data(), brain_all.data(), n);
    allgather(mine.data() + n, stim_all.data(), n);
    const float max_scale = float(BrainModel::kMaxLogitScale);
    host_loss_ = kernels::cpu::contrastive_forward(brain_all.data(), stim_all.data(), logit_scale, max_scale, rows, E);
    check(cudaMemcpyAsync(d_loss, &host_loss_, sizeof(float), cudaMemcpyHostToDevice, s_), "write loss");
    if (backward) {
      std::vector<float> d_brain_all(brain_all.size(), 0.0f), d_stim_all(stim_all.size(), 0.0f);
      float d_scale = 0;
      kernels::cpu::contrastive_backward(d_brain_all.data(), d_stim_all.data(), &d_scale, brain_all.data(),
                                         stim_all.data(), logit_scale, max_scale, rows, E, dloss);
      const int64_t first = int64_t(group_rank) * n;
      for (int64_t i = 0; i < n; ++i) {
        host_t_[size_t(i)] = from_float<T>(d_brain_all[size_t(first + i)] * float(R));
        host_t_[size_t(n + i)] = from_float<T>(d_stim_all[size_t(first + i)] * float(R));
      }
      check(cudaMemcpyAsync(d_brain_.get(), host_t_.data(), n * sizeof(T), cudaMemcpyHostToDevice, s_), "d_brain");
      check(cudaMemcpyAsync(d_stim_.get(), host_t_.data() + n, n * sizeof(T), cudaMemcpyHostToDevice, s_), "d_stim");
      float g = 0;
      check(cudaMemcpyAsync(&g, G() + off("logit_scale"), sizeof(float), cudaMemcpyDeviceToHost, s_), "read grad");
      check(cudaStreamSynchronize(s_), "logit_scale gradient");
      g += d_scale;
      check(cudaMemcpyAsync(G() + off("logit_scale"), &g, sizeof(float), cudaMemcpyHostToDevice, s_), "write grad");
    }
    check(cudaStreamSynchronize(s_), "contrastive group");  // the host buffers above are read by the copies
  }

  void backward_pass() {
    const ModelConfig& c = config;
    const int B = B_, Pn = c.n_parcels, L = c.patch_len, D = c.d_model, N = c.n_tokens();
    const int64_t M = int64_t(B) * n_enc_;
    const float* P = this->P();
    const T* Wm = this->Wm();
    float* G = this->G();
    const int32_t* vis = masked_ ? visible_.get() : nullptr;
    prof_.mark(s_, "heads and losses backward");
    d_enc_out_.resize(M * D);
    d_enc_out_.zero(s_);
    if (ran_decoder_) {
      const int Dd = c.decoder->d_model;
      d_dec_out_.resize(int64_t(B) * N * Dd);
      kc::linear_backward<T>(d_dec_out_.get(), G + off("decoder.head.weight"), G + off("decoder.head.bias"),
                             d_recon_.get(), dec_out_.get(), Wm + off("decoder.head.weight"), int64_t(B) * N, Dd, L,
                             s_, false);
      d_dec_in_.resize(int64_t(B) * N * Dd);
      d_dec_in_.zero(s_);
      ready("decoder.head.");
      decoder_->backward(d_dec_in_.get(), d_dec_out_.get(), P, Wm, G, s_, ready_);
      prof_.mark(s_, "decoder: mask fill and embed backward");
      d_z_.resize(M * Dd);
      d_z_.zero(s_);
      kc::mask_fill_backward<T>(d_z_.get(), G + off("decoder.mask_token"), G + off("decoder.parcel_embed"),
                                G + off("decoder.time_embed"), d_dec_in_.get(), vis, B, N, n_enc_, Pn, Dd, s_);
      kc::linear_backward<T>(d_enc_out_.get(), G + off("decoder.embed.weight"), G + off("decoder.embed.bias"),
                             d_z_.get(), enc_out_.get(), Wm + off("decoder.embed.weight"), M, D, Dd, s_);
    }
    if (c.mae) ready("decoder.");  // embed, mask_token, its position tables (and all of it when no mask ran)
    prof_.mark(s_, "heads and losses backward");
    if (ran_next_)
      kc::linear_backward<T>(d_enc_out_.get(), G + off("next_head.weight"), G + off("next_head.bias"), d_next_.get(),
                             enc_out_.get(), Wm + off("next_head.weight"), int64_t(B) * N, D, L, s_);
    if (c.causal) ready("next_head.");
    if (contrastive_) {
      const int S = c.stim_dim, E = c.proj_dim;
      d_pooled_.resize(int64_t(B) * D);
      kc::linear_backward<T>(d_pooled_.get(), G + off("brain_proj.weight"), nullptr, d_brain_.get(), pooled_.get(),
                             Wm + off("brain_proj.weight"), B, D, E, s_, false);
      kc::linear_backward<T>(nullptr, G + off("stim_proj.weight"), nullptr, d_stim_.get(), stim_.get(),
                             Wm + off("stim_proj.weight"), B, S, E, s_);
      kc::mean_pool_backward<T>(d_enc_out_.get(), d_pooled_.get(), B, n_enc_, D, s_);
    }
    if (c.contrastive) {
      ready("brain_proj.");
      ready("stim_proj.");
      ready("logit_scale");
    }
    backward_encoder();
  }

  void ready(const char* prefix) const {
    if (ready_ && *ready_) (*ready_)(prefix);
  }

  // Fine-tuning: d_enc_out [B, N_enc, D] from the host (times scale) -> the encoder tail.
  void backward_tokens(const float* d_enc_out_host, float scale) override {
    const int B = B_, D = config.d_model;
    require(B > 0, "CudaBrainModel::backward_tokens called before forward");
    require(d_enc_out_host != nullptr, "CudaBrainModel::backward_tokens: no gradient given");
    const int64_t n = int64_t(B) * n_enc_ * D;
    prof_.mark(s_, "inputs and embedding");
    // Scaled in float on the host, as the CPU back-end's backward_tokens does, then rounded to T once.
    std::vector<float> scaled(d_enc_out_host, d_enc_out_host + n);
    if (scale != 1.0f)
      for (float& v : scaled) v *= scale;
    d_enc_out_f_.resize(n);
    check(cudaMemcpyAsync(d_enc_out_f_.get(), scaled.data(), n * sizeof(float), cudaMemcpyHostToDevice, s_),
          "upload d_enc_out");
    prof_.mark(s_, "heads and losses backward");
    d_enc_out_.resize(n);
    kc::copy_to_mirror<T>(d_enc_out_.get(), d_enc_out_f_.get(), n, s_);
    backward_encoder();
    prof_.mark(s_, "end");
    check(cudaStreamSynchronize(s_), "backward_tokens");  // `scaled` leaves scope; errors surface here
    prof_.collect();
  }

  // d_enc_out_ [B * N_enc, D] -> the encoder (ln_f included) and the token embeddings: the tail of both backward
  // passes.
  void backward_encoder() {
    const ModelConfig& c = config;
    const int B = B_, Pn = c.n_parcels, L = c.patch_len, D = c.d_model, N = c.n_tokens();
    const int64_t M = int64_t(B) * n_enc_;
    const float* P = this->P();
    const T* Wm = this->Wm();
    float* G = this->G();
    const int32_t* vis = masked_ ? visible_.get() : nullptr;
    prof_.mark(s_, "copy/zero");
    d_tokens_.resize(M * D);
    d_tokens_.zero(s_);
    encoder_.backward(d_tokens_.get(), d_enc_out_.get(), P, Wm, G, s_, ready_);
    prof_.mark(s_, "embedding backward");
    kc::patch_embed_backward<T>(G + off("patch_embed.weight"), G + off("patch_embed.bias"), G + off("parcel_embed"),
                                G + off("time_embed"), d_tokens_.get(), patches_.get(), vis, B, N, n_enc_, Pn, L, D,
                                s_);
    ready("patch_embed.");
    ready("parcel_embed");
    ready("time_embed");
  }

  double optimizer_step(double lr, bool* applied) override {
    prof_.mark(s_, "optimizer");
    float* sc = scalars_.get();
    int* finite = reinterpret_cast<int*>(sc + 5);
    kc::grad_norm(sc + 3, sc + 4, finite, grads_.get(), dl_.total, float(opt_.grad_clip), s_);
    ++step_;
    T* mirror = nullptr;
    if constexpr (!std::is_same_v<T, float>) mirror = mirror_.get();
    kc::adamw_update<T>(params_.get(), mirror, m_.get(), v_.get(), grads_.get(), segments_.get(), n_segments_,
                        max_segment_, float(lr), float(opt_.beta1), float(opt_.beta2), float(opt_.eps),
                        float(opt_.weight_decay), sc + 4, finite, step_, s_);
    if (config.contrastive) {
      const int64_t o = off("logit_scale");
      clamp_max_kernel<<<1, 1, 0, s_>>>(params_.get() + o, float(BrainModel::kMaxLogitScale));
      kc::detail::check_launch("clamp logit_scale");
      if constexpr (!std::is_same_v<T, float>) kc::copy_to_mirror<T>(mirror_.get() + o, params_.get() + o, 1, s_);
    }
    float norm = 0;
    int ok = 0;
    check(cudaMemcpyAsync(&norm, sc + 3, sizeof(float), cudaMemcpyDeviceToHost, s_), "read norm");
    check(cudaMemcpyAsync(&ok, finite, sizeof(int), cudaMemcpyDeviceToHost, s_), "read finite");
    prof_.mark(s_, "end");
    check(cudaStreamSynchronize(s_), "optimizer step");
    prof_.collect();
    if (!ok) --step_;  // the device skipped the update: the CPU AdamW does not count skipped steps either
    if (applied) *applied = ok != 0;
    return norm;
  }

  int64_t steps_taken() const override { return step_; }
  void set_profiling(bool on) override { prof_.on = on; }
  std::vector<std::pair<std::string, double>> take_profile() override { return prof_.take(); }
  std::vector<float> encoder_out() const override { return download(enc_out_); }
  std::vector<float> pooled() const override { return download(pooled_); }
  std::vector<float> reconstruction() const override {
    return ran_decoder_ ? download(recon_) : std::vector<float>{};
  }
  std::vector<float> next_prediction() const override {
    return ran_next_ ? download(next_) : std::vector<float>{};
  }
  int encoder_tokens() const override { return n_enc_; }
  size_t device_bytes() const override {
    return params_.bytes() * 4 + mirror_.bytes() + encoder_.bytes() + (decoder_ ? decoder_->bytes() : 0) +
           tokens_.bytes() * 3 + dec_in_.bytes() * 3 + d_dec_in_.bytes() * 2;
  }

 private:
  std::vector<float> download(const DeviceVec<T>& v) const {
    std::vector<T> t(v.size());
    check(cudaMemcpyAsync(t.data(), v.get(), t.size() * sizeof(T), cudaMemcpyDeviceToHost, s_), "download");
    check(cudaStreamSynchronize(s_), "download");
    std::vector<float> out(t.size());
    for (size_t i = 0; i < t.size(); ++i) {
      if constexpr (std::is_same_v<T, float>) out[i] = t[i];
      else out[i] = __bfloat162float(t[i]);
    }
    return out;
  }

  DeviceLayout dl_;
  runtime::AdamWConfig opt_;
  Profiler prof_;  // before the stacks, which keep a pointer to it
  cudaStream_t s_ = nullptr;
  Stack<T> encoder_;
  std::unique_ptr<Stack<T>> decoder_;
  DeviceVec<float> params_, grads_, m_, v_, scalars_;
  DeviceVec<T> mirror_;
  DeviceVec<kc::AdamWSegment> segments_;
  int n_segments_ = 0;
  int64_t max_segment_ = 0, step_ = 0;
  // Last forward.
  int B_ = 0, n_enc_ = 0;
  bool masked_ = false;  // the encoder saw the visible tokens only (visible_)
  bool ran_decoder_ = false, ran_next_ = false, contrastive_ = false;
  std::vector<T> host_t_;  // group_contrastive's host copies of this rank's embeddings and their gradients
  float host_loss_ = 0;
  DeviceVec<float> x_, patches_, stim_f_, d_enc_out_f_;
  DeviceVec<uint8_t> mask_;
  DeviceVec<int32_t> visible_;
  DeviceVec<T> tokens_, enc_out_, pooled_, dec_z_, dec_in_, dec_out_, recon_, next_, stim_, brain_e_, stim_e_;
  DeviceVec<T> d_recon_, d_next_, d_brain_, d_stim_, d_enc_out_, d_dec_out_, d_dec_in_, d_z_, d_pooled_, d_tokens_;
};

}  // namespace

CudaBrainModel::CudaBrainModel(const ModelConfig& config, Precision precision, const runtime::AdamWConfig& optimizer)
    : BrainModel(config) {
  if (const std::string why = cuda_unsupported(config); !why.empty()) bfm::fail("GPU model: unsupported ", why);
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
    cudaGetLastError();
    bfm::fail("GPU model: no CUDA GPU on this machine (run on the CPU instead: --set train.device=cpu)");
  }
  if (precision == Precision::bf16) impl_ = std::make_unique<Model<bf16>>(config, precision, optimizer);
  else impl_ = std::make_unique<Model<float>>(config, precision, optimizer);
}
CudaBrainModel::~CudaBrainModel() = default;

Precision CudaBrainModel::precision() const { return impl_->precision; }
std::string CudaBrainModel::device() const {
  int d = 0;
  cudaGetDevice(&d);
  return "cuda:" + std::to_string(d) + " (" + runtime::cuda_device_name(d) + ", " + to_string(impl_->precision) + ")";
}
void CudaBrainModel::load_params(const float* host) { impl_->load_params(host); }
void CudaBrainModel::store_params(float* host) const { impl_->store(host, false); }
void CudaBrainModel::store_grads(float* host) const { impl_->store(host, true); }
void CudaBrainModel::zero_grads() { impl_->zero_grads(); }
void CudaBrainModel::store_moments(float* m, float* v) const { impl_->store_moments(m, v); }
void CudaBrainModel::load_moments(const float* m, const float* v) { impl_->load_moments(m, v); }
void CudaBrainModel::load_grads(const float* host) { impl_->load_grads(host); }
void CudaBrainModel::set_steps_taken(int64_t steps) { impl_->set_steps_taken(steps); }
Losses CudaBrainModel::forward(const Batch& batch, const std::string& source) {
  return impl_->run(batch, false, 1.0f, source);
}
Losses CudaBrainModel::forward_backward(const Batch& batch, float scale, const ReadyHook& on_ready,
                                        const std::string& source) {
  impl_->ready_ = on_ready ? &on_ready : nullptr;
  try {
    Losses l = impl_->run(batch, true, scale, source);
    impl_->ready_ = nullptr;
    return l;
  } catch (...) {
    impl_->ready_ = nullptr;
    throw;
  }
}
GradientView CudaBrainModel::gradients() {
  GradientView g;
  g.data = impl_->device_grads();
  g.size = impl_->device_arena_size();
  g.on_device = true;
  g.tensors = impl_->device_tensors();
  g.stream = impl_->stream();
  return g;
}
void* CudaBrainModel::stream() const { return impl_->stream(); }
std::vector<float> CudaBrainModel::forward_pooled(const Batch& batch, const std::string& source) {
  Batch b = batch;
  b.encoder_only = true;
  impl_->run(b, false, 1.0f, source);
  return impl_->pooled();
}
void CudaBrainModel::backward_tokens(const float* d_enc_out_host, float scale, const ReadyHook& on_ready) {
  impl_->backward_tokens(d_enc_out_host, scale);
  if (on_ready) on_ready("");
}
void CudaBrainModel::set_contrastive_group(int rank, int ranks, Allgather allgather) {
  require(ranks >= 1 && rank >= 0 && rank < ranks && (ranks == 1 || allgather), "set_contrastive_group: rank ", rank,
          " of ", ranks, (ranks > 1 && !allgather ? " without an all-gather" : ""));
  impl_->group_rank = rank;
  impl_->group_size = ranks;
  impl_->allgather = std::move(allgather);
}
void CudaBrainModel::shard_optimizer(runtime::Communicator&) {
  fail("train.zero (sharded optimizer state) is for CPU ranks for now; GPU runs keep AdamW whole on the device");
}
double CudaBrainModel::optimizer_step(double lr, bool* applied) { return impl_->optimizer_step(lr, applied); }
CudaStepResult CudaBrainModel::train_step(const Batch& batch, double lr) {
  CudaStepResult r;
  impl_->zero_grads();
  r.losses = impl_->run(batch, true, 1.0f, "batch");
  if (!r.losses.total || !std::isfinite(*r.losses.total)) return r;
  r.grad_norm = impl_->optimizer_step(lr, &r.applied);
  return r;
}
int64_t CudaBrainModel::steps_taken() const { return impl_->steps_taken(); }
runtime::CheckpointTensors CudaBrainModel::checkpoint_tensors() {
  host_params_.resize(size_t(arena_size()));
  host_m_.resize(size_t(arena_size()));
  host_v_.resize(size_t(arena_size()));
  impl_->store(host_params_.data(), false);
  impl_->store_moments(host_m_.data(), host_v_.data());
  return checkpoint_view(host_params_.data(), host_m_.data(), host_v_.data());
}
void CudaBrainModel::checkpoint_loaded() {
  impl_->load_params(host_params_.data());
  impl_->load_moments(host_m_.data(), host_v_.data());
}
std::vector<float> CudaBrainModel::encoder_out() const { return impl_->encoder_out(); }
std::vector<float> CudaBrainModel::pooled() const { return impl_->pooled(); }
std::vector<float> CudaBrainModel::reconstruction() const { return impl_->reconstruction(); }
std::vector<float> CudaBrainModel::next_prediction() const { return impl_->next_prediction(); }
int CudaBrainModel::encoder_tokens() const { return impl_->encoder_tokens(); }
size_t CudaBrainModel::device_bytes() const { return impl_->device_bytes(); }
void CudaBrainModel::set_profiling(bool on) { impl_->set_profiling(on); }
std::vector<std::pair<std::string, double>> CudaBrainModel::take_profile() { return impl_->take_profile(); }

}  // namespace bfm::model
