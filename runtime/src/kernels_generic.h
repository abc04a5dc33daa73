// ISA-neutral kernel pieces, included by each kernels_<isa>.cc inside its `#pragma GCC target`
// region and an anonymous namespace, so every ISA gets its own (auto-vectorized) copy with internal
// linkage. Only include standard headers *before* the pragma region, never from here.
//
// Requires, in the including file: constexpr int kMR, kNR; micro-kernels
//   void micro_kernel(int rows, int cols, int64_t kc, const float* a, const float* b, float* c,
//                     int64_t ldc, const float* bias, bool accumulate, bool relu);
//   void micro_kernel_direct(int rows, int cols, int64_t kc, const float* a, int64_t lda, const float* b,
//                            float* c, int64_t ldc, const float* bias, bool accumulate, bool relu);
// computing C[0:rows, 0:cols] = act(A(rows x kc) @ B_strip(kc x kNR) + (accumulate ? C : bias or 0)),
// act = relu ? max(., 0) : identity (bias: the tile's first column's entry, or nullptr), with A a packed
// micro-panel (kc x kMR, pack_a) or read in place (row-major, lda).

constexpr int64_t kKC = 128;               // rows of B per panel
constexpr int64_t kNC = kNR * 8;           // columns of B per panel (kKC * kNC floats stay in L2)

// Per-thread scratch buffers live in common.cc (compiled for baseline x86-64): growing a std::vector here
// would instantiate its library templates inside the ISA pragma region, and the linker may keep that AVX
// copy of the shared (COMDAT) template for every caller, breaking the library on CPUs without AVX.
inline float* scratch(size_t n, int slot) { return thread_scratch(n, slot); }

inline uint32_t read_code(const uint8_t* row, int64_t j, int bits) {
  const int64_t bit = j * bits;
  const int64_t byte = bit >> 3;
  const int sh = static_cast<int>(bit & 7);
  uint32_t v = static_cast<uint32_t>(row[byte]) >> sh;
  if (sh + bits > 8) v |= static_cast<uint32_t>(row[byte + 1]) << (8 - sh);
  return v & ((1u << bits) - 1u);
}

// Unpacks codes j0 .. j0+count-1 of a packed row into bytes; (j0 * bits) % 8 == 0.
inline void unpack_codes(const uint8_t* row, int64_t j0, int64_t count, int bits, uint8_t* out) {
  const uint8_t* p = row + ((j0 * bits) >> 3);
  switch (bits) {
    case 8:
      for (int64_t i = 0; i < count; ++i) out[i] = p[i];
      return;
    case 4: {
      int64_t i = 0;
      for (; i + 2 <= count; i += 2) {
        const uint8_t b = p[i >> 1];
        out[i] = b & 15;
        out[i + 1] = b >> 4;
      }
      if (i < count) out[i] = p[i >> 1] & 15;
      return;
    }
    case 2: {
      int64_t i = 0;
      for (; i + 4 <= count; i += 4) {
        const uint8_t b = p[i >> 2];
        out[i] = b & 3;
        out[i + 1] = (b >> 2) & 3;
        out[i + 2] = (b >> 4) & 3;
        out[i + 3] = b >> 6;
      }
      for (; i < count; ++i) out[i] = (p[i >> 2] >> (2 * (i & 3))) & 3;
      return;
    }
    case 1: {
      int64_t i = 0;
      for (; i + 8 <= count; i += 8) {
        const uint8_t b = p[i >> 3];
        for (int t = 0; t < 8; ++t) out[i + t] = (b >> t) & 1;
      }
      for (; i < count; ++i) out[i] = (p[i >> 3] >> (i & 7)) & 1;
      return;
    }
    default: {
      const uint32_t mask = (1u << bits) - 1u;
      uint32_t acc = 0;
      int have = 0;
      int64_t byte = 0;
      for (int64_t i = 0; i < count; ++i) {
        while (have < bits) {
          acc |= static_cast<uint32_t>(p[byte++]) << have;
          have += 8;
        }
        out[i] = static_cast<uint8_t>(acc & mask);
        acc >>= bits;
        have -= bits;
      }
      return;
    }
  }
}

