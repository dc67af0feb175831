// Fused adaptive graph convolution on the CPU: forward and backward.
//
// Per sample n (x_n viewed as X (Cin, T*V), or equivalently (Cin*T, V)):
//   TP    = [theta_w; phi_w] (2*K*Ce, Cin) @ X + [theta_b; phi_b]      (only with attention)
//   S_k   = Theta_k^T Phi_k / (Ce*T), Theta_k, Phi_k viewed (Ce*T, V)  -> (V, V)
//   C_k   = softmax over v (the rows) of S_k; M_k = A_k + B_k + C_k
//   Z     = [X @ M_0; ...; X @ M_{K-1}]                                 (K*Cin, T*V)
//   y_n   = Wcat (Cout, K*Cin) @ Z + sum_k bias[k]                      one GEMM for all K
// With fewer samples than threads the forward instead splits each sample's columns (blocks of
// whole frames) over the threads; see forward_by_time_blocks.
// Threads take samples (backward: blocks of samples) one at a time; each thread works in its own
// scratch (Z, TP, M, ...), so no (N, K, Cin, T, V) intermediate is ever allocated, and each block
// of the backward accumulates its own partial weight gradients, summed in block order at the end. The backward recomputes TP (and Z) per sample
// instead of saving them; the softmax term comes from the forward's `attn` output.
#include "cpu/gemm.h"
#include "cpu/kernels.h"
#include "cpu/parallel.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace posekernels::cpu {
namespace {

using OptTensor = std::optional<at::Tensor>;

struct Sizes {
  int64_t N, C, T, V, K, O, E;  // E = Ce, 0 without attention
  int64_t TV() const { return T * V; }
  int64_t VV() const { return V * V; }
  int64_t KC() const { return K * C; }
  int64_t KE2() const { return 2 * K * E; }  // rows of the stacked theta/phi embedding
};

Sizes sizes_of(const at::Tensor& x, const at::Tensor& W, const OptTensor& theta_w) {
  Sizes s{};
  s.N = x.size(0);
  s.C = x.size(1);
  s.T = x.size(2);
  s.V = x.size(3);
  s.K = W.size(0);
  s.O = W.size(1);
  s.E = theta_w.has_value() ? theta_w->size(1) : 0;
  return s;
}

// Operands shared by every sample, prepared once per call (all small).
struct Prepared {
  at::Tensor M;         // (K, V, V): A + B
  at::Tensor Wcat;      // (Cout, K*Cin): W[k, o, c] stored at [o, k*Cin + c]
  at::Tensor bias_sum;  // (Cout,) = sum_k bias[k], or undefined
  at::Tensor TPw;       // (2*K*Ce, Cin): theta_w rows, then phi_w rows; undefined without attention
  at::Tensor TPb;       // (2*K*Ce,): theta_b then phi_b (zeros for an absent one), or undefined
  // Inference epilogue (agc_unit_forward only): y = act(agc(x) + shortcut(x)).
  at::Tensor sc_w;        // (Cout, Cin) 1x1 shortcut (its bias is folded into bias_sum), or undefined
  bool identity = false;  // shortcut = x (Cin == Cout)
  bool relu = false;
};

Prepared prepare(const Sizes& s, const at::Tensor& A, const at::Tensor& W, const OptTensor& bias,
                 const OptTensor& B, const OptTensor& theta_w, const OptTensor& theta_b,
                 const OptTensor& phi_w, const OptTensor& phi_b) {
  Prepared p;
  p.M = B.has_value() ? (A + *B).contiguous() : A;
  p.Wcat = W.permute({1, 0, 2}).contiguous();
  if (bias.has_value()) {
    p.bias_sum = bias->sum(0).contiguous();
  }
  if (s.E > 0) {
    const int64_t ke = s.K * s.E;
    p.TPw = at::cat({theta_w->reshape({ke, s.C}), phi_w->reshape({ke, s.C})}, 0).contiguous();
    if (theta_b.has_value() || phi_b.has_value()) {
      at::Tensor tb = theta_b.has_value() ? theta_b->reshape({ke}) : at::zeros({ke}, A.options());
      at::Tensor pb = phi_b.has_value() ? phi_b->reshape({ke}) : at::zeros({ke}, A.options());
      p.TPb = at::cat({tb, pb}, 0).contiguous();
    }
  }
  return p;
}

// The output columns Yj (Cout, cols; row stride ldy) of a block: Wcat @ Zj + bias, and for
// agc_unit_forward the shortcut of Xj (Cin, cols; row stride ldx) and the ReLU. The bias and the
// ReLU are applied as the main product stores its results (gemm_rm's epilogue); the shortcut is
// written first (the identity: a copy; a 1x1 map: its own product) and accumulated into. With Zp,
// Zj is given in gemm_bf16_prepacked's layout (bf16 Wcat; joint_mix_bf16_packed), and that
// product's store adds an identity shortcut itself (read from Xj: no copy).
template <typename scalar_t>
void block_output_product(const Sizes& s, const Prepared& p, const scalar_t* Xj, int64_t ldx,
                          const scalar_t* Zj, int64_t ldz, scalar_t* Yj, int64_t ldy,
                          int64_t cols, const uint32_t* Zp = nullptr) {
  const bool identity_in_store = Zp != nullptr && p.identity;
  scalar_t beta = 0;
  if (p.identity) {
    if (!identity_in_store) {
      for (int64_t o = 0; o < s.O; ++o) {
        std::copy(Xj + o * ldx, Xj + o * ldx + cols, Yj + o * ldy);
      }
    }
    beta = 1;
  } else if (p.sc_w.defined()) {
    weight_gemm<scalar_t>(p.sc_w, 0, s.O, cols, s.C, s.C, Xj, ldx, 0, Yj, ldy);
    beta = 1;
  }
  const scalar_t* bias = p.bias_sum.defined() ? p.bias_sum.const_data_ptr<scalar_t>() : nullptr;
  if constexpr (std::is_same_v<scalar_t, float>) {
    if (Zp != nullptr) {
      gemm_bf16_prepacked(s.O, cols, s.KC(), p.Wcat.const_data_ptr<c10::BFloat16>(), s.KC(), Zp,
                          beta, Yj, ldy, bias, p.relu, identity_in_store ? Xj : nullptr, ldx);
      return;
    }
  }
  // (Wcat and sc_w hold the compute type, or bfloat16 for float32: weight_gemm)
  weight_gemm<scalar_t>(p.Wcat, 0, s.O, cols, s.KC(), s.KC(), Zj, ldz, beta, Yj, ldy, bias,
                        p.relu);
}

// Whether a block's Z is written straight as the bf16 channel mix's packed operand
// (joint_mix_bf16_packed): bf16 Wcat, the AVX-512 joint mixing, an even Cin.
inline bool packed_bf16_z(const Sizes& s, const Prepared& p) {
  return p.Wcat.scalar_type() == at::kBFloat16 && s.K > 1 && s.C % 2 == 0 &&
         joint_mix_avx512_fits(s.V, s.K) && bf16_fused_pack_enabled();
}

// Scratch for a block's Z (K*Cin, cols <= max_cols): float32 rows or the packed bf16 operand.
inline int64_t z_scratch(const Sizes& s, int64_t max_cols) {
  return padded(std::max(s.KC() * max_cols, bf16_prepacked_words(s.KC(), max_cols)));
}

// Per-worker and per-block buffers start at multiples of 64 elements (the allocator aligns the
// base to 64 bytes): every worker's scratch then has the same alignment, and BLAS (which may pick
// its code path by alignment) rounds identically whichever thread ran a sample.
template <typename scalar_t>
const scalar_t* ptr_or_null(const at::Tensor& t) {
  return t.defined() ? t.const_data_ptr<scalar_t>() : nullptr;
}

// Column softmax of a (V, V) row-major matrix: c[:, w] = softmax over v of s[:, w].
template <typename scalar_t>
void column_softmax(const scalar_t* s, scalar_t* c, int64_t V) {
  for (int64_t w = 0; w < V; ++w) {
    scalar_t mx = s[w];
    for (int64_t v = 1; v < V; ++v) {
      mx = std::max(mx, s[v * V + w]);
    }
    scalar_t sum = 0;
    for (int64_t v = 0; v < V; ++v) {
      const scalar_t e = std::exp(s[v * V + w] - mx);
      c[v * V + w] = e;
      sum += e;
    }
    const scalar_t inv = scalar_t(1) / sum;
    for (int64_t v = 0; v < V; ++v) {
      c[v * V + w] *= inv;
    }
  }
}

// In place: g <- scale * c * (g - sum_v c[v, w] g[v, w]), the backward of column_softmax.
template <typename scalar_t>
void column_softmax_backward(const scalar_t* c, scalar_t* g, int64_t V, scalar_t scale) {
  for (int64_t w = 0; w < V; ++w) {
    scalar_t dot = 0;
    for (int64_t v = 0; v < V; ++v) {
      dot += c[v * V + w] * g[v * V + w];
    }
    for (int64_t v = 0; v < V; ++v) {
      g[v * V + w] = scale * c[v * V + w] * (g[v * V + w] - dot);
    }
  }
}

// TP (2*K*Ce, cols) = TPw @ X + TPb for X (Cin, cols): a whole sample (cols = T*V) or a block of
// frames; the bias is added as the product stores (gemm_rm's epilogue).
template <typename scalar_t>
void embed(const Sizes& s, const at::Tensor& TPw, const scalar_t* TPb, const scalar_t* X,
           int64_t cols, scalar_t* TP) {
  // (TPw holds the compute type, or bfloat16 for float32: weight_gemm)
  weight_gemm<scalar_t>(TPw, 0, s.KE2(), cols, s.C, s.C, X, cols, 0, TP, cols, TPb);
}

// Pointers to Theta_k and Phi_k inside TP, each viewed (Ce*T, V).
template <typename scalar_t>
scalar_t* theta_of(const Sizes& s, scalar_t* TP, int64_t k) {
  return TP + k * s.E * s.TV();
}
template <typename scalar_t>
scalar_t* phi_of(const Sizes& s, scalar_t* TP, int64_t k) {
  return TP + (s.K + k) * s.E * s.TV();
}

// C_k = column softmax of Theta_k^T Phi_k / (Ce*T), using S (V, V) as scratch.
template <typename scalar_t>
void attention_term(const Sizes& s, scalar_t* TP, int64_t k, scalar_t* S, scalar_t* Ck) {
  const int64_t V = s.V;
  const int64_t ET = s.E * s.T;
  gemm_rm<scalar_t>(true, false, V, V, ET, scalar_t(1) / scalar_t(ET), theta_of(s, TP, k), V,
                    phi_of(s, TP, k), V, 0, S, V);
  column_softmax(S, Ck, V);
}

template <typename scalar_t>
void add_into(const scalar_t* a, const scalar_t* b, scalar_t* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    out[i] = a[i] + b[i];
  }
}

