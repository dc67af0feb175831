// Training-time epilogues of the GLA-GCN units on the CPU: counter-based dropout, and BatchNorm
// (batch statistics) + dropout + residual add + ReLU, fused.
//
// Dropout masks come from Philox4x32-10 (Salmon et al., SC 2011) keyed by a 64-bit seed that the
// Python layer draws from torch's generator. Elements of a contiguous tensor are taken in blocks
// of 64: element i = 64 b + 16 w + j (w < 4, j < 16) is kept when word w of
// Philox(key = seed, counter = 16 b + j) is below (1 - p) * 2^32. (This order lets 16 counters run
// in the 16 lanes of a 512-bit vector and each output word vector be stored as it is.) A mask is
// a pure function of (seed, element index): nothing is stored, the backward regenerates it, and
// applying the same op with the same seed to the gradient is the dropout's backward.
//
// The loops are written once (always-inline bodies) and compiled twice: for the baseline ISA and
// for AVX-512F (target attributes, chosen at run time), where Philox runs on intrinsics.
//
// The tensors are (N, C, L) with rows n * C + c contiguous, and every pass sweeps whole rows in
// memory order (one channel at a time, N rows C * L apart, left the prefetchers behind: the
// forward ran 4x slower than a copy of the tensor). bn_act_forward: each row's mean and sum of
// squared deviations (two passes over the row, in L1; double results), combined per channel in
// row order (Chan, Golub and LeVeque's pairwise update) into the mean and biased variance; then
// one pass y = act(dropout(gamma * (z - mean) / sqrt(var + eps) + beta) + residual).
// bn_act_backward: one pass forms d = dropout(grad * relu'(y)) (written into grad_z), the
// residual's gradient and per-row sums of d and d * (z - mean), combined per channel in row
// order into the gradients of gamma and beta; a second pass finishes
//   grad_z = gamma * invstd * (d - mean(d) - xhat * mean(d * xhat)).
// Per-row partials combined in a fixed order: results do not depend on the thread count.
// bn_act also takes a bfloat16 z (bf16 autocast: a convolution's output) with float32 everything
// else: its elements are widened as they are loaded, the computation is the float32 one on z's
// value, and grad_z is rounded to bfloat16 once at the end (pass 1's products then go to a
// float32 scratch tensor instead of grad_z).
#include "cpu/kernels.h"
#include "cpu/parallel.h"

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <vector>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define POSEKERNELS_BN_AVX512 1
#include <immintrin.h>
#endif

