// CodebookMatMul: Y = X @ W + B with W[k, n] = codebook[(n // group_size) * nblocks + k // block_size, code(k, n)].
// Inputs: X float [..., K], codebook float [G * nblocks, C <= 2^bits], codes uint8 [K, ceil(N*bits/8)],
// B float [N] (optional). Attributes: bits (1..8), N (> 0), group_size (> 0, default N), block_size (> 0, default:
// all K inputs, nblocks = 1). Block codebooks run as a GEMM on W decoded into the GEMM's float panel (once, for
// constant codes and codebook); without blocks, 1-4 rows of X take the register-decoding GEMV.
#include <algorithm>
#include <cstring>

#include "common.h"
#include "ops.h"

namespace onnxcomp {
namespace {

struct CodebookMatMulKernel {
  std::string label;
  int bits = 0;
  int64_t N = 0, group_size = 0, block_size = 0;
  ConstInput const_codes, const_codebook;
  std::vector<uint8_t> packed;  // prepacked copy of constant codes (the AVX-512 and AVX2 GEMVs)
  FloatPanel panel;             // W decoded for many-row runs (constant codes and codebook only)
  FloatPanel block_panel;       // W of block codebooks, decoded for every run (constant codes and codebook only)

  CodebookMatMulKernel(const OrtKernelInfo* info) : label(node_label("CodebookMatMul", info)) {
    Attrs a{info};
    bits = static_cast<int>(a.required_int("bits", 1, 8));
    N = a.required_int("N", 1, kMaxDim);
    group_size = a.optional_int("group_size", N, 1, kMaxDim);
    block_size = a.optional_int("block_size", kMaxDim, 1, kMaxDim);
    const_codes.init(info, 2);
    const_codebook.init(info, 1);
    if (std::string(kernels().name) != "scalar") packed = maybe_prepack(const_codes, N, bits);
  }

  OrtStatusPtr ComputeV2(OrtKernelContext* context) {
    return guarded(label, [&] {
      Ort::KernelContext ctx(context);
      const Input x = get_input(ctx, 0);
      const Input cb = get_input(ctx, 1);
      const Input codes = get_input(ctx, 2);
      const Input bias = get_input(ctx, 3);
      expect(codes, "codes", ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8);
      const MatMulDims dims = matmul_x(x);
      const int64_t M = dims.M, K = dims.K;
      const int64_t nblocks = block_count(K, block_size);
      const int64_t G = ceil_div(N, group_size) * nblocks;  // codebook rows
      check_codebook(cb, N, group_size, bits, nblocks);
      const int64_t entries = int64_t{1} << bits;
      const int64_t row_bytes = ceil_div(N * bits, 8);
      if (codes.shape.size() != 2 || codes.shape[0] != K || codes.shape[1] != row_bytes)
        fail("codes must have shape [K=", K, ", ceil(N*bits/8)=", row_bytes, "] (X is ", shape_str(x.shape),
             ", N=", N, ", bits=", bits, "), got ", shape_str(codes.shape));
      const float* bias_data = nullptr;
      if (bias.present) {
        expect(bias, "B", ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT);
        if (bias.count != N || bias.shape.size() > 2 || (bias.shape.size() == 2 && bias.shape[0] != 1))
          fail("B must have shape [N=", N, "] or [1, N], got ", shape_str(bias.shape));
        bias_data = bias.as<float>();
      }
      const int64_t C = cb.shape[1];
      std::vector<float> padded;
      const float* cbp = cb.as<float>();
      if (C < entries) {
        if (!const_codes.skip(codes.data)) {
          const uint32_t mx = max_code(codes.as<uint8_t>(), K, row_bytes, N, bits);
          if (mx >= static_cast<uint32_t>(C))
            fail("code ", mx, " is out of range for a codebook of ", C, " entries");
          const_codes.mark(codes.data);
        }
        padded = pad_codebook(cbp, G, C, bits);
        cbp = padded.data();
      }
      std::vector<int64_t> yshape = x.shape;
      yshape.back() = N;
      checked_elements(yshape, "output Y");
      Ort::UnownedValue yv = ctx.GetOutput(0, yshape);
      float* y = yv.GetTensorMutableData<float>();
      const bool constant = codes.data == const_codes.data && cb.data == const_codebook.data && cb.data != nullptr;
      if (nblocks > 1) {
        const BlockCodebookWeights bw{codes.as<uint8_t>(), cbp, K, N, row_bytes, group_size, block_size, nblocks,
                                      bits, false};
        const float* bp = constant ? block_panel.get(ctx, block_codebook_panel, &bw, K, N) : nullptr;
        run_panel_gemm(ctx, x.as<float>(), M, K, N, bp, block_codebook_panel, &bw, bias_data, y, false);
        return;
      }
      CodebookWeights w{codes.as<uint8_t>(), cbp, K, N, row_bytes, group_size, G, bits, nullptr};
      if (!packed.empty() && codes.data == const_codes.data) w.packed = packed.data();
      run_codebook_matmul(ctx, x.as<float>(), M, w, bias_data, y, constant ? &panel : nullptr);
    });
  }
};

struct CodebookMatMulOp : Ort::CustomOpBase<CodebookMatMulOp, CodebookMatMulKernel, true> {
  OrtStatusPtr CreateKernelV2(const OrtApi&, const OrtKernelInfo* info, void** kernel) const {
    return guarded(node_label("CodebookMatMul", info), [&] { *kernel = new CodebookMatMulKernel(info); });
  }
  const char* GetName() const { return "CodebookMatMul"; }
  size_t GetInputTypeCount() const { return 4; }
  ONNXTensorElementDataType GetInputType(size_t i) const {
    return i == 2 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8 : ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  }
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t i) const {
    return i == 3 ? INPUT_OUTPUT_OPTIONAL : INPUT_OUTPUT_REQUIRED;
  }
  size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; }
  CodebookMatMulOp() { install_shape_inference(this); }
  static OrtStatusPtr InferShape(OrtShapeInferContext* raw) { return infer_matmul_shape(raw, "CodebookMatMul"); }
};

}  // namespace

const OrtCustomOp* codebook_matmul_op() {
  static const CodebookMatMulOp op;
  return &op;
}

}  // namespace onnxcomp
