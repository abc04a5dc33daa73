// Implicit-im2col convolution driver over the kernel set's GEMM (kernels.h); baseline x86-64.
#include "im2col.h"

#include <algorithm>
#include <stdexcept>

#include "../kernels.h"

namespace onnxcomp {
namespace conv {

namespace {
constexpr int64_t kColumnTask = 768;  // output positions per task (a multiple of every kernel set's nr)
}

Im2colConv::Im2colConv(const ConvParams& p, const float* weight, const char* isa) : p_(p) {
  if (p.spatial < 1 || p.spatial > 3 || p.group < 1 || p.C % p.group != 0 || p.M % p.group != 0 || p.M < 1)
    throw std::invalid_argument("im2col convolution: bad channel, group or spatial parameters");
  kt_ = isa ? &kernels_for(isa) : &kernels();
  Mg_ = p.M / p.group;
  Cg_ = p.C / p.group;
  int64_t ks = 1;
  for (int i = 0; i < p.spatial; ++i) ks *= p.kernel[i];
  ckk_ = Cg_ * ks;
  apanel_ = (Mg_ + kt_->mr - 1) / kt_->mr * kt_->mr * ckk_;
  panels_.resize(static_cast<size_t>(std::max<int64_t>(1, p.group * apanel_)));
  for (int64_t g = 0; g < p.group; ++g)
    kt_->pack_a(Mg_, ckk_, weight + g * Mg_ * ckk_, ckk_, panels_.data() + g * apanel_);
}

int64_t Im2colConv::out_extent(int i, int64_t in) const {
  const int64_t span = p_.dilations[i] * (p_.kernel[i] - 1) + 1;
  const int64_t padded = in + p_.pads[i] + p_.pads[p_.spatial + i];
  return padded < span ? 0 : (padded - span) / p_.strides[i] + 1;
}

void Im2colConv::run(const float* x, int64_t N, const int64_t* in, const Epilogue& ep, float* y,
                     const Parallel& par) const {
  const int S = p_.spatial;
  ConvGeometry geo{};
  geo.C = Cg_;
  for (int i = 0; i < 3; ++i) {
    geo.in[i] = geo.out[i] = geo.k[i] = geo.s[i] = geo.d[i] = 1;
    geo.pad[i] = 0;
  }
  for (int i = 0; i < S; ++i) {
    const int j = 3 - S + i;
    geo.in[j] = in[i];
    geo.out[j] = out_extent(i, in[i]);
    geo.k[j] = p_.kernel[i];
    geo.s[j] = p_.strides[i];
    geo.d[j] = p_.dilations[i];
    geo.pad[j] = p_.pads[i];
  }
  geo.kernel_size = 1;
  for (int i = 0; i < S; ++i) geo.kernel_size *= p_.kernel[i];
  const int64_t OS = geo.out[0] * geo.out[1] * geo.out[2];
  geo.out_size = OS;
  const int64_t in_size = geo.in[0] * geo.in[1] * geo.in[2];
  const int64_t M = p_.M, C = p_.C, group = p_.group;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t m = 0; m < M; ++m) {
      float* yr = y + (n * M + m) * OS;
      std::fill(yr, yr + OS, ep.bias ? ep.bias[m] : 0.0f);
    }
  if (N <= 0 || OS <= 0) return;
  const int64_t ctasks = (OS + kColumnTask - 1) / kColumnTask;
  const KernelTable& kt = *kt_;
  auto task = [&](size_t t) {
    const int64_t ti = static_cast<int64_t>(t);
    const int64_t n = ti / (group * ctasks), g = (ti / ctasks) % group;
    const int64_t c0 = (ti % ctasks) * kColumnTask, c1 = std::min(OS, c0 + kColumnTask);
    ConvGeometry gg = geo;
    gg.x = x + (n * C + g * Cg_) * in_size;
    float* yg = y + (n * M + g * Mg_) * OS;
    kt.gemm(Mg_, ckk_, panels_.data() + g * apanel_, kt.im2col_panel, &gg, yg, OS, c0, c1, true);
    if (ep.act != Activation::kNone)
      for (int64_t m = 0; m < Mg_; ++m)
        for (int64_t c = c0; c < c1; ++c) yg[m * OS + c] = activate(yg[m * OS + c], ep);
  };
  par.for_each(static_cast<size_t>(N * group * ctasks), task);
}

}  // namespace conv
}  // namespace onnxcomp