namespace posekernels::cpu {
namespace {

constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;
constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
constexpr int64_t kLanes = 16;          // Philox counters per block
constexpr int64_t kBlock = 4 * kLanes;  // random words (elements) per block
constexpr int64_t kSegment = 256;       // elements handled per mask fill
constexpr int64_t kWords = kSegment + 2 * kBlock;

#define PK_INLINE inline __attribute__((always_inline))

// Words of block `block`: out[16 w + j] = word w of Philox4x32-10(key, 16 * block + j).
PK_INLINE void philox_block_scalar(uint64_t key, int64_t block, uint32_t* out) {
  for (int64_t j = 0; j < kLanes; ++j) {
    const uint64_t c = static_cast<uint64_t>(block) * kLanes + static_cast<uint64_t>(j);
    uint32_t c0 = static_cast<uint32_t>(c), c1 = static_cast<uint32_t>(c >> 32), c2 = 0, c3 = 0;
    uint32_t k0 = static_cast<uint32_t>(key), k1 = static_cast<uint32_t>(key >> 32);
    for (int round = 0; round < 10; ++round) {
      const uint64_t p0 = static_cast<uint64_t>(kM0) * c0;
      const uint64_t p1 = static_cast<uint64_t>(kM1) * c2;
      const uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ c1 ^ k0;
      const uint32_t n2 = static_cast<uint32_t>(p0 >> 32) ^ c3 ^ k1;
      c1 = static_cast<uint32_t>(p1);
      c3 = static_cast<uint32_t>(p0);
      c0 = n0;
      c2 = n2;
      k0 += kW0;
      k1 += kW1;
    }
    out[j] = c0;
    out[kLanes + j] = c1;
    out[2 * kLanes + j] = c2;
    out[3 * kLanes + j] = c3;
  }
}

#ifdef POSEKERNELS_BN_AVX512
#define PK_AVX512 __attribute__((target("avx512f,fma")))

// GCC 12 reports the "undefined" pass-through operands inside these intrinsics' own definitions
// as uninitialised once they are inlined here; every vector below is written before use.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
// hi, lo <- the high and low 32 bits of the 64-bit products a * m, lane by lane (two
// 32 x 32 -> 64 multiplies; the low words come from the same products, not from mullo).
PK_AVX512 PK_INLINE void mul_wide_epu32(__m512i a, __m512i m, __m512i& hi, __m512i& lo) {
  const __m512i even = _mm512_mul_epu32(a, m);                          // lanes 0, 2, ...
  const __m512i odd = _mm512_mul_epu32(_mm512_srli_epi64(a, 32), m);    // lanes 1, 3, ...
  hi = _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(even, 32), odd);
  lo = _mm512_mask_blend_epi32(0xAAAA, even, _mm512_slli_epi64(odd, 32));
}

PK_AVX512 __attribute__((noinline)) void philox_block_avx512(uint64_t key, int64_t block, uint32_t* out) {
  const uint64_t first = static_cast<uint64_t>(block) * kLanes;
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  // counters first + j: the low words, plus a carry into the high words where they wrap
  const __m512i lo = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int>(static_cast<uint32_t>(first))), lane);
  const __mmask16 carry = _mm512_cmplt_epu32_mask(lo, lane);
  __m512i c0 = lo;
  __m512i c1 = _mm512_mask_add_epi32(_mm512_set1_epi32(static_cast<int>(static_cast<uint32_t>(first >> 32))),
                                     carry, _mm512_set1_epi32(static_cast<int>(first >> 32)),
                                     _mm512_set1_epi32(1));
  __m512i c2 = _mm512_setzero_si512(), c3 = _mm512_setzero_si512();
  const __m512i m0 = _mm512_set1_epi32(static_cast<int>(kM0)), m1 = _mm512_set1_epi32(static_cast<int>(kM1));
  uint32_t k0 = static_cast<uint32_t>(key), k1 = static_cast<uint32_t>(key >> 32);
  for (int round = 0; round < 10; ++round) {
    __m512i hi0, lo0, hi1, lo1;
    mul_wide_epu32(c0, m0, hi0, lo0);
    mul_wide_epu32(c2, m1, hi1, lo1);
    const __m512i n0 = _mm512_xor_si512(_mm512_xor_si512(hi1, c1), _mm512_set1_epi32(static_cast<int>(k0)));
    const __m512i n2 = _mm512_xor_si512(_mm512_xor_si512(hi0, c3), _mm512_set1_epi32(static_cast<int>(k1)));
    c1 = lo1;
    c3 = lo0;
    c0 = n0;
    c2 = n2;
    k0 += kW0;
    k1 += kW1;
  }
  _mm512_storeu_si512(out, c0);
  _mm512_storeu_si512(out + kLanes, c1);
  _mm512_storeu_si512(out + 2 * kLanes, c2);
  _mm512_storeu_si512(out + 3 * kLanes, c3);
}
#pragma GCC diagnostic pop
#endif

// Keep threshold for drop probability p in (0, 1): a word u keeps its element when u < thr.
uint32_t keep_threshold(double p) {
  const double t = std::ldexp(1.0 - p, 32);
  return t >= 4294967295.0 ? 0xFFFFFFFFu : static_cast<uint32_t>(t);
}

struct Mask {
  uint64_t key;
  uint32_t thr;
  bool active;  // p > 0
};

Mask make_mask(double p, int64_t seed) {
  return Mask{static_cast<uint64_t>(seed), p > 0.0 ? keep_threshold(p) : 0u, p > 0.0};
}

// m[j] = keep(s + j) ? scale : 0 for j < e - s (e - s <= kSegment).
template <bool Avx512, typename T>
PK_INLINE void fill_mask(const Mask& mk, int64_t s, int64_t e, T scale, T* m) {
  alignas(64) uint32_t words[kWords];
  const int64_t b0 = s / kBlock, b1 = (e - 1) / kBlock;
  for (int64_t b = b0; b <= b1; ++b) {
#ifdef POSEKERNELS_BN_AVX512
    if constexpr (Avx512) {
      philox_block_avx512(mk.key, b, words + (b - b0) * kBlock);
      continue;
    }
#endif
    philox_block_scalar(mk.key, b, words + (b - b0) * kBlock);
  }
  const uint32_t* w = words + (s - b0 * kBlock);
  const uint32_t thr = mk.thr;
  for (int64_t j = 0; j < e - s; ++j) m[j] = w[j] < thr ? scale : T(0);
}

