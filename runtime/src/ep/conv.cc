// The onnxcomp EP's convolution chains. A chain starts at a com.onnxcomp WinogradConv (select-conv's output) or
// CodebookConv (k-means filters) with constant weights, 3x3, stride 1, dilation 1, one group, that the EP runs with
// the Winograd kernel core (conv/winograd.h): the filter decoded and Winograd-transformed once, at compile time, bias
// plus a consuming Relu / LeakyRelu / Clip fused into the output transform (a BatchNormalization between them folded
// into the filter and bias). Which tile: the model's (WinogradConv's tile, CodebookConv's winograd_tile, written by
// select-conv), else the roofline plan's (plan_winograd_tile), which declines the layer where onnxruntime's own Conv
// is predicted as fast; a declined CodebookConv is inlined and folded by onnxruntime into a plain Conv in its NCHWc
// kernels.
//
// The chain then takes the neighbours that keep it whole, as long as each value inside it has that one consumer:
// more such convolutions, MaxPool / AveragePool / GlobalAveragePool (conv/pool.h), a residual Add of two same-shape
// tensors with its activation, and a pool just before the first convolution. The chain runs in NCHW: the Winograd
// kernels run as fast from NCHW as from NCHW16c (measured on 64..512 channels, within 3%), so a blocked layout would
// buy nothing inside; what the chain saves is the NCHW <-> NCHWc reorders onnxruntime puts around each of its
// NCHWc nodes (pools, adds) between the EP's convolutions. Values inside a chain have no other consumer and are not
// graph outputs, so fusing a chain never creates a cycle.
#include <cmath>
#include <limits>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "../common.h"
#include "../conv/pool.h"
#include "../conv/winograd.h"
#include "exec.h"
#include "graph.h"

namespace onnxcomp {
namespace ep {

bool is_conv_op(const Ort::ConstNode& n) {
  return n.GetDomain() == kDomain && (n.GetOperatorType() == "WinogradConv" || n.GetOperatorType() == "CodebookConv");
}

namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr int64_t kMaxConvAttr = int64_t{1} << 31;

// A convolution node's attributes, checked: only what the Winograd core runs is accepted (OpError otherwise).
struct ConvAttrs {
  bool codebook = false;
  int tile = 0;  // 0: not given (CodebookConv without winograd_tile)
  int64_t M = 0, C = 0;
  int64_t pads[4] = {0, 0, 0, 0};  // top, left, bottom, right
  float leaky = 1.0f, lo = -kInf, hi = kInf;
  int bits = 0;
  int64_t group_size = 0;

