// Row-major matrix product on raw buffers, for the per-sample work of the CPU kernels.
//
//   C (R x S) = alpha * op(A) (R x Q) * op(B) (Q x S) + beta * C
//
// op(A) is A (stored R x Q, row stride lda) or, with trans_a, A^T (A stored Q x R); the same for B.
// Every matrix is row-major with unit column stride and the given row stride (leading dimension).
// beta == 0 ignores the old contents of C (it may hold garbage, NaN included).
//
// Implementation: float32 products that run single-threaded anyway (inside the callers' parallel
// loops, or with one thread), and small ones, use the AVX-512 kernel of gemm_avx512.cpp when the
// CPU has AVX-512F
// (set POSEKERNELS_CPU_GEMM=blas to turn it off); everything else is an ATen matrix product
// (Tensor::addmm_) on tensors that view the buffers, so it runs on whatever BLAS this torch was
// built with. Called inside an OpenMP parallel region the product itself runs single-threaded
// (ATen and MKL do not nest), which is what the callers want: they parallelise over samples or
// time blocks themselves; called outside one, the BLAS may use all threads.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/ScalarType.h>
#include <c10/util/BFloat16.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

namespace posekernels::cpu {

// True when this CPU (and OS) support AVX-512F and POSEKERNELS_CPU_GEMM is not "blas".
bool avx512_gemm_supported();

// The AVX-512 float32 product (same contract as gemm_rm; single-threaded). Q must be >= 1.
void sgemm_avx512(bool trans_a, bool trans_b, int64_t R, int64_t S, int64_t Q, float alpha,
                  const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
                  int64_t ldc, const float* row_bias = nullptr, bool relu = false);

// True when this CPU supports AVX-512 BF16 (with F and BW) and POSEKERNELS_CPU_GEMM is not "blas".
bool avx512_bf16_supported();

// C (R x S) = act(bf16(A) @ bf16(B) + beta * C + row_bias[r]) with float32 accumulation
// (gemm_bf16.cpp): A (R x Q, row stride lda) bfloat16, B (Q x S, row stride ldb) float32 rounded to
// bfloat16 as it is packed, C float32; no transpositions. AVX-512 BF16 where the CPU has it, else
// the same operand values through the float32 product. Runs single-threaded inside a parallel
// region, over column panels in parallel outside one (large products).
void gemm_bf16(int64_t R, int64_t S, int64_t Q, const c10::BFloat16* A, int64_t lda,
               const float* B, int64_t ldb, float beta, float* C, int64_t ldc,
               const float* row_bias = nullptr, bool relu = false);

// The same product with B already packed (bf16_prepacked_* below; a producer that writes its
// result straight in this layout saves gemm_bf16's packing pass): only with AVX-512 BF16
// (avx512_bf16_supported()), single-threaded. Bp holds op(B) (Q x S) cut into column panels of
// kBf16Panel; panel p starts at word p * bf16_prepacked_pairs(Q) * kBf16Panel and holds
// ceil(Q / 2) rows of bf16_prepacked_width(S, p) 32-bit words, word (q, j) = (B[2q][48p + j] in
// the low half, B[2q + 1][48p + j] in the high half) as bfloat16; zero past Q and past the
// panel's columns. The sums run in the same order as gemm_bf16's, so the two give the same bits.
// With Cin, the beta term is beta * Cin (R x S, row stride ldcin; Cin may not overlap C) instead of
// beta * C: a residual added without first copying it into C.
constexpr int64_t kBf16Panel = 48;
inline int64_t bf16_prepacked_pairs(int64_t Q) { return (Q + 1) / 2; }
inline int64_t bf16_prepacked_panels(int64_t S) { return (S + kBf16Panel - 1) / kBf16Panel; }
inline int64_t bf16_prepacked_words(int64_t Q, int64_t S) {
  return bf16_prepacked_panels(S) * bf16_prepacked_pairs(Q) * kBf16Panel;
}
inline int64_t bf16_prepacked_width(int64_t S, int64_t panel) {
  const int64_t cols = S - panel * kBf16Panel;
  return cols >= kBf16Panel ? kBf16Panel : (cols + 15) / 16 * 16;
}
void gemm_bf16_prepacked(int64_t R, int64_t S, int64_t Q, const c10::BFloat16* A, int64_t lda,
                         const uint32_t* Bp, float beta, float* C, int64_t ldc,
                         const float* row_bias = nullptr, bool relu = false,
                         const float* Cin = nullptr, int64_t ldcin = 0);
// Zero the lanes past the last column in the last panel of a prepacked operand (Q x S).
inline void zero_bf16_prepacked_tail(int64_t Q, int64_t S, uint32_t* Bp) {
  const int64_t pairs = bf16_prepacked_pairs(Q), P = bf16_prepacked_panels(S) - 1;
  const int64_t width = bf16_prepacked_width(S, P), used = S - P * kBf16Panel;
  uint32_t* panel = Bp + P * pairs * kBf16Panel;
  for (int64_t q = 0; used < width && q < pairs; ++q) {
    std::fill(panel + q * width + used, panel + (q + 1) * width, 0u);
  }
}
// Whether the producers of bf16 products' B operands (the temporal convolution's Winograd input
// transform, the graph convolution's joint mixing) write them straight in the prepacked layout:
// AVX-512 BF16 and POSEKERNELS_CPU_BF16_PACK not "separate" (read once per process). "separate"
// writes float32 rows that gemm_bf16 packs: the same bits, the way before the fusion.
bool bf16_fused_pack_enabled();

// C (R x S) = bf16(A) @ bf16(op(B)) + beta * C with a float32 A as well (both operands rounded to
// bfloat16 as they are packed, float32 sums), op(B) = B (Q x S, row stride ldb) or, with
// trans_b, B^T (B stored S x Q): the activation-by-activation products (weight gradients) of the
// graph convolution's bf16 training path. Always single-threaded; the same values through the
// float32 product without AVX-512 BF16.
void gemm_bf16_rounded(int64_t R, int64_t S, int64_t Q, const float* A, int64_t lda,
                       bool trans_b, const float* B, int64_t ldb, float beta, float* C,
                       int64_t ldc);

// The K joint-mixing products of the graph convolution in one sweep over X (gemm_avx512.cpp):
// Z_k (rows x V, at Z + k * rows * V) = X (rows x V) @ M_k (V x V, at M + k * V * V), all
// row-major, float32, single-threaded. X is contiguous, or with group_rows > 0 read in place as
// groups of group_rows contiguous rows, group g at X + g * group_stride (the columns of a block of
// frames of a (C, T*V) tensor: one group per channel). Only when joint_mix_avx512_fits(V, K)
// (AVX-512 and K * V <= 64).
bool joint_mix_avx512_fits(int64_t V, int64_t K);
void joint_mix_avx512(int64_t rows, int64_t V, int64_t K, const float* X, const float* M,
                      float* Z, int64_t group_rows = 0, int64_t group_stride = 0);
// The same K products for the bf16 channel mix that follows them: X is C channels (C even) of Tj
// frames, channel c at X + c * ldc (Tj * V contiguous floats), and Z = [X @ M_k] (K*C rows (k, c),
// Tj*V columns (t, w)) is written rounded to bfloat16 straight in gemm_bf16_prepacked's layout
// (gemm.h) instead of as float32 rows for gemm_bf16 to pack. Only when joint_mix_avx512_fits(V, K)
// and bf16_fused_pack_enabled().
void joint_mix_bf16_packed(int64_t C, int64_t Tj, int64_t V, int64_t K, const float* X,
                           int64_t ldc, const float* M, uint32_t* Zp);

constexpr int64_t kSmallProduct = int64_t{1} << 22;

template <typename scalar_t>
inline at::Tensor view_matrix(const scalar_t* data, int64_t rows, int64_t cols, int64_t ld) {
  auto options = at::TensorOptions().dtype(c10::CppTypeToScalarType<scalar_t>::value);
  return at::from_blob(const_cast<scalar_t*>(data), {rows, cols}, {ld, 1}, options);
}

//
// Optional epilogue: C = act(alpha * op(A) op(B) + beta * C + row_bias[r]) with a per-row bias
// (R entries, or nullptr) and act = ReLU when relu (NaN stays NaN).
template <typename scalar_t>
inline void gemm_rm(bool trans_a, bool trans_b, int64_t R, int64_t S, int64_t Q, scalar_t alpha,
                    const scalar_t* A, int64_t lda, const scalar_t* B, int64_t ldb, scalar_t beta,
                    scalar_t* C, int64_t ldc, const scalar_t* row_bias = nullptr,
                    bool relu = false) {
  if constexpr (std::is_same_v<scalar_t, float>) {
    // Outside a parallel region a large product is left to the (multithreaded) BLAS; a small
    // one (under ~4M multiply-adds, tens of microseconds) runs here, where threading costs more
    // than it gains (the last layers of a batch-1 forward).
    const bool single = at::in_parallel_region() || at::get_num_threads() == 1 ||
                        R * S * Q <= kSmallProduct;
    if (Q > 0 && single && avx512_gemm_supported()) {
      sgemm_avx512(trans_a, trans_b, R, S, Q, alpha, A, lda, B, ldb, beta, C, ldc, row_bias, relu);
      return;
    }
  }
  at::Tensor a = trans_a ? view_matrix(A, Q, R, lda).t() : view_matrix(A, R, Q, lda);
  at::Tensor b = trans_b ? view_matrix(B, S, Q, ldb).t() : view_matrix(B, Q, S, ldb);
  at::Tensor c = view_matrix(C, R, S, ldc);
  c.addmm_(a, b, beta, alpha);
  if (row_bias == nullptr && !relu) {
    return;
  }
  for (int64_t r = 0; r < R; ++r) {
    scalar_t* row = C + r * ldc;
    const scalar_t bias = row_bias != nullptr ? row_bias[r] : scalar_t(0);
    for (int64_t j = 0; j < S; ++j) {
      const scalar_t y = row[j] + bias;
      row[j] = relu && y < scalar_t(0) ? scalar_t(0) : y;
    }
  }
}

// A weight product C = act(W[off:] (R x Q, row stride ldw) @ B + beta * C + row_bias) where the
// weight tensor W holds the compute type, or bfloat16 for a float32 computation (the inference
// plans' bf16 product path: gemm_bf16).
template <typename scalar_t>
inline void weight_gemm(const at::Tensor& W, int64_t off, int64_t R, int64_t S, int64_t Q,
                        int64_t ldw, const scalar_t* B, int64_t ldb, scalar_t beta, scalar_t* C,
                        int64_t ldc, const scalar_t* row_bias = nullptr, bool relu = false) {
  if constexpr (std::is_same_v<scalar_t, float>) {
    if (W.scalar_type() == at::kBFloat16) {
      gemm_bf16(R, S, Q, W.const_data_ptr<c10::BFloat16>() + off, ldw, B, ldb, beta, C, ldc,
                row_bias, relu);
      return;
    }
  }
  gemm_rm<scalar_t>(false, false, R, S, Q, 1, W.const_data_ptr<scalar_t>() + off, ldw, B, ldb,
                    beta, C, ldc, row_bias, relu);
}

}  // namespace posekernels::cpu