// Generic codebook panel: unpack the row segment, then look each code up in its group's codebook.
void codebook_panel_generic(const void* ctx, int64_t k0, int64_t kc, int64_t n0, int64_t nc, int nr,
                            float* panel) {
  const CodebookWeights& w = *static_cast<const CodebookWeights*>(ctx);
  const int64_t entries = int64_t{1} << w.bits;
  const int64_t strips = (nc + nr - 1) / nr;
  const int64_t width = strips * nr;
  // per-column codebook offsets, constant over k
  int32_t* goff = reinterpret_cast<int32_t*>(scratch(static_cast<size_t>(width), 1));
  for (int64_t j = 0; j < nc; ++j) goff[j] = static_cast<int32_t>(((n0 + j) / w.group_size) * entries);
  uint8_t* codes = reinterpret_cast<uint8_t*>(scratch(static_cast<size_t>(width / 4 + 16), 2));
  for (int64_t kk = 0; kk < kc; ++kk) {
    const uint8_t* row = w.codes + (k0 + kk) * w.row_bytes;
    unpack_codes(row, n0, nc, w.bits, codes);
    for (int64_t s = 0; s < strips; ++s) {
      float* dst = panel + (s * kc + kk) * nr;
      const int64_t jb = s * nr;
      const int64_t je = std::min<int64_t>(nc - jb, nr);
      for (int64_t j = 0; j < je; ++j) dst[j] = w.codebook[goff[jb + j] + codes[jb + j]];
      for (int64_t j = je; j < nr; ++j) dst[j] = 0.0f;
    }
  }
}

// Implicit im2col: row kk = (c, kd, kh, kw) of the unfolded input, column = output position.
void im2col_panel_generic(const void* ctx, int64_t k0, int64_t kc, int64_t n0, int64_t nc, int nr, float* panel) {
  const ConvGeometry& g = *static_cast<const ConvGeometry*>(ctx);
  const int64_t strips = (nc + nr - 1) / nr;
  const int64_t in_plane = g.in[0] * g.in[1] * g.in[2];
  for (int64_t kk = 0; kk < kc; ++kk) {
    const int64_t r = k0 + kk;
    const int64_t c = r / g.kernel_size;
    int64_t rem = r % g.kernel_size;
    const int64_t kx = rem % g.k[2];
    rem /= g.k[2];
    const int64_t ky = rem % g.k[1];
    const int64_t kz = rem / g.k[1];
    const float* xc = g.x + c * in_plane;
    // output position of column n0
    int64_t ox = n0 % g.out[2];
    int64_t t = n0 / g.out[2];
    int64_t oy = t % g.out[1];
    int64_t oz = t / g.out[1];
    const int64_t dz = kz * g.d[0] - g.pad[0], dy = ky * g.d[1] - g.pad[1], dx = kx * g.d[2] - g.pad[2];
    for (int64_t s = 0; s < strips; ++s) {
      float* dst = panel + (s * kc + kk) * nr;
      const int64_t je = std::min<int64_t>(nc - s * nr, nr);
      int64_t j = 0;
      while (j < je) {
        const int64_t iz = oz * g.s[0] + dz, iy = oy * g.s[1] + dy;
        // run of columns along x within this output row
        const int64_t run = std::min<int64_t>(je - j, g.out[2] - ox);
        if (iz < 0 || iz >= g.in[0] || iy < 0 || iy >= g.in[1]) {
          for (int64_t q = 0; q < run; ++q) dst[j + q] = 0.0f;
        } else {
          const float* xrow = xc + (iz * g.in[1] + iy) * g.in[2];
          const int64_t ix = ox * g.s[2] + dx;
          float* out = dst + j;
          if (g.s[2] == 1) {
            // [zeros left of the input][contiguous copy][zeros right of it]
            const int64_t lead = std::min<int64_t>(run, std::max<int64_t>(0, -ix));
            const int64_t body = std::max<int64_t>(0, std::min<int64_t>(run, g.in[2] - ix) - lead);
            for (int64_t q = 0; q < lead; ++q) out[q] = 0.0f;
            if (body > 0) {
              const float* src = xrow + ix + lead;
              for (int64_t q = 0; q < body; ++q) out[lead + q] = src[q];
            }
            for (int64_t q = lead + body; q < run; ++q) out[q] = 0.0f;
          } else {
            int64_t xi = ix;
            for (int64_t q = 0; q < run; ++q, xi += g.s[2]) out[q] = (xi >= 0 && xi < g.in[2]) ? xrow[xi] : 0.0f;
          }
        }
        j += run;
        ox += run;
        if (ox == g.out[2]) {
          ox = 0;
          if (++oy == g.out[1]) {
            oy = 0;
            ++oz;
          }
        }
      }
      for (; j < nr; ++j) dst[j] = 0.0f;
    }
  }
}