// 64-byte vectors (GCC vector extensions): zmm registers in the AVX-512 compilation, pairs or
// quadruples of narrower ones in the baseline one. Loads go through memcpy (unaligned).
template <typename T>
struct VecOf;
template <>
struct VecOf<float> {
  typedef float type __attribute__((vector_size(64)));
};
template <>
struct VecOf<double> {
  typedef double type __attribute__((vector_size(64)));
};
template <typename T>
using Vec = typename VecOf<T>::type;
template <typename T>
constexpr int64_t kVecLanes = 64 / static_cast<int64_t>(sizeof(T));

// z's elements: T itself, or bfloat16 bits (uint16_t) read into a float32 computation
// (bf16 autocast training: the convolutions' bf16 outputs, read without a float32 copy).
// ld / ldv widen one element / one vector of lanes; st rounds to nearest even (NaN stays NaN).
template <typename T, typename Z>
PK_INLINE T ld(const Z* p) {
  if constexpr (std::is_same_v<Z, T>) {
    return *p;
  } else {
    static_assert(std::is_same_v<T, float> && std::is_same_v<Z, uint16_t>);
    const uint32_t u = static_cast<uint32_t>(*p) << 16;
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
  }
}

template <typename T, typename Z>
PK_INLINE void ldv(const Z* p, Vec<T>& v) {
  if constexpr (std::is_same_v<Z, T>) {
    std::memcpy(&v, p, sizeof v);
  } else {
    typedef uint16_t H __attribute__((vector_size(32)));
    typedef uint32_t U __attribute__((vector_size(64)));
    H h;
    std::memcpy(&h, p, sizeof h);
    const U u = __builtin_convertvector(h, U) << 16;
    std::memcpy(&v, &u, sizeof v);
  }
}

template <typename T, typename Z>
PK_INLINE void st(Z* p, T v) {
  if constexpr (std::is_same_v<Z, T>) {
    *p = v;
  } else {
    uint32_t u;
    std::memcpy(&u, &v, sizeof u);
    const uint32_t r = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
    *p = static_cast<uint16_t>(v != v ? 0x7FC0u : r);
  }
}

// Sum of x[0, n) and of (x - mu)^2 (Squares) in two vectors of lanes, then in double.
template <typename T, bool Squares, typename Z>
PK_INLINE double lane_sum(const Z* x, int64_t n, T mu) {
  using V = Vec<T>;
  constexpr int64_t W = kVecLanes<T>;
  const V muv = V{} + mu;
  V acc0 = {}, acc1 = {};
  int64_t i = 0;
  for (; i + 2 * W <= n; i += 2 * W) {
    V a, b;
    ldv<T>(x + i, a);
    ldv<T>(x + i + W, b);
    if constexpr (Squares) {
      a -= muv;
      b -= muv;
      a *= a;
      b *= b;
    }
    acc0 += a;
    acc1 += b;
  }
  for (; i + W <= n; i += W) {
    V a;
    ldv<T>(x + i, a);
    if constexpr (Squares) {
      a -= muv;
      a *= a;
    }
    acc0 += a;
  }
  acc0 += acc1;
  double s = 0.0;
  for (int64_t j = 0; j < W; ++j) s += acc0[j];
  for (; i < n; ++i) {
    const double xi = static_cast<double>(ld<T>(x + i));
    const double v = Squares ? (xi - mu) * (xi - mu) : xi;
    s += v;
  }
  return s;
}

struct Shape {
  int64_t N, C, L;
};

template <typename T, typename Z = T, typename Y = T>
struct FwdArgs {
  const Z* z;
  const T* gamma;
  const T* beta;
  const T* res;
  Y* y;
  T* mean;
  T* var;
  double p, eps;
  bool relu;
};

// Rows r = n * C + c of length L are contiguous: every pass below sweeps whole rows in memory
// order (the hardware prefetchers follow it), and per-row partial results are combined per
// channel in row order afterwards, so no result depends on the thread count.

