// Per-joint linear map (jl): fused CUDA forward and backward kernels.
//
//   x (M, V, C), W (V, C, D), b (V, D):  y[m, v, :] = x[m, v, :] @ W[v] + b[v]   (M, V, D)
//
// The op is memory-bound (D is often 3): every kernel reads its big operand exactly once, in
// coalesced rows, and keeps the small weight in L1/L2.
//   jl_forward_kernel  a group of LPR lanes per (m, v) row (LPR in {4, 8, 16, 32} from C): each
//       lane strides over C, keeps 4 output columns in registers, and the group reduces them
//       with warp shuffles; grid-stride over rows, D handled in chunks of 4.
//   jl_gx_kernel       gx[r, c] = sum_d gy[r, d] W[v, c, d]: one thread per element (grid-stride).
//   jl_wgrad_kernel    grid (V * C chunks * D chunks * M splits): a block reduces its range of m
//       for one joint into gW[v, c-chunk, d-chunk] (and gb), groups of lanes over m, then a
//       shared-memory reduction and one fp32 (fp64) atomicAdd per element.
//   convert_kernel     fp32 scratch -> output dtype.
// All accumulation is fp32 (fp64 for float64).
#include "common.cuh"
#include "kernels.cuh"

#include <climits>

namespace posekernels {
namespace cuda {
namespace detail {
namespace {

struct JlArgs {
  int64_t rows;  // M * V
  int V, C, D;
};

template <typename T, int LPR>
__global__ void __launch_bounds__(kThreads) jl_forward_kernel(const T* __restrict__ x, const T* __restrict__ W,
                                                              const T* __restrict__ b, T* __restrict__ y,
                                                              const JlArgs a) {
  using AT = acc_t<T>;
  constexpr int kGroupsPerWarp = 32 / LPR;
  constexpr int kGroups = kThreads / LPR;
  const int lane = threadIdx.x % LPR;
  const int warp = threadIdx.x / 32;
  const int group_in_warp = (threadIdx.x % 32) / LPR;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kGroups;
  // r0 is the warp's first row: the loop (and the shuffles in it) stay warp-uniform.
  for (int64_t r0 = static_cast<int64_t>(blockIdx.x) * kGroups + warp * kGroupsPerWarp; r0 < a.rows; r0 += stride) {
    const int64_t r = r0 + group_in_warp;
    const bool valid = r < a.rows;
    const int v = valid ? static_cast<int>(r % a.V) : 0;
    const T* xr = x + (valid ? r : 0) * a.C;
    const T* wv = W + static_cast<int64_t>(v) * a.C * a.D;
    for (int d0 = 0; d0 < a.D; d0 += 4) {
      const int nd = min(4, a.D - d0);
      AT acc[4] = {AT(0), AT(0), AT(0), AT(0)};
      if (valid) {
        for (int c = lane; c < a.C; c += LPR) {
          const AT xv = to_acc(xr[c]);
          const T* wr = wv + static_cast<int64_t>(c) * a.D + d0;
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            if (j < nd) acc[j] += xv * to_acc(wr[j]);
          }
        }
      }
#pragma unroll
      for (int off = LPR / 2; off > 0; off >>= 1) {
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[j] += __shfl_xor_sync(0xffffffffu, acc[j], off, LPR);
      }
      if (valid && lane == 0) {
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          if (j < nd) {
            AT out = acc[j];
            if (b != nullptr) out += to_acc(b[static_cast<int64_t>(v) * a.D + d0 + j]);
            y[r * a.D + d0 + j] = Cast<T>::from(out);
          }
        }
      }
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) jl_gx_kernel(const T* __restrict__ gy, const T* __restrict__ W,
                                                         T* __restrict__ gx, const JlArgs a) {
  using AT = acc_t<T>;
  const int64_t total = a.rows * a.C;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < total; i += stride) {
    const int64_t r = i / a.C;
    const int c = static_cast<int>(i - r * a.C);
    const int v = static_cast<int>(r % a.V);
    const T* g = gy + r * a.D;
    const T* w = W + (static_cast<int64_t>(v) * a.C + c) * a.D;
    AT s = AT(0);
    for (int d = 0; d < a.D; ++d) s += to_acc(g[d]) * to_acc(w[d]);
    gx[i] = Cast<T>::from(s);
  }
}

struct JlWgradArgs {
  int64_t M;
  int V, C, D;
  int cwid, n_cchunks, n_dchunks, splits;
  int64_t per_split;  // rows m per block
};

template <typename T>
__global__ void __launch_bounds__(kThreads) jl_wgrad_kernel(const T* __restrict__ gy, const T* __restrict__ x,
                                                            acc_t<T>* __restrict__ gW, acc_t<T>* __restrict__ gb,
                                                            const JlWgradArgs a) {
  using AT = acc_t<T>;
  int blk = blockIdx.x;
  const int split = blk % a.splits;
  blk /= a.splits;
  const int dc = blk % a.n_dchunks;
  blk /= a.n_dchunks;
  const int cc = blk % a.n_cchunks;
  const int v = blk / a.n_cchunks;
  const int groups = kThreads / a.cwid;
  const int g = threadIdx.x / a.cwid;
  const int l = threadIdx.x - g * a.cwid;
  const int c = cc * a.cwid + l;
  const int d0 = dc * 4;
  const int nd = min(4, a.D - d0);
  const int64_t m_begin = split * a.per_split;
  const int64_t m_end = min(m_begin + a.per_split, a.M);
  const bool want_bias = gb != nullptr && cc == 0;

  AT acc[4] = {AT(0), AT(0), AT(0), AT(0)};
  AT bacc[4] = {AT(0), AT(0), AT(0), AT(0)};
  for (int64_t m = m_begin + g; m < m_end; m += groups) {
    const int64_t row = m * a.V + v;
    AT gv[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) gv[j] = j < nd ? to_acc(gy[row * a.D + d0 + j]) : AT(0);
    if (c < a.C) {
      const AT xv = to_acc(x[row * a.C + c]);
#pragma unroll
      for (int j = 0; j < 4; ++j) acc[j] += xv * gv[j];
    }
    if (want_bias && l == 0) {
#pragma unroll
      for (int j = 0; j < 4; ++j) bacc[j] += gv[j];
    }
  }
  AT* red = reinterpret_cast<AT*>(dynamic_smem());  // [4][kThreads] then [4][kThreads / 32] bias partials
  AT* bred = red + 4 * kThreads;
#pragma unroll
  for (int j = 0; j < 4; ++j) red[j * kThreads + threadIdx.x] = acc[j];
  if (l == 0) {
#pragma unroll
    for (int j = 0; j < 4; ++j) bred[j * (kThreads / 32) + g] = bacc[j];
  }
  __syncthreads();
  if (g == 0 && c < a.C) {
    for (int j = 0; j < nd; ++j) {
      AT s = AT(0);
      for (int gg = 0; gg < groups; ++gg) s += red[j * kThreads + gg * a.cwid + l];
      atomic_add(gW + (static_cast<int64_t>(v) * a.C + c) * a.D + d0 + j, s);
    }
  }
  if (want_bias && threadIdx.x == 0) {
    for (int j = 0; j < nd; ++j) {
      AT s = AT(0);
      for (int gg = 0; gg < groups; ++gg) s += bred[j * (kThreads / 32) + gg];
      atomic_add(gb + static_cast<int64_t>(v) * a.D + d0 + j, s);
    }
  }
}

inline bool fits_int(int64_t v) { return v >= 0 && v <= INT_MAX; }

inline cudaError_t check_sizes(const JlSizes& s) {
  if (s.M < 1 || s.V < 1 || s.C < 1 || s.D < 1) return cudaErrorInvalidValue;
  if (!fits_int(s.V) || !fits_int(s.C) || !fits_int(s.D) || s.M > (INT64_MAX / 4) / (s.V * (s.C > s.D ? s.C : s.D))) {
    return cudaErrorInvalidValue;
  }
  return cudaSuccess;
}

template <typename T>
cudaError_t jl_forward_t(const JlSizes& s, const void* x, const void* W, const void* b, void* y,
                         const DeviceLimits& lim, cudaStream_t stream) {
  JlArgs a{s.M * s.V, static_cast<int>(s.V), static_cast<int>(s.C), static_cast<int>(s.D)};
  const T* xp = static_cast<const T*>(x);
  const T* wp = static_cast<const T*>(W);
  const T* bp = static_cast<const T*>(b);
  T* yp = static_cast<T*>(y);
  auto blocks = [&](int lpr) {
    const int64_t groups = kThreads / lpr;
    int64_t n = (a.rows + groups - 1) / groups;
    const int64_t cap = 8LL * lim.sms;
    return static_cast<unsigned>(n < cap ? n : cap);
  };
  if (a.C >= 128) return launch_kernel(jl_forward_kernel<T, 32>, dim3(blocks(32)), kThreads, 0, stream, xp, wp, bp, yp, a);
  if (a.C >= 48) return launch_kernel(jl_forward_kernel<T, 16>, dim3(blocks(16)), kThreads, 0, stream, xp, wp, bp, yp, a);
  if (a.C >= 16) return launch_kernel(jl_forward_kernel<T, 8>, dim3(blocks(8)), kThreads, 0, stream, xp, wp, bp, yp, a);
  return launch_kernel(jl_forward_kernel<T, 4>, dim3(blocks(4)), kThreads, 0, stream, xp, wp, bp, yp, a);
}

struct JlPlan {
  JlWgradArgs w{};
  int64_t gw_count = 0, gb_count = 0;
  size_t smem = 0;
  int64_t blocks = 0;
};

inline JlPlan jl_plan(const JlSizes& s, const DeviceLimits& lim, size_t acc_size) {
  JlPlan p;
  p.w.M = s.M;
  p.w.V = static_cast<int>(s.V);
  p.w.C = static_cast<int>(s.C);
  p.w.D = static_cast<int>(s.D);
  p.w.cwid = s.C <= 32 ? 32 : s.C <= 64 ? 64 : s.C <= 128 ? 128 : 256;
  p.w.n_cchunks = static_cast<int>((s.C + p.w.cwid - 1) / p.w.cwid);
  p.w.n_dchunks = static_cast<int>((s.D + 3) / 4);
  const int64_t others = s.V * p.w.n_cchunks * p.w.n_dchunks;
  // about four blocks per SM, but at least 64 rows m per block
  int64_t splits = (4LL * lim.sms + others - 1) / others;
  const int64_t max_splits = (s.M + 63) / 64;
  if (splits > max_splits) splits = max_splits;
  if (splits < 1) splits = 1;
  p.w.per_split = (s.M + splits - 1) / splits;
  p.w.splits = static_cast<int>((s.M + p.w.per_split - 1) / p.w.per_split);
  p.blocks = others * p.w.splits;
  p.gw_count = s.V * s.C * s.D;
  p.gb_count = s.V * s.D;
  p.smem = (4 * kThreads + 4 * (kThreads / 32)) * acc_size;
  return p;
}

template <typename T>
cudaError_t jl_backward_t(const JlSizes& s, const void* grad_y, const void* x, const void* W, bool has_bias, void* gx,
                          void* gW, void* gb, Workspace& ws, const DeviceLimits& lim, bool launch,
                          cudaStream_t stream) {
  using AT = acc_t<T>;
  const JlPlan p = jl_plan(s, lim, sizeof(AT));
  if (!fits_int(p.blocks)) return cudaErrorInvalidValue;
  AT* gW32 = ws.take<AT>(p.gw_count);
  AT* gb32 = has_bias ? ws.take<AT>(p.gb_count) : nullptr;
  if (!launch) return cudaSuccess;
  if (gx == nullptr || gW == nullptr || (has_bias && gb == nullptr)) return cudaErrorInvalidValue;
  const T* gyp = static_cast<const T*>(grad_y);
  const T* xp = static_cast<const T*>(x);
  const JlArgs a{s.M * s.V, static_cast<int>(s.V), static_cast<int>(s.C), static_cast<int>(s.D)};
  POSEKERNELS_TRY(launch_kernel(jl_gx_kernel<T>, dim3(elementwise_blocks(a.rows * a.C, lim.sms)), kThreads, 0, stream,
                                gyp, static_cast<const T*>(W), static_cast<T*>(gx), a));
  POSEKERNELS_TRY(cudaMemsetAsync(gW32, 0, p.gw_count * sizeof(AT), stream));
  if (gb32 != nullptr) POSEKERNELS_TRY(cudaMemsetAsync(gb32, 0, p.gb_count * sizeof(AT), stream));
  POSEKERNELS_TRY(launch_kernel(jl_wgrad_kernel<T>, dim3(static_cast<unsigned>(p.blocks)), kThreads, p.smem, stream,
                                gyp, xp, gW32, gb32, p.w));
  POSEKERNELS_TRY(launch_kernel(convert_kernel<T>, dim3(elementwise_blocks(p.gw_count, lim.sms)), kThreads, 0, stream,
                                static_cast<const AT*>(gW32), static_cast<T*>(gW), p.gw_count, p.gw_count));
  if (gb32 != nullptr) {
    POSEKERNELS_TRY(launch_kernel(convert_kernel<T>, dim3(elementwise_blocks(p.gb_count, lim.sms)), kThreads, 0,
                                  stream, static_cast<const AT*>(gb32), static_cast<T*>(gb), p.gb_count, p.gb_count));
  }
  return cudaSuccess;
}

template <typename... Args>
cudaError_t jl_backward_dispatch(DType dtype, Args&&... args) {
  switch (dtype) {
    case DType::kFloat32: return jl_backward_t<float>(std::forward<Args>(args)...);
    case DType::kFloat64: return jl_backward_t<double>(std::forward<Args>(args)...);
    case DType::kFloat16: return jl_backward_t<__half>(std::forward<Args>(args)...);
    case DType::kBFloat16: return jl_backward_t<__nv_bfloat16>(std::forward<Args>(args)...);
  }
  return cudaErrorInvalidValue;
}

}  // namespace
}  // namespace detail

cudaError_t jl_forward(const JlSizes& sizes, DType dtype, const void* x, const void* W, const void* b, void* y,
                       cudaStream_t stream) {
  using namespace detail;
  POSEKERNELS_TRY(check_sizes(sizes));
  DeviceLimits lim;
  POSEKERNELS_TRY(query_device(&lim));
  switch (dtype) {
    case DType::kFloat32: return jl_forward_t<float>(sizes, x, W, b, y, lim, stream);
    case DType::kFloat64: return jl_forward_t<double>(sizes, x, W, b, y, lim, stream);
    case DType::kFloat16: return jl_forward_t<__half>(sizes, x, W, b, y, lim, stream);
    case DType::kBFloat16: return jl_forward_t<__nv_bfloat16>(sizes, x, W, b, y, lim, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t jl_backward_workspace_bytes(const JlSizes& sizes, DType dtype, bool has_bias, size_t* bytes) {
  using namespace detail;
  if (bytes == nullptr) return cudaErrorInvalidValue;
  POSEKERNELS_TRY(check_sizes(sizes));
  DeviceLimits lim;
  POSEKERNELS_TRY(query_device(&lim));
  Workspace probe;
  POSEKERNELS_TRY(jl_backward_dispatch(dtype, sizes, nullptr, nullptr, nullptr, has_bias, nullptr, nullptr, nullptr,
                                       probe, lim, false, nullptr));
  *bytes = probe.offset;
  return cudaSuccess;
}

cudaError_t jl_backward(const JlSizes& sizes, DType dtype, const void* grad_y, const void* x, const void* W,
                        bool has_bias, void* gx, void* gW, void* gb, void* workspace, size_t workspace_bytes,
                        cudaStream_t stream) {
  using namespace detail;
  POSEKERNELS_TRY(check_sizes(sizes));
  DeviceLimits lim;
  POSEKERNELS_TRY(query_device(&lim));
  Workspace probe;
  POSEKERNELS_TRY(jl_backward_dispatch(dtype, sizes, grad_y, x, W, has_bias, gx, gW, gb, probe, lim, false, stream));
  if (probe.offset > workspace_bytes || workspace == nullptr) return cudaErrorInvalidValue;
  Workspace ws;
  ws.base = reinterpret_cast<uintptr_t>(workspace);
  return jl_backward_dispatch(dtype, sizes, grad_y, x, W, has_bias, gx, gW, gb, ws, lim, true, stream);
}

}  // namespace cuda
}  // namespace posekernels
