// Single-threaded float32 matrix product with AVX-512, for the per-block work of the CPU kernels.
//
//   C (R x S) = alpha * op(A) (R x Q) * op(B) (Q x S) + beta * C      (row-major, see gemm.h)
//
// Why it exists: the BLAS that the PyTorch CPU wheel links runs its float32 products on this
// library's typical hardware (AMD EPYC with AVX-512) at about half the speed that the cores
// reach with 512-bit FMAs (measured: ~107 GFLOP/s per core for torch.mm against ~230 for
// oneDNN's own convolution kernels on the same core). The graph convolution's products are small
// (96-288 rows and depth, a few hundred columns per time block), so a plain register-blocked
// kernel gets most of the way to the FMA peak.
//
// Scheme: the columns of C are cut into panels of up to 48 (three 16-lane vectors), the depth Q
// into blocks of up to kDepthBlock; each (panel, depth block) of op(B) is copied into a
// contiguous, zero-padded, 64-byte aligned buffer (so the inner loop reads it linearly whatever
// the layout or transposition of B), and a micro-kernel keeps an MR x (16 * NV) tile of C in
// registers (MR <= 8 rows, NV <= 3 vectors: up to 24 accumulators), broadcasting op(A)'s entries
// straight from A (op(A)(r, k) = A[r * row_stride + k * depth_stride], so A^T needs no copy).
// Only the stores at the right edge of C are masked. The depth blocks after the first
// accumulate into C (beta = 1), so the result is alpha * sum + beta * C with one rounding per
// block. An optional epilogue adds a per-row bias and applies ReLU as the last block stores.
//
// The functions are compiled for AVX-512F through target attributes (the rest of the library is
// built for the baseline ISA); callers must check avx512_gemm_supported() first.
#include "cpu/gemm.h"
#include "cpu/gemm_tile.h"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define POSEKERNELS_HAVE_AVX512_GEMM 1
#include <immintrin.h>
#endif

namespace posekernels::cpu {

#ifdef POSEKERNELS_HAVE_AVX512_GEMM

namespace {

using tile::kLanes;
constexpr int64_t kPanelVectors = 3;
constexpr int64_t kPanelWidth = kLanes * kPanelVectors;  // 48 columns
// Depth per packed block: 256 x 48 floats = 48 KiB, about the L1 data cache of current cores.
constexpr int64_t kDepthBlock = 256;

#define PK_AVX512 __attribute__((target("avx512f")))
#define PK_AVX512_BF16 __attribute__((target("avx512f,avx512bw,avx512bf16")))

// acc[r][v] tile of C (MR x 16*NV) = alpha * op(A)[rows, depth block] @ Bp + beta * C.
template <int MR, int NV>
PK_AVX512 void micro_kernel(int64_t depth, const float* A, int64_t row_stride,
                            int64_t depth_stride, const float* Bp, float alpha, float beta,
                            float* C, int64_t ldc, int64_t cols, const float* row_bias,
                            bool relu) {
  __m512 acc[MR][NV];
  tile::zero(acc);
  const float* a[MR];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) {
    a[r] = A + r * row_stride;
  }
  for (int64_t k = 0; k < depth; ++k) {
    __m512 b[NV];
#pragma GCC unroll 3
    for (int v = 0; v < NV; ++v) {
      b[v] = _mm512_load_ps(Bp + v * kLanes);
    }
    Bp += NV * kLanes;
    const int64_t ak = k * depth_stride;
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const __m512 av = _mm512_set1_ps(a[r][ak]);
#pragma GCC unroll 3
      for (int v = 0; v < NV; ++v) {
        acc[r][v] = _mm512_fmadd_ps(av, b[v], acc[r][v]);
      }
    }
  }
  tile::store<MR, NV>(acc, alpha, beta, C, ldc, cols, row_bias, relu);
}

