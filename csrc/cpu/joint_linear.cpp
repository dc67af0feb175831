// Per-joint linear map on the CPU: y[m, v, :] = x[m, v, :] @ W[v] + b[v], forward and backward.
//
// The usual shapes are tiny matrices (C = 96 -> D = 3) applied to many rows: the op is bound by
// memory traffic, and a BLAS call per joint would cost more than the arithmetic. So the rows are
// streamed once each by hand-written loops, with the weight held in whichever layout makes the
// innermost loop long and unit-stride:
//   - "dot" layout (D < C): W^T (V, D, C); y[d] is a length-C dot product, and the backward
//     updates gx and gW^T with length-C axpys;
//   - "axpy" layout (D >= C): W (V, C, D) as is; y accumulates length-D axpys.
// The backward makes one pass over (x, grad_y), writing gx and accumulating per-chunk partial
// gW / gb, which are summed at the end. The row loops are compiled for several vector widths.
#include "cpu/kernels.h"
#include "cpu/parallel.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include <algorithm>
#include <cstdint>

namespace posekernels::cpu {
namespace {

using OptTensor = std::optional<at::Tensor>;

// Multiply-adds (one (m, v) row costs C*D) below which a chunk is not worth a thread.
constexpr int64_t kMinMacsPerChunk = 1 << 15;

// The helpers must be inlined into each multi-versioned row loop to get its vector width.
#if defined(__GNUC__)
#define PK_INLINE inline __attribute__((always_inline))
#else
#define PK_INLINE inline
#endif

template <typename scalar_t>
PK_INLINE scalar_t dot(const scalar_t* a, const scalar_t* b, int64_t n) {
  scalar_t acc = 0;
#pragma omp simd reduction(+ : acc)
  for (int64_t i = 0; i < n; ++i) {
    acc += a[i] * b[i];
  }
  return acc;
}

template <typename scalar_t>
PK_INLINE void axpy(scalar_t alpha, const scalar_t* x, scalar_t* y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    y[i] += alpha * x[i];
  }
}

inline bool use_dot_layout(int64_t C, int64_t D) { return D < C; }

// Problem description shared by the row loops (raw contiguous buffers).
template <typename scalar_t>
struct JlRows {
  int64_t V, C, D;
  bool dot_layout;        // Wl (and gW) are W^T (V, D, C); else W (V, C, D)
  const scalar_t* x;      // (M, V, C)
  const scalar_t* Wl;
  const scalar_t* b;      // (V, D) or null
  const scalar_t* gy;     // (M, V, D) (backward)
  scalar_t* y;            // (M, V, D) (forward)
  scalar_t* gx;           // (M, V, C) (backward)
  scalar_t* gW;           // this chunk's partial, layout of Wl (backward)
  scalar_t* gb;           // this chunk's partial (V, D), or null (backward)
};

template <typename scalar_t>
PK_INLINE void forward_rows(const JlRows<scalar_t>& p, int64_t m0, int64_t m1) {
  const int64_t V = p.V, C = p.C, D = p.D;
  for (int64_t m = m0; m < m1; ++m) {
    for (int64_t v = 0; v < V; ++v) {
      const scalar_t* xr = p.x + (m * V + v) * C;
      scalar_t* yr = p.y + (m * V + v) * D;
      const scalar_t* br = p.b != nullptr ? p.b + v * D : nullptr;
      if (p.dot_layout) {
        const scalar_t* wv = p.Wl + v * D * C;
        for (int64_t d = 0; d < D; ++d) {
          yr[d] = dot(xr, wv + d * C, C) + (br != nullptr ? br[d] : scalar_t(0));
        }
      } else {
        const scalar_t* wv = p.Wl + v * C * D;
        for (int64_t d = 0; d < D; ++d) {
          yr[d] = br != nullptr ? br[d] : scalar_t(0);
        }
        for (int64_t c = 0; c < C; ++c) {
          axpy(xr[c], wv + c * D, yr, D);
        }
      }
    }
  }
}

// One pass over (x, grad_y): writes gx rows, accumulates the chunk's gW and gb.
template <typename scalar_t>
PK_INLINE void backward_rows(const JlRows<scalar_t>& p, int64_t m0, int64_t m1) {
  const int64_t V = p.V, C = p.C, D = p.D;
  for (int64_t m = m0; m < m1; ++m) {
    for (int64_t v = 0; v < V; ++v) {
      const scalar_t* xr = p.x + (m * V + v) * C;
      const scalar_t* gyr = p.gy + (m * V + v) * D;
      scalar_t* gxr = p.gx + (m * V + v) * C;
      if (p.dot_layout) {  // gx[c] = sum_d gy[d] W^T[v, d, c]; gW^T[v, d, :] += gy[d] x
        const scalar_t* wv = p.Wl + v * D * C;
        scalar_t* gwv = p.gW + v * D * C;
        // D unit-stride passes over the row (it stays in L1): each one vectorises over c.
        const scalar_t g0 = gyr[0];
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) {
          gxr[c] = g0 * wv[c];
        }
        for (int64_t d = 1; d < D; ++d) {
          axpy(gyr[d], wv + d * C, gxr, C);
        }
        for (int64_t d = 0; d < D; ++d) {
          axpy(gyr[d], xr, gwv + d * C, C);
        }
      } else {  // gx[c] = W[v, c, :] . gy; gW[v, c, :] += x[c] gy
        const scalar_t* wv = p.Wl + v * C * D;
        scalar_t* gwv = p.gW + v * C * D;
        for (int64_t c = 0; c < C; ++c) {
          gxr[c] = dot(gyr, wv + c * D, D);
          axpy(xr[c], gyr, gwv + c * D, D);
        }
      }
      if (p.gb != nullptr) {
        scalar_t* gbv = p.gb + v * D;
        for (int64_t d = 0; d < D; ++d) {
          gbv[d] += gyr[d];
        }
      }
    }
  }
}

