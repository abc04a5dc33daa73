// libonnxcomp_ep.so: the onnxcomp execution provider (OnnxcompExecutionProvider), an onnxruntime plugin EP.
//
// The library exports CreateEpFactories / ReleaseEpFactory (onnxruntime's plugin-EP entry points, C API 29 or
// newer); like libonnxcomp_ops.so it never links libonnxruntime. It ships no custom-op domain: the com.onnxcomp
// schemas, shape inference and CPU fallback kernels stay in libonnxcomp_ops.so, and every com.onnxcomp op also
// carries a function body, so a model loads wherever the EP is not used.
//
// What it claims (GetCapability), per the plan in plan.h: the com.onnxcomp matmuls whose weights are constant
// (initializers, or the output of HuffmanDecode / RunLengthDecode chains over initializers), large enough to pay
// for a compiled node, together with those decode chains and a Relu that only consumes the matmul. Compile
// decodes, validates and prepacks the weights once (a corrupt weight fails session creation with
// INVALID_ARGUMENT naming the node) and runs the same AVX-512 / AVX2 / scalar kernels as the custom ops, on
// onnxruntime's intra-op thread pool (KernelContext_ParallelFor, which compiled nodes get).
// It declines the rest; in particular convolutions: when only the EP is registered, a declined CodebookConv
// is inlined and constant-folded by onnxruntime into a plain Conv that runs in onnxruntime's NCHWc kernels.
#include <onnxruntime_cxx_api.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "../common.h"
#include "../decode.h"
#include "plan.h"

