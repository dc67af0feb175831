// Training epilogues on CUDA: counter-based dropout, and BatchNorm (batch statistics) + dropout +
// residual add + ReLU, forward and backward (float32 and float64).
//
// The masks are those of the cpu backend (csrc/cpu/bn_act.cpp) and the Triton backend, element
// for element: element i = 64 b + 16 w + j of the contiguous tensor is kept when word w of
// Philox4x32-10(key = seed, counter = 16 b + j) is below the keep threshold. Each thread computes
// the four words of its element's counter and keeps one.
//
// bn_act_forward: (1) per (channel, split) sums of z - s and (z - s)^2 in double, where the shift
// s is the channel's first element (one pass, no cancellation worth the name while s lies within
// a few standard deviations of the mean, which a sample of the channel does); (2) one block per
// 256 channels merges the splits: mean, biased variance, and the per-channel affine mul / off;
// (3) an elementwise pass y = act(dropout(z mul + off) + residual).
// bn_act_backward: (1) per (channel, split) sums of d and d (z - mean), d = dropout(grad *
// relu'(y)), and the residual's gradient grad * relu'(y); (2) the merge: grad gamma, grad beta
// and the per-channel coefficients; (3) an elementwise pass grad_z = k (d - md - (z - mean) kz),
// recomputing d from the seed.
#include "cuda/common.cuh"
#include "cuda/kernels.cuh"

namespace posekernels {
namespace cuda {
namespace detail {
namespace {

constexpr uint32_t kPhiloxM0 = 0xD2511F53u, kPhiloxM1 = 0xCD9E8D57u;
constexpr uint32_t kPhiloxW0 = 0x9E3779B9u, kPhiloxW1 = 0xBB67AE85u;
constexpr size_t kReduceSmem = kWarps * sizeof(double);  // block_sum's scratch

// Whether element i survives: word (i / 16) % 4 of Philox(key, (i / 64) * 16 + i % 16) < thr.
__device__ __forceinline__ bool keep(uint64_t key, uint32_t thr, int64_t i) {
  const uint64_t u = static_cast<uint64_t>(i);
  const uint64_t ctr = (u >> 6) * 16u + (u & 15u);
  uint32_t c0 = static_cast<uint32_t>(ctr), c1 = static_cast<uint32_t>(ctr >> 32), c2 = 0, c3 = 0;
  uint32_t k0 = static_cast<uint32_t>(key), k1 = static_cast<uint32_t>(key >> 32);
#pragma unroll
  for (int round = 0; round < 10; ++round) {
    const uint32_t hi0 = __umulhi(kPhiloxM0, c0), lo0 = kPhiloxM0 * c0;
    const uint32_t hi1 = __umulhi(kPhiloxM1, c2), lo1 = kPhiloxM1 * c2;
    const uint32_t n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
    c1 = lo1;
    c3 = lo0;
    c0 = n0;
    c2 = n2;
    k0 += kPhiloxW0;
    k1 += kPhiloxW1;
  }
  const uint32_t w = static_cast<uint32_t>((u >> 4) & 3u);
  const uint32_t word = w == 0 ? c0 : (w == 1 ? c1 : (w == 2 ? c2 : c3));
  return word < thr;
}

// Sum of v over the block (every thread gets it); `red`: kWarps doubles of shared memory.
__device__ __forceinline__ double block_sum(double v, double* red) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();  // red may still be read by a previous call
  if (lane == 0) red[warp] = v;
  __syncthreads();
  double s = 0.0;
#pragma unroll
  for (int k = 0; k < kWarps; ++k) s += red[k];
  return s;
}

// The block's sums of a and b, stored by thread 0 as the pair out[0], out[1].
__device__ __forceinline__ void store_partials(double a, double b, double* red, double* out) {
  a = block_sum(a, red);
  b = block_sum(b, red);
  if (threadIdx.x == 0) {
    out[0] = a;
    out[1] = b;
  }
}

// Sums of the `splits` pairs at part[0..2 splits).
__device__ __forceinline__ void sum_partials(const double* part, int splits, double* a, double* b) {
  for (int s = 0; s < splits; ++s) {
    *a += part[2 * s];
    *b += part[2 * s + 1];
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) dropout_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t n,
                                                           uint64_t key, uint32_t thr, T scale) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * kThreads;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < n; i += step)
    y[i] = keep(key, thr, i) ? x[i] * scale : T(0);
}

// Position r = n L + l of channel c is element (n C + c) L + l.
__device__ __forceinline__ int64_t channel_offset(int64_t r, int64_t c, int64_t C, int64_t L) {
  return ((r / L) * C + c) * L + r % L;
}

// Grid (C, splits): part[(c * splits + s) * 2 + {0, 1}] = sums of z - shift, (z - shift)^2.
template <typename T>
__global__ void __launch_bounds__(kThreads) bn_stats_kernel(const T* __restrict__ z, int64_t C, int64_t L, int64_t M,
                                                            int64_t per, double* __restrict__ part) {
  double* red = reinterpret_cast<double*>(dynamic_smem());
  const int64_t c = blockIdx.y, s = blockIdx.x, splits = gridDim.x;
  const double shift = static_cast<double>(z[c * L]);
  const int64_t end = min(M, (s + 1) * per);
  double s1 = 0.0, s2 = 0.0;
  for (int64_t r = s * per + threadIdx.x; r < end; r += kThreads) {
    const double v = static_cast<double>(z[channel_offset(r, c, C, L)]) - shift;
    s1 += v;
    s2 += v * v;
  }
  store_partials(s1, s2, red, part + (c * splits + s) * 2);
}

// One thread per channel: mean, biased var (outputs, dtype T) and the affine coefficients.
template <typename T>
__global__ void __launch_bounds__(kThreads) bn_finish_stats_kernel(const T* __restrict__ z, const T* __restrict__ gamma,
                                                                   const T* __restrict__ beta, int64_t C, int64_t L,
                                                                   int64_t M, int splits, double eps,
                                                                   const double* __restrict__ part, T* __restrict__ mean,
                                                                   T* __restrict__ var, T* __restrict__ mul,
                                                                   T* __restrict__ off) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (c >= C) return;
  double s1 = 0.0, s2 = 0.0;
  sum_partials(part + c * splits * 2, splits, &s1, &s2);
  const double m = static_cast<double>(M);
  const double d = s1 / m;
  const double v = fmax(s2 / m - d * d, 0.0);
  const double mu = static_cast<double>(z[c * L]) + d;
  const double invstd = 1.0 / sqrt(v + eps);
  const double g = gamma ? static_cast<double>(gamma[c]) : 1.0;
  const double b = beta ? static_cast<double>(beta[c]) : 0.0;
  mean[c] = static_cast<T>(mu);
  var[c] = static_cast<T>(v);
  mul[c] = static_cast<T>(g * invstd);
  off[c] = static_cast<T>(b - mu * g * invstd);
}

