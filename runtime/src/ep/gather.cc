// The onnxcomp EP's embedding gathers: CodebookGather with a constant codebook and codes (initializers, or decoded
// from HuffmanDecode / RunLengthDecode chains over initializers) and indices computed at run time. Compile
// validates the table once (shapes, every code below the codebook width) and keeps it packed; compute decodes only
// the gathered rows with the kernel set's decode_rows, as the custom op does. Without the EP (or the custom-op
// library) onnxruntime runs the op's function body, which unpacks the gathered rows through a dozen standard ops
// at every run: measured on paraphrase-MiniLM-L3 (32 sentences x 48 tokens, 1 thread, Intel Xeon), its two
// gathers took 7.3 ms as 14 nodes against 0.4 ms for the original float Gather.
#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "../common.h"
#include "exec.h"
#include "graph.h"

namespace onnxcomp {
namespace ep {
namespace {

struct GatherExec : Exec {
  int bits = 0;
  int64_t D = 0, V = 0, C = 0, group_size = 0, row_bytes = 0;
  std::vector<uint8_t> codes;   // [V, row_bytes]
  std::vector<float> codebook;  // [G, 2^bits], zeros past C
  size_t idx_index = 0;         // the fused node's input holding the indices

  void compute(OrtKernelContext* context) override {
    Ort::KernelContext ctx(context);
    const Input idx = get_input(ctx, idx_index);
    if (idx.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64 && idx.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32)
      fail("indices must be int32 or int64, got ", type_name(idx.type));
    std::vector<int64_t> yshape = idx.shape;
    yshape.push_back(D);
    checked_elements(yshape, "output Y");
    float* y = ctx.GetOutput(0, yshape).GetTensorMutableData<float>();
    if (idx.count == 0) return;
    // every code was checked below C at compile time
    gather_codebook_rows(ctx, idx, codes.data(), V, row_bytes, D, bits, codebook.data(), C, group_size, false, y);
  }
};

bool is_gather(const Ort::ConstNode& n) { return n.GetDomain() == kDomain && n.GetOperatorType() == "CodebookGather"; }

}  // namespace

namespace {

// True when `v` is a constant initializer or computed by standard-domain nodes from constants only (a Range of
// constant scalars): onnxruntime folds it before the EP's second look, the gather then has
// constant indices and is declined there, and the node claimed in the first look is left without a kernel (the
// session failed: "com.onnxcomp:UnpackCodes(-1) is not a registered function/op"). Such gathers are declined at once.
bool folds_to_constant(const Ort::ConstValueInfo& v, int depth = 0) {
  if (!v || depth > 8) return false;
  if (v.IsConstantInitializer()) return true;
  Ort::ConstNode p = producer(v);
  if (!p || !p.GetDomain().empty()) return false;  // (a graph input has no producer)
  const std::vector<Ort::ConstValueInfo> ins = p.GetInputs();
  if (ins.empty()) return p.GetOperatorType() == "Constant";
  for (const auto& in : ins)
    if (in && !folds_to_constant(in, depth + 1)) return false;  // (an absent optional input is no data)
  return true;
}

}  // namespace

std::vector<std::vector<Ort::ConstNode>> claim_gathers(const Ort::ConstGraph& graph, const PlanOptions&) {
  std::vector<std::vector<Ort::ConstNode>> groups;
  for (const Ort::ConstNode& node : graph.GetNodes()) {
    if (!is_gather(node)) continue;
    std::vector<Ort::ConstValueInfo> ins = node.GetInputs();
    if (ins.size() != 3 || !ins[2] || folds_to_constant(ins[2])) continue;  // constant indices: folded
    std::vector<Ort::ConstNode> group;
    if (!ins[0] || !ins[1] || !constant_or_decoded(ins[0], &group) || !constant_or_decoded(ins[1], &group)) continue;
    group.push_back(node);
    groups.push_back(group);
  }
  return groups;
}

bool owns_gather(const Ort::ConstNode& n) { return is_gather(n); }

std::unique_ptr<Exec> build_gather(const Ort::ConstGraph& graph, const Ort::ConstNode& fused) {
  Ort::ConstNode g{nullptr};
  for (const Ort::ConstNode& n : graph.GetNodes())
    if (is_gather(n)) g = n;
  if (!g) fail("compiled group without a CodebookGather");
  const std::string where = cat(kEpName, ": ", node_desc(g));
  auto exec = std::make_unique<GatherExec>();
  exec->label = where;
  std::vector<Ort::ConstValueInfo> ins = g.GetInputs();
  try {
    NodeAttrs a{g};
    exec->bits = static_cast<int>(a.required_int("bits", 1, 8));
    exec->D = a.required_int("D", 1, kMaxDim);
    exec->group_size = a.optional_int("group_size", kMaxDim, 1, kMaxDim);  // absent: one codebook (the spec's default)
    const Blob cb = float_codebook(evaluate(ins[0]));  // float16: converted here, once
    Blob codes = evaluate(ins[1]);
    expect_type(codes, "codes", ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8);
    exec->row_bytes = ceil_div(checked_mul(exec->D, exec->bits, "D * bits"), 8);
    if (codes.shape.size() != 2 || codes.shape[1] != exec->row_bytes)
      fail("codes must have shape [V, ceil(D*bits/8)=", exec->row_bytes, "] (D=", exec->D, ", bits=", exec->bits,
           "), got ", shape_str(codes.shape));
    exec->V = codes.shape[0];
    const int64_t G = ceil_div(exec->V, exec->group_size), entries = int64_t{1} << exec->bits;
    if (cb.shape.size() != 2 || cb.shape[0] != G || cb.shape[1] < 1 || cb.shape[1] > entries)
      fail("codebook must have shape [G=", G, ", C] with 1 <= C <= 2**bits=", entries, " (V=", exec->V,
           ", group_size=", exec->group_size, "), got ", shape_str(cb.shape));
    exec->C = cb.shape[1];
    if (exec->C < entries) {
      const uint32_t mx = max_code(codes.as<uint8_t>(), exec->V, exec->row_bytes, exec->D, exec->bits);
      if (mx >= static_cast<uint32_t>(exec->C))
        fail("code ", mx, " is out of range for a codebook of ", exec->C, " entries");
    }
    exec->codebook = pad_codebook(cb.as<float>(), G, exec->C, exec->bits);
    exec->codes = std::move(codes.bytes);
  } catch (const OpError& e) {
    const std::string msg = e.what();
    if (msg.rfind(kDomain, 0) == 0) throw OpError(cat(kEpName, ": ", msg));  // a decoder, already named
    throw OpError(cat(where, ": ", msg));
  }
  exec->idx_index = fused_input_index(fused, ins[2].GetName(), where);
  return exec;
}

}  // namespace ep
}  // namespace onnxcomp
