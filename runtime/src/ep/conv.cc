// The onnxcomp EP's convolutions: com.onnxcomp WinogradConv (select-conv's output) and CodebookConv (k-means
// filters) with constant weights, 3x3, stride 1, dilation 1, one group, run by the Winograd kernel core
// (conv/winograd.h) with the filter decoded and Winograd-transformed once, at compile time, and bias plus a
// consuming Relu / LeakyRelu / Clip fused into the output transform. Which tile: the model's (WinogradConv's tile,
// CodebookConv's winograd_tile, written by select-conv), else the roofline plan's (plan_winograd_tile), which
// declines the layer where onnxruntime's own Conv is predicted as fast; a declined CodebookConv is inlined and
// folded by onnxruntime into a plain Conv in its NCHWc kernels.
#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "../common.h"
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
    auto expect_ints = [&](const char* name, const std::vector<int64_t>& want) {
      std::vector<int64_t> v;
      if (a.get_ints(name, &v) && v != want)
        fail("attribute ", name, "=", shape_str(v), " is not run by the EP (it needs ", shape_str(want), ")");
    };
    expect_ints("kernel_shape", {3, 3});
    expect_ints("strides", {1, 1});
    expect_ints("dilations", {1, 1});
    if (a.optional_int("group", 1, 1, kMaxDim) != 1) fail("attribute group must be 1");
    std::string auto_pad;
    if (a.get_string("auto_pad", &auto_pad) && !auto_pad.empty() && auto_pad != "NOTSET")
      fail("attribute auto_pad=", auto_pad, " is not supported (explicit pads)");
    std::vector<int64_t> p;
    if (a.get_ints("pads", &p)) {
      if (p.size() != 4) fail("attribute pads needs 4 values, got ", shape_str(p));
      for (int i = 0; i < 4; ++i) {
        if (p[i] < 0 || p[i] > kMaxConvAttr) fail("attribute pads=", shape_str(p), " must be in [0, 2^31]");
        pads[i] = p[i];
      }
    }
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
      a.get_float("leaky_alpha", &leaky);
      a.get_float("clip_min", &lo);
      a.get_float("clip_max", &hi);
      if (std::isnan(leaky) || std::isnan(lo) || std::isnan(hi) || lo > hi)
        fail("attributes leaky_alpha, clip_min, clip_max must be numbers with clip_min <= clip_max");
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

// The fused activation node after a convolution (its sole consumer), or a null node.
Ort::ConstNode fusable_activation(const Ort::ConstNode& conv, const ConvAttrs& a) {
  if (a.has_activation()) return Ort::ConstNode{nullptr};
  std::vector<Ort::ConstValueInfo> outs = conv.GetOutputs();
  if (outs.size() != 1) return Ort::ConstNode{nullptr};
  Ort::ConstNode n = sole_consumer(outs[0]);
  float leaky, lo, hi;
  return activation_of(n, &leaky, &lo, &hi) ? n : Ort::ConstNode{nullptr};
}

// The Winograd tile for a node: the model's, else the plan's for X's static shape (0: declined).
int choose_tile(const ConvAttrs& a, const Ort::ConstValueInfo& x) {
  if (a.tile != 0) return a.tile;
  const std::vector<int64_t> xs = static_shape(x);
  if (xs.size() != 4 || xs[1] != a.C) return 0;
  const ConvGeom g{xs[0], a.C, xs[2], xs[3], a.M, xs[2] + a.pads[0] + a.pads[2] - 2, xs[3] + a.pads[1] + a.pads[3] - 2};
  return plan_winograd_tile(g);
}

struct ConvExec : Exec {
  std::unique_ptr<conv::WinogradConv> wino;
  int64_t C = 0, M = 0;
  int64_t pads[4] = {0, 0, 0, 0};
  std::vector<float> bias;
  conv::Epilogue epilogue;
  size_t x_index = 0;

