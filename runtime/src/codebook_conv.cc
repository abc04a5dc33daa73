// CodebookConv: Y = Conv(X, W) + B with W[m].ravel()[j] = codebook[(m // group_size) * nblocks + j // block_size,
// code(m, j)] (block_size: default all C/group * prod(k) inputs, nblocks = 1).
// Inputs: X float [N, C, *spatial] (1 to 3 spatial dims), codebook float or float16 [G * nblocks, C' <= 2^bits],
// codes uint8 [M, ceil(C/group * prod(k) * bits / 8)], B float [M] (optional).
// Attributes: bits, group_size (over output channels, default M), weight_shape (M, C/group, k...),
// the Conv attributes dilations, group, kernel_shape, pads, strides (explicit pads only), and
// winograd_tile (0: none, the default; 2, 4 or 6: Winograd F(m x m, 3 x 3) for 3x3 stride-1 one-group layers).
// Convolutions are compute-bound: the codes save file size and memory traffic of the weights, not time.
// The filter is decoded into a float tensor (once for constant codes and codebook, the usual case; otherwise
// again only when their bytes change) and onnxruntime's own Conv kernel is invoked on it (InvokeOp), so the
// op runs at onnxruntime's speed. With winograd_tile set (select-conv writes it) the layer runs as WinogradConv
// (conv/winograd.h): the filter is decoded and Winograd-transformed once, when the kernel is created, for constant
// codes and codebook, and again only when their bytes change otherwise (codes from a HuffmanDecode). If the Conv
// kernel cannot be created, the filter is decoded on every run and the convolution is the implicit-im2col GEMM of
// conv/im2col.h.
#include <algorithm>
#include <cstring>
#include <memory>
#include <mutex>

#include "common.h"
#include "conv/im2col.h"
#include "conv/winograd.h"
#include "ops.h"

namespace onnxcomp {
namespace {

constexpr int64_t kMaxConvAttr = int64_t{1} << 31;  // bound for sizes, strides, pads, dilations

struct CodebookConvKernel {
  std::string label;
  int bits = 0;
  int64_t M = 0, Cg = 0, group = 1, group_size = 0, S = 0, KS = 1, block_size = 0, nblocks = 1;
  std::vector<int64_t> kernel, strides, dilations, pads;
  ConstInput const_codes, const_codebook;
  ConstFloats codebook_floats;  // a constant float16 codebook as float32
  // onnxruntime's Conv, invoked on the decoded filter. The filter is decoded once for constant codes and
  // codebook, and again only when their bytes change otherwise (codes fed by a HuffmanDecode or
  // RunLengthDecode are the same bytes at every run).
  Ort::Op conv_op{nullptr};
  struct Filter {
    std::vector<float> weight, zero_bias;
    Ort::Value weight_value{nullptr}, zero_bias_value{nullptr};
    std::vector<uint8_t> codes_key;  // the codes and codebook bytes it was decoded from (non-constant inputs)
    std::vector<float> codebook_key;
    bool constant = false;
  };
  std::shared_ptr<const Filter> filter;
  std::mutex decode_mu;
  int winograd_tile = 0;
  std::unique_ptr<conv::WinogradConv> winograd;  // the constant filter, transformed once
  // the filter from non-constant codes and codebook, transformed, while their bytes stay the same
  struct WinogradFilter {
    std::vector<uint8_t> codes_key;
    std::vector<float> codebook_key;
    std::shared_ptr<const conv::WinogradConv> plan;
  };
  std::shared_ptr<const WinogradFilter> winograd_cached;

