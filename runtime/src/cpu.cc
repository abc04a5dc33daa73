// Run-time CPU dispatch: the best kernel table this CPU supports, optionally capped by the
// ONNXCOMP_ISA environment variable ("scalar", "avx2", "avx512"; read once, at first use); and the CPU vendor, which
// picks between the variants some kernels have (ONNXCOMP_CPU_VENDOR: "amd", "intel").
#include <cstdlib>
#include <cstring>

#include "kernels.h"

namespace onnxcomp {

bool isa_supported(const char* isa) {
  __builtin_cpu_init();
  if (std::strcmp(isa, "scalar") == 0) return true;
  if (std::strcmp(isa, "avx2") == 0) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (std::strcmp(isa, "avx512") == 0)
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return false;
}

bool cpu_is_amd() {
  static const bool yes = [] {
    const char* forced = std::getenv("ONNXCOMP_CPU_VENDOR");
    if (forced && *forced) return std::strcmp(forced, "amd") == 0;
    __builtin_cpu_init();
    return __builtin_cpu_is("amd") != 0;
  }();
  return yes;
}

const KernelTable& kernels_for(const char* isa) {
  if (std::strcmp(isa, "avx512") == 0 && isa_supported("avx512")) return avx512::table;
  if ((std::strcmp(isa, "avx512") == 0 || std::strcmp(isa, "avx2") == 0) && isa_supported("avx2")) return avx2::table;
  return scalar::table;
}

const KernelTable& kernels() {
  static const KernelTable* best = [] {
    const char* cap = std::getenv("ONNXCOMP_ISA");
    if (cap && *cap) return &kernels_for(cap);
    return &kernels_for("avx512");
  }();
  return *best;
}

}  // namespace onnxcomp
