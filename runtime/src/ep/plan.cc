// The onnxcomp EP's plan (plan.h).
#include "plan.h"

#include <algorithm>
#include <string>

#include "graph.h"

namespace onnxcomp {
namespace ep {

bool plan_accepts_matmul(const Ort::ConstNode& node, const std::vector<Ort::ConstValueInfo>& inputs,
                         const PlanOptions& plan) {
  int64_t N = -1;
  try {
    NodeAttrs{node}.get_int("N", &N);
  } catch (const OpError&) {
    return true;  // let Compile report the bad attribute
  }
  if (N <= 0) return true;
  // K: X's last dim, else the weights' leading dim (codes [K, ...]; row_ptr [K + 1])
  int64_t K = -1;
  const std::vector<int64_t> xs = static_shape(inputs[0]);
  if (!xs.empty()) K = xs.back();
  if (K < 0) {
    const bool sparse = node.GetOperatorType() == "SparseCodebookMatMul";
    const std::vector<int64_t> ws = static_shape(inputs[2]);
    if (!ws.empty()) K = sparse ? ws[0] - 1 : ws[0];
  }
  // any row count: 1-4 rows run the register-decoding GEMV on the codes, more rows a GEMM on the weights decoded
  // once into floats (as fast as onnxruntime's fp32 GEMM, plus the fused bias and Relu)
  // in double: K and N come from the model unchecked (Compile rejects absurd sizes); K * N may overflow int64
  return K < 0 || static_cast<double>(K) * static_cast<double>(N) >= static_cast<double>(plan.min_weights);
}

namespace {

// zen4-1t (onnxcomp/cost.py) and the estimator's DEFAULT_EFFICIENCY (onnxcomp/estimator.py)
constexpr double kPeak = 116e9, kBandwidth = 26e9, kLlcBytes = 32.0 * (1 << 20);
constexpr double kIm2colEff = 0.92, kIm2colKHalf = 17.0;
struct WinogradEff {
  int m;
  double gemm, c_half, transform;
  int ops_in, ops_out;  // the transforms' operations per tile and channel (onnxcomp.winograd.transform_ops)
};
constexpr WinogradEff kWinograd[] = {{2, 0.79, 3.7, 1.0, 64, 36}, {4, 0.89, 4.3, 0.96, 264, 180}};
constexpr double kMargin = 0.1;

double im2col_seconds(const ConvGeom& g) {
  const double K = 9.0 * g.C, flops = 2.0 * g.N * g.M * g.C * 9.0 * g.OH * g.OW;
  const double e = kIm2colEff * K / (K + kIm2colKHalf);
  const double bytes = 4.0 * (double(g.N) * g.C * g.H * g.W + double(g.N) * g.M * g.OH * g.OW + 9.0 * g.M * g.C);
  return std::max(flops / (kPeak * e), bytes / kBandwidth);
}

double winograd_seconds(const ConvGeom& g, const WinogradEff& w) {
  const int m = w.m, alpha = m + 2;
  const double tiles = double(g.N) * ((g.OH + m - 1) / m) * ((g.OW + m - 1) / m);
  const double gemm = 2.0 * tiles * alpha * alpha * g.C * g.M;
  const double transform = 2.0 * tiles * (double(g.C) * w.ops_in + double(g.M) * (w.ops_out + 2.0 * m * m));
  const double u = double(alpha) * alpha * g.C * g.M;
  const double compute = gemm / (kPeak * w.gemm * g.C / (g.C + w.c_half)) + transform / (kPeak * w.transform);
  const double bytes = 4.0 * (double(g.N) * g.C * g.H * g.W + double(g.N) * g.M * g.OH * g.OW + u);
  const double stream = 4.0 * u > kLlcBytes / 2 ? 4.0 * u / kBandwidth : 0.0;
  return std::max(compute, bytes / kBandwidth) + stream;
}

}  // namespace

int plan_winograd_tile(const ConvGeom& g) {
  if (g.N < 1 || g.C < 1 || g.M < 1 || g.OH < 1 || g.OW < 1) return 0;
  const double base = im2col_seconds(g);
  int best = 0;
  double best_s = base;
  for (const WinogradEff& w : kWinograd) {
    const double s = winograd_seconds(g, w);
    if (s < best_s) {
      best_s = s;
      best = w.m;
    }
  }
  return best != 0 && best_s <= (1.0 - kMargin) * base ? best : 0;
}

}  // namespace ep
}  // namespace onnxcomp
