// Implicit-im2col + GEMM convolution (any kernel size, stride, dilation, pads, groups; 1 to 3 spatial dims;
// NCHW float32): Y[n, g] = W_g [M/group x C/group*K] @ unfold(X[n, g]) [C/group*K x out positions], the unfolded
// input produced panel by panel (never materialized) and multiplied by the register-blocked micro-kernel of
// the kernel set (kernels.h). The weights are packed into GEMM panels once, at construction.
// The algorithm the Winograd path is compared against, and the one a CodebookConv with non-constant codes uses.
#pragma once

#include <cstdint>
#include <vector>

#include "conv.h"

namespace onnxcomp {
struct KernelTable;
namespace conv {

struct ConvParams {
  int64_t C = 0, M = 0, group = 1;  // input channels, output channels, groups (C and M divisible by group)
  int spatial = 2;                  // 1..3
  int64_t kernel[3] = {1, 1, 1}, strides[3] = {1, 1, 1}, dilations[3] = {1, 1, 1};
  int64_t pads[6] = {0, 0, 0, 0, 0, 0};  // begin of each spatial dim, then end of each (ONNX order)
};

class Im2colConv {
 public:
  // weight: [M][C/group][kernel...] float32 (packed here). isa as in WinogradConv.
  Im2colConv(const ConvParams& p, const float* weight, const char* isa = nullptr);

  // Output extent of spatial dim i for input extent `in` (< 1 when the padded input is smaller than the kernel).
  int64_t out_extent(int i, int64_t in) const;

  // Y = act(conv(X, W) + bias); X: [N, C, in...] NCHW, Y: [N, M, out...] NCHW. Thread-safe (const).
  void run(const float* x, int64_t N, const int64_t* in, const Epilogue& ep, float* y, const Parallel& par) const;

 private:
  ConvParams p_;
  const KernelTable* kt_;
  int64_t Mg_, Cg_, ckk_, apanel_;
  AlignedBuffer panels_;  // per group: ceil(Mg / mr) panels of [ckk][mr]
};

}  // namespace conv
}  // namespace onnxcomp
