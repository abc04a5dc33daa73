// SparseCodebookMatMul (EIE-style): Y = X @ W + B with W [K, N] stored by rows of K, so a zero
// activation x_k skips its whole row. Row k holds entries [row_ptr[k], row_ptr[k+1]); starting at
// position -1, entry e moves to p += delta(e) + 1 and sets W[k, p] = codebook[p // group_size, code(e)].
// Inputs: X float [..., K], codebook float or float16 [G, C <= 2^bits], row_ptr int32 [K+1], deltas uint8
// (E entries at index_bits), codes uint8 (E entries at bits), B float [N] (optional).
// Attributes: bits (1..8), index_bits (4 or 8), N (> 0), group_size (> 0, default N).
#include <algorithm>
#include <cstring>

#include "common.h"
#include "ops.h"

namespace onnxcomp {

// Builds the windowed layout (kernels.h, SparseWindows), or returns false when it does not apply or would be too
// large. Byte lanes (16-row windows, steps in quads) when every codebook row has entry 0 == 0.0 (the contract's
// reserved zero, used as padding), else 16-bit lanes (32-row windows).
//
// Steps are packed greedily per column group: a step's window starts at the lowest row any lane of the group still
// has an entry at, and every lane whose next entry lies inside the window puts it in. Windows slide row by row
// instead of sitting at multiples of the window: on a random 90%-sparse 4096-row layer a step then carries 9.2
// entries instead of 6.5 (the steps' count, the layout's bytes and the kernel's work all shrink by 29%).
bool build_windows(const SparseWeights& w, const float* codebook, int64_t C, WindowsPack* out) {
  if (w.bits > 4 || (w.G != 1 && w.group_size % 16 != 0) || w.K <= 0 || w.K >= (int64_t{1} << 23)) return false;
  bool zero0 = true;
  for (int64_t g = 0; g < w.G; ++g) zero0 = zero0 && codebook[g * C] == 0.0f;
  const int lane_bytes = zero0 ? 1 : 2;
  const int window = zero0 ? 16 : 32;
  const int wshift = zero0 ? 4 : 5;
  const int64_t quad = zero0 ? 4 : 1;  // a group's step count is a multiple of this
  const int64_t NG = ceil_div(w.N, 16);
  // one step pointer per column group: not for a layer whose groups are mostly empty (and not an allocation a huge
  // N over few entries can ask for)
  if (NG > std::max<int64_t>(w.E, 1 << 16)) return false;
  const uint32_t dmask = (1u << w.index_bits) - 1u;
  auto for_each_entry = [&](auto&& f) {
    for (int64_t k = 0; k < w.K; ++k) {
      int64_t p = -1;
      for (int64_t e = w.row_ptr[k]; e < w.row_ptr[k + 1]; ++e) {
        const int64_t db = e * w.index_bits;
        p += static_cast<int64_t>((static_cast<uint32_t>(w.deltas[db >> 3]) >> (db & 7)) & dmask) + 1;
        const int64_t cb = e * w.bits;
        const int sh = static_cast<int>(cb & 7);
        uint32_t code = static_cast<uint32_t>(w.codes[cb >> 3]) >> sh;
        if (sh + w.bits > 8) code |= static_cast<uint32_t>(w.codes[(cb >> 3) + 1]) << (8 - sh);
        code &= (1u << w.bits) - 1u;
        if (!zero0 || code != 0) f(k, p, code);  // explicit zeros (EIE fillers) need no lane where 0 is 0.0
      }
    }
  };
  // the entries bucketed by column group, each as row << 8 | lane << 4 | code, in row order
  std::vector<int64_t> gstart(static_cast<size_t>(NG + 1), 0);
  for_each_entry([&](int64_t, int64_t p, uint32_t) { ++gstart[static_cast<size_t>((p >> 4) + 1)]; });
  for (int64_t g = 0; g < NG; ++g) gstart[static_cast<size_t>(g + 1)] += gstart[static_cast<size_t>(g)];
  std::vector<uint32_t> ent(static_cast<size_t>(gstart.back()));
  {
    std::vector<int64_t> fill(gstart.begin(), gstart.end() - 1);
    for_each_entry([&](int64_t k, int64_t p, uint32_t code) {
      ent[static_cast<size_t>(fill[static_cast<size_t>(p >> 4)]++)] =
          static_cast<uint32_t>(k) << 8 | static_cast<uint32_t>(p & 15) << 4 | code;
    });
  }
  // K < 2^23 and N <= kMaxDim = 2^40: K * N < 2^63
  const int64_t max_steps = std::max<int64_t>(w.K * w.N, 1 << 16) / (16 * lane_bytes);
  std::vector<uint16_t> lanes;  // step-major, 16 per step: k - start | code << wshift, or the padding value
  std::vector<uint8_t> adv;
  const uint16_t pad = zero0 ? 0 : SparseWindows::kPad;
  out->step_ptr.assign(static_cast<size_t>(NG + 1), 0);
  std::vector<uint32_t> lane_ent[16];
  for (int64_t g = 0; g < NG; ++g) {
    for (auto& l : lane_ent) l.clear();
    for (int64_t i = gstart[static_cast<size_t>(g)]; i < gstart[static_cast<size_t>(g + 1)]; ++i)
      lane_ent[(ent[static_cast<size_t>(i)] >> 4) & 15].push_back(ent[static_cast<size_t>(i)]);
    size_t next[16] = {};
    int64_t at = 0;  // the row the group's window starts at
    for (;;) {
      int64_t lo = w.K;
      for (int j = 0; j < 16; ++j)
        if (next[j] < lane_ent[j].size()) lo = std::min<int64_t>(lo, lane_ent[j][next[j]] >> 8);
      if (lo == w.K) break;
      for (; lo - at > 255; at += 255) {  // filler steps: padding lanes, the window moved by 255 rows
        adv.push_back(255);
        lanes.insert(lanes.end(), 16, pad);
      }
      adv.push_back(static_cast<uint8_t>(lo - at));
      at = lo;
      for (int j = 0; j < 16; ++j) {
        uint16_t v = pad;
        if (next[j] < lane_ent[j].size() && static_cast<int64_t>(lane_ent[j][next[j]] >> 8) < lo + window) {
          const uint32_t e = lane_ent[j][next[j]++];
          v = static_cast<uint16_t>(static_cast<uint32_t>((e >> 8) - lo) | (e & 15) << wshift);
        }
        lanes.push_back(v);
      }
      // give up beyond twice the size of dense 4-bit codes (dense weights are better served densely)
      if (static_cast<int64_t>(adv.size()) > max_steps) return false;
    }
    while (static_cast<int64_t>(adv.size()) % quad != 0) {
      adv.push_back(0);
      lanes.insert(lanes.end(), 16, pad);
    }
    out->step_ptr[static_cast<size_t>(g + 1)] = static_cast<int64_t>(adv.size());
  }
  const int64_t steps = static_cast<int64_t>(adv.size());
  const int64_t lanes_bytes = steps * 16 * lane_bytes;
  out->buf.allocate(static_cast<size_t>(lanes_bytes + steps));
  uint8_t* data = out->buf.data();
  if (steps > 0) std::memcpy(data + lanes_bytes, adv.data(), static_cast<size_t>(steps));
  for (int64_t i = 0; i < steps; ++i) {
    for (int j = 0; j < 16; ++j) {
      const uint16_t v = lanes[static_cast<size_t>(i * 16 + j)];
      if (zero0) {
        data[(i >> 2) * 64 + j * 4 + (i & 3)] = static_cast<uint8_t>(v);  // quads: step i & 3 in byte i & 3
      } else {
        std::memcpy(data + (i * 16 + j) * 2, &v, 2);
      }
    }
  }
  out->cb16.assign(static_cast<size_t>(w.G * 16), 0.0f);
  for (int64_t g = 0; g < w.G; ++g)
    for (int64_t c = 0; c < C; ++c) out->cb16[static_cast<size_t>(g * 16 + c)] = codebook[g * C + c];
  out->NG = NG;
  out->steps = steps;
  out->lane_bytes = lane_bytes;
  out->window = window;
  return true;
}

void validate_sparse_layout(const int32_t* row_ptr, const uint8_t* deltas, int64_t K, int index_bits, int64_t N) {
  const uint32_t dmask = (1u << index_bits) - 1u;
  for (int64_t k = 0; k < K; ++k) {
    int64_t p = -1;
    for (int64_t e = row_ptr[k]; e < row_ptr[k + 1]; ++e) {
      const int64_t db = e * index_bits;
      p += static_cast<int64_t>((static_cast<uint32_t>(deltas[db >> 3]) >> (db & 7)) & dmask) + 1;
      if (p >= N) fail("row ", k, ": entry ", e, " decodes to column ", p, " >= N=", N);
    }
  }
}

void run_sparse_matmul(Ort::KernelContext& ctx, const float* xd, int64_t M, const SparseWeights& w,
                       const WindowsPack* pack, const float* bias_data, float* y) {
  const int64_t N = w.N, K = w.K, E = w.E;
  const int32_t* row_ptr = w.row_ptr;
  for (int64_t m = 0; m < M; ++m) {
    if (bias_data) {
      std::memcpy(y + m * N, bias_data, static_cast<size_t>(N) * sizeof(float));
    } else {
      std::fill(y + m * N, y + m * N + N, 0.0f);
    }
  }
  if (M == 0 || K == 0 || E == 0) return;
  const KernelTable& kt = kernels();
  if (pack != nullptr && kt.sparse_windows_gemv != nullptr) {
    const SparseWindows sw{pack->data(), pack->step_adv(), pack->step_ptr.data(), pack->cb16.data(), K,
                           N,            pack->NG,         w.group_size,          pack->lane_bytes,   pack->window};
    constexpr int64_t kGroupsPerTask = 64;
    const int64_t tasks = ceil_div(pack->NG, kGroupsPerTask);
    const int64_t ldx = ceil_div(K + pack->window, 16) * 16;  // rows zero padded past K by a window
    std::vector<float> xpad(static_cast<size_t>(std::min<int64_t>(M, 4) * ldx), 0.0f);
    for (int64_t m = 0; m < M; m += 4) {
      const int rows = static_cast<int>(std::min<int64_t>(4, M - m));
      for (int r = 0; r < rows; ++r)
        std::memcpy(xpad.data() + r * ldx, xd + (m + r) * K, static_cast<size_t>(K) * sizeof(float));
      parallel_for(ctx, static_cast<size_t>(tasks), [&](size_t t) {
        const int64_t g0 = static_cast<int64_t>(t) * kGroupsPerTask;
        kt.sparse_windows_gemv(xpad.data(), ldx, rows, sw, g0, std::min(pack->NG, g0 + kGroupsPerTask), y + m * N, N);
      });
    }
    return;
  }
  if (M > 1) {
    parallel_for(ctx, static_cast<size_t>(M), [&](size_t m) {
      kt.sparse_gemv(xd + static_cast<int64_t>(m) * K, w, 0, K, y + static_cast<int64_t>(m) * N);
    });
    return;
  }
  // one row: split K into tasks of similar entry counts, each with a private accumulator
  // (each task adds a private row of N partial sums: not when N dwarfs the entries)
  const int64_t tasks = N > 4 * E ? 1 : std::min<int64_t>({8, K, std::max<int64_t>(1, E / 65536)});
  if (tasks <= 1) {
    kt.sparse_gemv(xd, w, 0, K, y);
    return;
  }
  std::vector<int64_t> bounds(static_cast<size_t>(tasks + 1), K);
  bounds[0] = 0;
  for (int64_t t = 1, k = 0; t < tasks; ++t) {
    const int64_t target = E * t / tasks;
    while (k < K && row_ptr[k] < target) ++k;
    bounds[static_cast<size_t>(t)] = k;
  }
  std::vector<float> partial(static_cast<size_t>(tasks * N), 0.0f);
  parallel_for(ctx, static_cast<size_t>(tasks), [&](size_t t) {
    kt.sparse_gemv(xd, w, bounds[t], bounds[t + 1], partial.data() + static_cast<int64_t>(t) * N);
  });
  for (int64_t t = 0; t < tasks; ++t) {
    const float* pt = partial.data() + t * N;
    for (int64_t n = 0; n < N; ++n) y[n] += pt[n];
  }
}

namespace {

struct SparseCodebookMatMulKernel {
  std::string label;
  int bits = 0, index_bits = 0;
  int64_t N = 0, group_size = 0;
  ConstInput const_row_ptr, const_deltas, const_codes, const_codebook;
  ConstFloats codebook_floats;  // a constant float16 codebook as float32
  std::mutex pack_mutex;
  std::atomic<int> pack_state{0};  // 0: not tried, 1: built, 2: not applicable
  WindowsPack pack;

