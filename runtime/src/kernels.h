// Compute kernels behind the com.onnxcomp ops. Plain data in, plain data out: everything here has
// already been validated by the op (shapes, attribute ranges, code and index ranges), so the kernels
// only need to stay inside the extents described by their arguments.
//
// Every kernel exists once per instruction set (scalar, AVX2+FMA, AVX-512); cpu.cc picks one table at
// load time with __builtin_cpu_supports. The SIMD variants are compiled with function-level
// target attributes (#pragma GCC target), so the library itself stays baseline x86-64.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace onnxcomp {

// Fills a packed B panel for columns [n0, n0 + nc) and rows [k0, k0 + kc) of a logical K x N matrix.
// Layout: ceil(nc / nr) strips of nr columns; strip s holds row kk at panel[(s * kc + kk) * nr + j]
// for column n0 + s * nr + j. Columns at or beyond n0 + nc are written as 0.
using PanelFn = void (*)(const void* ctx, int64_t k0, int64_t kc, int64_t n0, int64_t nc, int nr, float* panel);

// W[k, n] = codebook[((n / group_size) * nblocks + k / block_size) * entries + code(k, n)]; codes[k] packed at
// `bits` bits. Block codebooks (nblocks > 1) are read by the column GEMV only (`columns` set, block_size a multiple
// of 16); every other kernel takes one block of inputs at a time (nblocks == 1).
struct CodebookWeights {
  const uint8_t* codes;   // [K, row_bytes]
  const float* codebook;  // [G, entries], entries == 1 << bits (padded by the op when smaller)
  int64_t K, N;
  int64_t row_bytes;      // ceil(N * bits / 8)
  int64_t group_size;
  int64_t G;
  int bits;
  // Optional prepacked copy of the codes (see prepack_codes), or nullptr.
  const uint8_t* packed = nullptr;
  // Optional column-major copy (see prepack_columns), or nullptr: codebooks that change within 16 columns.
  const uint8_t* columns = nullptr;
  // Block codebooks along k: rows per block, and blocks (1: one codebook row per group, for all of K).
  int64_t block_size = 0;
  int64_t nblocks = 1;
};

// Prepacked code layout (made once per constant codes tensor, where the kernel table's GEMV reads it:
// KernelTable::reads_prepacked). Column blocks of BC = prepack_block_cols(bits) columns; block b holds, for each
// row k, 64 contiguous bytes at packed[(b * K + k) * 64]. Columns past N hold code 0. Streaming a block is
// sequential in memory.
// A code takes P = prepacked_bits(bits) bits there: 1, 2, 4 bits as they are, 3 bits widened to 4, 5..8 bits to 8.
//  * P = 1, 2, 4 (BC = 64 * 8 / P): 4 chunks of 16 bytes, and byte j of chunk c carries the codes of columns
//    b*BC + c*16*cpb + t*16 + j at bit t*P (t < cpb = 8 / P). Zero-extending a chunk to 16 dwords and shifting
//    right by t*P puts 16 consecutive columns, in order, into the low bits of the lanes.
//  * P = 8 (BC = 64): byte j is the code of column b*64 + j.
inline int prepacked_bits(int bits) { return bits <= 2 ? bits : (bits <= 4 ? 4 : 8); }
inline int64_t prepack_block_cols(int bits) { return 64 * (8 / prepacked_bits(bits)); }
std::vector<uint8_t> prepack_codes(const uint8_t* codes, int64_t K, int64_t N, int64_t row_bytes, int bits);

// Column-major nibble layout for codebooks that change within 16 columns (one per output channel, bits <= 4): a
// column's weights along k share one codebook, so 16 of them are one vpermps of that column's 16-entry table
// (zero padded) and one FMA with 16 consecutive x. Blocks of 8 columns; L = ceil(K / 128) lines per column; line l
// of column 8 nb + c is the 64 bytes at columns[((nb * L + l) * 8 + c) * 64], and nibble t (bits 4t..4t+3) of its
// dword d holds the code of row k = 128 l + 16 t + d (0 past K or N): shifting the 16 dwords right by 4t gives rows
// 128 l + 16 t .. + 15 in lane order.
std::vector<uint8_t> prepack_columns(const uint8_t* codes, int64_t K, int64_t N, int64_t row_bytes, int bits);