template <typename scalar_t>
void accumulate(const scalar_t* a, scalar_t* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    out[i] += a[i];
  }
}

template <typename scalar_t>
void add_row_sums(const scalar_t* a, int64_t rows, int64_t cols, scalar_t* out) {
  for (int64_t r = 0; r < rows; ++r) {
    const scalar_t* row = a + r * cols;
    scalar_t acc = 0;
    for (int64_t j = 0; j < cols; ++j) {
      acc += row[j];
    }
    out[r] += acc;
  }
}

// ---------------------------------------------------------------------------------------------
// Forward

// Z_k (rows, V) = X (rows, V) @ M_k for k < K, Z_k at Z + k * rows * V.
template <typename scalar_t>
void mix_joints(const Sizes& s, const scalar_t* X, int64_t rows, const scalar_t* M, scalar_t* Z) {
  const int64_t V = s.V, VV = s.VV();
  if constexpr (std::is_same_v<scalar_t, float>) {
    if (s.K > 1 && joint_mix_avx512_fits(V, s.K)) {  // the K products in one sweep over X
      joint_mix_avx512(rows, V, s.K, X, M, Z);
      return;
    }
  }
  for (int64_t k = 0; k < s.K; ++k) {
    gemm_rm<scalar_t>(false, false, rows, V, V, 1, X, V, M + k * VV, V, 0, Z + k * rows * V, V);
  }
}

