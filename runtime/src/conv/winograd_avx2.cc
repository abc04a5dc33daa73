// Winograd kernels, AVX2 + FMA: channel vectors of 8 floats, a 6 x 16 register-blocked GEMM micro-kernel
// (12 ymm accumulators), 8 x 8 in-register transposes between NCHW rows and channel vectors (scalar at the
// image edges).
#include <immintrin.h>

#include <cstdint>
#include <utility>

#include "winograd_isa.h"
#include "winograd_matrices.h"

#pragma GCC push_options
#pragma GCC target("avx2,fma,bmi,bmi2,f16c,popcnt")

namespace onnxcomp {
namespace conv {
namespace avx2 {
namespace {

constexpr int kVL = 8;
constexpr int kMR = 6;
constexpr int kNV = 2;  // nr = 16

struct Vec {
  __m256 v;
};
inline Vec vload(const float* p) { return {_mm256_loadu_ps(p)}; }
inline void vstore(float* p, Vec a) { _mm256_storeu_ps(p, a.v); }
inline Vec vset1(float f) { return {_mm256_set1_ps(f)}; }
inline Vec vzero() { return {_mm256_setzero_ps()}; }
inline Vec vadd(Vec a, Vec b) { return {_mm256_add_ps(a.v, b.v)}; }
inline Vec vsub(Vec a, Vec b) { return {_mm256_sub_ps(a.v, b.v)}; }
inline Vec vmul(Vec a, Vec b) { return {_mm256_mul_ps(a.v, b.v)}; }
inline Vec vfmadd(Vec a, Vec b, Vec c) { return {_mm256_fmadd_ps(a.v, b.v, c.v)}; }
inline Vec vmax(Vec a, Vec b) { return {_mm256_max_ps(a.v, b.v)}; }
inline Vec vmin(Vec a, Vec b) { return {_mm256_min_ps(a.v, b.v)}; }
inline Vec vneg(Vec a) { return {_mm256_sub_ps(_mm256_setzero_ps(), a.v)}; }
inline Vec vselect_neg(Vec x, Vec if_neg) {
  return {_mm256_blendv_ps(x.v, if_neg.v, _mm256_cmp_ps(x.v, _mm256_setzero_ps(), _CMP_LT_OQ))};
}

#include "winograd_generic.h"

// ------------------------------------------------------------------------------------- GEMM
template <int R, int NV>
void micro(int64_t K, const float* a, int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc, const char* pf,
           int pfl) {
  __m256 acc[R][NV];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm256_setzero_ps();
  const float* ar[R];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) ar[r] = a + r * lda;
#pragma GCC unroll 2
  for (int64_t k = 0; k < K; ++k) {
    __m256 bv[NV];
    prefetch_share(pf, k, pfl);
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) bv[v] = _mm256_loadu_ps(b + k * ldb + 8 * v);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m256 av = _mm256_broadcast_ss(ar[r] + k);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm256_fmadd_ps(av, bv[v], acc[r][v]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) _mm256_storeu_ps(c + r * ldc + 8 * v, acc[r][v]);
}

using MicroFn = void (*)(int64_t, const float*, int64_t, const float*, int64_t, float*, int64_t, const char*, int);

template <int R>
constexpr MicroFn micro_for(int nv) {
  return nv == 1 ? micro<R, 1> : micro<R, 2>;
}

MicroFn micro_table(int rows, int nv) {
  switch (rows) {
    case 1: return micro_for<1>(nv);
    case 2: return micro_for<2>(nv);
    case 3: return micro_for<3>(nv);
    case 4: return micro_for<4>(nv);
    case 5: return micro_for<5>(nv);
    default: return micro_for<6>(nv);
  }
}

void gemm(int64_t positions, int64_t rows, int64_t K, int64_t Mpad, const float* v, int64_t v_pos, int64_t lda,
          const float* u, int64_t u_pos, float* mb, int64_t m_pos, int64_t ldc) {
  constexpr int64_t nr = kNV * kVL;
  const int64_t u_bytes = positions * u_pos * 4;  // U's extent (the prefetch stays inside it)
  for (int64_t p = 0; p < positions; ++p) {
    const float* vp = v + p * v_pos;
    const float* up = u + p * u_pos;
    float* cp = mb + p * m_pos;
    for (int64_t s0 = 0; s0 < Mpad; s0 += nr) {
      const int nv = static_cast<int>(imin(nr, Mpad - s0) / kVL);
      // the strip, its row blocks prefetching what follows it in U (as the AVX-512 GEMM does)
      gemm_slice([&](int r) { return micro_table(r, nv); }, kMR, rows, K, nv * kVL, 2, vp, lda, up + s0 * K, cp + s0,
                 ldc, u, u_bytes);
    }
  }
}

// ------------------------------------------------------------------------------------- transposes
inline void transpose8(__m256 r[8]) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  r[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
  r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
  r[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
  r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
  r[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
  r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
  r[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
  r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

void gather_nchw(const float* x, int64_t plane, int64_t H, int64_t W, int64_t channels, int64_t iy0, int64_t ix0,
                 int64_t rows, int64_t width, float* dst, int64_t drs) {
  // whole 8-column chunks inside the image and all 8 channels present: transposes; the rest: scalar
  for (int64_t i = 0; i < rows; ++i) {
    const int64_t iy = iy0 + i;
    float* d = dst + i * drs;
    if (iy < 0 || iy >= H || channels < kVL) {
      gather_nchw_generic(x, plane, H, W, channels, iy, ix0, 1, width, d, drs);
      continue;
    }
    const int64_t jlo = imin(width, imax(0, -ix0));
    const int64_t jhi = imax(jlo, imin(width, W - ix0));
    int64_t j = jlo;
    gather_nchw_generic(x, plane, H, W, channels, iy, ix0, 1, jlo, d, drs);
    const float* row = x + iy * W + ix0;
    for (; j + 8 <= jhi; j += 8) {
      __m256 r[8];
#pragma GCC unroll 8
      for (int c = 0; c < 8; ++c) r[c] = _mm256_loadu_ps(row + c * plane + j);
      transpose8(r);
#pragma GCC unroll 8
      for (int q = 0; q < 8; ++q) _mm256_storeu_ps(d + (j + q) * kVL, r[q]);
    }
    gather_nchw_generic(x, plane, H, W, channels, iy, ix0 + j, 1, width - j, d + j * kVL, drs);
  }
}

void scatter_nchw(const float* src, int64_t srs, int64_t rows, int64_t width, int64_t channels, float* y,
                  int64_t plane, int64_t ldy) {
  for (int64_t i = 0; i < rows; ++i) {
    const float* s = src + i * srs;
    float* d = y + i * ldy;
    int64_t j = 0;
    if (channels == kVL) {
      for (; j + 8 <= width; j += 8) {
        __m256 r[8];
#pragma GCC unroll 8
        for (int q = 0; q < 8; ++q) r[q] = _mm256_loadu_ps(s + (j + q) * kVL);
        transpose8(r);
#pragma GCC unroll 8
        for (int c = 0; c < 8; ++c) _mm256_storeu_ps(d + c * plane + j, r[c]);
      }
    }
    scatter_nchw_generic(s + j * kVL, srs, 1, width - j, channels, d + j, plane, ldy);
  }
}

}  // namespace

extern const WinogradIsa winograd = {
    "avx2",
    kVL,
    kMR,
    kNV * kVL,
    {input_transform<2>, input_transform<4>, input_transform<6>},
    {output_transform<2>, output_transform<4>, output_transform<6>},
    gemm,
    gather_nchw,
    scatter_nchw,
};

}  // namespace avx2
}  // namespace conv
}  // namespace onnxcomp

#pragma GCC pop_options