  explicit ConvAttrs(const Ort::ConstNode& node) {
    NodeAttrs a{node};
    codebook = node.GetOperatorType() == "CodebookConv";
    const std::vector<int64_t> p = winograd_conv_pads(a, "the EP");
    for (int i = 0; i < 4; ++i) pads[i] = p[i];
    if (codebook) {
      bits = static_cast<int>(a.required_int("bits", 1, 8));
      std::vector<int64_t> ws;
      if (!a.get_ints("weight_shape", &ws)) fail("attribute 'weight_shape' (ints) is required");
      if (ws.size() != 4 || ws[2] != 3 || ws[3] != 3 || ws[0] < 1 || ws[1] < 1 || ws[0] > kMaxConvAttr ||
          ws[1] > kMaxConvAttr)
        fail("attribute weight_shape=", shape_str(ws), " is not run by the EP (it needs [M, C, 3, 3])");
      M = ws[0];
      C = ws[1];
      group_size = a.optional_int("group_size", M, 1, kMaxDim);
      tile = static_cast<int>(a.optional_int("winograd_tile", 0, 0, 6));
      if (tile != 0 && !conv::WinogradConv::tile_supported(tile))
        fail("attribute winograd_tile=", tile, " must be 0, 2, 4 or 6");
    } else {
      tile = static_cast<int>(a.optional_int("tile", 4, 2, 6));
      if (!conv::WinogradConv::tile_supported(tile)) fail("attribute tile=", tile, " must be 2, 4 or 6");
      winograd_conv_activation(a, &leaky, &lo, &hi);
    }
  }
  bool has_activation() const { return leaky != 1.0f || lo != -kInf || hi != kInf; }
};

// A scalar float initializer (Clip's min / max inputs), or false.
bool const_scalar(const Ort::ConstValueInfo& v, float* out) {
  if (!v || !v.IsConstantInitializer()) return false;
  const Blob b = evaluate(v);
  if (b.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT || b.count != 1) return false;
  *out = b.as<float>()[0];
  return true;
}

// The activation of a Relu / LeakyRelu / Clip node as (leaky, lo, hi), or false for another node (or a Clip whose
// bounds are not constant).
bool activation_of(const Ort::ConstNode& n, float* leaky, float* lo, float* hi) {
  if (!n || !n.GetDomain().empty()) return false;
  const std::string op = n.GetOperatorType();
  *leaky = 1.0f;
  *lo = -kInf;
  *hi = kInf;
  if (op == "Relu") {
    *leaky = 0.0f;
    return true;
  }
  if (op == "LeakyRelu") {
    *leaky = 0.01f;
    NodeAttrs{n}.get_float("alpha", leaky);
    return !std::isnan(*leaky);
  }
  if (op == "Clip") {
    NodeAttrs a{n};
    a.get_float("min", lo);  // opset < 11
    a.get_float("max", hi);
    std::vector<Ort::ConstValueInfo> ins = n.GetInputs();
    if (ins.size() > 1 && ins[1] && !const_scalar(ins[1], lo)) return false;
    if (ins.size() > 2 && ins[2] && !const_scalar(ins[2], hi)) return false;
    return !std::isnan(*lo) && !std::isnan(*hi) && *lo <= *hi;
  }
  return false;
}

// The fused activation node after a convolution or its folded BatchNormalization (`last`: the sole consumer of its
// output), or a null node.
Ort::ConstNode fusable_activation(const Ort::ConstNode& last, const ConvAttrs& a) {
  if (a.has_activation()) return Ort::ConstNode{nullptr};
  std::vector<Ort::ConstValueInfo> outs = last.GetOutputs();
  if (outs.size() != 1) return Ort::ConstNode{nullptr};
  Ort::ConstNode n = sole_consumer(outs[0]);
  float leaky, lo, hi;
  return activation_of(n, &leaky, &lo, &hi) ? n : Ort::ConstNode{nullptr};
}

// An inference BatchNormalization after a convolution of M filters, folded into the filter and the bias:
//   y = gamma * (x - mean) / sqrt(var + eps) + beta = scale * x + shift
//   # W'[m] = W[m] * scale[m],  b'[m] = b[m] * scale[m] + shift[m]
//   # scale = gamma / sqrt(var + eps),  shift = beta - mean * scale
struct BatchNormFold {
  std::vector<float> scale, shift;
};

// The fold of a BatchNormalization node (one output, training_mode 0, constant float [M] scale, B, mean and var,
// var + epsilon > 0), or false: onnxruntime runs any other form, after the chain.
bool batch_norm_fold(const Ort::ConstNode& n, int64_t M, BatchNormFold* out) {
  if (!n || !is_op(n, "", "BatchNormalization") || n.GetOutputs().size() != 1) return false;
  try {
    NodeAttrs a{n};
    if (a.optional_int("training_mode", 0, 0, 1) != 0) return false;
    float eps = 1e-5f;
    a.get_float("epsilon", &eps);
    std::vector<Ort::ConstValueInfo> ins = n.GetInputs();
    if (ins.size() != 5) return false;
    std::vector<Blob> p;
    for (size_t i = 1; i < 5; ++i) {
      if (!ins[i] || !ins[i].IsConstantInitializer()) return false;
      p.push_back(evaluate(ins[i]));
      if (p.back().type != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT || p.back().shape != std::vector<int64_t>{M}) return false;
    }
    const float *gamma = p[0].as<float>(), *beta = p[1].as<float>(), *mean = p[2].as<float>(), *var = p[3].as<float>();
    out->scale.resize(static_cast<size_t>(M));
    out->shift.resize(static_cast<size_t>(M));
    for (int64_t m = 0; m < M; ++m) {
      const double v = static_cast<double>(var[m]) + eps;
      if (!(v > 0.0) || !std::isfinite(v)) return false;
      const double sc = gamma[m] / std::sqrt(v);
      out->scale[m] = static_cast<float>(sc);
      out->shift[m] = static_cast<float>(beta[m] - mean[m] * sc);
    }
    return true;
  } catch (const OpError&) {
    return false;
  }
}

// The filter count M of a convolution: CodebookConv's weight_shape, else its W's static shape (0 when unknown).
int64_t filters_of(const ConvAttrs& a, const std::vector<Ort::ConstValueInfo>& ins) {
  if (a.codebook) return a.M;
  const std::vector<int64_t> ws = ins.size() > 1 && ins[1] ? static_shape(ins[1]) : std::vector<int64_t>{};
  return ws.size() == 4 ? ws[0] : 0;
}

// The BatchNormalization a convolution's output feeds alone (and the chain folds), or a null node.
Ort::ConstNode folded_batch_norm(const Ort::ConstNode& conv, const ConvAttrs& a, int64_t M) {
  if (a.has_activation() || M < 1) return Ort::ConstNode{nullptr};  // a fused activation comes before it
  std::vector<Ort::ConstValueInfo> outs = conv.GetOutputs();
  if (outs.size() != 1) return Ort::ConstNode{nullptr};
  Ort::ConstNode n = sole_consumer(outs[0]);
  BatchNormFold fold;  // checked here, computed again at compile time (build_conv_step)
  return batch_norm_fold(n, M, &fold) ? n : Ort::ConstNode{nullptr};
}

// The Winograd tile for a node: the model's, else the plan's for X's shape (channels and extents static; an
// unknown batch is planned as 1: the algorithms' time ratio barely depends on it). 0: declined.
int choose_tile(const ConvAttrs& a, const Ort::ConstValueInfo& x) {
  if (a.tile != 0) return a.tile;
  std::vector<int64_t> xs;
  try {
    Ort::ConstTypeInfo ti = x.TypeInfo();
    if (ti.GetONNXType() == ONNX_TYPE_TENSOR) xs = ti.GetTensorTypeAndShapeInfo().GetShape();
  } catch (const Ort::Exception&) {
    return 0;
  }
  if (xs.size() != 4 || xs[1] != a.C || xs[2] < 1 || xs[3] < 1) return 0;
  const ConvGeom g{xs[0] > 0 ? xs[0] : 1, a.C, xs[2], xs[3], a.M, xs[2] + a.pads[0] + a.pads[2] - 2,
                   xs[3] + a.pads[1] + a.pads[3] - 2};
  return plan_winograd_tile(g);
}

// ---- units: what a chain is made of ------------------------------------------------------------------------
enum class StepKind { kConv, kMaxPool, kAveragePool, kGlobalAveragePool, kAdd };

// A claimable unit around one node: its nodes (decoders, the node, a fused activation) and the value it produces.
struct Unit {
  std::vector<Ort::ConstNode> nodes;
  Ort::ConstValueInfo out{nullptr};
};

bool is_4d(const Ort::ConstValueInfo& v) { return rank_of(v) == 4; }

// Its output value, or the output of its fused activation.
Ort::ConstValueInfo unit_output(const Ort::ConstNode& node, const Ort::ConstNode& act) {
  return (act ? act : node).GetOutputs()[0];
}

// A convolution the plan runs (constant weights, a tile), with its decoders and activation.
bool conv_unit(const Ort::ConstNode& node, Unit* u) {
  if (!is_conv_op(node)) return false;
  if (NodeAttrs{node}.find("block_size") != nullptr) return false;  // block codebooks: the custom-op kernel runs them
  std::vector<Ort::ConstValueInfo> ins = node.GetInputs();
  try {
    const ConvAttrs a(node);
    if (ins.empty() || !ins[0] || ins[0].IsConstantInitializer() || node.GetOutputs().size() != 1) return false;
    std::vector<Ort::ConstNode> chain;
    const size_t n_weights = a.codebook ? 2 : 1, bias = n_weights + 1;
    for (size_t i = 1; i <= n_weights; ++i)
      if (i >= ins.size() || !constant_or_decoded(ins[i], &chain)) return false;
    if (ins.size() > bias && ins[bias] && !ins[bias].IsConstantInitializer()) return false;
    if (choose_tile(a, ins[0]) == 0) return false;
    u->nodes = chain;
    u->nodes.push_back(node);
    Ort::ConstNode last = node;
    if (Ort::ConstNode bn = folded_batch_norm(node, a, filters_of(a, ins))) {
      u->nodes.push_back(bn);
      last = bn;
    }
    Ort::ConstNode act = fusable_activation(last, a);
    if (act) u->nodes.push_back(act);
    u->out = unit_output(last, act);
    return true;
  } catch (const OpError&) {
    return false;  // onnxruntime runs the node (and reports what is wrong with it)
  }
}

// MaxPool / AveragePool (2-D, attributes the kernels run) or GlobalAveragePool, fed by `from`.
StepKind pool_kind(const Ort::ConstNode& n) {
  const std::string op = n.GetOperatorType();
  return op == "MaxPool" ? StepKind::kMaxPool : op == "AveragePool" ? StepKind::kAveragePool : StepKind::kGlobalAveragePool;
}

// The window of a MaxPool / AveragePool node (OpError for attributes the kernels do not run).
conv::PoolParams pool_params(const Ort::ConstNode& n) {
  NodeAttrs a{n};
  conv::PoolParams p;
  std::vector<int64_t> v;
  if (!a.get_ints("kernel_shape", &v) || v.size() != 2 || v[0] < 1 || v[1] < 1 || v[0] > kMaxConvAttr ||
      v[1] > kMaxConvAttr)
    fail("a 2-D kernel_shape is required");
  p.kernel[0] = v[0];
  p.kernel[1] = v[1];
  if (a.get_ints("strides", &v)) {
    if (v.size() != 2 || v[0] < 1 || v[1] < 1 || v[0] > kMaxConvAttr || v[1] > kMaxConvAttr) fail("bad strides");
    p.strides[0] = v[0];
    p.strides[1] = v[1];
  }
  if (a.get_ints("pads", &v)) {
    if (v.size() != 4) fail("bad pads");
    for (int i = 0; i < 4; ++i) {
      if (v[i] < 0 || v[i] >= p.kernel[i % 2]) fail("bad pads");
      p.pads[i] = v[i];
    }
  }
  if (a.get_ints("dilations", &v) && v != std::vector<int64_t>{1, 1}) fail("dilations are not run");
  std::string auto_pad;
  if (a.get_string("auto_pad", &auto_pad) && !auto_pad.empty() && auto_pad != "NOTSET") fail("auto_pad is not run");
  p.ceil_mode = a.optional_int("ceil_mode", 0, 0, 1) == 1;
  p.count_include_pad = a.optional_int("count_include_pad", 0, 0, 1) == 1;
  if (a.optional_int("storage_order", 0, 0, 1) != 0) fail("storage_order is not run");
  return p;
}

bool pool_unit(const Ort::ConstNode& n, const Ort::ConstValueInfo& from, Unit* u) {
  if (!n.GetDomain().empty()) return false;
  const std::string op = n.GetOperatorType();
  if (op != "MaxPool" && op != "AveragePool" && op != "GlobalAveragePool") return false;
  std::vector<Ort::ConstValueInfo> ins = n.GetInputs(), outs = n.GetOutputs();
  if (ins.size() != 1 || ins[0].GetName() != from.GetName() || !is_4d(from)) return false;
  if (outs.size() != 1) return false;  // MaxPool's Indices
  if (op != "GlobalAveragePool") {
    try {
      pool_params(n);
    } catch (const OpError&) {
      return false;
    }
  }
  u->nodes = {n};
  u->out = outs[0];
  return true;
}

// A residual Add of `from` and another 4-D tensor of the same shape (known sizes or the same symbolic dims; checked
// again at run time), with its activation.
bool add_unit(const Ort::ConstNode& n, const Ort::ConstValueInfo& from, Unit* u) {
  if (!is_op(n, "", "Add")) return false;
  std::vector<Ort::ConstValueInfo> ins = n.GetInputs();
  if (ins.size() != 2 || !ins[0] || !ins[1] || ins[0].GetName() == ins[1].GetName()) return false;
  if (!is_4d(ins[0]) || !same_shape(ins[0], ins[1]) ||
      (ins[0].GetName() != from.GetName() && ins[1].GetName() != from.GetName()))
    return false;
  u->nodes = {n};
  Ort::ConstNode act = sole_consumer(n.GetOutputs()[0]);
  float leaky, lo, hi;
  if (act && activation_of(act, &leaky, &lo, &hi)) {
    u->nodes.push_back(act);
  } else {
    act = Ort::ConstNode{nullptr};
  }
  u->out = unit_output(n, act);
  return true;
}

// The unit a chain reaching `node` through value `from` continues with, or false.
bool next_unit(const Ort::ConstNode& node, const Ort::ConstValueInfo& from, Unit* u) {
  if (is_conv_op(node)) {
    std::vector<Ort::ConstValueInfo> ins = node.GetInputs();
    return !ins.empty() && ins[0] && ins[0].GetName() == from.GetName() && conv_unit(node, u);
  }
  return pool_unit(node, from, u) || add_unit(node, from, u);
}

// ---- the chain executor -----------------------------------------------------------------------------------
struct Step {
  StepKind kind = StepKind::kConv;
  std::string where;  // the node, for errors
  // kConv
  std::unique_ptr<conv::WinogradConv> wino;
  int64_t C = 0, M = 0;
  int64_t pads[4] = {0, 0, 0, 0};
  std::vector<float> bias;
  // kConv, kAdd: bias (conv) and activation
  conv::Epilogue epilogue;
  // pools
  conv::PoolParams pool;
  // kAdd: the other operand, an input of the fused node
  size_t side_index = 0;
};

// Grow-only 64-byte aligned buffers of the calling thread (onnxruntime runs a compiled node on the thread that
// called Run; concurrent runs of a session are on different threads).
float* chain_buffer(int slot, size_t n) {
  thread_local conv::AlignedBuffer bufs[2];
  if (bufs[slot].size() < n) bufs[slot].resize(n);
  return bufs[slot].data();
}

struct ChainExec : Exec {
  std::vector<Step> steps;
  size_t x_index = 0;

