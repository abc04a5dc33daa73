// CodebookGather: Y[i..., d] = codebook[r // group_size, code(r, d)] with r = indices[i...] (+ V if negative):
// Gather(table, indices, axis=0) on a table of V rows of D values stored as bit-packed codebook codes.
// Inputs: codebook float or float16 [G, C] (C <= 2**bits entries per row, G = ceil(V / group_size)), codes uint8
// [V, ceil(D*bits/8)], indices int32 or int64 of any shape. Attributes: bits (1..8), D (> 0), group_size
// (> 0, default V). Only the gathered rows are unpacked and decoded. An index outside [-V, V) or a code >= C is
// an error.
#include <algorithm>
#include <cstring>

#include "common.h"
#include "ops.h"

namespace onnxcomp {
namespace {

struct CodebookGatherKernel {
  std::string label;
  int64_t bits = 0, D = 0, group_size = 0;
  ConstInput const_codebook;
  ConstFloats codebook_floats;  // a constant float16 codebook as float32 (one per row group of a large table)

  CodebookGatherKernel(const OrtKernelInfo* info) : label(node_label("CodebookGather", info)) {
    Attrs a{info};
    bits = a.required_int("bits", 1, 8);
    D = a.required_int("D", 1, kMaxDim);
    group_size = a.optional_int("group_size", kMaxDim, 1, kMaxDim);  // absent: one codebook (the spec's default)
    const_codebook.init(info, 0);
  }

  OrtStatusPtr ComputeV2(OrtKernelContext* context) {
    return guarded(label, [&] {
      Ort::KernelContext ctx(context);
      std::vector<float> cb_floats;  // a float16 codebook as float32
      const Input cb = float_codebook(get_input(ctx, 0), &cb_floats, const_codebook, &codebook_floats);
      const Input codes = get_input(ctx, 1);
      const Input idx = get_input(ctx, 2);
      expect(codes, "codes", ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8);
      if (idx.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64 && idx.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32)
        fail("indices must be int32 or int64, got ", type_name(idx.type));
      const int64_t row_bytes = ceil_div(checked_mul(D, bits, "D * bits"), 8);
      if (codes.shape.size() != 2 || codes.shape[1] != row_bytes)
        fail("codes must have shape [V, ceil(D*bits/8)=", row_bytes, "] (D=", D, ", bits=", bits, "), got ",
             shape_str(codes.shape));
      const int64_t V = codes.shape[0];
      const int64_t G = ceil_div(V, group_size);
      if (cb.shape.size() != 2 || cb.shape[0] != G || cb.shape[1] < 1 || cb.shape[1] > (int64_t{1} << bits))
        fail("codebook must have shape [G=", G, ", C] with 1 <= C <= 2**bits=", int64_t{1} << bits, " (V=", V,
             ", group_size=", group_size, "), got ", shape_str(cb.shape));
      const int64_t C = cb.shape[1];
      std::vector<int64_t> yshape = idx.shape;
      yshape.push_back(D);
      Ort::UnownedValue yv = ctx.GetOutput(0, yshape);
      float* y = yv.GetTensorMutableData<float>();
      const int64_t n = idx.count;
      if (n == 0) return;
      const bool partial = C < (int64_t{1} << bits);  // entries past C: padded with zeros, codes checked
      std::vector<float> padded;
      if (partial) padded = pad_codebook(cb.as<float>(), G, C, static_cast<int>(bits));
      gather_codebook_rows(ctx, idx, codes.as<uint8_t>(), V, row_bytes, D, static_cast<int>(bits),
                           partial ? padded.data() : cb.as<float>(), C, group_size, partial, y);
    });
  }
};

struct CodebookGatherOp : Ort::CustomOpBase<CodebookGatherOp, CodebookGatherKernel, true> {
  OrtStatusPtr CreateKernelV2(const OrtApi&, const OrtKernelInfo* info, void** kernel) const {
    return guarded(node_label("CodebookGather", info), [&] { *kernel = new CodebookGatherKernel(info); });
  }
  const char* GetName() const { return "CodebookGather"; }
  size_t GetInputTypeCount() const { return 3; }
  ONNXTensorElementDataType GetInputType(size_t i) const {
    if (i == 1) return ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8;
    // the codebook (float or float16) and the indices (int32 or int64): checked at run time
    return ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
  }
  size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; }
  CodebookGatherOp() { install_shape_inference(this); }
  static OrtStatusPtr InferShape(OrtShapeInferContext* raw) {
    try {
      Ort::ShapeInferContext ctx(&Ort::GetApi(), raw);
      if (ctx.GetInputCount() < 3) return nullptr;
      Ort::ShapeInferContext::Shape shape = ctx.GetInputShape(2);
      const int64_t d = ctx.GetAttrInt("D");
      if (d <= 0 || d > kMaxDim)
        return Ort::GetApi().CreateStatus(ORT_INVALID_ARGUMENT,
                                          cat(kDomain, ".CodebookGather: attribute D=", d, " must be in [1, 2^40]").c_str());
      if (shape.empty()) return nullptr;  // unknown rank (or a scalar index): left to the run
      shape.push_back(Ort::ShapeInferContext::SymbolicInteger(d));
      return set_output_shape(raw, shape);
    } catch (const std::exception& e) {
      return Ort::GetApi().CreateStatus(ORT_INVALID_ARGUMENT,
                                        cat(kDomain, ".CodebookGather: shape inference: ", e.what()).c_str());
    }
  }
};

}  // namespace

const OrtCustomOp* codebook_gather_op() {
  static const CodebookGatherOp op;
  return &op;
}

}  // namespace onnxcomp
