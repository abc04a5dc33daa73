// The onnxcomp EP's plan: which com.onnxcomp nodes it claims (it declines where onnxruntime's own kernels,
// reached through the op's constant-folded function body, would be as fast or faster).
#pragma once

#include <onnxruntime_cxx_api.h>

#include <cstdint>
#include <vector>

namespace onnxcomp {
namespace ep {

constexpr const char* kEpName = "OnnxcompExecutionProvider";
constexpr const char* kEpVersion = "0.1.0";

struct PlanOptions {
  // Weights (K x N) below this count are declined: a compiled node costs ~5 us per run, and onnxruntime's fp32
  // GEMV on a layer whose float weights fit the L2 cache (1 MB) is as fast as decoding (measured: a 1024 x 64
  // layer ran 5 us slower under the EP). Session option "ep.onnxcomp.min_weights".
  int64_t min_weights = 262144;
};

PlanOptions read_plan_options(const OrtSessionOptions* so);

// True when the plan claims this matmul-family node (inputs already checked to be constant or decoded).
bool plan_accepts_matmul(const Ort::ConstNode& node, const std::vector<Ort::ConstValueInfo>& inputs,
                         const PlanOptions& plan);

}  // namespace ep
}  // namespace onnxcomp
