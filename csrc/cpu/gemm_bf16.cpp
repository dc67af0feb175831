// Single-threaded (or panel-parallel) product with bfloat16 operands and float32 accumulation, for
// the inference plans' weight products on CPUs with AVX-512 BF16:
//
//   C (R x S) = act(bf16(A) (R x Q) @ bf16(B) (Q x S) + beta * C + row_bias)   (row-major)
//
// A is a bfloat16 weight (stored once in that precision by the plan), B a float32 activation that
// is rounded to bfloat16 (round to nearest even) as it is packed. Every product of two bfloat16
// values is exact in float32 and the sums are float32, so the only rounding beyond a float32
// product is that of the two operands (relative 2^-9 each).
//
// Why: VDPBF16PS multiplies 32 bfloat16 pairs and accumulates into 16 float32 lanes per
// instruction, twice the multiply-adds of a float32 FMA; the many-stream inference of the
// training-step issue is bound by these products.
//
// Scheme (as in gemm_avx512.cpp): columns cut into panels of up to 48 (three vectors); the depth
// into blocks of up to kDepthBlock; per (panel, depth block) op(B) is packed into a buffer of
// depth pairs, each 32-bit lane holding (B[2p][j], B[2p + 1][j]) as two bfloat16 (the lower half
// the even depth), zero past the depth and the columns; A's rows are read as depth pairs in place
// (even depth and row stride; otherwise packed once per call), so one 32-bit broadcast feeds a
// VDPBF16PS. The micro-kernel keeps an MR x 16*NV tile
// of C in registers.
//
// gemm_bf16_prepacked takes op(B) already in that panel layout, for the whole depth (gemm.h),
// from producers that write it themselves (the Winograd input transform of temporal_conv.cpp,
// the joint mixing of gemm_avx512.cpp): no packing pass, and optionally the beta term read from
// another matrix (a residual added in the store instead of copied into C first).
//
// Without AVX-512 BF16 (or with POSEKERNELS_CPU_GEMM=blas) the same values are computed by
// rounding B to bfloat16 precision, widening A to float32 and running the float32 product
// (gemm_rm): equal up to the float32 summation order.
#include "cpu/gemm.h"
#include "cpu/gemm_tile.h"

#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define POSEKERNELS_HAVE_BF16_GEMM 1
#include <immintrin.h>
#endif

