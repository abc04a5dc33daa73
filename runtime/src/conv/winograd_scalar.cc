// Winograd kernels, portable (baseline x86-64; the compiler vectorizes the 4-float channel vectors with
// SSE2): the reference every SIMD variant is tested against.
#include <cstdint>
#include <cstring>
#include <utility>

#include "../kernels.h"
#include "winograd_isa.h"
#include "winograd_matrices.h"

namespace onnxcomp {
namespace conv {
namespace scalar {
namespace {

constexpr int kVL = 4;
constexpr int kMR = 4;
constexpr int kNR = 8;

struct Vec {
  float v[kVL];
};
inline Vec vload(const float* p) {
  Vec r;
  for (int i = 0; i < kVL; ++i) r.v[i] = p[i];
  return r;
}
inline void vstore(float* p, Vec a) {
  for (int i = 0; i < kVL; ++i) p[i] = a.v[i];
}
inline Vec vset1(float f) {
  Vec r;
  for (int i = 0; i < kVL; ++i) r.v[i] = f;
  return r;
}
inline Vec vzero() { return vset1(0.0f); }
#define ONNXCOMP_VEC_BINARY(name, expr)  \
  inline Vec name(Vec a, Vec b) {        \
    Vec r;                               \
    for (int i = 0; i < kVL; ++i) {      \
      const float x = a.v[i], y = b.v[i]; \
      r.v[i] = (expr);                   \
    }                                    \
    return r;                            \
  }
ONNXCOMP_VEC_BINARY(vadd, x + y)
ONNXCOMP_VEC_BINARY(vsub, x - y)
ONNXCOMP_VEC_BINARY(vmul, x* y)
ONNXCOMP_VEC_BINARY(vmax, x > y ? x : y)
ONNXCOMP_VEC_BINARY(vmin, x < y ? x : y)
ONNXCOMP_VEC_BINARY(vselect_neg, x < 0.0f ? y : x)
#undef ONNXCOMP_VEC_BINARY
inline Vec vfmadd(Vec a, Vec b, Vec c) {
  Vec r;
  for (int i = 0; i < kVL; ++i) r.v[i] = a.v[i] * b.v[i] + c.v[i];
  return r;
}
inline Vec vneg(Vec a) { return vsub(vzero(), a); }

#include "winograd_generic.h"

void gemm(int64_t positions, int64_t rows, int64_t K, int64_t Mpad, const float* v, int64_t v_pos, int64_t lda,
          const float* u, int64_t u_pos, float* mb, int64_t m_pos, int64_t ldc) {
  for (int64_t p = 0; p < positions; ++p) {
    const float* vp = v + p * v_pos;
    const float* up = u + p * u_pos;
    float* cp = mb + p * m_pos;
    for (int64_t s0 = 0; s0 < Mpad; s0 += kNR) {
      const int64_t w = imin(kNR, Mpad - s0);
      const float* bs = up + s0 * K;
      for (int64_t r0 = 0; r0 < rows; r0 += kMR) {
        const int64_t rr = imin(kMR, rows - r0);
        float acc[kMR][kNR] = {};
        for (int64_t k = 0; k < K; ++k) {
          const float* bk = bs + k * w;
          for (int64_t r = 0; r < rr; ++r) {
            const float a = vp[(r0 + r) * lda + k];
            for (int64_t j = 0; j < w; ++j) acc[r][j] += a * bk[j];
          }
        }
        for (int64_t r = 0; r < rr; ++r)
          for (int64_t j = 0; j < w; ++j) cp[(r0 + r) * ldc + s0 + j] = acc[r][j];
      }
    }
  }
}

}  // namespace

extern const WinogradIsa winograd = {
    "scalar",
    kVL,
    kMR,
    kNR,
    {input_transform<2>, input_transform<4>, input_transform<6>},
    {output_transform<2>, output_transform<4>, output_transform<6>},
    gemm,
    gather_nchw_generic,
    scatter_nchw_generic,
};

}  // namespace scalar

const WinogradIsa& winograd_isa(const char* name) {
  const char* have = kernels_for(name).name;  // capped to what this CPU supports
  if (std::strcmp(have, "avx512") == 0) return avx512::winograd;
  if (std::strcmp(have, "avx2") == 0) return avx2::winograd;
  return scalar::winograd;
}

const WinogradIsa& winograd_isa_default() { return winograd_isa(kernels().name); }

}  // namespace conv
}  // namespace onnxcomp