template <int NV>
PK_AVX512 void rows_of_panel(int64_t R, int64_t depth, const float* A, int64_t row_stride,
                             int64_t depth_stride, const float* Bp, float alpha, float beta,
                             float* C, int64_t ldc, int64_t cols, const float* row_bias,
                             bool relu) {
  tile::for_row_tiles(R, [&]<int MR>(int64_t i) {
    micro_kernel<MR, NV>(depth, A + i * row_stride, row_stride, depth_stride, Bp, alpha, beta,
                         C + i * ldc, ldc, cols, row_bias != nullptr ? row_bias + i : nullptr,
                         relu);
  });
}

// GCC 12 reports the "undefined" pass-through operands inside these intrinsics' own definitions
// as maybe-uninitialised once they are inlined here; every vector below is written before use.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
// op(B)(k, j) = B[j * ldb + k]: 16 stored rows (masked at the depth's end; zero rows past the
// panel's columns) are loaded as 16 x 16 tiles, transposed in registers and stored as 16-column
// rows of the panel, which also writes its zero padding. Scalar copies here used to cost about
// as much as the product itself for the (row-major A) x (row-major B)^T products of the graph
// convolution's backward.
PK_AVX512 void pack_panel_transposed(const float* B, int64_t ldb, int64_t k0, int64_t depth,
                                     int64_t j0, int64_t cols, int64_t width, float* Bp) {
  for (int64_t jj = 0; jj < width; jj += kLanes) {
    const int64_t rows = std::min<int64_t>(kLanes, cols - jj);  // 1..16 stored rows
    for (int64_t kk = 0; kk < depth; kk += kLanes) {
      const int64_t kn = std::min<int64_t>(kLanes, depth - kk);
      const __mmask16 km = tile::lane_mask(kn);
      __m512 r[16];
      for (int64_t i = 0; i < kLanes; ++i) {
        r[i] = i < rows ? _mm512_maskz_loadu_ps(km, B + (j0 + jj + i) * ldb + k0 + kk)
                        : _mm512_setzero_ps();
      }
      tile::transpose16(r);
      for (int64_t i = 0; i < kn; ++i) {
        _mm512_store_ps(Bp + (kk + i) * width + jj, r[i]);
      }
    }
  }
}
#pragma GCC diagnostic pop

// Bp (depth x NV*16, zero-padded) <- op(B)[k0 : k0 + depth, j0 : j0 + cols].
void pack_panel(const float* B, int64_t ldb, bool trans_b, int64_t k0, int64_t depth, int64_t j0,
                int64_t cols, int64_t width, float* Bp) {
  if (!trans_b) {
    for (int64_t k = 0; k < depth; ++k) {
      float* dst = Bp + k * width;
      std::memcpy(dst, B + (k0 + k) * ldb + j0, sizeof(float) * cols);
      std::memset(dst + cols, 0, sizeof(float) * (width - cols));
    }
    return;
  }
  pack_panel_transposed(B, ldb, k0, depth, j0, cols, width, Bp);
}

float* panel_buffer() {
  // One per thread, 64-byte aligned, sized for the largest panel; never freed (a few tens of KiB
  // per thread that ever ran a product).
  struct Buffer {
    float* data = nullptr;
    Buffer() {
      data = static_cast<float*>(std::aligned_alloc(64, sizeof(float) * kDepthBlock * kPanelWidth));
    }
    ~Buffer() { std::free(data); }
  };
  thread_local Buffer buffer;
  return buffer.data;
}

// ------------------------------------------------------------------ joint mixing: Z_k = X @ M_k
// X (rows x V) times K small (V x V) matrices at once: the K products share their A operand, so
// one panel [M_0 | M_1 | ...] (V x K*V, up to four vectors) is multiplied in one sweep over X
// instead of K sweeps whose V < 32 output columns leave most of a second vector's lanes idle
// (V = 17: 17 of 32 lanes; K = 3 together: 51 of 64).
constexpr int kMixRows = 6;  // rows per tile: 6 x 4 accumulators + 4 panel vectors + 1 broadcast