namespace posekernels::cpu {

namespace {

// Float32 value of bf16(x) (round to nearest even; NaN stays NaN), as c10::BFloat16 rounds.
inline float round_bf16(float x) { return static_cast<float>(c10::BFloat16(x)); }

// C = act(beta * C + row_bias): a product over an empty depth (beta == 0: C is not read).
void empty_sum(int64_t R, int64_t S, float beta, float* C, int64_t ldc, const float* row_bias,
               bool relu) {
  for (int64_t r = 0; r < R; ++r) {
    for (int64_t j = 0; j < S; ++j) {
      const float old = beta != 0.0f ? beta * C[r * ldc + j] : 0.0f;
      const float y = old + (row_bias != nullptr ? row_bias[r] : 0.0f);
      C[r * ldc + j] = relu && y < 0.0f ? 0.0f : y;
    }
  }
}

// C = act(bf16(A) @ bf16(op(B)) + beta * C + row_bias) through the float32 product (no AVX-512
// BF16): both operands rounded to bfloat16 values first (a bfloat16 A is exact already).
template <typename AT>
void emulated_product(int64_t R, int64_t S, int64_t Q, const AT* A, int64_t lda, bool trans_b,
                      const float* B, int64_t ldb, float beta, float* C, int64_t ldc,
                      const float* row_bias, bool relu) {
  at::Tensor a = at::empty({R, Q}, at::kFloat);
  at::Tensor b = at::empty({Q, S}, at::kFloat);
  float* ap = a.mutable_data_ptr<float>();
  float* bp = b.mutable_data_ptr<float>();
  for (int64_t r = 0; r < R; ++r) {
    for (int64_t k = 0; k < Q; ++k) {
      ap[r * Q + k] = round_bf16(static_cast<float>(A[r * lda + k]));
    }
  }
  for (int64_t k = 0; k < Q; ++k) {
    for (int64_t j = 0; j < S; ++j) {
      bp[k * S + j] = round_bf16(trans_b ? B[j * ldb + k] : B[k * ldb + j]);
    }
  }
  gemm_rm<float>(false, false, R, S, Q, 1.0f, ap, Q, bp, S, beta, C, ldc, row_bias, relu);
}

#ifdef POSEKERNELS_HAVE_BF16_GEMM

using tile::kLanes;
constexpr int64_t kPanelVectors = 3;
constexpr int64_t kPanelWidth = kLanes * kPanelVectors;  // 48 columns
// Depth per packed block: 512 (256 pairs) x 48 bfloat16 = 48 KiB, as the float32 kernel's block.
constexpr int64_t kDepthBlock = 512;
constexpr int64_t kMaxRows = 4096;  // rows of A packed per call chunk (the caller's R is split)

#define PK_BF16 __attribute__((target("avx512f,avx512bw,avx512bf16")))

template <int MR, int NV>
PK_BF16 void micro_kernel(int64_t pairs, const uint32_t* Ap, int64_t ap_stride,
                          const uint32_t* Bp, float beta, float* C, int64_t ldc, int64_t cols,
                          const float* row_bias, bool relu, const float* Cin, int64_t ldcin) {
  __m512 acc[MR][NV];
  tile::zero(acc);
  for (int64_t p = 0; p < pairs; ++p) {
    __m512bh b[NV];
#pragma GCC unroll 3
    for (int v = 0; v < NV; ++v) {
      b[v] = (__m512bh)_mm512_load_si512(Bp + v * kLanes);
    }
    Bp += NV * kLanes;
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const __m512bh a = (__m512bh)_mm512_set1_epi32(static_cast<int>(Ap[r * ap_stride + p]));
#pragma GCC unroll 3
      for (int v = 0; v < NV; ++v) {
        acc[r][v] = _mm512_dpbf16_ps(acc[r][v], a, b[v]);
      }
    }
  }
  tile::store<MR, NV>(acc, 1.0f, beta, C, ldc, cols, row_bias, relu, Cin, ldcin);
}

template <int NV>
PK_BF16 void rows_of_panel(int64_t R, int64_t pairs, const uint32_t* Ap, int64_t ap_stride,
                           const uint32_t* Bp, float beta, float* C, int64_t ldc, int64_t cols,
                           const float* row_bias, bool relu, const float* Cin, int64_t ldcin) {
  tile::for_row_tiles(R, [&]<int MR>(int64_t i) {
    micro_kernel<MR, NV>(pairs, Ap + i * ap_stride, ap_stride, Bp, beta, C + i * ldc, ldc, cols,
                         row_bias != nullptr ? row_bias + i : nullptr, relu,
                         Cin != nullptr ? Cin + i * ldcin : nullptr, ldcin);
  });
}

// Bp (pairs x width 32-bit lanes) <- B[k0 : k0 + depth, j0 : j0 + cols] rounded to bfloat16, the
// lane (p, j) holding rows 2p (low half) and 2p + 1 (high half); zero past depth and cols.
PK_BF16 void pack_b(const float* B, int64_t ldb, int64_t k0, int64_t depth, int64_t j0,
                    int64_t cols, int64_t width, uint32_t* Bp) {
  const int64_t pairs = (depth + 1) / 2;
  for (int64_t p = 0; p < pairs; ++p) {
    const float* r0 = B + (k0 + 2 * p) * ldb + j0;
    const bool has_r1 = 2 * p + 1 < depth;
    const float* r1 = r0 + ldb;
    uint32_t* dst = Bp + p * width;
    for (int64_t jj = 0; jj < width; jj += kLanes) {
      const int64_t n = std::min<int64_t>(kLanes, cols - jj);
      const __mmask16 m = tile::lane_mask(n);
      const __m512 v0 = _mm512_maskz_loadu_ps(m, r0 + jj);
      const __m512 v1 = has_r1 ? _mm512_maskz_loadu_ps(m, r1 + jj) : _mm512_setzero_ps();
      _mm512_store_si512(dst + jj, tile::bf16_pair_words(v0, v1));
    }
  }
}

// Ap (R x pairs 32-bit) <- A[:, k0 : k0 + depth] as depth pairs (zero past depth).
void pack_a(const c10::BFloat16* A, int64_t lda, int64_t R, int64_t k0, int64_t depth,
            uint32_t* Ap, int64_t ap_stride) {
  const int64_t pairs = (depth + 1) / 2;
  for (int64_t r = 0; r < R; ++r) {
    const uint16_t* src = reinterpret_cast<const uint16_t*>(A + r * lda + k0);
    uint32_t* dst = Ap + r * ap_stride;
    for (int64_t p = 0; p < pairs; ++p) {
      const uint32_t lo = src[2 * p];
      const uint32_t hi = 2 * p + 1 < depth ? src[2 * p + 1] : 0u;
      dst[p] = lo | (hi << 16);
    }
  }
}

// The same panel from a transposed B: lane (p, j) <- (B[j0 + j][k0 + 2p], B[j0 + j][k0 + 2p + 1])
// for B stored (S x Q). Each stored row's 32 depth values become 16 words in memory order (the
// two values of a pair are adjacent there), and 16 rows of such words are transposed in
// registers into 16 panel rows, as the float32 product packs its transposed panels.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
PK_BF16 void pack_b_transposed(const float* B, int64_t ldb, int64_t k0, int64_t depth,
                               int64_t j0, int64_t cols, int64_t width, uint32_t* Bp) {
  const int64_t pairs = (depth + 1) / 2;
  for (int64_t jj = 0; jj < width; jj += kLanes) {
    const int64_t rows = std::min<int64_t>(kLanes, cols - jj);  // 1..16 stored rows
    for (int64_t pp = 0; pp < pairs; pp += kLanes) {
      const int64_t d0 = 2 * pp;  // first depth of these 16 pairs
      const __mmask16 lo = tile::lane_mask(depth - d0);
      const __mmask16 hi = tile::lane_mask(depth - d0 - kLanes);
      __m512 r[16];
      for (int64_t i = 0; i < kLanes; ++i) {
        if (i < rows) {
          const float* src = B + (j0 + jj + i) * ldb + k0 + d0;
          const __m512 v0 = _mm512_maskz_loadu_ps(lo, src);
          const __m512 v1 = _mm512_maskz_loadu_ps(hi, src + kLanes);
          // bfloat16 d0 .. d0 + 31 in order: word w = (depth d0 + 2w, d0 + 2w + 1)
          r[i] = _mm512_castsi512_ps((__m512i)_mm512_cvtne2ps_pbh(v1, v0));
        } else {
          r[i] = _mm512_setzero_ps();
        }
      }
      tile::transpose16(r);
      const int64_t n = std::min<int64_t>(kLanes, pairs - pp);
      for (int64_t q = 0; q < n; ++q) {
        _mm512_store_si512(Bp + (pp + q) * width + jj, _mm512_castps_si512(r[q]));
      }
    }
  }
}
#pragma GCC diagnostic pop

// Ap (R x pairs 32-bit) <- a float32 A[:, 0 : Q] rounded to bfloat16 depth pairs (zero past Q).
PK_BF16 void pack_a_rounded(const float* A, int64_t lda, int64_t R, int64_t Q, uint32_t* Ap,
                            int64_t ap_stride) {
  const int64_t pairs = (Q + 1) / 2;
  for (int64_t r = 0; r < R; ++r) {
    const float* src = A + r * lda;
    uint32_t* dst = Ap + r * ap_stride;
    for (int64_t pp = 0; pp < pairs; pp += kLanes) {
      const int64_t d0 = 2 * pp;
      const __m512 v0 = _mm512_maskz_loadu_ps(tile::lane_mask(Q - d0), src + d0);
      const __m512 v1 = _mm512_maskz_loadu_ps(tile::lane_mask(Q - d0 - kLanes), src + d0 + kLanes);
      const __m512i words = (__m512i)_mm512_cvtne2ps_pbh(v1, v0);
      _mm512_mask_storeu_epi32(dst + pp, tile::lane_mask(pairs - pp), words);
    }
  }
}

struct Buffers {
  uint32_t* panel = nullptr;  // (kDepthBlock / 2) x kPanelWidth
  uint32_t* rows = nullptr;   // grows with the largest R x pairs seen by this thread
  int64_t rows_capacity = 0;
  Buffers() {
    panel = static_cast<uint32_t*>(
        std::aligned_alloc(64, sizeof(uint32_t) * (kDepthBlock / 2) * kPanelWidth));
    if (panel == nullptr) {
      throw std::bad_alloc();
    }
  }
  uint32_t* rows_for(int64_t n) {
    if (n > rows_capacity) {
      std::free(rows);
      const int64_t bytes = (sizeof(uint32_t) * n + 63) / 64 * 64;
      rows = static_cast<uint32_t*>(std::aligned_alloc(64, bytes));
      if (rows == nullptr) {
        rows_capacity = 0;
        throw std::bad_alloc();
      }
      rows_capacity = n;
    }
    return rows;
  }
  ~Buffers() {
    std::free(panel);
    std::free(rows);
  }
};

Buffers& buffers() {
  thread_local Buffers b;
  return b;
}

static_assert(kPanelWidth == kBf16Panel, "gemm.h's prepacked layout has this file's panels");

// Columns [j_begin, j_end) of the product (whole panels), one depth block at a time. B is packed
// here per (panel, depth block), or with `prepacked` (gemm.h's layout of the whole op(B)) read
// from there.
PK_BF16 void product_columns(int64_t R, int64_t Q, const float* B, int64_t ldb, bool trans_b,
                             float beta,
                             float* C, int64_t ldc,
                             const float* row_bias, bool relu, int64_t j_begin, int64_t j_end,
                             const uint32_t* Ap_all, int64_t ap_stride,
                             const uint32_t* prepacked = nullptr, const float* Cin = nullptr,
                             int64_t ldcin = 0) {
  uint32_t* const panel = buffers().panel;
  const int64_t depth_blocks = (Q + kDepthBlock - 1) / kDepthBlock;
  for (int64_t j0 = j_begin; j0 < j_end; j0 += kPanelWidth) {
    const int64_t cols = std::min(kPanelWidth, j_end - j0);
    const int64_t nv = (cols + kLanes - 1) / kLanes;
    const int64_t width = nv * kLanes;
    for (int64_t blk = 0; blk < depth_blocks; ++blk) {
      // even block starts (pairs never straddle blocks): blocks of a multiple of 2
      const int64_t k0 = blk * kDepthBlock;
      const int64_t depth = std::min(kDepthBlock, Q - k0);
      const int64_t pairs = (depth + 1) / 2;
      const uint32_t* Bp = panel;
      if (prepacked != nullptr) {
        Bp = prepacked + (j0 / kPanelWidth) * bf16_prepacked_pairs(Q) * kPanelWidth +
             (k0 / 2) * width;
      } else if (trans_b) {
        pack_b_transposed(B, ldb, k0, depth, j0, cols, width, panel);
      } else {
        pack_b(B, ldb, k0, depth, j0, cols, width, panel);
      }
      const uint32_t* Ak = Ap_all + k0 / 2;
      const float b = k0 == 0 ? beta : 1.0f;
      float* Cj = C + j0;
      // the first depth block adds beta * Cin (when given) instead of beta * C
      const float* Cin_j = k0 == 0 && Cin != nullptr ? Cin + j0 : nullptr;
      const bool final_block = blk == depth_blocks - 1;
      const float* bias = final_block ? row_bias : nullptr;
      const bool act = final_block && relu;
      switch (nv) {
        case 1:
          rows_of_panel<1>(R, pairs, Ak, ap_stride, Bp, b, Cj, ldc, cols, bias, act, Cin_j, ldcin);
          break;
        case 2:
          rows_of_panel<2>(R, pairs, Ak, ap_stride, Bp, b, Cj, ldc, cols, bias, act, Cin_j, ldcin);
          break;
        default:
          rows_of_panel<3>(R, pairs, Ak, ap_stride, Bp, b, Cj, ldc, cols, bias, act, Cin_j, ldcin);
          break;
      }
    }
  }
}

// A's rows (rows x Q bfloat16, row stride lda) as depth pairs for the micro-kernel: with an even
// depth and row stride and a 4-byte aligned A they already are (little-endian: the even element
// in the low half) and are read in place; otherwise packed into `store` (a private copy: the
// panel-parallel loops read it from every thread). Sets ap_stride (words per row).
const uint32_t* a_pairs(const c10::BFloat16* A, int64_t lda, int64_t rows, int64_t Q,
                        at::Tensor& store, int64_t& ap_stride) {
  if (Q % 2 == 0 && lda % 2 == 0 &&
      reinterpret_cast<std::uintptr_t>(A) % alignof(uint32_t) == 0) {
    ap_stride = lda / 2;
    return reinterpret_cast<const uint32_t*>(A);
  }
  ap_stride = (Q + 1) / 2;
  store = at::empty({rows * ap_stride}, at::kInt);
  uint32_t* packed = reinterpret_cast<uint32_t*>(store.mutable_data_ptr<int32_t>());
  pack_a(A, lda, rows, 0, Q, packed, ap_stride);
  return packed;
}

#endif  // POSEKERNELS_HAVE_BF16_GEMM

}  // namespace

