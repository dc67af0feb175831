// Stand-in for the CUDA header of the same name, for the CPU emulator only (see ../README.md).
#pragma once
#include "emu_core.h"
#include "cuda_fp16.h"
#include "cuda_bf16.h"
namespace nvcuda { namespace wmma {
struct matrix_a {}; struct matrix_b {}; struct accumulator {}; struct row_major {}; struct col_major {};
enum layout_t { mem_row_major, mem_col_major };
inline float to_f(__half h) { return __half2float(h); }
inline float to_f(__nv_bfloat16 h) { return __bfloat162float(h); }
inline float to_f(float h) { return h; }
// Every lane holds the whole 16x16 tile (the fragment API is warp-collective and opaque).
template <class Use, int M, int N, int K, class T, class Layout = void>
struct fragment { static constexpr int num_elements = 256; T x[256]; };
inline void check_ptr(const void* p, unsigned ldm, size_t elt) {
  if (reinterpret_cast<uintptr_t>(p) % 32 != 0) { std::fprintf(stderr, "wmma: pointer %p not 32-byte aligned\n", p); std::abort(); }
  if ((ldm * elt) % 16 != 0) { std::fprintf(stderr, "wmma: ldm %u not a multiple of 16 bytes\n", ldm); std::abort(); }
}
template <class T, class L>
inline void load_matrix_sync(fragment<matrix_a, 16, 16, 16, T, L>& f, const T* p, unsigned ldm) {
  check_ptr(p, ldm, sizeof(T));
  for (int i = 0; i < 16; ++i) for (int k = 0; k < 16; ++k)
    f.x[i * 16 + k] = std::is_same<L, row_major>::value ? p[i * ldm + k] : p[k * ldm + i];
}
template <class T, class L>
inline void load_matrix_sync(fragment<matrix_b, 16, 16, 16, T, L>& f, const T* p, unsigned ldm) {
  check_ptr(p, ldm, sizeof(T));
  for (int k = 0; k < 16; ++k) for (int j = 0; j < 16; ++j)
    f.x[k * 16 + j] = std::is_same<L, row_major>::value ? p[k * ldm + j] : p[j * ldm + k];
}
inline void fill_fragment(fragment<accumulator, 16, 16, 16, float>& f, float v) { for (auto& e : f.x) e = v; }
template <class T, class LA, class LB>
inline void mma_sync(fragment<accumulator, 16, 16, 16, float>& d, const fragment<matrix_a, 16, 16, 16, T, LA>& a,
                     const fragment<matrix_b, 16, 16, 16, T, LB>& b, const fragment<accumulator, 16, 16, 16, float>& c) {
  float r[256];
  for (int i = 0; i < 16; ++i) for (int j = 0; j < 16; ++j) {
    float s = c.x[i * 16 + j];
    for (int k = 0; k < 16; ++k) s += to_f(a.x[i * 16 + k]) * to_f(b.x[k * 16 + j]);
    r[i * 16 + j] = s;
  }
  std::memcpy(d.x, r, sizeof r);
}
inline void store_matrix_sync(float* p, const fragment<accumulator, 16, 16, 16, float>& f, unsigned ldm, layout_t l) {
  check_ptr(p, ldm, sizeof(float));
  if (emu::tl_threadIdx.x % 32 != 0) return;  // one lane writes; callers __syncwarp before reading
  for (int i = 0; i < 16; ++i) for (int j = 0; j < 16; ++j)
    (l == mem_row_major ? p[i * ldm + j] : p[j * ldm + i]) = f.x[i * 16 + j];
}
}}  // namespace nvcuda::wmma
