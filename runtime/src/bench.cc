// Diagnostic timing entry point (ctypes; `onnxcomp hardware probe`, benchmarks/bench_conv.py): the FMA peak
// of the kernel set and the time of the convolution kernels on random data, outside onnxruntime, on the calling
// thread. Times are thread CPU time (what the thread ran, not what the machine's other work took from it).
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <ctime>
#include <exception>
#include <memory>
#include <random>
#include <vector>

#include "conv/im2col.h"
#include "conv/winograd.h"
#include "kernels.h"

namespace onnxcomp {
namespace {

double thread_seconds() {
  timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

// 16 independent FMA chains (enough to hide the latency on every x86 core): flops = iters * 16 * width * 2.
// (In namespaces avx512 / avx2: only the dispatched kernels may hold AVX code.)
namespace avx512 {
__attribute__((target("avx512f"))) float fma_loop(int64_t iters) {
  __m512 a[16];
  for (int i = 0; i < 16; ++i) a[i] = _mm512_set1_ps(0.001f * static_cast<float>(i));
  const __m512 b = _mm512_set1_ps(0.9999f), c = _mm512_set1_ps(1e-4f);
  for (int64_t k = 0; k < iters; ++k) {
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) a[i] = _mm512_fmadd_ps(a[i], b, c);
  }
  alignas(64) float o[16];
  __m512 s = a[0];
  for (int i = 1; i < 16; ++i) s = _mm512_add_ps(s, a[i]);
  _mm512_store_ps(o, s);
  return o[0] + o[15];
}
}  // namespace avx512

namespace avx2 {
__attribute__((target("avx2,fma"))) float fma_loop(int64_t iters) {
  __m256 a[16];
  for (int i = 0; i < 16; ++i) a[i] = _mm256_set1_ps(0.001f * static_cast<float>(i));
  const __m256 b = _mm256_set1_ps(0.9999f), c = _mm256_set1_ps(1e-4f);
  for (int64_t k = 0; k < iters; ++k) {
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) a[i] = _mm256_fmadd_ps(a[i], b, c);
  }
  alignas(32) float o[8];
  __m256 s = a[0];
  for (int i = 1; i < 16; ++i) s = _mm256_add_ps(s, a[i]);
  _mm256_store_ps(o, s);
  return o[0] + o[7];
}
}  // namespace avx2

}  // namespace onnxcomp

extern "C" {

// What: "fma" (a = 0, N = FMA iterations per run: seconds of N * 16 vector FMAs), "winograd" (a = tile m),
// "im2col" (a = kernel size, stride 1, pads (a - 1) / 2). Shapes: X [N, C, H, W], W [M, C, a, a].
// Writes the median thread CPU seconds over `runs` runs (after one warm-up run) to *seconds and the FLOP count
// of one run (fma: the FMAs' flops; convolutions: 2 N M C a^2 OH OW, the direct convolution's) to *flops.
// Returns 0, or -1 with a message in err (err_size bytes) on a bad request or an exception.
__attribute__((visibility("default"))) int OnnxcompTimeKernel(const char* what, int64_t N, int64_t C, int64_t H,
                                                              int64_t W, int64_t M, int64_t a, int64_t runs,
                                                              double* seconds, double* flops, char* err,
                                                              size_t err_size) {
  using namespace onnxcomp;
  auto report = [&](const char* msg) {
    if (err && err_size) {
      std::strncpy(err, msg, err_size - 1);
      err[err_size - 1] = '\0';
    }
    return -1;
  };
  try {
    if (!what || !seconds || !flops || runs < 1) return report("bad arguments");
    std::vector<double> t;
    if (std::strcmp(what, "fma") == 0) {
      const bool wide = std::strcmp(kernels().name, "avx512") == 0;
      if (std::strcmp(kernels().name, "scalar") == 0) return report("no FMA kernel set on this CPU");
      volatile float sink = 0.0f;
      for (int64_t r = 0; r <= runs; ++r) {
        const double t0 = thread_seconds();
        sink = sink + (wide ? avx512::fma_loop(N) : avx2::fma_loop(N));
        if (r > 0) t.push_back(thread_seconds() - t0);
      }
      *flops = static_cast<double>(N) * 16.0 * (wide ? 16 : 8) * 2.0;
      *seconds = median(t);
      return 0;
    }
    const bool wino = std::strcmp(what, "winograd") == 0, im2col = std::strcmp(what, "im2col") == 0;
    if (!wino && !im2col) return report("unknown kernel (fma, winograd, im2col)");
    const int64_t k = wino ? 3 : a;
    if (N < 1 || C < 1 || H < 1 || W < 1 || M < 1 || k < 1 || k > 15 || C * M > (int64_t{1} << 28) ||
        N * C * H * W > (int64_t{1} << 28) || N * M * H * W > (int64_t{1} << 28))
      return report("shape out of range");
    std::mt19937 rng(1);
    std::normal_distribution<float> nd;
    std::vector<float> x(static_cast<size_t>(N * C * H * W)), w(static_cast<size_t>(M * C * k * k));
    for (float& v : x) v = nd(rng);
    for (float& v : w) v = nd(rng) * 0.05f;
    const int64_t pad = (k - 1) / 2, OH = H + 2 * pad - k + 1, OW = W + 2 * pad - k + 1;
    if (OH < 1 || OW < 1) return report("input smaller than the kernel");
    std::vector<float> y(static_cast<size_t>(N * M * OH * OW));
    conv::SerialParallel serial;
    conv::Epilogue ep;
    std::unique_ptr<conv::WinogradConv> wc;
    std::unique_ptr<conv::Im2colConv> ic;
    if (wino) {
      if (!conv::WinogradConv::tile_supported(static_cast<int>(a))) return report("winograd tile must be 2, 4 or 6");
      wc.reset(new conv::WinogradConv(static_cast<int>(a), C, M, w.data()));
    } else {
      conv::ConvParams p;
      p.C = C;
      p.M = M;
      p.kernel[0] = p.kernel[1] = k;
      p.pads[0] = p.pads[1] = p.pads[2] = p.pads[3] = pad;
      ic.reset(new conv::Im2colConv(p, w.data()));
    }
    const int64_t pads[4] = {pad, pad, pad, pad}, in[2] = {H, W};
    for (int64_t r = 0; r <= runs; ++r) {
      const double t0 = thread_seconds();
      if (wc)
        wc->run(x.data(), conv::TensorLayout::nchw(), N, H, W, pads, ep, y.data(), conv::TensorLayout::nchw(), serial);
      else
        ic->run(x.data(), N, in, ep, y.data(), serial);
      if (r > 0) t.push_back(thread_seconds() - t0);
    }
    *flops = 2.0 * static_cast<double>(N * M * C * k * k * OH * OW);
    *seconds = median(t);
    return 0;
  } catch (const std::exception& e) {
    return report(e.what());
  } catch (...) {
    return report("unknown error");
  }
}

}  // extern "C"
