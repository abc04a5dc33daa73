#include "common.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>

namespace onnxcomp {

std::string shape_str(const std::vector<int64_t>& s) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << "]";
  return os.str();
}

bool Attrs::get_int(const char* name, int64_t* out) const {
  const OrtApi& api = Ort::GetApi();
  int64_t v = 0;
  OrtStatus* st = api.KernelInfoGetAttribute_int64(info, name, &v);
  if (st != nullptr) {
    api.ReleaseStatus(st);
    return false;
  }
  *out = v;
  return true;
}

bool Attrs::get_ints(const char* name, std::vector<int64_t>* out) const {
  const OrtApi& api = Ort::GetApi();
  size_t size = 0;
  OrtStatus* st = api.KernelInfoGetAttributeArray_int64(info, name, nullptr, &size);
  if (st != nullptr) {
    api.ReleaseStatus(st);
    return false;
  }
  out->assign(size, 0);
  if (size > 0) {
    st = api.KernelInfoGetAttributeArray_int64(info, name, out->data(), &size);
    if (st != nullptr) {
      api.ReleaseStatus(st);
      return false;
    }
    out->resize(size);
  }
  return true;
}

int64_t Attrs::required_int(const char* name, int64_t lo, int64_t hi) const {
  int64_t v = 0;
  if (!get_int(name, &v)) fail("attribute '", name, "' (int) is required");
  if (v < lo || v > hi) fail("attribute ", name, "=", v, " is out of range [", lo, ", ", hi, "]");
  return v;
}

int64_t Attrs::optional_int(const char* name, int64_t dflt, int64_t lo, int64_t hi) const {
  int64_t v = dflt;
  get_int(name, &v);
  if (v < lo || v > hi) fail("attribute ", name, "=", v, " is out of range [", lo, ", ", hi, "]");
  return v;
}

bool Attrs::get_float(const char* name, float* out) const {
  const OrtApi& api = Ort::GetApi();
  float v = 0.0f;
  OrtStatus* st = api.KernelInfoGetAttribute_float(info, name, &v);
  if (st != nullptr) {
    api.ReleaseStatus(st);
    return false;
  }
  *out = v;
  return true;
}

bool Attrs::get_string(const char* name, std::string* out) const {
  const OrtApi& api = Ort::GetApi();
  size_t size = 0;
  OrtStatus* st = api.KernelInfoGetAttribute_string(info, name, nullptr, &size);
  if (st != nullptr) {
    api.ReleaseStatus(st);
    return false;
  }
  std::string v(size, '\0');
  st = api.KernelInfoGetAttribute_string(info, name, &v[0], &size);
  if (st != nullptr) {
    api.ReleaseStatus(st);
    return false;
  }
  v.resize(size > 0 ? size - 1 : 0);  // size counts the terminating NUL
  *out = v;
  return true;
}

std::string node_label(const char* op, const OrtKernelInfo* info) {
  std::string name;
  try {
    name = Ort::ConstKernelInfo(info).GetNodeName();
  } catch (...) {
  }
  return cat(kDomain, ".", op, " node '", name, "'");
}

const char* type_name(ONNXTensorElementDataType t) {
  switch (t) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT: return "float32";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8: return "uint8";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8: return "int8";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32: return "int32";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64: return "int64";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE: return "float64";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16: return "float16";
    default: return "another type";
  }
}

int64_t checked_elements(const std::vector<int64_t>& shape, const char* what) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) fail(what, " ", shape_str(shape), " has a negative dimension");
    if (d != 0 && n > kMaxElements / d)
      fail(what, " ", shape_str(shape), " would have more than 2^34 elements: refused before allocating");
    n *= d;
  }
  if (n > kMaxElements) fail(what, " ", shape_str(shape), " would have more than 2^34 elements: refused before allocating");
  return n;
}

MatMulDims matmul_x(const Input& x) {
  expect(x, "X", ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT);
  if (x.shape.empty()) fail("X must have rank >= 1, got a scalar");
  // the leading dims of an empty X (K = 0) are not backed by data: their product is checked too
  const std::vector<int64_t> lead(x.shape.begin(), x.shape.end() - 1);
  return {checked_elements(lead, "X's leading dims"), x.shape.back()};
}

