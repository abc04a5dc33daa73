// Winograd F(m x m, 3 x 3) convolution (m = 2, 4 or 6): 3x3 kernel, stride 1, dilation 1, one group, any
// pads, any batch, float32.
//
//   Y[n, o] = act(sum_c conv3x3(X[n, c], W[o, c]) + bias[o])
//
// computed tile by tile as Y_tile = AT [sum_c U[o, c] . V[c]] AT^T with U = G W G^T (the weights, transformed
// once, at construction) and V = BT d BT^T (the alpha x alpha input tile d, alpha = m + 2): per tile,
// alpha^2 (instead of 9 m^2) multiplies per input/output channel pair, i.e. 2.25x (F(2,3)), 4x (F(4,3)),
// 5.06x (F(6,3)) fewer than direct convolution. The matrices are generated from the exact Toom-Cook
// construction (winograd_matrices.h); rounding grows with m: F(6,3) is the least accurate (see OPS.md).
//
// Data flow per block of tiles (one task of the Parallel; the block's working set stays in L2):
//  1. input transform, fused with gathering the tiles from the source layout (NCHW: a transpose of each
//     tile row into channel vectors; NCHWc: a strided copy) and zero padding outside the image:
//     V[p][tile][c] for the alpha^2 positions p;
//  2. alpha^2 GEMMs M_p[tile][o] = V_p[tile][:] @ U_p[:, o], with a register-blocked micro-kernel over
//     weights pre-packed as U[p][strip of nr output channels][c][nr];
//  3. output transform, fused with bias, activation and the scatter into the destination layout.
#pragma once

#include <cstdint>
#include <memory>

#include "conv.h"

namespace onnxcomp {
namespace conv {

struct WinogradIsa;  // per-instruction-set kernels (winograd_isa.h)

class WinogradConv {
 public:
  // weight: [M][C][3][3] float32 (copied; transformed and packed here). m: output tile size 2, 4 or 6.
  // isa: "avx512", "avx2" or "scalar" caps the kernel set; nullptr: the one the library uses (kernels()).
  WinogradConv(int m, int64_t C, int64_t M, const float* weight, const char* isa = nullptr);
  ~WinogradConv();
  WinogradConv(const WinogradConv&) = delete;
  WinogradConv& operator=(const WinogradConv&) = delete;

  static bool tile_supported(int m) { return m == 2 || m == 4 || m == 6; }

  int tile() const { return m_; }
  int64_t in_channels() const { return C_; }
  int64_t out_channels() const { return M_; }
  // Vector width of the kernel set: NCHWc layouts passed to run() need cblock % vector_width() == 0.
  int vector_width() const;
  const char* isa_name() const;
  size_t packed_bytes() const;  // transformed weights kept by this object

  // Y = act(conv3x3(X, W) + bias). X: [N, C, H, W] in layout xl; Y: [N, M, OH, OW] in layout yl with
  // OH = H + pad_top + pad_bottom - 2 and OW = W + pad_left + pad_right - 2 (the caller checks both >= 1).
  // pads: {top, left, bottom, right}. X and Y must not overlap. Thread-safe (const).
  void run(const float* x, const TensorLayout& xl, int64_t N, int64_t H, int64_t W, const int64_t pads[4],
           const Epilogue& ep, float* y, const TensorLayout& yl, const Parallel& par) const;

 private:
  int m_, alpha_;
  int64_t C_, M_, Cpad_, Mpad_;
  const WinogradIsa* isa_;
  AlignedBuffer u_;  // [alpha^2][strips][C][strip width]
};

// Multiplies the exact construction would do per output element (the direct 3x3 convolution does 9 per
// input channel): alpha^2 / m^2.
inline double winograd_mults_per_output(int m) { return double(m + 2) * (m + 2) / (double(m) * m); }

}  // namespace conv
}  // namespace onnxcomp
