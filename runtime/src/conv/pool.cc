// Pooling and elementwise kernels (pool.h): memory-bound loops the compiler vectorizes; baseline x86-64.
#include "pool.h"

#include <algorithm>
#include <limits>

namespace onnxcomp {
namespace conv {

namespace {
constexpr int64_t kElementsPerTask = 1 << 16;  // floats of output (or input) per parallel task

// Tasks of whole planes, about kElementsPerTask floats each.
template <class F>
void over_planes(int64_t planes, int64_t plane_size, const Parallel& par, F&& f) {
  const int64_t per = std::max<int64_t>(1, kElementsPerTask / std::max<int64_t>(1, plane_size));
  const int64_t tasks = (planes + per - 1) / per;
  auto task = [&](size_t t) {
    const int64_t p0 = static_cast<int64_t>(t) * per, p1 = std::min(planes, p0 + per);
    for (int64_t p = p0; p < p1; ++p) f(p);
  };
  par.for_each(static_cast<size_t>(tasks), task);
}

// The window of output position o along one dim: input range [lo, hi) clipped to the input, and the unclipped
// count (for count_include_pad).
inline void window(int64_t o, int64_t stride, int64_t pad, int64_t pad_end, int64_t k, int64_t in, int64_t* lo,
                   int64_t* hi, int64_t* full) {
  const int64_t start = o * stride - pad;
  *lo = std::max<int64_t>(start, 0);
  *hi = std::min(start + k, in);
  // the window within the padded input (a ceil_mode window hanging past the end pad is cut there)
  *full = std::min(start + k, in + pad_end) - start;
}
}  // namespace

int64_t PoolParams::out_extent(int i, int64_t in) const {
  const int64_t padded = in + pads[i] + pads[i + 2] - kernel[i];
  if (padded < 0) return 0;
  int64_t out = (ceil_mode ? (padded + strides[i] - 1) / strides[i] : padded / strides[i]) + 1;
  if (ceil_mode && (out - 1) * strides[i] >= in + pads[i]) --out;
  return out;
}

namespace {

// One output row of a max or average pool: acc[ox] = op over the window rows [y0, y1) of x (W columns). Windows of
// the interior columns [lo, hi) lie inside the row (no clipping; a loop the compiler vectorizes for the usual
// kernels and strides), the others are clipped.
template <bool MAX, int K, int S>
void interior_row(const float* x, int64_t W, int64_t y0, int64_t y1, int64_t pad, int64_t lo, int64_t hi,
                  float* acc) {
  for (int64_t iy = y0; iy < y1; ++iy) {
    const float* r = x + iy * W - pad;
    for (int64_t ox = lo; ox < hi; ++ox) {
      const float* w = r + ox * S;
      float m = w[0];
      for (int kx = 1; kx < K; ++kx) m = MAX ? std::max(m, w[kx]) : m + w[kx];
      acc[ox] = MAX ? std::max(acc[ox], m) : acc[ox] + m;
    }
  }
}

template <bool MAX>
void generic_row(const float* x, int64_t W, int64_t y0, int64_t y1, int64_t pad, int64_t k, int64_t s, int64_t lo,
                 int64_t hi, float* acc) {
  for (int64_t iy = y0; iy < y1; ++iy) {
    const float* r = x + iy * W - pad;
    for (int64_t ox = lo; ox < hi; ++ox)
      for (int64_t kx = 0; kx < k; ++kx) acc[ox] = MAX ? std::max(acc[ox], r[ox * s + kx]) : acc[ox] + r[ox * s + kx];
  }
}

// Max or average pool over planes (pool.h); acc rows of the output on the stack of each task.
template <bool MAX>
void pool(const float* x, int64_t planes, int64_t H, int64_t W, const PoolParams& p, float* y, const Parallel& par) {
  const int64_t OH = p.out_extent(0, H), OW = p.out_extent(1, W);
  if (OH < 1 || OW < 1) return;
  const int64_t k = p.kernel[1], s = p.strides[1], pad = p.pads[1];
  // interior columns: window [ox * s - pad, ox * s - pad + k) within [0, W)
  const int64_t lo = std::min(OW, (pad + s - 1) / s), hi = std::max(lo, std::min(OW, W + pad - k >= 0 ? (W + pad - k) / s + 1 : 0));
  over_planes(planes, OH * OW, par, [&](int64_t pl) {
    const float* xp = x + pl * H * W;
    float* yp = y + pl * OH * OW;
    for (int64_t oy = 0; oy < OH; ++oy) {
      int64_t y0, y1, fy;
      window(oy, p.strides[0], p.pads[0], p.pads[2], p.kernel[0], H, &y0, &y1, &fy);
      float* acc = yp + oy * OW;
      const float init = MAX ? -std::numeric_limits<float>::infinity() : 0.0f;
      for (int64_t ox = 0; ox < OW; ++ox) acc[ox] = init;
      if (k == 2 && s == 2) {
        interior_row<MAX, 2, 2>(xp, W, y0, y1, pad, lo, hi, acc);
      } else if (k == 3 && s == 2) {
        interior_row<MAX, 3, 2>(xp, W, y0, y1, pad, lo, hi, acc);
      } else if (k == 3 && s == 1) {
        interior_row<MAX, 3, 1>(xp, W, y0, y1, pad, lo, hi, acc);
      } else {
        generic_row<MAX>(xp, W, y0, y1, pad, k, s, lo, hi, acc);
      }
      // the clipped columns at both ends
      for (int64_t ox = 0; ox < OW; ++ox) {
        if (ox == lo) ox = hi;
        if (ox >= OW) break;
        int64_t x0, x1, fx;
        window(ox, s, pad, p.pads[3], k, W, &x0, &x1, &fx);
        float m = init;
        for (int64_t iy = y0; iy < y1; ++iy)
          for (int64_t ix = x0; ix < x1; ++ix) m = MAX ? std::max(m, xp[iy * W + ix]) : m + xp[iy * W + ix];
        acc[ox] = m;
      }
      if (!MAX) {
        for (int64_t ox = 0; ox < OW; ++ox) {
          int64_t x0, x1, fx;
          window(ox, s, pad, p.pads[3], k, W, &x0, &x1, &fx);
          const int64_t n = p.count_include_pad ? fy * fx : (y1 - y0) * (x1 - x0);
          acc[ox] = n > 0 ? acc[ox] / static_cast<float>(n) : 0.0f;
        }
      }
    }
  });
}

}  // namespace

void max_pool(const float* x, int64_t planes, int64_t H, int64_t W, const PoolParams& p, float* y,
              const Parallel& par) {
  pool<true>(x, planes, H, W, p, y, par);
}

void average_pool(const float* x, int64_t planes, int64_t H, int64_t W, const PoolParams& p, float* y,
                  const Parallel& par) {
  pool<false>(x, planes, H, W, p, y, par);
}

void global_average_pool(const float* x, int64_t planes, int64_t HW, float* y, const Parallel& par) {
  over_planes(planes, HW, par, [&](int64_t pl) {
    const float* xp = x + pl * HW;
    float s = 0.0f;
    for (int64_t i = 0; i < HW; ++i) s += xp[i];
    y[pl] = HW > 0 ? s / static_cast<float>(HW) : 0.0f;
  });
}

void add_activate(const float* a, const float* b, int64_t n, const Epilogue& ep, float* y, const Parallel& par) {
  const int64_t tasks = (n + kElementsPerTask - 1) / kElementsPerTask;
  auto task = [&](size_t t) {
    const int64_t i0 = static_cast<int64_t>(t) * kElementsPerTask, i1 = std::min(n, i0 + kElementsPerTask);
    switch (ep.act) {
      case Activation::kNone:
        for (int64_t i = i0; i < i1; ++i) y[i] = a[i] + b[i];
        break;
      case Activation::kRelu:
        for (int64_t i = i0; i < i1; ++i) y[i] = std::max(a[i] + b[i], 0.0f);
        break;
      default:
        for (int64_t i = i0; i < i1; ++i) y[i] = activate(a[i] + b[i], ep);
        break;
    }
  };
  par.for_each(static_cast<size_t>(tasks), task);
}

}  // namespace conv
}  // namespace onnxcomp
