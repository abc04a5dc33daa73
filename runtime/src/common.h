// Shared helpers for the com.onnxcomp op implementations: error reporting, attribute and input
// access with validation, thread-pool fan-out, and the constant-input validation cache.
#pragma once

#include <onnxruntime_cxx_api.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <exception>
#include <limits>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "conv/conv.h"
#include "kernels.h"

namespace onnxcomp {

constexpr const char* kDomain = "com.onnxcomp";
// upper bound for any size derived from attributes (keeps all index arithmetic far from overflow)
constexpr int64_t kMaxDim = int64_t{1} << 40;
// upper bound for the elements of any tensor an op allocates (its output, decoded weights, scratch):
// 2^34 elements, 64 GiB of float32. A size an attribute or an empty input can claim without backing
// data (N = 2^40 with K = 0) is refused with INVALID_ARGUMENT before anything is allocated.
constexpr int64_t kMaxElements = int64_t{1} << 34;

struct OpError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

template <typename... A>
std::string cat(A&&... parts) {
  std::ostringstream os;
  (os << ... << parts);
  return os.str();
}

template <typename... A>
[[noreturn]] void fail(A&&... parts) {
  throw OpError(cat(std::forward<A>(parts)...));
}

std::string shape_str(const std::vector<int64_t>& s);

// Runs f and converts any exception into an onnxruntime status whose message names the node.
template <typename F>
OrtStatusPtr guarded(const std::string& where, F&& f) noexcept {
  try {
    f();
    return nullptr;
  } catch (const Ort::Exception& e) {
    return Ort::GetApi().CreateStatus(e.GetOrtErrorCode(), cat(where, ": ", e.what()).c_str());
  } catch (const std::bad_alloc&) {
    return Ort::GetApi().CreateStatus(ORT_FAIL, cat(where, ": out of memory").c_str());
  } catch (const std::exception& e) {
    return Ort::GetApi().CreateStatus(ORT_INVALID_ARGUMENT, cat(where, ": ", e.what()).c_str());
  } catch (...) {
    return Ort::GetApi().CreateStatus(ORT_FAIL, cat(where, ": unknown error").c_str());
  }
}

// ---- attributes --------------------------------------------------------------------------------
struct Attrs {
  const OrtKernelInfo* info;
  bool get_int(const char* name, int64_t* out) const;
  bool get_ints(const char* name, std::vector<int64_t>* out) const;
  int64_t required_int(const char* name, int64_t lo, int64_t hi) const;
  int64_t optional_int(const char* name, int64_t dflt, int64_t lo, int64_t hi) const;
  bool get_float(const char* name, float* out) const;
  bool get_string(const char* name, std::string* out) const;
};

std::string node_label(const char* op, const OrtKernelInfo* info);

// The attributes of a convolution the Winograd core runs (3x3, stride 1, dilation 1, one group, explicit pads),
// read through Attrs (a kernel) or ep::NodeAttrs (a graph node): anything else fails naming the attribute and
// `who` (what needs it). Returns the pads in ONNX order (top, left, bottom, right).
template <class A>
std::vector<int64_t> winograd_conv_pads(const A& a, const char* who) {
  auto expect_ints = [&](const char* name, const std::vector<int64_t>& want) {
    std::vector<int64_t> v;
    if (a.get_ints(name, &v) && v != want)
      fail("attribute ", name, "=", shape_str(v), " is not supported (", who, " needs ", shape_str(want), ")");
  };
  expect_ints("kernel_shape", {3, 3});
  expect_ints("strides", {1, 1});
  expect_ints("dilations", {1, 1});
  if (a.optional_int("group", 1, 1, kMaxDim) != 1) fail("attribute group must be 1");
  std::string auto_pad;
  if (a.get_string("auto_pad", &auto_pad) && !auto_pad.empty() && auto_pad != "NOTSET")
    fail("attribute auto_pad=", auto_pad, " is not supported (use explicit pads)");
  std::vector<int64_t> p(4, 0);
  if (a.get_ints("pads", &p)) {
    if (p.size() != 4) fail("attribute pads needs 4 values, got ", shape_str(p));
    for (int64_t v : p)
      if (v < 0 || v > (int64_t{1} << 31)) fail("attribute pads=", shape_str(p), " must be in [0, 2^31]");
  }
  return p;
}

// WinogradConv's fused activation attributes: leaky_alpha (1: none), clip_min, clip_max (+-inf: none).
template <class A>
void winograd_conv_activation(const A& a, float* leaky, float* lo, float* hi) {
  a.get_float("leaky_alpha", leaky);
  a.get_float("clip_min", lo);
  a.get_float("clip_max", hi);
  if (std::isnan(*leaky) || std::isnan(*lo) || std::isnan(*hi) || *lo > *hi)
    fail("attributes leaky_alpha, clip_min, clip_max must be numbers with clip_min <= clip_max");
}

// ---- inputs ------------------------------------------------------------------------------------
struct Input {
  bool present = false;
  const void* data = nullptr;
  std::vector<int64_t> shape;
  ONNXTensorElementDataType type = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
  int64_t count = 0;
  template <typename T>
  const T* as() const { return static_cast<const T*>(data); }
};

Input get_input(Ort::KernelContext& ctx, size_t index);
// Checks presence and element type; `what` names the input in messages.
const Input& expect(const Input& in, const char* what, ONNXTensorElementDataType type);
const char* type_name(ONNXTensorElementDataType t);

// X of a matmul op, float32 [..., K]: returns {M = product of the leading dims, K}.
struct MatMulDims {
  int64_t M;
  int64_t K;
};
MatMulDims matmul_x(const Input& x);
// A codebook input of shape [G * nblocks, C] with G = ceil(N / group_size) and 1 <= C <= 2^bits.
void check_codebook(const Input& cb, int64_t N, int64_t group_size, int bits, int64_t nblocks = 1);
// The codebook input as float32 (OPS.md: a codebook is float32 or float16): `cb` itself when float32, else its
// float16 values converted into *buf (exact: every float16 is a float32) and returned as a float32 Input over
// *buf. Any other element type fails naming the input. Kernels compare cb.data (not the result's) with their
// constant input to tell a constant codebook.
Input float_codebook(const Input& cb, std::vector<float>* buf);
// `count` codebook values of element type `type` (float32 or float16, else fails) as float32.
std::vector<float> codebook_values(const void* data, ONNXTensorElementDataType type, int64_t count);

// Constant-initializer inputs seen at kernel creation: a validation of their content is done once
// and then skipped as long as compute sees the same buffer again.
struct ConstInput {
  const void* data = nullptr;
  std::vector<int64_t> shape;
  ONNXTensorElementDataType type = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
  std::atomic<bool> validated{false};
  void init(const OrtKernelInfo* info, size_t index);
  bool skip(const void* p) const { return p != nullptr && p == data && validated.load(std::memory_order_acquire); }
  void mark(const void* p) {
    if (p != nullptr && p == data) validated.store(true, std::memory_order_release);
  }
};

// float_codebook for a kernel's codebook input: when it is the constant initializer `konst`, a float16 codebook is
// converted once, at the first run, and kept (per-channel and block codebooks hold 10^4..10^6 values: converting
// 2M of them on every run cost a 4096^2 GEMV with 128-input blocks 3 ms); any other float16 input is converted into
// *buf at every run.
struct ConstFloats {
  std::once_flag once;
  std::vector<float> floats;
};
Input float_codebook(const Input& cb, std::vector<float>* buf, const ConstInput& konst, ConstFloats* cache);

// ---- threading ---------------------------------------------------------------------------------
template <typename F>
void parallel_for(Ort::KernelContext& ctx, size_t n, F&& f) {
  if (n == 0) return;
  if (n == 1) {
    f(size_t{0});
    return;
  }
  struct Job {
    F* f;
    std::mutex mu;
    std::exception_ptr err;
  } job{&f, {}, {}};
  ctx.ParallelFor(
      [](void* d, size_t i) {
        Job* j = static_cast<Job*>(d);
        try {
          (*j->f)(i);
        } catch (...) {
          std::lock_guard<std::mutex> lock(j->mu);
          if (!j->err) j->err = std::current_exception();
        }
      },
      n, 0, &job);
  if (job.err) std::rethrow_exception(job.err);
}

// conv::Parallel over onnxruntime's intra-op thread pool (for the conv/ kernel core).
class OrtParallel final : public conv::Parallel {
 public:
  explicit OrtParallel(Ort::KernelContext& ctx) : ctx_(ctx) {}
  void run(size_t n, void (*task)(void*, size_t), void* c) const override {
    parallel_for(ctx_, n, [&](size_t i) { task(c, i); });
  }

