// libonnxcomp_ep.so: the onnxcomp execution provider (OnnxcompExecutionProvider), an onnxruntime plugin EP.
//
// The library exports CreateEpFactories / ReleaseEpFactory (onnxruntime's plugin-EP entry points, C API 29 or
// newer); like libonnxcomp_ops.so it never links libonnxruntime. It ships no custom-op domain: the com.onnxcomp
// schemas, shape inference and CPU fallback kernels stay in libonnxcomp_ops.so, and every com.onnxcomp op also
// carries a function body, so a model loads wherever the EP is not used.
//
// What it claims (GetCapability), per op family (kFamilies) and the plan in plan.h: convolution chains around the
// com.onnxcomp convolutions it runs with Winograd (conv.cc), and the com.onnxcomp matmuls whose weights are
// constant (initializers, or the output of HuffmanDecode / RunLengthDecode chains over initializers), large enough
// to pay for a compiled node, with those decode chains and a Relu that only consumes the matmul (matmul.cc), and the
// CodebookGather embedding tables with such weights (gather.cc).
// Compile decodes, validates and prepacks the weights once (a corrupt weight fails session creation with
// INVALID_ARGUMENT naming the node); the compiled nodes run the same AVX-512 / AVX2 / scalar kernels as the custom
// ops, on onnxruntime's intra-op thread pool (KernelContext_ParallelFor, which compiled nodes get).
// It declines the rest: when only the EP is registered, a declined CodebookConv is inlined and constant-folded by
// onnxruntime into a plain Conv that runs in onnxruntime's NCHWc kernels.
#include <onnxruntime_cxx_api.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "../common.h"
#include "exec.h"
#include "graph.h"
#include "plan.h"

namespace onnxcomp {
namespace ep {
namespace {

const OrtApi* g_api = nullptr;
const OrtEpApi* g_ep_api = nullptr;

// ---- node compute info ---------------------------------------------------------------------------
struct ComputeInfo : OrtNodeComputeInfo {
  std::unique_ptr<Exec> exec;
  explicit ComputeInfo(std::unique_ptr<Exec> e) : OrtNodeComputeInfo{}, exec(std::move(e)) {
    ort_version_supported = ORT_API_VERSION;
    CreateState = [](OrtNodeComputeInfo* self, OrtNodeComputeContext*, void** state) noexcept -> OrtStatus* {
      *state = static_cast<ComputeInfo*>(self)->exec.get();
      return nullptr;
    };
    Compute = [](OrtNodeComputeInfo*, void* state, OrtKernelContext* context) noexcept -> OrtStatus* {
      Exec* e = static_cast<Exec*>(state);
      return guarded(e->label, [&] { e->compute(context); });
    };
    ReleaseState = [](OrtNodeComputeInfo*, void*) noexcept {};
  }
};

// The op families the EP runs, in order: the groups of nodes a family claims in a graph (GetCapability; a node
// already in an earlier family's group is not claimed again), and the executor of a group it claimed (Compile;
// `owns` tells the family of a compiled group from its nodes; `epilogue`: the group's last node is an epilogue it
// runs without too, so a group whose last node is already taken is claimed without it).
struct Family {
  std::vector<std::vector<Ort::ConstNode>> (*claim)(const Ort::ConstGraph&, const PlanOptions&);
  bool (*owns)(const Ort::ConstNode&);
  std::unique_ptr<Exec> (*build)(const Ort::ConstGraph&, const Ort::ConstNode&, const PlanOptions&);
  bool epilogue = false;
};

std::vector<std::vector<Ort::ConstNode>> claim_matmuls(const Ort::ConstGraph& g, const PlanOptions& plan) {
  std::vector<std::vector<Ort::ConstNode>> groups;
  for (const Ort::ConstNode& node : g.GetNodes()) {
    std::vector<Ort::ConstNode> group;
    if (claim_matmul(node, plan, &group)) groups.push_back(group);
  }
  return groups;
}

const Family kFamilies[] = {
    {claim_conv_chains, [](const Ort::ConstNode& n) { return is_conv_op(n); }, build_conv},
    {claim_gathers, owns_gather,
     [](const Ort::ConstGraph& g, const Ort::ConstNode& f, const PlanOptions&) { return build_gather(g, f); }},
    {claim_matmuls, [](const Ort::ConstNode& n) { return n.GetDomain() == kDomain && !is_decoder(n); },
     [](const Ort::ConstGraph& g, const Ort::ConstNode& f, const PlanOptions&) { return build_matmul(g, f); },
     true},  // (its Relu or residual Add: two matmuls may feed one Add)
};

// ---- the EP -------------------------------------------------------------------------------------------
struct OnnxcompEp : OrtEp {
  PlanOptions plan;

