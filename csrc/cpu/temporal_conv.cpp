// Temporal convolution (kernel (k, 1), stride (s, 1)) with a fused epilogue, for inference on the
// CPU:
//
//   y[n, o, t, v] = act( bias[o] + residual[n, o, t, v]   (or (residual_w @ residual)[n, o, t, v])
//                        + sum_{c, j} W[o, c, j] * x[n, c, s * t + j - pad_left, v] )
//
// with x read as zero outside [0, T) and T_out = (T + pad_left + pad_right - k) / s + 1 (act: ReLU
// or identity; bias and residual optional). This is the (9, 1) convolution + BatchNorm (folded
// into W and bias) + shortcut + ReLU that ends every GLA-GCN block, in one pass. A stride s is
// handled as a stride-1 convolution over s * C channels, the s phases of the input (see Dims).
//
// Algorithm (stride 1; with a stride read C as s * C and k as ceil(k / s)): the k taps are split
// into ceil(k / 3) sub-filters of 3 taps (zero-padded), and each
// sub-filter is applied with the Winograd minimal filtering algorithm F(4, 3) (Lavin and Gray,
// "Fast Algorithms for Convolutional Neural Networks", 2016): 4 outputs of a 3-tap filter from 6
// products in the transformed domain instead of 12. Over channels each of the 6 transformed
// components is one matrix product of depth ceil(k / 3) * C:
//
//   Yhat_xi (O, tiles*V) = What_xi (O, A*C) @ Dhat_xi (A*C, tiles*V)          xi = 0..5
//   What_xi[o, a*C + c]  = sum_b G[xi, b] W[o, c, 3a + b]
//   Dhat_xi[a*C + c, (s, v)] = sum_i BT[xi, i] x[c, 4s + 3a + i - pad_left, v]
//   y[o, 4s + m, v]      = sum_xi AT[m, xi] Yhat_xi[o, (s, v)]
//
// so a 9-tap convolution costs 6 * 3 = 18 multiply-adds per 4 outputs and input-output channel
// pair instead of 36: half the arithmetic of the direct convolution. The products run on the
// library's single-threaded matrix product (gemm.h: AVX-512 where available). The transforms use
// the points 0, +-1, +-2 and infinity; float32 results differ from a direct convolution by a few
// units in the 6th significant digit (tests/test_temporal_conv.py bounds it against float64).
//
// Work is split into blocks of tiles (4 output frames each) of one sample, small enough that a
// block's inputs, transformed inputs and outputs stay in the L2 cache; blocks run in parallel.
// With bfloat16 transformed weights (the inference plans' bf16 products) on a CPU with AVX-512
// BF16, the input transform rounds its components to bf16 and writes them as the products'
// packed operand (gemm_bf16_prepacked) instead of float32 rows for the product to pack.
#include "cpu/kernels.h"

#include "cpu/gemm.h"
#include "cpu/gemm_tile.h"
#include "cpu/parallel.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <type_traits>
#include <vector>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define POSEKERNELS_TCONV_AVX512 1
#define PK_TCONV_AVX512 __attribute__((target("avx512f")))
#include <immintrin.h>
#endif