template <typename T>
__global__ void __launch_bounds__(kThreads) bn_act_apply_kernel(const T* __restrict__ z, const T* __restrict__ res,
                                                                const T* __restrict__ mul, const T* __restrict__ off,
                                                                T* __restrict__ y, int64_t n, int64_t C, int64_t L,
                                                                bool dropout, uint64_t key, uint32_t thr, T scale,
                                                                bool relu) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * kThreads;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < n; i += step) {
    const int64_t c = (i / L) % C;
    T v = z[i] * mul[c] + off[c];
    if (dropout) v = keep(key, thr, i) ? v * scale : T(0);
    if (res) v += res[i];
    if (relu) v = v > T(0) ? v : T(0);
    y[i] = v;
  }
}

// (d, g) of element i: g = grad * relu'(y), d = dropout(g).
template <typename T>
__device__ __forceinline__ T grad_d(const T* gy, const T* y, int64_t i, bool relu, bool dropout, uint64_t key,
                                    uint32_t thr, T scale, T* g_out) {
  T g = gy[i];
  if (relu && !(y[i] > T(0))) g = T(0);
  *g_out = g;
  if (dropout) return keep(key, thr, i) ? g * scale : T(0);
  return g;
}

// Grid (C, splits): part[(c * splits + s) * 2 + {0, 1}] = sums of d and d (z - mean[c]); the
// residual's gradient where gres is not null.
template <typename T>
__global__ void __launch_bounds__(kThreads) bn_bwd_sums_kernel(const T* __restrict__ gy, const T* __restrict__ y,
                                                               const T* __restrict__ z, const T* __restrict__ mean,
                                                               int64_t C, int64_t L, int64_t M, int64_t per,
                                                               bool relu, bool dropout, uint64_t key, uint32_t thr,
                                                               T scale, T* __restrict__ gres,
                                                               double* __restrict__ part) {
  double* red = reinterpret_cast<double*>(dynamic_smem());
  const int64_t c = blockIdx.y, s = blockIdx.x, splits = gridDim.x;
  const T mu = mean[c];
  const int64_t end = min(M, (s + 1) * per);
  double sd = 0.0, sdz = 0.0;
  for (int64_t r = s * per + threadIdx.x; r < end; r += kThreads) {
    const int64_t i = channel_offset(r, c, C, L);
    T g;
    const T d = grad_d(gy, y, i, relu, dropout, key, thr, scale, &g);
    if (gres) gres[i] = g;
    sd += static_cast<double>(d);
    sdz += static_cast<double>(d * (z[i] - mu));
  }
  store_partials(sd, sdz, red, part + (c * splits + s) * 2);
}

