// Winograd convolution driver: weight transform and packing (once), tile blocking, layouts, threading.
// The arithmetic lives in the per-ISA kernels (winograd_<isa>.cc); this file is baseline x86-64.
#include "winograd.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>
#include <vector>

#include "winograd_isa.h"
#include "winograd_matrices.h"

namespace onnxcomp {
namespace conv {

// ------------------------------------------------------------------------------------- AlignedBuffer
AlignedBuffer& AlignedBuffer::operator=(AlignedBuffer&& o) noexcept {
  if (this != &o) {
    std::free(p_);
    p_ = o.p_;
    n_ = o.n_;
    o.p_ = nullptr;
    o.n_ = 0;
  }
  return *this;
}

AlignedBuffer::~AlignedBuffer() { std::free(p_); }

void AlignedBuffer::resize(size_t n) {
  if (n == n_) return;
  std::free(p_);
  p_ = nullptr;
  n_ = 0;
  if (n == 0) return;
  const size_t bytes = ((n * sizeof(float) + 63) / 64) * 64;
  void* p = std::aligned_alloc(64, bytes);
  if (p == nullptr) throw std::bad_alloc();
  p_ = static_cast<float*>(p);
  n_ = n;
}

namespace {

// Tile blocks: the transformed input and GEMM output of a block (alpha^2 x tiles x (C + M) floats) should stay in
// L2 (kBlockBytes), but every block streams all the transformed weights U once: when U is larger than L2, a block
// gets kMaxBlockTiles tiles (each U element then serves that many multiply-adds, and the block's V and M live in L3
// instead, which the GEMM, at C / 4 flops per byte of them, does not notice). Measured on an Intel Xeon (1 thread),
// 512 channels at 28x28, F(4,3): 49 tiles as blocks of 48 + 1 streamed U (38 MB) twice, 12.9 ms; one block with the
// GEMM's K chunks and U prefetch, 8.6 ms.
constexpr int64_t kBlockBytes = 640 * 1024;
constexpr int64_t kL2Bytes = 1024 * 1024;
constexpr int64_t kMaxBlockTiles = 96;

int64_t round_up(int64_t a, int64_t b) { return (a + b - 1) / b * b; }

template <int M>
const double* g_matrix() {
  return &WinogradMatrices<M>::G[0][0];
}

// Per-thread scratch, grown on demand and kept for the next run on the same thread.
float* scratch(size_t n) {
  thread_local AlignedBuffer buf;
  if (buf.size() < n) buf.resize(n);
  return buf.data();
}

}  // namespace

WinogradConv::WinogradConv(int m, int64_t C, int64_t M, const float* weight, const char* isa)
    : m_(m), alpha_(m + 2), C_(C), M_(M) {
  if (!tile_supported(m)) throw std::invalid_argument("Winograd tile must be 2, 4 or 6");
  if (C < 1 || M < 1) throw std::invalid_argument("Winograd convolution needs C >= 1 and M >= 1");
  isa_ = isa ? &winograd_isa(isa) : &winograd_isa_default();
  const int64_t vl = isa_->vl, nr = isa_->nr;
  Cpad_ = round_up(C, vl);
  Mpad_ = round_up(M, vl);
  const int A = alpha_;
  const double* G = m == 2 ? g_matrix<2>() : m == 4 ? g_matrix<4>() : g_matrix<6>();
  u_.resize(static_cast<size_t>(A * A * C * Mpad_));
  std::fill(u_.data(), u_.data() + u_.size(), 0.0f);
  // U[o, c] = G W[o, c] G^T in double, rounded once; packed as [p][strip][c][width]
  std::vector<double> gw(static_cast<size_t>(A) * 3);
  for (int64_t o = 0; o < M; ++o) {
    const int64_t s0 = o / nr * nr, w = std::min<int64_t>(nr, Mpad_ - s0), j = o - s0;
    for (int64_t c = 0; c < C; ++c) {
      const float* wk = weight + (o * C + c) * 9;
      for (int i = 0; i < A; ++i)
        for (int b = 0; b < 3; ++b) {
          double acc = 0.0;
          for (int a = 0; a < 3; ++a) acc += G[i * 3 + a] * static_cast<double>(wk[a * 3 + b]);
          gw[i * 3 + b] = acc;
        }
      for (int i = 0; i < A; ++i)
        for (int k = 0; k < A; ++k) {
          double acc = 0.0;
          for (int b = 0; b < 3; ++b) acc += gw[i * 3 + b] * G[k * 3 + b];
          const int64_t p = i * A + k;
          u_.data()[p * C * Mpad_ + s0 * C + c * w + j] = static_cast<float>(acc);
        }
    }
  }
}

WinogradConv::~WinogradConv() = default;

int WinogradConv::vector_width() const { return isa_->vl; }
const char* WinogradConv::isa_name() const { return isa_->name; }
size_t WinogradConv::packed_bytes() const { return u_.size() * sizeof(float); }

namespace {

// Channel vector [c0, c0 + vl) of an NCHWc tensor, window rows x width at (iy0, ix0), zero outside the plane.
void gather_nchwc(const float* x, int cb, int64_t H, int64_t W, int64_t iy0, int64_t ix0, int64_t rows,
                  int64_t width, int vl, float* dst, int64_t drs) {
  const int64_t jlo = std::min(width, std::max<int64_t>(0, -ix0));
  const int64_t jhi = std::max(jlo, std::min(width, W - ix0));
  for (int64_t i = 0; i < rows; ++i) {
    float* d = dst + i * drs;
    const int64_t iy = iy0 + i;
    if (iy < 0 || iy >= H) {
      std::memset(d, 0, sizeof(float) * width * vl);
      continue;
    }
    std::memset(d, 0, sizeof(float) * jlo * vl);
    std::memset(d + jhi * vl, 0, sizeof(float) * (width - jhi) * vl);
    const float* s = x + iy * W * cb;
    for (int64_t j = jlo; j < jhi; ++j) std::memcpy(d + j * vl, s + (ix0 + j) * cb, sizeof(float) * vl);
  }
}

// Channel vectors -> NCHWc (channels >= valid written as 0).
void scatter_nchwc(const float* src, int64_t srs, int64_t rows, int64_t width, int vl, int64_t valid, float* y,
                   int cb, int64_t OW) {
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < width; ++j) {
      float* d = y + (i * OW + j) * cb;
      const float* s = src + i * srs + j * vl;
      if (valid >= vl) {
        std::memcpy(d, s, sizeof(float) * vl);
      } else {
        for (int c = 0; c < vl; ++c) d[c] = c < valid ? s[c] : 0.0f;
      }
    }
}

}  // namespace

void WinogradConv::run(const float* x, const TensorLayout& xl, int64_t N, int64_t H, int64_t W, const int64_t pads[4],
                       const Epilogue& ep, float* y, const TensorLayout& yl, const Parallel& par) const {
  const int m = m_, A = alpha_, mi = m == 2 ? 0 : m == 4 ? 1 : 2;
  const WinogradIsa& k = *isa_;
  const int vl = k.vl;
  if ((xl.kind == TensorLayout::kNCHWc && (xl.cblock < vl || xl.cblock % vl != 0)) ||
      (yl.kind == TensorLayout::kNCHWc && (yl.cblock < vl || yl.cblock % vl != 0)))
    throw std::invalid_argument("NCHWc block must be a multiple of the kernel set's vector width");
  const int64_t OH = H + pads[0] + pads[2] - 2, OW = W + pads[1] + pads[3] - 2;
  if (N <= 0 || OH <= 0 || OW <= 0) return;
  const int64_t tiles_y = (OH + m - 1) / m, tiles_x = (OW + m - 1) / m, per_image = tiles_y * tiles_x;
  const int64_t T = N * per_image, A2 = int64_t{A} * A;
  const int64_t C = C_, M = M_, Cpad = Cpad_, Mpad = Mpad_;
  const int64_t per_tile = A2 * (Cpad + Mpad) * static_cast<int64_t>(sizeof(float));
  int64_t tb = std::clamp<int64_t>(kBlockBytes / per_tile / k.mr * k.mr, k.mr, kMaxBlockTiles);
  if (static_cast<int64_t>(u_.size() * sizeof(float)) > kL2Bytes) tb = kMaxBlockTiles;
  tb = std::min(tb, round_up(T, k.mr));
  const int64_t nblocks = (T + tb - 1) / tb;
  // blocks of equal size (to the micro-tile): a last block of a few tiles would stream all of U for them alone
  tb = std::min(tb, round_up((T + nblocks - 1) / nblocks, k.mr));
  // output channel vectors to write: NCHWc pads the last block with zeros
  const int64_t out_vecs = (yl.kind == TensorLayout::kNCHWc ? round_up(M, yl.cblock) : Mpad) / vl;
  const int64_t xcb = xl.kind == TensorLayout::kNCHWc ? xl.cblock : 1;
  const int64_t ycb = yl.kind == TensorLayout::kNCHWc ? yl.cblock : 1;
  const int64_t x_image = xl.kind == TensorLayout::kNCHWc ? round_up(C, xcb) * H * W : C * H * W;
  const int64_t y_image = yl.kind == TensorLayout::kNCHWc ? round_up(M, ycb) * OH * OW : M * OH * OW;
  std::vector<float> bias(static_cast<size_t>(out_vecs * vl), 0.0f);
  if (ep.bias) std::copy(ep.bias, ep.bias + M, bias.begin());
  const float* u = u_.data();

  const size_t v_size = static_cast<size_t>(A2 * tb * Cpad), m_size = static_cast<size_t>(A2 * tb * Mpad);
  const int64_t seg_max = std::min(tb, tiles_x);
  const size_t in_size = static_cast<size_t>(A * (seg_max * m + 2) * vl);
  const size_t out_size = static_cast<size_t>(m * seg_max * m * vl);
  auto task = [&](size_t bi) {
    float* V = scratch(v_size + m_size + in_size + out_size);
    float* Mb = V + v_size;
    float* inbuf = Mb + m_size;
    float* outbuf = inbuf + in_size;
    const int64_t t0 = static_cast<int64_t>(bi) * tb, cnt = std::min(tb, T - t0);
    // 1. input transform, one tile-row segment at a time
    for (int64_t t = t0; t < t0 + cnt;) {
      const int64_t n = t / per_image, r = t % per_image, ty = r / tiles_x, tx = r % tiles_x;
      const int64_t seg = std::min(tiles_x - tx, t0 + cnt - t);
      const int64_t iy0 = ty * m - pads[0], ix0 = tx * m - pads[1], width = seg * m + 2;
      for (int64_t c0 = 0; c0 < Cpad; c0 += vl) {
        if (xl.kind == TensorLayout::kNCHWc) {
          const float* xs = x + n * x_image + (c0 / xcb) * H * W * xcb + c0 % xcb;
          gather_nchwc(xs, static_cast<int>(xcb), H, W, iy0, ix0, A, width, vl, inbuf, width * vl);
        } else {
          k.gather_nchw(x + (n * C + c0) * H * W, H * W, H, W, std::min<int64_t>(vl, C - c0), iy0, ix0, A, width,
                        inbuf, width * vl);
        }
        k.input_transform[mi](inbuf, width * vl, vl, seg, V + (t - t0) * Cpad + c0, tb * Cpad, Cpad);
      }
      t += seg;
    }
    // 2. the alpha^2 GEMMs
    k.gemm(A2, cnt, C, Mpad, V, tb * Cpad, Cpad, u, C * Mpad, Mb, tb * Mpad, Mpad);
    // 3. output transform (+ bias, activation), scattered into Y
    for (int64_t t = t0; t < t0 + cnt;) {
      const int64_t n = t / per_image, r = t % per_image, ty = r / tiles_x, tx = r % tiles_x;
      const int64_t seg = std::min(tiles_x - tx, t0 + cnt - t);
      const int64_t oy0 = ty * m, ox0 = tx * m;
      const int64_t rows = std::min<int64_t>(m, OH - oy0), width = std::min(seg * m, OW - ox0);
      for (int64_t o = 0; o < out_vecs; ++o) {
        const int64_t c0 = o * vl;
        if (c0 < Mpad) {
          k.output_transform[mi](Mb + (t - t0) * Mpad + c0, tb * Mpad, Mpad, seg, bias.data() + c0, ep, outbuf,
                                 seg * m * vl, vl);
        }
        if (yl.kind == TensorLayout::kNCHWc) {
          float* yd = y + n * y_image + (c0 / ycb) * OH * OW * ycb + c0 % ycb + (oy0 * OW + ox0) * ycb;
          if (c0 >= Mpad) std::memset(outbuf, 0, sizeof(float) * out_size);
          scatter_nchwc(outbuf, seg * m * vl, rows, width, vl, M - c0, yd, static_cast<int>(ycb), OW);
        } else {
          k.scatter_nchw(outbuf, seg * m * vl, rows, width, std::min<int64_t>(vl, M - c0),
                         y + (n * M + c0) * OH * OW + oy0 * OW + ox0, OH * OW, OW);
        }
      }
      t += seg;
    }
  };
  par.for_each(static_cast<size_t>(nblocks), task);
}

}  // namespace conv
}  // namespace onnxcomp