void check_codebook(const Input& cb, int64_t N, int64_t group_size, int bits, int64_t nblocks) {
  expect(cb, "codebook", ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT);
  const int64_t G = ceil_div(N, group_size);
  const int64_t entries = int64_t{1} << bits;
  if (nblocks != 1) {
    const int64_t rows = checked_mul(G, nblocks, "G*nblocks codebook rows");
    if (cb.shape.size() != 2 || cb.shape[0] != rows || cb.shape[1] < 1 || cb.shape[1] > entries)
      fail("codebook must have shape [G*nblocks=", G, "*", nblocks, ", C] with 1 <= C <= 2^bits=", entries, " (N=", N,
           ", group_size=", group_size, "), got ", shape_str(cb.shape));
    return;
  }
  if (cb.shape.size() != 2 || cb.shape[0] != G || cb.shape[1] < 1 || cb.shape[1] > entries)
    fail("codebook must have shape [G=", G, ", C] with 1 <= C <= 2^bits=", entries, " (N=", N,
         ", group_size=", group_size, "), got ", shape_str(cb.shape));
}

std::vector<float> codebook_values(const void* data, ONNXTensorElementDataType type, int64_t count) {
  if (type == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT) {
    const float* p = static_cast<const float*>(data);
    return std::vector<float>(p, p + count);
  }
  if (type != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16)
    fail("input 'codebook' must be float32 or float16, got ", type_name(type));
  std::vector<float> out(static_cast<size_t>(count));
  const uint16_t* p = static_cast<const uint16_t*>(data);
  for (int64_t i = 0; i < count; ++i) out[static_cast<size_t>(i)] = Ort::Float16_t::FromBits(p[i]).ToFloat();
  return out;
}

Input float_codebook(const Input& cb, std::vector<float>* buf) {
  if (!cb.present) fail("input 'codebook' is missing");
  if (cb.type == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT) return cb;
  if (cb.count > 0 && cb.data == nullptr) fail("input 'codebook' has no data");
  *buf = codebook_values(cb.data, cb.type, cb.count);
  Input out = cb;
  out.type = ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  out.data = buf->data();
  return out;
}

Input float_codebook(const Input& cb, std::vector<float>* buf, const ConstInput& konst, ConstFloats* cache) {
  if (!cb.present || cb.type == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT || cb.data == nullptr || cb.data != konst.data)
    return float_codebook(cb, buf);
  std::call_once(cache->once, [&] { cache->floats = codebook_values(cb.data, cb.type, cb.count); });
  Input out = cb;
  out.type = ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  out.data = cache->floats.data();
  return out;
}

Input get_input(Ort::KernelContext& ctx, size_t index) {
  Input in;
  if (index >= ctx.GetInputCount()) return in;
  Ort::ConstValue v = ctx.GetInput(index);
  if (!v) return in;
  if (!v.IsTensor()) fail("input ", index, " is not a tensor");
  auto info = v.GetTensorTypeAndShapeInfo();
  in.present = true;
  in.type = info.GetElementType();
  in.shape = info.GetShape();
  in.count = static_cast<int64_t>(info.GetElementCount());
  in.data = v.GetTensorRawData();
  return in;
}

const Input& expect(const Input& in, const char* what, ONNXTensorElementDataType type) {
  if (!in.present) fail("input '", what, "' is missing");
  if (in.type != type) fail("input '", what, "' must be ", type_name(type), ", got ", type_name(in.type));
  if (in.count > 0 && in.data == nullptr) fail("input '", what, "' has no data");
  return in;
}

void ConstInput::init(const OrtKernelInfo* info, size_t index) {
  data = nullptr;
  try {
    size_t n = Ort::ConstKernelInfo(info).GetInputCount();
    if (index >= n) return;
    int is_const = 0;
    Ort::ConstValue v = Ort::ConstKernelInfo(info).GetTensorConstantInput(index, &is_const);
    if (is_const && v && v.IsTensor()) {
      data = v.GetTensorRawData();
      shape = v.GetTensorTypeAndShapeInfo().GetShape();
      type = v.GetTensorTypeAndShapeInfo().GetElementType();
    }
  } catch (...) {
    data = nullptr;
  }
}