// One thread per channel: grad gamma, grad beta (outputs) and k, md, kz (coef, 3 per channel).
template <typename T>
__global__ void __launch_bounds__(kThreads) bn_bwd_finish_kernel(const T* __restrict__ gamma, const T* __restrict__ var,
                                                                 int64_t C, int64_t M, int splits, double eps,
                                                                 const double* __restrict__ part,
                                                                 T* __restrict__ ggamma, T* __restrict__ gbeta,
                                                                 T* __restrict__ coef) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (c >= C) return;
  double sd = 0.0, sdz = 0.0;
  sum_partials(part + c * splits * 2, splits, &sd, &sdz);
  const double invstd = 1.0 / sqrt(static_cast<double>(var[c]) + eps);
  const double g = gamma ? static_cast<double>(gamma[c]) : 1.0;
  const double m = static_cast<double>(M);
  ggamma[c] = static_cast<T>(sdz * invstd);
  gbeta[c] = static_cast<T>(sd);
  coef[3 * c] = static_cast<T>(g * invstd);
  coef[3 * c + 1] = static_cast<T>(sd / m);
  coef[3 * c + 2] = static_cast<T>(invstd * invstd * sdz / m);
}

template <typename T>
__global__ void __launch_bounds__(kThreads) bn_bwd_apply_kernel(const T* __restrict__ gy, const T* __restrict__ y,
                                                                const T* __restrict__ z, const T* __restrict__ mean,
                                                                const T* __restrict__ coef, T* __restrict__ gz,
                                                                int64_t n, int64_t C, int64_t L, bool relu,
                                                                bool dropout, uint64_t key, uint32_t thr, T scale) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * kThreads;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < n; i += step) {
    const int64_t c = (i / L) % C;
    T g;
    const T d = grad_d(gy, y, i, relu, dropout, key, thr, scale, &g);
    gz[i] = coef[3 * c] * (d - coef[3 * c + 1] - (z[i] - mean[c]) * coef[3 * c + 2]);
  }
}

uint32_t keep_threshold(double p) {
  const double t = ldexp(1.0 - p, 32);
  return t >= 4294967295.0 ? 0xFFFFFFFFu : static_cast<uint32_t>(t);
}

// C <= 65535: the reductions put the channels on the grid's y axis.
bool sizes_ok(const BnActSizes& s) {
  return s.N >= 1 && s.C >= 1 && s.L >= 1 && s.N * s.L >= 2 && s.N < (1LL << 40) && s.C < 65536 &&
         s.L < (1LL << 40) && s.N * s.C * s.L < (1LL << 62);
}

// Splits of each channel's M positions: about two blocks per SM in all, at least 1,024
// positions per split.
Split channel_split(const BnActSizes& s, int sms) {
  const int64_t m = s.N * s.L;
  const int64_t chunks = (m + 1023) / 1024;
  const int units = static_cast<int>(chunks < (1 << 20) ? chunks : (1 << 20));
  Split sp = split_units(units, static_cast<int>(s.C < (1 << 30) ? s.C : (1 << 30)), sms);
  return sp;
}

struct BnPlan {
  Split split;
  int64_t per = 0;       // positions per split
  double* part = nullptr;
  void* coef = nullptr;  // forward: mul, off (2 C); backward: 3 C
};

