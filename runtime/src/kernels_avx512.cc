// AVX-512 kernels (F, BW, DQ, VL):
//  * 8x48 register-blocked GEMM micro-kernel (24 zmm accumulators),
//  * codebook panel decode in registers (masked byte loads + vpshufb bit extraction; lookups with
//    vpermps for <= 16 entries, vpermi2ps for 32, gathers beyond or across codebook groups),
//  * batch-1..4 codebook GEMV for 1/2/4-bit codes that never materializes W: 16 code bytes are
//    zero-extended to 16 dwords, shifted, and looked up with _mm512_permutexvar_ps (vpermps only
//    reads the low 4 index bits, so a 16-entry codebook, replicated for 1/2 bits, needs no masking);
//    the accumulators hold columns in the code stream's interleaved order and are put back in
//    order once per column block,
//  * the same for 3-bit codes widened to nibbles, and 5..8-bit codes widened to bytes and looked up in byte planes
//    with vpermi2b (AVX512-VBMI),
//    and, for codebooks that change within 16 columns (per channel), along k on a column-major layout.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "kernels.h"

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,bmi,bmi2,popcnt")

namespace onnxcomp {
namespace avx512 {
namespace {

constexpr int kMR = 8;  // 8 x 48 beat 12 x 32 and 14 x 32 (Zen 4, 256-row layers)
constexpr int kNR = 48;
constexpr int kNV = kNR / 16;  // zmm vectors per micro-tile row
// Intel: the micro-kernel prefetches B this many rows ahead. From memory (a CodebookMatMul's float panel of a
// 4096^2 layer, 64 MiB, read once per run) the hardware prefetcher alone left the first row panel of each block
// waiting; at 32 rows (1 thread, a Xeon with AVX-512): 0.88x -> 1.06-1.08x onnxruntime's MatMul, 16..64 rows
// ahead within 3%. Zen 4 was measured without it.
constexpr int64_t kBPrefetchRows = 32;

// C[0:R, 0:cols] = act(acc + (accumulate ? C : bias)) with acc = A(R x kc) @ B_strip(kc x 48); A element (r, k) at
// a[k * sk + r * sr] (packed micro-panel: sk = kMR, sr = 1; in place: sk = 1, sr = lda). The C tile is prefetched
// first (it is read or written only after the k loop).
template <int R>
inline void micro_rows(int cols, int64_t kc, const float* a, int64_t sk, int64_t sr, const float* b, float* c,
                       int64_t ldc, const float* bias, bool accumulate, bool relu) {
  for (int r = 0; r < R; ++r) {
    for (int v = 0; v < kNV; ++v) _mm_prefetch(reinterpret_cast<const char*>(c + r * ldc + 16 * v), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(c + r * ldc + kNR - 1), _MM_HINT_T0);
  }
  const float* ar[R];
  for (int r = 0; r < R; ++r) ar[r] = a + r * sr;
  __m512 acc[R][kNV];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < kNV; ++v) acc[r][v] = _mm512_setzero_ps();
  const bool prefetch_b = !cpu_is_amd();
  for (int64_t k = 0; k < kc; ++k) {
    __m512 bv[kNV];
    if (prefetch_b)  // B's rows 32 ahead (6 KiB): see kBPrefetchRows
      for (int v = 0; v < kNV; ++v)
        _mm_prefetch(reinterpret_cast<const char*>(b + (k + kBPrefetchRows) * kNR + 16 * v), _MM_HINT_T0);
    for (int v = 0; v < kNV; ++v) bv[v] = _mm512_loadu_ps(b + k * kNR + 16 * v);
    for (int r = 0; r < R; ++r) {
      const __m512 av = _mm512_set1_ps(ar[r][k * sk]);
      for (int v = 0; v < kNV; ++v) acc[r][v] = _mm512_fmadd_ps(av, bv[v], acc[r][v]);
    }
  }
  __mmask16 m[kNV];
  for (int v = 0; v < kNV; ++v) {
    const int cv = std::max(0, std::min(cols - 16 * v, 16));
    m[v] = static_cast<__mmask16>((1u << cv) - 1u);
  }
  const __m512 zero = _mm512_setzero_ps();
  if (!accumulate && bias != nullptr) {
    for (int v = 0; v < kNV; ++v) {
      const __m512 bb = _mm512_maskz_loadu_ps(m[v], bias + 16 * v);
      for (int r = 0; r < R; ++r) acc[r][v] = _mm512_add_ps(acc[r][v], bb);
    }
  }
  for (int r = 0; r < R; ++r) {
    float* cr = c + r * ldc;
    for (int v = 0; v < kNV; ++v) {
      __m512 o = acc[r][v];
      if (accumulate) o = _mm512_add_ps(o, _mm512_maskz_loadu_ps(m[v], cr + 16 * v));
      if (relu) o = _mm512_max_ps(o, zero);
      _mm512_mask_storeu_ps(cr + 16 * v, m[v], o);
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
    case 6: micro_rows<6>(cols, kc, a, sk, sr, b, c, ldc, bias, accumulate, relu); break;
    case 7: micro_rows<7>(cols, kc, a, sk, sr, b, c, ldc, bias, accumulate, relu); break;
    default: micro_rows<8>(cols, kc, a, sk, sr, b, c, ldc, bias, accumulate, relu); break;
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

// ---------------------------------------------------------------------------------------------
// Codebook panel decode. 16 codes at `bits` bits occupy exactly 2*bits bytes starting on a byte
// boundary (the panel columns start at multiples of 16).
struct Unpack16 {
  __m512i shuf, shift, mask;
};

inline Unpack16 make_unpack16(int bits) {
  alignas(64) int8_t shuf[64];
  alignas(64) int32_t shift[16];
  for (int i = 0; i < 16; ++i) {
    const int lo = (i * bits) >> 3;
    for (int lane = 0; lane < 4; ++lane) {
      (void)lane;
    }
    shift[i] = (i * bits) & 7;
    shuf[4 * i + 0] = static_cast<int8_t>(lo);
    shuf[4 * i + 1] = static_cast<int8_t>(lo + 1 < 16 ? lo + 1 : 0x80);
    shuf[4 * i + 2] = static_cast<int8_t>(0x80);
    shuf[4 * i + 3] = static_cast<int8_t>(0x80);
  }
  Unpack16 u;
  u.shuf = _mm512_load_si512(shuf);
  u.shift = _mm512_load_si512(shift);
  u.mask = _mm512_set1_epi32((1 << bits) - 1);
  return u;
}

inline __m512i unpack16(const Unpack16& u, const uint8_t* p, int nbytes, bool full16) {
  // full16: 16 bytes from p are inside the buffer (cheaper than a masked load)
  const __m128i src = full16 ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(p))
                             : _mm_maskz_loadu_epi8(static_cast<__mmask16>((1u << nbytes) - 1u), p);
  const __m512i b = _mm512_broadcast_i32x4(src);
  const __m512i s = _mm512_shuffle_epi8(b, u.shuf);
  return _mm512_and_si512(_mm512_srlv_epi32(s, u.shift), u.mask);
}

// Replicated 16-entry codebook rows (cb16[g*16 + i] = codebook[g*entries + i % entries]) for the
// vpermps lookups of 1/2/4-bit codes, which leave higher code bits in index bits 1..3.
const float* replicated_codebook(const CodebookWeights& w, int slot) {
  const int64_t entries = int64_t{1} << w.bits;
  if (entries == 16) return w.codebook;
  float* cb16 = scratch(static_cast<size_t>(w.G * 16), slot);
  for (int64_t g = 0; g < w.G; ++g)
    for (int i = 0; i < 16; ++i) cb16[g * 16 + i] = w.codebook[g * entries + (i % entries)];
  return cb16;
}

// Panel decode from the prepacked layout.
void codebook_panel_packed(const CodebookWeights& w, int64_t k0, int64_t kc, int64_t n0, int64_t nc, float* panel) {
  const int bits = w.bits, pb = prepacked_bits(bits);
  const int cpb = 8 / pb;
  const int64_t bc = prepack_block_cols(bits);
  const int64_t entries = int64_t{1} << bits;
  const int64_t strips = (nc + kNR - 1) / kNR;
  const int64_t nvec = strips * (kNR / 16);
  const float* cb16 = replicated_codebook(w, 2);
  int64_t* vsrc = reinterpret_cast<int64_t*>(scratch(static_cast<size_t>(nvec * 21 + 16), 1));
  int32_t* vshift = reinterpret_cast<int32_t*>(vsrc + nvec);
  int32_t* vgroup = vshift + nvec;
  int32_t* voff = vgroup + nvec;  // [nvec][16]
  for (int64_t v = 0; v < nvec; ++v) {
    const int64_t col = std::min(n0 + 16 * v, w.N - 1) & ~int64_t{15};
    const int64_t b = col / bc, within = col % bc;
    vsrc[v] = (b * w.K) * 64 + (within / (16 * cpb)) * 16;
    vshift[v] = static_cast<int32_t>(((within / 16) % cpb) * pb);
    const int64_t last = std::min(col + 15, w.N - 1);
    vgroup[v] = (col / w.group_size == last / w.group_size) ? static_cast<int32_t>(col / w.group_size) : -1;
    for (int j = 0; j < 16; ++j)
      voff[v * 16 + j] = static_cast<int32_t>((std::min(col + j, w.N - 1) / w.group_size) * entries);
  }
  const __m512i cmask = _mm512_set1_epi32(static_cast<int>(entries - 1));
  for (int64_t kk = 0; kk < kc; ++kk) {
    const uint8_t* rowp = w.packed + (k0 + kk) * 64;
    for (int64_t v = 0; v < nvec; ++v) {
      float* dst = panel + ((v / kNV) * kc + kk) * kNR + (v % kNV) * 16;
      const int64_t valid = std::min<int64_t>(16, nc - 16 * v);
      if (valid <= 0) {
        _mm512_storeu_ps(dst, _mm512_setzero_ps());
        continue;
      }
      const __m512i raw = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(rowp + vsrc[v])));
      const __m512i idx = _mm512_srlv_epi32(raw, _mm512_set1_epi32(vshift[v]));
      __m512 val;
      const int32_t g = vgroup[v];
      if (g >= 0) {
        val = _mm512_permutexvar_ps(idx, _mm512_loadu_ps(cb16 + g * 16));
      } else {
        const __m512i off = _mm512_add_epi32(_mm512_and_si512(idx, cmask), _mm512_loadu_si512(voff + v * 16));
        val = _mm512_i32gather_ps(off, w.codebook, 4);
      }
      _mm512_storeu_ps(dst, _mm512_maskz_mov_ps(static_cast<__mmask16>((1u << valid) - 1u), val));
    }
  }
}

void codebook_panel_avx512(const void* ctx, int64_t k0, int64_t kc, int64_t n0, int64_t nc, int nr, float* panel) {
  const CodebookWeights& w = *static_cast<const CodebookWeights*>(ctx);
  if (nr != kNR || (n0 & 15) != 0) {
    codebook_panel_generic(ctx, k0, kc, n0, nc, nr, panel);
    return;
  }
  if (w.packed != nullptr && prepacked_bits(w.bits) <= 4) {  // (byte codes: decoded from the codes below)
    codebook_panel_packed(w, k0, kc, n0, nc, panel);
    return;
  }
  const int bits = w.bits;
  const int64_t entries = int64_t{1} << bits;
  const int64_t strips = (nc + kNR - 1) / kNR;
  const int64_t nvec = strips * (kNR / 16);
  const Unpack16 u = make_unpack16(bits);
  // per-vector setup: group (or -1 when the 16 columns span groups) and gather offsets
  int32_t* vgroup = reinterpret_cast<int32_t*>(scratch(static_cast<size_t>(nvec * 17 + 16), 1));
  int32_t* voff = vgroup + nvec;  // [nvec][16]
  for (int64_t v = 0; v < nvec; ++v) {
    const int64_t first = n0 + 16 * v;
    const int64_t last = std::min(first + 15, w.N - 1);
    const int64_t g0 = std::min(first, w.N - 1) / w.group_size;
    vgroup[v] = (g0 == last / w.group_size) ? static_cast<int32_t>(g0) : -1;
    for (int j = 0; j < 16; ++j) {
      const int64_t n = std::min(first + j, w.N - 1);
      voff[v * 16 + j] = static_cast<int32_t>((n / w.group_size) * entries);
    }
  }
  const __mmask16 cbmask = static_cast<__mmask16>(entries >= 16 ? 0xFFFF : ((1u << entries) - 1u));
  const int64_t seg_bytes = (nc * bits + 7) >> 3;  // bytes of one row inside this panel
  for (int64_t kk = 0; kk < kc; ++kk) {
    const uint8_t* row = w.codes + (k0 + kk) * w.row_bytes;
    if (kk + 8 < kc) {
      const char* pf = reinterpret_cast<const char*>(row + 8 * w.row_bytes + ((n0 * bits) >> 3));
      for (int64_t off = 0; off < seg_bytes; off += 64) _mm_prefetch(pf + off, _MM_HINT_T0);
    }
    for (int64_t v = 0; v < nvec; ++v) {
      float* dst = panel + ((v / kNV) * kc + kk) * kNR + (v % kNV) * 16;
      const int64_t valid = std::min<int64_t>(16, nc - 16 * v);
      if (valid <= 0) {
        _mm512_storeu_ps(dst, _mm512_setzero_ps());
        continue;
      }
      const int64_t col = n0 + 16 * v;
      const int nbytes = static_cast<int>((valid * bits + 7) >> 3);
      const int64_t byte0 = (col * bits) >> 3;
      const __m512i idx = unpack16(u, row + byte0, nbytes, byte0 + 16 <= w.row_bytes);
      const int32_t g = vgroup[v];
      __m512 val;
      if (g >= 0 && entries <= 16) {
        val = _mm512_permutexvar_ps(idx, _mm512_maskz_loadu_ps(cbmask, w.codebook + g * entries));
      } else if (g >= 0 && entries == 32) {
        const float* cb = w.codebook + g * entries;
        val = _mm512_permutex2var_ps(_mm512_loadu_ps(cb), idx, _mm512_loadu_ps(cb + 16));
      } else {
        const __m512i off = _mm512_add_epi32(idx, _mm512_loadu_si512(voff + v * 16));
        val = _mm512_i32gather_ps(off, w.codebook, 4);
      }
      const __mmask16 vm = static_cast<__mmask16>((1u << valid) - 1u);
      _mm512_storeu_ps(dst, _mm512_maskz_mov_ps(vm, val));
    }
  }
}

void decode_rows_avx512(const uint8_t* codes, int64_t row_bytes, int64_t row0, int64_t rows, int64_t n, int bits,
                        const float* codebook, int64_t group_size, float* out) {
  const int64_t entries = int64_t{1} << bits;
  const Unpack16 u = make_unpack16(bits);
  const __mmask16 cbmask = static_cast<__mmask16>(entries >= 16 ? 0xFFFF : ((1u << entries) - 1u));
  for (int64_t i = 0; i < rows; ++i) {
    const int64_t m = row0 + i;
    const uint8_t* row = codes + m * row_bytes;
    const float* cb = codebook + (m / group_size) * entries;
    const __m512 lo = entries <= 16 ? _mm512_maskz_loadu_ps(cbmask, cb) : _mm512_loadu_ps(cb);
    const __m512 hi = entries == 32 ? _mm512_loadu_ps(cb + 16) : lo;
    float* o = out + i * n;
    for (int64_t j = 0; j < n; j += 16) {
      const int64_t valid = std::min<int64_t>(16, n - j);
      const int64_t byte0 = (j * bits) >> 3;
      const __m512i idx = unpack16(u, row + byte0, static_cast<int>((valid * bits + 7) >> 3), byte0 + 16 <= row_bytes);
      __m512 val;
      if (entries <= 16) {
        val = _mm512_permutexvar_ps(idx, lo);
      } else if (entries == 32) {
        val = _mm512_permutex2var_ps(lo, idx, hi);
      } else {
        val = _mm512_i32gather_ps(idx, cb, 4);
      }
      _mm512_mask_storeu_ps(o + j, static_cast<__mmask16>(valid >= 16 ? 0xFFFF : ((1u << valid) - 1u)), val);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Register-decoding GEMV for 1/2/4-bit codes. One 16-byte chunk of a code row covers 16*cpb
// columns (cpb = 8 / bits codes per byte); dword lane j of the zero-extended chunk holds byte j,
// and after a right shift by t*bits its low 4 bits start with the code of column 16*c*cpb + j*cpb + t.
template <int ROWS, int CHUNKS, int BITS>
void gemv_block(const float* x, int64_t ldx, const CodebookWeights& w, const float* cb16, float* y,
                int64_t ldy, int64_t col) {
  constexpr int CPB = 8 / BITS;
  constexpr int COLS = 16 * CPB;  // columns per chunk
  __m512 acc[ROWS][CHUNKS][CPB];
  for (int r = 0; r < ROWS; ++r)
    for (int c = 0; c < CHUNKS; ++c)
      for (int t = 0; t < CPB; ++t) acc[r][c][t] = _mm512_setzero_ps();
  __m512 lut[CHUNKS];
  for (int c = 0; c < CHUNKS; ++c) lut[c] = _mm512_loadu_ps(cb16 + ((col + c * COLS) / w.group_size) * 16);
  const uint8_t* p = w.codes + ((col * BITS) >> 3);
  const int64_t K = w.K;
  const int64_t rb = w.row_bytes;
  for (int64_t k = 0; k < K; ++k, p += rb) {
    _mm_prefetch(reinterpret_cast<const char*>(p + 8 * rb), _MM_HINT_T0);
    __m512 xv[ROWS];
    for (int r = 0; r < ROWS; ++r) xv[r] = _mm512_set1_ps(x[r * ldx + k]);
    for (int c = 0; c < CHUNKS; ++c) {
      const __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16 * c)));
      for (int t = 0; t < CPB; ++t) {
        const __m512i idx = t == 0 ? v : _mm512_srli_epi32(v, t * BITS);
        const __m512 wv = _mm512_permutexvar_ps(idx, lut[c]);
        for (int r = 0; r < ROWS; ++r) acc[r][c][t] = _mm512_fmadd_ps(wv, xv[r], acc[r][c][t]);
      }
    }
  }
  alignas(64) float tmp[CPB][16];
  for (int r = 0; r < ROWS; ++r) {
    for (int c = 0; c < CHUNKS; ++c) {
      float* yo = y + r * ldy + col + c * COLS;
      if (CPB == 2) {
        // interleave even/odd columns back into order
        const __m512i lo = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
        const __m512i hi = _mm512_set_epi32(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8);
        const __m512 a0 = _mm512_permutex2var_ps(acc[r][c][0], lo, acc[r][c][CPB - 1]);
        const __m512 a1 = _mm512_permutex2var_ps(acc[r][c][0], hi, acc[r][c][CPB - 1]);
        _mm512_storeu_ps(yo, _mm512_add_ps(_mm512_loadu_ps(yo), a0));
        _mm512_storeu_ps(yo + 16, _mm512_add_ps(_mm512_loadu_ps(yo + 16), a1));
      } else {
        for (int t = 0; t < CPB; ++t) _mm512_store_ps(tmp[t], acc[r][c][t]);
        for (int j = 0; j < 16; ++j)
          for (int t = 0; t < CPB; ++t) yo[j * CPB + t] += tmp[t][j];
      }
    }
  }
}

template <int ROWS, int BITS>
int64_t gemv_rows(const float* x, int64_t ldx, const CodebookWeights& w, const float* cb16, float* y, int64_t ldy,
                  int64_t n0, int64_t n1) {
  constexpr int CPB = 8 / BITS;
  constexpr int COLS = 16 * CPB;
  constexpr int BIG = (ROWS * CPB * 4 <= 24) ? 4 : (ROWS * CPB * 2 <= 24 ? 2 : 1);
  int64_t col = n0;
  for (; col + BIG * COLS <= n1; col += BIG * COLS) gemv_block<ROWS, BIG, BITS>(x, ldx, w, cb16, y, ldy, col);
  for (; col + COLS <= n1; col += COLS) gemv_block<ROWS, 1, BITS>(x, ldx, w, cb16, y, ldy, col);
  return col;
}

// GEMV over the prepacked layout: columns come out in order, one block (64 code bytes per row,
// contiguous over k) at a time; CH of its 4 chunks per pass.
template <int ROWS, int CH, int BITS>
void gemv_packed_pass(const float* x, int64_t ldx, const CodebookWeights& w, const float* cb16, bool one_group,
                      float* y, int64_t ldy, int64_t block, int64_t c0, int64_t n1) {
  constexpr int CPB = 8 / BITS;
  const int64_t bc = prepack_block_cols(BITS);
  const int64_t col0 = block * bc + c0 * 16 * CPB;
  __m512 acc[ROWS][CH][CPB];
  __m512 lut[CH][CPB];
  for (int c = 0; c < CH; ++c)
    for (int t = 0; t < CPB; ++t) {
      const int64_t col = std::min(col0 + (c * CPB + t) * 16, w.N - 1);
      lut[c][t] = _mm512_loadu_ps(cb16 + (one_group ? 0 : (col / w.group_size) * 16));
      for (int r = 0; r < ROWS; ++r) acc[r][c][t] = _mm512_setzero_ps();
    }
  const uint8_t* p = w.packed + block * w.K * 64 + c0 * 16;
  const int64_t K = w.K;
  for (int64_t k = 0; k < K; ++k, p += 64) {
    _mm_prefetch(reinterpret_cast<const char*>(p + 4096), _MM_HINT_T0);
    __m512 xv[ROWS];
    for (int r = 0; r < ROWS; ++r) xv[r] = _mm512_set1_ps(x[r * ldx + k]);
    for (int c = 0; c < CH; ++c) {
      const __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16 * c)));
      for (int t = 0; t < CPB; ++t) {
        const __m512i idx = t == 0 ? v : _mm512_srli_epi32(v, t * BITS);
        const __m512 wv = _mm512_permutexvar_ps(idx, lut[c][t]);
        for (int r = 0; r < ROWS; ++r) acc[r][c][t] = _mm512_fmadd_ps(wv, xv[r], acc[r][c][t]);
      }
    }
  }
  for (int r = 0; r < ROWS; ++r)
    for (int c = 0; c < CH; ++c)
      for (int t = 0; t < CPB; ++t) {
        const int64_t col = col0 + (c * CPB + t) * 16;
        if (col >= n1) continue;
        const __mmask16 m = static_cast<__mmask16>(n1 - col >= 16 ? 0xFFFF : ((1u << (n1 - col)) - 1u));
        float* yo = y + r * ldy + col;
        _mm512_mask_storeu_ps(yo, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, yo), acc[r][c][t]));
      }
}