bool avx512_bf16_supported() {
#ifdef POSEKERNELS_HAVE_BF16_GEMM
  static const bool supported = [] {
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512bw") ||
        !__builtin_cpu_supports("avx512bf16")) {
      return false;
    }
    const char* env = std::getenv("POSEKERNELS_CPU_GEMM");
    return env == nullptr || std::strcmp(env, "blas") != 0;
  }();
  return supported;
#else
  return false;
#endif
}

bool bf16_fused_pack_enabled() {
  static const bool fused = [] {
    const char* env = std::getenv("POSEKERNELS_CPU_BF16_PACK");
    return avx512_bf16_supported() && (env == nullptr || std::strcmp(env, "separate") != 0);
  }();
  return fused;
}

void gemm_bf16(int64_t R, int64_t S, int64_t Q, const c10::BFloat16* A, int64_t lda,
               const float* B, int64_t ldb, float beta, float* C, int64_t ldc,
               const float* row_bias, bool relu) {
  if (R <= 0 || S <= 0) {
    return;
  }
  if (Q <= 0) {
    empty_sum(R, S, beta, C, ldc, row_bias, relu);
    return;
  }
#ifdef POSEKERNELS_HAVE_BF16_GEMM
  if (avx512_bf16_supported()) {
    // A packed once per call (R x ceil(Q / 2) words; every depth block starts at an even k);
    // rows taken in chunks so that the packed block stays bounded
    for (int64_t r0 = 0; r0 < R; r0 += kMaxRows) {
      const int64_t rows = std::min(kMaxRows, R - r0);
      int64_t ap_stride = 0;
      at::Tensor ap;
      const uint32_t* Ap = a_pairs(A + r0 * lda, lda, rows, Q, ap, ap_stride);
      const float* bias = row_bias != nullptr ? row_bias + r0 : nullptr;
      float* Cr = C + r0 * ldc;
      const int64_t panels = (S + kPanelWidth - 1) / kPanelWidth;
      const bool single = at::in_parallel_region() || at::get_num_threads() == 1 ||
                          rows * S * Q <= kSmallProduct || panels == 1;
      if (single) {
        product_columns(rows, Q, B, ldb, false, beta, Cr, ldc, bias, relu, 0, S, Ap, ap_stride);
      } else {
        at::parallel_for(0, panels, 1, [&](int64_t p0, int64_t p1) {
          product_columns(rows, Q, B, ldb, false, beta, Cr, ldc, bias, relu, p0 * kPanelWidth,
                          std::min(S, p1 * kPanelWidth), Ap, ap_stride);
        });
      }
    }
    return;
  }
#endif
  emulated_product(R, S, Q, A, lda, false, B, ldb, beta, C, ldc, row_bias, relu);
}

