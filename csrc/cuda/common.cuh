// Device-side building blocks shared by the CUDA kernels of posekernels (agc.cu, joint_linear.cu).
//
// Only CUDA headers are included: this file is compiled by nvcc alone, never by the host C++
// compiler, and never sees a torch header.
//
// Conventions used by every kernel:
//  * blocks of kThreads = 256 threads (8 warps);
//  * all shared memory is dynamic and carved by a layout struct that the host evaluates with a
//    null base to get the byte count (so kernel and launcher can never disagree on the size);
//  * element type T in {float, double, __half, __nv_bfloat16}; accumulation type acc_t<T> is
//    double for double and float otherwise;
//  * GEMM operands live in shared memory as gemm_t<T, MMA>: T itself when the tile product runs
//    on tensor cores (MMA, 16-bit types only, sm_80+), acc_t<T> on the SIMT path.
#pragma once

#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>

#include <cstdint>
#include <cstdlib>
#include <type_traits>
#include <utility>

// WMMA for bf16 needs sm_80. The host pass (no __CUDA_ARCH__) always sees the MMA code; device
// passes for older architectures get a trapping stub (the launchers never pick MMA there).
#if !defined(__CUDA_ARCH__) || (__CUDA_ARCH__ >= 800)
#define POSEKERNELS_HAS_MMA 1
#else
#define POSEKERNELS_HAS_MMA 0
#endif

