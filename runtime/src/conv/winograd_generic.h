// ISA-neutral Winograd pieces, included by each conv/winograd_<isa>.cc inside its `#pragma GCC target`
// region and an anonymous namespace (every ISA gets its own copy, internal linkage). Include only standard
// headers before the pragma region, never from here (see kernels_generic.h).
//
// Requires, in the including file: constexpr int kVL (floats per Vec) and
//   Vec vload(const float*), void vstore(float*, Vec), Vec vset1(float), Vec vzero(),
//   Vec vadd(Vec, Vec), Vec vsub(Vec, Vec), Vec vmul(Vec, Vec), Vec vfmadd(Vec a, Vec b, Vec c) (a*b + c),
//   Vec vmax(Vec, Vec), Vec vmin(Vec, Vec), Vec vneg(Vec), Vec vselect_neg(Vec x, Vec if_neg) (x < 0 ? if_neg : x).
//
// The transforms multiply by the generated matrices (winograd_matrices.h) with every coefficient known at
// compile time: zero terms are dropped, +-1 terms become additions and subtractions, others one FMA each.

// (own min/max: std:: templates instantiated here could be shared, as AVX code, with baseline callers)
inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t imax(int64_t a, int64_t b) { return a > b ? a : b; }

// ------------------------------------------------------------------------------------- constant mat-vec
template <int M>
struct BTRows {
  static constexpr int alpha = M + 2;
  static constexpr int cols = M + 2;
  static constexpr float get(int i, int k) { return WinogradMatrices<M>::BT[i][k]; }
};
template <int M>
struct ATRows {
  static constexpr int cols = M + 2;
  static constexpr float get(int i, int k) { return WinogradMatrices<M>::AT[i][k]; }
};

template <class Mat>
constexpr bool nonzero_from(int i, int k) {
  for (int j = k; j < Mat::cols; ++j)
    if (Mat::get(i, j) != 0.0f) return true;
  return false;
}

// sum_{k' >= K} Mat[I][k'] * x[k'] (row I has a non-zero at or after K)
template <class Mat, int I, int K>
inline Vec rowdot(const Vec* x) {
  constexpr float c = Mat::get(I, K);
  if constexpr (c == 0.0f) {
    return rowdot<Mat, I, K + 1>(x);
  } else if constexpr (!nonzero_from<Mat>(I, K + 1)) {
    if constexpr (c == 1.0f) return x[K];
    else if constexpr (c == -1.0f) return vneg(x[K]);
    else return vmul(vset1(c), x[K]);
  } else {
    const Vec rest = rowdot<Mat, I, K + 1>(x);
    if constexpr (c == 1.0f) return vadd(rest, x[K]);
    else if constexpr (c == -1.0f) return vsub(rest, x[K]);
    else return vfmadd(vset1(c), x[K], rest);
  }
}

template <class Mat, int... I>
inline void matvec(const Vec* x, Vec* y, std::integer_sequence<int, I...>) {
  ((y[I] = rowdot<Mat, I, 0>(x)), ...);
}

// ------------------------------------------------------------------------------------- input transform
// V = BT d BT^T for one alpha x alpha tile of one channel vector.
template <int M>
inline void input_tile(const float* src, int64_t rs, int64_t cs, float* v, int64_t ps) {
  constexpr int A = M + 2;
  Vec t[A][A];
#pragma GCC unroll 8
  for (int j = 0; j < A; ++j) {
    Vec col[A], out[A];
#pragma GCC unroll 8
    for (int i = 0; i < A; ++i) col[i] = vload(src + i * rs + j * cs);
    matvec<BTRows<M>>(col, out, std::make_integer_sequence<int, A>{});
#pragma GCC unroll 8
    for (int i = 0; i < A; ++i) t[i][j] = out[i];
  }
#pragma GCC unroll 8
  for (int i = 0; i < A; ++i) {
    Vec out[A];
    matvec<BTRows<M>>(t[i], out, std::make_integer_sequence<int, A>{});
#pragma GCC unroll 8
    for (int j = 0; j < A; ++j) vstore(v + (i * A + j) * ps, out[j]);
  }
}

