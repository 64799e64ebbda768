// Linear layers on the GPU through cuBLASLt: bf16 (or fp32) operands, fp32 accumulation, the bias and the GELU
// fused into the forward GEMM's epilogue, fp32 weight gradients accumulated in place (beta = 1).
//
// Row-major y [M, out] = x [M, in] W^T is, read column-major, y^T [out, M] = W [out, in]... : cuBLASLt sees the
// row-major x as the column-major matrix x^T [in, M] and W as W^T [in, out], so
//   forward:  D (out x M)  = op_T(W^T [in x out]) * x^T [in x M]           m = out, n = M, k = in
//   dx:       D (in x M)   = W^T [in x out] * dy^T [out x M]  (+ dx^T)      m = in,  n = M, k = out
//   dw:       D (in x out) = x^T [in x M] * op_T(dy^T [out x M])  (+ dw^T)  m = in,  n = out, k = M
// The bias (length m = out) is broadcast along columns, i.e. added to every token's row: what the layer needs.
//
// Descriptors and the heuristic's algorithm are cached per shape, types, epilogue and pointer alignment; a step
// of the model issues the same few dozen shapes every time, so the heuristic runs once per shape.
#include <cublasLt.h>

#include <cstring>
#include <map>
#include <mutex>
#include <tuple>

#include "kernels/cuda/common.cuh"
#include "kernels/linear.h"