// acc[r] = row r of X (at xr[r], V values) times the panel, for the MR rows of a tile.
template <int MR, int NV>
PK_AVX512 inline void mix_accumulate(int64_t V, const float* const (&xr)[MR], const float* Bp,
                                     __m512 (&acc)[MR][NV]) {
  tile::zero(acc);
  for (int64_t d = 0; d < V; ++d) {
    __m512 b[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      b[v] = _mm512_load_ps(Bp + (d * NV + v) * kLanes);
    }
#pragma GCC unroll 6
    for (int r = 0; r < MR; ++r) {
      const __m512 a = _mm512_set1_ps(xr[r][d]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        acc[r][v] = _mm512_fmadd_ps(a, b[v], acc[r][v]);
      }
    }
  }
}

// Rows i .. i + MR - 1 of X (row i at xr[i - i0]) times the panel, into rows i.. of every Z_k.
template <int MR, int NV>
PK_AVX512 void mix_tile(int64_t V, int64_t K, const float* const (&xr)[MR], const float* Bp,
                        float* Z, int64_t rows) {
  __m512 acc[MR][NV];
  mix_accumulate<MR, NV>(V, xr, Bp, acc);
  // row r, column k * V + w of the tile goes to Z_k[r, w] (Z_k = Z + k * rows * V)
  alignas(64) float row[4 * kLanes];
#pragma GCC unroll 6
  for (int r = 0; r < MR; ++r) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      _mm512_store_ps(row + v * kLanes, acc[r][v]);
    }
    for (int64_t k = 0; k < K; ++k) {
      float* dst = Z + k * rows * V + r * V;
      const float* src = row + k * V;
      for (int64_t w = 0; w < V; w += kLanes) {
        const int64_t n = std::min<int64_t>(kLanes, V - w);
        const __mmask16 m = tile::lane_mask(n);
        _mm512_mask_storeu_ps(dst + w, m, _mm512_maskz_loadu_ps(m, src + w));
      }
    }
  }
}

// Row i of X: in groups of group_rows contiguous rows, group g starting at X + g * group_stride.
inline const float* mix_row(const float* X, int64_t V, int64_t group_rows, int64_t group_stride,
                            int64_t i) {
  const int64_t g = i / group_rows;
  return X + g * group_stride + (i - g * group_rows) * V;
}

template <int NV>
PK_AVX512 void mix_rows(int64_t rows, int64_t V, int64_t K, const float* X, int64_t group_rows,
                        int64_t group_stride, const float* Bp, float* Z) {
  int64_t i = 0;
  for (; i + kMixRows <= rows; i += kMixRows) {
    const float* xr[kMixRows];
    for (int r = 0; r < kMixRows; ++r) {
      xr[r] = mix_row(X, V, group_rows, group_stride, i + r);
    }
    mix_tile<kMixRows, NV>(V, K, xr, Bp, Z + i * V, rows);
  }
  for (; i < rows; ++i) {
    const float* xr[1] = {mix_row(X, V, group_rows, group_stride, i)};
    mix_tile<1, NV>(V, K, xr, Bp, Z + i * V, rows);
  }
}

// Frames t .. t + F - 1 of the channel pair (c, c + 1) (rows x0 + f * V and x1 + f * V) times
// the panel: the 2F rows' K mixes, stored as depth pairs (k * C + c) / 2 = k * C / 2 + q0 of the
// packed bf16 Z (columns (t + f) * V + w; gemm.h's layout), frame t + f's columns at
// runs[f * chunks ..] (chunks = ceil(V / 16); the same for every k and channel pair).
template <int F, int NV>
PK_AVX512_BF16 void mix_tile_pairs(int64_t V, int64_t K, const float* x0, const float* x1,
                                   const float* Bp, uint32_t* Zp, const tile::Bf16Run* runs,
                                   int64_t chunks, int64_t half_c, int64_t q0) {
  const float* xr[2 * F];  // rows 2f and 2f + 1: frame t + f of channels c and c + 1
  for (int f = 0; f < F; ++f) {
    xr[2 * f] = x0 + f * V;
    xr[2 * f + 1] = x1 + f * V;
  }
  __m512 acc[2 * F][NV];
  mix_accumulate<2 * F, NV>(V, xr, Bp, acc);
  // each frame's 2 x K*V sums rounded and interleaved as words at once (whole vectors), then
  // column w of mix k read back from word k * V + w
  alignas(64) uint32_t words[4 * kLanes];
#pragma GCC unroll 3
  for (int f = 0; f < F; ++f) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      _mm512_store_si512(words + v * kLanes, tile::bf16_pair_words(acc[2 * f][v],
                                                                   acc[2 * f + 1][v]));
    }
    const tile::Bf16Run* run = runs + f * chunks;
    for (int64_t k = 0; k < K; ++k) {
      for (int64_t ch = 0; ch < chunks; ++ch) {
        const int64_t w = ch * kLanes;
        const __m512i col = _mm512_maskz_loadu_epi32(tile::lane_mask(V - w), words + k * V + w);
        tile::store_bf16_words(Zp, run[ch], k * half_c + q0, col);
      }
    }
  }
}

