// Native weight decoders for Deep Compression's storage stages (OPS.md): canonical Huffman streams
// (HuffmanDecode) and (zero run, code) symbols (RunLengthDecode). Shared by the custom ops
// (libonnxcomp_ops.so) and the execution provider (libonnxcomp_ep.so). Every function validates what it
// reads and throws OpError naming the problem; nothing is read or written out of bounds.
#pragma once

#include <cstdint>
#include <vector>

namespace onnxcomp {

// HuffmanDecode: `count` bytes from a canonical Huffman stream (codes MSB first, lengths 1..16).
// table: [2, n] (row 0 = symbols in canonical order, row 1 = non-decreasing code lengths);
// offsets: the stream bit offset of every 1024th symbol (ceil(count / 1024) of them, each checked).
struct HuffmanInputs {
  const uint8_t* stream;
  int64_t stream_bytes;
  const uint8_t* table;
  int64_t n;  // table columns
  const int32_t* offsets;
  int64_t n_offsets;
};
constexpr int64_t kHuffmanChunk = 1024;
// Checks the table and the sizes (count against offsets and stream length); throws on error.
void huffman_check(const HuffmanInputs& in, int64_t count);
// Decodes symbols [chunk0 * 1024, min(count, chunk1 * 1024)) into out (the whole output buffer).
// huffman_check must have passed; chunks can be decoded in parallel.
void huffman_decode_chunks(const HuffmanInputs& in, int64_t count, int64_t chunk0, int64_t chunk1, uint8_t* out);
// Both, single-threaded.
void huffman_decode(const HuffmanInputs& in, int64_t count, uint8_t* out);

// RunLengthDecode: symbols s = run * 2^bits + code -> rows x n codes packed at `bits` (row_bytes per row).
// Throws when the symbols do not expand to exactly rows * n codes (symbols < 0: checks the attributes only).
void run_length_check(int64_t symbols, int bits, int64_t n, int64_t rows, int64_t row_bytes);
void run_length_decode(const uint8_t* symbols, int64_t count, int bits, int64_t n, int64_t rows, int64_t row_bytes,
                       uint8_t* out);

}  // namespace onnxcomp