// Xj (Cin, cols) <- columns [col0, col0 + cols) of X (Cin, T*V).
template <typename scalar_t>
void gather_columns(const Sizes& s, const scalar_t* X, int64_t col0, int64_t cols, scalar_t* Xj) {
  const int64_t TV = s.TV();
  for (int64_t c = 0; c < s.C; ++c) {
    std::copy(X + c * TV + col0, X + c * TV + col0 + cols, Xj + c * cols);
  }
}

// One block of frames of one sample X (Cin, T*V), columns [col0, col0 + cols): Zj = [Xj @ M_k]
// (K*Cin, cols) for the block's columns Xj of X, then Yj (Cout, cols; row stride T*V) = Wcat @ Zj +
// bias (+ the agc_unit_forward epilogue). With the AVX-512 joint mixing, Xj is read in place (one
// group of rows per channel); otherwise the columns are first gathered into the scratch Xj (Cin,
// cols), so that Xj viewed (Cin*Tj, V) is one plain matrix.
template <typename scalar_t>
void output_block(const Sizes& s, const Prepared& p, const scalar_t* Mn, const scalar_t* X,
                  int64_t col0, int64_t cols, scalar_t* Xj, scalar_t* Zj, scalar_t* Yj) {
  const int64_t V = s.V, TV = s.TV(), Tj = cols / V;
  if constexpr (std::is_same_v<scalar_t, float>) {
    if (packed_bf16_z(s, p)) {
      uint32_t* Zp = reinterpret_cast<uint32_t*>(Zj);
      joint_mix_bf16_packed(s.C, Tj, V, s.K, X + col0, TV, Mn, Zp);
      block_output_product(s, p, X + col0, TV, Zj, cols, Yj, TV, cols, Zp);
      return;
    }
    if (s.K > 1 && joint_mix_avx512_fits(V, s.K)) {
      joint_mix_avx512(s.C * Tj, V, s.K, X + col0, Mn, Zj, Tj, TV);
      block_output_product(s, p, X + col0, TV, Zj, cols, Yj, TV, cols);
      return;
    }
  }
  gather_columns(s, X, col0, cols, Xj);
  mix_joints(s, Xj, s.C * Tj, Mn, Zj);  // Xj viewed (Cin*Tj, V)
  block_output_product(s, p, Xj, cols, Zj, cols, Yj, TV, cols);
}

// Frames per block of the per-block output pass: about this many keep Xj and Zj in cache
// (Cin = 96: Zj is ~0.5 MB at 24 frames); at batch 1 the op ran ~10 % faster than with one block
// per thread (T = 243, 2 threads).
constexpr int64_t kTargetFramesPerBlock = 24;