// 4-bit codes, one codebook: each 64-byte line is read as 16 dwords and looked up 8 times (vpermps reads only an
// index's low 4 bits), instead of zero-extending 16-byte chunks to dwords: 8 shuffles per 128 weights instead of
// 12. OFFSET_LOADS (Intel): byte b of every dword comes from a load at p + b (4 loads; the last 3 bytes past the
// line are the layout's 64-byte padding or the next line) and the high nibbles from one shift each: 4 shifts
// instead of 7, which share the FMAs' port 0 on Intel (4096^2, 1 row, a Xeon with AVX-512: 0.55 -> 0.44 ms with the
// codes in cache). Else (AMD): the line is shifted in registers, as measured on Zen 4. Lane d of lookup t then holds
// column 32 (d / 4) + 16 (t % 2) + 4 (d % 4) + t / 2 of the block (chunk d / 4, byte 4 (d % 4) + t / 2, nibble
// t % 2 of the prepacked layout); the sums are put back in column order once per block.
template <int ROWS, int NB, bool OFFSET_LOADS>
void gemv_packed_line4(const float* x, int64_t ldx, const CodebookWeights& w, const float* cb16, float* y,
                       int64_t ldy, int64_t block, int64_t n0, int64_t n1) {
  const __m512 lut = _mm512_loadu_ps(cb16);
  __m512 acc[ROWS][NB][8];
  for (int r = 0; r < ROWS; ++r)
    for (int q = 0; q < NB; ++q)
      for (int t = 0; t < 8; ++t) acc[r][q][t] = _mm512_setzero_ps();
  const int64_t K = w.K;
  const uint8_t* p = w.packed + block * K * 64;
  for (int64_t k = 0; k < K; ++k, p += 64) {
    __m512 xv[ROWS];
    for (int r = 0; r < ROWS; ++r) xv[r] = _mm512_set1_ps(x[r * ldx + k]);
    for (int q = 0; q < NB; ++q) {
      const uint8_t* pq = p + q * K * 64;
      __m512i line, high;
      if constexpr (OFFSET_LOADS) {
        // 8 KiB ahead: the codes of a GEMV between other work come from memory, and the hardware prefetcher
        // alone keeps too few lines in flight (the Xeon, W evicted by an fp32 GEMV between runs: 1.2 -> 0.6 ms;
        // 2 KiB ahead: 0.7 ms); two blocks (NB = 2, two streams) at a time: 0.6 -> 0.55 ms
        _mm_prefetch(reinterpret_cast<const char*>(pq + 128 * 64), _MM_HINT_T0);
      } else {
        // Zen 4: the line loaded once and shifted in registers (v >> 8b, (v >> 4) >> 8b): shifts with a memory
        // operand would load it 8 times (5% slower), offset loads split lines (slower), and a prefetch 4 KiB
        // ahead measured 5% slower (huge pages keep the hardware prefetcher going)
        line = _mm512_loadu_si512(pq);
        __asm__("" : "+v"(line));  // keeps the line in a register: the compiler would fold the shifts' loads back in
        high = _mm512_srli_epi32(line, 4);
      }
      for (int b = 0; b < 4; ++b) {
        __m512i v, h;
        if constexpr (OFFSET_LOADS) {
          v = _mm512_loadu_si512(pq + b);
          __asm__("" : "+v"(v));  // keeps v in a register: the compiler would fold the shift's load back in
          h = _mm512_srli_epi32(v, 4);
        } else {
          v = b == 0 ? line : _mm512_srli_epi32(line, 8 * b);
          h = b == 0 ? high : _mm512_srli_epi32(high, 8 * b);
        }
        const __m512 lo = _mm512_permutexvar_ps(v, lut);
        const __m512 hi = _mm512_permutexvar_ps(h, lut);
        for (int r = 0; r < ROWS; ++r) {
          acc[r][q][2 * b] = _mm512_fmadd_ps(lo, xv[r], acc[r][q][2 * b]);  // nibble 2b: shift 4 * (2b)
          acc[r][q][2 * b + 1] = _mm512_fmadd_ps(hi, xv[r], acc[r][q][2 * b + 1]);
        }
      }
    }
  }
  for (int q = 0; q < NB; ++q) {
    const int64_t col0 = (block + q) * 128;
    const int64_t lo = std::max(n0, col0), hi = std::min(n1, col0 + 128);
    for (int r = 0; r < ROWS; ++r) {
      alignas(64) float lanes[8][16];
      float sums[128];
      for (int t = 0; t < 8; ++t) {
        _mm512_store_ps(lanes[t], acc[r][q][t]);
        for (int d = 0; d < 16; ++d) sums[32 * (d / 4) + 16 * (t % 2) + 4 * (d % 4) + t / 2] = lanes[t][d];
      }
      float* yo = y + r * ldy;
      for (int64_t c = lo; c < hi; ++c) yo[c] += sums[c - col0];
    }
  }
}