namespace bfm::kernels::cuda {
namespace {

void check_lt(cublasStatus_t status, const char* what) {
  if (status != CUBLAS_STATUS_SUCCESS)
    bfm::fail("cuBLASLt ", what, " failed: status ", int(status), " (", cublasLtGetStatusString(status), ")");
}

constexpr size_t kWorkspaceBytes = size_t(64) << 20;  // Hopper kernels like 32 MiB+; one buffer per process

struct Lt {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
  int device = -1;
};
Lt& lt_state() {
  static Lt lt;
  return lt;
}
std::mutex& lt_mutex() {
  static std::mutex m;
  return m;
}

struct Key {
  cudaDataType_t ab, cd;
  cublasOperation_t ta, tb;
  uint64_t m, n, k;
  int epilogue;
  int align_a, align_b, align_c, align_d;
  bool beta_one;
  auto tie() const {
    return std::tie(ab, cd, ta, tb, m, n, k, epilogue, align_a, align_b, align_c, align_d, beta_one);
  }
  bool operator<(const Key& o) const { return tie() < o.tie(); }
};
struct Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr, d = nullptr;
  cublasLtMatmulAlgo_t algo{};
};
std::map<Key, Plan>& plans() {
  static std::map<Key, Plan> p;
  return p;
}

int alignment(const void* p) {
  const auto v = reinterpret_cast<uintptr_t>(p);
  int a = 16;
  while (a > 1 && v % a != 0) a /= 2;
  return a;
}

template <typename T>
constexpr cudaDataType_t data_type() {
  return std::is_same_v<T, float> ? CUDA_R_32F : CUDA_R_16BF;
}

Lt& lt() {
  Lt& s = lt_state();
  int device = 0;
  detail::check(cudaGetDevice(&device), "cudaGetDevice");
  if (s.handle == nullptr || s.device != device) {
    check_lt(cublasLtCreate(&s.handle), "cublasLtCreate");
    detail::check(cudaMalloc(&s.workspace, kWorkspaceBytes), "cudaMalloc (cuBLASLt workspace)");
    s.device = device;
  }
  return s;
}

// D = alpha op(A) op(B) + beta C (C = D), column-major; A is lda-strided etc. Sets bias/aux pointers per call.
void matmul(cudaDataType_t ab_type, cudaDataType_t cd_type, cublasOperation_t ta, cublasOperation_t tb, uint64_t m,
            uint64_t n, uint64_t k, const void* A, uint64_t lda, const void* B, uint64_t ldb, void* D, uint64_t ldd,
            bool beta_one, cublasLtEpilogue_t epilogue, const void* bias, void* aux, cudaStream_t stream,
            const char* what) {
  std::lock_guard<std::mutex> lock(lt_mutex());
  Lt& s = lt();
  const Key key{ab_type, cd_type, ta, tb, m, n, k, int(epilogue), alignment(A), alignment(B), alignment(D),
                alignment(D), beta_one};
  auto it = plans().find(key);
  if (it == plans().end()) {
    Plan p;
    check_lt(cublasLtMatmulDescCreate(&p.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), "MatmulDescCreate");
    check_lt(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)), "TRANSA");
    check_lt(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)), "TRANSB");
    check_lt(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof(epilogue)),
             "EPILOGUE");
    if (epilogue == CUBLASLT_EPILOGUE_GELU_AUX_BIAS || epilogue == CUBLASLT_EPILOGUE_GELU_AUX ||
        epilogue == CUBLASLT_EPILOGUE_DGELU) {
      const int64_t ld = int64_t(ldd);
      check_lt(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &ld, sizeof(ld)),
               "AUX_LD");
      check_lt(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_DATA_TYPE, &cd_type,
                                              sizeof(cd_type)),
               "AUX_DATA_TYPE");
    }
    const bool a_rows = ta == CUBLAS_OP_N, b_rows = tb == CUBLAS_OP_N;
    check_lt(cublasLtMatrixLayoutCreate(&p.a, ab_type, a_rows ? m : k, a_rows ? k : m, lda), "layout A");
    check_lt(cublasLtMatrixLayoutCreate(&p.b, ab_type, b_rows ? k : n, b_rows ? n : k, ldb), "layout B");
    check_lt(cublasLtMatrixLayoutCreate(&p.c, cd_type, m, n, ldd), "layout C");
    check_lt(cublasLtMatrixLayoutCreate(&p.d, cd_type, m, n, ldd), "layout D");
    // Pointers set below change per call; tell the heuristic the bias/aux alignment it may rely on too.
    if (bias) check_lt(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)),
                       "BIAS_POINTER");
    if (aux) check_lt(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &aux,
                                                     sizeof(aux)),
                      "AUX_POINTER");
    cublasLtMatmulPreference_t pref = nullptr;
    check_lt(cublasLtMatmulPreferenceCreate(&pref), "PreferenceCreate");
    const uint64_t ws = kWorkspaceBytes;
    check_lt(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)),
             "MAX_WORKSPACE");
    const uint32_t aa = key.align_a, ab = key.align_b, ac = key.align_c, ad = key.align_d;
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &aa, sizeof(aa));
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &ab, sizeof(ab));
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &ac, sizeof(ac));
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &ad, sizeof(ad));
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    const cublasStatus_t st =
        cublasLtMatmulAlgoGetHeuristic(s.handle, p.desc, p.a, p.b, p.c, p.d, pref, 1, &result, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    if (st != CUBLAS_STATUS_SUCCESS || found == 0)
      bfm::fail(what, ": cuBLASLt has no algorithm for m=", m, " n=", n, " k=", k, " epilogue=", int(epilogue),
                " (alignments ", key.align_a, "/", key.align_b, "/", key.align_d, " bytes)");
    p.algo = result.algo;
    it = plans().emplace(key, p).first;
  }
  Plan& p = it->second;
  if (bias) check_lt(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)),
                     "BIAS_POINTER");
  if (aux) check_lt(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &aux,
                                                   sizeof(aux)),
                    "AUX_POINTER");
  const float alpha = 1.0f, beta = beta_one ? 1.0f : 0.0f;
  const cublasStatus_t st = cublasLtMatmul(s.handle, p.desc, &alpha, A, p.a, B, p.b, &beta, D, p.c, D, p.d, &p.algo,
                                           s.workspace, kWorkspaceBytes, stream);
  if (st != CUBLAS_STATUS_SUCCESS)
    bfm::fail(what, ": cublasLtMatmul failed (status ", int(st), ", ", cublasLtGetStatusString(st), ") for m=", m,
              " n=", n, " k=", k);
}

// Column sums of dy [M, out] into db (+=), without atomics: block (x, y) sums rows y*kRows.. of 32 columns into
// partials[y, col]; a second pass adds the partials in order of y.
constexpr int kRows = 256;

template <typename T>
__global__ void column_partials(float* partials, const T* dy, int64_t M, int out) {
  const int col = blockIdx.x * 32 + threadIdx.x;
  const int64_t r0 = int64_t(blockIdx.y) * kRows;
  const int64_t r1 = min(M, r0 + kRows);
  __shared__ float part[8][33];
  float acc = 0.0f;
  if (col < out)
    for (int64_t r = r0 + threadIdx.y; r < r1; r += 8) acc += detail::to_float(dy[r * out + col]);
  part[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && col < out) {
    float s = 0.0f;
    for (int i = 0; i < 8; ++i) s += part[i][threadIdx.x];
    partials[int64_t(blockIdx.y) * out + col] = s;
  }
}