  void compute(OrtKernelContext* context) override {
    Ort::KernelContext ctx(context);
    const Input x = get_input(ctx, x_index);
    expect(x, "X", ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT);
    if (x.shape.size() != 4) fail("X must have rank 4 (N, C, H, W), got ", shape_str(x.shape));
    const int64_t N = x.shape[0], H = x.shape[2], W = x.shape[3];
    if (x.shape[1] != C) fail("X has ", x.shape[1], " channels, the filter ", C, " (X shape ", shape_str(x.shape), ")");
    const int64_t OH = H + pads[0] + pads[2] - 2, OW = W + pads[1] + pads[3] - 2;
    if (OH < 1 || OW < 1) fail("input ", H, "x", W, " with its pads is smaller than the 3x3 kernel");
    const std::vector<int64_t> yshape{N, M, OH, OW};
    checked_elements(yshape, "output Y");
    Ort::UnownedValue yv = ctx.GetOutput(0, yshape);
    if (N == 0) return;
    OrtParallel par(ctx);
    wino->run(x.as<float>(), conv::TensorLayout::nchw(), N, H, W, pads, epilogue, yv.GetTensorMutableData<float>(),
              conv::TensorLayout::nchw(), par);
  }
};

// The float filter [M, C, 3, 3] of a CodebookConv, decoded from its constant codes and codebook (validated like
// the custom op validates them).
std::vector<float> decode_filter(const ConvAttrs& a, const std::vector<Ort::ConstValueInfo>& ins) {
  const Blob cb = expect_type(evaluate(ins[1]), "codebook", ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT);
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

}  // namespace

bool claim_conv(const Ort::ConstNode& node, const PlanOptions& plan, std::vector<Ort::ConstNode>* group) {
  if (plan.conv == 0 || !is_conv_op(node)) return false;
  std::vector<Ort::ConstValueInfo> ins = node.GetInputs();
  try {
    const ConvAttrs a(node);
    if (ins.empty() || !ins[0] || ins[0].IsConstantInitializer()) return false;
    std::vector<Ort::ConstNode> chain;
    const size_t n_weights = a.codebook ? 2 : 1, bias = n_weights + 1;
    for (size_t i = 1; i <= n_weights; ++i)
      if (i >= ins.size() || !constant_or_decoded(ins[i], &chain)) return false;
    if (ins.size() > bias && ins[bias] && !ins[bias].IsConstantInitializer()) return false;
    if (choose_tile(a, ins[0]) == 0) return false;
    *group = chain;
    group->push_back(node);
    Ort::ConstNode act = fusable_activation(node, a);
    if (act) group->push_back(act);
    return true;
  } catch (const OpError&) {
    return false;  // onnxruntime runs the node (and reports what is wrong with it)
  }
}

std::unique_ptr<Exec> build_conv(const Ort::ConstGraph& graph, const Ort::ConstNode& fused, const PlanOptions&) {
  Ort::ConstNode cv{nullptr}, act{nullptr};
  for (const Ort::ConstNode& n : graph.GetNodes()) {
    if (is_conv_op(n)) cv = n;
    if (n.GetDomain().empty()) act = n;
  }
  if (!cv) fail("compiled group without a convolution");
  const std::string where = cat(kEpName, ": ", node_desc(cv));
  auto exec = std::make_unique<ConvExec>();
  exec->label = where;
  std::vector<Ort::ConstValueInfo> ins = cv.GetInputs();
  try {
    ConvAttrs a(cv);
    float leaky = a.leaky, lo = a.lo, hi = a.hi;
    if (act && !activation_of(act, &leaky, &lo, &hi)) fail("cannot fuse ", node_desc(act));
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
      exec->bias.assign(b.as<float>(), b.as<float>() + b.count);
    }
    checked_elements({a.M, a.C, (tile + 2) * (tile + 2)}, "transformed W");
    exec->wino = std::make_unique<conv::WinogradConv>(tile, a.C, a.M, w.data());
    exec->C = a.C;
    exec->M = a.M;
    for (int i = 0; i < 4; ++i) exec->pads[i] = a.pads[i];
    exec->epilogue = conv::leaky_clip_epilogue(leaky, lo, hi);
    exec->epilogue.bias = exec->bias.empty() ? nullptr : exec->bias.data();
  } catch (const OpError& e) {
    const std::string msg = e.what();
    if (msg.rfind(kDomain, 0) == 0) throw OpError(cat(kEpName, ": ", msg));  // a decoder, already named
    throw OpError(cat(where, ": ", msg));
  }
  exec->x_index = fused_input_index(fused, ins[0].GetName(), where);
  return exec;
}

}  // namespace ep
}  // namespace onnxcomp