template <int ROWS, int BITS>
void gemv_packed_rows(const float* x, int64_t ldx, const CodebookWeights& w, const float* cb16, bool one_group,
                      float* y, int64_t ldy, int64_t n0, int64_t n1) {
  constexpr int CPB = 8 / BITS;
  constexpr int CH = (ROWS * CPB * 4 <= 16) ? 4 : (ROWS * CPB * 2 <= 16 ? 2 : 1);
  const int64_t bc = prepack_block_cols(BITS);
  if constexpr (BITS == 4) {
    if (one_group) {
      const bool intel = !cpu_is_amd();
      for (int64_t b = n0 / bc; b * bc < n1;) {
        if (!intel && ROWS == 1 && (b + 1) * bc < n1) {
          // two blocks (two code streams) at a time on AMD too: 4096^2, 1 row, an AMD EPYC with AVX-512, each
          // run after an fp32 GEMV, 4 alternating processes: 5.39-5.61x of onnxruntime's fp32 MatMul -> 5.57-5.90x
          gemv_packed_line4<ROWS, 2, false>(x, ldx, w, cb16, y, ldy, b, n0, n1);
          b += 2;
        } else if (!intel) {
          gemv_packed_line4<ROWS, 1, false>(x, ldx, w, cb16, y, ldy, b, n0, n1);
          b += 1;
        } else if (ROWS == 1 && (b + 1) * bc < n1) {  // two blocks at a time where their 16 accumulators fit
          gemv_packed_line4<ROWS, 2, true>(x, ldx, w, cb16, y, ldy, b, n0, n1);
          b += 2;
        } else {
          gemv_packed_line4<ROWS, 1, true>(x, ldx, w, cb16, y, ldy, b, n0, n1);
          b += 1;
        }
      }
      return;
    }
  }
  for (int64_t b = n0 / bc; b * bc < n1; ++b)
    for (int c0 = 0; c0 < 4; c0 += CH) {
      if (b * bc + c0 * 16 * CPB >= n1) break;
      gemv_packed_pass<ROWS, CH, BITS>(x, ldx, w, cb16, one_group, y, ldy, b, c0, n1);
    }
}

