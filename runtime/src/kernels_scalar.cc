// Portable kernels (baseline x86-64 / any CPU): the reference implementation every SIMD variant
// falls back to.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "kernels.h"

namespace onnxcomp {
namespace scalar {
namespace {

constexpr int kMR = 4;
constexpr int kNR = 16;

void micro_kernel(int rows, int cols, int64_t kc, const float* a, const float* b, float* c, int64_t ldc,
                  bool accumulate) {
  float acc[kMR][kNR] = {};
  for (int64_t k = 0; k < kc; ++k) {
    const float* bk = b + k * kNR;
    const float* ak = a + k * kMR;
    for (int r = 0; r < kMR; ++r) {
      const float av = ak[r];
      for (int j = 0; j < kNR; ++j) acc[r][j] += av * bk[j];
    }
  }
  for (int r = 0; r < rows; ++r) {
    float* cr = c + r * ldc;
    if (accumulate) {
      for (int j = 0; j < cols; ++j) cr[j] += acc[r][j];
    } else {
      for (int j = 0; j < cols; ++j) cr[j] = acc[r][j];
    }
  }
}

#include "kernels_generic.h"

int64_t no_gemv(const float*, int64_t, int64_t, const CodebookWeights&, float*, int64_t, int64_t n0, int64_t) {
  return n0;
}

}  // namespace

extern const KernelTable table = {
    "scalar", kMR, kNR, pack_a_generic, gemm_generic, codebook_panel_generic, im2col_panel_generic,
    no_gemv, sparse_gemv_generic,
};

}  // namespace scalar
}  // namespace onnxcomp