namespace posekernels::cpu {
namespace {

constexpr int64_t kTile = 4;        // outputs per Winograd tile
constexpr int64_t kTaps = 3;        // taps per sub-filter
constexpr int64_t kPoints = 6;      // kTile + kTaps - 1 transformed components
// Tiles per block: about 6 (24 frames; at C = O = 96 a block's transformed input is ~0.7 MB), the
// sample's tiles split evenly (tiles / 6 rounded to nearest, so 7-8 tiles make one block). Measured
// on 2 cores at (N, T) = (1, 243), (16, 81), (64, 27) against fixed blocks of 3, 4, 6 and 8 tiles.
constexpr int64_t kTilesPerBlock = 6;

// F(4, 3) transforms (Lavin and Gray 2016), correlation form: y[m] = sum_b g[b] d[m + b] equals
// AT ((G g) * (BT d)). BT and AT are applied in bt_apply / at_apply below, G here:
constexpr std::array<std::array<double, 3>, 6> kG{{
    {1.0 / 4, 0, 0},
    {-1.0 / 6, -1.0 / 6, -1.0 / 6},
    {-1.0 / 6, 1.0 / 6, -1.0 / 6},
    {1.0 / 24, 1.0 / 12, 1.0 / 6},
    {1.0 / 24, -1.0 / 12, 1.0 / 6},
    {0, 0, 1},
}};

// Stride: y[t] reads x[stride * t + j - pad_left]. With j = stride * j' + p (phase p < stride),
// that is x_p[t + j'] on the decimated sequence x_p[u] = x[stride * u + p - pad_left]: a stride-1
// convolution of k' = ceil(k / stride) taps over stride * C "channels" (p, c). A = ceil(k' / 3)
// sub-filters; the depth of each product is A * stride * C, rows ordered (a, p, c).
struct Dims {
  int64_t N, C, T, V, O, k, stride, A, T_out, pad_left, tiles;
  int64_t depth() const { return A * stride * C; }
};

Dims weight_dims(int64_t O, int64_t C, int64_t k, int64_t stride) {
  Dims d{};
  d.O = O;
  d.C = C;
  d.k = k;
  d.stride = stride;
  const int64_t k_dec = (k + stride - 1) / stride;
  d.A = (k_dec + kTaps - 1) / kTaps;
  return d;
}

// What (6, O, A*stride*C), computed in float64 and stored in the compute type:
// What[p6, o, (a, p, c)] = sum_b G[p6, b] W[o, c, stride * (3a + b) + p] (0 beyond k).
at::Tensor transform_weight(const at::Tensor& weight, const Dims& d) {
  at::Tensor w = weight.to(at::kDouble).reshape({d.O, d.C, d.k});
  const int64_t taps = d.A * kTaps * d.stride;  // j = stride * j' + p, j' < 3A
  at::Tensor padded = at::zeros({d.O, d.C, taps}, w.options());
  padded.narrow(2, 0, d.k).copy_(w);
  // (O, C, A, 3, P) -> (O, A, P, C, 3)
  at::Tensor t = padded.view({d.O, d.C, d.A, kTaps, d.stride}).permute({0, 2, 4, 1, 3});
  at::Tensor G = at::empty({kPoints, kTaps}, w.options());
  for (int64_t p = 0; p < kPoints; ++p) {
    for (int64_t b = 0; b < kTaps; ++b) {
      G[p][b] = kG[p][b];
    }
  }
  at::Tensor out = at::einsum("xb,oapcb->xoapc", {G, t});
  return out.reshape({kPoints, d.O, d.depth()}).to(weight.scalar_type()).contiguous();
}

// The six F(4, 3) input components BT d of d[0..5], and the four outputs AT h of h[0..5]:
//   BT = [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
//         [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]]
//   AT = [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]]
template <typename T>
inline void bt_apply(const T* d, T* u) {
  u[0] = T(4) * d[0] - T(5) * d[2] + d[4];
  u[1] = -T(4) * d[1] - T(4) * d[2] + d[3] + d[4];
  u[2] = T(4) * d[1] - T(4) * d[2] - d[3] + d[4];
  u[3] = -T(2) * d[1] - d[2] + T(2) * d[3] + d[4];
  u[4] = T(2) * d[1] - d[2] - T(2) * d[3] + d[4];
  u[5] = T(4) * d[1] - T(5) * d[3] + d[5];
}
template <typename T>
inline void at_apply(const T* h, T* y) {
  const T p12 = h[1] + h[2], m12 = h[1] - h[2], p34 = h[3] + h[4], m34 = h[3] - h[4];
  y[0] = h[0] + p12 + p34;
  y[1] = m12 + T(2) * m34;
  y[2] = p12 + T(4) * p34;
  y[3] = m12 + T(8) * m34 + h[5];
}

// Input transform of one input channel row xc (T, V) for sub-filter a and tiles [s0, s1):
// D[p * plane + (s - s0) * V + v] = component p of (x[4s + 3a - pad_left + i, v])_{i = 0..5}.
template <typename scalar_t>
void input_transform_row(const Dims& d, const scalar_t* xc, int64_t a, int64_t phase, int64_t s0,
                         int64_t s1, scalar_t* D, int64_t plane) {
  const int64_t V = d.V;
  for (int64_t s = s0; s < s1; ++s) {
    const int64_t u0 = kTile * s + kTaps * a;  // decimated position of d[0]
    scalar_t* out = D + (s - s0) * V;
    for (int64_t v = 0; v < V; ++v) {
      scalar_t in[kPoints], u[kPoints];
      for (int64_t i = 0; i < kPoints; ++i) {
        const int64_t f = d.stride * (u0 + i) + phase - d.pad_left;
        in[i] = (f >= 0 && f < d.T) ? xc[f * V + v] : scalar_t(0);
      }
      bt_apply(in, u);
      for (int64_t p = 0; p < kPoints; ++p) {
        out[p * plane + v] = u[p];
      }
    }
  }
}

// Output transform + epilogue of one output channel o for tiles [s0, s1): reads the six
// components H[p * plane + (s - s0) * V + v], writes y_row (T_out, V).
template <typename scalar_t>
void output_transform_row(const Dims& d, const scalar_t* H, int64_t plane, int64_t s0, int64_t s1,
                          scalar_t bias, const scalar_t* res_row, bool relu, scalar_t* y_row) {
  const int64_t V = d.V;
  for (int64_t s = s0; s < s1; ++s) {
    const scalar_t* h = H + (s - s0) * V;
    const int64_t frames = std::min(kTile, d.T_out - kTile * s);
    for (int64_t v = 0; v < V; ++v) {
      scalar_t hv[kPoints], yv[kTile];
      for (int64_t p = 0; p < kPoints; ++p) {
        hv[p] = h[p * plane + v];
      }
      at_apply(hv, yv);
      for (int64_t m = 0; m < frames; ++m) {
        const int64_t idx = (kTile * s + m) * V + v;
        scalar_t out = yv[m] + bias + (res_row != nullptr ? res_row[idx] : scalar_t(0));
        y_row[idx] = relu && out < scalar_t(0) ? scalar_t(0) : out;  // NaN stays NaN
      }
    }
  }
}

#ifdef POSEKERNELS_TCONV_AVX512
// The same two transforms for float32 with 16-lane vectors over the joints (the last vector of a
// frame masked); frames outside the input read as zero through all-false load masks.
// The six components of tile s, joints [v, v + 16) (mask m) of one input channel row xc.
PK_TCONV_AVX512 inline void input_transform_vector(const Dims& d, const float* xc, int64_t a,
                                                   int64_t phase, int64_t s, int64_t v,
                                                   __mmask16 m, __m512 (&u)[kPoints]) {
  const int64_t V = d.V;
  const int64_t u0 = kTile * s + kTaps * a;
  const int64_t f0 = d.stride * u0 + phase - d.pad_left;  // the frame of in[0]
  __m512 in[kPoints];
  if (f0 >= 0 && f0 + d.stride * (kPoints - 1) < d.T) {  // all six frames inside: no checks
    const float* x = xc + f0 * V + v;
    const int64_t step = d.stride * V;
    for (int64_t i = 0; i < kPoints; ++i) {
      in[i] = _mm512_maskz_loadu_ps(m, x + i * step);
    }
  } else {
    for (int64_t i = 0; i < kPoints; ++i) {
      const int64_t f = f0 + d.stride * i;
      const bool inside = f >= 0 && f < d.T;
      in[i] = _mm512_maskz_loadu_ps(inside ? m : __mmask16(0), xc + (inside ? f * V + v : 0));
    }
  }
  const __m512 two = _mm512_set1_ps(2.f), four = _mm512_set1_ps(4.f), five = _mm512_set1_ps(5.f);
  const __m512 d34 = _mm512_add_ps(in[3], in[4]);
  const __m512 d4m2 = _mm512_sub_ps(in[4], in[2]);
  u[0] = _mm512_add_ps(_mm512_fnmadd_ps(five, in[2], _mm512_mul_ps(four, in[0])), in[4]);
  u[1] = _mm512_fnmadd_ps(four, _mm512_add_ps(in[1], in[2]), d34);
  u[2] = _mm512_fmadd_ps(four, _mm512_sub_ps(in[1], in[2]), _mm512_sub_ps(in[4], in[3]));
  u[3] = _mm512_fmadd_ps(two, _mm512_sub_ps(in[3], in[1]), d4m2);
  u[4] = _mm512_fmadd_ps(two, _mm512_sub_ps(in[1], in[3]), d4m2);
  u[5] = _mm512_add_ps(_mm512_fnmadd_ps(five, in[3], _mm512_mul_ps(four, in[1])), in[5]);
}

PK_TCONV_AVX512 void input_transform_row_avx512(const Dims& d, const float* xc, int64_t a,
                                                int64_t phase, int64_t s0, int64_t s1, float* D,
                                                int64_t plane) {
  const int64_t V = d.V;
  for (int64_t s = s0; s < s1; ++s) {
    float* out = D + (s - s0) * V;
    for (int64_t v = 0; v < V; v += 16) {
      const __mmask16 m = tile::lane_mask(V - v);
      __m512 u[kPoints];
      input_transform_vector(d, xc, a, phase, s, v, m, u);
      for (int64_t p = 0; p < kPoints; ++p) {
        _mm512_mask_storeu_ps(out + p * plane + v, m, u[p]);
      }
    }
  }
}

#define PK_TCONV_BF16 __attribute__((target("avx512f,avx512bw,avx512bf16")))

// One depth row of the products: input channel c of sub-filter a, phase ph (row (a, ph, c)).
struct DepthRow {
  const float* xc;
  int64_t a, phase;
};

// The input transform of depth rows 2q and 2q + 1 (r1.xc == nullptr: no row 2q + 1, read as zero)
// for tiles [s0, s1), rounded to bfloat16 and stored as depth pair q straight in
// gemm_bf16_prepacked's layout (gemm.h; component p in Dp + p * plane; tile s's columns at
// runs[(s - s0) * chunks ..], chunks = ceil(V / 16), the same for every pair and component)
// instead of float32 rows that gemm_bf16 would read back and pack: the same values (the same
// rounding, round to nearest even) in half the bytes, and no packing pass.
PK_TCONV_BF16 void input_transform_pair_bf16(const Dims& d, const DepthRow& r0, const DepthRow& r1,
                                             int64_t q, int64_t s0, int64_t s1,
                                             const tile::Bf16Run* runs, int64_t chunks,
                                             uint32_t* Dp, int64_t plane) {
  const int64_t V = d.V;
  for (int64_t s = s0; s < s1; ++s) {
    const tile::Bf16Run* run = runs + (s - s0) * chunks;
    for (int64_t ch = 0; ch < chunks; ++ch) {
      const int64_t v = ch * 16;
      const __mmask16 m = tile::lane_mask(V - v);
      __m512 u0[kPoints], u1[kPoints];
      input_transform_vector(d, r0.xc, r0.a, r0.phase, s, v, m, u0);
      if (r1.xc != nullptr) {
        input_transform_vector(d, r1.xc, r1.a, r1.phase, s, v, m, u1);
      } else {
        for (int64_t p = 0; p < kPoints; ++p) {
          u1[p] = _mm512_setzero_ps();
        }
      }
      for (int64_t p = 0; p < kPoints; ++p) {
        tile::store_bf16_pairs(Dp + p * plane, run[ch], q, u0[p], u1[p]);
      }
    }
  }
}

PK_TCONV_AVX512 void output_transform_row_avx512(const Dims& d, const float* H, int64_t plane,
                                                 int64_t s0, int64_t s1, float bias,
                                                 const float* res_row, bool relu, float* y_row) {
  const int64_t V = d.V;
  const __m512 vb = _mm512_set1_ps(bias), zero = _mm512_setzero_ps();
  const __m512 two = _mm512_set1_ps(2.f), four = _mm512_set1_ps(4.f), eight = _mm512_set1_ps(8.f);
  for (int64_t s = s0; s < s1; ++s) {
    const float* h = H + (s - s0) * V;
    const int64_t frames = std::min(kTile, d.T_out - kTile * s);
    for (int64_t v = 0; v < V; v += 16) {
      const int64_t lanes = std::min<int64_t>(16, V - v);
      const __mmask16 m = tile::lane_mask(lanes);
      __m512 hv[kPoints], yv[kTile];
      for (int64_t p = 0; p < kPoints; ++p) {
        hv[p] = _mm512_maskz_loadu_ps(m, h + p * plane + v);
      }
      const __m512 p12 = _mm512_add_ps(hv[1], hv[2]), m12 = _mm512_sub_ps(hv[1], hv[2]);
      const __m512 p34 = _mm512_add_ps(hv[3], hv[4]), m34 = _mm512_sub_ps(hv[3], hv[4]);
      yv[0] = _mm512_add_ps(_mm512_add_ps(hv[0], p12), p34);
      yv[1] = _mm512_fmadd_ps(two, m34, m12);
      yv[2] = _mm512_fmadd_ps(four, p34, p12);
      yv[3] = _mm512_add_ps(_mm512_fmadd_ps(eight, m34, m12), hv[5]);
      for (int64_t mm = 0; mm < frames; ++mm) {
        const int64_t idx = (kTile * s + mm) * V + v;
        __m512 out = _mm512_add_ps(yv[mm], vb);
        if (res_row != nullptr) {
          out = _mm512_add_ps(out, _mm512_maskz_loadu_ps(m, res_row + idx));
        }
        if (relu) {  // negative -> 0; NaN stays NaN, as in torch.relu
          out = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(out, zero, _CMP_LT_OQ), out, zero);
        }
        _mm512_mask_storeu_ps(y_row + idx, m, out);
      }
    }
  }
}
#endif

template <typename scalar_t>
void tconv_kernel(const Dims& d, const at::Tensor& x, const at::Tensor& What,
                  const at::Tensor& bias, const at::Tensor& residual,
                  const at::Tensor& residual_w, bool relu, at::Tensor& y) {
  const int64_t V = d.V, depth = d.depth();
  // With fewer samples than threads (a live stream: N = 1) short sequences are cut finer, so that
  // every thread gets a block (T = 27: 7 tiles -> 2 blocks on 2 threads instead of 1).
  const int64_t threads = at::in_parallel_region() ? 1 : at::get_num_threads();
  const int64_t min_blocks = std::min(d.tiles, (threads + d.N - 1) / d.N);
  const int64_t blocks_per_sample = std::max<int64_t>(
      min_blocks, std::max<int64_t>(1, (d.tiles + kTilesPerBlock / 2) / kTilesPerBlock));
  const int64_t blocks = d.N * blocks_per_sample;
  const int64_t max_tiles = (d.tiles + blocks_per_sample - 1) / blocks_per_sample;
  const int64_t max_cols = max_tiles * V;
#ifdef POSEKERNELS_TCONV_AVX512
  const bool vector = std::is_same_v<scalar_t, float> && avx512_gemm_supported();
  // bfloat16 weights on a CPU with AVX-512 BF16: the input transform writes the products'
  // packed bf16 operand itself (input_transform_pair_bf16)
  const bool packed_bf16 = vector && What.scalar_type() == at::kBFloat16 &&
                           bf16_fused_pack_enabled();
#else
  const bool packed_bf16 = false;
#endif
  // one transformed component of the input: float32 rows, or (packed_bf16) bf16 depth pairs in
  // 32-bit words, counted here as that many scalar_t (float32) elements
  const int64_t dplane = packed_bf16 ? padded(bf16_prepacked_words(depth, max_cols))
                                     : padded(depth * max_cols);
  const int64_t hplane = padded(d.O * max_cols);    // one component of the products
  const int64_t scratch = kPoints * (dplane + hplane);
  const int64_t workers = chunk_count(blocks, 1);
  at::Tensor work = at::empty({workers, scratch}, x.options());

  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  const scalar_t* bp = bias.defined() ? bias.const_data_ptr<scalar_t>() : nullptr;
  const scalar_t* rp = residual.defined() ? residual.const_data_ptr<scalar_t>() : nullptr;
  // residual_w (O, Cr): the residual term is residual_w @ residual (N, Cr, T_out, V), computed
  // per block straight into y and then read back by the epilogue
  // (What and residual_w hold the compute type, or bfloat16 for float32: weight_gemm)
  const bool has_rw = residual_w.defined();
  const int64_t Cr = residual_w.defined() ? residual_w.size(1) : 0;
  scalar_t* yp = y.mutable_data_ptr<scalar_t>();
  scalar_t* workp = work.mutable_data_ptr<scalar_t>();
  const int64_t TV = d.T * V, TVo = d.T_out * V;

  for_each_block(blocks, workers, [&](int64_t block, int64_t worker) {
    const int64_t n = block / blocks_per_sample;
    const int64_t j = block % blocks_per_sample;
    const int64_t s0 = chunk_begin(j, blocks_per_sample, d.tiles);
    const int64_t s1 = chunk_begin(j + 1, blocks_per_sample, d.tiles);
    const int64_t cols = (s1 - s0) * V;
    scalar_t* D = workp + worker * scratch;  // (6, A*C, cols), plane stride dplane
    scalar_t* H = D + kPoints * dplane;      // (6, O, cols), plane stride hplane
    const scalar_t* X = xp + n * d.C * TV;
#ifdef POSEKERNELS_TCONV_AVX512
    if constexpr (std::is_same_v<scalar_t, float>) {
      if (packed_bf16) {
        uint32_t* Dp = reinterpret_cast<uint32_t*>(D);
        const int64_t pairs = bf16_prepacked_pairs(depth), chunks = (V + 15) / 16;
        const auto row = [&](int64_t r) {  // depth row r = (a, ph, c)
          const int64_t g = r / d.C;
          return DepthRow{X + (r % d.C) * TV, g / d.stride, g % d.stride};
        };
        std::vector<tile::Bf16Run> runs((s1 - s0) * chunks);  // where each tile's columns lie
        for (int64_t s = s0; s < s1; ++s) {
          tile::bf16_runs(pairs, cols, (s - s0) * V, V, runs.data() + (s - s0) * chunks);
        }
        for (int64_t q = 0; q < pairs; ++q) {
          const DepthRow r1 = 2 * q + 1 < depth ? row(2 * q + 1) : DepthRow{nullptr, 0, 0};
          input_transform_pair_bf16(d, row(2 * q), r1, q, s0, s1, runs.data(), chunks, Dp,
                                    dplane);
        }
        for (int64_t p = 0; p < kPoints; ++p) {
          zero_bf16_prepacked_tail(depth, cols, Dp + p * dplane);
        }
        const c10::BFloat16* Wb = What.const_data_ptr<c10::BFloat16>();
        for (int64_t p = 0; p < kPoints; ++p) {
          gemm_bf16_prepacked(d.O, cols, depth, Wb + p * d.O * depth, depth, Dp + p * dplane, 0,
                              H + p * hplane, cols);
        }
      }
    }
#endif
    if (!packed_bf16) {  // float32 rows, packed by the products
      for (int64_t a = 0; a < d.A; ++a) {
        for (int64_t ph = 0; ph < d.stride; ++ph) {
          for (int64_t c = 0; c < d.C; ++c) {
            scalar_t* row = D + ((a * d.stride + ph) * d.C + c) * cols;
#ifdef POSEKERNELS_TCONV_AVX512
            if constexpr (std::is_same_v<scalar_t, float>) {
              if (vector) {
                input_transform_row_avx512(d, X + c * TV, a, ph, s0, s1, row, dplane);
                continue;
              }
            }
#endif
            input_transform_row(d, X + c * TV, a, ph, s0, s1, row, dplane);
          }
        }
      }
      for (int64_t p = 0; p < kPoints; ++p) {
        weight_gemm<scalar_t>(What, p * d.O * depth, d.O, cols, depth, depth, D + p * dplane,
                              cols, 0, H + p * hplane, cols);
      }
    }
    if (has_rw) {
      const int64_t t0 = kTile * s0, t1 = std::min(kTile * s1, d.T_out);
      weight_gemm<scalar_t>(residual_w, 0, d.O, (t1 - t0) * V, Cr, Cr, rp + n * Cr * TVo + t0 * V,
                            TVo, 0, yp + n * d.O * TVo + t0 * V, TVo);
    }
    for (int64_t o = 0; o < d.O; ++o) {
      const scalar_t b = bp != nullptr ? bp[o] : scalar_t(0);
      scalar_t* y_row = yp + (n * d.O + o) * TVo;
      const scalar_t* res_row =
          has_rw ? y_row : (rp != nullptr ? rp + (n * d.O + o) * TVo : nullptr);
#ifdef POSEKERNELS_TCONV_AVX512
      if constexpr (std::is_same_v<scalar_t, float>) {
        if (vector) {
          output_transform_row_avx512(d, H + o * cols, hplane, s0, s1, b, res_row, relu, y_row);
          continue;
        }
      }
#endif
      output_transform_row(d, H + o * cols, hplane, s0, s1, b, res_row, relu, y_row);
    }
  });
}

}  // namespace

