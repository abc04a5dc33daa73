// CodebookMatMul: Y = X @ W + B with W[k, n] = codebook[(n // group_size) * nblocks + k // block_size, code(k, n)].
// Inputs: X float [..., K], codebook float or float16 [G * nblocks, C <= 2^bits], codes uint8 [K, ceil(N*bits/8)],
// B float [N] (optional). Attributes: bits (1..8), N (> 0), group_size (> 0, default N), block_size (> 0, default:
// all K inputs, nblocks = 1). 1-4 rows of X take the register-decoding GEMV (with block codebooks block by block,
// accumulated); more rows a GEMM on W decoded into the GEMM's float panel (once, for constant codes and codebook).
#include <algorithm>
#include <cstring>

#include "common.h"
#include "ops.h"

namespace onnxcomp {
namespace {

constexpr int64_t kBlockGemvRows = 4;     // up to this many rows of X: the register-decoding GEMV, block by block
constexpr int64_t kBlockColumnTask = 1024;  // columns per parallel task (a multiple of the GEMV's 128)

// Constant block codes prepacked for the GEMV: block b's rows at buf.data() + offsets[b].
struct PackedBlocks {
  PageBuffer buf;
  std::vector<size_t> offsets;
  const uint8_t* block(int64_t b) const { return buf.data() + offsets[static_cast<size_t>(b)]; }
};

// Block codebooks, 1-4 rows of X: Y = bias, then per block b the register-decoding GEMV of its rows of W with its
// codebook rows (books: [nblocks][G][2^bits], the codebook regrouped by block) adds X[:, block] @ W[block, :];
// the columns it does not cover (on every block) are written whole by the GEMM on the block panel.
void run_block_gemv(Ort::KernelContext& ctx, const float* x, int64_t M, const BlockCodebookWeights& bw,
                    const float* books, const PackedBlocks* packed, const float* bias,
                    float* y) {
  const KernelTable& kt = kernels();
  const int64_t K = bw.rows, N = bw.cols, G = ceil_div(N, bw.group_size), E = int64_t{1} << bw.bits;
  for (int64_t m = 0; m < M; ++m) {
    if (bias != nullptr) {
      std::memcpy(y + m * N, bias, static_cast<size_t>(N) * sizeof(float));
    } else {
      std::fill(y + m * N, y + m * N + N, 0.0f);
    }
  }
  parallel_for(ctx, static_cast<size_t>(ceil_div(N, kBlockColumnTask)), [&](size_t t) {
    const int64_t n0 = static_cast<int64_t>(t) * kBlockColumnTask, n1 = std::min(N, n0 + kBlockColumnTask);
    int64_t done = n1;
    for (int64_t b = 0; b < bw.nblocks && done > n0; ++b) {
      const int64_t k0 = b * bw.block_size, kb = std::min(bw.block_size, K - k0);
      const uint8_t* pk = packed != nullptr ? packed->block(b) : nullptr;
      const CodebookWeights w{bw.codes + k0 * bw.row_bytes, books + b * G * E, kb, N, bw.row_bytes,
                              bw.group_size, G, bw.bits, pk};
      // columns [n0, done) covered by every block so far: the rest is rewritten by the GEMM below
      done = std::min(done, kt.codebook_gemv(x + k0, M, K, w, y, N, n0, done));
    }
    if (done < n1) kt.gemm_rows(M, K, x, K, nullptr, block_codebook_panel, &bw, bias, false, y, N, done, n1);
  });
}

struct CodebookMatMulKernel {
  std::string label;
  int bits = 0;
  int64_t N = 0, group_size = 0, block_size = 0;
  ConstInput const_codes, const_codebook;
  ConstFloats codebook_floats;  // a constant float16 codebook as float32
  GemvCodes gemv_codes;          // the GEMV's copy of constant codes (one block of inputs)
  FloatPanel panel;             // W decoded for many-row runs (constant codes and codebook only)
  FloatPanel block_panel;       // W of block codebooks for runs of more than 4 rows (constant codes and codebook)
  PackedBlocks packed_blocks;  // constant block codes prepacked for the GEMV, block by block

  CodebookMatMulKernel(const OrtKernelInfo* info) : label(node_label("CodebookMatMul", info)) {
    Attrs a{info};
    bits = static_cast<int>(a.required_int("bits", 1, 8));
    N = a.required_int("N", 1, kMaxDim);
    group_size = a.optional_int("group_size", N, 1, kMaxDim);
    block_size = a.optional_int("block_size", kMaxDim, 1, kMaxDim);
    const_codes.init(info, 2);
    const_codebook.init(info, 1);
    // the GEMV's copy of constant codes: whole (one block of inputs; or block codebooks that change within 16
    // columns, which the column layout reads whole, looking up each 16 rows in their block's codebook) or block by
    // block (block codebooks shared by 16 columns or more)
    const bool one_block = const_codes.shape.size() == 2 && const_codes.shape[0] <= block_size;
    const bool whole_columns = !one_block && block_size % 16 == 0 && kernels().reads_columns(bits, group_size, N);
    if (one_block || whole_columns) gemv_codes = prepack_for_gemv(const_codes, N, bits, group_size);
    if (gemv_codes.columns.empty()) prepack_blocks();
  }