  CodebookConvKernel(const OrtKernelInfo* info) : label(node_label("CodebookConv", info)) {
    Attrs a{info};
    bits = static_cast<int>(a.required_int("bits", 1, 8));
    std::vector<int64_t> ws;
    if (!a.get_ints("weight_shape", &ws)) fail("attribute 'weight_shape' (ints) is required");
    if (ws.size() < 3 || ws.size() > 5)
      fail("attribute weight_shape=", shape_str(ws), " must be (M, C/group, k1[, k2[, k3]])");
    for (int64_t d : ws)
      if (d < 1 || d > kMaxConvAttr) fail("attribute weight_shape=", shape_str(ws), " must hold sizes in [1, 2^31]");
    M = ws[0];
    Cg = ws[1];
    S = static_cast<int64_t>(ws.size()) - 2;
    kernel.assign(ws.begin() + 2, ws.end());
    KS = 1;
    for (int64_t k : kernel) KS = checked_mul(KS, k, "weight_shape");
    checked_mul(Cg, KS, "weight_shape");
    group = a.optional_int("group", 1, 1, kMaxDim);
    if (M % group != 0) fail("M=", M, " (weight_shape[0]) is not divisible by group=", group);
    group_size = a.optional_int("group_size", M, 1, kMaxDim);
    block_size = a.optional_int("block_size", kMaxDim, 1, kMaxDim);
    nblocks = block_count(Cg * KS, block_size);
    checked_mul(ceil_div(M, group_size), nblocks, "G*nblocks codebook rows");
    std::vector<int64_t> ks;
    if (a.get_ints("kernel_shape", &ks) && ks != kernel)
      fail("attribute kernel_shape=", shape_str(ks), " does not match weight_shape=", shape_str(ws));
    if (!a.get_ints("strides", &strides)) strides.assign(S, 1);
    if (!a.get_ints("dilations", &dilations)) dilations.assign(S, 1);
    if (!a.get_ints("pads", &pads)) pads.assign(2 * S, 0);
    if (static_cast<int64_t>(strides.size()) != S) fail("attribute strides needs ", S, " values, got ", strides.size());
    if (static_cast<int64_t>(dilations.size()) != S)
      fail("attribute dilations needs ", S, " values, got ", dilations.size());
    if (static_cast<int64_t>(pads.size()) != 2 * S) fail("attribute pads needs ", 2 * S, " values, got ", pads.size());
    for (int64_t v : strides)
      if (v < 1 || v > kMaxConvAttr) fail("attribute strides=", shape_str(strides), " must be positive (and <= 2^31)");
    for (int64_t v : dilations)
      if (v < 1 || v > kMaxConvAttr)
        fail("attribute dilations=", shape_str(dilations), " must be positive (and <= 2^31)");
    for (int64_t v : pads)
      if (v < 0 || v > kMaxConvAttr) fail("attribute pads=", shape_str(pads), " must be non-negative (and <= 2^31)");
    std::string auto_pad;
    try {
      auto_pad = Ort::ConstKernelInfo(info).GetAttribute<std::string>("auto_pad");
    } catch (...) {
    }
    if (!auto_pad.empty() && auto_pad != "NOTSET") fail("attribute auto_pad=", auto_pad, " is not supported (use explicit pads)");
    winograd_tile = static_cast<int>(a.optional_int("winograd_tile", 0, 0, 6));
    if (winograd_tile != 0) {
      if (!conv::WinogradConv::tile_supported(winograd_tile)) fail("attribute winograd_tile=", winograd_tile, " must be 0, 2, 4 or 6");
      if (S != 2 || kernel != std::vector<int64_t>{3, 3} || strides != std::vector<int64_t>{1, 1} ||
          dilations != std::vector<int64_t>{1, 1} || group != 1)
        fail("attribute winograd_tile needs a 3x3 kernel, strides 1, dilations 1 and group 1");
    }
    const_codes.init(info, 2);
    const_codebook.init(info, 1);
    if (winograd_tile != 0 && const_codes.data != nullptr && const_codebook.data != nullptr) {
      // decode (validated like at run time) and transform once
      const int64_t G = ceil_div(M, group_size) * nblocks, entries = int64_t{1} << bits, CKK = Cg * KS;
      const int64_t row_bytes = ceil_div(CKK * bits, 8);
      const std::vector<int64_t>& cs = const_codebook.shape;
      if (cs.size() != 2 || cs[0] != G || cs[1] < 1 || cs[1] > entries)
        fail("codebook must have shape [G*nblocks=", G, ", C] with 1 <= C <= 2^bits=", entries, ", got ",
             shape_str(cs));
      if (const_codes.shape != std::vector<int64_t>{M, row_bytes})
        fail("codes must have shape [M=", M, ", ", row_bytes, "], got ", shape_str(const_codes.shape));
      const uint8_t* cp = static_cast<const uint8_t*>(const_codes.data);
      if (cs[1] < entries && max_code(cp, M, row_bytes, CKK, bits) >= static_cast<uint32_t>(cs[1]))
        fail("a code is out of range for a codebook of ", cs[1], " entries");
      const std::vector<float> book = codebook_values(const_codebook.data, const_codebook.type, G * cs[1]);
      std::vector<float> padded = pad_codebook(book.data(), G, cs[1], bits);
      std::vector<float> w(static_cast<size_t>(M * CKK));
      decode(cp, row_bytes, CKK, padded.data(), w.data());
      winograd.reset(new conv::WinogradConv(winograd_tile, Cg, M, w.data()));
      const_codes.mark(const_codes.data);
    }
    if (winograd_tile == 0) {  // onnxruntime's Conv on the decoded filter
      try {
        std::vector<Ort::OpAttr> attrs;
        const int64_t grp = group;
        attrs.emplace_back("dilations", dilations.data(), static_cast<int>(S), OrtOpAttrType::ORT_OP_ATTR_INTS);
        attrs.emplace_back("group", &grp, 1, OrtOpAttrType::ORT_OP_ATTR_INT);
        attrs.emplace_back("kernel_shape", kernel.data(), static_cast<int>(S), OrtOpAttrType::ORT_OP_ATTR_INTS);
        attrs.emplace_back("pads", pads.data(), static_cast<int>(2 * S), OrtOpAttrType::ORT_OP_ATTR_INTS);
        attrs.emplace_back("strides", strides.data(), static_cast<int>(S), OrtOpAttrType::ORT_OP_ATTR_INTS);
        const char* type_names[] = {"T"};
        const ONNXTensorElementDataType types[] = {ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT};
        conv_op = Ort::Op::Create(info, "Conv", "", 11, type_names, types, 1, attrs.data(), attrs.size(), 3, 1);
      } catch (...) {
        conv_op = Ort::Op{nullptr};  // the built-in GEMM path below
      }
    }
  }