at::Tensor tconv_transform_weight(const at::Tensor& weight, int64_t stride) {
  return transform_weight(weight, weight_dims(weight.size(0), weight.size(1), weight.size(2), stride));
}

at::Tensor tconv_forward(const at::Tensor& x, const at::Tensor& weight_t, int64_t kernel,
                         int64_t stride, const std::optional<at::Tensor>& bias,
                         const std::optional<at::Tensor>& residual,
                         const std::optional<at::Tensor>& residual_w, int64_t pad_left,
                         int64_t pad_right, bool relu) {
  Dims d = weight_dims(weight_t.size(1), x.size(1), kernel, stride);
  d.N = x.size(0);
  d.T = x.size(2);
  d.V = x.size(3);
  d.pad_left = pad_left;
  d.T_out = (d.T + pad_left + pad_right - d.k) / stride + 1;
  d.tiles = (d.T_out + kTile - 1) / kTile;

  const bool half = x.scalar_type() == at::kHalf || x.scalar_type() == at::kBFloat16;
  const auto compute = [&](const at::Tensor& t) { return half ? t.to(at::kFloat) : t; };
  const at::Tensor xc = compute(x);
  const at::Tensor wc = compute(weight_t);
  const at::Tensor bc = bias.has_value() ? compute(*bias) : at::Tensor();
  const at::Tensor rc = residual.has_value() ? compute(*residual) : at::Tensor();
  const at::Tensor rwc = residual_w.has_value() ? compute(*residual_w) : at::Tensor();
  at::Tensor y = at::empty({d.N, d.O, d.T_out, d.V}, xc.options());
  AT_DISPATCH_FLOATING_TYPES(xc.scalar_type(), "posekernels_tconv_forward", [&] {
    tconv_kernel<scalar_t>(d, xc, wc, bc, rc, rwc, relu, y);
  });
  return half ? y.to(x.scalar_type()) : y;
}