  explicit OnnxcompEp(const PlanOptions& p) : OrtEp{}, plan(p) {
    ort_version_supported = ORT_API_VERSION;
    GetName = [](const OrtEp*) noexcept -> const char* { return kEpName; };
    GetCapability = GetCapabilityImpl;
    Compile = CompileImpl;
    ReleaseNodeComputeInfos = [](OrtEp*, OrtNodeComputeInfo** infos, size_t n) noexcept {
      for (size_t i = 0; i < n; ++i) delete static_cast<ComputeInfo*>(infos[i]);
    };
  }

  static OrtStatus* ORT_API_CALL GetCapabilityImpl(OrtEp* self, const OrtGraph* graph,
                                                   OrtEpGraphSupportInfo* support) noexcept {
    return guarded(kEpName, [&] {
      const OnnxcompEp* ep = static_cast<const OnnxcompEp*>(self);
      Ort::ConstGraph g{graph};
      std::set<const OrtNode*> taken;  // a node joins one group at most
      for (const Family& f : kFamilies) {
        for (std::vector<Ort::ConstNode> group : f.claim(g, ep->plan)) {
          if (f.epilogue && group.size() > 1 && taken.count(group.back()) > 0) group.pop_back();
          bool overlap = false;
          for (const Ort::ConstNode& n : group) overlap = overlap || taken.count(n) > 0;
          if (overlap || group.empty()) continue;
          std::vector<const OrtNode*> raw(group.begin(), group.end());
          taken.insert(raw.begin(), raw.end());
          OrtNodeFusionOptions fo{};
          fo.ort_version_supported = ORT_API_VERSION;
          fo.drop_constant_initializers = true;  // the EP keeps its own decoded, prepacked copy
          Ort::ThrowOnError(g_ep_api->EpGraphSupportInfo_AddNodesToFuse(support, raw.data(), raw.size(), &fo));
        }
      }
    });
  }

  static OrtStatus* ORT_API_CALL CompileImpl(OrtEp* self, const OrtGraph** graphs, const OrtNode** fused_nodes,
                                             size_t count, OrtNodeComputeInfo** infos, OrtNode** ep_context) noexcept {
    const OnnxcompEp* ep = static_cast<const OnnxcompEp*>(self);
    for (size_t i = 0; i < count; ++i) {
      infos[i] = nullptr;
      if (ep_context) ep_context[i] = nullptr;
    }
    for (size_t i = 0; i < count; ++i) {
      std::unique_ptr<Exec> exec;
      OrtStatus* st = guarded(kEpName, [&] {
        Ort::ConstGraph g{graphs[i]};
        const Family* family = nullptr;
        for (const Ort::ConstNode& n : g.GetNodes())
          for (const Family& f : kFamilies)
            if (family == nullptr && f.owns(n)) family = &f;
        if (family == nullptr) fail("compiled group without an op the EP runs");
        exec = family->build(g, Ort::ConstNode{fused_nodes[i]}, ep->plan);
      });
      if (st != nullptr) {
        for (size_t j = 0; j < i; ++j) {
          delete static_cast<ComputeInfo*>(infos[j]);
          infos[j] = nullptr;
        }
        return st;  // guarded() prefixed kEpName; the builders name the node
      }
      infos[i] = new ComputeInfo(std::move(exec));
    }
    return nullptr;
  }
};

// ---- the factory ---------------------------------------------------------------------------------------
struct OnnxcompEpFactory : OrtEpFactory {
  OnnxcompEpFactory() : OrtEpFactory{} {
    ort_version_supported = ORT_API_VERSION;
    GetName = [](const OrtEpFactory*) noexcept -> const char* { return kEpName; };
    GetVendor = [](const OrtEpFactory*) noexcept -> const char* { return "onnxcomp"; };
    GetVendorId = [](const OrtEpFactory*) noexcept -> uint32_t { return 0; };
    GetVersion = [](const OrtEpFactory*) noexcept -> const char* { return kEpVersion; };
    GetSupportedDevices = [](OrtEpFactory* self, const OrtHardwareDevice* const* devices, size_t n,
                             OrtEpDevice** out, size_t max_out, size_t* num) noexcept -> OrtStatus* {
      *num = 0;
      for (size_t i = 0; i < n && *num < max_out; ++i) {
        if (g_api->HardwareDevice_Type(devices[i]) != OrtHardwareDeviceType_CPU) continue;
        OrtKeyValuePairs* meta = nullptr;
        g_api->CreateKeyValuePairs(&meta);
        g_api->AddKeyValuePair(meta, "kernels", kernels().name);
        OrtEpDevice* d = nullptr;
        OrtStatus* st = g_ep_api->CreateEpDevice(self, devices[i], meta, nullptr, &d);
        g_api->ReleaseKeyValuePairs(meta);
        if (st != nullptr) return st;
        out[(*num)++] = d;
      }
      return nullptr;
    };
    CreateEp = [](OrtEpFactory*, const OrtHardwareDevice* const*, const OrtKeyValuePairs* const*, size_t,
                  const OrtSessionOptions* so, const OrtLogger*, OrtEp** ep) noexcept -> OrtStatus* {
      return guarded(kEpName, [&] { *ep = new OnnxcompEp(read_plan_options(so)); });
    };
    ReleaseEp = [](OrtEpFactory*, OrtEp* ep) noexcept { delete static_cast<OnnxcompEp*>(ep); };
    // entries onnxruntime >= 1.32 calls: trivial versions for a CPU EP
    ValidateCompiledModelCompatibilityInfo = [](OrtEpFactory*, const OrtHardwareDevice* const*, size_t, const char*,
                                                OrtCompiledModelCompatibility* c) noexcept -> OrtStatus* {
      *c = OrtCompiledModelCompatibility_EP_NOT_APPLICABLE;
      return nullptr;
    };
    CreateAllocator = [](OrtEpFactory*, const OrtMemoryInfo*, const OrtKeyValuePairs*,
                         OrtAllocator** a) noexcept -> OrtStatus* {
      *a = nullptr;  // onnxruntime's default CPU allocator
      return nullptr;
    };
    ReleaseAllocator = [](OrtEpFactory*, OrtAllocator*) noexcept {};
    CreateDataTransfer = [](OrtEpFactory*, OrtDataTransferImpl** d) noexcept -> OrtStatus* {
      *d = nullptr;  // CPU memory only
      return nullptr;
    };
    IsStreamAware = [](const OrtEpFactory*) noexcept -> bool { return false; };
    CreateSyncStreamForDevice = [](OrtEpFactory*, const OrtMemoryDevice*, const OrtKeyValuePairs*,
                                   OrtSyncStreamImpl** s) noexcept -> OrtStatus* {
      *s = nullptr;
      return nullptr;
    };
  }
};

}  // namespace

size_t fused_input_index(const Ort::ConstNode& fused, const std::string& name, const std::string& where) {
  std::vector<Ort::ConstValueInfo> fins = fused.GetInputs();
  for (size_t j = 0; j < fins.size(); ++j)
    if (fins[j] && fins[j].GetName() == name) return j;
  fail(where, ": input '", name, "' is not an input of the compiled node");
}

// Session options read by the plan (keys under "ep.onnxcomp.").
PlanOptions read_plan_options(const OrtSessionOptions* so) {
  PlanOptions p;
  if (so == nullptr) return p;
  auto get = [&](const char* key, int64_t* out) {
    int has = 0;
    if (g_api->HasSessionConfigEntry(so, key, &has) != nullptr || !has) return;
    char buf[64];
    size_t size = sizeof(buf);
    OrtStatus* st = g_api->GetSessionConfigEntry(so, key, buf, &size);
    if (st != nullptr) {
      g_api->ReleaseStatus(st);
      return;
    }
    try {
      *out = std::stoll(buf);
    } catch (...) {
      fail("session option ", key, "=", buf, " is not an integer");
    }
  };
  get("ep.onnxcomp.min_weights", &p.min_weights);
  get("ep.onnxcomp.conv", &p.conv);
  return p;
}

}  // namespace ep
}  // namespace onnxcomp