template <typename scalar_t>
void forward_by_samples(const Sizes& s, const Prepared& p, const at::Tensor& x, at::Tensor& y,
                        at::Tensor& attn) {
  const bool attention = s.E > 0;
  const int64_t TV = s.TV(), VV = s.VV(), V = s.V;
  // the output pass runs over blocks of frames of the sample, so that Z never leaves the cache
  const int64_t blocks = std::max<int64_t>(1, s.T / kTargetFramesPerBlock);
  const int64_t max_cols = (s.T + blocks - 1) / blocks * V;
  const int64_t tp_size = attention ? padded(s.KE2() * TV + s.K * VV + VV) : 0;
  const int64_t xj_size = padded(s.C * max_cols);
  const int64_t scratch = tp_size + xj_size + z_scratch(s, max_cols);
  const int64_t workers = chunk_count(s.N, 1);
  at::Tensor work = at::empty({workers, scratch}, x.options());

  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  scalar_t* yp = y.mutable_data_ptr<scalar_t>();
  scalar_t* attnp = attention ? attn.mutable_data_ptr<scalar_t>() : nullptr;
  scalar_t* workp = work.mutable_data_ptr<scalar_t>();
  const scalar_t* Mbase = p.M.const_data_ptr<scalar_t>();
  const scalar_t* TPb = ptr_or_null<scalar_t>(p.TPb);

  for_each_block(s.N, workers, [&](int64_t n, int64_t worker) {  // one block per sample
    scalar_t* TP = workp + worker * scratch;
    scalar_t* M = TP + s.KE2() * TV;
    scalar_t* S = M + s.K * VV;
    scalar_t* Xj = TP + tp_size;
    scalar_t* Zj = Xj + xj_size;
    const scalar_t* X = xp + n * s.C * TV;
    const scalar_t* Mn = Mbase;
    if (attention) {
      embed(s, p.TPw, TPb, X, TV, TP);
      for (int64_t k = 0; k < s.K; ++k) {
        scalar_t* Ck = attnp + (n * s.K + k) * VV;
        attention_term(s, TP, k, S, Ck);
        add_into(Mbase + k * VV, Ck, M + k * VV, VV);
      }
      Mn = M;
    }
    scalar_t* Y = yp + n * s.O * TV;
    for (int64_t j = 0; j < blocks; ++j) {
      const int64_t t0 = chunk_begin(j, blocks, s.T);
      const int64_t cols = (chunk_begin(j + 1, blocks, s.T) - t0) * V;
      output_block(s, p, Mn, X, t0 * V, cols, Xj, Zj, Y + t0 * V);
    }
  });
}

// Fewer samples than threads (a streaming lifter runs one window at a time): every sample is split
// into time blocks of whole frames (columns t*V.. of X (Cin, T*V)), handed out to the threads, and
// the samples run one after another. Pass 1 copies a block's columns of X into contiguous scratch
// Xj (Cin, Tj*V) (pass 2 reads them in place when the AVX-512 joint mixing runs: output_block),
// so that Xj viewed (Cin*Tj, V), its slice TPj (2*K*Ce, Tj*V) of the embedding and its slice Zj
// (K*Cin, Tj*V) of Z are plain row-major matrices small enough to stay in cache:
//   pass 1 (parallel): TPj = TPw @ Xj + TPb ; Sj_k = Theta_kj^T Phi_kj / (Ce*T)   (partial S_k)
//   serial:            S_k = sum_j Sj_k in block order (deterministic) ; C_k ; M_k = A + B + C_k
//   pass 2 (parallel): Zj = [Xj @ M_k] ; y[:, columns j] = Wcat @ Zj + bias       (row stride T*V)
// Inside at::parallel_for every matrix product runs single-threaded. The block boundaries depend
// only on T and the thread count, so results are reproducible for a given thread count.
constexpr int64_t kMinFramesPerBlock = 8;

