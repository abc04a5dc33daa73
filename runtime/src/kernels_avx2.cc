// AVX2 + FMA kernels: 6x16 register-blocked GEMM micro-kernel; decoding uses the generic
// (auto-vectorized) panel providers; batch-1..4 codebook GEMV for 1/2/4-bit codes that decodes in registers
// from the prepacked code layout (the AVX-512 one, read 8 bytes at a time): 8 code bytes are zero-extended to 8
// dwords, shifted, and looked up with vpermps (8 entries; a 16-entry codebook takes two and a blend on code bit 3);
// the batch-1..4 sparse windows kernel over the AVX-512 layout, with the same two-vpermps-and-a-blend lookups.
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

// C[0:R, 0:cols] = act(acc + (accumulate ? C : bias)) with acc = A(R x kc) @ B_strip(kc x 16); A element (r, k) at
// a[k * sk + r * sr] (packed micro-panel: sk = kMR, sr = 1; in place: sk = 1, sr = lda).
template <int R>
inline void micro_rows(int cols, int64_t kc, const float* a, int64_t sk, int64_t sr, const float* b, float* c,
                       int64_t ldc, const float* bias, bool accumulate, bool relu) {
  for (int r = 0; r < R; ++r) {
    _mm_prefetch(reinterpret_cast<const char*>(c + r * ldc), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(c + r * ldc + kNR - 1), _MM_HINT_T0);
  }
  const float* ar[R];
  for (int r = 0; r < R; ++r) ar[r] = a + r * sr;
  __m256 acc0[R], acc1[R];
  for (int r = 0; r < R; ++r) {
    acc0[r] = _mm256_setzero_ps();
    acc1[r] = _mm256_setzero_ps();
  }
  for (int64_t k = 0; k < kc; ++k) {
    const __m256 b0 = _mm256_loadu_ps(b + k * kNR);
    const __m256 b1 = _mm256_loadu_ps(b + k * kNR + 8);
    for (int r = 0; r < R; ++r) {
      const __m256 av = _mm256_broadcast_ss(ar[r] + k * sk);
      acc0[r] = _mm256_fmadd_ps(av, b0, acc0[r]);
      acc1[r] = _mm256_fmadd_ps(av, b1, acc1[r]);
    }
  }
  const __m256 zero = _mm256_setzero_ps();
  if (cols == kNR) {
    __m256 bv0 = zero, bv1 = zero;
    if (!accumulate && bias != nullptr) {
      bv0 = _mm256_loadu_ps(bias);
      bv1 = _mm256_loadu_ps(bias + 8);
    }
    for (int r = 0; r < R; ++r) {
      float* cr = c + r * ldc;
      __m256 v0 = _mm256_add_ps(acc0[r], accumulate ? _mm256_loadu_ps(cr) : bv0);
      __m256 v1 = _mm256_add_ps(acc1[r], accumulate ? _mm256_loadu_ps(cr + 8) : bv1);
      if (relu) {
        v0 = _mm256_max_ps(v0, zero);
        v1 = _mm256_max_ps(v1, zero);
      }
      _mm256_storeu_ps(cr, v0);
      _mm256_storeu_ps(cr + 8, v1);
    }
  } else {
    alignas(32) float tmp[kNR];
    for (int r = 0; r < R; ++r) {
      _mm256_store_ps(tmp, acc0[r]);
      _mm256_store_ps(tmp + 8, acc1[r]);
      float* cr = c + r * ldc;
      for (int j = 0; j < cols; ++j) {
        float v = tmp[j] + (accumulate ? cr[j] : (bias != nullptr ? bias[j] : 0.0f));
        if (relu) v = v > 0.0f ? v : 0.0f;
        cr[j] = v;
      }
    }
  }
}

template <int SK>  // 0: A in place (sk = 1, sr = lda); kMR: packed micro-panel
void micro_dispatch(int rows, int cols, int64_t kc, const float* a, int64_t lda, const float* b, float* c,
                    int64_t ldc, const float* bias, bool accumulate, bool relu) {
  const int64_t sk = SK == 0 ? 1 : SK, sr = SK == 0 ? lda : 1;
  switch (rows) {
    case 1: micro_rows<1>(cols, kc, a, sk, sr, b, c, ldc, bias, accumulate, relu); break;
    case 2: micro_rows<2>(cols, kc, a, sk, sr, b, c, ldc, bias, accumulate, relu); break;
    case 3: micro_rows<3>(cols, kc, a, sk, sr, b, c, ldc, bias, accumulate, relu); break;
    case 4: micro_rows<4>(cols, kc, a, sk, sr, b, c, ldc, bias, accumulate, relu); break;
    case 5: micro_rows<5>(cols, kc, a, sk, sr, b, c, ldc, bias, accumulate, relu); break;
    default: micro_rows<6>(cols, kc, a, sk, sr, b, c, ldc, bias, accumulate, relu); break;
  }
}

