// A compiled partition of the onnxcomp EP: what Compile builds from a fused group of nodes and onnxruntime runs
// (OrtNodeComputeInfo::Compute), plus the per-op-family claim and build entries ep.cc dispatches to.
#pragma once

#include <onnxruntime_cxx_api.h>

#include <memory>
#include <set>
#include <string>
#include <vector>

#include "plan.h"

namespace onnxcomp {
namespace ep {

struct Exec {
  std::string label;  // "OnnxcompExecutionProvider: <the node>" for errors at run time
  virtual ~Exec() = default;
  virtual void compute(OrtKernelContext* context) = 0;
};

// The input index of the fused node that carries value `name` (OpError naming `where` when there is none).
size_t fused_input_index(const Ort::ConstNode& fused, const std::string& name, const std::string& where);

// ---- matmuls (matmul.cc): CodebookMatMul, TernaryMatMul, SparseCodebookMatMul with constant or decoded weights
// The group to fuse around a matmul-family node the plan accepts (its decoder chains, a consuming Relu), or false.
bool claim_matmul(const Ort::ConstNode& node, const PlanOptions& plan, std::vector<Ort::ConstNode>* group);
// The executor of such a group (graph: the fused group's nodes; fused: the node replacing them).
std::unique_ptr<Exec> build_matmul(const Ort::ConstGraph& graph, const Ort::ConstNode& fused);

// ---- embedding gathers (gather.cc): CodebookGather with a constant or decoded table and run-time indices
std::vector<std::vector<Ort::ConstNode>> claim_gathers(const Ort::ConstGraph& graph, const PlanOptions& plan);
bool owns_gather(const Ort::ConstNode& n);  // com.onnxcomp CodebookGather
std::unique_ptr<Exec> build_gather(const Ort::ConstGraph& graph, const Ort::ConstNode& fused);

// ---- convolution chains (conv.cc): WinogradConv and CodebookConv run by the Winograd kernel core, with pools and
// residual adds
bool is_conv_op(const Ort::ConstNode& n);  // com.onnxcomp WinogradConv / CodebookConv
// The chains to fuse: each starts at a convolution the plan runs and takes the neighbours that keep it whole.
std::vector<std::vector<Ort::ConstNode>> claim_conv_chains(const Ort::ConstGraph& graph, const PlanOptions& plan);
std::unique_ptr<Exec> build_conv(const Ort::ConstGraph& graph, const Ort::ConstNode& fused, const PlanOptions& plan);

}  // namespace ep
}  // namespace onnxcomp