void pack_a_generic(int64_t M, int64_t K, const float* a, int64_t lda, float* out) {
  for (int64_t i = 0; i < M; i += kMR) {
    float* dst = out + (i / kMR) * K * kMR;
    const int64_t rows = std::min<int64_t>(kMR, M - i);
    for (int64_t k = 0; k < K; ++k) {
      int64_t r = 0;
      for (; r < rows; ++r) dst[k * kMR + r] = a[(i + r) * lda + k];
      for (; r < kMR; ++r) dst[k * kMR + r] = 0.0f;
    }
  }
}

void gemm_generic(int64_t M, int64_t K, const float* ap, PanelFn fill_b, const void* b_ctx, float* c, int64_t ldc,
                  int64_t n0, int64_t n1, bool accumulate) {
  if (M <= 0 || n1 <= n0) return;
  if (K == 0) {
    if (!accumulate)
      for (int64_t m = 0; m < M; ++m) std::fill(c + m * ldc + n0, c + m * ldc + n1, 0.0f);
    return;
  }
  float* panel = scratch(static_cast<size_t>(kKC * kNC), 0);
  const int64_t mpanels = (M + kMR - 1) / kMR;
  for (int64_t nb = n0; nb < n1; nb += kNC) {
    const int64_t nc = std::min<int64_t>(kNC, n1 - nb);
    const int64_t strips = (nc + kNR - 1) / kNR;
    for (int64_t kb = 0; kb < K; kb += kKC) {
      const int64_t kc = std::min<int64_t>(kKC, K - kb);
      fill_b(b_ctx, kb, kc, nb, nc, kNR, panel);
      const bool acc = accumulate || kb > 0;
      for (int64_t s = 0; s < strips; ++s) {
        const int cols = static_cast<int>(std::min<int64_t>(kNR, nc - s * kNR));
        const float* bs = panel + s * kc * kNR;
        for (int64_t i = 0; i < mpanels; ++i) {
          const int rows = static_cast<int>(std::min<int64_t>(kMR, M - i * kMR));
          micro_kernel(rows, cols, kc, ap + i * K * kMR + kb * kMR, bs, c + i * kMR * ldc + nb + s * kNR, ldc, nullptr,
                       acc, false);
        }
      }
    }
  }
}

// GEMM with A read in place and B packed whole (packed_b_floats) or decoded block by block into a scratch panel.
// Blocking: kPKC rows of B (an A micro-panel, kMR x kPKC floats, stays in L1 while it meets every strip of a block)
// by kPNC columns (the kPKC x kPNC block of B stays in L2 while every A micro-panel meets it); each C tile is touched
// once per k block: bias on the first, relu on the last.
// Measured on Zen 4 (1 MB L2), 4096^2 and 384 x 1536 layers, 32 and 256 rows: 384 x 384 within 2% of the best of
// kc 256..512 x nc 4..16 strips of 48.
constexpr int64_t kPKC = 384;
constexpr int64_t kPNC = 384;
static_assert(kPNC % kNR == 0, "whole strips per block");