namespace posekernels {
namespace cuda {
namespace detail {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kMaxRowFrags = 6;  // a tile product covers at most 6 * 16 = 96 rows

// ------------------------------------------------------------------------------------------
// types and conversions

template <typename T> struct AccOf { using type = float; };
template <> struct AccOf<double> { using type = double; };
template <typename T> using acc_t = typename AccOf<T>::type;

template <typename T> struct Is16Bit : std::false_type {};
template <> struct Is16Bit<__half> : std::true_type {};
template <> struct Is16Bit<__nv_bfloat16> : std::true_type {};

template <typename T, bool MMA> using gemm_t = typename std::conditional<MMA, T, acc_t<T>>::type;

__device__ __forceinline__ float to_acc(float v) { return v; }
__device__ __forceinline__ double to_acc(double v) { return v; }
__device__ __forceinline__ float to_acc(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename D> struct Cast;
template <> struct Cast<float> {
  __device__ __forceinline__ static float from(float v) { return v; }
  __device__ __forceinline__ static float from(double v) { return static_cast<float>(v); }
};
template <> struct Cast<double> {
  __device__ __forceinline__ static double from(float v) { return static_cast<double>(v); }
  __device__ __forceinline__ static double from(double v) { return v; }
};
template <> struct Cast<__half> {
  __device__ __forceinline__ static __half from(float v) { return __float2half_rn(v); }
  __device__ __forceinline__ static __half from(double v) { return __float2half_rn(static_cast<float>(v)); }
};
template <> struct Cast<__nv_bfloat16> {
  __device__ __forceinline__ static __nv_bfloat16 from(float v) { return __float2bfloat16_rn(v); }
  __device__ __forceinline__ static __nv_bfloat16 from(double v) {
    return __float2bfloat16_rn(static_cast<float>(v));
  }
};

// Any element type to any element type through the accumulation type.
template <typename D, typename S>
__device__ __forceinline__ D convert(S v) {
  return Cast<D>::from(to_acc(v));
}
template <typename D>
__device__ __forceinline__ D zero_of() {
  return Cast<D>::from(0.0f);
}

__device__ __forceinline__ float exp_acc(float v) { return expf(v); }
__device__ __forceinline__ double exp_acc(double v) { return exp(v); }

__device__ __forceinline__ void atomic_add(float* p, float v) { atomicAdd(p, v); }
__device__ __forceinline__ void atomic_add(double* p, double v) { atomicAdd(p, v); }

__host__ __device__ constexpr int round_up(int v, int m) { return (v + m - 1) / m * m; }
__host__ __device__ constexpr int ceil_div(int v, int m) { return (v + m - 1) / m; }

// Leading dimension of a shared GEMM operand with `cols` columns: tensor-core loads need a
// multiple of 8 elements (16 bytes); the +8 skews rows across banks. The SIMT path reads
// column-major operands down a column, so an odd stride keeps those reads conflict-free.
template <bool MMA>
__host__ __device__ constexpr int operand_ld(int cols) {
  return MMA ? round_up(cols, 8) + 8 : (round_up(cols, 2) + 1);
}

// ------------------------------------------------------------------------------------------
// shared-memory carving (evaluated on the host with base 0 to size the allocation)

struct SmemCarver {
  uintptr_t base;
  size_t offset = 0;
  __host__ __device__ explicit SmemCarver(void* b) : base(reinterpret_cast<uintptr_t>(b)) {}
  template <typename U>
  __host__ __device__ U* take(int64_t count) {
    offset = (offset + 127) & ~static_cast<size_t>(127);
    U* p = reinterpret_cast<U*>(base + offset);
    offset += static_cast<size_t>(count) * sizeof(U);
    return p;
  }
  __host__ __device__ size_t bytes() const { return (offset + 127) & ~static_cast<size_t>(127); }
};

__device__ __forceinline__ unsigned char* dynamic_smem() {
  extern __shared__ __align__(128) unsigned char posekernels_smem[];
  return posekernels_smem;
}

// ------------------------------------------------------------------------------------------
// cooperative loads (all threads of the block call these)

// dst[r * ldd + c] for r < rows_alloc, c < cols_alloc; the value is src[r * rs + c * cs]
// converted to D when r < rows and c < cols, else zero. src is not dereferenced outside that.
template <typename D, typename S>
__device__ __forceinline__ void load_tile(D* dst, int ldd, int rows_alloc, int cols_alloc, const S* src,
                                          int64_t rs, int64_t cs, int rows, int cols) {
  const int total = rows_alloc * cols_alloc;
  for (int idx = threadIdx.x; idx < total; idx += kThreads) {
    const int r = idx / cols_alloc;
    const int c = idx - r * cols_alloc;
    D v = zero_of<D>();
    if (r < rows && c < cols) v = convert<D>(src[r * rs + c * cs]);
    dst[r * ldd + c] = v;
  }
}

template <typename D>
__device__ __forceinline__ void fill_zero(D* dst, int count) {
  for (int i = threadIdx.x; i < count; i += kThreads) dst[i] = zero_of<D>();
}

// Stage one (V x V) graph matrix into shared memory with rows padded to vp4 = round_up(V, 4)
// (zeros in the padding): dst[v * vp4 + w] = src[v * V + w], or src[w * V + v] when transpose.
template <typename AT, typename S>
__device__ __forceinline__ void load_graph(AT* dst, const S* src, int V, int vp4, bool transpose) {
  const int total = V * vp4;
  for (int idx = threadIdx.x; idx < total; idx += kThreads) {
    const int v = idx / vp4;
    const int w = idx - v * vp4;
    AT val = AT(0);
    if (w < V) val = convert<AT>(transpose ? src[w * V + v] : src[v * V + w]);
    dst[idx] = val;
  }
}

// ------------------------------------------------------------------------------------------
// joint aggregation of one (row, frame): out[w] = sum_v in[v] * g[v * vp4 + w] for w < V.
// g is a padded (V x vp4) graph in shared memory; every thread of a warp walks the same (v, w),
// so its reads of g are broadcasts. Returns sum_w out[w] (before the cast).

template <typename AT> struct Vec4;
template <> struct Vec4<float> {
  __device__ __forceinline__ static void load(const float* p, float& a, float& b, float& c, float& d) {
    const float4 q = *reinterpret_cast<const float4*>(p);
    a = q.x; b = q.y; c = q.z; d = q.w;
  }
};
template <> struct Vec4<double> {
  __device__ __forceinline__ static void load(const double* p, double& a, double& b, double& c, double& d) {
    const double2 q0 = *reinterpret_cast<const double2*>(p);
    const double2 q1 = *reinterpret_cast<const double2*>(p + 2);
    a = q0.x; b = q0.y; c = q1.x; d = q1.y;
  }
};

template <typename AT, typename OT>
__device__ __forceinline__ AT aggregate_frame(OT* out, const AT* in, const AT* g, int vp4, int V) {
  AT total = AT(0);
  for (int w0 = 0; w0 < V; w0 += 4) {
    AT a0 = AT(0), a1 = AT(0), a2 = AT(0), a3 = AT(0);
    for (int v = 0; v < V; ++v) {
      const AT xv = in[v];
      AT m0, m1, m2, m3;
      Vec4<AT>::load(g + v * vp4 + w0, m0, m1, m2, m3);  // w0 + 3 < vp4: inside the padded row
      a0 += xv * m0;
      a1 += xv * m1;
      a2 += xv * m2;
      a3 += xv * m3;
    }
    out[w0] = Cast<OT>::from(a0);
    total += a0;
    if (w0 + 1 < V) { out[w0 + 1] = Cast<OT>::from(a1); total += a1; }
    if (w0 + 2 < V) { out[w0 + 2] = Cast<OT>::from(a2); total += a2; }
    if (w0 + 3 < V) { out[w0 + 3] = Cast<OT>::from(a3); total += a3; }
  }
  return total;
}

// The transposed product of one (row, frame): out[v] = sum_w in[w] * g[v * vp4 + w] for v < V.
// Returns sum_v out[v] (before the cast). Reads of g are broadcasts as in aggregate_frame.
template <typename AT, typename OT>
__device__ __forceinline__ AT aggregate_frame_t(OT* out, const AT* in, const AT* g, int vp4, int V) {
  AT total = AT(0);
  for (int v = 0; v < V; ++v) {
    const AT* gr = g + v * vp4;
    AT a0 = AT(0), a1 = AT(0), a2 = AT(0), a3 = AT(0);
    int w = 0;
    for (; w + 4 <= V; w += 4) {
      AT m0, m1, m2, m3;
      Vec4<AT>::load(gr + w, m0, m1, m2, m3);
      a0 += in[w] * m0;
      a1 += in[w + 1] * m1;
      a2 += in[w + 2] * m2;
      a3 += in[w + 3] * m3;
    }
    for (; w < V; ++w) a0 += in[w] * gr[w];
    const AT s = (a0 + a1) + (a2 + a3);
    out[v] = Cast<OT>::from(s);
    total += s;
  }
  return total;
}

// out[r * ldo + t * V + w] = sum_v in[r * ldi + t * V + v] * g[v][w] for r < rows, t < frames.
template <typename AT, typename OT>
__device__ __forceinline__ void aggregate_rows(OT* out, int ldo, const AT* in, int ldi, const AT* g, int vp4,
                                               int rows, int frames, int V) {
  const int pairs = rows * frames;
  for (int q = threadIdx.x; q < pairs; q += kThreads) {
    const int r = q % rows;
    const int t = q / rows;
    aggregate_frame(out + r * ldo + t * V, in + r * ldi + t * V, g, vp4, V);
  }
}

// ------------------------------------------------------------------------------------------
// Block tile product: acc[R x NC] += A[R x 16] * B[16 x NC], R = 16 * rf <= 96 rows,
// NC = 16 * cf <= 128 * CPW columns, over one reduction chunk of depth 16 per call.
//   A: shared, row-major, element (i, k) at A[i * lda + k];
//   B: shared, element (k, j) at B[k * ldb + j] (row-major) or B[j * ldb + k] (BCOL).
// for_each(rf, cf, stage, f) calls f(row, col, value) once for every row < 16 rf, col < 16 cf;
// `stage` is kWarps * 256 floats of shared memory (used by the MMA variant only).

template <typename CT, typename AT, bool MMA, int CPW, bool BCOL> struct TileAcc;

// SIMT: thread (ty, tx) = (tid / 16, tid % 16) owns rows ty + 16 i and columns tx + 16 j.
template <typename CT, typename AT, int CPW, bool BCOL>
struct TileAcc<CT, AT, false, CPW, BCOL> {
  static constexpr int kCols = 8 * CPW;
  AT c[kMaxRowFrags][kCols];

  __device__ __forceinline__ void zero() {
#pragma unroll
    for (int i = 0; i < kMaxRowFrags; ++i)
#pragma unroll
      for (int j = 0; j < kCols; ++j) c[i][j] = AT(0);
  }

  __device__ __forceinline__ void mma16(const CT* A, int lda, const CT* B, int ldb, int rf, int cf) {
    const int tx = threadIdx.x & 15;
    const int ty = threadIdx.x >> 4;
#pragma unroll 2
    for (int kk = 0; kk < 16; ++kk) {
      AT a[kMaxRowFrags];
      AT b[kCols];
#pragma unroll
      for (int i = 0; i < kMaxRowFrags; ++i) a[i] = (i < rf) ? AT(A[(ty + 16 * i) * lda + kk]) : AT(0);
#pragma unroll
      for (int j = 0; j < kCols; ++j) {
        b[j] = AT(0);
        if (j < cf) b[j] = AT(BCOL ? B[(tx + 16 * j) * ldb + kk] : B[kk * ldb + tx + 16 * j]);
      }
#pragma unroll
      for (int i = 0; i < kMaxRowFrags; ++i) {
        if (i < rf) {
#pragma unroll
          for (int j = 0; j < kCols; ++j) c[i][j] += a[i] * b[j];
        }
      }
    }
  }

  template <typename F>
  __device__ __forceinline__ void for_each(int rf, int cf, float* /*stage*/, F&& f) {
    const int tx = threadIdx.x & 15;
    const int ty = threadIdx.x >> 4;
#pragma unroll
    for (int i = 0; i < kMaxRowFrags; ++i) {
      if (i < rf) {
#pragma unroll
        for (int j = 0; j < kCols; ++j) {
          if (j < cf) f(ty + 16 * i, tx + 16 * j, c[i][j]);
        }
      }
    }
  }
};

#if POSEKERNELS_HAS_MMA
// Tensor cores (WMMA m16n16k16, 16-bit operands, fp32 accumulators): warp w owns the column
// fragments w * CPW + jj (jj < CPW) of every row fragment.
template <typename CT, int CPW, bool BCOL>
struct TileAcc<CT, float, true, CPW, BCOL> {
  using BLayout = typename std::conditional<BCOL, nvcuda::wmma::col_major, nvcuda::wmma::row_major>::type;
  nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 16, float> c[kMaxRowFrags][CPW];

  __device__ __forceinline__ void zero() {
#pragma unroll
    for (int i = 0; i < kMaxRowFrags; ++i)
#pragma unroll
      for (int j = 0; j < CPW; ++j) nvcuda::wmma::fill_fragment(c[i][j], 0.0f);
  }

  __device__ __forceinline__ void mma16(const CT* A, int lda, const CT* B, int ldb, int rf, int cf) {
    using namespace nvcuda;
    const int warp = threadIdx.x >> 5;
    wmma::fragment<wmma::matrix_b, 16, 16, 16, CT, BLayout> b[CPW];
#pragma unroll
    for (int jj = 0; jj < CPW; ++jj) {
      const int cfi = warp * CPW + jj;
      if (cfi < cf) wmma::load_matrix_sync(b[jj], BCOL ? B + 16 * cfi * ldb : B + 16 * cfi, ldb);
    }
#pragma unroll
    for (int i = 0; i < kMaxRowFrags; ++i) {
      if (i < rf && warp * CPW < cf) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, CT, wmma::row_major> a;
        wmma::load_matrix_sync(a, A + 16 * i * lda, lda);
#pragma unroll
        for (int jj = 0; jj < CPW; ++jj) {
          if (warp * CPW + jj < cf) wmma::mma_sync(c[i][jj], a, b[jj], c[i][jj]);
        }
      }
    }
  }

  template <typename F>
  __device__ __forceinline__ void for_each(int rf, int cf, float* stage, F&& f) {
    using namespace nvcuda;
    const int warp = threadIdx.x >> 5;
    const int lane = threadIdx.x & 31;
    float* st = stage + warp * 256;
#pragma unroll
    for (int i = 0; i < kMaxRowFrags; ++i) {
      if (i < rf) {
#pragma unroll
        for (int jj = 0; jj < CPW; ++jj) {
          const int cfi = warp * CPW + jj;
          if (cfi < cf) {
            wmma::store_matrix_sync(st, c[i][jj], 16, wmma::mem_row_major);
            __syncwarp();
            for (int e = lane; e < 256; e += 32) f(16 * i + (e >> 4), 16 * cfi + (e & 15), st[e]);
            __syncwarp();
          }
        }
      }
    }
  }
};
#else
// Device pass for an architecture without bf16 tensor cores: never launched (the launchers pick
// the SIMT path there), but it must compile.
template <typename CT, int CPW, bool BCOL>
struct TileAcc<CT, float, true, CPW, BCOL> {
  __device__ __forceinline__ void zero() {}
  __device__ __forceinline__ void mma16(const CT*, int, const CT*, int, int, int) { __trap(); }
  template <typename F>
  __device__ __forceinline__ void for_each(int, int, float*, F&&) { __trap(); }
};
#endif

// ------------------------------------------------------------------------------------------
// small generic kernels

// dst[i] = src[i % src_period] for i < count (fp32/fp64 scratch -> output dtype).
template <typename T>
__global__ void __launch_bounds__(kThreads) convert_kernel(const acc_t<T>* __restrict__ src, T* __restrict__ dst,
                                                            int64_t count, int64_t src_period) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < count; i += stride) {
    dst[i] = Cast<T>::from(src[i % src_period]);
  }
}

// ------------------------------------------------------------------------------------------
// host-side helpers shared by the launchers

struct DeviceLimits {
  int sms = 1;                 // streaming multiprocessors
  int max_smem = 48 * 1024;    // opt-in dynamic shared memory per block (bytes)
  int cc_major = 0;            // compute capability (major)
};

// Attributes of the current device (no synchronisation).
inline cudaError_t query_device(DeviceLimits* out) {
  int dev = 0;
  cudaError_t err = cudaGetDevice(&dev);
  if (err != cudaSuccess) return err;
  err = cudaDeviceGetAttribute(&out->sms, cudaDevAttrMultiProcessorCount, dev);
  if (err != cudaSuccess) return err;
  err = cudaDeviceGetAttribute(&out->max_smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
  if (err != cudaSuccess) return err;
  return cudaDeviceGetAttribute(&out->cc_major, cudaDevAttrComputeCapabilityMajor, dev);
}

// Tensor cores for the 16-bit types: sm_80 or newer, unless POSEKERNELS_CUDA_NO_MMA=1.
inline bool use_tensor_cores(const DeviceLimits& lim) {
  const char* env = std::getenv("POSEKERNELS_CUDA_NO_MMA");
  if (env != nullptr && env[0] == '1') return false;
  return lim.cc_major >= 8;
}

// Bump allocator over the caller's workspace. With base 0 it only counts bytes: the launchers run
// their planning twice, first to size (and check) the workspace, then to launch.
struct Workspace {
  uintptr_t base = 0;
  size_t offset = 0;
  template <typename U>
  U* take(int64_t count) {
    offset = (offset + 255) & ~static_cast<size_t>(255);
    U* p = reinterpret_cast<U*>(base + offset);
    offset += static_cast<size_t>(count) * sizeof(U);
    return p;
  }
};

// How many blocks share a reduction over `units` work items when `others` blocks already run
// side by side: about two blocks per SM in all, each with a contiguous range of `per` units.
struct Split {
  int splits = 1;
  int per = 1;
};
inline Split split_units(int units, int others, int sms) {
  Split s;
  const int64_t target = 2LL * (sms > 0 ? sms : 1);
  int64_t want = (target + others - 1) / (others > 0 ? others : 1);
  if (want < 1) want = 1;
  if (want > units) want = units;
  s.per = static_cast<int>((units + want - 1) / want);
  s.splits = (units + s.per - 1) / s.per;
  return s;
}

// The single launch site of every kernel (opt-in shared memory above 48 KiB first).
template <typename... KArgs, typename... Args>
inline cudaError_t launch_kernel(void (*kernel)(KArgs...), dim3 grid, int block, size_t smem, cudaStream_t stream,
                                 Args&&... args) {
  if (grid.x == 0 || grid.y == 0 || grid.z == 0) return cudaSuccess;
  if (smem > 48 * 1024) {
    const cudaError_t err =
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    if (err != cudaSuccess) return err;
  }
  kernel<<<grid, block, smem, stream>>>(std::forward<Args>(args)...);
  return cudaGetLastError();
}

// Grid for a grid-stride elementwise kernel over `count` items.
inline unsigned elementwise_blocks(int64_t count, int sms) {
  int64_t blocks = (count + kThreads - 1) / kThreads;
  const int64_t cap = 16LL * (sms > 0 ? sms : 1);
  if (blocks > cap) blocks = cap;
  return static_cast<unsigned>(blocks < 1 ? 1 : blocks);
}

#define POSEKERNELS_TRY(expr)                      \
  do {                                             \
    const cudaError_t pk_err_ = (expr);            \
    if (pk_err_ != cudaSuccess) return pk_err_;    \
  } while (0)

}  // namespace detail
}  // namespace cuda
}  // namespace posekernels
