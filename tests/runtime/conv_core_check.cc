// Standalone check of the convolution kernel core (runtime/src/conv), built and run by test_conv_core.py:
// conv::WinogradConv against a float64 direct convolution for every kernel set, tile and layout (NCHW and
// NCHWc with blocks of 16 and 32 channels, as a consumer such as the execution provider would pass), on random
// odd shapes, pads, batches and every activation. Prints "ok <cases>" or the first failures (exit 1).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "conv/winograd.h"
#include "kernels.h"

namespace onnxcomp {
// The Winograd tables only need the kernel set's name from kernels.h (cpu.cc would pull in every op kernel).
static KernelTable t512{"avx512"}, t2{"avx2"}, ts{"scalar"};
const KernelTable& kernels_for(const char* isa) {
  if (!std::strcmp(isa, "avx512") && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
    return t512;
  if (std::strcmp(isa, "scalar") && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return t2;
  return ts;
}
const KernelTable& kernels() { return kernels_for("avx512"); }
}  // namespace onnxcomp

using namespace onnxcomp::conv;

static void reference(const std::vector<float>& x, const std::vector<float>& w, const std::vector<float>& b,
                      std::vector<double>& y, int64_t N, int64_t C, int64_t H, int64_t W, int64_t M,
                      const int64_t* p) {
  const int64_t OH = H + p[0] + p[2] - 2, OW = W + p[1] + p[3] - 2;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < M; ++o)
      for (int64_t oy = 0; oy < OH; ++oy)
        for (int64_t ox = 0; ox < OW; ++ox) {
          double acc = b[o];
          for (int64_t c = 0; c < C; ++c)
            for (int a = 0; a < 3; ++a)
              for (int e = 0; e < 3; ++e) {
                const int64_t iy = oy + a - p[0], ix = ox + e - p[1];
                if (iy >= 0 && iy < H && ix >= 0 && ix < W)
                  acc += double(x[((n * C + c) * H + iy) * W + ix]) * w[((o * C + c) * 3 + a) * 3 + e];
              }
          y[((n * M + o) * OH + oy) * OW + ox] = acc;
        }
}

int main() {
  std::mt19937 rng(7);
  std::normal_distribution<float> nd;
  int cases = 0, fails = 0;
  const Activation acts[] = {Activation::kNone, Activation::kRelu, Activation::kClip, Activation::kLeakyRelu};
  for (int it = 0; it < 132; ++it) {
    const int m = (int[]){2, 4, 6}[it % 3];
    int64_t N = 1 + rng() % 3, C = 1 + rng() % 40, M = 1 + rng() % 40, H = 1 + rng() % 19, W = 1 + rng() % 19;
    if (it >= 120) {  // wide layers: the GEMM's K chunks (C > 128, uneven), weights past L2 (one big tile block)
      C = (int64_t[]){129, 200, 300, 257}[it % 4];
      M = (int64_t[]){70, 64, 130}[it % 3];
      N = 1 + it % 2;
      H = 5 + rng() % 11;
      W = 5 + rng() % 11;
    }
    const int64_t p[4] = {int64_t(rng() % 3), int64_t(rng() % 3), int64_t(rng() % 3), int64_t(rng() % 3)};
    if (H + p[0] + p[2] < 3 || W + p[1] + p[3] < 3) continue;
    const int64_t OH = H + p[0] + p[2] - 2, OW = W + p[1] + p[3] - 2;
    std::vector<float> x(N * C * H * W), w(M * C * 9), b(M);
    for (auto& v : x) v = nd(rng);
    for (auto& v : w) v = nd(rng) * std::sqrt(2.0f / (9 * C));
    for (auto& v : b) v = nd(rng);
    std::vector<double> ref(N * M * OH * OW);
    reference(x, w, b, ref, N, C, H, W, M, p);
    Epilogue ep;
    ep.bias = b.data();
    ep.act = acts[it % 4];
    ep.alpha = 0.1f;
    if (ep.act == Activation::kClip || (ep.act == Activation::kLeakyRelu && it % 8 == 3)) ep.lo = -0.5f, ep.hi = 0.8f;
    double peak = 0;
    for (double& v : ref) {
      v = activate(float(v), ep);
      peak = std::max(peak, std::fabs(v));
    }
    const double tol = 1e-5 * std::max(1.0, peak) + 1e-4 * peak;  // the lossless verification tolerance
    for (const char* isa : {"scalar", "avx2", "avx512"}) {
      const WinogradConv wc(m, C, M, w.data(), isa);
      const SerialParallel serial;
      for (int cb : {0, 16, 32}) {  // 0: NCHW
        const TensorLayout lay = cb ? TensorLayout::nchwc(cb) : TensorLayout::nchw();
        const int64_t Cb = cb ? (C + cb - 1) / cb * cb : C, Mb = cb ? (M + cb - 1) / cb * cb : M;
        std::vector<float> xin(N * Cb * H * W, NAN), y(N * Mb * OH * OW, NAN);
        for (int64_t n = 0; n < N; ++n)
          for (int64_t c = 0; c < C; ++c)
            for (int64_t i = 0; i < H * W; ++i) {
              const int64_t at = cb ? ((n * (Cb / cb) + c / cb) * H * W + i) * cb + c % cb : (n * C + c) * H * W + i;
              xin[at] = x[(n * C + c) * H * W + i];
            }
        wc.run(xin.data(), lay, N, H, W, p, ep, y.data(), lay, serial);
        double err = 0;
        for (int64_t n = 0; n < N; ++n)
          for (int64_t c = 0; c < Mb; ++c)
            for (int64_t i = 0; i < OH * OW; ++i) {
              const int64_t at = cb ? ((n * (Mb / cb) + c / cb) * OH * OW + i) * cb + c % cb : (n * M + c) * OH * OW + i;
              const double want = c < M ? ref[(n * M + c) * OH * OW + i] : 0.0;  // NCHWc padding channels: 0
              const double e = std::isnan(y[at]) ? 1e30 : std::fabs(y[at] - want);
              err = std::max(err, e);
            }
        ++cases;
        if (!(err <= tol) && fails++ < 10)
          std::printf("FAIL %s F(%d,3) layout %d N=%ld C=%ld M=%ld H=%ld W=%ld pads %ld %ld %ld %ld act %d: err %g > %g\n",
                      wc.isa_name(), m, cb, long(N), long(C), long(M), long(H), long(W), long(p[0]), long(p[1]),
                      long(p[2]), long(p[3]), int(ep.act), err, tol);
      }
    }
  }
  if (fails) return 1;
  std::printf("ok %d\n", cases);
  return 0;
}