void gemm_rows_generic(int64_t M, int64_t K, const float* a, int64_t lda, const float* bp, PanelFn fill_b,
                       const void* b_ctx, const float* bias, bool relu, float* c, int64_t ldc, int64_t n0, int64_t n1) {
  if (M <= 0 || n1 <= n0) return;
  if (K == 0) {
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = n0; n < n1; ++n) {
        const float v = bias != nullptr ? bias[n] : 0.0f;
        c[m * ldc + n] = relu && v < 0.0f ? 0.0f : v;
      }
    return;
  }
  float* panel = bp == nullptr ? scratch(static_cast<size_t>(kPKC * kPNC), 0) : nullptr;
  // rows and depth split evenly: 17 rows run as 6 + 6 + 5 (not 8 + 8 + 1), K = 512 as 256 + 256 (not 384 + 128)
  const int64_t mpanels = (M + kMR - 1) / kMR, mbase = M / mpanels, mextra = M % mpanels;
  const int64_t kblocks = (K + kPKC - 1) / kPKC, kstep = (K + kblocks - 1) / kblocks;
  for (int64_t nb = n0; nb < n1; nb += kPNC) {
    const int64_t nc = std::min<int64_t>(kPNC, n1 - nb);
    const int64_t strips = (nc + kNR - 1) / kNR;
    for (int64_t kb = 0; kb < K; kb += kstep) {
      const int64_t kc = std::min<int64_t>(kstep, K - kb);
      const bool first = kb == 0, last = kb + kc == K;
      // strip s of this block starts at b0 + s * bstride (rows kb .. kb + kc)
      const float* b0;
      int64_t bstride;
      if (bp != nullptr) {
        b0 = bp + (nb / kNR) * K * kNR + kb * kNR;
        bstride = K * kNR;
      } else {
        fill_b(b_ctx, kb, kc, nb, nc, kNR, panel);
        b0 = panel;
        bstride = kc * kNR;
      }
      for (int64_t i = 0, m = 0; i < mpanels; ++i) {
        const int rows = static_cast<int>(mbase + (i < mextra ? 1 : 0));
        const float* ai = a + m * lda + kb;
        float* ci = c + m * ldc + nb;
        m += rows;
        for (int64_t s = 0; s < strips; ++s) {
          const int cols = static_cast<int>(std::min<int64_t>(kNR, nc - s * kNR));
          const float* bias_s = first && bias != nullptr ? bias + nb + s * kNR : nullptr;
          micro_kernel_direct(rows, cols, kc, ai, lda, b0 + s * bstride, ci + s * kNR, ldc, bias_s, !first,
                              relu && last);
        }
      }
    }
  }
}

void sparse_gemv_generic(const float* x, const SparseWeights& w, int64_t k0, int64_t k1, float* y) {
  const int64_t entries = int64_t{1} << w.bits;
  const uint32_t dmask = (1u << w.index_bits) - 1u;
  const uint32_t cmask = (1u << w.bits) - 1u;
  for (int64_t k = k0; k < k1; ++k) {
    const float xk = x[k];
    if (xk == 0.0f) continue;
    int64_t p = -1;
    for (int64_t e = w.row_ptr[k]; e < w.row_ptr[k + 1]; ++e) {
      const int64_t db = e * w.index_bits;
      uint32_t d = static_cast<uint32_t>(w.deltas[db >> 3]) >> (db & 7);
      d &= dmask;
      const uint32_t code = read_code(w.codes, e, w.bits) & cmask;
      p += static_cast<int64_t>(d) + 1;
      y[p] += xk * w.codebook[(p / w.group_size) * entries + code];
    }
  }
}

void decode_rows_generic(const uint8_t* codes, int64_t row_bytes, int64_t row0, int64_t rows, int64_t n, int bits,
                         const float* codebook, int64_t group_size, float* out) {
  const int64_t entries = int64_t{1} << bits;
  uint8_t* buf = reinterpret_cast<uint8_t*>(scratch(static_cast<size_t>(n / 4 + 16), 2));
  for (int64_t i = 0; i < rows; ++i) {
    const int64_t m = row0 + i;
    unpack_codes(codes + m * row_bytes, 0, n, bits, buf);
    const float* cb = codebook + (m / group_size) * entries;
    float* o = out + i * n;
    for (int64_t j = 0; j < n; ++j) o[j] = cb[buf[j]];
  }
}
