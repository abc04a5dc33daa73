// Winograd kernels, AVX-512 (F, BW, DQ, VL): channel vectors of 16 floats, a 6 x 64 register-blocked GEMM
// micro-kernel (24 zmm accumulators; 6 tiles x 4 vectors of output channels), masked/expanding loads and
// 16 x 16 in-register transposes between NCHW rows and channel vectors.
#include <immintrin.h>

#include <cstdint>
#include <utility>

#include "winograd_isa.h"
#include "winograd_matrices.h"

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,bmi,bmi2,popcnt")

namespace onnxcomp {
namespace conv {
namespace avx512 {
namespace {

constexpr int kVL = 16;
constexpr int kMR = 6;
constexpr int kNV = 4;  // vectors per weight strip: nr = 64
// K chunk of the GEMM: a strip's slice of kKc x 64 floats (32 KB) stays in L1 across the row blocks (measured on
// an Intel Xeon with a 48 KB L1: the whole strip, up to 128 KB at K = 512, ran the GEMM at 50-60% of peak)
constexpr int64_t kKc = 128;

struct Vec {
  __m512 v;
};
inline Vec vload(const float* p) { return {_mm512_loadu_ps(p)}; }
inline void vstore(float* p, Vec a) { _mm512_storeu_ps(p, a.v); }
inline Vec vset1(float f) { return {_mm512_set1_ps(f)}; }
inline Vec vzero() { return {_mm512_setzero_ps()}; }
inline Vec vadd(Vec a, Vec b) { return {_mm512_add_ps(a.v, b.v)}; }
inline Vec vsub(Vec a, Vec b) { return {_mm512_sub_ps(a.v, b.v)}; }
inline Vec vmul(Vec a, Vec b) { return {_mm512_mul_ps(a.v, b.v)}; }
inline Vec vfmadd(Vec a, Vec b, Vec c) { return {_mm512_fmadd_ps(a.v, b.v, c.v)}; }
inline Vec vmax(Vec a, Vec b) { return {_mm512_mask_max_ps(a.v, 0xFFFF, a.v, b.v)}; }  // (masked: no GCC 12 _mm512_undefined_ps warning)
inline Vec vmin(Vec a, Vec b) { return {_mm512_mask_min_ps(a.v, 0xFFFF, a.v, b.v)}; }
inline Vec vneg(Vec a) { return {_mm512_sub_ps(_mm512_setzero_ps(), a.v)}; }
inline Vec vselect_neg(Vec x, Vec if_neg) {
  return {_mm512_mask_blend_ps(_mm512_cmp_ps_mask(x.v, _mm512_setzero_ps(), _CMP_LT_OQ), x.v, if_neg.v)};
}

#include "winograd_generic.h"

// ------------------------------------------------------------------------------------- GEMM
// C[R x 16*NV] = A[R x K] (rows lda apart) @ B[K x 16*NV] (rows ldb apart).
template <int R, int NV, bool ACC>
void micro(int64_t K, const float* a, int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc, const char* pf,
           int pfl) {
  __m512 acc[R][NV];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[r][v] = ACC ? _mm512_loadu_ps(c + r * ldc + 16 * v) : _mm512_setzero_ps();
  const float* ar[R];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) ar[r] = a + r * lda;
#pragma GCC unroll 2
  for (int64_t k = 0; k < K; ++k) {
    __m512 bv[NV];
    prefetch_share(pf, k, pfl);
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) bv[v] = _mm512_loadu_ps(b + k * ldb + 16 * v);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m512 av = _mm512_set1_ps(ar[r][k]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_fmadd_ps(av, bv[v], acc[r][v]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) _mm512_storeu_ps(c + r * ldc + 16 * v, acc[r][v]);
}

using MicroFn = void (*)(int64_t, const float*, int64_t, const float*, int64_t, float*, int64_t, const char*, int);

template <int R, bool ACC>
constexpr MicroFn micro_for(int nv) {
  return nv == 1 ? micro<R, 1, ACC> : nv == 2 ? micro<R, 2, ACC> : nv == 3 ? micro<R, 3, ACC> : micro<R, 4, ACC>;
}

template <bool ACC>
MicroFn micro_rows(int rows, int nv) {
  switch (rows) {
    case 1: return micro_for<1, ACC>(nv);
    case 2: return micro_for<2, ACC>(nv);
    case 3: return micro_for<3, ACC>(nv);
    case 4: return micro_for<4, ACC>(nv);
    case 5: return micro_for<5, ACC>(nv);
    default: return micro_for<6, ACC>(nv);
  }
}

MicroFn micro_table(int rows, int nv, bool acc) {
  return acc ? micro_rows<true>(rows, nv) : micro_rows<false>(rows, nv);
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
      const int64_t w = nv * kVL;
      // K in chunks whose strip slice (kc x w floats) stays in L1 across the row blocks
      const int64_t chunks = (K + kKc - 1) / kKc, kc = (K + chunks - 1) / chunks;
      for (int64_t k0 = 0; k0 < K; k0 += kc) {
        const int64_t kn = imin(kc, K - k0);
        const float* bs = up + s0 * K + k0 * w;
        const bool acc = k0 > 0;
        gemm_slice([&](int r) { return micro_table(r, nv, acc); }, kMR, rows, kn, w, 4, vp + k0, lda, bs, cp + s0,
                   ldc, u, u_bytes);
      }
    }
  }
}

// ------------------------------------------------------------------------------------- transposes
inline void transpose16(__m512 r[16]) {
  __m512 t[16];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  __m512 s[16];
#pragma GCC unroll 4
  for (int g = 0; g < 4; ++g) {
    const __m512d a = _mm512_castps_pd(t[4 * g]), b = _mm512_castps_pd(t[4 * g + 1]);
    const __m512d c = _mm512_castps_pd(t[4 * g + 2]), d = _mm512_castps_pd(t[4 * g + 3]);
    s[4 * g + 0] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
    s[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
    s[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
    s[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
  }
  // s[4g + q], 128-bit lane L: column 4L + q of rows 4g .. 4g+3
#pragma GCC unroll 4
  for (int q = 0; q < 4; ++q) {
    const __m512 u0 = _mm512_shuffle_f32x4(s[q], s[4 + q], 0x44);
    const __m512 u1 = _mm512_shuffle_f32x4(s[8 + q], s[12 + q], 0x44);
    const __m512 u2 = _mm512_shuffle_f32x4(s[q], s[4 + q], 0xEE);
    const __m512 u3 = _mm512_shuffle_f32x4(s[8 + q], s[12 + q], 0xEE);
    r[q] = _mm512_shuffle_f32x4(u0, u1, 0x88);
    r[4 + q] = _mm512_shuffle_f32x4(u0, u1, 0xDD);
    r[8 + q] = _mm512_shuffle_f32x4(u2, u3, 0x88);
    r[12 + q] = _mm512_shuffle_f32x4(u2, u3, 0xDD);
  }
}

void gather_nchw(const float* x, int64_t plane, int64_t H, int64_t W, int64_t channels, int64_t iy0, int64_t ix0,
                 int64_t rows, int64_t width, float* dst, int64_t drs) {
  const __m512 zero = _mm512_setzero_ps();
  for (int64_t i = 0; i < rows; ++i) {
    float* d = dst + i * drs;
    const int64_t iy = iy0 + i;
    if (iy < 0 || iy >= H) {
      for (int64_t q = 0; q < width; ++q) _mm512_storeu_ps(d + q * kVL, zero);
      continue;
    }
    for (int64_t j0 = 0; j0 < width; j0 += 16) {
      const int64_t n = imin(16, width - j0);
      const int64_t c0 = ix0 + j0;  // image column of lane 0
      const int64_t lo = imin(n, imax(0, -c0)), hi = imax(lo, imin(n, W - c0));
      if (lo >= hi) {
        for (int64_t q = 0; q < n; ++q) _mm512_storeu_ps(d + (j0 + q) * kVL, zero);
        continue;
      }
      const __mmask16 mask = static_cast<__mmask16>(((1u << hi) - 1u) & ~((1u << lo) - 1u));
      __m512 r[16];
      const float* row = x + iy * W;
#pragma GCC unroll 16
      for (int c = 0; c < 16; ++c) {
        if (c < channels) {
          const float* rc = row + c * plane;
          r[c] = lo == 0 ? _mm512_maskz_loadu_ps(mask, rc + c0) : _mm512_maskz_expandloadu_ps(mask, rc + c0 + lo);
        } else {
          r[c] = zero;
        }
      }
      transpose16(r);
      if (n == 16) {
#pragma GCC unroll 16
        for (int q = 0; q < 16; ++q) _mm512_storeu_ps(d + (j0 + q) * kVL, r[q]);
      } else {
        for (int q = 0; q < n; ++q) _mm512_storeu_ps(d + (j0 + q) * kVL, r[q]);
      }
    }
  }
}

void scatter_nchw(const float* src, int64_t srs, int64_t rows, int64_t width, int64_t channels, float* y,
                  int64_t plane, int64_t ldy) {
  for (int64_t i = 0; i < rows; ++i) {
    const float* s = src + i * srs;
    for (int64_t j0 = 0; j0 < width; j0 += 16) {
      const int64_t n = imin(16, width - j0);
      __m512 r[16];
      if (n == 16) {
#pragma GCC unroll 16
        for (int q = 0; q < 16; ++q) r[q] = _mm512_loadu_ps(s + (j0 + q) * kVL);
      } else {
        for (int q = 0; q < 16; ++q) r[q] = q < n ? _mm512_loadu_ps(s + (j0 + q) * kVL) : _mm512_setzero_ps();
      }
      transpose16(r);
      const __mmask16 mask = static_cast<__mmask16>((1u << n) - 1u);
      float* d = y + i * ldy + j0;
      if (n == 16 && channels == 16) {
#pragma GCC unroll 16
        for (int c = 0; c < 16; ++c) _mm512_storeu_ps(d + c * plane, r[c]);
      } else {
        for (int c = 0; c < channels; ++c) _mm512_mask_storeu_ps(d + c * plane, mask, r[c]);
      }
    }
  }
}

}  // namespace

extern const WinogradIsa winograd = {
    "avx512",
    kVL,
    kMR,
    kNV * kVL,
    {input_transform<2>, input_transform<4>, input_transform<6>},
    {output_transform<2>, output_transform<4>, output_transform<6>},
    gemm,
    gather_nchw,
    scatter_nchw,
};

}  // namespace avx512
}  // namespace conv
}  // namespace onnxcomp

#pragma GCC pop_options
