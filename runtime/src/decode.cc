// Native HuffmanDecode / RunLengthDecode (see decode.h and OPS.md).
#include "decode.h"

#include <algorithm>
#include <cstring>

#include "common.h"

namespace onnxcomp {
namespace {

constexpr int kMaxLen = 16;

// 16-bit window (MSB first) -> (symbol index in canonical order, code length); length 0 marks a window
// that starts no valid code (past the last code of an incomplete code set).
struct HuffmanLut {
  std::vector<uint8_t> sym;
  std::vector<uint8_t> len;
};

HuffmanLut build_lut(const HuffmanInputs& in) {
  HuffmanLut lut;
  lut.sym.assign(size_t{1} << kMaxLen, 0);
  lut.len.assign(size_t{1} << kMaxLen, 0);
  // canonical codes: symbol i covers the windows [start_i, start_i + 2^(16 - len_i))
  uint32_t start = 0;
  for (int64_t i = 0; i < in.n; ++i) {
    const int l = in.table[in.n + i];
    const uint32_t span = 1u << (kMaxLen - l);
    std::fill(lut.sym.begin() + start, lut.sym.begin() + start + span, in.table[i]);
    std::fill(lut.len.begin() + start, lut.len.begin() + start + span, static_cast<uint8_t>(l));
    start += span;
  }
  return lut;
}

// MSB-first bit reader over a byte stream that reads zeros past its end.
struct BitReader {
  const uint8_t* p;
  int64_t bytes;
  uint32_t window(int64_t bit) const {
    const int64_t b = bit >> 3;
    uint32_t v = 0;
    if (b + 3 <= bytes) {
      v = (uint32_t{p[b]} << 16) | (uint32_t{p[b + 1]} << 8) | p[b + 2];
    } else {
      for (int i = 0; i < 3; ++i) v = (v << 8) | (b + i < bytes ? p[b + i] : 0u);
    }
    return (v >> (8 - static_cast<int>(bit & 7))) & 0xFFFFu;
  }
};

}  // namespace

void huffman_check(const HuffmanInputs& in, int64_t count) {
  if (in.n < 1 || in.n > 256) fail("table must have shape [2, n] with 1 <= n <= 256, got n=", in.n);
  uint64_t kraft = 0;  // sum of 2^(16 - len): at most 2^16 for a prefix code
  for (int64_t i = 0; i < in.n; ++i) {
    const int l = in.table[in.n + i];
    if (l < 1 || l > kMaxLen) fail("table: code length ", l, " of entry ", i, " is not in [1, 16]");
    if (i > 0 && l < in.table[in.n + i - 1])
      fail("table: code lengths must be non-decreasing (entry ", i, " has ", l, " after ", int{in.table[in.n + i - 1]},
           ")");
    kraft += uint64_t{1} << (kMaxLen - l);
  }
  if (kraft > (uint64_t{1} << kMaxLen)) fail("table: the code lengths do not form a prefix code (Kraft sum > 1)");
  const int64_t chunks = ceil_div(count, kHuffmanChunk);
  if (in.n_offsets != chunks)
    fail("offsets must hold ceil(count/1024)=", chunks, " entries for count=", count, ", got ", in.n_offsets);
  // every symbol takes at least one bit
  if (count > in.stream_bytes * 8)
    fail("the stream of ", in.stream_bytes, " bytes cannot hold ", count, " symbols (at least one bit each)");
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t o = in.offsets[c];
    if (o < 0 || o > in.stream_bytes * 8 || (c == 0 && o != 0) || (c > 0 && o < in.offsets[c - 1]))
      fail("offsets[", c, "]=", o, " is not a bit position in the stream (0 first, non-decreasing, <= ",
           in.stream_bytes * 8, ")");
  }
}