void unpack_row(const uint8_t* row, int64_t j0, int64_t count, int bits, uint8_t* out) {
  const uint8_t* p = row + ((j0 * bits) >> 3);
  if (bits == 8) {
    std::memcpy(out, p, static_cast<size_t>(count));
    return;
  }
  if (bits == 4 || bits == 2 || bits == 1) {
    const int cpb = 8 / bits;
    const uint32_t mask = (1u << bits) - 1u;
    int64_t i = 0;
    for (; i + cpb <= count; i += cpb) {
      const uint32_t b = p[i / cpb];
      for (int t = 0; t < cpb; ++t) out[i + t] = static_cast<uint8_t>((b >> (t * bits)) & mask);
    }
    for (; i < count; ++i) out[i] = static_cast<uint8_t>((p[i / cpb] >> ((i % cpb) * bits)) & mask);
    return;
  }
  const uint32_t mask = (1u << bits) - 1u;
  uint32_t acc = 0;
  int have = 0;
  int64_t byte = 0;
  for (int64_t i = 0; i < count; ++i) {
    while (have < bits) {
      acc |= static_cast<uint32_t>(p[byte++]) << have;
      have += 8;
    }
    out[i] = static_cast<uint8_t>(acc & mask);
    acc >>= bits;
    have -= bits;
  }
}

uint32_t max_code(const uint8_t* codes, int64_t rows, int64_t row_bytes, int64_t n, int bits) {
  if (rows <= 0 || n <= 0) return 0;  // no codes (n is then not backed by data: nothing to allocate)
  std::vector<uint8_t> buf(static_cast<size_t>(n));
  uint32_t mx = 0;
  for (int64_t r = 0; r < rows; ++r) {
    unpack_row(codes + r * row_bytes, 0, n, bits, buf.data());
    for (uint8_t c : buf) mx = std::max<uint32_t>(mx, c);
  }
  return mx;
}

void gather_codebook_rows(Ort::KernelContext& ctx, const Input& idx, const uint8_t* codes, int64_t V,
                          int64_t row_bytes, int64_t D, int bits, const float* padded, int64_t C, int64_t group_size,
                          bool check_codes, float* y) {
  constexpr int64_t kRowsPerTask = 64;
  const int64_t n = idx.count;
  const bool wide = idx.type == ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64;
  const KernelTable& kt = kernels();
  parallel_for(ctx, static_cast<size_t>(ceil_div(n, kRowsPerTask)), [&](size_t t) {
    const int64_t i0 = static_cast<int64_t>(t) * kRowsPerTask, i1 = std::min(n, i0 + kRowsPerTask);
    for (int64_t i = i0; i < i1; ++i) {
      int64_t r = wide ? idx.as<int64_t>()[i] : static_cast<int64_t>(idx.as<int32_t>()[i]);
      if (r < -V || r >= V) fail("index ", r, " at position ", i, " is out of range [-", V, ", ", V, ")");
      if (r < 0) r += V;
      if (check_codes) {
        const uint32_t mx = max_code(codes + r * row_bytes, 1, row_bytes, D, bits);
        if (mx >= static_cast<uint32_t>(C))
          fail("code ", mx, " of table row ", r, " is >= the codebook width ", C);
      }
      kt.decode_rows(codes, row_bytes, r, 1, D, bits, padded, group_size, y + i * D);
    }
  });
}

GemvCodes prepack_for_gemv(const uint8_t* codes, int64_t K, int64_t N, int bits, int64_t group_size) {
  GemvCodes out;
  if (K <= 0) return out;
  const KernelTable& kt = kernels();
  const int64_t row_bytes = ceil_div(N * bits, 8);
  if (kt.reads_columns(bits, group_size, N)) {
    out.columns.assign(prepack_columns(codes, K, N, row_bytes, bits));
  } else if (kt.reads_prepacked(bits)) {
    out.packed.assign(prepack_codes(codes, K, N, row_bytes, bits));
  }
  return out;
}