 private:
  Ort::KernelContext& ctx_;
};

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t checked_mul(int64_t a, int64_t b, const char* what) {
  if (a < 0 || b < 0 || (a != 0 && b > kMaxDim / a)) fail(what, " is too large");
  return a * b;
}
// Elements of a tensor of `shape` the op is about to allocate: the overflow-checked product of the dims,
// refused (INVALID_ARGUMENT, naming `what`) beyond kMaxElements.
int64_t checked_elements(const std::vector<int64_t>& shape, const char* what);

// A zeroed, 64-byte aligned byte buffer for a large constant weight layout that a kernel streams once per run. From
// 1 MiB up it is 2 MiB aligned and advised to the kernel as transparent huge pages (madvise; ignored where THP is
// off): the stream then crosses a page every 2 MiB instead of every 4 KiB, where the hardware prefetcher stops and
// the TLB misses. Measured, 1 thread: the 90%-sparse 25088x4096 layer 2.2-2.4 ms -> 1.4 ms per run; the 4-bit
// 4096^2 GEMV with its codes evicted from the caches (as in a model whose layers stream from memory) 0.58-0.62 ms
// -> 0.48 ms, which is its time with the codes in L3.
class PageBuffer {
 public:
  PageBuffer() = default;
  PageBuffer(const PageBuffer&) = delete;
  PageBuffer& operator=(const PageBuffer&) = delete;
  PageBuffer(PageBuffer&& o) noexcept : data_(o.data_), size_(o.size_) { o.data_ = nullptr, o.size_ = 0; }
  PageBuffer& operator=(PageBuffer&& o) noexcept;
  ~PageBuffer();
  void allocate(size_t bytes);  // replaces the contents with `bytes` zero bytes
  void assign(const std::vector<uint8_t>& bytes);  // replaces the contents with a copy of `bytes`
  uint8_t* data() { return data_; }
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }

