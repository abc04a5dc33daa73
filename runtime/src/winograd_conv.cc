// WinogradConv: Y = clip(leaky(Conv(X, W) + B)) for a 3x3, stride-1, dilation-1, one-group convolution,
// computed with Winograd F(m x m, 3 x 3) (conv/winograd.h).
// Inputs: X float [N, C, H, W], W float [M, C, 3, 3] (a constant initializer: transformed once, when the
// kernel is created; otherwise transformed on every run), B float [M] (optional).
// Attributes: tile (2, 4 or 6; default 4), pads (top, left, bottom, right; default 0), the Conv attributes
// kernel_shape (3, 3), strides (1, 1), dilations (1, 1), group (1) with only these values accepted, and the
// fused activation y = min(max(v < 0 ? leaky_alpha * v : v, clip_min), clip_max) with leaky_alpha (default 1:
// none; 0: Relu), clip_min and clip_max (default -inf, +inf).
#include <cmath>
#include <limits>
#include <memory>
#include <mutex>

#include "common.h"
#include "conv/winograd.h"
#include "ops.h"

namespace onnxcomp {
namespace {

constexpr int64_t kMaxPad = int64_t{1} << 31;

struct WinogradConvKernel {
  std::string label;
  int tile = 4;
  int64_t pads[4] = {0, 0, 0, 0};
  float leaky = 1.0f, clip_min = -std::numeric_limits<float>::infinity(),
        clip_max = std::numeric_limits<float>::infinity();
  ConstInput const_w;
  std::unique_ptr<conv::WinogradConv> plan;  // for the constant W

  explicit WinogradConvKernel(const OrtKernelInfo* info) : label(node_label("WinogradConv", info)) {
    Attrs a{info};
    tile = static_cast<int>(a.optional_int("tile", 4, 2, 6));
    if (!conv::WinogradConv::tile_supported(tile)) fail("attribute tile=", tile, " must be 2, 4 or 6");
    const std::vector<int64_t> p = winograd_conv_pads(a, "WinogradConv");
    for (int i = 0; i < 4; ++i) pads[i] = p[i];  // ONNX order: x1_begin, x2_begin, x1_end, x2_end
    winograd_conv_activation(a, &leaky, &clip_min, &clip_max);
    const_w.init(info, 1);
    if (const_w.data != nullptr) {
      const std::vector<int64_t>& ws = const_w.shape;
      if (ws.size() != 4 || ws[0] < 1 || ws[1] < 1 || ws[2] != 3 || ws[3] != 3)
        fail("W must have shape [M, C, 3, 3], got ", shape_str(ws));
      checked_elements({ws[0], ws[1], (tile + 2) * (tile + 2)}, "transformed W");
      plan.reset(new conv::WinogradConv(tile, ws[1], ws[0], static_cast<const float*>(const_w.data)));
      const_w.mark(const_w.data);
    }
  }