GemvCodes prepack_for_gemv(const ConstInput& codes, int64_t N, int bits, int64_t group_size) {
  if (codes.data == nullptr || codes.shape.size() != 2 || codes.shape[1] != ceil_div(N * bits, 8)) return {};
  return prepack_for_gemv(static_cast<const uint8_t*>(codes.data), codes.shape[0], N, bits, group_size);
}

std::vector<float> pad_codebook(const float* cb, int64_t G, int64_t C, int bits) {
  const int64_t E = int64_t{1} << bits;
  std::vector<float> out(static_cast<size_t>(checked_elements({G, E}, "padded codebook")), 0.0f);
  for (int64_t g = 0; g < G; ++g) std::memcpy(out.data() + g * E, cb + g * C, static_cast<size_t>(C) * sizeof(float));
  return out;
}

OrtStatusPtr set_output_shape(OrtShapeInferContext* ctx, const Ort::ShapeInferContext::Shape& shape) {
  // Like Ort::ShapeInferContext::SetOutputShape, but marks symbolic dims with -1 (the API-29 C++
  // wrapper uses -2, which newer onnxruntime releases reject).
  const OrtApi& api = Ort::GetApi();
  std::vector<int64_t> dims;
  std::vector<const char*> syms;
  for (const auto& d : shape) {
    if (d.IsInt()) {
      dims.push_back(d.AsInt() >= 0 ? d.AsInt() : -1);
      syms.push_back("");
    } else {
      dims.push_back(-1);
      syms.push_back(d.AsSym() ? d.AsSym() : "");
    }
  }
  OrtTensorTypeAndShapeInfo* info = nullptr;
  OrtStatus* st = api.CreateTensorTypeAndShapeInfo(&info);
  if (st) return st;
  if (!(st = api.SetTensorElementType(info, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT)) &&
      !(st = api.SetDimensions(info, dims.data(), dims.size())) &&
      !(st = api.SetSymbolicDimensions(info, syms.data(), syms.size()))) {
    st = api.ShapeInferContext_SetOutputTypeShape(ctx, 0, info);
  }
  api.ReleaseTensorTypeAndShapeInfo(info);
  return st;
}

OrtStatusPtr infer_matmul_shape(OrtShapeInferContext* raw, const char* op) {
  try {
    Ort::ShapeInferContext ctx(&Ort::GetApi(), raw);
    if (ctx.GetInputCount() < 1) return nullptr;
    Ort::ShapeInferContext::Shape shape = ctx.GetInputShape(0);
    if (shape.empty()) return nullptr;  // unknown rank
    int64_t n = ctx.GetAttrInt("N");
    if (n <= 0 || n > kMaxDim)
      return Ort::GetApi().CreateStatus(ORT_INVALID_ARGUMENT,
                                        cat(kDomain, ".", op, ": attribute N=", n, " must be in [1, 2^40]").c_str());
    shape.back() = Ort::ShapeInferContext::SymbolicInteger(n);
    return set_output_shape(raw, shape);
  } catch (const std::exception& e) {
    return Ort::GetApi().CreateStatus(ORT_INVALID_ARGUMENT, cat(kDomain, ".", op, ": shape inference: ", e.what()).c_str());
  }
}

// ---- the codebook matmul driver -----------------------------------------------------------------
namespace {
constexpr int64_t kColumnTask = 1024;  // columns per parallel task (whole prepacked blocks, 16-aligned)
constexpr int64_t kRowTask = 512;      // rows of X per parallel task on the GEMM paths
constexpr int64_t kGemvMaxRows = 4;
}  // namespace

PageBuffer::~PageBuffer() { std::free(data_); }

PageBuffer& PageBuffer::operator=(PageBuffer&& o) noexcept {
  if (this != &o) {
    std::free(data_);
    data_ = o.data_, size_ = o.size_;
    o.data_ = nullptr, o.size_ = 0;
  }
  return *this;
}

void PageBuffer::assign(const std::vector<uint8_t>& bytes) {
  allocate(bytes.size());
  if (!bytes.empty()) std::memcpy(data_, bytes.data(), bytes.size());
}