// EIE-style sparse rows: row k holds entries [row_ptr[k], row_ptr[k + 1]); entry e advances the
// column by delta(e) + 1 (starting at -1) and carries code(e). Positions were checked to be < N.
struct SparseWeights {
  const int32_t* row_ptr;  // [K + 1]
  const uint8_t* deltas;   // E entries at index_bits
  const uint8_t* codes;    // E entries at bits
  const float* codebook;   // [G, entries]
  int64_t K, N, E;
  int64_t group_size, G;
  int bits, index_bits;
};

// Prepacked sparse layout for batch-1..4 runs (bits <= 4; built once from constant EIE inputs):
// output columns in groups of 16 (one vector of accumulators); a step holds 16 lanes, lane j an entry of column
// cg*16 + j or padding, all from one window of `window` consecutive rows of x (held in registers and looked up
// with a permute). Column group cg owns steps [step_ptr[cg], step_ptr[cg+1]); its window starts at row 0 and moves
// forward by step_adv[i] rows before its step i (filler steps of padding carry moves over 255). Windows start at
// any row, not at multiples of the window. x must be readable (zero padded) up to K + window floats.
//  * lane_bytes 1, window 16: byte (k - start) | code << 4, padding 0 (needs codebook entry 0 == 0.0), in quads
//    of steps: every group's step count is a multiple of 4, and quad q (the 64 bytes at data + 64 q) holds lane j
//    of its step u in byte 4 j + u. Read as 16 dwords, shifted right by 8 u (row) or 8 u + 4 (code), it feeds
//    vpermps directly (the index is the low 4 bits): no widening, no masking, one 64-byte line per 4 steps.
//  * lane_bytes 2, window 32: step i at data + 32 i, lane j the uint16 (k - start) | code << 5; padding kPad
//    (selects a zero weight).
struct SparseWindows {
  static constexpr uint16_t kPad = 1u << 9;
  const uint8_t* data;
  const uint8_t* step_adv;  // [steps]
  const int64_t* step_ptr;  // [NG + 1]
  const float* cb16;        // [G, 16] codebook rows, zero padded
  int64_t K, N, NG, group_size;
  int lane_bytes, window;
};

// A K x N float matrix packed once for gemm_packed (W of a constant codebook matmul, decoded): ceil(N / nr)
// strips of nr columns, strip s holding row k at b[(s * K + k) * nr + j] for column s * nr + j (0 past N). This is
// what the panel providers write for k0 = 0, kc = K (a strip group starting at column n0 lands at
// b + (n0 / nr) * K * nr).
inline int64_t packed_b_floats(int64_t K, int64_t N, int nr) { return (N + nr - 1) / nr * nr * K; }

// Convolution geometry for the implicit im2col panel (1 to 3 spatial dims, padded to 3).
struct ConvGeometry {
  int64_t C;            // channels of this group
  int64_t in[3];        // input spatial extents
  int64_t out[3];       // output spatial extents
  int64_t k[3], s[3], d[3], pad[3];
  int64_t out_size;     // prod(out)
  int64_t kernel_size;  // prod(k)
  const float* x;       // this image, this group's first channel: [C, in...]
};

