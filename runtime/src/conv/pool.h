// Pooling and elementwise epilogue kernels on NCHW float32 tensors, for the execution provider's convolution
// chains (the neighbours a chain of Winograd convolutions keeps: onnxruntime would otherwise run them in its NCHWc
// layout, with reorders around every one). Plain data in, plain data out; callers validate shapes.
#pragma once

#include <cstdint>

#include "conv.h"

namespace onnxcomp {
namespace conv {

// 2-D MaxPool / AveragePool window: kernel, strides, pads (top, left, bottom, right), ceil_mode and, for the
// average, whether padded positions count.
struct PoolParams {
  int64_t kernel[2] = {1, 1}, strides[2] = {1, 1}, pads[4] = {0, 0, 0, 0};
  bool ceil_mode = false;
  bool count_include_pad = false;
  // Output extent of spatial dim i (0: rows, 1: columns) for input extent `in` (ONNX's rule: with ceil_mode, a
  // last window starting in the end padding is dropped); < 1 when the padded input is smaller than the kernel.
  int64_t out_extent(int i, int64_t in) const;
};

// Y[n, c] = max (or mean) over each window of X[n, c]; X [N, C, H, W], Y [N, C, OH, OW]. planes = N * C.
void max_pool(const float* x, int64_t planes, int64_t H, int64_t W, const PoolParams& p, float* y,
              const Parallel& par);
void average_pool(const float* x, int64_t planes, int64_t H, int64_t W, const PoolParams& p, float* y,
                  const Parallel& par);
// Y[n, c] = mean of X[n, c] (H * W values); Y [N, C, 1, 1].
void global_average_pool(const float* x, int64_t planes, int64_t HW, float* y, const Parallel& par);
// y = act(a + b) elementwise over n floats (Epilogue: act only, no bias). y may be a or b.
void add_activate(const float* a, const float* b, int64_t n, const Epilogue& ep, float* y, const Parallel& par);

}  // namespace conv
}  // namespace onnxcomp