void PageBuffer::allocate(size_t bytes) {
  std::free(data_);
  data_ = nullptr;
  size_ = 0;
  constexpr size_t kHuge = size_t{2} << 20;
  const size_t align = bytes >= kHuge / 2 ? kHuge : 64;
  const size_t padded = std::max<size_t>(1, (bytes + align - 1) / align) * align;
  void* p = nullptr;
  if (posix_memalign(&p, align, padded) != 0) throw std::bad_alloc();
#ifdef MADV_HUGEPAGE
  if (align == kHuge) madvise(p, padded, MADV_HUGEPAGE);  // advice only: the buffer works either way
#endif
  std::memset(p, 0, padded);  // first touch, after the advice: the pages fault in huge where THP allows
  data_ = static_cast<uint8_t*>(p);
  size_ = bytes;
}

FloatPanel::~FloatPanel() = default;

const float* FloatPanel::get(Ort::KernelContext& ctx, const CodebookWeights& w) {
  return get(ctx, kernels().codebook_panel, &w, w.K, w.N);
}

const float* FloatPanel::get(Ort::KernelContext& ctx, PanelFn fill, const void* src, int64_t K, int64_t N) {
  std::call_once(once_, [&] {
    const KernelTable& kt = kernels();
    const int64_t nr = kt.nr;
    const size_t n = static_cast<size_t>(packed_b_floats(K, N, kt.nr));
    PageBuffer buf;
    buf.allocate(n * sizeof(float));
    float* p = reinterpret_cast<float*>(buf.data());
    // strip groups of ~kColumnTask columns, decoded in parallel (each provider call writes its strips)
    const int64_t group = std::max<int64_t>(1, kColumnTask / nr) * nr;
    parallel_for(ctx, static_cast<size_t>(ceil_div(N, group)), [&](size_t t) {
      const int64_t n0 = static_cast<int64_t>(t) * group;
      fill(src, 0, K, n0, std::min(group, N - n0), kt.nr, p + (n0 / nr) * K * nr);
    });
    buf_ = std::move(buf);
  });
  return reinterpret_cast<const float*>(buf_.data());
}

void run_codebook_matmul(Ort::KernelContext& ctx, const float* x, int64_t M, const CodebookWeights& w,
                         const float* bias, float* y, FloatPanel* panel, bool relu) {
  const int64_t N = w.N, K = w.K;
  if (M == 0 || N == 0) return;
  const KernelTable& kt = kernels();
  if (M > kGemvMaxRows && K > 0) {
    // GEMM: on the float panel of constant weights, else decoding each k x n block of W into an L2 panel
    const float* bp = panel != nullptr ? panel->get(ctx, w) : nullptr;
    run_panel_gemm(ctx, x, M, K, N, bp, kt.codebook_panel, &w, bias, y, relu);
    return;
  }
  // 1..4 rows of constant weights the register-decoding GEMV cannot read (kt.codebook_gemv_reads; AVX-512 reads
  // every width and grouping of constant codes but byte codes without AVX512-VBMI or with codebook groups of other
  // than multiples of 64 columns; AVX2 reads 1, 2, 4 bits in groups of whole blocks; scalar nothing): the same GEMM
  // on the panel decoded once, not all of W decoded again on every run. The panel costs 4 bytes per weight, as
  // onnxruntime's own constant folding of the ops' bodies.
  if (panel != nullptr && K > 0 && !kt.codebook_gemv_reads(w, M)) {
    run_panel_gemm(ctx, x, M, K, N, panel->get(ctx, w), kt.codebook_panel, &w, bias, y, relu);
    return;
  }
  // 1..4 rows: the register-decoding GEMV accumulates into y (bias first), GEMM on the columns it does not cover
  for (int64_t m = 0; m < M; ++m) {
    if (bias != nullptr) {
      std::memcpy(y + m * N, bias, static_cast<size_t>(N) * sizeof(float));
    } else {
      std::fill(y + m * N, y + m * N + N, 0.0f);
    }
  }
  if (K > 0) {
    parallel_for(ctx, static_cast<size_t>(ceil_div(N, kColumnTask)), [&](size_t t) {
      const int64_t n0 = static_cast<int64_t>(t) * kColumnTask;
      const int64_t n1 = std::min(N, n0 + kColumnTask);
      const int64_t done = kt.codebook_gemv(x, M, K, w, y, N, n0, n1);
      if (done < n1) kt.gemm_rows(M, K, x, K, nullptr, kt.codebook_panel, &w, bias, false, y, N, done, n1);
    });
  }
  if (relu) {
    const int64_t total = M * N;
    for (int64_t i = 0; i < total; ++i) y[i] = y[i] > 0.0f ? y[i] : 0.0f;
  }
}