template <int M>
void input_transform(const float* src, int64_t rs, int64_t cs, int64_t count, float* v, int64_t ps, int64_t ts) {
  for (int64_t k = 0; k < count; ++k) input_tile<M>(src + k * M * cs, rs, cs, v + k * ts, ps);
}

// ------------------------------------------------------------------------------------- output transform
struct ActParams {
  Vec alpha, lo, hi;
};

template <Activation ACT>
inline Vec apply_act(Vec x, const ActParams& a) {
  if constexpr (ACT == Activation::kRelu) return vmax(x, vzero());
  else if constexpr (ACT == Activation::kClip) return vmin(vmax(x, a.lo), a.hi);
  else if constexpr (ACT == Activation::kLeakyRelu) return vmin(vmax(vselect_neg(x, vmul(x, a.alpha)), a.lo), a.hi);
  else return x;
}

// Y = AT Mb AT^T (+ bias, activation) for one tile of one output channel vector.
template <int M, Activation ACT>
inline void output_tile(const float* mb, int64_t ps, Vec bias, const ActParams& ap, float* dst, int64_t rs,
                        int64_t cs) {
  constexpr int A = M + 2;
  Vec t[M][A];
#pragma GCC unroll 8
  for (int j = 0; j < A; ++j) {
    Vec col[A], out[M];
#pragma GCC unroll 8
    for (int i = 0; i < A; ++i) col[i] = vload(mb + (i * A + j) * ps);
    matvec<ATRows<M>>(col, out, std::make_integer_sequence<int, M>{});
#pragma GCC unroll 8
    for (int i = 0; i < M; ++i) t[i][j] = out[i];
  }
#pragma GCC unroll 8
  for (int i = 0; i < M; ++i) {
    Vec out[M];
    matvec<ATRows<M>>(t[i], out, std::make_integer_sequence<int, M>{});
#pragma GCC unroll 8
    for (int j = 0; j < M; ++j) vstore(dst + i * rs + j * cs, apply_act<ACT>(vadd(out[j], bias), ap));
  }
}

template <int M, Activation ACT>
void output_tiles(const float* mb, int64_t ps, int64_t ts, int64_t count, Vec bias, const ActParams& ap, float* dst,
                  int64_t rs, int64_t cs) {
  for (int64_t k = 0; k < count; ++k) output_tile<M, ACT>(mb + k * ts, ps, bias, ap, dst + k * M * cs, rs, cs);
}

// Activations (Epilogue): kRelu max(v, 0); kClip min(max(v, lo), hi); kLeakyRelu v < 0 ? alpha v : v, then clipped
// to [lo, hi] (+-inf when there is no clip).
template <int M>
void output_transform(const float* mb, int64_t ps, int64_t ts, int64_t count, const float* bias, const Epilogue& ep,
                      float* dst, int64_t rs, int64_t cs) {
  const Vec b = bias ? vload(bias) : vzero();
  const ActParams ap{vset1(ep.alpha), vset1(ep.lo), vset1(ep.hi)};
  switch (ep.act) {
    case Activation::kRelu: output_tiles<M, Activation::kRelu>(mb, ps, ts, count, b, ap, dst, rs, cs); break;
    case Activation::kClip: output_tiles<M, Activation::kClip>(mb, ps, ts, count, b, ap, dst, rs, cs); break;
    case Activation::kLeakyRelu:
      output_tiles<M, Activation::kLeakyRelu>(mb, ps, ts, count, b, ap, dst, rs, cs);
      break;
    default: output_tiles<M, Activation::kNone>(mb, ps, ts, count, b, ap, dst, rs, cs); break;
  }
}

