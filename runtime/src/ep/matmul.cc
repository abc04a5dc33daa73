// The onnxcomp EP's matmuls: CodebookMatMul, TernaryMatMul and SparseCodebookMatMul whose weights are constant
// (initializers, or decoded from HuffmanDecode / RunLengthDecode chains over initializers), with a consuming Relu,
// or a consuming residual Add of a tensor of the output's shape (a transformer block's skip connection: added in
// the kernel's output pass; left to onnxruntime, the Add and the LayerNormalization after it become a
// SkipLayerNormalization, 4.5x slower than the two on an AMD EPYC: 0.53 vs 0.12 ms at [8, 32, 384], and a 4-bit
// MiniLM ran 0.98x of its fp32 original under the EP, whose graph onnxruntime does not fuse so; 1.04x with the
// Add here, benchmarks/bench_ep.py).
// Compile decodes, validates and prepacks the weights once (a corrupt weight fails session creation with
// INVALID_ARGUMENT naming the node); compute runs the custom ops' kernels on onnxruntime's intra-op pool.
#include <memory>
#include <string>
#include <vector>

#include "../common.h"
#include "exec.h"
#include "graph.h"

namespace onnxcomp {
namespace ep {
namespace {

// ---- the compiled matmul -------------------------------------------------------------------------
struct MatMulExec : Exec {
  int kind = 0;  // 0 codebook / ternary, 1 sparse
  int64_t K = 0, N = 0;
  bool relu = false;
  size_t x_index = 0;  // the fused node's input holding X
  bool residual = false;  // y += the fused node's input `residual_index` (a residual Add of the output's shape)
  size_t residual_index = 0;
  // codebook / ternary
  std::vector<uint8_t> codes;
  GemvCodes gemv_codes;  // the GEMV's copy of the codes
  std::vector<float> codebook;  // [G, 2^bits]
  CodebookWeights cw{};
  BlockCodebookWeights bw{};  // block codebooks (cw.nblocks > 1): the same weights for the panel decode
  FloatPanel panel;  // W as floats, built at the first run with many rows
  // sparse
  std::vector<int32_t> row_ptr;
  std::vector<uint8_t> deltas;
  SparseWeights sw{};
  WindowsPack pack;
  bool has_pack = false;
  std::vector<float> bias;