template <int NV>
PK_AVX512_BF16 void mix_pairs(int64_t C, int64_t Tj, int64_t V, int64_t K, const float* X,
                              int64_t ldc, const float* Bp, uint32_t* Zp) {
  constexpr int kFrames = kMixRows / 2;  // 3 frames x 2 channels: mix_tile's 6 rows
  const int64_t pairs = K * C / 2, cols = Tj * V, chunks = (V + kLanes - 1) / kLanes;
  std::vector<tile::Bf16Run> runs(Tj * chunks);  // where each frame's columns lie in Z
  for (int64_t t = 0; t < Tj; ++t) {
    tile::bf16_runs(pairs, cols, t * V, V, runs.data() + t * chunks);
  }
  for (int64_t c = 0; c < C; c += 2) {
    const float* x0 = X + c * ldc;
    const float* x1 = x0 + ldc;
    int64_t t = 0;
    for (; t + kFrames <= Tj; t += kFrames) {
      mix_tile_pairs<kFrames, NV>(V, K, x0 + t * V, x1 + t * V, Bp, Zp,
                                  runs.data() + t * chunks, chunks, C / 2, c / 2);
    }
    for (; t < Tj; ++t) {
      mix_tile_pairs<1, NV>(V, K, x0 + t * V, x1 + t * V, Bp, Zp, runs.data() + t * chunks,
                            chunks, C / 2, c / 2);
    }
  }
  zero_bf16_prepacked_tail(K * C, cols, Zp);
}

// Bp (V x nv*16, zero-padded) <- [M_0 | M_1 | ... | M_{K-1}] in the thread's panel buffer.
float* mix_panel(int64_t V, int64_t K, const float* M, int64_t nv) {
  float* Bp = panel_buffer();  // V x nv*16 <= 64 x 64 floats: within the panel buffer
  if (Bp == nullptr) {
    throw std::bad_alloc();
  }
  for (int64_t d = 0; d < V; ++d) {
    float* dst = Bp + d * nv * kLanes;
    std::memset(dst, 0, sizeof(float) * nv * kLanes);
    for (int64_t k = 0; k < K; ++k) {
      std::memcpy(dst + k * V, M + k * V * V + d * V, sizeof(float) * V);
    }
  }
  return Bp;
}

// kernel.template operator()<NV>(Bp) with the panel [M_0 | ... | M_{K-1}] of NV vectors.
template <typename Kernel>
void with_mix_panel(int64_t V, int64_t K, const float* M, Kernel&& kernel) {
  const int64_t nv = (K * V + kLanes - 1) / kLanes;
  const float* Bp = mix_panel(V, K, M, nv);
  switch (nv) {
    case 1: kernel.template operator()<1>(Bp); break;
    case 2: kernel.template operator()<2>(Bp); break;
    case 3: kernel.template operator()<3>(Bp); break;
    default: kernel.template operator()<4>(Bp); break;
  }
}

}  // namespace

void joint_mix_bf16_packed(int64_t C, int64_t Tj, int64_t V, int64_t K, const float* X,
                           int64_t ldc, const float* M, uint32_t* Zp) {
  TORCH_CHECK(C % 2 == 0 && joint_mix_avx512_fits(V, K) && bf16_fused_pack_enabled(),
              "joint_mix_bf16_packed: needs an even C, K * V <= 64 and AVX-512 BF16");
  with_mix_panel(V, K, M, [&]<int NV>(const float* Bp) {
    mix_pairs<NV>(C, Tj, V, K, X, ldc, Bp, Zp);
  });
}

