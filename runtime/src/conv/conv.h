// Convolution kernel core shared by the custom ops (WinogradConv, CodebookConv) and other consumers (the
// execution provider): plain data in, plain data out, no onnxruntime types. Callers validate shapes; the
// kernels only stay inside the extents their arguments describe.
//
// Activations are float32 in one of two memory layouts (TensorLayout):
//  * NCHW:  element (n, c, y, x) at ((n * C + c) * H + y) * W + x;
//  * NCHWc: channel blocks of `cblock` channels (the layout onnxruntime calls NCHWc, e.g. NCHW16c):
//           element (n, c, y, x) at (((n * ceil(C / cblock) + c / cblock) * H + y) * W + x) * cblock + c % cblock;
//           channels past C in the last block are padding (read as anything, written as 0).
// Work is spread over a caller-supplied Parallel (onnxruntime's intra-op pool in the custom ops).
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>

namespace onnxcomp {
namespace conv {

// Activation applied after the bias, fused into the kernels' output stage.
enum class Activation : int { kNone = 0, kRelu = 1, kClip = 2, kLeakyRelu = 3 };

struct Epilogue {
  const float* bias = nullptr;  // [M] (output channels) or nullptr
  Activation act = Activation::kNone;
  float alpha = 0.01f;                                    // LeakyRelu: x < 0 ? alpha * x : x, then clipped
  float lo = -std::numeric_limits<float>::infinity();     // Clip (and LeakyRelu): min(max(x, lo), hi)
  float hi = std::numeric_limits<float>::infinity();
};

struct TensorLayout {
  enum Kind : int { kNCHW = 0, kNCHWc = 1 };
  Kind kind = kNCHW;
  int cblock = 1;  // kNCHWc only: channels per block (any multiple of the kernel set's vector width)
  static TensorLayout nchw() { return {}; }
  static TensorLayout nchwc(int cb) { return {kNCHWc, cb}; }
};

// Runs task(ctx, i) for every i in [0, n) and returns once all have run (possibly concurrently). A task
// may throw (std::bad_alloc); the implementation must propagate the first exception to the caller.
class Parallel {
 public:
  virtual ~Parallel() = default;
  virtual void run(size_t n, void (*task)(void* ctx, size_t i), void* ctx) const = 0;
  template <class F>
  void for_each(size_t n, F& f) const {
    run(n, [](void* c, size_t i) { (*static_cast<F*>(c))(i); }, &f);
  }
};

// Runs the tasks one after the other on the calling thread.
class SerialParallel final : public Parallel {
 public:
  void run(size_t n, void (*task)(void*, size_t), void* ctx) const override {
    for (size_t i = 0; i < n; ++i) task(ctx, i);
  }
};

// Floats aligned to 64 bytes (packed weights, scratch).
class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  explicit AlignedBuffer(size_t n) { resize(n); }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  AlignedBuffer(AlignedBuffer&& o) noexcept : p_(o.p_), n_(o.n_) { o.p_ = nullptr, o.n_ = 0; }
  AlignedBuffer& operator=(AlignedBuffer&& o) noexcept;
  ~AlignedBuffer();
  void resize(size_t n);  // contents are not kept
  float* data() { return p_; }
  const float* data() const { return p_; }
  size_t size() const { return n_; }

 private:
  float* p_ = nullptr;
  size_t n_ = 0;
};

// The activation y = min(max(v < 0 ? leaky * v : v, lo), hi) (WinogradConv's attributes leaky_alpha, clip_min,
// clip_max; leaky 1: none, 0: Relu) in the kernels' terms, reduced to the cheapest equivalent form.
inline Epilogue leaky_clip_epilogue(float leaky, float lo, float hi) {
  Epilogue e;
  const float inf = std::numeric_limits<float>::infinity();
  e.lo = lo;
  e.hi = hi;
  e.alpha = leaky;
  if (leaky == 1.0f) {
    e.act = (lo == -inf && hi == inf) ? Activation::kNone : Activation::kClip;
  } else if (leaky == 0.0f && lo <= 0.0f && hi == inf) {
    e.act = Activation::kRelu;  // relu(v) >= 0 >= lo
  } else if (leaky >= 0.0f && lo >= 0.0f) {
    e.act = Activation::kClip;  // v < 0 gives leaky * v <= 0 <= lo: clipped to lo either way
  } else {
    e.act = Activation::kLeakyRelu;  // leaky, then clip
  }
  return e;
}

// Activation applied to one float (reference semantics of Epilogue, used by the scalar paths).
inline float activate(float v, const Epilogue& e) {
  switch (e.act) {
    case Activation::kRelu: return v > 0.0f ? v : 0.0f;
    case Activation::kClip: return v < e.lo ? e.lo : (v > e.hi ? e.hi : v);
    case Activation::kLeakyRelu: {
      const float l = v < 0.0f ? v * e.alpha : v;
      return l < e.lo ? e.lo : (l > e.hi ? e.hi : l);
    }
    default: return v;
  }
}

}  // namespace conv
}  // namespace onnxcomp
