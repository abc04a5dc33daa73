// TernaryMatMul: Y = X @ W + B with W[k, n] in {0, +a_p, -a_n} of column group n // group_size.
// Inputs: X float [..., K], scales float [G, 2] (a_p, a_n), codes uint8 [K, ceil(N/4)] 2-bit codes
// (0 -> 0, 1 -> +a_p, 2 -> -a_n, 3 -> invalid: an error here), B float [N] (optional).
// Attributes: N (> 0), group_size (> 0, default N). Runs as a 4-entry codebook matmul.
#include <algorithm>
#include <cstring>

#include "common.h"
#include "ops.h"

namespace onnxcomp {
namespace {

// first (row, column) holding code 3, or row == -1
std::pair<int64_t, int64_t> find_code3(const uint8_t* codes, int64_t K, int64_t row_bytes, int64_t N) {
  const int64_t full = N / 4;         // bytes whose 4 codes are all used
  const int rem = static_cast<int>(N % 4);
  const uint8_t last_mask = static_cast<uint8_t>((1u << (2 * rem)) - 1u);
  for (int64_t k = 0; k < K; ++k) {
    const uint8_t* row = codes + k * row_bytes;
    uint8_t any = 0;
    for (int64_t i = 0; i < full; ++i) any |= row[i] & (row[i] >> 1) & 0x55;
    if (rem) any |= row[full] & (row[full] >> 1) & 0x55 & last_mask;
    if (any) {
      for (int64_t n = 0; n < N; ++n)
        if (((row[n >> 2] >> (2 * (n & 3))) & 3) == 3) return {k, n};
    }
  }
  return {-1, -1};
}

struct TernaryMatMulKernel {
  std::string label;
  int64_t N = 0, group_size = 0;
  ConstInput const_codes, const_scales;
  GemvCodes gemv_codes;         // the GEMV's copy of constant codes
  FloatPanel panel;             // W decoded for many-row runs (constant codes and scales only)

  TernaryMatMulKernel(const OrtKernelInfo* info) : label(node_label("TernaryMatMul", info)) {
    Attrs a{info};
    N = a.required_int("N", 1, kMaxDim);
    group_size = a.optional_int("group_size", N, 1, kMaxDim);
    const_codes.init(info, 2);
    const_scales.init(info, 1);
    gemv_codes = prepack_for_gemv(const_codes, N, 2, group_size);
  }

  OrtStatusPtr ComputeV2(OrtKernelContext* context) {
    return guarded(label, [&] {
      Ort::KernelContext ctx(context);
      const Input x = get_input(ctx, 0);
      const Input scales = get_input(ctx, 1);
      const Input codes = get_input(ctx, 2);
      const Input bias = get_input(ctx, 3);
      expect(scales, "scales", ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT);
      expect(codes, "codes", ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8);
      const MatMulDims dims = matmul_x(x);
      const int64_t M = dims.M, K = dims.K;
      const int64_t G = ceil_div(N, group_size);
      if (scales.shape.size() != 2 || scales.shape[0] != G || scales.shape[1] != 2)
        fail("scales must have shape [G=", G, ", 2] (N=", N, ", group_size=", group_size, "), got ",
             shape_str(scales.shape));
      const int64_t row_bytes = ceil_div(N * 2, 8);
      if (codes.shape.size() != 2 || codes.shape[0] != K || codes.shape[1] != row_bytes)
        fail("codes must have shape [K=", K, ", ceil(N*2/8)=", row_bytes, "] (X is ", shape_str(x.shape),
             ", N=", N, "), got ", shape_str(codes.shape));
      const float* bias_data = nullptr;
      if (bias.present) {
        expect(bias, "B", ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT);
        if (bias.count != N || bias.shape.size() > 2 || (bias.shape.size() == 2 && bias.shape[0] != 1))
          fail("B must have shape [N=", N, "] or [1, N], got ", shape_str(bias.shape));
        bias_data = bias.as<float>();
      }
      if (!const_codes.skip(codes.data)) {
        const auto bad = find_code3(codes.as<uint8_t>(), K, row_bytes, N);
        if (bad.first >= 0)
          fail("invalid ternary code 3 at codes row ", bad.first, ", column ", bad.second,
               " (valid codes: 0 -> 0, 1 -> +a_p, 2 -> -a_n)");
        const_codes.mark(codes.data);
      }
      const float* s = scales.as<float>();
      std::vector<float> cb(static_cast<size_t>(G * 4));
      for (int64_t g = 0; g < G; ++g) {
        cb[g * 4 + 0] = 0.0f;
        cb[g * 4 + 1] = s[2 * g];
        cb[g * 4 + 2] = -s[2 * g + 1];
        cb[g * 4 + 3] = 0.0f;
      }
      std::vector<int64_t> yshape = x.shape;
      yshape.back() = N;
      checked_elements(yshape, "output Y");
      Ort::UnownedValue yv = ctx.GetOutput(0, yshape);
      float* y = yv.GetTensorMutableData<float>();
      CodebookWeights w{codes.as<uint8_t>(), cb.data(), K, N, row_bytes, group_size, G, 2, nullptr};
      if (codes.data == const_codes.data) gemv_codes.attach(&w);
      const bool constant =
          codes.data == const_codes.data && scales.data == const_scales.data && scales.data != nullptr;
      run_codebook_matmul(ctx, x.as<float>(), M, w, bias_data, y, constant ? &panel : nullptr);
    });
  }
};

struct TernaryMatMulOp : Ort::CustomOpBase<TernaryMatMulOp, TernaryMatMulKernel, true> {
  OrtStatusPtr CreateKernelV2(const OrtApi&, const OrtKernelInfo* info, void** kernel) const {
    return guarded(node_label("TernaryMatMul", info), [&] { *kernel = new TernaryMatMulKernel(info); });
  }
  const char* GetName() const { return "TernaryMatMul"; }
  size_t GetInputTypeCount() const { return 4; }
  ONNXTensorElementDataType GetInputType(size_t i) const {
    return i == 2 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8 : ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  }
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t i) const {
    return i == 3 ? INPUT_OUTPUT_OPTIONAL : INPUT_OUTPUT_REQUIRED;
  }
  size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; }
  TernaryMatMulOp() { install_shape_inference(this); }
  static OrtStatusPtr InferShape(OrtShapeInferContext* raw) { return infer_matmul_shape(raw, "TernaryMatMul"); }
};

}  // namespace

const OrtCustomOp* ternary_matmul_op() {
  static const TernaryMatMulOp op;
  return &op;
}

}  // namespace onnxcomp