  // Constant codes of block codebooks: each block's rows prepacked for the GEMV (nothing when it does not apply).
  void prepack_blocks() {
    const std::vector<int64_t>& cs = const_codes.shape;
    const int64_t row_bytes = ceil_div(N * bits, 8);
    if (const_codes.data == nullptr || !kernels().reads_prepacked(bits) || cs.size() != 2 || cs[1] != row_bytes)
      return;
    // (the block GEMV reads the prepacked rows only with codebooks shared by whole 16-column chunks)
    if (group_size < N && group_size % 16 != 0) return;
    const int64_t K = cs[0];
    if (K <= block_size) return;
    const uint8_t* codes = static_cast<const uint8_t*>(const_codes.data);
    // one buffer for all blocks (large enough for huge pages, streamed in order: block b's rows follow b - 1's)
    std::vector<std::vector<uint8_t>> blocks;
    size_t total = 0;
    for (int64_t k0 = 0; k0 < K; k0 += block_size) {
      blocks.push_back(prepack_codes(codes + k0 * row_bytes, std::min(block_size, K - k0), N, row_bytes, bits));
      packed_blocks.offsets.push_back(total);
      total += blocks.back().size();
    }
    packed_blocks.buf.allocate(total);
    for (size_t b = 0; b < blocks.size(); ++b)
      std::memcpy(packed_blocks.buf.data() + packed_blocks.offsets[b], blocks[b].data(), blocks[b].size());
  }

  // Whether the register-decoding GEMV reads these block codebooks block by block (else constant weights take the
  // GEMM on their float panel, decoded once, rather than the whole of W decoded again on every run).
  bool block_gemv_reads(const void* codes_data, int64_t K, int64_t M) const {
    const bool prepacked = codes_data == const_codes.data && !packed_blocks.offsets.empty();
    const CodebookWeights w{nullptr, nullptr, std::min(block_size, K), N, ceil_div(N * bits, 8), group_size,
                            ceil_div(N, group_size), bits, prepacked ? packed_blocks.block(0) : nullptr};
    return kernels().codebook_gemv_reads(w, M);
  }

  OrtStatusPtr ComputeV2(OrtKernelContext* context) {
    return guarded(label, [&] {
      Ort::KernelContext ctx(context);
      const Input x = get_input(ctx, 0);
      const Input cb_in = get_input(ctx, 1);
      std::vector<float> cb_floats;  // a float16 codebook as float32
      const Input cb = float_codebook(cb_in, &cb_floats, const_codebook, &codebook_floats);
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
      const bool constant = codes.data == const_codes.data && cb_in.data == const_codebook.data && cb_in.data != nullptr;
      if (nblocks > 1) {
        const BlockCodebookWeights bw{codes.as<uint8_t>(), cbp, K, N, row_bytes, group_size, block_size, nblocks,
                                      bits, false};
        if (M <= kBlockGemvRows && M > 0 && !gemv_codes.columns.empty() && codes.data == const_codes.data) {
          // the column GEMV over all of K, each 16 rows looked up in their block's codebook
          CodebookWeights w{codes.as<uint8_t>(), cbp, K, N, row_bytes, group_size, G, bits, nullptr};
          w.block_size = block_size;
          w.nblocks = nblocks;
          gemv_codes.attach(&w);
          if (kernels().codebook_gemv_reads(w, M)) {
            run_codebook_matmul(ctx, x.as<float>(), M, w, bias_data, y, nullptr);
            return;
          }
        }
        if (M <= kBlockGemvRows && M > 0 && (!constant || block_gemv_reads(codes.data, K, M))) {
          // the codebook regrouped by block: block b's rows g * nblocks + b, g < G0, contiguous
          const int64_t G0 = ceil_div(N, group_size), E = int64_t{1} << bits;
          std::vector<float> books(static_cast<size_t>(G * E));
          for (int64_t b = 0; b < nblocks; ++b)
            for (int64_t g = 0; g < G0; ++g)
              std::memcpy(books.data() + (b * G0 + g) * E, cbp + (g * nblocks + b) * E, static_cast<size_t>(E) * 4);
          const bool prepacked = codes.data == const_codes.data &&
                                 static_cast<int64_t>(packed_blocks.offsets.size()) == nblocks;
          run_block_gemv(ctx, x.as<float>(), M, bw, books.data(), prepacked ? &packed_blocks : nullptr, bias_data,
                         y);
          return;
        }
        const float* bp = constant ? block_panel.get(ctx, block_codebook_panel, &bw, K, N) : nullptr;
        run_panel_gemm(ctx, x.as<float>(), M, K, N, bp, block_codebook_panel, &bw, bias_data, y, false);
        return;
      }
      CodebookWeights w{codes.as<uint8_t>(), cbp, K, N, row_bytes, group_size, G, bits, nullptr};
      if (codes.data == const_codes.data) gemv_codes.attach(&w);
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
    // the codebook: float or float16, checked at run time (UNDEFINED: any type reaches the kernel)
    if (i == 1) return ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
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