 private:
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// ---- codebook helpers shared by the ops ---------------------------------------------------------
// Unpacks codes j0 .. j0+count-1 of a packed row ((j0 * bits) % 8 == 0).
void unpack_row(const uint8_t* row, int64_t j0, int64_t count, int bits, uint8_t* out);
// Largest code in a [rows, row_bytes] packed matrix of `n` codes per row.
uint32_t max_code(const uint8_t* codes, int64_t rows, int64_t row_bytes, int64_t n, int bits);
// The batch-1..4 GEMV's copy of constant codes [K, ceil(N*bits/8)], in the layout this CPU's kernel table reads
// for the width and codebook grouping: the column layout (KernelTable::reads_columns), else the prepacked rows
// (reads_prepacked), else none (the GEMM on the decoded panel runs those layers).
struct GemvCodes {
  PageBuffer packed, columns;
  void attach(CodebookWeights* w) const {
    w->packed = packed.empty() ? nullptr : packed.data();
    w->columns = columns.empty() ? nullptr : columns.data();
  }
};
GemvCodes prepack_for_gemv(const uint8_t* codes, int64_t K, int64_t N, int bits, int64_t group_size);
// The same for a constant codes input of that shape (nothing when the input is not constant or of another shape).
GemvCodes prepack_for_gemv(const ConstInput& codes, int64_t N, int bits, int64_t group_size);

// Copies a [G, C] codebook into [G, 2^bits] (zeros past C).
std::vector<float> pad_codebook(const float* cb, int64_t G, int64_t C, int bits);

// CodebookGather's rows: y[i, :] = the decoded table row r_i = idx[i] (+ V when negative), i < idx.count, with
// codes [V, row_bytes] (D codes of `bits` per row) and `padded` the [G, 2^bits] codebook of C used entries, one
// per group_size rows; only the gathered rows are decoded (the kernel set's decode_rows), in tasks of 64 indices on
// ctx's pool. OpError for an index outside [-V, V), or (check_codes) a gathered row holding a code >= C.
void gather_codebook_rows(Ort::KernelContext& ctx, const Input& idx, const uint8_t* codes, int64_t V,
                          int64_t row_bytes, int64_t D, int bits, const float* padded, int64_t C, int64_t group_size,
                          bool check_codes, float* y);

// W of a codebook matmul with constant weights, decoded once into floats in the packed GEMM layout
// (packed_b_floats, the kernel set's nr): a run with more than 4 rows of X then is a plain register-blocked GEMM,
// with no decode (measured faster than decoding W block by block at every row count from 8 up, by 3-37%, even
// with W's floats evicted from the caches). Built at the first such run (not at session creation: a deployment
// running 1-4 rows, which the register-decoding GEMV serves from the codes, never pays its memory, 4 bytes per
// weight) and kept while the weights stay the same. Thread-safe.
class FloatPanel {
 public:
  FloatPanel() = default;
  FloatPanel(const FloatPanel&) = delete;
  FloatPanel& operator=(const FloatPanel&) = delete;
  ~FloatPanel();
  // The panel of w (built on the first call, strips decoded in parallel on the pool).
  const float* get(Ort::KernelContext& ctx, const CodebookWeights& w);
  // The same for any K x N matrix that `fill` writes panels of (src: its context).
  const float* get(Ort::KernelContext& ctx, PanelFn fill, const void* src, int64_t K, int64_t N);
  size_t bytes() const { return buf_.size(); }