template <typename T>
BnPlan plan_bn(const BnActSizes& s, int sms, Workspace* ws) {
  BnPlan p;
  p.split = channel_split(s, sms);
  const int64_t m = s.N * s.L;
  p.per = (m + p.split.splits - 1) / p.split.splits;
  p.part = ws->take<double>(2 * s.C * p.split.splits);
  p.coef = ws->take<T>(3 * s.C);
  return p;
}

// What both directions launch with: the device's SM count, the plan carved from the caller's
// workspace (checked to be large enough), the element counts and the dropout parameters.
template <typename T>
struct BnLaunch {
  int sms = 1;
  BnPlan plan;
  int64_t m = 0, n = 0;  // positions per channel, elements
  bool dropout = false;
  uint32_t thr = 0;
  T scale = T(1);
};

template <typename T>
cudaError_t prepare_bn(const BnActSizes& s, double p, void* workspace, size_t bytes, BnLaunch<T>* out) {
  DeviceLimits lim;
  POSEKERNELS_TRY(query_device(&lim));
  Workspace count;
  plan_bn<T>(s, lim.sms, &count);
  if (bytes < count.offset || (count.offset > 0 && workspace == nullptr)) return cudaErrorInvalidValue;
  Workspace ws{reinterpret_cast<uintptr_t>(workspace), 0};
  out->sms = lim.sms;
  out->plan = plan_bn<T>(s, lim.sms, &ws);
  out->m = s.N * s.L;
  out->n = out->m * s.C;
  out->dropout = p > 0.0;
  out->thr = out->dropout ? keep_threshold(p) : 0u;
  out->scale = static_cast<T>(1.0 / (1.0 - p));
  return cudaSuccess;
}

template <typename T>
cudaError_t forward_impl(const BnActSizes& s, const BnActForwardArgs& a, void* workspace, size_t bytes,
                         cudaStream_t stream) {
  BnLaunch<T> L;
  POSEKERNELS_TRY(prepare_bn<T>(s, a.p, workspace, bytes, &L));
  const BnPlan& p = L.plan;
  const T* z = static_cast<const T*>(a.z);
  T* mul = static_cast<T*>(p.coef);
  T* off = mul + s.C;
  const int64_t m = L.m, n = L.n;
  POSEKERNELS_TRY(launch_kernel(bn_stats_kernel<T>, dim3(p.split.splits, static_cast<unsigned>(s.C)), kThreads,
                                kReduceSmem, stream, z, s.C, s.L, m, p.per, p.part));
  POSEKERNELS_TRY(launch_kernel(bn_finish_stats_kernel<T>, dim3(static_cast<unsigned>((s.C + kThreads - 1) / kThreads)),
                                kThreads, 0, stream, z, static_cast<const T*>(a.weight), static_cast<const T*>(a.bias),
                                s.C, s.L, m, p.split.splits, a.eps, p.part, static_cast<T*>(a.mean),
                                static_cast<T*>(a.var), mul, off));
  return launch_kernel(bn_act_apply_kernel<T>, dim3(elementwise_blocks(n, L.sms)), kThreads, 0, stream, z,
                       static_cast<const T*>(a.residual), static_cast<const T*>(mul), static_cast<const T*>(off),
                       static_cast<T*>(a.y), n, s.C, s.L, L.dropout, a.seed, L.thr, L.scale, a.relu);
}

template <typename T>
cudaError_t backward_impl(const BnActSizes& s, const BnActBackwardArgs& a, void* workspace, size_t bytes,
                          cudaStream_t stream) {
  BnLaunch<T> L;
  POSEKERNELS_TRY(prepare_bn<T>(s, a.p, workspace, bytes, &L));
  const BnPlan& p = L.plan;
  const T* gy = static_cast<const T*>(a.grad_y);
  const T* y = static_cast<const T*>(a.y);
  const T* z = static_cast<const T*>(a.z);
  const T* mean = static_cast<const T*>(a.mean);
  T* coef = static_cast<T*>(p.coef);
  const int64_t m = L.m, n = L.n;
  POSEKERNELS_TRY(launch_kernel(bn_bwd_sums_kernel<T>, dim3(p.split.splits, static_cast<unsigned>(s.C)), kThreads,
                                kReduceSmem, stream, gy, y, z, mean, s.C, s.L, m, p.per, a.relu, L.dropout, a.seed, L.thr,
                                L.scale,
                                static_cast<T*>(a.grad_residual), p.part));
  POSEKERNELS_TRY(launch_kernel(bn_bwd_finish_kernel<T>, dim3(static_cast<unsigned>((s.C + kThreads - 1) / kThreads)),
                                kThreads, 0, stream, static_cast<const T*>(a.weight), static_cast<const T*>(a.var), s.C,
                                m, p.split.splits, a.eps, static_cast<const double*>(p.part),
                                static_cast<T*>(a.grad_weight), static_cast<T*>(a.grad_bias), coef));
  return launch_kernel(bn_bwd_apply_kernel<T>, dim3(elementwise_blocks(n, L.sms)), kThreads, 0, stream, gy, y, z,
                       mean, static_cast<const T*>(coef), static_cast<T*>(a.grad_z), n, s.C, s.L, a.relu, L.dropout,
                       a.seed, L.thr, L.scale);
}

}  // namespace
}  // namespace detail