__global__ void column_finish(float* db, const float* partials, int chunks, int out) {
  const int col = blockIdx.x * blockDim.x + threadIdx.x;
  if (col >= out) return;
  float s = 0.0f;
  for (int c = 0; c < chunks; ++c) s += partials[int64_t(c) * out + col];
  db[col] += s;
}

template <typename T>
void column_sums(float* db, const T* dy, int64_t M, int out, cudaStream_t stream) {
  const int chunks = static_cast<int>((M + kRows - 1) / kRows);
  float* partials =
      static_cast<float*>(detail::scratch(sizeof(float) * size_t(chunks) * size_t(out), stream, /*slot=*/7));
  column_partials<T><<<dim3((out + 31) / 32, chunks), dim3(32, 8), 0, stream>>>(partials, dy, M, out);
  detail::check_launch("linear_backward (bias gradient)");
  column_finish<<<(out + 255) / 256, 256, 0, stream>>>(db, partials, chunks, out);
  detail::check_launch("linear_backward (bias gradient, finish)");
}

void check_sizes(const char* op, int64_t M, int in, int out) {
  if (M < 0 || in <= 0 || out <= 0) bfm::fail(op, ": bad sizes M=", M, " in=", in, " out=", out);
}

}  // namespace

template <typename T>
void linear_forward(T* y, const T* x, const T* w, const T* b, int64_t M, int in, int out, cudaStream_t stream,
                    T* gelu_pre) {
  check_sizes("linear_forward (cuda)", M, in, out);
  if (M == 0) return;
  cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_DEFAULT;
  if (gelu_pre != nullptr) epi = b ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS : CUBLASLT_EPILOGUE_GELU_AUX;
  else if (b != nullptr) epi = CUBLASLT_EPILOGUE_BIAS;
  const cudaDataType_t t = data_type<T>();
  matmul(t, t, CUBLAS_OP_T, CUBLAS_OP_N, out, M, in, w, in, x, in, y, out, false, epi, b, gelu_pre, stream,
         "linear_forward (cuda)");
}

template <typename T>
void linear_backward(T* dx, float* dw, float* db, const T* dy, const T* x, const T* w, int64_t M, int in, int out,
                     cudaStream_t stream, bool accumulate_dx, const T* gelu_pre) {
  check_sizes("linear_backward (cuda)", M, in, out);
  if (M == 0) return;
  if (gelu_pre != nullptr && accumulate_dx)
    bfm::fail("linear_backward (cuda): the fused GELU backward overwrites dx (accumulate_dx must be false)");
  const cudaDataType_t t = data_type<T>();
  if (dx != nullptr)
    matmul(t, t, CUBLAS_OP_N, CUBLAS_OP_N, in, M, out, w, in, dy, out, dx, in, accumulate_dx,
           gelu_pre ? CUBLASLT_EPILOGUE_DGELU : CUBLASLT_EPILOGUE_DEFAULT, nullptr, const_cast<T*>(gelu_pre), stream,
           "linear_backward dx (cuda)");
  if (dw != nullptr)
    matmul(t, CUDA_R_32F, CUBLAS_OP_N, CUBLAS_OP_T, in, out, M, x, in, dy, out, dw, in, true,
           CUBLASLT_EPILOGUE_DEFAULT, nullptr, nullptr, stream, "linear_backward dw (cuda)");
  if (db != nullptr) column_sums(db, dy, M, out, stream);
}

void linear_release() {
  std::lock_guard<std::mutex> lock(lt_mutex());
  for (auto& [key, p] : plans()) {
    cublasLtMatrixLayoutDestroy(p.a), cublasLtMatrixLayoutDestroy(p.b), cublasLtMatrixLayoutDestroy(p.c);
    cublasLtMatrixLayoutDestroy(p.d), cublasLtMatmulDescDestroy(p.desc);
  }
  plans().clear();
  Lt& s = lt_state();
  if (s.handle) cublasLtDestroy(s.handle);
  if (s.workspace) cudaFree(s.workspace);
  s = Lt{};
}

template void linear_forward<float>(float*, const float*, const float*, const float*, int64_t, int, int,
                                    cudaStream_t, float*);
template void linear_forward<bf16>(bf16*, const bf16*, const bf16*, const bf16*, int64_t, int, int, cudaStream_t,
                                   bf16*);
template void linear_backward<float>(float*, float*, float*, const float*, const float*, const float*, int64_t, int,
                                     int, cudaStream_t, bool, const float*);
template void linear_backward<bf16>(bf16*, float*, float*, const bf16*, const bf16*, const bf16*, int64_t, int, int,
                                    cudaStream_t, bool, const bf16*);

}  // namespace bfm::kernels::cuda