void huffman_decode_chunks(const HuffmanInputs& in, int64_t count, int64_t chunk0, int64_t chunk1, uint8_t* out) {
  // the table is small: building its lookup per call keeps the function stateless (64 KiB x 2)
  const HuffmanLut lut = build_lut(in);
  const BitReader rd{in.stream, in.stream_bytes};
  const int64_t total_bits = in.stream_bytes * 8;
  for (int64_t c = chunk0; c < chunk1; ++c) {
    int64_t bit = in.offsets[c];
    const int64_t s0 = c * kHuffmanChunk, s1 = std::min(count, s0 + kHuffmanChunk);
    for (int64_t s = s0; s < s1; ++s) {
      const uint32_t w = rd.window(bit);
      const int l = lut.len[w];
      if (l == 0) fail("stream: bits at position ", bit, " start no code of the table (symbol ", s, ")");
      out[s] = lut.sym[w];
      bit += l;
    }
    if (bit > total_bits) fail("stream: symbol ", s1 - 1, " ends at bit ", bit, ", past the end of the stream (", total_bits, " bits)");
    if (c + 1 < ceil_div(count, kHuffmanChunk) && bit != in.offsets[c + 1])
      fail("offsets[", c + 1, "]=", in.offsets[c + 1], " does not match the stream (symbol ", s1, " starts at bit ", bit,
           ")");
  }
}

void huffman_decode(const HuffmanInputs& in, int64_t count, uint8_t* out) {
  huffman_check(in, count);
  huffman_decode_chunks(in, count, 0, ceil_div(count, kHuffmanChunk), out);
}

void run_length_check(int64_t symbols, int bits, int64_t n, int64_t rows, int64_t row_bytes) {
  if (bits < 1 || bits > 7) fail("attribute bits=", bits, " is out of range [1, 7]");
  if (n < 0 || rows < 0) fail("count and the rows of shape must be non-negative");
  if (row_bytes != ceil_div(checked_mul(n, bits, "count * bits"), 8))
    fail("shape[1]=", row_bytes, " must be ceil(count * bits / 8) = ", ceil_div(n * bits, 8));
  const int64_t total = checked_mul(rows, n, "rows * count");
  if (symbols < 0) return;  // attributes only
  // one symbol covers at most 2^(8 - bits) codes
  if (symbols < total / (int64_t{1} << (8 - bits)) || total > symbols * (int64_t{1} << (8 - bits)))
    fail(symbols, " symbols cannot expand to ", rows, " x ", n, " codes at bits=", bits);
}

void run_length_decode(const uint8_t* symbols, int64_t count, int bits, int64_t n, int64_t rows, int64_t row_bytes,
                       uint8_t* out) {
  run_length_check(count, bits, n, rows, row_bytes);
  const int64_t total = rows * n;
  std::memset(out, 0, static_cast<size_t>(rows * row_bytes));
  const uint32_t cmask = (1u << bits) - 1u;
  int64_t pos = 0;  // flat code index of the next code
  int64_t row = 0, j = 0;
  for (int64_t e = 0; e < count; ++e) {
    const uint32_t s = symbols[e];
    const int64_t run = s >> bits;
    pos += run;
    j += run;
    if (pos >= total)
      fail("symbol ", e, " lands on code ", pos, ", past the ", rows, " x ", n, " codes of shape");
    while (j >= n) {
      j -= n;
      ++row;
    }
    const uint32_t code = s & cmask;
    if (code != 0) {
      const int64_t bit = j * bits;
      uint8_t* rp = out + row * row_bytes;
      const uint32_t v = code << (bit & 7);
      rp[bit >> 3] = static_cast<uint8_t>(rp[bit >> 3] | (v & 0xFFu));
      if ((v >> 8) != 0) rp[(bit >> 3) + 1] = static_cast<uint8_t>(rp[(bit >> 3) + 1] | (v >> 8));
    }
    ++pos;
    if (++j == n) {
      j = 0;
      ++row;
    }
  }
  if (pos != total) fail("the symbols expand to ", pos, " codes, expected ", rows, " x ", n, " = ", total);
}

}  // namespace onnxcomp