cudaError_t dropout_apply(DType dtype, int64_t numel, const void* x, void* y, double p, uint64_t seed,
                          cudaStream_t stream) {
  using namespace detail;
  if (numel < 0 || !(p >= 0.0 && p < 1.0)) return cudaErrorInvalidValue;
  if (numel == 0) return cudaSuccess;
  if (dtype != DType::kFloat32 && dtype != DType::kFloat64) return cudaErrorInvalidValue;
  if (p == 0.0) {
    const size_t bytes = static_cast<size_t>(numel) * (dtype == DType::kFloat32 ? sizeof(float) : sizeof(double));
    return cudaMemcpyAsync(y, x, bytes, cudaMemcpyDeviceToDevice, stream);
  }
  DeviceLimits lim;
  POSEKERNELS_TRY(query_device(&lim));
  const dim3 grid(elementwise_blocks(numel, lim.sms));
  const uint32_t thr = keep_threshold(p);
  if (dtype == DType::kFloat32)
    return launch_kernel(dropout_kernel<float>, grid, kThreads, 0, stream, static_cast<const float*>(x),
                         static_cast<float*>(y), numel, seed, thr, static_cast<float>(1.0 / (1.0 - p)));
  if (dtype == DType::kFloat64)
    return launch_kernel(dropout_kernel<double>, grid, kThreads, 0, stream, static_cast<const double*>(x),
                         static_cast<double*>(y), numel, seed, thr, 1.0 / (1.0 - p));
  return cudaErrorInvalidValue;
}

cudaError_t bn_act_workspace_bytes(const BnActSizes& sizes, DType dtype, size_t* bytes) {
  using namespace detail;
  if (!sizes_ok(sizes) || (dtype != DType::kFloat32 && dtype != DType::kFloat64)) return cudaErrorInvalidValue;
  DeviceLimits lim;
  POSEKERNELS_TRY(query_device(&lim));
  Workspace count;
  if (dtype == DType::kFloat32)
    plan_bn<float>(sizes, lim.sms, &count);
  else
    plan_bn<double>(sizes, lim.sms, &count);
  *bytes = count.offset;
  return cudaSuccess;
}

cudaError_t bn_act_forward(const BnActSizes& sizes, DType dtype, const BnActForwardArgs& args, void* workspace,
                           size_t workspace_bytes, cudaStream_t stream) {
  using namespace detail;
  if (!sizes_ok(sizes) || !(args.p >= 0.0 && args.p < 1.0) || !(args.eps > 0.0)) return cudaErrorInvalidValue;
  if (dtype == DType::kFloat32) return forward_impl<float>(sizes, args, workspace, workspace_bytes, stream);
  if (dtype == DType::kFloat64) return forward_impl<double>(sizes, args, workspace, workspace_bytes, stream);
  return cudaErrorInvalidValue;
}

cudaError_t bn_act_backward(const BnActSizes& sizes, DType dtype, const BnActBackwardArgs& args, void* workspace,
                            size_t workspace_bytes, cudaStream_t stream) {
  using namespace detail;
  if (!sizes_ok(sizes) || !(args.p >= 0.0 && args.p < 1.0) || !(args.eps > 0.0)) return cudaErrorInvalidValue;
  if (dtype == DType::kFloat32) return backward_impl<float>(sizes, args, workspace, workspace_bytes, stream);
  if (dtype == DType::kFloat64) return backward_impl<double>(sizes, args, workspace, workspace_bytes, stream);
  return cudaErrorInvalidValue;
}

}  // namespace cuda
}  // namespace posekernels