  // W [M, CKK] from the codes (cbd: the codebook padded to 2^bits entries per row)
  void decode(const uint8_t* cp, int64_t row_bytes, int64_t CKK, const float* cbd, float* out) const {
    if (nblocks == 1) {
      kernels().decode_rows(cp, row_bytes, 0, M, CKK, bits, cbd, group_size, out);
      return;
    }
    decode_block_rows(BlockCodebookWeights{cp, cbd, M, CKK, row_bytes, group_size, block_size, nblocks, bits, true}, out);
  }

  // The float filter [M, C/group, k...] decoded from the codes (cbd: the codebook padded to 2^bits entries), as
  // an onnxruntime tensor for the invoked Conv; cached while the codes and codebook stay the same.
  std::shared_ptr<const Filter> decoded_filter(const uint8_t* cp, int64_t row_bytes, int64_t CKK, const float* cbd,
                                               const Input& codes, const Input& cb, bool constant) {
    std::lock_guard<std::mutex> lock(decode_mu);
    if (filter) {
      if (constant && filter->constant) return filter;
      if (!constant && !filter->constant && filter->codes_key.size() == static_cast<size_t>(codes.count) &&
          filter->codebook_key.size() == static_cast<size_t>(cb.count) &&
          std::memcmp(filter->codes_key.data(), codes.data, static_cast<size_t>(codes.count)) == 0 &&
          std::memcmp(filter->codebook_key.data(), cb.data, static_cast<size_t>(cb.count) * sizeof(float)) == 0)
        return filter;
    }
    auto f = std::make_shared<Filter>();
    f->constant = constant;
    if (!constant) {
      f->codes_key.assign(codes.as<uint8_t>(), codes.as<uint8_t>() + codes.count);
      f->codebook_key.assign(cb.as<float>(), cb.as<float>() + cb.count);
    }
    f->weight.assign(static_cast<size_t>(M * CKK), 0.0f);
    decode(cp, row_bytes, CKK, cbd, f->weight.data());
    f->zero_bias.assign(static_cast<size_t>(M), 0.0f);
    std::vector<int64_t> wshape{M, Cg};
    wshape.insert(wshape.end(), kernel.begin(), kernel.end());
    const Ort::MemoryInfo mem = Ort::MemoryInfo::CreateCpu(OrtDeviceAllocator, OrtMemTypeDefault);
    f->weight_value = Ort::Value::CreateTensor<float>(mem, f->weight.data(), f->weight.size(), wshape.data(), wshape.size());
    const int64_t bshape[1] = {M};
    f->zero_bias_value = Ort::Value::CreateTensor<float>(mem, f->zero_bias.data(), f->zero_bias.size(), bshape, 1);
    filter = f;
    return filter;
  }