void run_panel_gemm(Ort::KernelContext& ctx, const float* x, int64_t M, int64_t K, int64_t N, const float* bp,
                    PanelFn fill, const void* src, const float* bias, float* y, bool relu) {
  if (M == 0 || N == 0) return;
  const KernelTable& kt = kernels();
  if (K == 0) {  // Y = act(bias)
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) {
        const float v = bias != nullptr ? bias[n] : 0.0f;
        y[m * N + n] = relu && v < 0.0f ? 0.0f : v;
      }
    return;
  }
  const int64_t row_task = std::max<int64_t>(kt.mr, kRowTask / kt.mr * kt.mr);
  const int64_t col_task = std::max<int64_t>(1, kColumnTask / kt.nr) * kt.nr;
  const int64_t mt = ceil_div(M, row_task), nt = ceil_div(N, col_task);
  parallel_for(ctx, static_cast<size_t>(mt * nt), [&](size_t t) {
    const int64_t m0 = static_cast<int64_t>(t) / nt * row_task, n0 = static_cast<int64_t>(t) % nt * col_task;
    kt.gemm_rows(std::min(row_task, M - m0), K, x + m0 * K, K, bp, fill, src, bias, relu, y + m0 * N, N, n0,
                 std::min(N, n0 + col_task));
  });
}

// ---- block codebooks ----------------------------------------------------------------------------
float BlockCodebookWeights::at(int64_t r, int64_t c) const {
  // code c of row r: stream bits [c * bits, (c + 1) * bits), at most two bytes (bits <= 8)
  const uint8_t* row = codes + r * row_bytes;
  const int64_t bit = c * bits, byte = bit >> 3;
  uint32_t v = row[byte];
  if (byte + 1 < row_bytes) v |= static_cast<uint32_t>(row[byte + 1]) << 8;
  const uint32_t code = (v >> (bit & 7)) & ((1u << bits) - 1u);
  const int64_t out = rows_are_outputs ? r : c, in = rows_are_outputs ? c : r;
  const int64_t book = (out / group_size) * nblocks + in / block_size;
  return codebook[(book << bits) + code];
}

int64_t block_count(int64_t inputs, int64_t block_size) {
  if (block_size < 1) fail("attribute block_size=", block_size, " must be positive");
  return inputs <= block_size ? 1 : ceil_div(inputs, block_size);
}

void decode_block_rows(const BlockCodebookWeights& w, float* out) {
  for (int64_t r = 0; r < w.rows; ++r)
    for (int64_t c = 0; c < w.cols; ++c) out[r * w.cols + c] = w.at(r, c);
}

void block_codebook_panel(const void* ctx, int64_t k0, int64_t kc, int64_t n0, int64_t nc, int nr, float* panel) {
  const BlockCodebookWeights& w = *static_cast<const BlockCodebookWeights*>(ctx);
  const int64_t strips = ceil_div(nc, nr);
  for (int64_t s = 0; s < strips; ++s)
    for (int64_t kk = 0; kk < kc; ++kk) {
      float* dst = panel + (s * kc + kk) * nr;
      for (int j = 0; j < nr; ++j) {
        const int64_t n = s * nr + j;
        dst[j] = n < nc ? w.at(k0 + kk, n0 + n) : 0.0f;
      }
    }
}

float* thread_scratch(size_t n, int slot) {
  // onnxruntime's pool threads are long lived: each keeps its buffers between runs
  static thread_local std::vector<float> buf[3];
  std::vector<float>& b = buf[slot];
  if (b.size() < n + 16) b.assign(n + 16, 0.0f);
  return b.data();
}

}  // namespace onnxcomp