  void compute(OrtKernelContext* context) override {
    Ort::KernelContext ctx(context);
    const Input x = get_input(ctx, x_index);
    expect(x, "X", ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT);
    if (x.shape.size() != 4) fail("X must have rank 4 (N, C, H, W), got ", shape_str(x.shape));
    OrtParallel par(ctx);
    std::vector<int64_t> shape = x.shape;
    const float* src = x.as<float>();
    for (size_t i = 0; i < steps.size(); ++i) {
      const Step& s = steps[i];
      const bool last = i + 1 == steps.size();
      try {
        const std::vector<int64_t> out = out_shape(s, shape, ctx);
        float* dst = nullptr;
        if (last) {
          dst = ctx.GetOutput(0, out).GetTensorMutableData<float>();
        } else {
          dst = chain_buffer(static_cast<int>(i % 2), static_cast<size_t>(checked_elements(out, "a chain value")));
        }
        run_step(s, src, shape, out, dst, ctx, par);
        src = dst;
        shape = out;
      } catch (const OpError& e) {
        throw OpError(cat(s.where, ": ", e.what()));
      }
    }
  }

  static std::vector<int64_t> out_shape(const Step& s, const std::vector<int64_t>& in, Ort::KernelContext& ctx) {
    const int64_t N = in[0], C = in[1], H = in[2], W = in[3];
    switch (s.kind) {
      case StepKind::kConv: {
        if (C != s.C) fail("X has ", C, " channels, the filter ", s.C, " (X shape ", shape_str(in), ")");
        const int64_t OH = H + s.pads[0] + s.pads[2] - 2, OW = W + s.pads[1] + s.pads[3] - 2;
        if (OH < 1 || OW < 1) fail("input ", H, "x", W, " with its pads is smaller than the 3x3 kernel");
        return {N, s.M, OH, OW};
      }
      case StepKind::kMaxPool:
      case StepKind::kAveragePool: {
        const int64_t OH = s.pool.out_extent(0, H), OW = s.pool.out_extent(1, W);
        if (OH < 1 || OW < 1) fail("input ", H, "x", W, " with its pads is smaller than the pooling window");
        return {N, C, OH, OW};
      }
      case StepKind::kGlobalAveragePool:
        return {N, C, 1, 1};
      case StepKind::kAdd: {
        const Input side = get_input(ctx, s.side_index);
        expect(side, "B", ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT);
        if (side.shape != in) fail("the operands have shapes ", shape_str(in), " and ", shape_str(side.shape));
        return in;
      }
    }
    return in;
  }