  void compute(OrtKernelContext* context) override {
    Ort::KernelContext ctx(context);
    const Input x = get_input(ctx, x_index);
    const MatMulDims dims = matmul_x(x);
    if (dims.K != K) fail("X has K=", dims.K, " (shape ", shape_str(x.shape), "), the weights have K=", K);
    std::vector<int64_t> yshape = x.shape;
    yshape.back() = N;
    Ort::UnownedValue yv = ctx.GetOutput(0, yshape);
    float* y = yv.GetTensorMutableData<float>();
    const float* b = bias.empty() ? nullptr : bias.data();
    const float* r = nullptr;
    if (residual) {  // (its shape was the output's at compile time, where known; checked again here)
      const Input res = get_input(ctx, residual_index);
      if (res.shape != yshape)
        fail("the residual Add's other input has shape ", shape_str(res.shape), ", not ", shape_str(yshape));
      r = res.as<float>();
    }
    if (kind == 0 && cw.nblocks > 1 && dims.M > 4) {  // (1-4 rows: the column GEMV reads the blocks)
      const float* bp = panel.get(ctx, block_codebook_panel, &bw, K, N);
      run_panel_gemm(ctx, x.as<float>(), dims.M, K, N, bp, block_codebook_panel, &bw, b, y, relu);
    } else if (kind == 0) {
      run_codebook_matmul(ctx, x.as<float>(), dims.M, cw, b, y, &panel, relu);
    } else {
      run_sparse_matmul(ctx, x.as<float>(), dims.M, sw, has_pack ? &pack : nullptr, b, y);
      if (relu) {
        const int64_t total = dims.M * N;
        for (int64_t i = 0; i < total; ++i) y[i] = y[i] > 0.0f ? y[i] : 0.0f;
      }
    }
    if (r != nullptr) {
      const int64_t total = dims.M * N;
      for (int64_t i = 0; i < total; ++i) y[i] += r[i];
    }
  }
};

std::vector<float> bias_from(const Ort::ConstValueInfo& v, int64_t N) {
  const Blob b = evaluate(v);
  if (b.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT || b.count != N || b.shape.size() > 2 ||
      (b.shape.size() == 2 && b.shape[0] != 1))
    fail("B must be float32 of shape [N=", N, "] or [1, N], got ", shape_str(b.shape));
  return std::vector<float>(b.as<float>(), b.as<float>() + N);
}

void build_codebook(MatMulExec& e, const Ort::ConstNode& node, const std::vector<Ort::ConstValueInfo>& ins,
                    bool ternary) {
  NodeAttrs a{node};
  const int bits = ternary ? 2 : static_cast<int>(a.required_int("bits", 1, 8));
  e.N = a.required_int("N", 1, kMaxDim);
  const int64_t group_size = a.optional_int("group_size", e.N, 1, kMaxDim);
  const int64_t block_size = ternary ? kMaxDim : a.optional_int("block_size", kMaxDim, 1, kMaxDim);
  const int64_t entries = int64_t{1} << bits;
  // TernaryMatMul's scales are float32 only; a codebook may be float16 (converted here, once)
  const Blob cb = ternary ? evaluate(ins[1]) : float_codebook(evaluate(ins[1]));
  Blob codes = evaluate(ins[2]);
  expect_type(cb, ternary ? "scales" : "codebook", ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT);
  expect_type(codes, "codes", ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8);
  const int64_t row_bytes = ceil_div(e.N * bits, 8);
  if (codes.shape.size() != 2 || codes.shape[1] != row_bytes)
    fail("codes must have shape [K, ceil(N*bits/8)=", row_bytes, "], got ", shape_str(codes.shape));
  e.K = codes.shape[0];
  const int64_t nblocks = block_count(e.K, block_size);
  const int64_t G = ceil_div(e.N, group_size) * nblocks;  // codebook rows
  e.codebook.assign(static_cast<size_t>(G * entries), 0.0f);
  if (ternary) {
    if (cb.shape.size() != 2 || cb.shape[0] != G || cb.shape[1] != 2)
      fail("scales must have shape [G=", G, ", 2], got ", shape_str(cb.shape));
    for (int64_t g = 0; g < G; ++g) {
      e.codebook[g * 4 + 1] = cb.as<float>()[2 * g];
      e.codebook[g * 4 + 2] = -cb.as<float>()[2 * g + 1];
    }
    std::vector<uint8_t> row(static_cast<size_t>(e.N));
    for (int64_t k = 0; k < e.K; ++k) {
      unpack_row(codes.as<uint8_t>() + k * row_bytes, 0, e.N, 2, row.data());
      for (int64_t n = 0; n < e.N; ++n)
        if (row[n] == 3)
          fail("invalid ternary code 3 at codes row ", k, ", column ", n, " (valid codes: 0 -> 0, 1 -> +a_p, 2 -> -a_n)");
    }
  } else {
    check_codebook(cb.input(), e.N, group_size, bits, nblocks);
    const int64_t C = cb.shape[1];
    if (C < entries) {
      const uint32_t mx = max_code(codes.as<uint8_t>(), e.K, row_bytes, e.N, bits);
      if (mx >= static_cast<uint32_t>(C)) fail("code ", mx, " is out of range for a codebook of ", C, " entries");
    }
    for (int64_t g = 0; g < G; ++g)
      std::memcpy(e.codebook.data() + g * entries, cb.as<float>() + g * C, static_cast<size_t>(C) * sizeof(float));
  }
  if (ins.size() > 3 && ins[3]) e.bias = bias_from(ins[3], e.N);
  e.codes = std::move(codes.bytes);
  e.gemv_codes = prepack_for_gemv(e.codes.data(), e.K, e.N, bits, group_size);
  e.cw = CodebookWeights{e.codes.data(), e.codebook.data(), e.K, e.N, row_bytes, group_size, G, bits};
  e.gemv_codes.attach(&e.cw);
  if (nblocks > 1) {  // (claimed only where the column GEMV reads them: claim_matmul)
    e.cw.block_size = block_size;
    e.cw.nblocks = nblocks;
    if (!kernels().codebook_gemv_reads(e.cw, 1)) fail("block codebooks of this layout are not supported");
    e.bw = BlockCodebookWeights{e.codes.data(), e.codebook.data(), e.K, e.N, row_bytes, group_size, block_size,
                                nblocks, bits, false};
  }
}

void build_sparse(MatMulExec& e, const Ort::ConstNode& node, const std::vector<Ort::ConstValueInfo>& ins) {
  NodeAttrs a{node};
  const int bits = static_cast<int>(a.required_int("bits", 1, 8));
  const int index_bits = static_cast<int>(a.required_int("index_bits", 4, 8));
  if (index_bits != 4 && index_bits != 8) fail("attribute index_bits=", index_bits, " must be 4 or 8");
  e.N = a.required_int("N", 1, kMaxDim);
  const int64_t group_size = a.optional_int("group_size", e.N, 1, kMaxDim);
  const int64_t G = ceil_div(e.N, group_size);
  const int64_t entries = int64_t{1} << bits;
  const Blob cb = float_codebook(evaluate(ins[1]));  // float16: converted here, once
  const Blob rp = expect_type(evaluate(ins[2]), "row_ptr", ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32);
  Blob deltas = evaluate(ins[3]);
  Blob codes = evaluate(ins[4]);
  expect_type(deltas, "deltas", ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8);
  expect_type(codes, "codes", ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8);
  check_codebook(cb.input(), e.N, group_size, bits);
  if (rp.shape.size() != 1 || rp.count < 1) fail("row_ptr must be 1-D [K+1], got ", shape_str(rp.shape));
  e.K = rp.count - 1;
  e.row_ptr.assign(rp.as<int32_t>(), rp.as<int32_t>() + rp.count);
  if (e.row_ptr[0] != 0) fail("row_ptr[0] must be 0, got ", e.row_ptr[0]);
  for (int64_t k = 0; k < e.K; ++k)
    if (e.row_ptr[k + 1] < e.row_ptr[k])
      fail("row_ptr must be non-decreasing: row_ptr[", k + 1, "]=", e.row_ptr[k + 1], " < row_ptr[", k, "]=",
           e.row_ptr[k]);
  const int64_t E = e.row_ptr[e.K];
  if (deltas.count < ceil_div(E * index_bits, 8))
    fail("deltas holds ", deltas.count, " bytes, but row_ptr[K]=", E, " entries at index_bits=", index_bits, " need ",
         ceil_div(E * index_bits, 8));
  if (codes.count < ceil_div(E * bits, 8))
    fail("codes holds ", codes.count, " bytes, but row_ptr[K]=", E, " entries at bits=", bits, " need ",
         ceil_div(E * bits, 8));
  validate_sparse_layout(e.row_ptr.data(), deltas.as<uint8_t>(), e.K, index_bits, e.N);
  const int64_t C = cb.shape[1];
  if (C < entries && E > 0) {
    const uint32_t mx = max_code(codes.as<uint8_t>(), 1, 0, E, bits);
    if (mx >= static_cast<uint32_t>(C)) fail("code ", mx, " is out of range for a codebook of ", C, " entries");
  }
  e.codebook = pad_codebook(cb.as<float>(), G, C, bits);
  if (ins.size() > 5 && ins[5]) e.bias = bias_from(ins[5], e.N);
  e.deltas = std::move(deltas.bytes);
  e.codes = std::move(codes.bytes);
  e.sw = SparseWeights{e.row_ptr.data(), e.deltas.data(), e.codes.data(), e.codebook.data(), e.K, e.N, E,
                       group_size,       G,               bits,           index_bits};
  if (kernels().sparse_windows_gemv != nullptr && E > 0 && e.K > 0)
    e.has_pack = build_windows(e.sw, cb.as<float>(), C, &e.pack);
  if (e.has_pack) {
    // the windows layout holds everything the kernel reads (run_sparse_matmul reads only the dimensions of sw
    // then): the EIE arrays go, about as many bytes again as the layout on a big layer
    std::vector<int32_t>().swap(e.row_ptr);
    std::vector<uint8_t>().swap(e.deltas);
    std::vector<uint8_t>().swap(e.codes);
    std::vector<float>().swap(e.codebook);
    e.sw.row_ptr = nullptr;
    e.sw.deltas = nullptr;
    e.sw.codes = nullptr;
    e.sw.codebook = nullptr;
  }
}
}  // namespace

// Block codebooks (attribute block_size) are claimed where the column GEMV reads them at 1-4 rows (a codebook per
// output channel or group not a multiple of 16, blocks of a multiple of 16 inputs, <= 4 bits; more rows take the
// GEMM on the panel decoded once); others are left to the custom-op kernel or the function body.
bool blocks_read(const Ort::ConstNode& node, const std::vector<Ort::ConstValueInfo>& ins) {
  if (node.GetOperatorType() != "CodebookMatMul" || ins.size() < 3 || !ins[2]) return false;
  int64_t bits = -1, N = -1, group_size = -1, block_size = -1;
  NodeAttrs a{node};
  try {
    a.get_int("bits", &bits);
    a.get_int("N", &N);
    a.get_int("block_size", &block_size);
    if (!a.get_int("group_size", &group_size)) group_size = N;
  } catch (const OpError&) {
    return false;
  }
  const std::vector<int64_t> ws = static_shape(ins[2]);
  if (bits < 1 || bits > 8 || N <= 0 || group_size <= 0 || block_size <= 0 || ws.size() != 2) return false;
  if (ws[0] <= block_size) return true;  // one block: the plain layouts
  return block_size % 16 == 0 && kernels().reads_columns(static_cast<int>(bits), group_size, N);
}

bool claim_matmul(const Ort::ConstNode& node, const PlanOptions& plan, std::vector<Ort::ConstNode>* group) {
  if (node.GetDomain() != kDomain) return false;
  const std::string op = node.GetOperatorType();
  const size_t n_weights = op == "SparseCodebookMatMul" ? 4 : (op == "CodebookMatMul" || op == "TernaryMatMul" ? 2 : 0);
  if (n_weights == 0) return false;
  std::vector<Ort::ConstValueInfo> ins = node.GetInputs();
  if (NodeAttrs{node}.find("block_size") != nullptr && !blocks_read(node, ins)) return false;
  if (ins.size() < 1 + n_weights || !ins[0] || ins[0].IsConstantInitializer()) return false;
  std::vector<Ort::ConstNode> chain;
  for (size_t i = 1; i < ins.size(); ++i) {
    if (!ins[i]) continue;  // absent optional bias
    if (!constant_or_decoded(ins[i], &chain)) return false;
  }
  if (!plan_accepts_matmul(node, ins, plan)) return false;
  *group = chain;
  group->push_back(node);
  std::vector<Ort::ConstValueInfo> outs = node.GetOutputs();
  if (outs.size() == 1) {
    Ort::ConstNode next = sole_consumer(outs[0]);
    if (is_op(next, "", "Relu")) {
      group->push_back(next);
    } else if (is_op(next, "", "Add")) {
      // a residual Add: the other input a computed tensor of the output's shape (no broadcast)
      std::vector<Ort::ConstValueInfo> add_ins = next.GetInputs();
      if (add_ins.size() == 2 && add_ins[0] && add_ins[1] && add_ins[0].GetName() != add_ins[1].GetName()) {
        const Ort::ConstValueInfo& other = add_ins[0].GetName() == outs[0].GetName() ? add_ins[1] : add_ins[0];
        if (!other.IsConstantInitializer() && same_shape(add_ins[0], add_ins[1]) && same_shape(other, outs[0]))
          group->push_back(next);
      }
    }
  }
  return true;
}

std::unique_ptr<Exec> build_matmul(const Ort::ConstGraph& graph, const Ort::ConstNode& fused) {
  Ort::ConstNode mm{nullptr}, add{nullptr};
  bool relu = false;
  for (const Ort::ConstNode& n : graph.GetNodes()) {
    if (n.GetDomain() == kDomain && !is_decoder(n)) mm = n;
    if (is_op(n, "", "Relu")) relu = true;
    if (is_op(n, "", "Add")) add = n;
  }
  if (!mm) fail("compiled group without a matmul");
  const std::string where = cat(kEpName, ": ", node_desc(mm));
  auto exec = std::make_unique<MatMulExec>();
  exec->label = where;
  exec->relu = relu;
  std::vector<Ort::ConstValueInfo> ins = mm.GetInputs();
  const std::string op = mm.GetOperatorType();
  try {
    if (op == "SparseCodebookMatMul") {
      exec->kind = 1;
      build_sparse(*exec, mm, ins);
    } else {
      build_codebook(*exec, mm, ins, op == "TernaryMatMul");
    }
  } catch (const OpError& e) {
    // decoder errors already name their node
    const std::string msg = e.what();
    if (msg.rfind(kDomain, 0) == 0) throw OpError(cat(kEpName, ": ", msg));
    throw OpError(cat(where, ": ", msg));
  }
  exec->x_index = fused_input_index(fused, ins[0].GetName(), where);
  if (add) {
    const std::string y = mm.GetOutputs()[0].GetName();
    std::vector<Ort::ConstValueInfo> add_ins = add.GetInputs();
    exec->residual = true;
    const std::string other = (add_ins[0].GetName() == y ? add_ins[1] : add_ins[0]).GetName();
    exec->residual_index = fused_input_index(fused, other, where);
  }
  return exec;
}

}  // namespace ep
}  // namespace onnxcomp