void micro_kernel(int rows, int cols, int64_t kc, const float* a, const float* b, float* c, int64_t ldc,
                  const float* bias, bool accumulate, bool relu) {
  micro_dispatch<kMR>(rows, cols, kc, a, 0, b, c, ldc, bias, accumulate, relu);
}

void micro_kernel_direct(int rows, int cols, int64_t kc, const float* a, int64_t lda, const float* b, float* c,
                         int64_t ldc, const float* bias, bool accumulate, bool relu) {
  micro_dispatch<0>(rows, cols, kc, a, lda, b, c, ldc, bias, accumulate, relu);
}

#include "kernels_generic.h"

// One pass of the register-decoding GEMV over U 8-byte units (half chunks) of a prepacked block, ROWS rows of X.
// Unit hc of a block's 64-byte row line holds byte j of chunk hc / 2, half hc % 2: after a right shift by t * BITS,
// lane l carries the code of block column (hc / 2) * 16 * CPB + t * 16 + (hc % 2) * 8 + l.
template <int ROWS, int U, int BITS>
void gemv_pass(const float* x, int64_t ldx, const CodebookWeights& w, __m256 lo, __m256 hi, float* y, int64_t ldy,
               int64_t block, int hc0, int64_t n1) {
  constexpr int CPB = 8 / BITS;
  const int64_t bc = prepack_block_cols(BITS);
  __m256 acc[ROWS][U][CPB];
  for (int r = 0; r < ROWS; ++r)
    for (int u = 0; u < U; ++u)
      for (int t = 0; t < CPB; ++t) acc[r][u][t] = _mm256_setzero_ps();
  const uint8_t* p = w.packed + block * w.K * 64 + hc0 * 8;
  const int64_t K = w.K;
  for (int64_t k = 0; k < K; ++k, p += 64) {
    _mm_prefetch(reinterpret_cast<const char*>(p + 4096), _MM_HINT_T0);
    __m256 xv[ROWS];
    for (int r = 0; r < ROWS; ++r) xv[r] = _mm256_broadcast_ss(x + r * ldx + k);
    for (int u = 0; u < U; ++u) {
      const __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p + 8 * u)));
      for (int t = 0; t < CPB; ++t) {
        const __m256i idx = t == 0 ? v : _mm256_srli_epi32(v, t * BITS);
        __m256 wv = _mm256_permutevar8x32_ps(lo, idx);
        if (BITS == 4)
          wv = _mm256_blendv_ps(wv, _mm256_permutevar8x32_ps(hi, idx), _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28)));
        for (int r = 0; r < ROWS; ++r) acc[r][u][t] = _mm256_fmadd_ps(wv, xv[r], acc[r][u][t]);
      }
    }
  }
  for (int u = 0; u < U; ++u) {
    const int hc = hc0 + u;
    for (int t = 0; t < CPB; ++t) {
      const int64_t col = block * bc + (hc / 2) * 16 * CPB + t * 16 + (hc % 2) * 8;
      if (col >= n1) continue;
      for (int r = 0; r < ROWS; ++r) {
        float* yo = y + r * ldy + col;
        if (n1 - col >= 8) {
          _mm256_storeu_ps(yo, _mm256_add_ps(_mm256_loadu_ps(yo), acc[r][u][t]));
        } else {
          alignas(32) float tmp[8];
          _mm256_store_ps(tmp, acc[r][u][t]);
          for (int64_t j = 0; j < n1 - col; ++j) yo[j] += tmp[j];
        }
      }
    }
  }
}

template <int ROWS, int BITS>
void gemv_block_rows(const float* x, int64_t ldx, const CodebookWeights& w, __m256 lo, __m256 hi, float* y,
                     int64_t ldy, int64_t block, int64_t n1) {
  constexpr int U = 8 / (ROWS * (8 / BITS));  // accumulators per pass: ROWS * U * CPB = 8
  const int64_t bc = prepack_block_cols(BITS);
  for (int hc0 = 0; hc0 < 8; hc0 += U) {
    if (block * bc + (hc0 / 2) * 16 * (8 / BITS) >= n1) break;
    gemv_pass<ROWS, U, BITS>(x, ldx, w, lo, hi, y, ldy, block, hc0, n1);
  }
}