// Mean and sum of squared deviations of row x[0, L) (two passes; the row sits in L1).
template <typename T, typename Z>
PK_INLINE void row_moments(const Z* x, int64_t L, double* out) {
  const double mean = lane_sum<T, false>(x, L, T(0)) / static_cast<double>(L);
  out[0] = mean;
  out[1] = lane_sum<T, true>(x, L, static_cast<T>(mean));
}

template <bool Avx512, typename T, typename Z, typename Y>
PK_INLINE void bn_stats_rows_body(const FwdArgs<T, Z, Y>& a, int64_t L, int64_t r0, int64_t r1,
                                  double* rs) {
  for (int64_t r = r0; r < r1; ++r) row_moments<T>(a.z + r * L, L, rs + 2 * r);
}

// y = act(dropout(z * mul[c] + off[c]) + residual) for rows [r0, r1) (computed in T; a
// bfloat16 y is rounded once as it is stored).
template <bool Avx512, typename T, typename Z, typename Y>
PK_INLINE void bn_fwd_rows_body(const FwdArgs<T, Z, Y>& a, const Shape& sh, const Mask& mk,
                                const T* mul, const T* off, int64_t r0, int64_t r1) {
  const int64_t L = sh.L;
  const T scale = static_cast<T>(1.0 / (1.0 - a.p));
  alignas(64) T m[kSegment];
  alignas(64) T out[std::is_same_v<Y, T> ? 1 : kSegment];
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t c = r % sh.C;
    const T mc = mul[c], oc = off[c];
    const int64_t base = r * L;
    for (int64_t s = base; s < base + L; s += kSegment) {
      const int64_t e = std::min(base + L, s + kSegment), len = e - s;
      const Z* zs = a.z + s;
      T* ys;
      if constexpr (std::is_same_v<Y, T>) {
        ys = a.y + s;
      } else {
        ys = out;
      }
      if (mk.active) {
        fill_mask<Avx512>(mk, s, e, scale, m);
        for (int64_t j = 0; j < len; ++j) ys[j] = (ld<T>(zs + j) * mc + oc) * m[j];
      } else {
        for (int64_t j = 0; j < len; ++j) ys[j] = ld<T>(zs + j) * mc + oc;
      }
      if (a.res) {
        const T* rs = a.res + s;
        for (int64_t j = 0; j < len; ++j) ys[j] += rs[j];
      }
      if (a.relu)
        for (int64_t j = 0; j < len; ++j) ys[j] = ys[j] > T(0) ? ys[j] : T(0);
      if constexpr (!std::is_same_v<Y, T>) {
        Y* yo = a.y + s;
        for (int64_t j = 0; j < len; ++j) st(yo + j, ys[j]);
      }
    }
  }
}

// d: pass 1's dropout(grad * relu'(y)), read by pass 2; grad_z itself when Z is T, a float32
// scratch tensor when z (and so grad_z) is bfloat16, so that grad_z is rounded once.
template <typename T, typename Z = T, typename Y = T>
struct BwdArgs {
  const Y* gy;
  const Z* z;
  const Y* y;
  const T* gamma;
  const T* mean;
  const T* var;
  T* d;
  Z* gz;
  T* gres;
  T* ggamma;
  T* gbeta;
  double p, eps;
  bool relu;
};