bool joint_mix_avx512_fits(int64_t V, int64_t K) {
  return avx512_gemm_supported() && V >= 1 && K >= 1 && K * V <= 4 * kLanes;
}

void joint_mix_avx512(int64_t rows, int64_t V, int64_t K, const float* X, const float* M,
                      float* Z, int64_t group_rows, int64_t group_stride) {
  if (group_rows <= 0) {  // one contiguous (rows x V) matrix
    group_rows = std::max<int64_t>(rows, 1);
    group_stride = 0;
  }
  with_mix_panel(V, K, M, [&]<int NV>(const float* Bp) {
    mix_rows<NV>(rows, V, K, X, group_rows, group_stride, Bp, Z);
  });
}

bool avx512_gemm_supported() {
  static const bool supported = [] {
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx512f")) {
      return false;
    }
    const char* env = std::getenv("POSEKERNELS_CPU_GEMM");
    return env == nullptr || std::strcmp(env, "blas") != 0;
  }();
  return supported;
}

void sgemm_avx512(bool trans_a, bool trans_b, int64_t R, int64_t S, int64_t Q, float alpha,
                  const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
                  int64_t ldc, const float* row_bias, bool relu) {
  const int64_t row_stride = trans_a ? 1 : lda;
  const int64_t depth_stride = trans_a ? lda : 1;
  float* Bp = panel_buffer();
  if (Bp == nullptr) {
    throw std::bad_alloc();
  }
  // Equal depth blocks of at most kDepthBlock (288 = 2 x 144, not 256 + 32).
  const int64_t depth_blocks = (Q + kDepthBlock - 1) / kDepthBlock;
  for (int64_t j0 = 0; j0 < S; j0 += kPanelWidth) {
    const int64_t cols = std::min(kPanelWidth, S - j0);
    const int64_t nv = (cols + kLanes - 1) / kLanes;
    const int64_t width = nv * kLanes;
    for (int64_t blk = 0; blk < depth_blocks; ++blk) {
      const int64_t k0 = Q / depth_blocks * blk + std::min(blk, Q % depth_blocks);
      const int64_t depth = Q / depth_blocks + (blk < Q % depth_blocks ? 1 : 0);
      pack_panel(B, ldb, trans_b, k0, depth, j0, cols, width, Bp);
      const float* Ak = A + k0 * depth_stride;
      const float b = k0 == 0 ? beta : 1.0f;
      float* Cj = C + j0;
      // the epilogue (row bias, ReLU) only when the last depth block stores the final values
      const bool final_block = blk == depth_blocks - 1;
      const float* bias = final_block ? row_bias : nullptr;
      const bool act = final_block && relu;
      switch (nv) {
        case 1: rows_of_panel<1>(R, depth, Ak, row_stride, depth_stride, Bp, alpha, b, Cj, ldc, cols, bias, act); break;
        case 2: rows_of_panel<2>(R, depth, Ak, row_stride, depth_stride, Bp, alpha, b, Cj, ldc, cols, bias, act); break;
        default: rows_of_panel<3>(R, depth, Ak, row_stride, depth_stride, Bp, alpha, b, Cj, ldc, cols, bias, act); break;
      }
    }
  }
}

#else  // no AVX-512 code path on this compiler/architecture

bool avx512_gemm_supported() { return false; }

bool joint_mix_avx512_fits(int64_t, int64_t) { return false; }

void joint_mix_bf16_packed(int64_t, int64_t, int64_t, int64_t, const float*, int64_t, const float*,
                           uint32_t*) {
  std::abort();  // unreachable: callers check bf16_fused_pack_enabled()
}

void joint_mix_avx512(int64_t, int64_t, int64_t, const float*, const float*, float*, int64_t,
                      int64_t) {
  std::abort();  // unreachable: callers check joint_mix_avx512_fits()
}

void sgemm_avx512(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t,
                  const float*, int64_t, float, float*, int64_t, const float*, bool) {
  std::abort();  // unreachable: callers check avx512_gemm_supported()
}

#endif

}  // namespace posekernels::cpu
