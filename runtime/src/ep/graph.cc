// Graph access for the onnxcomp EP (graph.h).
#include "graph.h"

#include <cstring>

#include "../decode.h"

namespace onnxcomp {
namespace ep {

const OrtOpAttr* NodeAttrs::find(const char* name) const {
  const OrtOpAttr* attr = nullptr;
  OrtStatus* st = Ort::GetApi().Node_GetAttributeByName(node, name, &attr);
  if (st != nullptr) {
    Ort::GetApi().ReleaseStatus(st);
    return nullptr;
  }
  return attr;
}

bool NodeAttrs::get_int(const char* name, int64_t* out) const {
  const OrtOpAttr* a = find(name);
  if (a == nullptr) return false;
  Ort::ConstOpAttr attr{a};
  if (attr.GetType() != ORT_OP_ATTR_INT) fail("attribute '", name, "' must be an int");
  Ort::ThrowOnError(attr.GetValue(*out));
  return true;
}

bool NodeAttrs::get_ints(const char* name, std::vector<int64_t>* out) const {
  const OrtOpAttr* a = find(name);
  if (a == nullptr) return false;
  Ort::ConstOpAttr attr{a};
  if (attr.GetType() != ORT_OP_ATTR_INTS) fail("attribute '", name, "' must be ints");
  Ort::ThrowOnError(attr.GetValueArray(*out));
  return true;
}

bool NodeAttrs::get_float(const char* name, float* out) const {
  const OrtOpAttr* a = find(name);
  if (a == nullptr) return false;
  Ort::ConstOpAttr attr{a};
  if (attr.GetType() != ORT_OP_ATTR_FLOAT) fail("attribute '", name, "' must be a float");
  Ort::ThrowOnError(attr.GetValue(*out));
  return true;
}

bool NodeAttrs::get_string(const char* name, std::string* out) const {
  const OrtOpAttr* a = find(name);
  if (a == nullptr) return false;
  Ort::ConstOpAttr attr{a};
  if (attr.GetType() != ORT_OP_ATTR_STRING) fail("attribute '", name, "' must be a string");
  Ort::ThrowOnError(attr.GetValue(*out));
  return true;
}

int64_t NodeAttrs::required_int(const char* name, int64_t lo, int64_t hi) const {
  int64_t v = 0;
  if (!get_int(name, &v)) fail("attribute '", name, "' (int) is required");
  if (v < lo || v > hi) fail("attribute ", name, "=", v, " is out of range [", lo, ", ", hi, "]");
  return v;
}

int64_t NodeAttrs::optional_int(const char* name, int64_t dflt, int64_t lo, int64_t hi) const {
  int64_t v = dflt;
  get_int(name, &v);
  if (v < lo || v > hi) fail("attribute ", name, "=", v, " is out of range [", lo, ", ", hi, "]");
  return v;
}

Input Blob::input() const {
  Input in;
  in.present = true;
  in.data = bytes.data();
  in.shape = shape;
  in.type = type;
  in.count = count;
  return in;
}

bool is_op(const Ort::ConstNode& n, const char* domain, const char* op) {
  return n && n.GetOperatorType() == op && n.GetDomain() == domain;
}

std::vector<Ort::ConstNode> consumers(const Ort::ConstValueInfo& v) {
  std::vector<Ort::ConstNode> out;
  if (!v) return out;
  for (const auto& c : v.GetConsumers())
    if (c.node) out.push_back(c.node);
  return out;
}

Ort::ConstNode sole_consumer(const Ort::ConstValueInfo& v) {
  if (!v || v.IsGraphOutput()) return Ort::ConstNode{nullptr};
  std::vector<Ort::ConstNode> c = consumers(v);
  return c.size() == 1 ? c[0] : Ort::ConstNode{nullptr};
}

const Blob& expect_type(const Blob& b, const char* what, ONNXTensorElementDataType t) {
  if (b.type != t) fail("input '", what, "' must be ", type_name(t), ", got ", type_name(b.type));
  return b;
}

Blob float_codebook(Blob b) {
  if (b.type == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT) return b;
  const std::vector<float> values = codebook_values(b.bytes.data(), b.type, b.count);
  b.bytes.resize(values.size() * sizeof(float));
  if (!values.empty()) std::memcpy(b.bytes.data(), values.data(), b.bytes.size());
  b.type = ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  return b;
}

namespace {
// dims (-1 unknown) and their symbolic names; false when v is no tensor of known rank
bool dims_of(const Ort::ConstValueInfo& v, std::vector<int64_t>* dims, std::vector<std::string>* syms) {
  if (!v) return false;
  try {
    Ort::ConstTypeInfo ti = v.TypeInfo();
    if (ti.GetONNXType() != ONNX_TYPE_TENSOR) return false;
    auto info = ti.GetTensorTypeAndShapeInfo();
    *dims = info.GetShape();
    std::vector<const char*> names(dims->size(), nullptr);
    if (!names.empty()) info.GetSymbolicDimensions(names.data(), names.size());
    syms->clear();
    for (const char* n : names) syms->emplace_back(n ? n : "");
    return true;
  } catch (...) {
    return false;
  }
}
}  // namespace

int64_t rank_of(const Ort::ConstValueInfo& v) {
  std::vector<int64_t> d;
  std::vector<std::string> s;
  return dims_of(v, &d, &s) ? static_cast<int64_t>(d.size()) : -1;
}

bool same_shape(const Ort::ConstValueInfo& a, const Ort::ConstValueInfo& b) {
  std::vector<int64_t> da, db;
  std::vector<std::string> sa, sb;
  if (!dims_of(a, &da, &sa) || !dims_of(b, &db, &sb) || da.size() != db.size()) return false;
  for (size_t i = 0; i < da.size(); ++i) {
    if (da[i] >= 0 && db[i] >= 0 && da[i] == db[i]) continue;
    if (da[i] < 0 && db[i] < 0 && !sa[i].empty() && sa[i] == sb[i]) continue;
    return false;
  }
  return true;
}

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

std::string node_desc(const Ort::ConstNode& n) {
  return cat(n.GetDomain().empty() ? "ai.onnx" : n.GetDomain(), ".", n.GetOperatorType(), " node '", n.GetName(), "'");
}

bool is_decoder(const Ort::ConstNode& n) {
  const std::string op = n.GetOperatorType();
  return n.GetDomain() == kDomain && (op == "HuffmanDecode" || op == "RunLengthDecode");
}

// The producer node of a value, or a null node.
Ort::ConstNode producer(const Ort::ConstValueInfo& v) {
  if (!v) return Ort::ConstNode{nullptr};
  return v.GetProducerNode().node;
}

namespace {

ONNXTensorElementDataType elem_type(const Ort::ConstValueInfo& v) {
  try {
    Ort::ConstTypeInfo ti = v.TypeInfo();
    if (ti.GetONNXType() != ONNX_TYPE_TENSOR) return ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
    return ti.GetTensorTypeAndShapeInfo().GetElementType();
  } catch (...) {
    return ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
  }
}

}  // namespace

namespace {

// A table maker's Mul: scales `col` [n, 1] times `row` [1, c] (a scaled codebook) or [n, c] (an int8 codebook's rows).
bool scale_product(const std::vector<int64_t>& col, const std::vector<int64_t>& row) {
  return col[1] == 1 && (row[0] == 1 || row[0] == col[0]);
}

}  // namespace

bool is_table_maker(const Ort::ConstNode& n) {
  if (!n || !n.GetDomain().empty()) return false;
  const std::string op = n.GetOperatorType();
  std::vector<Ort::ConstValueInfo> ins = n.GetInputs();
  if (op == "Cast") {
    int64_t to = 0;
    if (ins.size() != 1 || !ins[0] || !NodeAttrs{n}.get_int("to", &to) || to != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT)
      return false;
    const auto t = elem_type(ins[0]);
    return t == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16 || t == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT ||
           t == ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8;
  }
  if (op != "Mul" || ins.size() != 2 || !ins[0] || !ins[1]) return false;
  const std::vector<int64_t> a = static_shape(ins[0]), b = static_shape(ins[1]);
  for (const auto& in : ins)
    if (elem_type(in) != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT) return false;
  if (a.size() != 2 || b.size() != 2) return false;
  return scale_product(a, b) || scale_product(b, a);
}

namespace {

// The table maker's output from its evaluated inputs.
Blob make_table(const Ort::ConstNode& n, const std::vector<Blob>& in) {
  Blob out;
  out.type = ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  if (n.GetOperatorType() == "Cast") {
    const auto type = in[0].type;
    const size_t width = type == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT ? 4 : type == ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8 ? 1 : 2;
    if (in[0].bytes.size() < static_cast<size_t>(in[0].count) * width)
      fail("Cast input holds fewer values than its shape says");
    std::vector<float> v;
    if (type == ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8) {  // an int8 codebook's entries (exact in float32)
      const int8_t* q = in[0].as<int8_t>();
      v.assign(q, q + in[0].count);
    } else {
      v = codebook_values(in[0].bytes.data(), type, in[0].count);
    }
    out.shape = in[0].shape;
    out.count = in[0].count;
    out.bytes.resize(v.size() * sizeof(float));
    std::memcpy(out.bytes.data(), v.data(), out.bytes.size());
    return out;
  }
  // T[i, j] = s[i, 0] * v[0 or i, j] (either order): float32 products, as onnxruntime's Mul computes them
  for (const Blob& b : in)
    if (b.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT || b.shape.size() != 2 || b.count != b.shape[0] * b.shape[1])
      fail("Mul inputs must be 2-D float32 tensors, got ", shape_str(b.shape));
  const bool col_first = scale_product(in[0].shape, in[1].shape);
  if (!col_first && !scale_product(in[1].shape, in[0].shape))
    fail("Mul inputs must be [n, 1] and [1, c] or [n, c], got ", shape_str(in[0].shape), " and ",
         shape_str(in[1].shape));
  const Blob& col = col_first ? in[0] : in[1];
  const Blob& row = col_first ? in[1] : in[0];
  const int64_t rows = col.shape[0], cols = row.shape[1];
  const bool per_row = row.shape[0] != 1 || rows == 1;  // [n, c] values: row i of T reads row i
  out.shape = {rows, cols};
  out.count = checked_mul(rows, cols, "Mul output");
  out.bytes.resize(static_cast<size_t>(out.count) * sizeof(float));
  auto* t = reinterpret_cast<float*>(out.bytes.data());
  const float* c = col.as<float>();
  const float* r = row.as<float>();
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) t[i * cols + j] = c[i] * r[(per_row ? i * cols : 0) + j];
  return out;
}

}  // namespace

// True when `v` is a constant initializer or the output of a decoder chain (decoders, table makers) over constants
// that nobody else reads; the chain's nodes are appended to `chain` (producers first).
bool constant_or_decoded(const Ort::ConstValueInfo& v, std::vector<Ort::ConstNode>* chain, int depth) {
  if (!v || depth > 4) return false;
  if (v.IsConstantInitializer()) return true;
  Ort::ConstNode p = producer(v);
  if (!p || !(is_decoder(p) || is_table_maker(p)) || v.IsGraphOutput() || v.GetConsumers().size() != 1) return false;
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
  if (!p || !(is_decoder(p) || is_table_maker(p))) fail("value '", v.GetName(), "' is not constant");
  const std::string where = node_desc(p);
  try {
    NodeAttrs a{p};
    std::vector<Ort::ConstValueInfo> ins = p.GetInputs();
    if (is_table_maker(p)) {
      std::vector<Blob> in;
      for (const auto& i : ins) in.push_back(evaluate(i));
      return make_table(p, in);
    }
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

}  // namespace ep
}  // namespace onnxcomp