template <typename scalar_t>
void forward_by_time_blocks(const Sizes& s, const Prepared& p, const at::Tensor& x, at::Tensor& y,
                            at::Tensor& attn, int64_t workers) {
  const bool attention = s.E > 0;
  const int64_t TV = s.TV(), VV = s.VV(), V = s.V, KE2 = s.KE2();
  const int64_t ET = s.E * s.T;
  // The same number of blocks per worker, as many as keeps blocks at least the target size.
  const int64_t blocks =
      workers * std::max<int64_t>(1, s.T / (workers * kTargetFramesPerBlock));
  const int64_t max_cols = (s.T + blocks - 1) / blocks * V;
  const int64_t xj_size = padded(s.C * max_cols);
  const int64_t tp_size = attention ? padded(KE2 * max_cols) : 0;
  const int64_t z_size = z_scratch(s, max_cols);
  const int64_t scratch = xj_size + tp_size + z_size;
  const int64_t s_size = attention ? padded(s.K * VV) : 0;  // partial S per block
  at::Tensor work = at::empty({workers * scratch + blocks * s_size + padded(s.K * VV) + VV},
                              x.options());

  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  scalar_t* yp = y.mutable_data_ptr<scalar_t>();
  scalar_t* attnp = attention ? attn.mutable_data_ptr<scalar_t>() : nullptr;
  scalar_t* workp = work.mutable_data_ptr<scalar_t>();
  scalar_t* Spart = workp + workers * scratch;  // (blocks, K, V, V), each block padded
  scalar_t* M = Spart + blocks * s_size;        // (K, V, V) for the current sample
  scalar_t* S = M + padded(s.K * VV);           // (V, V)
  const scalar_t* Mbase = p.M.const_data_ptr<scalar_t>();
  const scalar_t* TPb = ptr_or_null<scalar_t>(p.TPb);

  for (int64_t n = 0; n < s.N; ++n) {
    const scalar_t* X = xp + n * s.C * TV;
    scalar_t* Y = yp + n * s.O * TV;
    const scalar_t* Mn = Mbase;
    if (attention) {
      // Pass 1: the block's slice of TP and its partial S.
      for_each_block(blocks, workers, [&](int64_t j, int64_t worker) {
        scalar_t* Xj = workp + worker * scratch;
        scalar_t* TPj = Xj + xj_size;
        const int64_t t0 = chunk_begin(j, blocks, s.T);
        const int64_t cols = (chunk_begin(j + 1, blocks, s.T) - t0) * V;
        gather_columns(s, X, t0 * V, cols, Xj);
        embed(s, p.TPw, TPb, Xj, cols, TPj);
        const int64_t rows = s.E * (cols / V);  // Theta_kj, Phi_kj viewed (Ce*Tj, V)
        for (int64_t k = 0; k < s.K; ++k) {
          const scalar_t* theta = TPj + k * s.E * cols;
          const scalar_t* phi = TPj + (s.K + k) * s.E * cols;
          gemm_rm<scalar_t>(true, false, V, V, rows, scalar_t(1) / scalar_t(ET), theta, V, phi, V,
                            0, Spart + j * s_size + k * VV, V);
        }
      });
      for (int64_t k = 0; k < s.K; ++k) {
        std::copy(Spart + k * VV, Spart + (k + 1) * VV, S);
        for (int64_t j = 1; j < blocks; ++j) {
          accumulate(Spart + j * s_size + k * VV, S, VV);
        }
        scalar_t* Ck = attnp + (n * s.K + k) * VV;
        column_softmax(S, Ck, V);
        add_into(Mbase + k * VV, Ck, M + k * VV, VV);
      }
      Mn = M;
    }
    // Pass 2: Zj = [Xj @ M_k] and the block's columns of y.
    for_each_block(blocks, workers, [&](int64_t j, int64_t worker) {
      scalar_t* Xj = workp + worker * scratch;
      scalar_t* Zj = Xj + xj_size + tp_size;
      const int64_t t0 = chunk_begin(j, blocks, s.T);
      const int64_t cols = (chunk_begin(j + 1, blocks, s.T) - t0) * V;
      output_block(s, p, Mn, X, t0 * V, cols, Xj, Zj, Y + t0 * V);
    });
  }
}

template <typename scalar_t>
void forward_kernel(const Sizes& s, const Prepared& p, const at::Tensor& x, at::Tensor& y,
                    at::Tensor& attn) {
  // Threads on samples while there are enough samples; otherwise on time blocks of each sample.
  const int64_t workers = s.N < at::get_num_threads() && s.T >= 2 * kMinFramesPerBlock
                              ? chunk_count(s.T, kMinFramesPerBlock)  // 1 in a parallel region
                              : 1;
  if (workers > 1) {
    forward_by_time_blocks<scalar_t>(s, p, x, y, attn, workers);
  } else {
    forward_by_samples<scalar_t>(s, p, x, y, attn);
  }
}

// ---------------------------------------------------------------------------------------------
// Backward

// C (R, S) += A (R, Q) @ B^T (B stored (S, Q)): a weight's gradient (Q = T*V), on bfloat16-rounded
// operands when that weight is bfloat16 (bf16 products).
template <typename scalar_t>
void add_weight_grad(bool bf16, int64_t R, int64_t S, int64_t Q, const scalar_t* A,
                     const scalar_t* B, scalar_t* C) {
  if constexpr (std::is_same_v<scalar_t, float>) {
    if (bf16) {
      gemm_bf16_rounded(R, S, Q, A, Q, true, B, Q, 1, C, S);
      return;
    }
  }
  gemm_rm<scalar_t>(false, true, R, S, Q, 1, A, Q, B, Q, 1, C, S);
}

struct BackwardResult {
  at::Tensor gx, gWcat, gbias_sum, gB, gTPw, gTPb;
};