// The row loops are compiled for several x86-64 levels (SSE2 baseline, AVX2+FMA, AVX-512) and
// the best one for the running CPU is picked at load time: the extension itself is built for the
// baseline, and these loops are where the wider vectors pay.
#if defined(__x86_64__) && defined(__GNUC__) && defined(__linux__)
#define PK_TARGET_CLONES __attribute__((target_clones("default", "arch=x86-64-v3", "arch=x86-64-v4")))
#else
#define PK_TARGET_CLONES
#endif

PK_TARGET_CLONES void forward_rows_impl(const JlRows<float>& p, int64_t m0, int64_t m1) {
  forward_rows(p, m0, m1);
}
PK_TARGET_CLONES void forward_rows_impl(const JlRows<double>& p, int64_t m0, int64_t m1) {
  forward_rows(p, m0, m1);
}
PK_TARGET_CLONES void backward_rows_impl(const JlRows<float>& p, int64_t m0, int64_t m1) {
  backward_rows(p, m0, m1);
}
PK_TARGET_CLONES void backward_rows_impl(const JlRows<double>& p, int64_t m0, int64_t m1) {
  backward_rows(p, m0, m1);
}

// The operands both directions share: sizes, layout, x and Wl (the rest stays null).
template <typename scalar_t>
JlRows<scalar_t> rows_of(const at::Tensor& x, const at::Tensor& Wl, int64_t D, bool dot_layout) {
  JlRows<scalar_t> p{};
  p.V = x.size(1);
  p.C = x.size(2);
  p.D = D;
  p.dot_layout = dot_layout;
  p.x = x.const_data_ptr<scalar_t>();
  p.Wl = Wl.const_data_ptr<scalar_t>();
  return p;
}

template <typename scalar_t>
void forward_kernel(const at::Tensor& x, const at::Tensor& Wl, const scalar_t* b, at::Tensor& y,
                    bool dot_layout) {
  const int64_t M = x.size(0), V = x.size(1), C = x.size(2), D = y.size(2);
  JlRows<scalar_t> p = rows_of<scalar_t>(x, Wl, D, dot_layout);
  p.b = b;
  p.y = y.mutable_data_ptr<scalar_t>();
  const int64_t grain = std::max<int64_t>(1, kMinMacsPerChunk / std::max<int64_t>(1, V * C * D));
  at::parallel_for(0, M, grain, [&](int64_t m0, int64_t m1) { forward_rows_impl(p, m0, m1); });
}

