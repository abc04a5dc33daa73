// The onnxcomp EP's plan (plan.h).
#include "plan.h"

#include <string>

namespace onnxcomp {
namespace ep {
namespace {

// The static shape of a value, or an empty vector when its rank or a dim is unknown.
std::vector<int64_t> static_shape(const Ort::ConstValueInfo& v) {
  if (!v) return {};
  try {
    Ort::ConstTypeInfo ti = v.TypeInfo();
    if (ti.GetONNXType() != ONNX_TYPE_TENSOR) return {};
    std::vector<int64_t> s = ti.GetTensorTypeAndShapeInfo().GetShape();
    for (int64_t d : s)
      if (d < 0) return {};
    return s;
  } catch (...) {
    return {};
  }
}

int64_t int_attr(const Ort::ConstNode& node, const char* name, int64_t dflt) {
  const OrtOpAttr* attr = nullptr;
  OrtStatus* st = Ort::GetApi().Node_GetAttributeByName(node, name, &attr);
  if (st != nullptr) {
    Ort::GetApi().ReleaseStatus(st);
    return dflt;
  }
  if (attr == nullptr) return dflt;
  int64_t v = dflt;
  Ort::ConstOpAttr a{attr};
  if (a.GetType() != ORT_OP_ATTR_INT || !a.GetValue(v).IsOK()) return dflt;
  return v;
}

}  // namespace

bool plan_accepts_matmul(const Ort::ConstNode& node, const std::vector<Ort::ConstValueInfo>& inputs,
                         const PlanOptions& plan) {
  const int64_t N = int_attr(node, "N", -1);
  if (N <= 0) return true;  // let Compile report the bad attribute
  // K: X's last dim, else the weights' leading dim (codes [K, ...]; row_ptr [K + 1])
  int64_t K = -1;
  const std::vector<int64_t> xs = static_shape(inputs[0]);
  if (!xs.empty()) K = xs.back();
  if (K < 0) {
    const bool sparse = node.GetOperatorType() == "SparseCodebookMatMul";
    const std::vector<int64_t> ws = static_shape(inputs[sparse ? 2 : 2]);
    if (!ws.empty()) K = sparse ? ws[0] - 1 : ws[0];
  }
  // any row count: 1-4 rows run the register-decoding GEMV on the codes, more rows a GEMM on the weights decoded
  // once into floats (as fast as onnxruntime's fp32 GEMM, plus the fused bias and Relu)
  return K < 0 || K * N >= plan.min_weights;
}

}  // namespace ep
}  // namespace onnxcomp