  // The Winograd plan of a non-constant filter: cached while the codes and codebook bytes stay the same.
  std::shared_ptr<const conv::WinogradConv> winograd_plan(const uint8_t* cp, int64_t row_bytes, int64_t CKK,
                                                          const float* cbd, const Input& codes, const Input& cb) {
    std::lock_guard<std::mutex> lock(decode_mu);
    const std::shared_ptr<const WinogradFilter>& f = winograd_cached;
    if (f && f->codes_key.size() == static_cast<size_t>(codes.count) &&
        f->codebook_key.size() == static_cast<size_t>(cb.count) &&
        std::memcmp(f->codes_key.data(), codes.data, static_cast<size_t>(codes.count)) == 0 &&
        std::memcmp(f->codebook_key.data(), cb.data, static_cast<size_t>(cb.count) * sizeof(float)) == 0)
      return f->plan;
    auto nf = std::make_shared<WinogradFilter>();
    nf->codes_key.assign(codes.as<uint8_t>(), codes.as<uint8_t>() + codes.count);
    nf->codebook_key.assign(cb.as<float>(), cb.as<float>() + cb.count);
    std::vector<float> w(static_cast<size_t>(M * CKK));
    decode(cp, row_bytes, CKK, cbd, w.data());
    nf->plan = std::make_shared<const conv::WinogradConv>(winograd_tile, Cg, M, w.data());
    winograd_cached = nf;
    return nf->plan;
  }

