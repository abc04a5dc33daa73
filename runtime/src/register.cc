// Library entry point: RegisterCustomOps adds the com.onnxcomp domain to a session's options.
// The library is not linked to onnxruntime; it receives the API table from the loading runtime and
// refuses (with an error status) runtimes older than the API version it was compiled against (29).
#include <mutex>
#include <string>
#include <vector>

#include "common.h"
#include "ops.h"

namespace {

std::mutex g_mutex;
std::vector<Ort::CustomOpDomain>& domains() {
  static std::vector<Ort::CustomOpDomain> d;  // kept alive for the life of the library
  return d;
}

}  // namespace

extern "C" {

__attribute__((visibility("default"))) OrtStatus* ORT_API_CALL RegisterCustomOps(OrtSessionOptions* options,
                                                                                 const OrtApiBase* api_base) {
  if (api_base == nullptr) return nullptr;
  const OrtApi* api = api_base->GetApi(ORT_API_VERSION);
  if (api == nullptr) {
    const char* have = api_base->GetVersionString ? api_base->GetVersionString() : "unknown";
    const std::string msg = onnxcomp::cat("libonnxcomp_ops.so needs onnxruntime >= 1.", ORT_API_VERSION,
                                          " (C API version ", ORT_API_VERSION, "), but this process runs onnxruntime ",
                                          have, "; upgrade onnxruntime (pip install -U onnxruntime)");
    // every onnxruntime has API version 1, which is enough to report the error
    const OrtApi* old = api_base->GetApi(1);
    return old ? old->CreateStatus(ORT_FAIL, msg.c_str()) : nullptr;
  }
  Ort::InitApi(api);
  return onnxcomp::guarded("RegisterCustomOps(com.onnxcomp)", [&] {
    std::lock_guard<std::mutex> lock(g_mutex);
    Ort::CustomOpDomain domain(onnxcomp::kDomain);
    domain.Add(onnxcomp::codebook_matmul_op());
    domain.Add(onnxcomp::codebook_conv_op());
    domain.Add(onnxcomp::sparse_codebook_matmul_op());
    domain.Add(onnxcomp::ternary_matmul_op());
    domain.Add(onnxcomp::winograd_conv_op());
    domain.Add(onnxcomp::huffman_decode_op());
    domain.Add(onnxcomp::run_length_decode_op());
    domain.Add(onnxcomp::codebook_gather_op());
    Ort::UnownedSessionOptions so(options);
    so.Add(domain);
    domains().push_back(std::move(domain));
  });
}

// Which kernel set this process uses ("avx512", "avx2" or "scalar"); for diagnostics (ctypes).
__attribute__((visibility("default"))) const char* OnnxcompKernelIsa() { return onnxcomp::kernels().name; }

// Which vendor's kernel variants this process uses ("amd" or "intel"; ONNXCOMP_CPU_VENDOR forces it); diagnostics.
__attribute__((visibility("default"))) const char* OnnxcompCpuVendor() {
  return onnxcomp::cpu_is_amd() ? "amd" : "intel";
}

}  // extern "C"