template <int BITS>
void gemv_packed(const float* x, int64_t M, int64_t ldx, const CodebookWeights& w, float* y, int64_t ldy, int64_t n0,
                 int64_t n1) {
  constexpr int CPB = 8 / BITS;
  const int64_t entries = int64_t{1} << BITS;
  const int64_t bc = prepack_block_cols(BITS);
  for (int64_t b = n0 / bc; b * bc < n1; ++b) {
    // one codebook row per block (checked by the caller), replicated to 16 entries for 1 and 2 bits
    const float* cb = w.codebook + (b * bc / w.group_size) * entries;
    alignas(32) float t16[16];
    for (int i = 0; i < 16; ++i) t16[i] = cb[i % entries];
    const __m256 lo = _mm256_load_ps(t16), hi = _mm256_load_ps(t16 + 8);
    int64_t m = 0;
    if (2 * CPB <= 8)
      for (; m + 2 <= M; m += 2) gemv_block_rows<2 * CPB <= 8 ? 2 : 1, BITS>(x + m * ldx, ldx, w, lo, hi, y + m * ldy, ldy, b, n1);
    for (; m < M; ++m) gemv_block_rows<1, BITS>(x + m * ldx, ldx, w, lo, hi, y + m * ldy, ldy, b, n1);
  }
}

bool reads_prepacked_avx2(int bits) { return bits == 1 || bits == 2 || bits == 4; }
bool reads_columns_avx2(int, int64_t, int64_t) { return false; }

bool codebook_gemv_reads_avx2(const CodebookWeights& w, int64_t M) {
  const int bits = w.bits;
  if ((bits != 1 && bits != 2 && bits != 4) || M < 1 || M > 4 || w.K <= 0 || w.packed == nullptr) return false;
  if (w.nblocks > 1) return false;  // (block codebooks: one block at a time)
  return w.G == 1 || w.group_size % prepack_block_cols(bits) == 0;
}

int64_t codebook_gemv_avx2(const float* x, int64_t M, int64_t ldx, const CodebookWeights& w, float* y, int64_t ldy,
                           int64_t n0, int64_t n1) {
  const int bits = w.bits;
  if (!codebook_gemv_reads_avx2(w, M) || n0 % prepack_block_cols(bits) != 0) return n0;
  switch (bits) {
    case 4: gemv_packed<4>(x, M, ldx, w, y, ldy, n0, n1); break;
    case 2: gemv_packed<2>(x, M, ldx, w, y, ldy, n0, n1); break;
    default: gemv_packed<1>(x, M, ldx, w, y, ldy, n0, n1); break;
  }
  return n1;
}

// ---------------------------------------------------------------------------------------------
// Sparse windows (kernels.h, SparseWindows) on 8-lane vectors. Byte lanes: a quad's 64 bytes are two halves of 8
// dwords (lanes 0-7, 8-15); per step, a row or a code index (the dwords shifted right by 8 u or 8 u + 4) picks
// from its 16 floats (the step's x window, or the codebook) with two vpermps and a blend on index bit 3, moved to
// the sign bit by a left shift. 16-bit lanes (codebook entry 0 not 0.0, outside the ops' contract) take a plain
// loop over the lanes.
template <int SH>
inline __m256 lookup16(__m256i v, __m256 lo, __m256 hi) {
  const __m256i idx = SH == 0 ? v : _mm256_srli_epi32(v, SH);
  const __m256 sel = _mm256_castsi256_ps(_mm256_slli_epi32(v, 28 - SH));
  return _mm256_blendv_ps(_mm256_permutevar8x32_ps(lo, idx), _mm256_permutevar8x32_ps(hi, idx), sel);
}

template <int R, int SH>
inline void quad_step(__m256i v0, __m256i v1, const float* xp, int64_t ldx, __m256 cl, __m256 ch, __m256* acc) {
  const __m256 w0 = lookup16<SH + 4>(v0, cl, ch), w1 = lookup16<SH + 4>(v1, cl, ch);
  for (int r = 0; r < R; ++r) {
    const __m256 xl = _mm256_loadu_ps(xp + r * ldx), xh = _mm256_loadu_ps(xp + r * ldx + 8);
    acc[2 * r] = _mm256_fmadd_ps(lookup16<SH>(v0, xl, xh), w0, acc[2 * r]);
    acc[2 * r + 1] = _mm256_fmadd_ps(lookup16<SH>(v1, xl, xh), w1, acc[2 * r + 1]);
  }
}