  OrtStatusPtr ComputeV2(OrtKernelContext* context) {
    return guarded(label, [&] {
      Ort::KernelContext ctx(context);
      const Input x = get_input(ctx, 0);
      const Input w = get_input(ctx, 1);
      const Input b = get_input(ctx, 2);
      expect(x, "X", ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT);
      expect(w, "W", ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT);
      if (x.shape.size() != 4) fail("X must have rank 4 (N, C, H, W), got ", shape_str(x.shape));
      if (w.shape.size() != 4 || w.shape[0] < 1 || w.shape[1] < 1 || w.shape[2] != 3 || w.shape[3] != 3)
        fail("W must have shape [M, C, 3, 3], got ", shape_str(w.shape));
      const int64_t N = x.shape[0], C = x.shape[1], H = x.shape[2], Wd = x.shape[3], M = w.shape[0];
      if (C != w.shape[1]) fail("X has ", C, " channels, W has ", w.shape[1], " (W shape ", shape_str(w.shape), ")");
      const float* bias = nullptr;
      if (b.present) {
        expect(b, "B", ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT);
        if (b.shape.size() != 1 || b.shape[0] != M) fail("B must have shape [M=", M, "], got ", shape_str(b.shape));
        bias = b.as<float>();
      }
      const int64_t OH = H + pads[0] + pads[2] - 2, OW = Wd + pads[1] + pads[3] - 2;
      if (OH < 1 || OW < 1)
        fail("input ", H, "x", Wd, " with pads ", shape_str({pads[0], pads[1], pads[2], pads[3]}),
             " is smaller than the 3x3 kernel");
      const std::vector<int64_t> yshape{N, M, OH, OW};
      checked_elements(yshape, "output Y");
      Ort::UnownedValue yv = ctx.GetOutput(0, yshape);
      if (N == 0) return;
      const conv::WinogradConv* p = plan.get();
      std::unique_ptr<conv::WinogradConv> local;
      if (p == nullptr || w.data != const_w.data) {
        checked_elements({M, C, (tile + 2) * (tile + 2)}, "transformed W");
        local.reset(new conv::WinogradConv(tile, C, M, w.as<float>()));
        p = local.get();
      }
      const conv::Epilogue ep = [&] {
        conv::Epilogue e = conv::leaky_clip_epilogue(leaky, clip_min, clip_max);
        e.bias = bias;
        return e;
      }();
      OrtParallel par(ctx);
      p->run(x.as<float>(), conv::TensorLayout::nchw(), N, H, Wd, pads, ep, yv.GetTensorMutableData<float>(),
             conv::TensorLayout::nchw(), par);
    });
  }
};

struct WinogradConvOp : Ort::CustomOpBase<WinogradConvOp, WinogradConvKernel, true> {
  OrtStatusPtr CreateKernelV2(const OrtApi&, const OrtKernelInfo* info, void** kernel) const {
    return guarded(node_label("WinogradConv", info), [&] { *kernel = new WinogradConvKernel(info); });
  }
  const char* GetName() const { return "WinogradConv"; }
  size_t GetInputTypeCount() const { return 3; }
  ONNXTensorElementDataType GetInputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; }
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t i) const {
    return i == 2 ? INPUT_OUTPUT_OPTIONAL : INPUT_OUTPUT_REQUIRED;
  }
  size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; }

  WinogradConvOp() { install_shape_inference(this); }
  static OrtStatusPtr InferShape(OrtShapeInferContext* raw) {
    try {
      Ort::ShapeInferContext ctx(&Ort::GetApi(), raw);
      if (ctx.GetInputCount() < 2) return nullptr;
      const Ort::ShapeInferContext::Shape xs = ctx.GetInputShape(0), ws = ctx.GetInputShape(1);
      if (xs.size() != 4 || ws.size() != 4) return nullptr;  // checked at run time
      std::vector<int64_t> pa;
      try {
        pa = ctx.GetAttrInts("pads");
      } catch (...) {
        pa.assign(4, 0);
      }
      if (pa.size() != 4) return nullptr;
      Ort::ShapeInferContext::Shape out{xs[0], ws[0]};
      for (int i = 0; i < 2; ++i) {
        const auto& d = xs[2 + i];
        if (!d.IsInt() || d.AsInt() < 0 || d.AsInt() > kMaxDim || pa[i] < 0 || pa[i] > kMaxPad || pa[2 + i] < 0 ||
            pa[2 + i] > kMaxPad)
          return nullptr;  // unknown until run time, or rejected there with details
        const int64_t o = d.AsInt() + pa[i] + pa[2 + i] - 2;
        if (o < 1) return nullptr;
        out.emplace_back(o);
      }
      return set_output_shape(raw, out);
    } catch (const std::exception& e) {
      return Ort::GetApi().CreateStatus(ORT_INVALID_ARGUMENT,
                                        cat(kDomain, ".WinogradConv: shape inference: ", e.what()).c_str());
    }
  }
};

}  // namespace

const OrtCustomOp* winograd_conv_op() {
  static const WinogradConvOp op;
  return &op;
}

}  // namespace onnxcomp