extern "C" {

__attribute__((visibility("default"))) OrtStatus* CreateEpFactories(const char* /*registration_name*/,
                                                                     const OrtApiBase* api_base,
                                                                     const OrtLogger* /*logger*/,
                                                                     OrtEpFactory** factories, size_t max_factories,
                                                                     size_t* num_factories) {
  using namespace onnxcomp;
  if (api_base == nullptr || num_factories == nullptr) return nullptr;
  *num_factories = 0;
  const OrtApi* api = api_base->GetApi(ORT_API_VERSION);
  if (api == nullptr) {
    const char* have = api_base->GetVersionString ? api_base->GetVersionString() : "unknown";
    const std::string msg = cat("libonnxcomp_ep.so needs onnxruntime >= 1.", ORT_API_VERSION, " (C API version ",
                                ORT_API_VERSION, "), but this process runs onnxruntime ", have,
                                "; upgrade onnxruntime (pip install -U onnxruntime)");
    const OrtApi* old = api_base->GetApi(1);
    return old ? old->CreateStatus(ORT_FAIL, msg.c_str()) : nullptr;
  }
  Ort::InitApi(api);
  ep::g_api = api;
  ep::g_ep_api = api->GetEpApi();
  if (max_factories < 1) return api->CreateStatus(ORT_INVALID_ARGUMENT, "CreateEpFactories: no room for a factory");
  return guarded("CreateEpFactories", [&] {
    factories[0] = new ep::OnnxcompEpFactory();
    *num_factories = 1;
  });
}

__attribute__((visibility("default"))) OrtStatus* ReleaseEpFactory(OrtEpFactory* factory) {
  delete static_cast<onnxcomp::ep::OnnxcompEpFactory*>(factory);
  return nullptr;
}

// Which kernel set this process uses ("avx512", "avx2" or "scalar"); for diagnostics (ctypes).
__attribute__((visibility("default"))) const char* OnnxcompEpKernelIsa() { return onnxcomp::kernels().name; }

}  // extern "C"