template <typename scalar_t>
BackwardResult backward_kernel(const Sizes& s, const Prepared& p, const at::Tensor& grad_y,
                               const at::Tensor& x, const at::Tensor& attn, bool has_bias,
                               bool has_B) {
  const bool attention = s.E > 0;
  const bool recompute_attn = attention && (!attn.defined() || attn.numel() == 0);
  const bool need_gM = has_B || attention;
  const bool has_TPb = p.TPb.defined();
  const int64_t TV = s.TV(), VV = s.VV(), KC = s.KC(), CT = s.C * s.T, KE2 = s.KE2();
  const int64_t ET = s.E * s.T;

  // Scratch layout per worker: Z | gM | TP | gTP | M | Cbuf | S
  const int64_t z_size = KC * TV;
  const int64_t gm_size = need_gM ? VV : 0;
  const int64_t tp_size = attention ? KE2 * TV : 0;
  const int64_t m_size = attention ? s.K * VV : 0;
  const int64_t c_size = recompute_attn ? s.K * VV : 0;
  const int64_t s_size = recompute_attn ? VV : 0;
  const int64_t scratch = padded(z_size + gm_size + 2 * tp_size + m_size + c_size + s_size);
  // Partial sums per block of samples: gWcat | gbias | gB | gTPw | gTPb
  const int64_t pw_size = s.O * KC;
  const int64_t pbias_size = has_bias ? s.O : 0;
  const int64_t pB_size = has_B ? s.K * VV : 0;
  const int64_t ptpw_size = attention ? KE2 * s.C : 0;
  const int64_t ptpb_size = has_TPb ? KE2 : 0;
  const int64_t partial = padded(pw_size + pbias_size + pB_size + ptpw_size + ptpb_size);

  // A few blocks per worker balance the load; the partials cost (blocks x partial) memory.
  const int64_t workers = chunk_count(s.N, 1);
  const int64_t blocks = workers == 1 ? 1 : std::min<int64_t>(s.N, 4 * workers);
  at::Tensor work = at::empty({workers, scratch}, x.options());
  at::Tensor partials = at::zeros({blocks, partial}, x.options());
  at::Tensor gx = at::empty_like(x);

  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  const scalar_t* gyp = grad_y.const_data_ptr<scalar_t>();
  const scalar_t* attnp = (attention && !recompute_attn) ? attn.const_data_ptr<scalar_t>() : nullptr;
  scalar_t* gxp = gx.mutable_data_ptr<scalar_t>();
  scalar_t* workp = work.mutable_data_ptr<scalar_t>();
  scalar_t* partp = partials.mutable_data_ptr<scalar_t>();
  const scalar_t* Mbase = p.M.const_data_ptr<scalar_t>();
  const scalar_t* TPb = ptr_or_null<scalar_t>(p.TPb);
  // The transposed weights (K*Cin, Cout) and (Cin, 2*K*Ce), in the weights' dtype, for the input
  // gradients through weight_gemm. bf16 products (float32 x with a bfloat16 W, or bfloat16
  // theta_w / phi_w): that weight's products and its gradient's take bfloat16 operands; the
  // joint mixing, the attention's (V, V) products and gM stay float32.
  const at::Tensor WcatT = p.Wcat.view({s.O, s.K * s.C}).t().contiguous();
  const at::Tensor TPwT = attention ? p.TPw.t().contiguous() : at::Tensor();
  const bool bf16 = p.Wcat.scalar_type() == at::kBFloat16;
  const bool bf16_tp = attention && p.TPw.scalar_type() == at::kBFloat16;

  for_each_block(blocks, workers, [&](int64_t block, int64_t worker) {
    scalar_t* Z = workp + worker * scratch;  // Z, then overwritten by gZ
    scalar_t* gM = Z + z_size;
    scalar_t* TP = gM + gm_size;
    scalar_t* gTP = TP + tp_size;
    scalar_t* M = gTP + tp_size;
    scalar_t* Cbuf = M + m_size;
    scalar_t* S = Cbuf + c_size;
    scalar_t* gW_p = partp + block * partial;
    scalar_t* gbias_p = gW_p + pw_size;
    scalar_t* gB_p = gbias_p + pbias_size;
    scalar_t* gTPw_p = gB_p + pB_size;
    scalar_t* gTPb_p = gTPw_p + ptpw_size;
    std::vector<const scalar_t*> Cks(static_cast<size_t>(s.K), nullptr);

    const int64_t n_end = chunk_begin(block + 1, blocks, s.N);
    for (int64_t n = chunk_begin(block, blocks, s.N); n < n_end; ++n) {
      const scalar_t* X = xp + n * s.C * TV;
      const scalar_t* GY = gyp + n * s.O * TV;
      scalar_t* GX = gxp + n * s.C * TV;

      const scalar_t* Mn = Mbase;
      if (attention) {
        embed(s, p.TPw, TPb, X, TV, TP);
        for (int64_t k = 0; k < s.K; ++k) {
          if (recompute_attn) {
            attention_term(s, TP, k, S, Cbuf + k * VV);
            Cks[k] = Cbuf + k * VV;
          } else {
            Cks[k] = attnp + (n * s.K + k) * VV;
          }
          add_into(Mbase + k * VV, Cks[k], M + k * VV, VV);
        }
        Mn = M;
      }
      mix_joints(s, X, CT, Mn, Z);  // recompute Z_k = X @ M_k
      // gWcat += GY (Cout, TV) @ Z^T (TV, K*Cin) ; gZ (K*Cin, TV) = Wcat^T @ GY, written over Z
      if (has_bias) {
        add_row_sums(GY, s.O, TV, gbias_p);
      }
      add_weight_grad(bf16, s.O, KC, TV, GY, Z, gW_p);
      weight_gemm<scalar_t>(WcatT, 0, KC, TV, s.O, s.O, GY, TV, 0, Z, TV);

      for (int64_t k = 0; k < s.K; ++k) {
        const scalar_t* gZk = Z + k * CT * s.V;  // (Cin*T, V)
        // GX (Cin*T, V) (+)= gZ_k @ M_k^T
        gemm_rm<scalar_t>(false, true, CT, s.V, s.V, 1, gZk, s.V, Mn + k * VV, s.V,
                          k == 0 ? 0 : 1, GX, s.V);
        if (!need_gM) {
          continue;
        }
        // gM_k (V, V) = X^T (V, Cin*T) @ gZ_k
        gemm_rm<scalar_t>(true, false, s.V, s.V, CT, 1, X, s.V, gZk, s.V, 0, gM, s.V);
        if (has_B) {
          accumulate(gM, gB_p + k * VV, VV);
        }
        if (attention) {
          column_softmax_backward(Cks[k], gM, s.V, scalar_t(1) / scalar_t(ET));  // gM -> gS
          // gTheta_k = Phi_k @ gS^T ; gPhi_k = Theta_k @ gS   (each (Ce*T, V))
          gemm_rm<scalar_t>(false, true, ET, s.V, s.V, 1, phi_of(s, TP, k), s.V, gM, s.V, 0,
                            theta_of(s, gTP, k), s.V);
          gemm_rm<scalar_t>(false, false, ET, s.V, s.V, 1, theta_of(s, TP, k), s.V, gM, s.V, 0,
                            phi_of(s, gTP, k), s.V);
        }
      }
      if (attention) {
        // gTPw += gTP (2KCe, TV) @ X^T ; gTPb += row sums ; GX (Cin, TV) += TPw^T @ gTP
        add_weight_grad(bf16_tp, KE2, s.C, TV, gTP, X, gTPw_p);
        if (has_TPb) {
          // Only phi_b's half: theta_b shifts S[:, w] by a constant per column w (its term is
          // sum_{e,t} theta_b[e] Phi[e,t,w] / (Ce*T)), which the softmax over v ignores, so the
          // gradient of theta_b is exactly zero (summing gTheta would only give rounding noise).
          const int64_t ke = s.K * s.E;
          add_row_sums(gTP + ke * TV, ke, TV, gTPb_p + ke);
        }
        weight_gemm<scalar_t>(TPwT, 0, s.C, TV, KE2, KE2, gTP, TV, 1, GX, TV);
      }
    }
  });

  at::Tensor total = blocks == 1 ? partials[0] : partials.sum(0);
  BackwardResult r;
  r.gx = gx;
  int64_t offset = 0;
  auto take = [&](int64_t size) {
    at::Tensor t = total.narrow(0, offset, size);
    offset += size;
    return t;
  };
  r.gWcat = take(pw_size);
  if (has_bias) r.gbias_sum = take(pbias_size);
  if (has_B) r.gB = take(pB_size);
  if (attention) r.gTPw = take(ptpw_size);
  if (has_TPb) r.gTPb = take(ptpb_size);
  return r;
}

