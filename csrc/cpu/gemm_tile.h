// Pieces shared by the AVX-512 float32 product (gemm_avx512.cpp) and the bfloat16 one
// (gemm_bf16.cpp), also used by the Winograd transforms (temporal_conv.cpp): the mask of a partial
// vector, a 16 x 16 register transpose (the packing of transposed operands), the zeroing and the
// store (with its epilogue) of an MR x 16*NV register tile of C, and the walk over a panel's rows
// in tiles of kTileRows plus one remainder tile.
#pragma once

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "cpu/gemm.h"

namespace posekernels::cpu::tile {

constexpr int64_t kLanes = 16;    // float32 lanes of a 512-bit vector
constexpr int kTileRows = 8;      // rows of C per micro-kernel call

// The mask of the first n lanes of a 16-lane vector (n <= 0: none; n >= 16: all).
inline __mmask16 lane_mask(int64_t n) {
  return n >= kLanes ? __mmask16(0xFFFF) : n > 0 ? __mmask16((1u << n) - 1u) : __mmask16(0);
}

// acc[r][v] = 0 for the whole MR x NV register tile (the start of every micro-kernel).
template <int MR, int NV>
__attribute__((target("avx512f"), always_inline)) inline void zero(__m512 (&acc)[MR][NV]) {
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      acc[r][v] = _mm512_setzero_ps();
    }
  }
}

// C[r, 16 v + i] = act(alpha * acc[r][v] + row_bias[r] + beta * C0[r, 16 v + i]) for the MR rows
// of the tile, C0 = C, or with Cin the matrix there (row stride ldcin; the product's input term
// read from elsewhere than C); the last vector holds cols - 16 (NV - 1) (1..16) columns and only
// those are stored. beta == 0: C0 may hold garbage (NaN included) and is not read. act = ReLU
// when relu (NaN stays NaN, as in torch.relu).
template <int MR, int NV>
__attribute__((target("avx512f"))) inline void store(const __m512 (&acc)[MR][NV], float alpha,
                                                     float beta, float* C, int64_t ldc,
                                                     int64_t cols, const float* row_bias,
                                                     bool relu, const float* Cin = nullptr,
                                                     int64_t ldcin = 0) {
  const int64_t tail = cols - (NV - 1) * kLanes;
  const __mmask16 last = lane_mask(tail);
  const __m512 va = _mm512_set1_ps(alpha);
  const __m512 vb = _mm512_set1_ps(beta);
  const __m512 zero = _mm512_setzero_ps();
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) {
    float* c = C + r * ldc;
    const float* c0 = Cin != nullptr ? Cin + r * ldcin : c;
    const __m512 bias = _mm512_set1_ps(row_bias != nullptr ? row_bias[r] : 0.0f);
#pragma GCC unroll 3
    for (int v = 0; v < NV; ++v) {
      const __mmask16 m = v == NV - 1 ? last : __mmask16(0xFFFF);
      __m512 y = _mm512_fmadd_ps(acc[r][v], va, bias);
      if (beta != 0.0f) {
        y = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m, c0 + v * kLanes), y);
      }
      if (relu) {
        y = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(y, zero, _CMP_LT_OQ), y, zero);
      }
      _mm512_mask_storeu_ps(c + v * kLanes, m, y);
    }
  }
}