struct KernelTable {
  const char* name;
  int mr, nr;  // GEMM micro-tile
  // Packs rows of A (M x K, row-major, lda) into MR-row panels over the whole K: panel i holds
  // A[i*mr + r, k] at out[i * K * mr + k * mr + r] (rows past M are 0). Size: ceil(M/mr)*mr*K floats.
  void (*pack_a)(int64_t M, int64_t K, const float* a, int64_t lda, float* out);
  // C[:, n0:n1] = (accumulate ? C : 0) + A_packed @ B[:, n0:n1], B supplied panel by panel.
  void (*gemm)(int64_t M, int64_t K, const float* a_packed, PanelFn fill_b, const void* b_ctx, float* c,
               int64_t ldc, int64_t n0, int64_t n1, bool accumulate);
  // C[0:M, n0:n1] = act(A @ B[:, n0:n1] + bias[n0:n1]) with A row-major (lda; read in place, not packed) and B
  // either packed whole (b_packed, packed_b_floats layout with the table's nr) or, when b_packed is null, supplied
  // block by block by fill_b (decoded into an L2-resident panel); n0 % nr == 0 with b_packed (n0 % 16 == 0 keeps
  // the providers on their fast path); bias may be null; relu applies max(., 0). C is written, never read.
  void (*gemm_rows)(int64_t M, int64_t K, const float* a, int64_t lda, const float* b_packed, PanelFn fill_b,
                    const void* b_ctx, const float* bias, bool relu, float* c, int64_t ldc, int64_t n0, int64_t n1);
  // B panel providers
  void (*codebook_panel)(const void* ctx, int64_t k0, int64_t kc, int64_t n0, int64_t nc, int nr, float* panel);
  void (*im2col_panel)(const void* ctx, int64_t k0, int64_t kc, int64_t n0, int64_t nc, int nr, float* panel);
  // Y[m, n0:n] += X[m, :] @ W[:, n0:n] for m in [0, M), decoding in registers, for the leading
  // columns this kernel covers; returns n (n0 when it covers nothing; the caller runs gemm on the rest).
  // n0 must be a multiple of 128.
  int64_t (*codebook_gemv)(const float* x, int64_t M, int64_t ldx, const CodebookWeights& w, float* y,
                           int64_t ldy, int64_t n0, int64_t n1);
  // Whether codebook_gemv reads these weights for M rows of X (then it covers every column block at a multiple of
  // 1024); false: it covers nothing, and the caller runs the GEMM.
  bool (*codebook_gemv_reads)(const CodebookWeights& w, int64_t M);
  // y[n] += sum_k x[k] * W[k, n] over rows k in [k0, k1) with x[k] != 0, for one row of X.
  void (*sparse_gemv)(const float* x, const SparseWeights& w, int64_t k0, int64_t k1, float* y);
  // out[i, j] = codebook[(m / group_size) * 2^bits + code(m, j)] for m = row0 + i, i < rows, j < n:
  // decodes whole code rows (the convolution filter) into floats.
  void (*decode_rows)(const uint8_t* codes, int64_t row_bytes, int64_t row0, int64_t rows, int64_t n, int bits,
                      const float* codebook, int64_t group_size, float* out);
  // Y[r, cg0*16 : cg1*16] += X[r] @ W for rows r < rows (1..4) over column groups [cg0, cg1) of a
  // SparseWindows layout; X rows are ldx apart and zero padded to K + window (nullptr: not
  // available in this kernel set).
  void (*sparse_windows_gemv)(const float* x, int64_t ldx, int rows, const SparseWindows& s, int64_t cg0,
                              int64_t cg1, float* y, int64_t ldy);
  // Whether codebook_gemv reads the prepacked layout of codes this wide: constant codes are prepacked only then.
  bool (*reads_prepacked)(int bits);
  // Whether codebook_gemv reads the column layout (prepack_columns) for these codes and codebook groups: constant
  // codes are laid out so only then (and then not prepack_codes'd).
  bool (*reads_columns)(int bits, int64_t group_size, int64_t N);
};

const KernelTable& kernels();                      // best table for this CPU (ONNXCOMP_ISA may cap it)
const KernelTable& kernels_for(const char* isa);   // "scalar", "avx2", "avx512"; nullptr-like fallback
bool isa_supported(const char* isa);
// Whether the CPU is AMD's: where kernels have a variant per vendor (the AVX-512 GEMVs and GEMM micro-kernel), which
// one the measurements favour. ONNXCOMP_CPU_VENDOR ("amd", "intel"; read once) forces it, so that tests run both.
bool cpu_is_amd();

// A per-thread float buffer of at least n elements (slot 0..2), reused across calls on the same thread.
float* thread_scratch(size_t n, int slot);

namespace scalar { extern const KernelTable table; }
namespace avx2 { extern const KernelTable table; }
namespace avx512 { extern const KernelTable table; }

}  // namespace onnxcomp