  static void run_step(const Step& s, const float* src, const std::vector<int64_t>& in,
                       const std::vector<int64_t>& out, float* dst, Ort::KernelContext& ctx, const OrtParallel& par) {
    const int64_t N = in[0], C = in[1], H = in[2], W = in[3];
    if (N == 0 || C == 0) return;
    switch (s.kind) {
      case StepKind::kConv:
        s.wino->run(src, conv::TensorLayout::nchw(), N, H, W, s.pads, s.epilogue, dst, conv::TensorLayout::nchw(), par);
        return;
      case StepKind::kMaxPool:
        conv::max_pool(src, N * C, H, W, s.pool, dst, par);
        return;
      case StepKind::kAveragePool:
        conv::average_pool(src, N * C, H, W, s.pool, dst, par);
        return;
      case StepKind::kGlobalAveragePool:
        conv::global_average_pool(src, N * C, H * W, dst, par);
        return;
      case StepKind::kAdd:
        conv::add_activate(src, get_input(ctx, s.side_index).as<float>(), N * C * H * W, s.epilogue, dst, par);
        return;
    }
    (void)out;
  }
};

// The float filter [M, C, 3, 3] of a CodebookConv, decoded from its constant codes and codebook (validated like
// the custom op validates them).
std::vector<float> decode_filter(const ConvAttrs& a, const std::vector<Ort::ConstValueInfo>& ins) {
  const Blob cb = float_codebook(evaluate(ins[1]));  // float16: converted here, once
  const Blob codes = expect_type(evaluate(ins[2]), "codes", ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8);
  const int64_t G = ceil_div(a.M, a.group_size), entries = int64_t{1} << a.bits, CKK = a.C * 9;
  const int64_t row_bytes = ceil_div(CKK * a.bits, 8);
  if (cb.shape.size() != 2 || cb.shape[0] != G || cb.shape[1] < 1 || cb.shape[1] > entries)
    fail("codebook must have shape [G=", G, ", C] with 1 <= C <= 2^bits=", entries, ", got ", shape_str(cb.shape));
  if (codes.shape != std::vector<int64_t>{a.M, row_bytes})
    fail("codes must have shape [M=", a.M, ", ", row_bytes, "], got ", shape_str(codes.shape));
  if (cb.shape[1] < entries && max_code(codes.as<uint8_t>(), a.M, row_bytes, CKK, a.bits) >= uint32_t(cb.shape[1]))
    fail("a code is out of range for a codebook of ", cb.shape[1], " entries");
  const std::vector<float> padded = pad_codebook(cb.as<float>(), G, cb.shape[1], a.bits);
  std::vector<float> w(static_cast<size_t>(a.M * CKK));
  kernels().decode_rows(codes.as<uint8_t>(), row_bytes, 0, a.M, CKK, a.bits, padded.data(), a.group_size, w.data());
  return w;
}

// The Winograd step of a convolution node (filter decoded and transformed here, once), with the BatchNormalization
// `bn` (or a null node) folded into its filter and bias.
void build_conv_step(const Ort::ConstNode& cv, const std::vector<Ort::ConstValueInfo>& ins, const Ort::ConstNode& bn,
                     Step* s) {
  ConvAttrs a(cv);
  const int tile = choose_tile(a, ins[0]);
  if (tile == 0) fail("the plan declines this layer (its input shape changed?)");
  std::vector<float> w;
  if (a.codebook) {
    w = decode_filter(a, ins);
  } else {
    const Blob wb = expect_type(evaluate(ins[1]), "W", ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT);
    if (wb.shape.size() != 4 || wb.shape[0] < 1 || wb.shape[1] < 1 || wb.shape[2] != 3 || wb.shape[3] != 3)
      fail("W must have shape [M, C, 3, 3], got ", shape_str(wb.shape));
    a.M = wb.shape[0];
    a.C = wb.shape[1];
    w.assign(wb.as<float>(), wb.as<float>() + wb.count);
  }
  const size_t bias_index = a.codebook ? 3 : 2;
  if (ins.size() > bias_index && ins[bias_index]) {
    const Blob b = expect_type(evaluate(ins[bias_index]), "B", ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT);
    if (b.shape.size() != 1 || b.shape[0] != a.M) fail("B must have shape [M=", a.M, "], got ", shape_str(b.shape));
    s->bias.assign(b.as<float>(), b.as<float>() + b.count);
  }
  if (bn) {  // W'[m] = W[m] * scale[m], b'[m] = b[m] * scale[m] + shift[m]
    BatchNormFold f;
    if (!batch_norm_fold(bn, a.M, &f)) fail("its BatchNormalization cannot be folded (its parameters changed?)");
    const int64_t CKK = a.C * 9;
    for (int64_t m = 0; m < a.M; ++m)
      for (int64_t k = 0; k < CKK; ++k) w[static_cast<size_t>(m * CKK + k)] *= f.scale[m];
    if (s->bias.empty()) s->bias.assign(static_cast<size_t>(a.M), 0.0f);
    for (int64_t m = 0; m < a.M; ++m) s->bias[m] = s->bias[m] * f.scale[m] + f.shift[m];
  }
  checked_elements({a.M, a.C, (tile + 2) * (tile + 2)}, "transformed W");
  s->kind = StepKind::kConv;
  s->wino = std::make_unique<conv::WinogradConv>(tile, a.C, a.M, w.data());
  s->C = a.C;
  s->M = a.M;
  for (int i = 0; i < 4; ++i) s->pads[i] = a.pads[i];
  s->epilogue = conv::leaky_clip_epilogue(a.leaky, a.lo, a.hi);
  s->epilogue.bias = s->bias.empty() ? nullptr : s->bias.data();
}

}  // namespace

std::vector<std::vector<Ort::ConstNode>> claim_conv_chains(const Ort::ConstGraph& graph, const PlanOptions& plan) {
  std::vector<std::vector<Ort::ConstNode>> groups;
  if (plan.conv == 0) return groups;
  std::set<const OrtNode*> taken;
  auto free_of = [&](const Unit& u) {
    for (const Ort::ConstNode& n : u.nodes)
      if (taken.count(n)) return false;
    return true;
  };
  for (const Ort::ConstNode& node : graph.GetNodes()) {
    Unit first;
    if (taken.count(node) || !conv_unit(node, &first) || !free_of(first)) continue;
    std::vector<Unit> chain{first};
    // a pool just before the first convolution, read by nothing else
    const Ort::ConstValueInfo x = node.GetInputs()[0];
    Ort::ConstNode p = producer(x);
    Unit pool;
    if (p && !taken.count(p) && sole_consumer(x) && p.GetInputs().size() == 1 && p.GetInputs()[0] &&
        !p.GetInputs()[0].IsConstantInitializer() && pool_unit(p, p.GetInputs()[0], &pool))
      chain.insert(chain.begin(), pool);
    for (const Unit& u : chain)
      for (const Ort::ConstNode& n : u.nodes) taken.insert(n);
    // then every unit that alone reads the chain's value
    for (;;) {
      const Ort::ConstValueInfo cur = chain.back().out;
      Ort::ConstNode next = sole_consumer(cur);
      Unit u;
      if (!next || taken.count(next) || !next_unit(next, cur, &u) || !free_of(u)) break;
      for (const Ort::ConstNode& n : u.nodes) taken.insert(n);
      chain.push_back(u);
    }
    std::vector<Ort::ConstNode> group;
    for (const Unit& u : chain) group.insert(group.end(), u.nodes.begin(), u.nodes.end());
    groups.push_back(group);
  }
  return groups;
}

std::unique_ptr<Exec> build_conv(const Ort::ConstGraph& graph, const Ort::ConstNode& fused, const PlanOptions&) {
  auto exec = std::make_unique<ChainExec>();
  std::string prev_out;  // the value the last step produces
  const std::vector<Ort::ConstNode> nodes = graph.GetNodes();
  // the group's BatchNormalization nodes by the value they read: each was claimed with the convolution whose output
  // that is (conv_unit) and is folded into it
  std::map<std::string, Ort::ConstNode> batch_norm_of;
  for (const Ort::ConstNode& m : nodes)
    if (is_op(m, "", "BatchNormalization") && !m.GetInputs().empty() && m.GetInputs()[0])
      batch_norm_of.emplace(m.GetInputs()[0].GetName(), m);
  std::set<const OrtNode*> folded;  // BatchNormalization nodes folded into the convolution before them
  for (const Ort::ConstNode& n : nodes) {
    if (is_decoder(n) || is_table_maker(n)) continue;  // evaluated with the weights they feed
    if (folded.count(n)) {
      prev_out = n.GetOutputs()[0].GetName();
      continue;
    }
    const std::string where = cat(kEpName, ": ", node_desc(n));
    std::vector<Ort::ConstValueInfo> ins = n.GetInputs();
    if (exec->steps.empty()) exec->label = where;
    try {
      float leaky, lo, hi;
      if (activation_of(n, &leaky, &lo, &hi) && !exec->steps.empty() && ins[0].GetName() == prev_out) {
        Step& s = exec->steps.back();  // fused into the step it follows
        const float* b = s.epilogue.bias;
        if (s.epilogue.act != conv::Activation::kNone || s.kind == StepKind::kMaxPool ||
            s.kind == StepKind::kAveragePool || s.kind == StepKind::kGlobalAveragePool)
          fail("the activation has nothing to fuse into");
        s.epilogue = conv::leaky_clip_epilogue(leaky, lo, hi);
        s.epilogue.bias = b;
        prev_out = n.GetOutputs()[0].GetName();
        continue;
      }
      Step s;
      s.where = where;
      std::string main_in = ins.empty() || !ins[0] ? "" : ins[0].GetName();
      if (is_conv_op(n)) {
        const auto it = batch_norm_of.find(n.GetOutputs()[0].GetName());
        const Ort::ConstNode bn = it != batch_norm_of.end() ? it->second : Ort::ConstNode{nullptr};
        build_conv_step(n, ins, bn, &s);
        if (bn) folded.insert(bn);
      } else if (is_op(n, "", "Add")) {
        s.kind = StepKind::kAdd;
        if (ins.size() != 2) fail("Add needs 2 inputs");
        const bool first_is_main = exec->steps.empty() ? false : ins[0].GetName() == prev_out;
        main_in = ins[first_is_main ? 0 : 1].GetName();
        s.side_index = fused_input_index(fused, ins[first_is_main ? 1 : 0].GetName(), where);
      } else if (n.GetDomain().empty() && (n.GetOperatorType() == "MaxPool" || n.GetOperatorType() == "AveragePool" ||
                                           n.GetOperatorType() == "GlobalAveragePool")) {
        s.kind = pool_kind(n);
        if (s.kind != StepKind::kGlobalAveragePool) s.pool = pool_params(n);
      } else {
        fail("the EP's convolution chains do not run this node");
      }
      if (exec->steps.empty()) {
        exec->x_index = fused_input_index(fused, main_in, where);
      } else if (main_in != prev_out) {
        fail("the node does not read the value of the node before it in the chain");
      }
      prev_out = n.GetOutputs()[0].GetName();
      exec->steps.push_back(std::move(s));
    } catch (const OpError& e) {
      const std::string msg = e.what();
      if (msg.rfind(kEpName, 0) == 0) throw;
      if (msg.rfind(kDomain, 0) == 0) throw OpError(cat(kEpName, ": ", msg));  // a decoder, already named
      throw OpError(cat(where, ": ", msg));
    }
  }
  if (exec->steps.empty()) fail("compiled group without a step");
  return exec;
}

}  // namespace ep
}  // namespace onnxcomp