// Returns (gx, gW in the layout of Wl, gb or undefined).
template <typename scalar_t>
std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_kernel(const at::Tensor& grad_y,
                                                               const at::Tensor& x,
                                                               const at::Tensor& Wl,
                                                               bool has_bias, bool dot_layout) {
  const int64_t M = x.size(0), V = x.size(1), C = x.size(2), D = grad_y.size(2);
  const int64_t w_size = V * C * D;
  const int64_t b_size = has_bias ? V * D : 0;
  const int64_t partial = w_size + b_size;
  const int64_t chunks = chunk_count(M * V * C * D, kMinMacsPerChunk);
  at::Tensor gx = at::empty_like(x);
  at::Tensor partials = at::zeros({chunks, partial}, x.options());

  JlRows<scalar_t> base = rows_of<scalar_t>(x, Wl, D, dot_layout);
  base.gy = grad_y.const_data_ptr<scalar_t>();
  base.gx = gx.mutable_data_ptr<scalar_t>();
  scalar_t* partp = partials.mutable_data_ptr<scalar_t>();

  for_each_chunk(chunks, [&](int64_t chunk) {
    JlRows<scalar_t> p = base;
    p.gW = partp + chunk * partial;
    p.gb = has_bias ? p.gW + w_size : nullptr;
    backward_rows_impl(p, chunk_begin(chunk, chunks, M), chunk_begin(chunk + 1, chunks, M));
  });

  at::Tensor total = chunks == 1 ? partials[0] : partials.sum(0);
  at::Tensor gW = total.narrow(0, 0, w_size);
  at::Tensor gb = has_bias ? total.narrow(0, w_size, b_size).view({V, D}).clone() : at::Tensor();
  return {gx, gW, gb};
}

bool is_reduced(const at::Tensor& t) {
  return t.scalar_type() == at::kHalf || t.scalar_type() == at::kBFloat16;
}

}  // namespace

at::Tensor jl_forward(const at::Tensor& x, const at::Tensor& W, const OptTensor& b) {
  if (is_reduced(x)) {
    const OptTensor bf = b.has_value() ? OptTensor(b->to(at::kFloat)) : std::nullopt;
    return jl_forward(x.to(at::kFloat), W.to(at::kFloat), bf).to(x.scalar_type());
  }
  const int64_t M = x.size(0), V = x.size(1), C = x.size(2), D = W.size(2);
  const bool dot_layout = use_dot_layout(C, D);
  const at::Tensor Wl = dot_layout ? W.transpose(1, 2).contiguous() : W;
  at::Tensor y = at::empty({M, V, D}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "posekernels_jl_forward_cpu", [&] {
    const scalar_t* bp = b.has_value() ? b->const_data_ptr<scalar_t>() : nullptr;
    forward_kernel<scalar_t>(x, Wl, bp, y, dot_layout);
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> jl_backward(const at::Tensor& grad_y,
                                                           const at::Tensor& x,
                                                           const at::Tensor& W, bool has_bias) {
  if (is_reduced(x)) {
    const auto dtype = x.scalar_type();
    auto [gx, gW, gb] = jl_backward(grad_y.to(at::kFloat), x.to(at::kFloat), W.to(at::kFloat),
                                    has_bias);
    return {gx.to(dtype), gW.to(dtype), gb.to(dtype)};
  }
  const int64_t V = x.size(1), C = x.size(2), D = W.size(2);
  const bool dot_layout = use_dot_layout(C, D);
  const at::Tensor Wl = dot_layout ? W.transpose(1, 2).contiguous() : W;
  at::Tensor gx, gWl, gb;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "posekernels_jl_backward_cpu", [&] {
    std::tie(gx, gWl, gb) = backward_kernel<scalar_t>(grad_y, x, Wl, has_bias, dot_layout);
  });
  // Fresh storage for gW (.contiguous() of a transposed view could return the partials' view).
  at::Tensor gW = dot_layout ? gWl.view({V, D, C}).transpose(1, 2).clone(at::MemoryFormat::Contiguous)
                             : gWl.view({V, C, D}).clone();
  if (!has_bias) {
    gb = at::empty({0}, x.options());
  }
  return {gx, gW, gb};
}

}  // namespace posekernels::cpu