template <int BITS>
void gemv_packed(const float* x, int64_t M, int64_t ldx, const CodebookWeights& w, float* y, int64_t ldy,
                 int64_t n0, int64_t n1) {
  const float* cb16 = replicated_codebook(w, 1);
  const bool one_group = w.G == 1;
  for (int64_t m = 0; m < M;) {
    if (M - m >= 2) {
      gemv_packed_rows<2, BITS>(x + m * ldx, ldx, w, cb16, one_group, y + m * ldy, ldy, n0, n1);
      m += 2;
    } else {
      gemv_packed_rows<1, BITS>(x + m * ldx, ldx, w, cb16, one_group, y + m * ldy, ldy, n0, n1);
      m += 1;
    }
  }
}

template <int BITS>
int64_t gemv_bits(const float* x, int64_t M, int64_t ldx, const CodebookWeights& w, const float* cb16, float* y,
                  int64_t ldy, int64_t n0, int64_t n1) {
  int64_t done = n0;
  for (int64_t m = 0; m < M;) {
    const int64_t rows = (M - m >= 2 && BITS > 1) ? 2 : 1;
    if (rows == 2) {
      done = gemv_rows<2, BITS>(x + m * ldx, ldx, w, cb16, y + m * ldy, ldy, n0, n1);
    } else {
      done = gemv_rows<1, BITS>(x + m * ldx, ldx, w, cb16, y + m * ldy, ldy, n0, n1);
    }
    m += rows;
  }
  return done;
}

