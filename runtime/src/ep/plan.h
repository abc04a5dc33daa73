// The onnxcomp EP's plan: which nodes it claims and, per convolution, which kernel runs it. It declines where
// onnxruntime's own kernels (reached through an op's constant-folded function body, or the node itself) are
// predicted as fast or faster.
#pragma once

#include <onnxruntime_cxx_api.h>

#include <cstdint>
#include <vector>

namespace onnxcomp {
namespace ep {

constexpr const char* kEpName = "OnnxcompExecutionProvider";
constexpr const char* kEpVersion = "0.2.0";

struct PlanOptions {
  // Weights (K x N) below this count are declined: a compiled node costs ~5 us per run, and onnxruntime's fp32
  // GEMV on a layer whose float weights fit the L2 cache (1 MB) is as fast as decoding (measured: a 1024 x 64
  // layer ran 5 us slower under the EP). Session option "ep.onnxcomp.min_weights".
  int64_t min_weights = 262144;
  // Convolutions: 1 (default) claims WinogradConv nodes and CodebookConv nodes whose Winograd plan wins
  // (plan_winograd_tile); 0 declines every convolution. Session option "ep.onnxcomp.conv".
  int64_t conv = 1;
};

PlanOptions read_plan_options(const OrtSessionOptions* so);

// True when the plan claims this matmul-family node (inputs already checked to be constant or decoded).
bool plan_accepts_matmul(const Ort::ConstNode& node, const std::vector<Ort::ConstValueInfo>& inputs,
                         const PlanOptions& plan);

// A 3x3, stride-1, dilation-1, one-group convolution: batch, channels in and out, input and output extents.
struct ConvGeom {
  int64_t N, C, H, W, M, OH, OW;
};

// The Winograd tile (2 or 4) the roofline plan picks for a 3x3 stride-1 layer, or 0 where onnxruntime's Conv (its
// NCHWc direct / im2col GEMM kernels) is predicted at most 10% slower. The same model as onnxcomp/estimator.py
// (select-conv) with its zen4-1t profile: FMA peak 116 GFLOP/s, 26 GB/s, a 32 MB last-level cache and the fitted
// kernel efficiencies; F(6,3) is never picked (the least accurate; select-conv uses it only when asked).
int plan_winograd_tile(const ConvGeom& g);

}  // namespace ep
}  // namespace onnxcomp