  OrtStatusPtr ComputeV2(OrtKernelContext* context) {
    return guarded(label, [&] {
      Ort::KernelContext ctx(context);
      const Input x = get_input(ctx, 0);
      const Input cb_in = get_input(ctx, 1);
      std::vector<float> cb_floats;  // a float16 codebook as float32 (the cache keys compare these floats)
      const Input cb = float_codebook(cb_in, &cb_floats, const_codebook, &codebook_floats);
      const Input codes = get_input(ctx, 2);
      const Input bias = get_input(ctx, 3);
      expect(x, "X", ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT);
      expect(codes, "codes", ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8);
      if (static_cast<int64_t>(x.shape.size()) != 2 + S)
        fail("X must have rank ", 2 + S, " (N, C, ", S, " spatial dims) for weight_shape with ", S,
             " kernel dims, got ", shape_str(x.shape));
      const int64_t batch = x.shape[0], C = x.shape[1];
      if (C != Cg * group)
        fail("X has ", C, " channels, but weight_shape[1]*group = ", Cg, "*", group, " = ", Cg * group);
      const int64_t G = ceil_div(M, group_size) * nblocks;  // codebook rows
      const int64_t entries = int64_t{1} << bits;
      if (cb.shape.size() != 2 || cb.shape[0] != G || cb.shape[1] < 1 || cb.shape[1] > entries)
        fail("codebook must have shape [", nblocks > 1 ? "G*nblocks=" : "G=", G, ", C] with 1 <= C <= 2^bits=",
             entries, " (M=", M, ", group_size=", group_size, "), got ", shape_str(cb.shape));
      const int64_t CKK = Cg * KS;
      const int64_t row_bytes = ceil_div(CKK * bits, 8);
      if (codes.shape.size() != 2 || codes.shape[0] != M || codes.shape[1] != row_bytes)
        fail("codes must have shape [M=", M, ", ceil(C/group*prod(kernel)*bits/8)=", row_bytes, "], got ",
             shape_str(codes.shape));
      const float* bias_data = nullptr;
      if (bias.present) {
        expect(bias, "B", ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT);
        if (bias.shape.size() != 1 || bias.shape[0] != M) fail("B must have shape [M=", M, "], got ", shape_str(bias.shape));
        bias_data = bias.as<float>();
      }
      ConvGeometry geo{};
      geo.C = Cg;
      for (int i = 0; i < 3; ++i) {
        geo.in[i] = geo.out[i] = geo.k[i] = geo.s[i] = geo.d[i] = 1;
        geo.pad[i] = 0;
      }
      std::vector<int64_t> yshape{batch, M};
      for (int64_t i = 0; i < S; ++i) {
        const int64_t j = 3 - S + i;
        const int64_t in = x.shape[2 + i];
        const int64_t span = checked_mul(dilations[i], kernel[i] - 1, "dilated kernel") + 1;
        const int64_t padded = in + pads[i] + pads[S + i];
        if (padded < span)
          fail("spatial dim ", i, ": input ", in, " + pads ", pads[i], "+", pads[S + i], " is smaller than the dilated kernel ", span);
        geo.in[j] = in;
        geo.out[j] = (padded - span) / strides[i] + 1;
        geo.k[j] = kernel[i];
        geo.s[j] = strides[i];
        geo.d[j] = dilations[i];
        geo.pad[j] = pads[i];
        yshape.push_back(geo.out[j]);
      }
      geo.kernel_size = KS;
      checked_elements(yshape, "output Y");
      geo.out_size = checked_elements({geo.out[0], geo.out[1], geo.out[2]}, "output Y's spatial size");
      const int64_t OS = geo.out_size;

      // decode the filter
      const uint8_t* cp = codes.as<uint8_t>();
      const int64_t C_cb = cb.shape[1];
      if (C_cb < entries && !const_codes.skip(codes.data)) {
        const uint32_t mx = max_code(cp, M, row_bytes, CKK, bits);
        if (mx >= static_cast<uint32_t>(C_cb))
          fail("code ", mx, " is out of range for a codebook of ", C_cb, " entries");
        const_codes.mark(codes.data);
      }
      std::vector<float> padded;
      const float* cbd = cb.as<float>();
      if (C_cb < entries) {
        padded = pad_codebook(cbd, G, C_cb, bits);
        cbd = padded.data();
      }

      Ort::UnownedValue yv = ctx.GetOutput(0, yshape);
      const bool constant = const_codes.data != nullptr && codes.data == const_codes.data &&
                            const_codebook.data != nullptr && cb_in.data == const_codebook.data;
      OrtParallel par(ctx);
      conv::Epilogue ep;
      ep.bias = bias_data;
      if (winograd_tile != 0 && batch > 0 && OS > 0) {
        std::shared_ptr<const conv::WinogradConv> cached;
        const conv::WinogradConv* plan = winograd.get();
        if (!(winograd && constant)) {
          cached = winograd_plan(cp, row_bytes, CKK, cbd, codes, cb);
          plan = cached.get();
        }
        const int64_t p4[4] = {pads[0], pads[1], pads[2], pads[3]};
        plan->run(x.as<float>(), conv::TensorLayout::nchw(), batch, x.shape[2], x.shape[3], p4, ep,
                  yv.GetTensorMutableData<float>(), conv::TensorLayout::nchw(), par);
        return;
      }
      if (conv_op && batch > 0 && OS > 0) {
        const std::shared_ptr<const Filter> f = decoded_filter(cp, row_bytes, CKK, cbd, codes, cb, constant);
        const OrtValue* ins[3] = {nullptr, f->weight_value, f->zero_bias_value};
        Ort::ThrowOnError(Ort::GetApi().KernelContext_GetInput(context, 0, &ins[0]));
        if (bias.present) Ort::ThrowOnError(Ort::GetApi().KernelContext_GetInput(context, 3, &ins[2]));
        OrtValue* outs[1] = {yv};
        conv_op.Invoke(context, ins, 3, outs, 1);
        return;
      }
      float* y = yv.GetTensorMutableData<float>();
      // the filter, decoded for this run, through the im2col GEMM
      std::vector<float> w(static_cast<size_t>(M * CKK));
      decode(cp, row_bytes, CKK, cbd, w.data());
      conv::ConvParams prm;
      prm.C = C;
      prm.M = M;
      prm.group = group;
      prm.spatial = static_cast<int>(S);
      for (int64_t i = 0; i < S; ++i) {
        prm.kernel[i] = kernel[i];
        prm.strides[i] = strides[i];
        prm.dilations[i] = dilations[i];
        prm.pads[i] = pads[i];
        prm.pads[S + i] = pads[S + i];
      }
      const conv::Im2colConv im2col(prm, w.data());
      im2col.run(x.as<float>(), batch, x.shape.data() + 2, ep, y, par);
    });
  }
};

struct CodebookConvOp : Ort::CustomOpBase<CodebookConvOp, CodebookConvKernel, true> {
  OrtStatusPtr CreateKernelV2(const OrtApi&, const OrtKernelInfo* info, void** kernel) const {
    return guarded(node_label("CodebookConv", info), [&] { *kernel = new CodebookConvKernel(info); });
  }
  const char* GetName() const { return "CodebookConv"; }
  size_t GetInputTypeCount() const { return 4; }
  ONNXTensorElementDataType GetInputType(size_t i) const {
    // the codebook: float or float16, checked at run time (UNDEFINED: any type reaches the kernel)
    if (i == 1) return ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
    return i == 2 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8 : ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  }
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t i) const {
    return i == 3 ? INPUT_OUTPUT_OPTIONAL : INPUT_OUTPUT_REQUIRED;
  }
  size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; }