// Pass 1 of the backward over rows [r0, r1): d = dropout(grad * relu'(y)) into grad_z, the
// residual's gradient grad * relu'(y), and per row the sums of d and of d * (z - mean[c]).
template <bool Avx512, typename T, typename Z, typename Y>
PK_INLINE void bn_bwd_rows1_body(const BwdArgs<T, Z, Y>& a, const Shape& sh, const Mask& mk,
                                 int64_t r0, int64_t r1, double* rs) {
  const int64_t L = sh.L;
  const T scale = static_cast<T>(1.0 / (1.0 - a.p));
  alignas(64) T m[kSegment];
  for (int64_t r = r0; r < r1; ++r) {
    const T mu = a.mean[r % sh.C];
    double sum_d = 0.0, sum_dz = 0.0;
    const int64_t base = r * L;
    for (int64_t s = base; s < base + L; s += kSegment) {
      const int64_t e = std::min(base + L, s + kSegment), len = e - s;
      T* d = a.d + s;
      const Y* gys = a.gy + s;
      const Y* ys = a.y + s;
      if (a.relu) {
        for (int64_t j = 0; j < len; ++j) {
          const T gj = ld<T>(gys + j), yj = ld<T>(ys + j);  // both loaded: the loop vectorises
          d[j] = yj > T(0) ? gj : T(0);
        }
      } else {
        for (int64_t j = 0; j < len; ++j) d[j] = ld<T>(gys + j);
      }
      if (a.gres) {
        T* gr = a.gres + s;
        for (int64_t j = 0; j < len; ++j) gr[j] = d[j];
      }
      if (mk.active) {
        fill_mask<Avx512>(mk, s, e, scale, m);
        for (int64_t j = 0; j < len; ++j) d[j] *= m[j];
      }
      const Z* zs = a.z + s;
      using V = Vec<T>;
      constexpr int64_t W = kVecLanes<T>;
      const V muv = V{} + mu;
      V a0 = {}, a1 = {};
      int64_t i = 0;
      for (; i + W <= len; i += W) {
        V dv, zv;
        std::memcpy(&dv, d + i, sizeof dv);
        ldv<T>(zs + i, zv);
        a0 += dv;
        a1 += dv * (zv - muv);
      }
      for (int64_t j = 0; j < W; ++j) {
        sum_d += a0[j];
        sum_dz += a1[j];
      }
      for (; i < len; ++i) {
        sum_d += d[i];
        sum_dz += static_cast<double>(d[i]) * (static_cast<double>(ld<T>(zs + i)) - mu);
      }
    }
    rs[2 * r] = sum_d;
    rs[2 * r + 1] = sum_dz;
  }
}

// Pass 2: grad_z = k[c] * (d - md[c] - (z - mean[c]) * kz[c]) over rows [r0, r1).
template <bool Avx512, typename T, typename Z, typename Y>
PK_INLINE void bn_bwd_rows2_body(const BwdArgs<T, Z, Y>& a, const Shape& sh, const T* k, const T* md,
                                 const T* kz, int64_t r0, int64_t r1) {
  const int64_t L = sh.L;
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t c = r % sh.C;
    const T kc = k[c], mdc = md[c], kzc = kz[c], mu = a.mean[c];
    const T* d = a.d + r * L;
    const Z* zs = a.z + r * L;
    Z* gz = a.gz + r * L;
    for (int64_t j = 0; j < L; ++j) st(gz + j, kc * (d[j] - mdc - (ld<T>(zs + j) - mu) * kzc));
  }
}

template <bool Avx512, typename T>
PK_INLINE void dropout_body(const T* x, T* y, int64_t s, int64_t e, const Mask& mk, T scale) {
  alignas(64) T m[kSegment];
  for (; s < e; s += kSegment) {
    const int64_t stop = std::min(e, s + kSegment);
    fill_mask<Avx512>(mk, s, stop, scale, m);
    for (int64_t j = 0; j < stop - s; ++j) y[s + j] = x[s + j] * m[j];
  }
}

// The two compilations of each body: the baseline ISA (*_base) and AVX-512F (*_avx512).
#define PK_BASE_AND_AVX512(name, params, args)                                           \
  template <typename T, typename Z = T, typename Y = T>                                 \
  void name##_base params { name##_body<false> args; }                                  \
  PK_AVX512_ONLY(template <typename T, typename Z = T, typename Y = T> PK_AVX512 void name##_avx512 params { \
    name##_body<true> args;                                                             \
  })
#ifdef POSEKERNELS_BN_AVX512
#define PK_AVX512_ONLY(...) __VA_ARGS__
#else
#define PK_AVX512_ONLY(...)
#endif

PK_BASE_AND_AVX512(bn_stats_rows,
                   (const FwdArgs<T, Z, Y>& a, int64_t L, int64_t r0, int64_t r1, double* rs),
                   (a, L, r0, r1, rs))
PK_BASE_AND_AVX512(bn_fwd_rows,
                   (const FwdArgs<T, Z, Y>& a, const Shape& sh, const Mask& mk, const T* mul,
                    const T* off, int64_t r0, int64_t r1),
                   (a, sh, mk, mul, off, r0, r1))
PK_BASE_AND_AVX512(bn_bwd_rows1,
                   (const BwdArgs<T, Z, Y>& a, const Shape& sh, const Mask& mk, int64_t r0, int64_t r1,
                    double* rs),
                   (a, sh, mk, r0, r1, rs))