// ---------------------------------------------------------------------------------------------
// Byte codes (5..8 bits, prepacked one byte per code in blocks of 64 columns), one codebook per block. A gather
// from the 256-entry table costs about a cycle per weight on Zen 4, no faster than onnxruntime's fp32 GEMV streams
// W. Instead the table's float bits are split into 4 byte planes of 256 entries (4 zmm each, 16 in all): per 64
// codes, vpermi2b looks up each plane's entries 0..127 and 128..255 and the code's top bit picks one (8 lookups,
// 4 blends), and two rounds of unpacks interleave the planes back into 4 vectors of 16 floats, bit-exact. Unpacks
// work within 128-bit lanes, so lane 4 l + i of vector t holds column 16 l + 4 t + i of the block; the sums are put
// back in column order once per block. 4096^2 at 1 row: ~5x a plain fp32 GEMV's time on this machine kind.
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx512vbmi,avx2,fma,bmi,bmi2,popcnt")

bool has_vbmi() {
  static const bool yes = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512vbmi") != 0;
  }();
  return yes;
}

struct BytePlanes {
  __m512i t[4][4];  // t[b][q]: byte b of entries 64 q .. 64 q + 63
};

void byte_planes(const float* codebook, int64_t entries, BytePlanes* out) {
  alignas(64) uint8_t plane[4][256] = {};
  for (int64_t e = 0; e < entries; ++e) {
    uint32_t u;
    std::memcpy(&u, codebook + e, sizeof(u));
    for (int b = 0; b < 4; ++b) plane[b][e] = static_cast<uint8_t>(u >> (8 * b));
  }
  for (int b = 0; b < 4; ++b)
    for (int q = 0; q < 4; ++q) out->t[b][q] = _mm512_load_si512(plane[b] + 64 * q);
}