namespace onnxcomp {
namespace ep {
namespace {

const OrtApi* g_api = nullptr;
const OrtEpApi* g_ep_api = nullptr;

// ---- graph access --------------------------------------------------------------------------------
struct NodeAttrs {
  Ort::ConstNode node;
  const OrtOpAttr* find(const char* name) const {
    const OrtOpAttr* attr = nullptr;
    OrtStatus* st = g_api->Node_GetAttributeByName(node, name, &attr);
    if (st != nullptr) {
      g_api->ReleaseStatus(st);
      return nullptr;
    }
    return attr;
  }
  bool get_int(const char* name, int64_t* out) const {
    const OrtOpAttr* a = find(name);
    if (a == nullptr) return false;
    Ort::ConstOpAttr attr{a};
    if (attr.GetType() != ORT_OP_ATTR_INT) fail("attribute '", name, "' must be an int");
    Ort::ThrowOnError(attr.GetValue(*out));
    return true;
  }
  bool get_ints(const char* name, std::vector<int64_t>* out) const {
    const OrtOpAttr* a = find(name);
    if (a == nullptr) return false;
    Ort::ConstOpAttr attr{a};
    if (attr.GetType() != ORT_OP_ATTR_INTS) fail("attribute '", name, "' must be ints");
    Ort::ThrowOnError(attr.GetValueArray(*out));
    return true;
  }
  int64_t required_int(const char* name, int64_t lo, int64_t hi) const {
    int64_t v = 0;
    if (!get_int(name, &v)) fail("attribute '", name, "' (int) is required");
    if (v < lo || v > hi) fail("attribute ", name, "=", v, " is out of range [", lo, ", ", hi, "]");
    return v;
  }
  int64_t optional_int(const char* name, int64_t dflt, int64_t lo, int64_t hi) const {
    int64_t v = dflt;
    get_int(name, &v);
    if (v < lo || v > hi) fail("attribute ", name, "=", v, " is out of range [", lo, ", ", hi, "]");
    return v;
  }
};

std::string node_desc(const Ort::ConstNode& n) {
  return cat(n.GetDomain().empty() ? "ai.onnx" : n.GetDomain(), ".", n.GetOperatorType(), " node '", n.GetName(), "'");
}

// A constant tensor's bytes (owned copy) and shape.
struct Blob {
  std::vector<uint8_t> bytes;
  std::vector<int64_t> shape;
  ONNXTensorElementDataType type = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
  int64_t count = 0;
  template <typename T>
  const T* as() const { return reinterpret_cast<const T*>(bytes.data()); }
  Input input() const {
    Input in;
    in.present = true;
    in.data = bytes.data();
    in.shape = shape;
    in.type = type;
    in.count = count;
    return in;
  }
};

bool is_decoder(const Ort::ConstNode& n) {
  const std::string op = n.GetOperatorType();
  return n.GetDomain() == kDomain && (op == "HuffmanDecode" || op == "RunLengthDecode");
}

// The producer node of a value, or a null node.
Ort::ConstNode producer(const Ort::ConstValueInfo& v) {
  if (!v) return Ort::ConstNode{nullptr};
  return v.GetProducerNode().node;
}

// True when `v` is a constant initializer or the output of a decoder chain over constants that nobody else
// reads; the decoder nodes are appended to `chain` (producers first).
bool constant_or_decoded(const Ort::ConstValueInfo& v, std::vector<Ort::ConstNode>* chain, int depth = 0) {
  if (!v || depth > 4) return false;
  if (v.IsConstantInitializer()) return true;
  Ort::ConstNode p = producer(v);
  if (!p || !is_decoder(p) || v.IsGraphOutput() || v.GetConsumers().size() != 1) return false;
  for (const auto& in : p.GetInputs())
    if (!constant_or_decoded(in, chain, depth + 1)) return false;
  chain->push_back(p);
  return true;
}

// Evaluates a value at compile time: an initializer, or the output of a decoder chain (decoded natively).
Blob evaluate(const Ort::ConstValueInfo& v) {
  if (v.IsConstantInitializer()) {
    Ort::ConstValue value;
    Ort::ThrowOnError(v.GetInitializer(value));
    auto info = value.GetTensorTypeAndShapeInfo();
    Blob b;
    b.shape = info.GetShape();
    b.type = info.GetElementType();
    b.count = static_cast<int64_t>(info.GetElementCount());
    const size_t nbytes = value.GetTensorSizeInBytes();
    const auto* p = static_cast<const uint8_t*>(value.GetTensorRawData());
    b.bytes.assign(p, p + nbytes);
    return b;
  }
  Ort::ConstNode p = producer(v);
  if (!p || !is_decoder(p)) fail("value '", v.GetName(), "' is not constant");
  const std::string where = node_desc(p);
  try {
    NodeAttrs a{p};
    std::vector<Ort::ConstValueInfo> ins = p.GetInputs();
    Blob out;
    out.type = ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8;
    if (p.GetOperatorType() == "HuffmanDecode") {
      if (ins.size() != 3) fail("needs 3 inputs (stream, table, offsets)");
      const Blob stream = evaluate(ins[0]), table = evaluate(ins[1]), offsets = evaluate(ins[2]);
      if (stream.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8 || stream.shape.size() != 1)
        fail("stream must be a 1-D uint8 tensor");
      if (table.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8 || table.shape.size() != 2 || table.shape[0] != 2)
        fail("table must have shape [2, n], got ", shape_str(table.shape));
      if (offsets.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32 || offsets.shape.size() != 1)
        fail("offsets must be a 1-D int32 tensor");
      if (!a.get_ints("shape", &out.shape)) fail("attribute 'shape' (ints) is required");
      int64_t count = 1;
      for (int64_t d : out.shape) {
        if (d < 0) fail("attribute shape=", shape_str(out.shape), " has a negative dim");
        count = checked_mul(count, d, "attribute shape");
      }
      out.count = count;
      out.bytes.resize(static_cast<size_t>(count));
      huffman_decode({stream.as<uint8_t>(), stream.count, table.as<uint8_t>(), table.shape[1], offsets.as<int32_t>(),
                      offsets.count},
                     count, out.bytes.data());
    } else {
      if (ins.size() != 1) fail("needs 1 input (symbols)");
      const Blob sym = evaluate(ins[0]);
      if (sym.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8 || sym.shape.size() != 1) fail("symbols must be 1-D uint8");
      const int bits = static_cast<int>(a.required_int("bits", 1, 7));
      const int64_t n = a.required_int("count", 0, kMaxDim);
      if (!a.get_ints("shape", &out.shape) || out.shape.size() != 2)
        fail("attribute shape must be [rows, ceil(count*bits/8)]");
      if (out.shape[0] < 0 || out.shape[1] < 0) fail("attribute shape has a negative dim");
      run_length_check(sym.count, bits, n, out.shape[0], out.shape[1]);
      out.count = out.shape[0] * out.shape[1];
      out.bytes.resize(static_cast<size_t>(out.count));
      run_length_decode(sym.as<uint8_t>(), sym.count, bits, n, out.shape[0], out.shape[1], out.bytes.data());
    }
    return out;
  } catch (const OpError& e) {
    throw OpError(cat(where, ": ", e.what()));
  }
}

// ---- the compiled matmul -------------------------------------------------------------------------
struct MatMulExec {
  std::string label;
  int kind = 0;  // 0 codebook / ternary, 1 sparse
  int64_t K = 0, N = 0;
  bool relu = false;
  size_t x_index = 0;  // the fused node's input holding X
  // codebook / ternary
  std::vector<uint8_t> codes, packed;
  std::vector<float> codebook;  // [G, 2^bits]
  CodebookWeights cw{};
  FloatPanel panel;  // W as floats, built at the first run with many rows
  // sparse
  std::vector<int32_t> row_ptr;
  std::vector<uint8_t> deltas;
  SparseWeights sw{};
  WindowsPack pack;
  bool has_pack = false;
  std::vector<float> bias;

