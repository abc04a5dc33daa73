// The per-instruction-set pieces of the Winograd convolution (one table per ISA, picked like kernels()).
// Every function works on `vl` channels at a time ("a channel vector", vl floats contiguous).
#pragma once

#include <cstdint>

#include "conv.h"

namespace onnxcomp {
namespace conv {

struct WinogradIsa {
  const char* name;
  int vl;  // channels per vector
  int mr;  // GEMM micro-tile rows (tiles)
  int nr;  // packed weight strip width (output channels; a multiple of vl)

  // Input transform (index: 0 = F(2,3), 1 = F(4,3), 2 = F(6,3)) of `count` tiles of one channel vector.
  // Tile k's alpha x alpha patch: element (i, j) at src[i * row_stride + (k * m + j) * col_stride] (vl floats).
  // Writes position p = i * alpha + j of tile k at v[p * pos_stride + k * tile_stride] (vl floats).
  void (*input_transform[3])(const float* src, int64_t row_stride, int64_t col_stride, int64_t count, float* v,
                             int64_t pos_stride, int64_t tile_stride);

  // Output transform of `count` tiles of one output channel vector: reads mb[p * pos_stride + k * tile_stride],
  // adds bias (vl floats), applies the activation, writes tile k's element (i, j) (i, j < m) to
  // dst[i * row_stride + (k * m + j) * col_stride] (vl floats).
  void (*output_transform[3])(const float* mb, int64_t pos_stride, int64_t tile_stride, int64_t count,
                              const float* bias, const Epilogue& ep, float* dst, int64_t row_stride,
                              int64_t col_stride);

  // For each of `positions` positions p: Mb_p[rows x Mpad] = V_p[rows x K] @ U_p[K x Mpad], where
  // V_p row r is v + p * v_pos + r * lda, U_p is u + p * u_pos packed in strips of nr columns
  // (strip s: [K][w_s] at u + p * u_pos + s * nr * K, w_s = min(nr, Mpad - s * nr)), and Mb_p row r is
  // mb + p * m_pos + r * ldc. Mpad is a multiple of vl.
  void (*gemm)(int64_t positions, int64_t rows, int64_t K, int64_t Mpad, const float* v, int64_t v_pos,
               int64_t lda, const float* u, int64_t u_pos, float* mb, int64_t m_pos, int64_t ldc);

  // NCHW -> channel vectors: dst[i * dst_row + j * vl + c] = X[c, iy0 + i, ix0 + j] for i < rows, j < width,
  // c < vl, where X[c] = x + c * plane is an H x W plane; 0 outside the plane or for c >= channels.
  void (*gather_nchw)(const float* x, int64_t plane, int64_t H, int64_t W, int64_t channels, int64_t iy0,
                      int64_t ix0, int64_t rows, int64_t width, float* dst, int64_t dst_row);

  // Channel vectors -> NCHW: y[c * plane + i * ldy + j] = src[i * src_row + j * vl + c] for i < rows,
  // j < width, c < channels.
  void (*scatter_nchw)(const float* src, int64_t src_row, int64_t rows, int64_t width, int64_t channels,
                       float* y, int64_t plane, int64_t ldy);
};

const WinogradIsa& winograd_isa(const char* name);  // "avx512", "avx2", "scalar" (capped to this CPU)
const WinogradIsa& winograd_isa_default();          // the set matching kernels() (ONNXCOMP_ISA applies)

namespace scalar { extern const WinogradIsa winograd; }
namespace avx2 { extern const WinogradIsa winograd; }
namespace avx512 { extern const WinogradIsa winograd; }

}  // namespace conv
}  // namespace onnxcomp