// ------------------------------------------------------------------------------------- GEMM slices
// Prefetches into L2 lines k * pfl .. k * pfl + pfl - 1 (64 bytes each, pfl <= 4) from pf: a micro-kernel's share,
// at its step k, of what follows its slice of U.
inline void prefetch_share(const char* pf, int64_t k, int pfl) {
  if (pfl <= 0) return;
  const char* q = pf + k * pfl * 64;
  __builtin_prefetch(q, 0, 2);  // locality 2: prefetcht1
  if (pfl > 1) __builtin_prefetch(q + 64, 0, 2);
  if (pfl > 2) __builtin_prefetch(q + 128, 0, 2);
  if (pfl > 3) __builtin_prefetch(q + 192, 0, 2);
}

// One slice of a Winograd GEMM: C[rows x w] (+)= A[rows x kn] @ B, B the kn x w floats of U at bs, the rows in
// micro-tiles of mr (micro(r): the micro-kernel for r rows). Each call also prefetches into L2 its part of what
// follows the slice in U (the next chunk, strip or position), kn * pfl lines with pfl <= max_pfl spreading the
// slice's size over the row blocks: U streams from L3 or memory, and one row block alone cannot hide that. A part
// that would pass U's end (u_bytes from u) is not prefetched.
template <class Micro>
void gemm_slice(const Micro& micro, int mr, int64_t rows, int64_t kn, int64_t w, int max_pfl, const float* a,
                int64_t lda, const float* bs, float* c, int64_t ldc, const float* u, int64_t u_bytes) {
  const int64_t blocks = (rows + mr - 1) / mr, lines = kn * w / 16;
  const int pfl = static_cast<int>(imin(max_pfl, (lines + blocks * kn - 1) / (blocks * kn)));
  const int64_t part = kn * pfl * 64;
  int64_t at = (bs - u) * 4 + kn * w * 4;  // bytes from u
  const auto full = micro(mr);
  for (int64_t r0 = 0; r0 < rows; r0 += mr, at += part) {
    const bool inside = at + part <= u_bytes;
    const char* pf = inside ? reinterpret_cast<const char*>(u) + at : nullptr;
    const auto fn = r0 + mr <= rows ? full : micro(static_cast<int>(rows - r0));
    fn(kn, a + r0 * lda, lda, bs, w, c + r0 * ldc, ldc, pf, inside ? pfl : 0);
  }
}

// ------------------------------------------------------------------------------------- NCHW gather / scatter
// Scalar forms (edges, and the whole job where an ISA has nothing better).
inline void gather_nchw_generic(const float* x, int64_t plane, int64_t H, int64_t W, int64_t channels, int64_t iy0,
                                int64_t ix0, int64_t rows, int64_t width, float* dst, int64_t drs) {
  const int64_t jlo = imin(width, imax(0, -ix0));
  const int64_t jhi = imax(jlo, imin(width, W - ix0));
  for (int64_t i = 0; i < rows; ++i) {
    float* d = dst + i * drs;
    const int64_t iy = iy0 + i;
    if (iy < 0 || iy >= H) {
      for (int64_t q = 0; q < width * kVL; ++q) d[q] = 0.0f;
      continue;
    }
    for (int64_t q = 0; q < jlo * kVL; ++q) d[q] = 0.0f;
    for (int64_t q = jhi * kVL; q < width * kVL; ++q) d[q] = 0.0f;
    for (int64_t c = 0; c < kVL; ++c) {
      if (c < channels) {
        const float* s = x + c * plane + iy * W;
        for (int64_t j = jlo; j < jhi; ++j) d[j * kVL + c] = s[ix0 + j];
      } else {
        for (int64_t j = jlo; j < jhi; ++j) d[j * kVL + c] = 0.0f;
      }
    }
  }
}

inline void scatter_nchw_generic(const float* src, int64_t srs, int64_t rows, int64_t width, int64_t channels,
                                 float* y, int64_t plane, int64_t ldy) {
  for (int64_t c = 0; c < channels; ++c)
    for (int64_t i = 0; i < rows; ++i) {
      float* d = y + c * plane + i * ldy;
      const float* s = src + i * srs + c;
      for (int64_t j = 0; j < width; ++j) d[j] = s[j * kVL];
    }
}