  void compute(OrtKernelContext* context) {
    Ort::KernelContext ctx(context);
    const Input x = get_input(ctx, x_index);
    const MatMulDims dims = matmul_x(x);
    if (dims.K != K) fail("X has K=", dims.K, " (shape ", shape_str(x.shape), "), the weights have K=", K);
    std::vector<int64_t> yshape = x.shape;
    yshape.back() = N;
    Ort::UnownedValue yv = ctx.GetOutput(0, yshape);
    float* y = yv.GetTensorMutableData<float>();
    const float* b = bias.empty() ? nullptr : bias.data();
    if (kind == 0) {
      run_codebook_matmul(ctx, x.as<float>(), dims.M, cw, b, y, &panel, relu);
      return;
    }
    run_sparse_matmul(ctx, x.as<float>(), dims.M, sw, has_pack ? &pack : nullptr, b, y);
    if (relu) {
      const int64_t total = dims.M * N;
      for (int64_t i = 0; i < total; ++i) y[i] = y[i] > 0.0f ? y[i] : 0.0f;
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

const Blob& expect_type(const Blob& b, const char* what, ONNXTensorElementDataType t) {
  if (b.type != t) fail("input '", what, "' must be ", type_name(t), ", got ", type_name(b.type));
  return b;
}

void build_codebook(MatMulExec& e, const Ort::ConstNode& node, const std::vector<Ort::ConstValueInfo>& ins,
                    bool ternary) {
  NodeAttrs a{node};
  const int bits = ternary ? 2 : static_cast<int>(a.required_int("bits", 1, 8));
  e.N = a.required_int("N", 1, kMaxDim);
  const int64_t group_size = a.optional_int("group_size", e.N, 1, kMaxDim);
  const int64_t G = ceil_div(e.N, group_size);
  const int64_t entries = int64_t{1} << bits;
  const Blob cb = evaluate(ins[1]);
  Blob codes = evaluate(ins[2]);
  expect_type(cb, ternary ? "scales" : "codebook", ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT);
  expect_type(codes, "codes", ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8);
  const int64_t row_bytes = ceil_div(e.N * bits, 8);
  if (codes.shape.size() != 2 || codes.shape[1] != row_bytes)
    fail("codes must have shape [K, ceil(N*bits/8)=", row_bytes, "], got ", shape_str(codes.shape));
  e.K = codes.shape[0];
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
    check_codebook(cb.input(), e.N, group_size, bits);
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
  if (std::string(kernels().name) != "scalar" && prepack_supported(bits) && e.K > 0)  // the SIMD GEMVs read it
    e.packed = prepack_codes(e.codes.data(), e.K, e.N, row_bytes, bits);
  e.cw = CodebookWeights{e.codes.data(), e.codebook.data(), e.K, e.N, row_bytes, group_size, G, bits,
                         e.packed.empty() ? nullptr : e.packed.data()};
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
  const Blob cb = evaluate(ins[1]);
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
}

// ---- node compute info ---------------------------------------------------------------------------
struct ComputeInfo : OrtNodeComputeInfo {
  std::unique_ptr<MatMulExec> exec;
  explicit ComputeInfo(std::unique_ptr<MatMulExec> e) : OrtNodeComputeInfo{}, exec(std::move(e)) {
    ort_version_supported = ORT_API_VERSION;
    CreateState = [](OrtNodeComputeInfo* self, OrtNodeComputeContext*, void** state) noexcept -> OrtStatus* {
      *state = static_cast<ComputeInfo*>(self)->exec.get();
      return nullptr;
    };
    Compute = [](OrtNodeComputeInfo*, void* state, OrtKernelContext* context) noexcept -> OrtStatus* {
      MatMulExec* e = static_cast<MatMulExec*>(state);
      return guarded(e->label, [&] { e->compute(context); });
    };
    ReleaseState = [](OrtNodeComputeInfo*, void*) noexcept {};
  }
};

// ---- the EP -------------------------------------------------------------------------------------------
struct OnnxcompEp : OrtEp {
  PlanOptions plan;

  explicit OnnxcompEp(const PlanOptions& p) : OrtEp{}, plan(p) {
    ort_version_supported = ORT_API_VERSION;
    GetName = [](const OrtEp*) noexcept -> const char* { return kEpName; };
    GetCapability = GetCapabilityImpl;
    Compile = CompileImpl;
    ReleaseNodeComputeInfos = [](OrtEp*, OrtNodeComputeInfo** infos, size_t n) noexcept {
      for (size_t i = 0; i < n; ++i) delete static_cast<ComputeInfo*>(infos[i]);
    };
  }

  static OrtStatus* ORT_API_CALL GetCapabilityImpl(OrtEp* self, const OrtGraph* graph,
                                                   OrtEpGraphSupportInfo* support) noexcept {
    return guarded(kEpName, [&] {
      const OnnxcompEp* ep = static_cast<const OnnxcompEp*>(self);
      Ort::ConstGraph g{graph};
      for (const Ort::ConstNode& node : g.GetNodes()) {
        std::vector<Ort::ConstNode> group;
        if (!claim_matmul(node, ep->plan, &group)) continue;
        std::vector<const OrtNode*> raw(group.begin(), group.end());
        OrtNodeFusionOptions fo{};
        fo.ort_version_supported = ORT_API_VERSION;
        fo.drop_constant_initializers = true;  // the EP keeps its own decoded, prepacked copy
        Ort::ThrowOnError(g_ep_api->EpGraphSupportInfo_AddNodesToFuse(support, raw.data(), raw.size(), &fo));
      }
    });
  }

  // A matmul-family node the plan accepts, with its decoder chains and a fusable Relu: the group to fuse.
  static bool claim_matmul(const Ort::ConstNode& node, const PlanOptions& plan, std::vector<Ort::ConstNode>* group) {
    if (node.GetDomain() != kDomain) return false;
    const std::string op = node.GetOperatorType();
    const size_t n_weights = op == "SparseCodebookMatMul" ? 4 : (op == "CodebookMatMul" || op == "TernaryMatMul" ? 2 : 0);
    if (n_weights == 0) return false;
    std::vector<Ort::ConstValueInfo> ins = node.GetInputs();
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
    if (outs.size() == 1 && outs[0] && !outs[0].IsGraphOutput()) {
      auto consumers = outs[0].GetConsumers();
      if (consumers.size() == 1 && consumers[0].node && consumers[0].node.GetOperatorType() == "Relu" &&
          consumers[0].node.GetDomain().empty())
        group->push_back(consumers[0].node);
    }
    return true;
  }

  static OrtStatus* ORT_API_CALL CompileImpl(OrtEp*, const OrtGraph** graphs, const OrtNode** fused_nodes,
                                             size_t count, OrtNodeComputeInfo** infos, OrtNode** ep_context) noexcept {
    for (size_t i = 0; i < count; ++i) {
      infos[i] = nullptr;
      if (ep_context) ep_context[i] = nullptr;
    }
    for (size_t i = 0; i < count; ++i) {
      std::unique_ptr<MatMulExec> exec;
      std::string where = kEpName;
      OrtStatus* st = guarded(kEpName, [&] {
        Ort::ConstGraph g{graphs[i]};
        Ort::ConstNode fused{fused_nodes[i]};
        Ort::ConstNode mm{nullptr};
        bool relu = false;
        for (const Ort::ConstNode& n : g.GetNodes()) {
          if (n.GetDomain() == kDomain && !is_decoder(n)) mm = n;
          if (n.GetOperatorType() == "Relu" && n.GetDomain().empty()) relu = true;
        }
        if (!mm) fail("compiled group without a matmul");
        where = cat(kEpName, ": ", node_desc(mm));
        exec = std::make_unique<MatMulExec>();
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
        const std::string x_name = ins[0].GetName();
        std::vector<Ort::ConstValueInfo> fins = fused.GetInputs();
        bool found = false;
        for (size_t j = 0; j < fins.size(); ++j)
          if (fins[j] && fins[j].GetName() == x_name) {
            exec->x_index = j;
            found = true;
          }
        if (!found) fail(where, ": input X ('", x_name, "') is not an input of the compiled node");
      });
      if (st != nullptr) {
        // guarded() prefixed kEpName; keep the node-naming message as is
        return st;
      }
      infos[i] = new ComputeInfo(std::move(exec));
    }
    return nullptr;
  }
};

// ---- the factory ---------------------------------------------------------------------------------------
struct OnnxcompEpFactory : OrtEpFactory {
  OnnxcompEpFactory() : OrtEpFactory{} {
    ort_version_supported = ORT_API_VERSION;
    GetName = [](const OrtEpFactory*) noexcept -> const char* { return kEpName; };
    GetVendor = [](const OrtEpFactory*) noexcept -> const char* { return "onnxcomp"; };
    GetVendorId = [](const OrtEpFactory*) noexcept -> uint32_t { return 0; };
    GetVersion = [](const OrtEpFactory*) noexcept -> const char* { return kEpVersion; };
    GetSupportedDevices = [](OrtEpFactory* self, const OrtHardwareDevice* const* devices, size_t n,
                             OrtEpDevice** out, size_t max_out, size_t* num) noexcept -> OrtStatus* {
      *num = 0;
      for (size_t i = 0; i < n && *num < max_out; ++i) {
        if (g_api->HardwareDevice_Type(devices[i]) != OrtHardwareDeviceType_CPU) continue;
        OrtKeyValuePairs* meta = nullptr;
        g_api->CreateKeyValuePairs(&meta);
        g_api->AddKeyValuePair(meta, "kernels", kernels().name);
        OrtEpDevice* d = nullptr;
        OrtStatus* st = g_ep_api->CreateEpDevice(self, devices[i], meta, nullptr, &d);
        g_api->ReleaseKeyValuePairs(meta);
        if (st != nullptr) return st;
        out[(*num)++] = d;
      }
      return nullptr;
    };
    CreateEp = [](OrtEpFactory*, const OrtHardwareDevice* const*, const OrtKeyValuePairs* const*, size_t,
                  const OrtSessionOptions* so, const OrtLogger*, OrtEp** ep) noexcept -> OrtStatus* {
      return guarded(kEpName, [&] { *ep = new OnnxcompEp(read_plan_options(so)); });
    };
    ReleaseEp = [](OrtEpFactory*, OrtEp* ep) noexcept { delete static_cast<OnnxcompEp*>(ep); };
    // entries onnxruntime >= 1.32 calls: trivial versions for a CPU EP
    ValidateCompiledModelCompatibilityInfo = [](OrtEpFactory*, const OrtHardwareDevice* const*, size_t, const char*,
                                                OrtCompiledModelCompatibility* c) noexcept -> OrtStatus* {
      *c = OrtCompiledModelCompatibility_EP_NOT_APPLICABLE;
      return nullptr;
    };
    CreateAllocator = [](OrtEpFactory*, const OrtMemoryInfo*, const OrtKeyValuePairs*,
                         OrtAllocator** a) noexcept -> OrtStatus* {
      *a = nullptr;  // onnxruntime's default CPU allocator
      return nullptr;
    };
    ReleaseAllocator = [](OrtEpFactory*, OrtAllocator*) noexcept {};
    CreateDataTransfer = [](OrtEpFactory*, OrtDataTransferImpl** d) noexcept -> OrtStatus* {
      *d = nullptr;  // CPU memory only
      return nullptr;
    };
    IsStreamAware = [](const OrtEpFactory*) noexcept -> bool { return false; };
    CreateSyncStreamForDevice = [](OrtEpFactory*, const OrtMemoryDevice*, const OrtKeyValuePairs*,
                                   OrtSyncStreamImpl** s) noexcept -> OrtStatus* {
      *s = nullptr;
      return nullptr;
    };
  }
};

}  // namespace

// Session options read by the plan (keys under "ep.onnxcomp.").
PlanOptions read_plan_options(const OrtSessionOptions* so) {
  PlanOptions p;
  if (so == nullptr) return p;
  auto get = [&](const char* key, int64_t* out) {
    int has = 0;
    if (g_api->HasSessionConfigEntry(so, key, &has) != nullptr || !has) return;
    char buf[64];
    size_t size = sizeof(buf);
    OrtStatus* st = g_api->GetSessionConfigEntry(so, key, buf, &size);
    if (st != nullptr) {
      g_api->ReleaseStatus(st);
      return;
    }
    try {
      *out = std::stoll(buf);
    } catch (...) {
      fail("session option ", key, "=", buf, " is not an integer");
    }
  };
  get("ep.onnxcomp.min_weights", &p.min_weights);
  return p;
}

}  // namespace ep
}  // namespace onnxcomp

extern "C" {

__attribute__((visibility("default"))) OrtStatus* CreateEpFactories(const char* /*registration_name*/,
                                                                     const OrtApiBase* api_base,
                                                                     const OrtLogger* /*logger*/,
                                                                     OrtEpFactory** factories, size_t max_factories,
                                                                     size_t* num_factories) {
  using namespace onnxcomp;
  if (api_base == nullptr || num_factories == nullptr) return nullptr;
  *num_factories = 0;
  const OrtApi* api = api_base->GetApi(ORT_API_VERSION);
  if (api == nullptr) {
    const char* have = api_base->GetVersionString ? api_base->GetVersionString() : "unknown";
    const std::string msg = cat("libonnxcomp_ep.so needs onnxruntime >= 1.", ORT_API_VERSION, " (C API version ",
                                ORT_API_VERSION, "), but this process runs onnxruntime ", have,
                                "; upgrade onnxruntime (pip install -U onnxruntime)");
    const OrtApi* old = api_base->GetApi(1);
    return old ? old->CreateStatus(ORT_FAIL, msg.c_str()) : nullptr;
  }
  Ort::InitApi(api);
  ep::g_api = api;
  ep::g_ep_api = api->GetEpApi();
  if (max_factories < 1) return api->CreateStatus(ORT_INVALID_ARGUMENT, "CreateEpFactories: no room for a factory");
  return guarded("CreateEpFactories", [&] {
    factories[0] = new ep::OnnxcompEpFactory();
    *num_factories = 1;
  });
}

__attribute__((visibility("default"))) OrtStatus* ReleaseEpFactory(OrtEpFactory* factory) {
  delete static_cast<onnxcomp::ep::OnnxcompEpFactory*>(factory);
  return nullptr;
}

// Which kernel set this process uses ("avx512", "avx2" or "scalar"); for diagnostics (ctypes).
__attribute__((visibility("default"))) const char* OnnxcompEpKernelIsa() { return onnxcomp::kernels().name; }

}  // extern "C"
