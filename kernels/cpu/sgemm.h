// The CPU matrix product: OpenBLAS's cblas_sgemm where the build has it (BFM_WITH_BLAS), else a small portable
// stand-in with the same signature for the row-major cases bfm uses, so the CPU reference builds on machines with
// no BLAS (the lent GPU machine, where the CPU side only checks the GPU on small shapes). The stand-in is plain
// loops the compiler vectorises: correct, not fast; it runs on the calling thread (callers split the work).
#pragma once

#ifdef BFM_WITH_BLAS
#include <cblas.h>
#else
#include <cstddef>

enum CBLAS_ORDER { CblasRowMajor = 101, CblasColMajor = 102 };
enum CBLAS_TRANSPOSE { CblasNoTrans = 111, CblasTrans = 112 };

// C [m, n] = alpha op(A) [m, k] op(B) [k, n] + beta C, row-major only.
inline void cblas_sgemm(CBLAS_ORDER, CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int m, int n, int k, float alpha,
                        const float* A, int lda, const float* B, int ldb, float beta, float* C, int ldc) {
  for (int i = 0; i < m; ++i) {
    float* c = C + std::ptrdiff_t(i) * ldc;
    for (int j = 0; j < n; ++j) c[j] = beta == 0.0f ? 0.0f : beta * c[j];
    if (tb == CblasNoTrans) {
      for (int p = 0; p < k; ++p) {
        const float a = alpha * (ta == CblasNoTrans ? A[std::ptrdiff_t(i) * lda + p] : A[std::ptrdiff_t(p) * lda + i]);
        const float* b = B + std::ptrdiff_t(p) * ldb;
        for (int j = 0; j < n; ++j) c[j] += a * b[j];
      }
    } else {
      for (int j = 0; j < n; ++j) {
        const float* b = B + std::ptrdiff_t(j) * ldb;
        float acc = 0.0f;
        if (ta == CblasNoTrans) {
          const float* a = A + std::ptrdiff_t(i) * lda;
          for (int p = 0; p < k; ++p) acc += a[p] * b[p];
        } else {
          for (int p = 0; p < k; ++p) acc += A[std::ptrdiff_t(p) * lda + i] * b[p];
        }
        c[j] += alpha * acc;
      }
    }
  }
}
#endif