// GCC 12 reports the "undefined" pass-through operands inside these intrinsics' own definitions
// as maybe-uninitialised once they are inlined; every vector below is written before use.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
// In registers: r[i][j] <- r[j][i] for a 16 x 16 tile (32-bit, then 64-bit interleaves within
// 128-bit lanes, then two rounds of 128-bit lane shuffles).
__attribute__((target("avx512f"))) inline void transpose16(__m512 r[16]) {
  __m512 t[16], u[16], v[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {
    const __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 2]);
    const __m512d c = _mm512_castps_pd(t[4 * i + 1]), d = _mm512_castps_pd(t[4 * i + 3]);
    u[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
    u[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
    u[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(c, d));
    u[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(c, d));
  }
  for (int i = 0; i < 2; ++i) {
    for (int j = 0; j < 4; ++j) {
      v[8 * i + j] = _mm512_shuffle_f32x4(u[8 * i + j], u[8 * i + 4 + j], 0x88);
      v[8 * i + 4 + j] = _mm512_shuffle_f32x4(u[8 * i + j], u[8 * i + 4 + j], 0xdd);
    }
  }
  for (int j = 0; j < 8; ++j) {
    r[j] = _mm512_shuffle_f32x4(v[j], v[8 + j], 0x88);
    r[8 + j] = _mm512_shuffle_f32x4(v[j], v[8 + j], 0xdd);
  }
}
#pragma GCC diagnostic pop

// The 16-bit lane order that interleaves two converted rows (the result of
// _mm512_cvtne2ps_pbh(hi, lo): lo's 16 values, then hi's) into 16 depth pairs (lo[i], hi[i]).
alignas(64) inline constexpr uint16_t kBf16Interleave[32] = {
    0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23,
    8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};

// Where columns j0 .. j0 + lanes - 1 (lanes <= 16) of a bfloat16 B operand in
// gemm_bf16_prepacked's layout (gemm.h; `pairs` depth pairs, `cols` columns) lie: word (q, j0 + i)
// is at off0 + q * width0 + i for the first n0 lanes and, for a run that crosses into the next
// 48-column panel, at off1 + q * width1 + (i - n0) for the rest. The same for every depth pair, so
// a producer that writes many pairs at the same columns works it out once.
struct Bf16Run {
  int64_t off0 = 0, width0 = 0, off1 = 0, width1 = 0;
  __mmask16 first = 0;  // the lanes in the first panel
  __mmask16 rest = 0;   // the lanes past it (0: the run does not cross a panel)
  __mmask16 tail = 0;   // the first lanes - n0 words of the next panel
};

inline Bf16Run bf16_run(int64_t pairs, int64_t cols, int64_t j0, int64_t lanes) {
  Bf16Run r;
  const int64_t P = j0 / kBf16Panel, L = j0 % kBf16Panel, panel_words = pairs * kBf16Panel;
  const int64_t n0 = std::min(lanes, kBf16Panel - L);
  r.off0 = P * panel_words + L;
  r.width0 = bf16_prepacked_width(cols, P);
  r.first = lane_mask(n0);
  if (n0 < lanes) {
    r.off1 = (P + 1) * panel_words;
    r.width1 = bf16_prepacked_width(cols, P + 1);
    r.rest = __mmask16(lane_mask(lanes) & ~r.first);
    r.tail = lane_mask(lanes - n0);
  }
  return r;
}

// Word i = (lo[i] in the low half, hi[i] in the high half), rounded to bfloat16 (round to nearest
// even): two rows of a depth pair interleaved as gemm_bf16 packs them.
__attribute__((target("avx512f,avx512bw,avx512bf16"))) inline __m512i bf16_pair_words(
    __m512 lo, __m512 hi) {
  return _mm512_permutexvar_epi16(_mm512_load_si512(kBf16Interleave),
                                  (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
}

// Depth pair q of the run's columns <- the words w (bf16_pair_words); the part past a panel's
// end goes to the next panel.
__attribute__((target("avx512f,avx512bw,avx512bf16"))) inline void store_bf16_words(
    uint32_t* Bp, const Bf16Run& run, int64_t q, __m512i w) {
  _mm512_mask_storeu_epi32(Bp + run.off0 + q * run.width0, run.first, w);
  if (run.rest != 0) {
    _mm512_mask_storeu_epi32(Bp + run.off1 + q * run.width1, run.tail,
                             _mm512_maskz_compress_epi32(run.rest, w));
  }
}

// Depth pair q of the run's columns <- (lo[i], hi[i]), the two rows of the pair.
__attribute__((target("avx512f,avx512bw,avx512bf16"))) inline void store_bf16_pairs(
    uint32_t* Bp, const Bf16Run& run, int64_t q, __m512 lo, __m512 hi) {
  store_bf16_words(Bp, run, q, bf16_pair_words(lo, hi));
}

// The runs of 16 columns (the last one shorter) that cover columns [j0, j0 + n) in
// runs[0 .. ceil(n / 16)).
inline void bf16_runs(int64_t pairs, int64_t cols, int64_t j0, int64_t n, Bf16Run* runs) {
  for (int64_t w = 0; w < n; w += kLanes) {
    runs[w / kLanes] = bf16_run(pairs, cols, j0 + w, std::min<int64_t>(kLanes, n - w));
  }
}

// kernel.template operator()<MR>(i) for the tiles of rows [i, i + MR) covering [0, R): full tiles
// of kTileRows, then one of the remaining 1..7 rows.
template <typename Kernel>
inline void for_row_tiles(int64_t R, Kernel&& kernel) {
  int64_t i = 0;
  for (; i + kTileRows <= R; i += kTileRows) {
    kernel.template operator()<kTileRows>(i);
  }
  switch (R - i) {
    case 0: break;
    case 1: kernel.template operator()<1>(i); break;
    case 2: kernel.template operator()<2>(i); break;
    case 3: kernel.template operator()<3>(i); break;
    case 4: kernel.template operator()<4>(i); break;
    case 5: kernel.template operator()<5>(i); break;
    case 6: kernel.template operator()<6>(i); break;
    default: kernel.template operator()<7>(i); break;
  }
}

}  // namespace posekernels::cpu::tile

#endif
