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

void micro_generic(int rows, int cols, int64_t kc, const float* a, int64_t sk, int64_t sr, const float* b, float* c,
                   int64_t ldc, const float* bias, bool accumulate, bool relu) {
  float acc[kMR][kNR] = {};
  for (int64_t k = 0; k < kc; ++k) {
    const float* bk = b + k * kNR;
    for (int r = 0; r < rows; ++r) {
      const float av = a[k * sk + r * sr];
      for (int j = 0; j < kNR; ++j) acc[r][j] += av * bk[j];
    }
  }
  for (int r = 0; r < rows; ++r) {
    float* cr = c + r * ldc;
    for (int j = 0; j < cols; ++j) {
      float v = acc[r][j] + (accumulate ? cr[j] : (bias != nullptr ? bias[j] : 0.0f));
      if (relu) v = v > 0.0f ? v : 0.0f;
      cr[j] = v;
    }
  }
}

void micro_kernel(int rows, int cols, int64_t kc, const float* a, const float* b, float* c, int64_t ldc,
                  const float* bias, bool accumulate, bool relu) {
  micro_generic(rows, cols, kc, a, kMR, 1, b, c, ldc, bias, accumulate, relu);
}

void micro_kernel_direct(int rows, int cols, int64_t kc, const float* a, int64_t lda, const float* b, float* c,
                         int64_t ldc, const float* bias, bool accumulate, bool relu) {
  micro_generic(rows, cols, kc, a, 1, lda, b, c, ldc, bias, accumulate, relu);
}

#include "kernels_generic.h"

int64_t no_gemv(const float*, int64_t, int64_t, const CodebookWeights&, float*, int64_t, int64_t n0, int64_t) {
  return n0;
}

bool no_gemv_reads(const CodebookWeights&, int64_t) { return false; }
bool no_prepacked(int) { return false; }
bool no_columns(int, int64_t, int64_t) { return false; }

}  // namespace

}  // namespace scalar

std::vector<uint8_t> prepack_codes(const uint8_t* codes, int64_t K, int64_t N, int64_t row_bytes, int bits) {
  const int pb = prepacked_bits(bits), cpb = 8 / pb;  // bits and codes per byte of the layout
  const int64_t bc = prepack_block_cols(bits);
  const int64_t nblocks = (N + bc - 1) / bc;
  std::vector<uint8_t> out(static_cast<size_t>(nblocks * K * 64 + 64), 0);
  std::vector<uint8_t> row(static_cast<size_t>(nblocks * bc), 0);
  for (int64_t k = 0; k < K; ++k) {
    scalar::unpack_codes(codes + k * row_bytes, 0, N, bits, row.data());
    for (int64_t b = 0; b < nblocks; ++b) {
      uint8_t* dst = out.data() + (b * K + k) * 64;
      for (int j = 0; j < 64; ++j) {
        const int c = j / 16, jj = j % 16;
        uint32_t byte = 0;
        for (int t = 0; t < cpb; ++t) byte |= static_cast<uint32_t>(row[b * bc + c * 16 * cpb + t * 16 + jj]) << (t * pb);
        dst[j] = static_cast<uint8_t>(byte);
      }
    }
  }
  return out;
}

std::vector<uint8_t> prepack_columns(const uint8_t* codes, int64_t K, int64_t N, int64_t row_bytes, int bits) {
  const int64_t L = (K + 127) / 128, nblocks = (N + 7) / 8;
  std::vector<uint8_t> out(static_cast<size_t>(nblocks * L * 8 * 64 + 64), 0);
  std::vector<uint8_t> row(static_cast<size_t>(N), 0);
  for (int64_t k = 0; k < K; ++k) {
    scalar::unpack_codes(codes + k * row_bytes, 0, N, bits, row.data());
    const int64_t l = k / 128, t = (k % 128) / 16, d = k % 16;
    // nibble t of dword d: byte 4 d + t / 2, high half for odd t (little-endian dwords)
    const int64_t byte = 4 * d + t / 2, shift = 4 * (t % 2);
    for (int64_t n = 0; n < N; ++n)
      out[static_cast<size_t>((((n / 8) * L + l) * 8 + n % 8) * 64 + byte)] |= static_cast<uint8_t>(row[n] << shift);
  }
  return out;
}

namespace scalar {
extern const KernelTable table = {
    "scalar", kMR, kNR, pack_a_generic, gemm_generic, gemm_rows_generic, codebook_panel_generic, im2col_panel_generic,
    no_gemv, no_gemv_reads, sparse_gemv_generic, decode_rows_generic, nullptr, no_prepacked, no_columns,
};

}  // namespace scalar
}  // namespace onnxcomp