PK_BASE_AND_AVX512(bn_bwd_rows2,
                   (const BwdArgs<T, Z, Y>& a, const Shape& sh, const T* k, const T* md, const T* kz,
                    int64_t r0, int64_t r1),
                   (a, sh, k, md, kz, r0, r1))
PK_BASE_AND_AVX512(dropout, (const T* x, T* y, int64_t s, int64_t e, const Mask& mk, T scale),
                   (x, y, s, e, mk, scale))

bool have_avx512() { return epilogue_avx512_enabled(); }

// f(r0, r1, avx) for the rows [r0, r1) of chunks of at least ~16K elements, split over the
// threads; avx: the AVX-512 compilation may run.
template <typename F>
void for_each_row_chunk(const Shape& sh, const F& f) {
  const bool avx = have_avx512();
  const int64_t rows = sh.N * sh.C;
  const int64_t min_rows = std::max<int64_t>(1, (int64_t{1} << 14) / std::max<int64_t>(1, sh.L));
  const int64_t chunks = chunk_count(rows, min_rows);
  for_each_chunk(chunks, [&](int64_t chunk) {
    f(chunk_begin(chunk, chunks, rows), chunk_begin(chunk + 1, chunks, rows), avx);
  });
}

#ifdef POSEKERNELS_BN_AVX512
#define PK_CALL(name, avx, ...)       \
  do {                                \
    if (avx) {                        \
      name##_avx512(__VA_ARGS__);     \
    } else {                          \
      name##_base(__VA_ARGS__);       \
    }                                 \
  } while (0)
#else
#define PK_CALL(name, avx, ...) name##_base(__VA_ARGS__)
#endif

}  // namespace

bool epilogue_avx512_enabled() {
#ifdef POSEKERNELS_BN_AVX512
  static const bool ok = [] {
    __builtin_cpu_init();
    const char* env = std::getenv("POSEKERNELS_CPU_EPILOGUE");
    return (env == nullptr || std::strcmp(env, "baseline") != 0) &&
           __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma");
  }();
  return ok;
#else
  return false;
#endif
}

at::Tensor dropout_apply(const at::Tensor& x, double p, int64_t seed) {
  at::Tensor y = at::empty_like(x);
  const int64_t n = x.numel();
  const Mask mk = make_mask(p, seed);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "posekernels_dropout_apply", [&] {
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    scalar_t* yp = y.mutable_data_ptr<scalar_t>();
    const scalar_t scale = static_cast<scalar_t>(1.0 / (1.0 - p));
    if (!mk.active) {
      std::copy(xp, xp + n, yp);
      return;
    }
    const int64_t segments = (n + kSegment - 1) / kSegment;
    const int64_t chunks = chunk_count(segments, 64);
    const bool avx = have_avx512();
    for_each_chunk(chunks, [&](int64_t chunk) {
      const int64_t s = std::min(n, chunk_begin(chunk, chunks, segments) * kSegment);
      const int64_t e = std::min(n, chunk_begin(chunk + 1, chunks, segments) * kSegment);
      PK_CALL(dropout, avx, xp, yp, s, e, mk, scale);
    });
  });
  return y;
}