template <int ROWS>
void gemv_bytes_block(const float* x, int64_t ldx, const CodebookWeights& w, const BytePlanes& tp, float* y,
                      int64_t ldy, int64_t block, int64_t n1) {
  __m512 acc[ROWS][4];
  for (int r = 0; r < ROWS; ++r)
    for (int t = 0; t < 4; ++t) acc[r][t] = _mm512_setzero_ps();
  const uint8_t* p = w.packed + block * w.K * 64;
  const int64_t K = w.K;
  for (int64_t k = 0; k < K; ++k, p += 64) {
    _mm_prefetch(reinterpret_cast<const char*>(p + 1024), _MM_HINT_T0);
    const __m512i idx = _mm512_loadu_si512(p);
    const __mmask64 high = _mm512_movepi8_mask(idx);  // code >= 128
    __m512i plane[4];
    for (int b = 0; b < 4; ++b)
      plane[b] = _mm512_mask_blend_epi8(high, _mm512_permutex2var_epi8(tp.t[b][0], idx, tp.t[b][1]),
                                        _mm512_permutex2var_epi8(tp.t[b][2], idx, tp.t[b][3]));
    const __m512i lo01 = _mm512_unpacklo_epi8(plane[0], plane[1]), hi01 = _mm512_unpackhi_epi8(plane[0], plane[1]);
    const __m512i lo23 = _mm512_unpacklo_epi8(plane[2], plane[3]), hi23 = _mm512_unpackhi_epi8(plane[2], plane[3]);
    const __m512 wv[4] = {_mm512_castsi512_ps(_mm512_unpacklo_epi16(lo01, lo23)),
                          _mm512_castsi512_ps(_mm512_unpackhi_epi16(lo01, lo23)),
                          _mm512_castsi512_ps(_mm512_unpacklo_epi16(hi01, hi23)),
                          _mm512_castsi512_ps(_mm512_unpackhi_epi16(hi01, hi23))};
    for (int r = 0; r < ROWS; ++r) {
      const __m512 xv = _mm512_set1_ps(x[r * ldx + k]);
      for (int t = 0; t < 4; ++t) acc[r][t] = _mm512_fmadd_ps(xv, wv[t], acc[r][t]);
    }
  }
  const int64_t col0 = block * 64;
  for (int r = 0; r < ROWS; ++r) {
    alignas(64) float lanes[4][16];
    for (int t = 0; t < 4; ++t) _mm512_store_ps(lanes[t], acc[r][t]);
    float* yo = y + r * ldy;
    for (int t = 0; t < 4; ++t)
      for (int l = 0; l < 4; ++l)
        for (int i = 0; i < 4; ++i) {
          const int64_t col = col0 + 16 * l + 4 * t + i;
          if (col < n1) yo[col] += lanes[t][4 * l + i];
        }
  }
}

void gemv_bytes(const float* x, int64_t M, int64_t ldx, const CodebookWeights& w, float* y, int64_t ldy, int64_t n0,
                int64_t n1) {
  const int64_t entries = int64_t{1} << w.bits;
  BytePlanes tp;
  int64_t group = -1;
  for (int64_t b = n0 / 64; b * 64 < n1; ++b) {
    const int64_t g = w.G == 1 ? 0 : b * 64 / w.group_size;
    if (g != group) {
      byte_planes(w.codebook + g * entries, entries, &tp);
      group = g;
    }
    int64_t m = 0;
    for (; m + 2 <= M; m += 2) gemv_bytes_block<2>(x + m * ldx, ldx, w, tp, y + m * ldy, ldy, b, n1);
    if (m < M) gemv_bytes_block<1>(x + m * ldx, ldx, w, tp, y + m * ldy, ldy, b, n1);
  }
}

#pragma GCC pop_options

bool reads_prepacked_avx512(int bits) { return prepacked_bits(bits) <= 4 || has_vbmi(); }

// ---------------------------------------------------------------------------------------------
// Column layout (kernels.h, prepack_columns): codebooks that change within 16 columns, e.g. one per output channel.
// Along k a column keeps its codebook, so each 64-byte line of a column is looked up 8 times in that column's
// 16-entry table (shifting the dwords by 4 bits; vpermps reads an index's low 4 bits) and multiplied with 8 vectors
// of 16 consecutive x; a column's 16 partial sums are added up once, at the end. CB columns per pass share the x
// vectors (8 per row of X, masked to zero past K on the last line).
bool reads_columns_avx512(int bits, int64_t group_size, int64_t N) {
  return bits <= 4 && group_size < N && group_size % 16 != 0;  // (else the row layouts)
}

// Block codebooks (w.nblocks > 1, block_size a multiple of 16): BLK 1, blocks of whole lines (block_size a multiple
// of 128): a column's table is loaded once per line; BLK 2: once per 16 rows (each 16 rows lie in one block).
template <int ROWS, int CB, int BLK, bool OFFSET_LOADS>
void gemv_columns_pass(const float* x, int64_t ldx, const CodebookWeights& w, float* y, int64_t ldy, int64_t nb,
                       int c0, int64_t n1) {
  const int64_t K = w.K, L = (K + 127) / 128, entries = int64_t{1} << w.bits;
  const int64_t nblocks = BLK ? w.nblocks : 1, bs = BLK ? w.block_size : K;
  const __mmask16 emask = static_cast<__mmask16>(entries >= 16 ? 0xFFFF : (1u << entries) - 1u);
  __m512 lut[CB], acc[ROWS][CB];
  const float* tables[CB];  // column c's codebook rows: one per block of k
  for (int c = 0; c < CB; ++c) {
    const int64_t n = std::min(nb * 8 + c0 + c, w.N - 1);
    tables[c] = w.codebook + (n / w.group_size) * nblocks * entries;
    lut[c] = _mm512_maskz_loadu_ps(emask, tables[c]);
    for (int r = 0; r < ROWS; ++r) acc[r][c] = _mm512_setzero_ps();
  }
  const uint8_t* p = w.columns + (nb * L * 8 + c0) * 64;
  for (int64_t l = 0; l < L; ++l, p += 8 * 64) {
    if constexpr (OFFSET_LOADS) {
      // Intel: each of the pass's lines 16 iterations (8 KiB) ahead, as in gemv_packed_line4
      for (int c = 0; c < CB; ++c) {
        _mm_prefetch(reinterpret_cast<const char*>(p + c * 64 + 8 * 64 * 16), _MM_HINT_T0);
        // block codebooks: the table rows of the same lines (one column's rows are contiguous over k)
        if constexpr (BLK != 0)
          _mm_prefetch(reinterpret_cast<const char*>(tables[c] + ((128 * (l + 16)) / bs) * entries), _MM_HINT_T0);
      }
    } else {
      _mm_prefetch(reinterpret_cast<const char*>(p + 8 * 64 * 4), _MM_HINT_T0);
    }
    const int64_t k0 = 128 * l;
    __m512 xv[ROWS][8];
    if (k0 + 128 <= K) {
      for (int t = 0; t < 8; ++t)
        for (int r = 0; r < ROWS; ++r) xv[r][t] = _mm512_loadu_ps(x + r * ldx + k0 + 16 * t);
    } else {  // the last line: x past K reads as 0 (its codes are 0, which need not be a 0.0 entry)
      for (int t = 0; t < 8; ++t) {
        const int64_t left = K - k0 - 16 * t;
        const __mmask16 m = static_cast<__mmask16>(left >= 16 ? 0xFFFF : (left <= 0 ? 0 : (1u << left) - 1u));
        for (int r = 0; r < ROWS; ++r) xv[r][t] = _mm512_maskz_loadu_ps(m, x + r * ldx + k0 + 16 * t);
      }
    }
    int64_t row_off[8];  // BLK 2: the table row of rows k0 + 16 t (rows past K: the last block's)
    if constexpr (BLK == 1) {
      for (int c = 0; c < CB; ++c) lut[c] = _mm512_maskz_loadu_ps(emask, tables[c] + (k0 / bs) * entries);
    } else if constexpr (BLK == 2) {
      for (int t = 0; t < 8; ++t) row_off[t] = std::min((k0 + 16 * t) / bs, nblocks - 1) * entries;
    }
    for (int c = 0; c < CB; ++c) {
      const __m512i v = _mm512_loadu_si512(p + c * 64);
      __m512i vb = v;  // OFFSET_LOADS: the line loaded at byte t / 2
      for (int t = 0; t < 8; ++t) {
        __m512 table = lut[c];
        if constexpr (BLK == 2) table = _mm512_maskz_loadu_ps(emask, tables[c] + row_off[t]);
        __m512i idx;
        if constexpr (OFFSET_LOADS) {
          // Intel: nibble t of each dword from the load at byte t / 2 (4 shifts per line instead of 7; the 3 bytes
          // past the line are the next line or the layout's padding), as in gemv_packed_line4
          if (t % 2 == 0 && t > 0) {
            vb = _mm512_loadu_si512(p + c * 64 + t / 2);
            __asm__("" : "+v"(vb));  // a register: the shift would fold the load in again
          }
          idx = t % 2 == 0 ? vb : _mm512_srli_epi32(vb, 4);
        } else {
          idx = t == 0 ? v : _mm512_srli_epi32(v, 4 * t);
        }
        const __m512 wv = _mm512_permutexvar_ps(idx, table);
        for (int r = 0; r < ROWS; ++r) acc[r][c] = _mm512_fmadd_ps(wv, xv[r][t], acc[r][c]);
      }
    }
  }
  for (int c = 0; c < CB; ++c) {
    const int64_t n = nb * 8 + c0 + c;
    if (n >= n1) break;
    for (int r = 0; r < ROWS; ++r) y[r * ldy + n] += _mm512_reduce_add_ps(acc[r][c]);
  }
}

