// The custom ops of the com.onnxcomp domain (one source file each).
#pragma once

#include <onnxruntime_cxx_api.h>

namespace onnxcomp {
const OrtCustomOp* codebook_matmul_op();
const OrtCustomOp* codebook_conv_op();
const OrtCustomOp* sparse_codebook_matmul_op();
const OrtCustomOp* ternary_matmul_op();
const OrtCustomOp* winograd_conv_op();
const OrtCustomOp* huffman_decode_op();
const OrtCustomOp* run_length_decode_op();
const OrtCustomOp* codebook_gather_op();
}  // namespace onnxcomp
