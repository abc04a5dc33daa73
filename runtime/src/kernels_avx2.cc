// AVX2 + FMA kernels: 6x16 register-blocked GEMM micro-kernel; decoding uses the generic
// (auto-vectorized) panel providers.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "kernels.h"

#pragma GCC push_options
#pragma GCC target("avx2,fma,bmi,bmi2,f16c,popcnt")

namespace onnxcomp {
namespace avx2 {
namespace {

constexpr int kMR = 6;
constexpr int kNR = 16;

template <int R>
inline void micro_rows(int cols, int64_t kc, const float* a, const float* b, float* c, int64_t ldc,
                       bool accumulate) {
  __m256 acc0[R], acc1[R];
  for (int r = 0; r < R; ++r) {
    acc0[r] = _mm256_setzero_ps();
    acc1[r] = _mm256_setzero_ps();
  }
  for (int64_t k = 0; k < kc; ++k) {
    const __m256 b0 = _mm256_loadu_ps(b + k * kNR);
    const __m256 b1 = _mm256_loadu_ps(b + k * kNR + 8);
    for (int r = 0; r < R; ++r) {
      const __m256 av = _mm256_broadcast_ss(a + k * kMR + r);
      acc0[r] = _mm256_fmadd_ps(av, b0, acc0[r]);
      acc1[r] = _mm256_fmadd_ps(av, b1, acc1[r]);
    }
  }
  if (cols == kNR) {
    for (int r = 0; r < R; ++r) {
      float* cr = c + r * ldc;
      if (accumulate) {
        acc0[r] = _mm256_add_ps(acc0[r], _mm256_loadu_ps(cr));
        acc1[r] = _mm256_add_ps(acc1[r], _mm256_loadu_ps(cr + 8));
      }
      _mm256_storeu_ps(cr, acc0[r]);
      _mm256_storeu_ps(cr + 8, acc1[r]);
    }
  } else {
    alignas(32) float tmp[kNR];
    for (int r = 0; r < R; ++r) {
      _mm256_store_ps(tmp, acc0[r]);
      _mm256_store_ps(tmp + 8, acc1[r]);
      float* cr = c + r * ldc;
      if (accumulate) {
        for (int j = 0; j < cols; ++j) cr[j] += tmp[j];
      } else {
        for (int j = 0; j < cols; ++j) cr[j] = tmp[j];
      }
    }
  }
}

void micro_kernel(int rows, int cols, int64_t kc, const float* a, const float* b, float* c, int64_t ldc,
                  bool accumulate) {
  switch (rows) {
    case 1: micro_rows<1>(cols, kc, a, b, c, ldc, accumulate); break;
    case 2: micro_rows<2>(cols, kc, a, b, c, ldc, accumulate); break;
    case 3: micro_rows<3>(cols, kc, a, b, c, ldc, accumulate); break;
    case 4: micro_rows<4>(cols, kc, a, b, c, ldc, accumulate); break;
    case 5: micro_rows<5>(cols, kc, a, b, c, ldc, accumulate); break;
    default: micro_rows<6>(cols, kc, a, b, c, ldc, accumulate); break;
  }
}

#include "kernels_generic.h"

int64_t no_gemv(const float*, int64_t, int64_t, const CodebookWeights&, float*, int64_t, int64_t n0, int64_t) {
  return n0;
}

}  // namespace

extern const KernelTable table = {
    "avx2", kMR, kNR, pack_a_generic, gemm_generic, codebook_panel_generic, im2col_panel_generic,
    no_gemv, sparse_gemv_generic, decode_rows_generic, nullptr,
};

}  // namespace avx2
}  // namespace onnxcomp

#pragma GCC pop_options