template <int BLK, bool OFFSET_LOADS>
void gemv_columns_blk(const float* x, int64_t M, int64_t ldx, const CodebookWeights& w, float* y, int64_t ldy,
                      int64_t n0, int64_t n1) {
  for (int64_t nb = n0 / 8; nb * 8 < n1; ++nb) {
    int64_t m = 0;
    for (; m + 2 <= M; m += 2)
      for (int c0 = 0; c0 < 8; c0 += 4)
        gemv_columns_pass<2, 4, BLK, OFFSET_LOADS>(x + m * ldx, ldx, w, y + m * ldy, ldy, nb, c0, n1);
    if (m < M) gemv_columns_pass<1, 8, BLK, OFFSET_LOADS>(x + m * ldx, ldx, w, y + m * ldy, ldy, nb, 0, n1);
  }
}

template <int BLK>
void gemv_columns_blk(const float* x, int64_t M, int64_t ldx, const CodebookWeights& w, float* y, int64_t ldy,
                      int64_t n0, int64_t n1) {
  if (cpu_is_amd()) {
    gemv_columns_blk<BLK, false>(x, M, ldx, w, y, ldy, n0, n1);
  } else {
    gemv_columns_blk<BLK, true>(x, M, ldx, w, y, ldy, n0, n1);
  }
}

void gemv_columns(const float* x, int64_t M, int64_t ldx, const CodebookWeights& w, float* y, int64_t ldy, int64_t n0,
                  int64_t n1) {
  if (w.nblocks <= 1) {
    gemv_columns_blk<0>(x, M, ldx, w, y, ldy, n0, n1);
  } else if (w.block_size % 128 == 0) {
    gemv_columns_blk<1>(x, M, ldx, w, y, ldy, n0, n1);
  } else {
    gemv_columns_blk<2>(x, M, ldx, w, y, ldy, n0, n1);
  }
}

bool gemv_packed_reads(const CodebookWeights& w) {
  return w.packed != nullptr && (w.G == 1 || w.group_size % 16 == 0);
}

bool codebook_gemv_reads_avx512(const CodebookWeights& w, int64_t M) {
  const int bits = w.bits;
  if (M < 1 || M > 4 || w.K <= 0) return false;
  if (w.nblocks > 1) return w.columns != nullptr && w.block_size > 0 && w.block_size % 16 == 0;
  if (w.columns != nullptr) return true;
  if (prepacked_bits(bits) == 8)  // (packed only where has_vbmi)
    return w.packed != nullptr && has_vbmi() && (w.G == 1 || w.group_size % 64 == 0);
  if (bits == 3) return gemv_packed_reads(w);  // (3-bit codes: read as nibbles of the prepacked layout only)
  return gemv_packed_reads(w) || w.G == 1 || w.group_size % (16 * (8 / bits)) == 0;
}

int64_t codebook_gemv_avx512(const float* x, int64_t M, int64_t ldx, const CodebookWeights& w, float* y,
                             int64_t ldy, int64_t n0, int64_t n1) {
  const int bits = w.bits;
  if (!codebook_gemv_reads_avx512(w, M) || (n0 & 127) != 0) return n0;
  if (w.columns != nullptr) {
    gemv_columns(x, M, ldx, w, y, ldy, n0, n1);
    return n1;
  }
  if (prepacked_bits(bits) == 8) {
    gemv_bytes(x, M, ldx, w, y, ldy, n0, n1);
    return n1;
  }
  if (gemv_packed_reads(w) && n0 % prepack_block_cols(bits) == 0) {
    switch (prepacked_bits(bits)) {  // (3-bit codes as nibbles: the codebook is replicated to 16 entries)
      case 4: gemv_packed<4>(x, M, ldx, w, y, ldy, n0, n1); break;
      case 2: gemv_packed<2>(x, M, ldx, w, y, ldy, n0, n1); break;
      default: gemv_packed<1>(x, M, ldx, w, y, ldy, n0, n1); break;
    }
    return n1;
  }
  if (bits == 3) return n0;  // (3-bit codes are read from the prepacked layout only)
  const int64_t chunk_cols = 16 * (8 / bits);
  if (w.G != 1 && (w.group_size % chunk_cols) != 0) return n0;  // (packed codes at an unaligned n0)
  // codebook rows replicated to 16 entries: cb16[g*16 + i] = codebook[g*entries + i % entries]
  const int64_t entries = int64_t{1} << bits;
  float* cb16 = scratch(static_cast<size_t>(w.G * 16), 1);
  for (int64_t g = 0; g < w.G; ++g)
    for (int i = 0; i < 16; ++i) cb16[g * 16 + i] = w.codebook[g * entries + (i % entries)];
  switch (bits) {
    case 4: return gemv_bits<4>(x, M, ldx, w, cb16, y, ldy, n0, n1);
    case 2: return gemv_bits<2>(x, M, ldx, w, cb16, y, ldy, n0, n1);
    default: return gemv_bits<1>(x, M, ldx, w, cb16, y, ldy, n0, n1);
  }
}

