// Graph access for the onnxcomp EP: attributes of OrtNodes, constant tensors (initializers, or the output of
// HuffmanDecode / RunLengthDecode chains over initializers, decoded natively at compile time), producers.
#pragma once

#include <onnxruntime_cxx_api.h>

#include <cstdint>
#include <string>
#include <vector>

#include "../common.h"

namespace onnxcomp {
namespace ep {

// A node's attributes, validated like the custom ops validate theirs (OpError on a bad value).
struct NodeAttrs {
  Ort::ConstNode node;
  const OrtOpAttr* find(const char* name) const;
  bool get_int(const char* name, int64_t* out) const;
  bool get_ints(const char* name, std::vector<int64_t>* out) const;
  bool get_float(const char* name, float* out) const;
  bool get_string(const char* name, std::string* out) const;
  int64_t required_int(const char* name, int64_t lo, int64_t hi) const;
  int64_t optional_int(const char* name, int64_t dflt, int64_t lo, int64_t hi) const;
};

// "<domain>.<op> node '<name>'" for messages.
std::string node_desc(const Ort::ConstNode& n);

// A constant tensor's bytes (owned copy) and shape.
struct Blob {
  std::vector<uint8_t> bytes;
  std::vector<int64_t> shape;
  ONNXTensorElementDataType type = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
  int64_t count = 0;
  template <typename T>
  const T* as() const { return reinterpret_cast<const T*>(bytes.data()); }
  Input input() const;
};

bool is_decoder(const Ort::ConstNode& n);  // com.onnxcomp HuffmanDecode / RunLengthDecode
// A table maker the EP evaluates at compile time (kmeans(group-size=scaled) and int8 codebooks, OPS.md): an ai.onnx
// Cast of a float16, float32 or int8 tensor to float32, or an ai.onnx Mul of two float32 2-D tensors [n, 1] and
// [1, c] or [n, c] (either order): the per-channel codebook scales[n] * values[c], or an int8 codebook's rows
// scales[n] * entries[n, c]. Only these forms: any other Mul or Cast is left to onnxruntime.
bool is_table_maker(const Ort::ConstNode& n);
bool is_op(const Ort::ConstNode& n, const char* domain, const char* op);  // domain "" is ai.onnx

// The producer node of a value, or a null node.
Ort::ConstNode producer(const Ort::ConstValueInfo& v);
// The nodes reading a value (empty for a graph output read by nobody).
std::vector<Ort::ConstNode> consumers(const Ort::ConstValueInfo& v);
// The single node consuming a value that is no graph output, or a null node.
Ort::ConstNode sole_consumer(const Ort::ConstValueInfo& v);

// True when `v` is a constant initializer or the output of a decoder chain (decoders, table makers) over constants
// that nobody else reads; the chain's nodes are appended to `chain` (producers first).
bool constant_or_decoded(const Ort::ConstValueInfo& v, std::vector<Ort::ConstNode>* chain, int depth = 0);

// Evaluates a value at compile time: an initializer, or the output of a decoder chain (decoded natively; a
// corrupt stream fails naming the decoder node), or of a table maker (an ai.onnx Cast to float32, a Mul of [n, 1] by
// [1, c] or [n, c] float32 tensors: OPS.md).
Blob evaluate(const Ort::ConstValueInfo& v);
const Blob& expect_type(const Blob& b, const char* what, ONNXTensorElementDataType t);
// A constant codebook as float32: a float16 one converted once, at compile time (exact); a type other than float32
// or float16 fails naming the input.
Blob float_codebook(Blob b);

// The static shape of a value, or an empty vector when its rank or a dim is unknown.
std::vector<int64_t> static_shape(const Ort::ConstValueInfo& v);
// A tensor value's rank, or -1 when unknown.
int64_t rank_of(const Ort::ConstValueInfo& v);
// True when two tensor values have the same rank and, per dim, the same known size or the same symbolic name.
bool same_shape(const Ort::ConstValueInfo& a, const Ort::ConstValueInfo& b);

}  // namespace ep
}  // namespace onnxcomp
