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
// gW / gb, which are summed at the end.
#include "cpu/kernels.h"
#include "cpu/parallel.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include <algorithm>
#include <cstdint>

namespace posekernels::cpu {
namespace {

using OptTensor = std::optional<at::Tensor>;

// Rows of work (one (m, v) row costs C*D multiply-adds) below which a chunk is not worth a thread.
constexpr int64_t kMinMacsPerChunk = 1 << 15;

template <typename scalar_t>
inline scalar_t dot(const scalar_t* a, const scalar_t* b, int64_t n) {
  scalar_t acc = 0;
#pragma omp simd reduction(+ : acc)
  for (int64_t i = 0; i < n; ++i) {
    acc += a[i] * b[i];
  }
  return acc;
}

template <typename scalar_t>
inline void axpy(scalar_t alpha, const scalar_t* x, scalar_t* y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    y[i] += alpha * x[i];
  }
}

inline bool use_dot_layout(int64_t C, int64_t D) { return D < C; }

template <typename scalar_t>
void forward_kernel(const at::Tensor& x, const at::Tensor& Wl, const scalar_t* b, at::Tensor& y,
                    bool dot_layout) {
  const int64_t M = x.size(0), V = x.size(1), C = x.size(2), D = y.size(2);
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  const scalar_t* wp = Wl.const_data_ptr<scalar_t>();
  scalar_t* yp = y.mutable_data_ptr<scalar_t>();
  const int64_t grain = std::max<int64_t>(1, kMinMacsPerChunk / std::max<int64_t>(1, V * C * D));
  at::parallel_for(0, M, grain, [&](int64_t m0, int64_t m1) {
    for (int64_t m = m0; m < m1; ++m) {
      for (int64_t v = 0; v < V; ++v) {
        const scalar_t* xr = xp + (m * V + v) * C;
        scalar_t* yr = yp + (m * V + v) * D;
        const scalar_t* br = b != nullptr ? b + v * D : nullptr;
        if (dot_layout) {  // Wl = W^T (V, D, C)
          const scalar_t* wv = wp + v * D * C;
          for (int64_t d = 0; d < D; ++d) {
            yr[d] = dot(xr, wv + d * C, C) + (br != nullptr ? br[d] : scalar_t(0));
          }
        } else {  // Wl = W (V, C, D)
          const scalar_t* wv = wp + v * C * D;
          for (int64_t d = 0; d < D; ++d) {
            yr[d] = br != nullptr ? br[d] : scalar_t(0);
          }
          for (int64_t c = 0; c < C; ++c) {
            axpy(xr[c], wv + c * D, yr, D);
          }
        }
      }
    }
  });
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

  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  const scalar_t* gyp = grad_y.const_data_ptr<scalar_t>();
  const scalar_t* wp = Wl.const_data_ptr<scalar_t>();
  scalar_t* gxp = gx.mutable_data_ptr<scalar_t>();
  scalar_t* partp = partials.mutable_data_ptr<scalar_t>();

  for_each_chunk(chunks, [&](int64_t chunk) {
    scalar_t* gw = partp + chunk * partial;
    scalar_t* gb = gw + w_size;
    const int64_t m_end = chunk_begin(chunk + 1, chunks, M);
    for (int64_t m = chunk_begin(chunk, chunks, M); m < m_end; ++m) {
      for (int64_t v = 0; v < V; ++v) {
        const scalar_t* xr = xp + (m * V + v) * C;
        const scalar_t* gyr = gyp + (m * V + v) * D;
        scalar_t* gxr = gxp + (m * V + v) * C;
        if (dot_layout) {  // Wl, gw: (V, D, C)
          const scalar_t* wv = wp + v * D * C;
          scalar_t* gwv = gw + v * D * C;
          std::fill(gxr, gxr + C, scalar_t(0));
          for (int64_t d = 0; d < D; ++d) {
            axpy(gyr[d], wv + d * C, gxr, C);
            axpy(gyr[d], xr, gwv + d * C, C);
          }
        } else {  // Wl, gw: (V, C, D)
          const scalar_t* wv = wp + v * C * D;
          scalar_t* gwv = gw + v * C * D;
          for (int64_t c = 0; c < C; ++c) {
            gxr[c] = dot(gyr, wv + c * D, D);
            axpy(xr[c], gyr, gwv + c * D, D);
          }
        }
        if (has_bias) {
          scalar_t* gbv = gb + v * D;
          for (int64_t d = 0; d < D; ++d) {
            gbv[d] += gyr[d];
          }
        }
      }
    }
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
  at::Tensor gW = dot_layout ? gWl.view({V, D, C}).transpose(1, 2).contiguous()
                             : gWl.view({V, C, D}).clone();
  if (!has_bias) {
    gb = at::empty({0}, x.options());
  }
  return {gx, gW, gb};
}

}  // namespace posekernels::cpu