// ----------------------------------------------------------------------------- training backward
at::Tensor tconv_input_grad(const at::Tensor& grad_y, const at::Tensor& weight, int64_t T,
                            int64_t stride, int64_t pad_left) {
  // grad_x[t] = sum over (u, j) with stride * u + j - pad_left = t of W[:, :, j]^T grad_y[u].
  // Output frame t + pad_left = stride * q + r (phase r) reads the taps j = r + stride * i:
  // a stride-1 correlation of grad_y with the n_r = ceil((k - r) / stride) taps of phase r,
  // reversed and transposed, run on the Winograd forward kernel and scattered to every
  // stride-th frame.
  const int64_t O = weight.size(0), k = weight.size(2), T_out = grad_y.size(2);
  if (stride == 1) {
    // one phase covering every frame: the correlation with the reversed, transposed kernel and
    // paddings k - 1 - pad_left, k - 1 - pad_right writes exactly the T frames of grad_x (its
    // output length is T_out + 2 (k - 1) - pad_left - pad_right - k + 1 = T), no scatter needed
    at::Tensor K = weight.flip({2}).transpose(0, 1).contiguous();
    const int64_t pad_right = T_out + k - 1 - T - pad_left;
    return tconv_forward(grad_y, tconv_transform_weight(K, 1), k, 1, std::nullopt, std::nullopt,
                         std::nullopt, k - 1 - pad_left, k - 1 - pad_right, false);
  }
  at::Tensor gx = at::zeros({grad_y.size(0), weight.size(1), T, grad_y.size(3)}, grad_y.options());
  for (int64_t r = 0; r < stride && r < k; ++r) {
    const int64_t taps = (k - r + stride - 1) / stride;
    // q range of the frames t in [0, T) with (t + pad_left) % stride == r
    const int64_t q_min = (pad_left - r + stride - 1) / stride > 0 ? (pad_left - r + stride - 1) / stride : 0;
    // (frames past q = T_out + taps - 2 read no output: their gradient stays zero)
    const int64_t q_max = std::min((pad_left + T - 1 - r) / stride, T_out + taps - 2);
    if (pad_left + T - 1 - r < 0 || q_max < q_min) continue;
    // kernel of phase r: K[c, o, i'] = W[o, c, r + stride * (taps - 1 - i')]
    at::Tensor K = weight.slice(2, r, k, stride).flip({2}).transpose(0, 1).contiguous();
    const int64_t pad_right = std::max<int64_t>(0, q_max + 1 - T_out);
    TORCH_CHECK(taps >= 3 && pad_right < taps,
                "tconv_input_grad: phase ", r, " has ", taps, " taps and needs ", pad_right,
                " frames of right padding (the kernel needs >= 3 taps and less padding)");
    (void)O;
    at::Tensor out = tconv_forward(grad_y, tconv_transform_weight(K, 1), taps, 1, std::nullopt,
                                   std::nullopt, std::nullopt, taps - 1, pad_right, false);
    const int64_t t0 = stride * q_min + r - pad_left;
    gx.slice(2, t0, t0 + stride * (q_max - q_min) + 1, stride).copy_(out.slice(2, q_min, q_max + 1));
  }
  return gx;
}

}  // namespace posekernels::cpu
