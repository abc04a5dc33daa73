// HuffmanDecode and RunLengthDecode: native kernels for the weight-decoding ops of OPS.md.
// onnxruntime never constant-folds a custom op, so without care the decode would run at every inference
// (and their function bodies, when no kernel is registered, fold at load through ~20 int32 temporaries per
// coded bit). Here constant inputs are decoded once, when the kernel is created (a corrupt stream then fails
// session creation with INVALID_ARGUMENT naming the node), and non-constant inputs (a RunLengthDecode fed by
// a HuffmanDecode) are decoded again only when their bytes change; every run copies the cached result out.
//
// HuffmanDecode: stream uint8 [S], table uint8 [2, n], offsets int32 [ceil(count/1024)]; attribute shape
// (ints, count = prod(shape)); Y uint8 of shape.
// RunLengthDecode: symbols uint8 [E]; attributes bits (1..7), count (codes per row), shape ([R, row bytes]);
// Y uint8 of shape.
#include <cstring>
#include <memory>
#include <mutex>

#include "common.h"
#include "decode.h"
#include "ops.h"

namespace onnxcomp {
namespace {

OrtStatusPtr set_uint8_shape(OrtShapeInferContext* ctx, const std::vector<int64_t>& dims) {
  const OrtApi& api = Ort::GetApi();
  OrtTensorTypeAndShapeInfo* info = nullptr;
  OrtStatus* st = api.CreateTensorTypeAndShapeInfo(&info);
  if (st) return st;
  if (!(st = api.SetTensorElementType(info, ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8)) &&
      !(st = api.SetDimensions(info, dims.data(), dims.size()))) {
    st = api.ShapeInferContext_SetOutputTypeShape(ctx, 0, info);
  }
  api.ReleaseTensorTypeAndShapeInfo(info);
  return st;
}

// Output shape from the `shape` attribute (validated: non-negative dims, product overflow-checked and at most
// kMaxElements: the output is allocated from it, possibly at kernel creation).
std::vector<int64_t> shape_attr(const std::vector<int64_t>& shape, int64_t* count) {
  *count = checked_elements(shape, "attribute shape");
  return shape;
}

OrtStatusPtr infer_from_shape_attr(OrtShapeInferContext* raw, const char* op) {
  try {
    Ort::ShapeInferContext ctx(&Ort::GetApi(), raw);
    int64_t count = 0;
    return set_uint8_shape(raw, shape_attr(ctx.GetAttrInts("shape"), &count));
  } catch (const std::exception& e) {
    return Ort::GetApi().CreateStatus(ORT_INVALID_ARGUMENT, cat(kDomain, ".", op, ": shape inference: ", e.what()).c_str());
  }
}

// The decoded bytes of the last input seen, and a copy of that input (to tell whether it changed).
struct DecodeCache {
  std::mutex mu;
  std::vector<uint8_t> key;  // input bytes the output was decoded from (non-constant inputs)
  std::shared_ptr<const std::vector<uint8_t>> out;
};

struct HuffmanDecodeKernel {
  std::string label;
  std::vector<int64_t> shape;
  int64_t count = 0;
  ConstInput c_stream, c_table, c_offsets;
  std::shared_ptr<const std::vector<uint8_t>> constant_out;  // decoded at creation from constant inputs

  HuffmanDecodeKernel(const OrtKernelInfo* info) : label(node_label("HuffmanDecode", info)) {
    Attrs a{info};
    std::vector<int64_t> s;
    if (!a.get_ints("shape", &s)) fail("attribute 'shape' (ints) is required");
    shape = shape_attr(s, &count);
    c_stream.init(info, 0);
    c_table.init(info, 1);
    c_offsets.init(info, 2);
    if (c_stream.data && c_table.data && c_offsets.data) {
      const HuffmanInputs in = inputs_from(c_stream.data, c_stream.shape, c_table.data, c_table.shape, c_offsets.data,
                                           c_offsets.shape);
      auto out = std::make_shared<std::vector<uint8_t>>(static_cast<size_t>(count));
      huffman_decode(in, count, out->data());
      constant_out = std::move(out);
    }
  }

  static int64_t numel(const std::vector<int64_t>& s) {
    int64_t n = 1;
    for (int64_t d : s) n *= d;
    return n;
  }

  HuffmanInputs inputs_from(const void* stream, const std::vector<int64_t>& ss, const void* table,
                            const std::vector<int64_t>& ts, const void* offsets, const std::vector<int64_t>& os) const {
    if (ss.size() != 1) fail("stream must be 1-D, got ", shape_str(ss));
    if (ts.size() != 2 || ts[0] != 2) fail("table must have shape [2, n], got ", shape_str(ts));
    if (os.size() != 1) fail("offsets must be 1-D, got ", shape_str(os));
    return HuffmanInputs{static_cast<const uint8_t*>(stream), ss[0], static_cast<const uint8_t*>(table), ts[1],
                         static_cast<const int32_t*>(offsets), numel(os)};
  }