  CodebookConvOp() { install_shape_inference(this); }
  static OrtStatusPtr InferShape(OrtShapeInferContext* raw) {
    try {
      Ort::ShapeInferContext ctx(&Ort::GetApi(), raw);
      if (ctx.GetInputCount() < 1) return nullptr;
      const Ort::ShapeInferContext::Shape xs = ctx.GetInputShape(0);
      std::vector<int64_t> ws = ctx.GetAttrInts("weight_shape");
      if (ws.size() < 3 || ws.size() > 5) {
        return Ort::GetApi().CreateStatus(
            ORT_INVALID_ARGUMENT, cat(kDomain, ".CodebookConv: attribute weight_shape=", shape_str(ws),
                                      " must be (M, C/group, k1[, k2[, k3]])").c_str());
      }
      const size_t S = ws.size() - 2;
      if (xs.size() != S + 2) return nullptr;  // unknown rank: checked at run time
      auto ints_or = [&](const char* name, size_t n, int64_t dflt) {
        std::vector<int64_t> v;
        try {
          v = ctx.GetAttrInts(name);
        } catch (...) {
          v.assign(n, dflt);
        }
        if (v.size() != n) v.assign(n, -1);
        return v;
      };
      const std::vector<int64_t> st = ints_or("strides", S, 1), di = ints_or("dilations", S, 1), pa = ints_or("pads", 2 * S, 0);
      Ort::ShapeInferContext::Shape out;
      out.push_back(xs[0]);
      out.emplace_back(ws[0]);
      for (size_t i = 0; i < S; ++i) {
        const auto& d = xs[2 + i];
        if (d.IsInt() && d.AsInt() >= 0 && d.AsInt() <= kMaxDim && st[i] > 0 && di[i] > 0 && pa[i] >= 0 && pa[S + i] >= 0) {
          if (di[i] > (int64_t{1} << 31) || ws[2 + i] < 1 || ws[2 + i] > (int64_t{1} << 31) || st[i] > (int64_t{1} << 31) ||
              pa[i] > (int64_t{1} << 31) || pa[S + i] > (int64_t{1} << 31))
            return nullptr;  // rejected with details when the kernel is created
          const int64_t span = di[i] * (ws[2 + i] - 1) + 1;
          const int64_t padded = d.AsInt() + pa[i] + pa[S + i];
          if (padded < span) return nullptr;  // reported at run time with the details
          out.emplace_back((padded - span) / st[i] + 1);
        } else {
          return nullptr;  // spatial size unknown until run time
        }
      }
      return set_output_shape(raw, out);
    } catch (const std::exception& e) {
      return Ort::GetApi().CreateStatus(ORT_INVALID_ARGUMENT, cat(kDomain, ".CodebookConv: shape inference: ", e.what()).c_str());
    }
  }
};

}  // namespace

const OrtCustomOp* codebook_conv_op() {
  static const CodebookConvOp op;
  return &op;
}

}  // namespace onnxcomp