template <int R>
void sparse_quads_t(const float* x, int64_t ldx, const SparseWindows& s, int64_t cg0, int64_t cg1, float* y,
                    int64_t ldy) {
  constexpr int U = R == 1 ? 2 : 1;  // independent accumulator sets
  for (int64_t cg = cg0; cg < cg1; ++cg) {
    const int64_t col = cg * 16;
    const float* cb = s.cb16 + (col / s.group_size) * 16;
    const __m256 cl = _mm256_loadu_ps(cb), ch = _mm256_loadu_ps(cb + 8);
    __m256 acc[U][2 * R];
    for (int u = 0; u < U; ++u)
      for (int i = 0; i < 2 * R; ++i) acc[u][i] = _mm256_setzero_ps();
    const float* xp = x;
    const uint8_t* adv = s.step_adv;
    for (int64_t i = s.step_ptr[cg]; i < s.step_ptr[cg + 1]; i += 4) {
      const uint8_t* d = s.data + i * 16;
      _mm_prefetch(reinterpret_cast<const char*>(reinterpret_cast<uintptr_t>(d) + 16384), _MM_HINT_T1);
      const __m256i v0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(d));
      const __m256i v1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(d + 32));
      xp += adv[i];
      quad_step<R, 0>(v0, v1, xp, ldx, cl, ch, acc[0]);
      xp += adv[i + 1];
      quad_step<R, 8>(v0, v1, xp, ldx, cl, ch, acc[1 % U]);
      xp += adv[i + 2];
      quad_step<R, 16>(v0, v1, xp, ldx, cl, ch, acc[0]);
      xp += adv[i + 3];
      quad_step<R, 24>(v0, v1, xp, ldx, cl, ch, acc[1 % U]);
    }
    const int left = static_cast<int>(std::min<int64_t>(16, s.N - col));
    for (int r = 0; r < R; ++r) {
      alignas(32) float sum[16];
      __m256 lo = acc[0][2 * r], hi = acc[0][2 * r + 1];
      if (U == 2) {
        lo = _mm256_add_ps(lo, acc[1 % U][2 * r]);
        hi = _mm256_add_ps(hi, acc[1 % U][2 * r + 1]);
      }
      _mm256_store_ps(sum, lo);
      _mm256_store_ps(sum + 8, hi);
      float* yo = y + r * ldy + col;
      for (int j = 0; j < left; ++j) yo[j] += sum[j];
    }
  }
}

void sparse_pairs_loop(const float* x, int64_t ldx, int rows, const SparseWindows& s, int64_t cg0, int64_t cg1,
                       float* y, int64_t ldy) {
  for (int64_t cg = cg0; cg < cg1; ++cg) {
    const int64_t col = cg * 16;
    const float* cb = s.cb16 + (col / s.group_size) * 16;
    float acc[4][16] = {};
    const float* xp = x;
    for (int64_t i = s.step_ptr[cg]; i < s.step_ptr[cg + 1]; ++i) {
      xp += s.step_adv[i];
      for (int j = 0; j < 16; ++j) {
        uint16_t v;
        std::memcpy(&v, s.data + i * 32 + 2 * j, 2);
        if ((v >> 5) >= 16) continue;  // padding
        const float wv = cb[v >> 5];
        for (int r = 0; r < rows; ++r) acc[r][j] += xp[r * ldx + (v & 31)] * wv;
      }
    }
    const int left = static_cast<int>(std::min<int64_t>(16, s.N - col));
    for (int r = 0; r < rows; ++r)
      for (int j = 0; j < left; ++j) y[r * ldy + col + j] += acc[r][j];
  }
}

void sparse_windows_avx2(const float* x, int64_t ldx, int rows, const SparseWindows& s, int64_t cg0, int64_t cg1,
                         float* y, int64_t ldy) {
  if (s.lane_bytes != 1) {
    sparse_pairs_loop(x, ldx, rows, s, cg0, cg1, y, ldy);
    return;
  }
  switch (rows) {
    case 1: sparse_quads_t<1>(x, ldx, s, cg0, cg1, y, ldy); break;
    case 2: sparse_quads_t<2>(x, ldx, s, cg0, cg1, y, ldy); break;
    case 3: sparse_quads_t<3>(x, ldx, s, cg0, cg1, y, ldy); break;
    default: sparse_quads_t<4>(x, ldx, s, cg0, cg1, y, ldy); break;
  }
}

}  // namespace

extern const KernelTable table = {
    "avx2", kMR, kNR, pack_a_generic, gemm_generic, gemm_rows_generic, codebook_panel_generic, im2col_panel_generic,
    codebook_gemv_avx2, codebook_gemv_reads_avx2, sparse_gemv_generic, decode_rows_generic, sparse_windows_avx2,
    reads_prepacked_avx2, reads_columns_avx2,
};

}  // namespace avx2
}  // namespace onnxcomp

#pragma GCC pop_options