// ---------------------------------------------------------------------------------------------
// Sparse windows (kernels.h, SparseWindows). Byte lanes: one 64-byte line holds 4 steps; per step, two shifts of
// the 16 dwords give the row (x lookup in the step's 16-row window with vpermps) and the code (weight lookup in the
// group's 16-entry codebook); one FMA per row of X. Each step of a quad feeds its own accumulators (R == 1: four
// chains hide the FMA latency). 16-bit lanes: vpermi2ps fetches each lane's x from the 32-row window held in two
// registers and a second vpermi2ps its weight (index bit 4 = padding selects the zero register).
// The layout streams once per run (tens of MB for a VGG-16 head): the line 16 KiB ahead is prefetched into L2.
constexpr uintptr_t kSparsePrefetch = 16384;

template <int R, int SH>
inline void quad_step(__m512i v, const float* xp, int64_t ldx, __m512 lut, __m512* acc) {
  const __m512i xi = SH == 0 ? v : _mm512_srli_epi32(v, SH);
  const __m512 wv = _mm512_permutexvar_ps(_mm512_srli_epi32(v, SH + 4), lut);
  for (int r = 0; r < R; ++r)
    acc[r] = _mm512_fmadd_ps(_mm512_permutexvar_ps(xi, _mm512_loadu_ps(xp + r * ldx)), wv, acc[r]);
}

template <int R>
inline void pair_step(const uint8_t* d, const float* xp, int64_t ldx, __m512 lut, __m512 zero, __m512* acc) {
  const __m512i v = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(d)));
  const __m512 wv = _mm512_permutex2var_ps(lut, _mm512_srli_epi32(v, 5), zero);
  for (int r = 0; r < R; ++r) {
    const float* xr = xp + r * ldx;
    acc[r] = _mm512_fmadd_ps(_mm512_permutex2var_ps(_mm512_loadu_ps(xr), v, _mm512_loadu_ps(xr + 16)), wv, acc[r]);
  }
}

inline void prefetch_l2(const uint8_t* p) {
  _mm_prefetch(reinterpret_cast<const char*>(reinterpret_cast<uintptr_t>(p) + kSparsePrefetch), _MM_HINT_T1);
}

template <int LANE_BYTES, int R>
void sparse_windows_t(const float* x, int64_t ldx, const SparseWindows& s, int64_t cg0, int64_t cg1, float* y,
                      int64_t ldy) {
  const __m512 zero = _mm512_setzero_ps();
  constexpr int U = R == 1 ? 4 : (R == 2 ? 2 : 1);  // independent accumulators per row
  for (int64_t cg = cg0; cg < cg1; ++cg) {
    const int64_t col = cg * 16;
    const __m512 lut = _mm512_loadu_ps(s.cb16 + (col / s.group_size) * 16);
    __m512 acc[U][R];
    for (int u = 0; u < U; ++u)
      for (int r = 0; r < R; ++r) acc[u][r] = zero;
    const float* xp = x;
    const uint8_t* adv = s.step_adv;
    if (LANE_BYTES == 1) {
      for (int64_t i = s.step_ptr[cg]; i < s.step_ptr[cg + 1]; i += 4) {
        const uint8_t* d = s.data + i * 16;
        prefetch_l2(d);
        const __m512i v = _mm512_loadu_si512(d);
        xp += adv[i];
        quad_step<R, 0>(v, xp, ldx, lut, acc[0]);
        xp += adv[i + 1];
        quad_step<R, 8>(v, xp, ldx, lut, acc[1 % U]);
        xp += adv[i + 2];
        quad_step<R, 16>(v, xp, ldx, lut, acc[2 % U]);
        xp += adv[i + 3];
        quad_step<R, 24>(v, xp, ldx, lut, acc[3 % U]);
      }
    } else {
      int64_t i = s.step_ptr[cg];
      const int64_t e = s.step_ptr[cg + 1];
      for (; i + U <= e; i += U) {
        prefetch_l2(s.data + i * 32);
        for (int u = 0; u < U; ++u) {
          xp += adv[i + u];
          pair_step<R>(s.data + (i + u) * 32, xp, ldx, lut, zero, acc[u]);
        }
      }
      for (; i < e; ++i) {
        xp += adv[i];
        pair_step<R>(s.data + i * 32, xp, ldx, lut, zero, acc[0]);
      }
    }
    const int64_t left = s.N - col;
    const __mmask16 m = static_cast<__mmask16>(left >= 16 ? 0xFFFF : ((1u << left) - 1u));
    for (int r = 0; r < R; ++r) {
      __m512 sum = acc[0][r];
      for (int u = 1; u < U; ++u) sum = _mm512_add_ps(sum, acc[u][r]);
      float* yo = y + r * ldy + col;
      _mm512_mask_storeu_ps(yo, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, yo), sum));
    }
  }
}

template <int LANE_BYTES>
void sparse_windows_rows(const float* x, int64_t ldx, int rows, const SparseWindows& s, int64_t cg0, int64_t cg1,
                         float* y, int64_t ldy) {
  switch (rows) {
    case 1: sparse_windows_t<LANE_BYTES, 1>(x, ldx, s, cg0, cg1, y, ldy); break;
    case 2: sparse_windows_t<LANE_BYTES, 2>(x, ldx, s, cg0, cg1, y, ldy); break;
    case 3: sparse_windows_t<LANE_BYTES, 3>(x, ldx, s, cg0, cg1, y, ldy); break;
    default: sparse_windows_t<LANE_BYTES, 4>(x, ldx, s, cg0, cg1, y, ldy); break;
  }
}

void sparse_windows_avx512(const float* x, int64_t ldx, int rows, const SparseWindows& s, int64_t cg0, int64_t cg1,
                           float* y, int64_t ldy) {
  if (s.lane_bytes == 1) {
    sparse_windows_rows<1>(x, ldx, rows, s, cg0, cg1, y, ldy);
  } else {
    sparse_windows_rows<2>(x, ldx, rows, s, cg0, cg1, y, ldy);
  }
}

}  // namespace

extern const KernelTable table = {
    "avx512", kMR, kNR, pack_a_generic, gemm_generic, gemm_rows_generic, codebook_panel_avx512, im2col_panel_generic,
    codebook_gemv_avx512, codebook_gemv_reads_avx512, sparse_gemv_generic, decode_rows_avx512, sparse_windows_avx512,
    reads_prepacked_avx512, reads_columns_avx512,
};

}  // namespace avx512
}  // namespace onnxcomp

#pragma GCC pop_options