namespace {

// The forward on z's elements Z and y's Y (T, or bfloat16 bits with T = float); mean, var are T.
template <typename T, typename Z, typename Y>
void bn_act_forward_impl(const at::Tensor& z, const std::optional<at::Tensor>& weight,
                         const std::optional<at::Tensor>& bias,
                         const std::optional<at::Tensor>& residual, const Shape& sh,
                         const Mask& mk, double p, double eps, bool relu, at::Tensor& y,
                         at::Tensor& mean, at::Tensor& var) {
  const FwdArgs<T, Z, Y> a{static_cast<const Z*>(z.const_data_ptr()),
                           weight ? weight->const_data_ptr<T>() : nullptr,
                           bias ? bias->const_data_ptr<T>() : nullptr,
                           residual ? residual->const_data_ptr<T>() : nullptr,
                           static_cast<Y*>(y.mutable_data_ptr()), mean.mutable_data_ptr<T>(),
                           var.mutable_data_ptr<T>(), p, eps, relu};
  const int64_t C = sh.C;
  // per-row moments, combined per channel in row order (Chan et al.'s pairwise update)
  std::vector<double> rs(static_cast<size_t>(2 * sh.N * C));
  for_each_row_chunk(sh, [&](int64_t r0, int64_t r1, bool avx) {
    PK_CALL(bn_stats_rows, avx, a, sh.L, r0, r1, rs.data());
  });
  std::vector<T> mul(static_cast<size_t>(C)), off(static_cast<size_t>(C));
  for (int64_t c = 0; c < C; ++c) {
    double count = 0.0, mu = 0.0, m2 = 0.0;
    const double nb = static_cast<double>(sh.L);
    for (int64_t n = 0; n < sh.N; ++n) {
      const double* row = rs.data() + 2 * (n * C + c);
      const double total = count + nb, delta = row[0] - mu;
      mu += delta * nb / total;
      m2 += row[1] + delta * delta * count * nb / total;
      count = total;
    }
    const double v = m2 / count;
    a.mean[c] = static_cast<T>(mu);
    a.var[c] = static_cast<T>(v);
    const double invstd = 1.0 / std::sqrt(v + a.eps);
    const double g = a.gamma ? static_cast<double>(a.gamma[c]) : 1.0;
    const double b = a.beta ? static_cast<double>(a.beta[c]) : 0.0;
    mul[c] = static_cast<T>(g * invstd);
    off[c] = static_cast<T>(b - mu * g * invstd);
  }
  for_each_row_chunk(sh, [&](int64_t r0, int64_t r1, bool avx) {
    PK_CALL(bn_fwd_rows, avx, a, sh, mk, mul.data(), off.data(), r0, r1);
  });
}

// The backward on z's elements Z and y's (and grad_y's) Y; grad_z has z's dtype, everything
// else is T. d: the buffer of pass 1's products (grad_z itself when Z is T).
template <typename T, typename Z, typename Y>
void bn_act_backward_impl(const at::Tensor& grad_y, const at::Tensor& z, const at::Tensor& y,
                          const std::optional<at::Tensor>& weight, const at::Tensor& mean,
                          const at::Tensor& var, const Shape& sh, const Mask& mk, double p,
                          double eps, bool relu, at::Tensor& d, at::Tensor& gz, at::Tensor* gres,
                          at::Tensor& ggamma, at::Tensor& gbeta) {
  const BwdArgs<T, Z, Y> a{static_cast<const Y*>(grad_y.const_data_ptr()),
                           static_cast<const Z*>(z.const_data_ptr()),
                           static_cast<const Y*>(y.const_data_ptr()),
                           weight ? weight->const_data_ptr<T>() : nullptr,
                           mean.const_data_ptr<T>(), var.const_data_ptr<T>(),
                           d.mutable_data_ptr<T>(), static_cast<Z*>(gz.mutable_data_ptr()),
                           gres ? gres->mutable_data_ptr<T>() : nullptr,
                           ggamma.mutable_data_ptr<T>(), gbeta.mutable_data_ptr<T>(), p, eps,
                           relu};
  const int64_t C = sh.C;
  std::vector<double> rs(static_cast<size_t>(2 * sh.N * C));
  for_each_row_chunk(sh, [&](int64_t r0, int64_t r1, bool avx) {
    PK_CALL(bn_bwd_rows1, avx, a, sh, mk, r0, r1, rs.data());
  });
  // grad_z = g * invstd * (d - sum_d / M - (z - mu) * invstd^2 * sum_dz / M)
  std::vector<T> k(static_cast<size_t>(C)), md(static_cast<size_t>(C)), kz(static_cast<size_t>(C));
  const double count = static_cast<double>(sh.N * sh.L);
  for (int64_t c = 0; c < C; ++c) {
    double sum_d = 0.0, sum_dz = 0.0;
    for (int64_t n = 0; n < sh.N; ++n) {
      sum_d += rs[2 * (n * C + c)];
      sum_dz += rs[2 * (n * C + c) + 1];
    }
    const double invstd = 1.0 / std::sqrt(static_cast<double>(a.var[c]) + a.eps);
    const double g = a.gamma ? static_cast<double>(a.gamma[c]) : 1.0;
    a.ggamma[c] = static_cast<T>(sum_dz * invstd);
    a.gbeta[c] = static_cast<T>(sum_d);
    k[c] = static_cast<T>(g * invstd);
    md[c] = static_cast<T>(sum_d / count);
    kz[c] = static_cast<T>(invstd * invstd * sum_dz / count);
  }
  for_each_row_chunk(sh, [&](int64_t r0, int64_t r1, bool avx) {
    PK_CALL(bn_bwd_rows2, avx, a, sh, k.data(), md.data(), kz.data(), r0, r1);
  });
}

// The dtype of everything but z (and grad_z): float32 for a bfloat16 z, else z's own.
at::ScalarType compute_dtype(const at::Tensor& z) {
  return z.scalar_type() == at::kBFloat16 ? at::kFloat : z.scalar_type();
}

// f.template operator()<Z, Y>() for a float32 computation where z (z16) and/or y (y16) are
// bfloat16 (uint16_t bits), the other float32; all-float32 calls take AT_DISPATCH instead.
template <typename F>
void dispatch_bf16(bool z16, bool y16, const F& f) {
  if (z16 && y16) {
    f.template operator()<uint16_t, uint16_t>();
  } else if (z16) {
    f.template operator()<uint16_t, float>();
  } else {
    f.template operator()<float, uint16_t>();
  }
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> bn_act_forward(
    const at::Tensor& z, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& residual, double p,
    int64_t seed, double eps, bool relu, bool bf16_y) {
  const Shape sh{z.size(0), z.size(1), z.numel() / (z.size(0) * z.size(1))};
  const auto opts = z.options().dtype(compute_dtype(z));
  at::Tensor y = at::empty(z.sizes(), bf16_y ? opts.dtype(at::kBFloat16) : opts);
  at::Tensor mean = at::empty({sh.C}, opts);
  at::Tensor var = at::empty({sh.C}, opts);
  const Mask mk = make_mask(p, seed);
  if (z.scalar_type() == at::kBFloat16 || bf16_y) {
    dispatch_bf16(z.scalar_type() == at::kBFloat16, bf16_y, [&]<typename Z, typename Y>() {
      bn_act_forward_impl<float, Z, Y>(z, weight, bias, residual, sh, mk, p, eps, relu, y, mean,
                                       var);
    });
    return {y, mean, var};
  }
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "posekernels_bn_act_forward", [&] {
    bn_act_forward_impl<scalar_t, scalar_t, scalar_t>(z, weight, bias, residual, sh, mk, p, eps,
                                                      relu, y, mean, var);
  });
  return {y, mean, var};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> bn_act_backward(
    const at::Tensor& grad_y, const at::Tensor& z, const at::Tensor& y,
    const std::optional<at::Tensor>& weight, const at::Tensor& mean, const at::Tensor& var,
    double p, int64_t seed, double eps, bool relu, bool has_residual) {
  const Shape sh{z.size(0), z.size(1), z.numel() / (z.size(0) * z.size(1))};
  const auto opts = z.options().dtype(compute_dtype(z));
  at::Tensor gz = at::empty(z.sizes(), z.options());
  at::Tensor gres = has_residual ? at::empty(z.sizes(), opts) : at::empty({0}, opts);
  at::Tensor ggamma = at::empty({sh.C}, opts);
  at::Tensor gbeta = at::empty({sh.C}, opts);
  const Mask mk = make_mask(p, seed);
  at::Tensor* gr = has_residual ? &gres : nullptr;
  const bool z16 = z.scalar_type() == at::kBFloat16, y16 = y.scalar_type() == at::kBFloat16;
  if (z16 || y16) {
    // pass 1's products go to a float32 scratch unless grad_z itself is float32
    at::Tensor d = z16 ? at::empty(z.sizes(), opts) : gz;
    dispatch_bf16(z16, y16, [&]<typename Z, typename Y>() {
      bn_act_backward_impl<float, Z, Y>(grad_y, z, y, weight, mean, var, sh, mk, p, eps, relu, d,
                                        gz, gr, ggamma, gbeta);
    });
    return {gz, ggamma, gbeta, gres};
  }
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "posekernels_bn_act_backward", [&] {
    bn_act_backward_impl<scalar_t, scalar_t, scalar_t>(grad_y, z, y, weight, mean, var, sh, mk,
                                                       p, eps, relu, gz, gz, gr, ggamma, gbeta);
  });
  return {gz, ggamma, gbeta, gres};
}

}  // namespace posekernels::cpu