at::Tensor empty_grad(const at::Tensor& like) { return at::empty({0}, like.options()); }

OptTensor to_float(const OptTensor& t) {
  return t.has_value() ? OptTensor(t->to(at::kFloat)) : std::nullopt;
}

bool is_reduced(const at::Tensor& t) {
  return t.scalar_type() == at::kHalf || t.scalar_type() == at::kBFloat16;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> agc_forward(const at::Tensor& x, const at::Tensor& A,
                                               const at::Tensor& W, const OptTensor& bias,
                                               const OptTensor& B, const OptTensor& theta_w,
                                               const OptTensor& theta_b, const OptTensor& phi_w,
                                               const OptTensor& phi_b) {
  if (is_reduced(x)) {  // compute in float32, return the input dtype
    auto [y, attn] = agc_forward(x.to(at::kFloat), A.to(at::kFloat), W.to(at::kFloat),
                                 to_float(bias), to_float(B), to_float(theta_w),
                                 to_float(theta_b), to_float(phi_w), to_float(phi_b));
    return {y.to(x.scalar_type()), attn.to(x.scalar_type())};
  }
  const Sizes s = sizes_of(x, W, theta_w);
  const Prepared p = prepare(s, A, W, bias, B, theta_w, theta_b, phi_w, phi_b);
  at::Tensor y = at::empty({s.N, s.O, s.T, s.V}, x.options());
  at::Tensor attn = s.E > 0 ? at::empty({s.N, s.K, s.V, s.V}, x.options()) : empty_grad(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "posekernels_agc_forward_cpu", [&] {
    forward_kernel<scalar_t>(s, p, x, y, attn);
  });
  return {y, attn};
}

at::Tensor agc_unit_forward(const at::Tensor& x, const at::Tensor& A, const at::Tensor& W,
                            const OptTensor& bias, const OptTensor& B, const OptTensor& theta_w,
                            const OptTensor& theta_b, const OptTensor& phi_w,
                            const OptTensor& phi_b, const OptTensor& shortcut_w,
                            const OptTensor& shortcut_b, bool identity_shortcut, bool relu) {
  if (is_reduced(x)) {  // compute in float32, return the input dtype
    return agc_unit_forward(x.to(at::kFloat), A.to(at::kFloat), W.to(at::kFloat), to_float(bias),
                            to_float(B), to_float(theta_w), to_float(theta_b), to_float(phi_w),
                            to_float(phi_b), to_float(shortcut_w), to_float(shortcut_b),
                            identity_shortcut, relu)
        .to(x.scalar_type());
  }
  const Sizes s = sizes_of(x, W, theta_w);
  Prepared p = prepare(s, A, W, bias, B, theta_w, theta_b, phi_w, phi_b);
  if (shortcut_b.has_value()) {
    p.bias_sum = p.bias_sum.defined() ? (p.bias_sum + *shortcut_b).contiguous()
                                      : shortcut_b->contiguous();
  }
  if (shortcut_w.has_value()) {
    p.sc_w = shortcut_w->reshape({s.O, s.C}).contiguous();
  }
  p.identity = identity_shortcut;
  p.relu = relu;
  at::Tensor y = at::empty({s.N, s.O, s.T, s.V}, x.options());
  at::Tensor attn = s.E > 0 ? at::empty({s.N, s.K, s.V, s.V}, x.options()) : empty_grad(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "posekernels_agc_unit_forward_cpu", [&] {
    forward_kernel<scalar_t>(s, p, x, y, attn);
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
           at::Tensor>
agc_backward(const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& A,
             const at::Tensor& W, const OptTensor& bias, const OptTensor& B,
             const OptTensor& theta_w, const OptTensor& theta_b, const OptTensor& phi_w,
             const OptTensor& phi_b, const at::Tensor& attn) {
  if (is_reduced(x)) {
    // Compute in float32; the saved attn was rounded to the input dtype, so the softmax term is
    // recomputed in float32 from theta/phi (which the backward recomputes anyway).
    const auto dtype = x.scalar_type();
    auto grads = agc_backward(grad_y.to(at::kFloat), x.to(at::kFloat), A.to(at::kFloat),
                              W.to(at::kFloat), to_float(bias), to_float(B), to_float(theta_w),
                              to_float(theta_b), to_float(phi_w), to_float(phi_b),
                              at::empty({0}, x.options().dtype(at::kFloat)));
    return {std::get<0>(grads).to(dtype), std::get<1>(grads).to(dtype),
            std::get<2>(grads).to(dtype), std::get<3>(grads).to(dtype),
            std::get<4>(grads).to(dtype), std::get<5>(grads).to(dtype),
            std::get<6>(grads).to(dtype), std::get<7>(grads).to(dtype)};
  }
  const Sizes s = sizes_of(x, W, theta_w);
  const Prepared p = prepare(s, A, W, bias, B, theta_w, theta_b, phi_w, phi_b);
  BackwardResult r;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "posekernels_agc_backward_cpu", [&] {
    r = backward_kernel<scalar_t>(s, p, grad_y, x, attn, bias.has_value(), B.has_value());
  });

  // Every output gets its own storage (a plain .contiguous() could return a view of the shared
  // partial sums when K == 1, making two outputs alias each other).
  constexpr auto kContiguous = at::MemoryFormat::Contiguous;
  // (with bf16 products the weights' gradients are returned in their bfloat16 dtype)
  at::Tensor gW = r.gWcat.view({s.O, s.K, s.C}).permute({1, 0, 2}).to(W.scalar_type())
                      .clone(kContiguous);
  at::Tensor gbias = bias.has_value()
                         ? r.gbias_sum.unsqueeze(0).expand({s.K, s.O}).clone(kContiguous)
                         : empty_grad(x);
  at::Tensor gB = B.has_value() ? r.gB.view({s.K, s.V, s.V}).clone() : empty_grad(x);
  at::Tensor gtw = empty_grad(x), gtb = empty_grad(x), gpw = empty_grad(x), gpb = empty_grad(x);
  if (s.E > 0) {
    const int64_t ke = s.K * s.E;
    const auto wtype = theta_w->scalar_type();
    gtw = r.gTPw.narrow(0, 0, ke * s.C).view({s.K, s.E, s.C}).to(wtype).clone();
    gpw = r.gTPw.narrow(0, ke * s.C, ke * s.C).view({s.K, s.E, s.C}).to(wtype).clone();
    if (theta_b.has_value()) {
      gtb = r.gTPb.narrow(0, 0, ke).view({s.K, s.E}).clone();
    }
    if (phi_b.has_value()) {
      gpb = r.gTPb.narrow(0, ke, ke).view({s.K, s.E}).clone();
    }
  }
  return {r.gx, gW, gbias, gB, gtw, gtb, gpw, gpb};
}

}  // namespace posekernels::cpu