 private:
  std::once_flag once_;
  PageBuffer buf_;
};

// Block codebooks (attribute block_size, OPS.md): a codes matrix [rows, row_bytes] of `cols` codes per row, each code
// looked up in codebook row (output / group_size) * nblocks + input / block_size, nblocks = ceil(inputs / block_size).
// rows_are_outputs: the rows are the outputs and the columns the inputs (CodebookConv's filters); otherwise the rows
// are the inputs k and the columns the outputs n (CodebookMatMul's W [K, N]). codebook: padded to 2^bits entries.
struct BlockCodebookWeights {
  const uint8_t* codes;
  const float* codebook;  // [G * nblocks, 2^bits]
  int64_t rows, cols, row_bytes, group_size, block_size, nblocks;
  int bits;
  bool rows_are_outputs;
  float at(int64_t r, int64_t c) const;  // the decoded weight of row r, column c
};
// nblocks = ceil(inputs / block_size), refused (INVALID_ARGUMENT) when G * nblocks codebook rows would overflow.
int64_t block_count(int64_t inputs, int64_t block_size);
// Decodes rows [0, rows) into out [rows, cols] (row-major).
void decode_block_rows(const BlockCodebookWeights& w, float* out);
// PanelFn over W [K = rows, N = cols] of a matmul (rows_are_outputs false): ctx is a BlockCodebookWeights.
void block_codebook_panel(const void* ctx, int64_t k0, int64_t kc, int64_t n0, int64_t nc, int nr, float* panel);

// Y[..., N] = act(X[..., K] @ W + bias) for a codebook-decoded W (shared by CodebookMatMul, TernaryMatMul and the
// EP). y is fully written. panel: the weights' float panel when they are constant (else nullptr); relu: max(., 0).
void run_codebook_matmul(Ort::KernelContext& ctx, const float* x, int64_t M, const CodebookWeights& w,
                         const float* bias, float* y, FloatPanel* panel = nullptr, bool relu = false);
// The GEMM of run_codebook_matmul for any row count: W [K, N] packed whole (bp) or, when bp is null, supplied block
// by block by fill(src, ...).
void run_panel_gemm(Ort::KernelContext& ctx, const float* x, int64_t M, int64_t K, int64_t N, const float* bp,
                    PanelFn fill, const void* src, const float* bias, float* y, bool relu);


// SparseCodebookMatMul (sparse_codebook_matmul.cc): the windowed layout of constant, validated weights for the
// AVX-512 batch-1..4 kernel, its builder (false when it does not apply or would be too large), the layout check
// (every entry's column < N; row_ptr already checked), and the driver (y fully written; pack may be null).
struct WindowsPack {
  PageBuffer buf;  // the steps' lanes (steps * 16 * lane_bytes bytes), then step_adv (steps bytes)
  std::vector<int64_t> step_ptr;
  std::vector<float> cb16;
  int64_t NG = 0, steps = 0;
  int lane_bytes = 0, window = 0;
  const uint8_t* data() const { return buf.data(); }
  const uint8_t* step_adv() const { return buf.data() + steps * 16 * lane_bytes; }
};
bool build_windows(const SparseWeights& w, const float* codebook, int64_t C, WindowsPack* out);
void validate_sparse_layout(const int32_t* row_ptr, const uint8_t* deltas, int64_t K, int index_bits, int64_t N);
void run_sparse_matmul(Ort::KernelContext& ctx, const float* x, int64_t M, const SparseWeights& w,
                       const WindowsPack* pack, const float* bias, float* y);

// Sets output 0 (float32) of a shape-inference context.
OrtStatusPtr set_output_shape(OrtShapeInferContext* ctx, const Ort::ShapeInferContext::Shape& shape);
// Output shape for a matmul-style op: X's shape with the last dim replaced by N.
OrtStatusPtr infer_matmul_shape(OrtShapeInferContext* raw, const char* op);

// Installs a shape-inference callback that receives the raw context (see set_output_shape).
template <typename Op>
void install_shape_inference(Op* op) {
  op->OrtCustomOp::InferOutputShapeFn = [](const OrtCustomOp*, OrtShapeInferContext* raw) -> OrtStatusPtr {
    return Op::InferShape(raw);
  };
}

}  // namespace onnxcomp
