// CPU emulation of the CUDA subset used by the kernels of csrc/cuda (a testing aid, see README.md).
#pragma once
#include <algorithm>
#include <array>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

using std::min;
using std::max;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __launch_bounds__(...)
#define __align__(n) alignas(n)
#define __shared__

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
struct uint3 { unsigned x, y, z; };
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(16) double2 { double x, y; };

typedef struct CUstream_st* cudaStream_t;
enum cudaError_t { cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorInvalidConfiguration = 9 };
enum cudaDeviceAttr { cudaDevAttrMultiProcessorCount = 16, cudaDevAttrMaxSharedMemoryPerBlockOptin = 97,
                      cudaDevAttrComputeCapabilityMajor = 75 };
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
inline const char* cudaGetErrorString(cudaError_t e) { return e == cudaSuccess ? "no error" : "emu error"; }

namespace emu {
class Barrier {
 public:
  explicit Barrier(int n) : count_(n) {}
  void wait() {
    std::unique_lock<std::mutex> lk(m_);
    const uint64_t g = gen_;
    if (++waiting_ == count_) { waiting_ = 0; ++gen_; cv_.notify_all(); }
    else cv_.wait(lk, [&] { return gen_ != g; });
  }
 private:
  std::mutex m_; std::condition_variable cv_; int count_; int waiting_ = 0; uint64_t gen_ = 0;
};
struct BlockCtx {
  explicit BlockCtx(int n) : sync(n), end(n), setup(n) {
    for (int w = 0; w < n / 32; ++w) warps.emplace_back(new Barrier(32));
    xchg.resize(n / 32);
  }
  ~BlockCtx() { for (auto* b : warps) delete b; }
  Barrier sync, end, setup;
  std::vector<Barrier*> warps;
  std::vector<std::array<uint64_t, 32>> xchg;
  unsigned char* smem = nullptr;
  size_t smem_bytes = 0;
};
inline thread_local uint3 tl_threadIdx, tl_blockIdx;
inline thread_local dim3 tl_blockDim, tl_gridDim;
inline thread_local BlockCtx* tl_ctx = nullptr;
inline std::mutex atomic_mu;
inline unsigned char* smem() { return tl_ctx->smem; }
inline int env_int(const char* n, int d) { const char* s = std::getenv(n); return s ? std::atoi(s) : d; }
inline long launches = 0;
inline size_t max_smem_used = 0;

template <typename... KArgs, typename... Args>
cudaError_t launch(void (*k)(KArgs...), dim3 grid, dim3 block, size_t smem_bytes, cudaStream_t, Args&&... args) {
  const int n = block.x * block.y * block.z;
  if (block.y != 1 || block.z != 1 || n % 32 != 0 || n > 1024) { std::fprintf(stderr, "emu: bad block\n"); std::abort(); }
  if (smem_bytes > (size_t)env_int("EMU_SMEM", 232448)) { std::fprintf(stderr, "emu: smem %zu too big\n", smem_bytes); std::abort(); }
  ++launches;
  max_smem_used = std::max(max_smem_used, smem_bytes);
  std::tuple<std::decay_t<KArgs>...> targs(std::forward<Args>(args)...);
  BlockCtx ctx(n);
  std::vector<std::thread> th;
  th.reserve(n);
  for (int t = 0; t < n; ++t) {
    th.emplace_back([&, t] {
      tl_ctx = &ctx; tl_threadIdx = {unsigned(t), 0, 0}; tl_blockDim = block; tl_gridDim = grid;
      for (unsigned bz = 0; bz < grid.z; ++bz)
        for (unsigned by = 0; by < grid.y; ++by)
          for (unsigned bx = 0; bx < grid.x; ++bx) {
            tl_blockIdx = {bx, by, bz};
            if (t == 0) {
              void* p = nullptr;
              if (posix_memalign(&p, 128, smem_bytes ? smem_bytes : 1) != 0) std::abort();
              std::memset(p, 0xFF, smem_bytes);  // NaN in every float type: uninitialised reads show
              ctx.smem = static_cast<unsigned char*>(p);
            }
            ctx.setup.wait();
            std::apply(k, targs);
            ctx.end.wait();
            if (t == 0) { std::free(ctx.smem); ctx.smem = nullptr; }
          }
    });
  }
  for (auto& x : th) x.join();
  return cudaSuccess;
}
}  // namespace emu

#define threadIdx (::emu::tl_threadIdx)
#define blockIdx (::emu::tl_blockIdx)
#define blockDim (::emu::tl_blockDim)
#define gridDim (::emu::tl_gridDim)

inline void __syncthreads() { emu::tl_ctx->sync.wait(); }
inline void __syncwarp(unsigned = 0xffffffffu) { emu::tl_ctx->warps[emu::tl_threadIdx.x / 32]->wait(); }
[[noreturn]] inline void __trap() { std::fprintf(stderr, "emu: __trap\n"); std::abort(); }
template <typename V>
inline V __shfl_xor_sync(unsigned mask, V v, int lane_mask, int width = 32) {
  if (mask != 0xffffffffu) std::abort();
  const int lane = emu::tl_threadIdx.x % 32, warp = emu::tl_threadIdx.x / 32;
  auto& slots = emu::tl_ctx->xchg[warp];
  static_assert(sizeof(V) <= 8, "");
  std::memcpy(&slots[lane], &v, sizeof(V));
  emu::tl_ctx->warps[warp]->wait();
  int src = lane ^ lane_mask;
  if ((src / width) != (lane / width)) src = lane;
  V out; std::memcpy(&out, &slots[src], sizeof(V));
  emu::tl_ctx->warps[warp]->wait();
  return out;
}
inline float atomicAdd(float* p, float v) { std::lock_guard<std::mutex> g(emu::atomic_mu); float o = *p; *p = o + v; return o; }
inline double atomicAdd(double* p, double v) { std::lock_guard<std::mutex> g(emu::atomic_mu); double o = *p; *p = o + v; return o; }

inline cudaError_t cudaGetDevice(int* d) { *d = 0; return cudaSuccess; }
inline cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr a, int) {
  if (a == cudaDevAttrMultiProcessorCount) *v = emu::env_int("EMU_SMS", 4);
  else if (a == cudaDevAttrMaxSharedMemoryPerBlockOptin) *v = emu::env_int("EMU_SMEM", 232448);
  else *v = emu::env_int("EMU_CC", 9);
  return cudaSuccess;
}
template <typename T>
inline cudaError_t cudaFuncSetAttribute(T*, cudaFuncAttribute, int) { return cudaSuccess; }
inline cudaError_t cudaMemsetAsync(void* p, int v, size_t n, cudaStream_t) { std::memset(p, v, n); return cudaSuccess; }
enum cudaMemcpyKind { cudaMemcpyDeviceToDevice = 3 };
inline cudaError_t cudaMemcpyAsync(void* d, const void* s, size_t n, cudaMemcpyKind, cudaStream_t) {
  std::memcpy(d, s, n);
  return cudaSuccess;
}
inline unsigned __umulhi(unsigned a, unsigned b) {
  return static_cast<unsigned>((static_cast<uint64_t>(a) * b) >> 32);
}
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