  SparseCodebookMatMulKernel(const OrtKernelInfo* info) : label(node_label("SparseCodebookMatMul", info)) {
    Attrs a{info};
    bits = static_cast<int>(a.required_int("bits", 1, 8));
    index_bits = static_cast<int>(a.required_int("index_bits", 4, 8));
    if (index_bits != 4 && index_bits != 8) fail("attribute index_bits=", index_bits, " must be 4 or 8");
    N = a.required_int("N", 1, kMaxDim);
    group_size = a.optional_int("group_size", N, 1, kMaxDim);
    const_row_ptr.init(info, 2);
    const_deltas.init(info, 3);
    const_codes.init(info, 4);
    const_codebook.init(info, 1);
  }

  OrtStatusPtr ComputeV2(OrtKernelContext* context) {
    return guarded(label, [&] {
      Ort::KernelContext ctx(context);
      const Input x = get_input(ctx, 0);
      const Input cb_in = get_input(ctx, 1);
      std::vector<float> cb_floats;  // a float16 codebook as float32
      const Input cb = float_codebook(cb_in, &cb_floats, const_codebook, &codebook_floats);
      const Input rp = get_input(ctx, 2);
      const Input deltas = get_input(ctx, 3);
      const Input codes = get_input(ctx, 4);
      const Input bias = get_input(ctx, 5);
      expect(rp, "row_ptr", ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32);
      expect(deltas, "deltas", ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8);
      expect(codes, "codes", ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8);
      const MatMulDims dims = matmul_x(x);
      const int64_t M = dims.M, K = dims.K;
      const int64_t G = ceil_div(N, group_size);
      check_codebook(cb, N, group_size, bits);
      const int64_t entries = int64_t{1} << bits;
      if (rp.shape.size() != 1 || rp.shape[0] != K + 1)
        fail("row_ptr must have shape [K+1=", K + 1, "] (X is ", shape_str(x.shape), "), got ", shape_str(rp.shape));
      const int32_t* row_ptr = rp.as<int32_t>();
      const bool layout_known = const_row_ptr.skip(rp.data) && const_deltas.skip(deltas.data);
      if (!layout_known) {
        if (row_ptr[0] != 0) fail("row_ptr[0] must be 0, got ", row_ptr[0]);
        for (int64_t k = 0; k < K; ++k)
          if (row_ptr[k + 1] < row_ptr[k])
            fail("row_ptr must be non-decreasing: row_ptr[", k + 1, "]=", row_ptr[k + 1], " < row_ptr[", k,
                 "]=", row_ptr[k]);
      }
      const int64_t E = row_ptr[K];
      if (deltas.count < ceil_div(E * index_bits, 8))
        fail("deltas holds ", deltas.count, " bytes, but row_ptr[K]=", E, " entries at index_bits=", index_bits,
             " need ", ceil_div(E * index_bits, 8));
      if (codes.count < ceil_div(E * bits, 8))
        fail("codes holds ", codes.count, " bytes, but row_ptr[K]=", E, " entries at bits=", bits, " need ",
             ceil_div(E * bits, 8));
      if (!layout_known) {
        validate_sparse_layout(row_ptr, deltas.as<uint8_t>(), K, index_bits, N);
        const_row_ptr.mark(rp.data);
        const_deltas.mark(deltas.data);
      }
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
          const uint32_t mx = E > 0 ? max_code(codes.as<uint8_t>(), 1, 0, E, bits) : 0;
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
      SparseWeights w{row_ptr, deltas.as<uint8_t>(), codes.as<uint8_t>(), cbp, K, N, E, group_size, G, bits, index_bits};
      // windowed kernel for constant weights (once validated), 4 rows of X per pass
      const bool constant = rp.data == const_row_ptr.data && deltas.data == const_deltas.data &&
                            codes.data == const_codes.data && cb_in.data == const_codebook.data && rp.data != nullptr &&
                            deltas.data != nullptr && codes.data != nullptr && cb_in.data != nullptr;
      const WindowsPack* use_pack = nullptr;
      if (constant && M > 0 && K > 0 && E > 0 && kernels().sparse_windows_gemv != nullptr &&
          pack_state.load(std::memory_order_acquire) != 2) {
        if (pack_state.load(std::memory_order_acquire) == 0) {
          std::lock_guard<std::mutex> lock(pack_mutex);
          if (pack_state.load(std::memory_order_relaxed) == 0)
            pack_state.store(build_windows(w, cb.as<float>(), C, &pack) ? 1 : 2, std::memory_order_release);
        }
        if (pack_state.load(std::memory_order_acquire) == 1) use_pack = &pack;
      }
      run_sparse_matmul(ctx, x.as<float>(), M, w, use_pack, bias_data, y);
    });
  }
};

struct SparseCodebookMatMulOp : Ort::CustomOpBase<SparseCodebookMatMulOp, SparseCodebookMatMulKernel, true> {
  OrtStatusPtr CreateKernelV2(const OrtApi&, const OrtKernelInfo* info, void** kernel) const {
    return guarded(node_label("SparseCodebookMatMul", info), [&] { *kernel = new SparseCodebookMatMulKernel(info); });
  }
  const char* GetName() const { return "SparseCodebookMatMul"; }
  size_t GetInputTypeCount() const { return 6; }
  ONNXTensorElementDataType GetInputType(size_t i) const {
    switch (i) {
      case 2: return ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32;
      case 3:
      case 4: return ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8;
      case 1: return ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;  // the codebook: float or float16, checked at run time
      default: return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
    }
  }
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t i) const {
    return i == 5 ? INPUT_OUTPUT_OPTIONAL : INPUT_OUTPUT_REQUIRED;
  }
  size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; }
  SparseCodebookMatMulOp() { install_shape_inference(this); }
  static OrtStatusPtr InferShape(OrtShapeInferContext* raw) { return infer_matmul_shape(raw, "SparseCodebookMatMul"); }
};

}  // namespace

const OrtCustomOp* sparse_codebook_matmul_op() {
  static const SparseCodebookMatMulOp op;
  return &op;
}

}  // namespace onnxcomp