  OrtStatusPtr ComputeV2(OrtKernelContext* context) {
    return guarded(label, [&] {
      Ort::KernelContext ctx(context);
      const Input stream = get_input(ctx, 0), table = get_input(ctx, 1), offsets = get_input(ctx, 2);
      expect(stream, "stream", ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8);
      expect(table, "table", ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8);
      expect(offsets, "offsets", ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32);
      Ort::UnownedValue yv = ctx.GetOutput(0, shape);
      uint8_t* y = yv.GetTensorMutableData<uint8_t>();
      if (constant_out && stream.data == c_stream.data && table.data == c_table.data && offsets.data == c_offsets.data) {
        if (count > 0) std::memcpy(y, constant_out->data(), static_cast<size_t>(count));
        return;
      }
      const HuffmanInputs in = inputs_from(stream.data, stream.shape, table.data, table.shape, offsets.data, offsets.shape);
      huffman_check(in, count);
      const int64_t chunks = ceil_div(count, kHuffmanChunk);
      constexpr int64_t kChunksPerTask = 256;
      parallel_for(ctx, static_cast<size_t>(ceil_div(chunks, kChunksPerTask)), [&](size_t t) {
        const int64_t c0 = static_cast<int64_t>(t) * kChunksPerTask;
        huffman_decode_chunks(in, count, c0, std::min(chunks, c0 + kChunksPerTask), y);
      });
    });
  }
};

struct RunLengthDecodeKernel {
  std::string label;
  int bits = 0;
  int64_t n = 0, rows = 0, row_bytes = 0;
  std::vector<int64_t> shape;
  ConstInput c_symbols;
  DecodeCache cache;

  RunLengthDecodeKernel(const OrtKernelInfo* info) : label(node_label("RunLengthDecode", info)) {
    Attrs a{info};
    bits = static_cast<int>(a.required_int("bits", 1, 7));
    n = a.required_int("count", 0, kMaxDim);
    if (!a.get_ints("shape", &shape)) fail("attribute 'shape' (ints) is required");
    if (shape.size() != 2) fail("attribute shape=", shape_str(shape), " must be [rows, ceil(count*bits/8)]");
    int64_t total = 0;
    shape_attr(shape, &total);
    rows = shape[0];
    row_bytes = shape[1];
    run_length_check(-1, bits, n, rows, row_bytes);  // attribute consistency (symbol count checked later)
    c_symbols.init(info, 0);
    if (c_symbols.data) {
      if (c_symbols.shape.size() != 1) fail("symbols must be 1-D, got ", shape_str(c_symbols.shape));
      auto out = std::make_shared<std::vector<uint8_t>>(static_cast<size_t>(rows * row_bytes));
      run_length_decode(static_cast<const uint8_t*>(c_symbols.data), c_symbols.shape[0], bits, n, rows, row_bytes,
                        out->data());
      cache.out = std::move(out);
    }
  }

  OrtStatusPtr ComputeV2(OrtKernelContext* context) {
    return guarded(label, [&] {
      Ort::KernelContext ctx(context);
      const Input sym = get_input(ctx, 0);
      expect(sym, "symbols", ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8);
      if (sym.shape.size() != 1) fail("symbols must be 1-D, got ", shape_str(sym.shape));
      Ort::UnownedValue yv = ctx.GetOutput(0, shape);
      uint8_t* y = yv.GetTensorMutableData<uint8_t>();
      const size_t out_bytes = static_cast<size_t>(rows * row_bytes);
      std::shared_ptr<const std::vector<uint8_t>> out;
      {
        std::lock_guard<std::mutex> lock(cache.mu);
        const bool constant = c_symbols.data != nullptr && sym.data == c_symbols.data;
        const size_t nbytes = static_cast<size_t>(sym.count);
        if (cache.out && (constant || (cache.key.size() == nbytes && (nbytes == 0 || std::memcmp(cache.key.data(), sym.data, nbytes) == 0)))) {
          out = cache.out;
        } else {
          auto fresh = std::make_shared<std::vector<uint8_t>>(out_bytes);
          run_length_decode(sym.as<uint8_t>(), sym.count, bits, n, rows, row_bytes, fresh->data());
          if (!constant) cache.key.assign(sym.as<uint8_t>(), sym.as<uint8_t>() + nbytes);
          cache.out = fresh;
          out = std::move(fresh);
        }
      }
      if (out_bytes > 0) std::memcpy(y, out->data(), out_bytes);
    });
  }
};

struct HuffmanDecodeOp : Ort::CustomOpBase<HuffmanDecodeOp, HuffmanDecodeKernel, true> {
  OrtStatusPtr CreateKernelV2(const OrtApi&, const OrtKernelInfo* info, void** kernel) const {
    return guarded(node_label("HuffmanDecode", info), [&] { *kernel = new HuffmanDecodeKernel(info); });
  }
  const char* GetName() const { return "HuffmanDecode"; }
  size_t GetInputTypeCount() const { return 3; }
  ONNXTensorElementDataType GetInputType(size_t i) const {
    return i == 2 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32 : ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8;
  }
  size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8; }
  HuffmanDecodeOp() { install_shape_inference(this); }
  static OrtStatusPtr InferShape(OrtShapeInferContext* raw) { return infer_from_shape_attr(raw, "HuffmanDecode"); }
};

struct RunLengthDecodeOp : Ort::CustomOpBase<RunLengthDecodeOp, RunLengthDecodeKernel, true> {
  OrtStatusPtr CreateKernelV2(const OrtApi&, const OrtKernelInfo* info, void** kernel) const {
    return guarded(node_label("RunLengthDecode", info), [&] { *kernel = new RunLengthDecodeKernel(info); });
  }
  const char* GetName() const { return "RunLengthDecode"; }
  size_t GetInputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetInputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8; }
  size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8; }
  RunLengthDecodeOp() { install_shape_inference(this); }
  static OrtStatusPtr InferShape(OrtShapeInferContext* raw) { return infer_from_shape_attr(raw, "RunLengthDecode"); }
};

}  // namespace

const OrtCustomOp* huffman_decode_op() {
  static const HuffmanDecodeOp op;
  return &op;
}

const OrtCustomOp* run_length_decode_op() {
  static const RunLengthDecodeOp op;
  return &op;
}

}  // namespace onnxcomp