void gemm_bf16_prepacked(int64_t R, int64_t S, int64_t Q, const c10::BFloat16* A, int64_t lda,
                         const uint32_t* Bp, float beta, float* C, int64_t ldc,
                         const float* row_bias, bool relu, const float* Cin, int64_t ldcin) {
  TORCH_CHECK(avx512_bf16_supported(),
              "gemm_bf16_prepacked: needs AVX-512 BF16 (avx512_bf16_supported())");
  if (R <= 0 || S <= 0) {
    return;
  }
  if (Q <= 0) {
    if (Cin != nullptr && beta != 0.0f) {  // C = act(beta * Cin + row_bias)
      for (int64_t r = 0; r < R; ++r) {
        std::copy(Cin + r * ldcin, Cin + r * ldcin + S, C + r * ldc);
      }
    }
    empty_sum(R, S, beta, C, ldc, row_bias, relu);
    return;
  }
#ifdef POSEKERNELS_HAVE_BF16_GEMM
  for (int64_t r0 = 0; r0 < R; r0 += kMaxRows) {
    const int64_t rows = std::min(kMaxRows, R - r0);
    int64_t ap_stride = 0;
    at::Tensor ap;
    const uint32_t* Ap = a_pairs(A + r0 * lda, lda, rows, Q, ap, ap_stride);
    product_columns(rows, Q, nullptr, 0, false, beta, C + r0 * ldc, ldc,
                    row_bias != nullptr ? row_bias + r0 : nullptr, relu, 0, S, Ap, ap_stride,
                    Bp, Cin != nullptr ? Cin + r0 * ldcin : nullptr, ldcin);
  }
#endif
}

void gemm_bf16_rounded(int64_t R, int64_t S, int64_t Q, const float* A, int64_t lda,
                       bool trans_b, const float* B, int64_t ldb, float beta, float* C,
                       int64_t ldc) {
  if (R <= 0 || S <= 0) {
    return;
  }
  if (Q <= 0) {
    empty_sum(R, S, beta, C, ldc, nullptr, false);
    return;
  }
#ifdef POSEKERNELS_HAVE_BF16_GEMM
  if (avx512_bf16_supported()) {
    const int64_t ap_stride = (Q + 1) / 2;
    for (int64_t r0 = 0; r0 < R; r0 += kMaxRows) {
      const int64_t rows = std::min(kMaxRows, R - r0);
      uint32_t* Ap = buffers().rows_for(rows * ap_stride);
      pack_a_rounded(A + r0 * lda, lda, rows, Q, Ap, ap_stride);
      product_columns(rows, Q, B, ldb, trans_b, beta, C + r0 * ldc, ldc, nullptr, false, 0, S,
                      Ap, ap_stride);
    }
    return;
  }
#endif
  emulated_product(R, S, Q, A, lda, trans_b, B, ldb, beta, C, ldc, nullptr, false);
}

}  // namespace posekernels::cpu
