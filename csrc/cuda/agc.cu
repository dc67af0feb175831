// Adaptive graph convolution (agc): fused CUDA forward and backward kernels.
//
// Notation (see kernels.cuh): x (N, Cin, T, V) is read per sample as a (Cin x T*V) matrix whose
// columns p = t * V + w are the (frame, joint) positions; a "tile" is a run of TT whole frames,
// P = TT * V columns, padded to P_pad (a multiple of 16) inside shared memory only.
//
// Forward
//   pair_kernel (attention only)   grid N*K*splits. For each frame tile of its share of the window:
//       [theta; phi] = [theta_w[k]; phi_w[k]] x_tile (+ biases)  (tile product over Cin),
//       S[v, w] += sum_{e, t} theta[e, t, v] phi[e, t, w]   (fp32 / fp64, in shared memory),
//       and writes its partial S. splits > 1 only when N*K blocks cannot fill the GPU.
//   softmax_forward_kernel         grid N*K: sums the partial S, C = softmax_v(S / (Ce*T)),
//       writes attn = C and the fp32 graphs M = A + B + C (N, K, V, V).
//   graph_kernel (no attention)    M = A + B (K, V, V), shared by every sample.
//   mix_kernel                     grid (N * frame tiles, Cout tiles of <= 96 rows). Stages all K
//       graphs M[n] in shared memory (rows padded to a multiple of 4), then streams Cin in chunks
//       of 16 channels: for each partition k it aggregates the chunk over joints,
//       Z = x_chunk M[n,k] (SIMT, fp32, in shared memory), and accumulates
//       y_tile += W[k, o-tile, chunk] Z with a block tile product (tensor cores for 16-bit);
//       x is read from global memory exactly once per Cout tile, Z never leaves shared memory.
// Backward
//   M is rebuilt from A, B and the saved attn (graph_kernel) or recomputed (pair+softmax).
//   pair_kernel (gM mode)          gM[n,k,v,w] = sum_{o,t} (W[k] x)[o,t,v] gy[o,t,w]
//       (same kernel: L rows = W[k] x by a tile product, R rows = gy read directly).
//   graph_grad_kernel              gB = sum_n gM.
//   softmax_backward_kernel        gS = C * (gM - sum_v C gM) / (Ce*T).
//   mix_kernel on (gy, M^T, W^T)   gx = sum_k W[k]^T gy M[n,k]^T (the forward's structure).
//   attn_gx_kernel                 per (sample, frame tile, Cin tile): recomputes theta/phi,
//       gtheta = phi gS^T, gphi = theta gS (joint aggregations), gx += theta_w^T gtheta + phi_w^T gphi.
//   attn_gw_kernel                 per (k, Ce tile, Cin tile, split), looping over (sample, tile):
//       recomputes theta/phi and gtheta/gphi, accumulates [gtheta; gphi] x^T in registers
//       (tile product over positions) and the row sums (bias gradients); one fp32 atomicAdd per
//       element per block at the end.
//   wgrad_kernel                   per (k, Cout tile, Cin tile, split), looping over
//       (sample, tile): gW[k] += gy_tile Z_tile^T with Z = x M[n,k] aggregated in shared memory;
//       the k = 0 blocks also sum gy rows for gbias. fp32 atomicAdd at the end of each block.
//   convert_kernel                 fp32 scratch -> output dtype.
//
// Tile products (common.cuh, TileAcc): 256 threads, up to 96 rows x 128 columns.
// 16-bit inputs on sm_80+: WMMA m16n16k16 bf16/fp16 with fp32 accumulators (the aggregated
// operand Z is rounded to the input dtype before the product, as any 16-bit GEMM operand);
// float32, float64 and 16-bit without tensor cores: SIMT, each thread a 6 x (8 * CPW) register
// tile, operands converted to fp32 (fp64 for float64) in shared memory.
#include "common.cuh"
#include "kernels.cuh"

#include <algorithm>
#include <climits>

namespace posekernels {
namespace cuda {
namespace detail {
namespace {

// ==========================================================================================
// device kernels

// M[nk, v, w] = A[k, v, w] + B[k, v, w] + attn[nk, v, w] over nk < count_nk (k = nk % K).
template <typename T>
struct GraphArgs {
  const T* A;
  const T* B;     // optional
  const T* attn;  // optional, (count_nk, V, V)
  acc_t<T>* M;
  int64_t count_nk;
  int K, V;
};

template <typename T>
__global__ void __launch_bounds__(kThreads) graph_kernel(const GraphArgs<T> a) {
  using AT = acc_t<T>;
  const int64_t vv = static_cast<int64_t>(a.V) * a.V;
  const int64_t total = a.count_nk * vv;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < total; i += stride) {
    const int64_t nk = i / vv;
    const int64_t vw = i - nk * vv;
    const int64_t k = nk % a.K;
    AT m = to_acc(a.A[k * vv + vw]);
    if (a.B != nullptr) m += to_acc(a.B[k * vv + vw]);
    if (a.attn != nullptr) m += to_acc(a.attn[i]);
    a.M[i] = m;
  }
}

// ------------------------------------------------------------------------------------------
// mix: out[n, o, p] = sum_k sum_c Wk(o, c) sum_v in[n, c, t, v] G[n, k](v, w) (+ sum_k bias[k, o])
// with Wk(o, c) = W[k * w_sk + o * w_sr + c * w_sc] and G = M or M^T (m_transpose).

template <typename T>
struct MixArgs {
  const T* x;                 // (N, Cin, Tn * V)
  const acc_t<T>* M;          // graphs (.., K, V, V)
  int64_t m_nstride;          // 0: one set of graphs for every sample
  int m_transpose;
  const T* W;
  int64_t w_sk, w_sr, w_sc;
  const T* bias;              // (K, Cout) or null
  T* out;                     // (N, Cout, Tn * V), or null and then:
  acc_t<T>* out_acc;          // the same in the accumulation type
  int N, Cin, Cout, Tn, V, K;
  int TT, P_pad, n_ptiles, RF, m_resident;
};

constexpr int kMixCPW = 1;  // mix tiles: up to 128 columns (2 blocks per SM fit in registers)

template <typename T, bool MMA>
struct MixSmem {
  using AT = acc_t<T>;
  using CT = gemm_t<T, MMA>;
  AT* graphs;
  AT* xs;
  CT* ws;
  CT* zs;
  AT* bsum;
  float* stage;
  int vp4, ldx, ldw, ldz;
  size_t bytes;
  __host__ __device__ MixSmem(void* base, const MixArgs<T>& a) {
    vp4 = round_up(a.V, 4);
    ldx = a.P_pad + 1;
    ldw = operand_ld<MMA>(16);
    ldz = operand_ld<MMA>(a.P_pad);
    SmemCarver s(base);
    graphs = s.take<AT>(static_cast<int64_t>(a.m_resident ? a.K : 1) * a.V * vp4);
    xs = s.take<AT>(16 * ldx);
    ws = s.take<CT>(16 * a.RF * ldw);
    zs = s.take<CT>(16 * ldz);
    bsum = s.take<AT>(16 * kMaxRowFrags);
    stage = s.take<float>(MMA ? kWarps * 256 : 0);
    bytes = s.bytes();
  }
};

template <typename T, bool MMA>
__global__ void __launch_bounds__(kThreads, 2) mix_kernel(const MixArgs<T> a) {
  using AT = acc_t<T>;
  using CT = gemm_t<T, MMA>;
  MixSmem<T, MMA> sm(dynamic_smem(), a);
  const int n = blockIdx.x / a.n_ptiles;
  const int pt = blockIdx.x - n * a.n_ptiles;
  const int t0 = pt * a.TT;
  const int frames = min(a.TT, a.Tn - t0);
  const int p_valid = frames * a.V;
  const int o0 = blockIdx.y * 16 * a.RF;
  const int rows = min(16 * a.RF, a.Cout - o0);
  const int rf = a.RF;
  const int cf = a.P_pad / 16;
  const int64_t tv = static_cast<int64_t>(a.Tn) * a.V;
  const int64_t vv = static_cast<int64_t>(a.V) * a.V;
  const int gsize = a.V * sm.vp4;
  const AT* Mn = a.M + n * a.m_nstride;

  fill_zero(sm.zs, 16 * sm.ldz);  // columns >= p_valid stay zero
  if (threadIdx.x < 16 * rf) {
    AT s = AT(0);
    if (a.bias != nullptr && static_cast<int>(threadIdx.x) < rows) {
      for (int k = 0; k < a.K; ++k) s += to_acc(a.bias[static_cast<int64_t>(k) * a.Cout + o0 + threadIdx.x]);
    }
    sm.bsum[threadIdx.x] = s;
  }
  if (a.m_resident) {
    for (int k = 0; k < a.K; ++k) load_graph(sm.graphs + k * gsize, Mn + k * vv, a.V, sm.vp4, a.m_transpose != 0);
  }

  TileAcc<CT, AT, MMA, kMixCPW, false> acc;
  acc.zero();
  const T* xn = a.x + static_cast<int64_t>(n) * a.Cin * tv + static_cast<int64_t>(t0) * a.V;
  for (int c0 = 0; c0 < a.Cin; c0 += 16) {
    const int cc = min(16, a.Cin - c0);
    for (int k = 0; k < a.K; ++k) {
      __syncthreads();  // the previous step is done with xs, graphs, ws and zs
      if (k == 0) load_tile(sm.xs, sm.ldx, 16, a.P_pad, xn + c0 * tv, tv, int64_t(1), cc, p_valid);
      if (!a.m_resident) load_graph(sm.graphs, Mn + k * vv, a.V, sm.vp4, a.m_transpose != 0);
      load_tile(sm.ws, sm.ldw, 16 * rf, 16, a.W + k * a.w_sk + o0 * a.w_sr + c0 * a.w_sc, a.w_sr, a.w_sc, rows, cc);
      __syncthreads();
      const AT* g = sm.graphs + (a.m_resident ? k * gsize : 0);
      aggregate_rows(sm.zs, sm.ldz, sm.xs, sm.ldx, g, sm.vp4, 16, frames, a.V);
      __syncthreads();
      acc.mma16(sm.ws, sm.ldw, sm.zs, sm.ldz, rf, cf);
    }
  }

  const int64_t base = (static_cast<int64_t>(n) * a.Cout + o0) * tv + static_cast<int64_t>(t0) * a.V;
  T* out = a.out;
  AT* out_acc = a.out_acc;
  const AT* bsum = sm.bsum;
  acc.for_each(rf, cf, sm.stage, [&](int r, int p, AT v) {
    if (r < rows && p < p_valid) {
      const AT y = v + bsum[r];
      const int64_t idx = base + r * tv + p;
      if (out != nullptr) {
        out[idx] = Cast<T>::from(y);
      } else {
        out_acc[idx] = y;
      }
    }
  });
}

// ------------------------------------------------------------------------------------------
// pair: out[b, v, w] = sum over this block's frame tiles and all rows r of
//   sum_t L[r, t, v] * R[r, t, w],   L = A1[k] x (+ b1),   R = A2[k] x (+ b2)  or  R = rsrc[n].
// Attention: A1 = theta_w, A2 = phi_w (rows e). gM: A1 = W (rows o), R = grad_y.

template <typename T>
struct PairArgs {
  const T* x;                 // (N, Cin, Tn * V)
  const T* A1;                // rows r: A1[k * a1_sk + r * Cin + c]
  const T* b1;                // (K, R) or null
  const T* A2;                // same layout as A1, or null
  const T* b2;
  const T* rsrc;              // (N, R, Tn * V) when A2 is null
  acc_t<T>* out;              // (N * K * splits, V, V)
  int64_t a1_sk, a2_sk;
  int N, Cin, Tn, V, K, R;
  int TT, P_pad, n_ptiles, RS, splits, per_split;
};

constexpr int kPairCPW = 1;  // up to 128 columns

template <typename T, bool MMA>
struct PairSmem {
  using AT = acc_t<T>;
  using CT = gemm_t<T, MMA>;
  CT* xs;
  CT* as;
  AT* ls;
  AT* rs;
  AT* s;
  float* stage;
  int ldb, lda, lds, arows;
  size_t bytes;
  __host__ __device__ PairSmem(void* base, const PairArgs<T>& a) {
    ldb = operand_ld<MMA>(a.P_pad);
    lda = operand_ld<MMA>(16);
    lds = a.P_pad;
    arows = round_up(a.A2 != nullptr ? 2 * a.RS : a.RS, 16);
    SmemCarver c(base);
    xs = c.take<CT>(16 * ldb);
    as = c.take<CT>(arows * lda);
    ls = c.take<AT>(a.RS * lds);
    rs = c.take<AT>(a.RS * lds);
    s = c.take<AT>(a.V * a.V);
    stage = c.take<float>(MMA ? kWarps * 256 : 0);
    bytes = c.bytes();
  }
};

template <typename T, bool MMA>
__global__ void __launch_bounds__(kThreads, 1) pair_kernel(const PairArgs<T> a) {
  using AT = acc_t<T>;
  using CT = gemm_t<T, MMA>;
  PairSmem<T, MMA> sm(dynamic_smem(), a);
  const int b = blockIdx.x;
  const int nk = b / a.splits;
  const int split = b - nk * a.splits;
  const int n = nk / a.K;
  const int k = nk - n * a.K;
  const bool two = a.A2 != nullptr;
  const int V = a.V;
  const int vv = V * V;
  const int cf = a.P_pad / 16;
  const int64_t tv = static_cast<int64_t>(a.Tn) * V;

  fill_zero(sm.s, vv);
  const int pt_begin = split * a.per_split;
  const int pt_end = min(pt_begin + a.per_split, a.n_ptiles);
  for (int pt = pt_begin; pt < pt_end; ++pt) {
    const int t0 = pt * a.TT;
    const int frames = min(a.TT, a.Tn - t0);
    const int p_valid = frames * V;
    const T* xn = a.x + static_cast<int64_t>(n) * a.Cin * tv + static_cast<int64_t>(t0) * V;
    for (int r0 = 0; r0 < a.R; r0 += a.RS) {
      const int rs = min(a.RS, a.R - r0);
      const int grows = two ? 2 * rs : rs;
      const int rf = ceil_div(grows, 16);
      TileAcc<CT, AT, MMA, kPairCPW, false> acc;
      acc.zero();
      for (int c0 = 0; c0 < a.Cin; c0 += 16) {
        const int cc = min(16, a.Cin - c0);
        __syncthreads();  // xs / as free; ls / rs no longer read
        load_tile(sm.xs, sm.ldb, 16, a.P_pad, xn + c0 * tv, tv, int64_t(1), cc, p_valid);
        for (int idx = threadIdx.x; idx < 16 * rf * 16; idx += kThreads) {
          const int r = idx >> 4;
          const int c = idx & 15;
          CT v = zero_of<CT>();
          if (c < cc) {
            if (r < rs) {
              v = convert<CT>(a.A1[k * a.a1_sk + static_cast<int64_t>(r0 + r) * a.Cin + c0 + c]);
            } else if (two && r < 2 * rs) {
              v = convert<CT>(a.A2[k * a.a2_sk + static_cast<int64_t>(r0 + r - rs) * a.Cin + c0 + c]);
            }
          }
          sm.as[r * sm.lda + c] = v;
        }
        __syncthreads();
        acc.mma16(sm.as, sm.lda, sm.xs, sm.ldb, rf, cf);
      }
      AT* ls = sm.ls;
      AT* rsm = sm.rs;
      const int lds = sm.lds;
      acc.for_each(rf, cf, sm.stage, [&](int r, int p, AT v) {
        if (r < rs) {
          AT val = AT(0);
          if (p < p_valid) val = v + (a.b1 != nullptr ? to_acc(a.b1[static_cast<int64_t>(k) * a.R + r0 + r]) : AT(0));
          ls[r * lds + p] = val;
        } else if (two && r < 2 * rs) {
          const int rr = r - rs;
          AT val = AT(0);
          if (p < p_valid) val = v + (a.b2 != nullptr ? to_acc(a.b2[static_cast<int64_t>(k) * a.R + r0 + rr]) : AT(0));
          rsm[rr * lds + p] = val;
        }
      });
      if (!two) {
        load_tile(sm.rs, sm.lds, rs, a.P_pad, a.rsrc + (static_cast<int64_t>(n) * a.R + r0) * tv + static_cast<int64_t>(t0) * V,
                  tv, int64_t(1), rs, p_valid);
      }
      __syncthreads();
      for (int q = threadIdx.x; q < vv; q += kThreads) {
        const int v = q / V;
        const int w = q - v * V;
        AT s = sm.s[q];
        for (int r = 0; r < rs; ++r) {
          const AT* lr = sm.ls + r * sm.lds + v;
          const AT* rr = sm.rs + r * sm.lds + w;
          for (int t = 0; t < frames; ++t) s += lr[t * V] * rr[t * V];
        }
        sm.s[q] = s;
      }
    }
  }
  __syncthreads();
  AT* out = a.out + static_cast<int64_t>(b) * vv;
  for (int q = threadIdx.x; q < vv; q += kThreads) out[q] = sm.s[q];
}

// ------------------------------------------------------------------------------------------
// softmax over v of the summed partial scores, per (n, k) and column w.

template <typename T>
struct SoftmaxArgs {
  const acc_t<T>* s_part;     // (N * K * splits, V, V)
  const T* A;
  const T* B;                 // optional
  T* attn;                    // (N, K, V, V)
  acc_t<T>* M;                // (N, K, V, V)
  acc_t<T> scale;             // 1 / (Ce * T)
  int splits, K, V;
};

template <typename T>
__global__ void __launch_bounds__(128) softmax_forward_kernel(const SoftmaxArgs<T> a) {
  using AT = acc_t<T>;
  const int nk = blockIdx.x;
  const int k = nk % a.K;
  const int V = a.V;
  const int64_t vv = static_cast<int64_t>(V) * V;
  const AT* sp = a.s_part + static_cast<int64_t>(nk) * a.splits * vv;
  for (int w = threadIdx.x; w < V; w += blockDim.x) {
    auto score = [&](int v) {
      AT s = AT(0);
      for (int j = 0; j < a.splits; ++j) s += sp[j * vv + v * V + w];
      return s * a.scale;
    };
    AT mx = score(0);
    for (int v = 1; v < V; ++v) {
      const AT s = score(v);
      mx = s > mx ? s : mx;
    }
    AT den = AT(0);
    for (int v = 0; v < V; ++v) den += exp_acc(score(v) - mx);
    const AT inv = AT(1) / den;
    for (int v = 0; v < V; ++v) {
      const AT c = exp_acc(score(v) - mx) * inv;
      const int64_t idx = static_cast<int64_t>(nk) * vv + v * V + w;
      const int64_t gidx = static_cast<int64_t>(k) * vv + v * V + w;
      a.attn[idx] = Cast<T>::from(c);
      AT m = to_acc(a.A[gidx]) + c;
      if (a.B != nullptr) m += to_acc(a.B[gidx]);
      a.M[idx] = m;
    }
  }
}

// gS[nk, v, w] = C (gC - sum_v C gC) * scale with gC the summed partial gM.
template <typename T>
struct SoftmaxBackArgs {
  const T* attn;              // C (N, K, V, V)
  const acc_t<T>* g_part;     // (N * K * splits, V, V)
  acc_t<T>* gS;               // (N, K, V, V)
  acc_t<T> scale;
  int splits, V;
};

template <typename T>
__global__ void __launch_bounds__(128) softmax_backward_kernel(const SoftmaxBackArgs<T> a) {
  using AT = acc_t<T>;
  const int nk = blockIdx.x;
  const int V = a.V;
  const int64_t vv = static_cast<int64_t>(V) * V;
  const AT* gp = a.g_part + static_cast<int64_t>(nk) * a.splits * vv;
  const T* C = a.attn + static_cast<int64_t>(nk) * vv;
  for (int w = threadIdx.x; w < V; w += blockDim.x) {
    auto grad = [&](int v) {
      AT s = AT(0);
      for (int j = 0; j < a.splits; ++j) s += gp[j * vv + v * V + w];
      return s;
    };
    AT dot = AT(0);
    for (int v = 0; v < V; ++v) dot += to_acc(C[v * V + w]) * grad(v);
    for (int v = 0; v < V; ++v) {
      a.gS[static_cast<int64_t>(nk) * vv + v * V + w] = to_acc(C[v * V + w]) * (grad(v) - dot) * a.scale;
    }
  }
}

// gB[k, v, w] = sum_n sum_j g_part[(n * K + k) * splits + j, v, w].
template <typename T>
struct GraphGradArgs {
  const acc_t<T>* g_part;
  T* gB;
  int N, K, V, splits;
};

template <typename T>
__global__ void __launch_bounds__(kThreads) graph_grad_kernel(const GraphGradArgs<T> a) {
  using AT = acc_t<T>;
  const int64_t vv = static_cast<int64_t>(a.V) * a.V;
  const int64_t total = static_cast<int64_t>(a.K) * vv;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < total; i += stride) {
    const int64_t k = i / vv;
    const int64_t vw = i - k * vv;
    AT s = AT(0);
    for (int n = 0; n < a.N; ++n) {
      const AT* g = a.g_part + ((static_cast<int64_t>(n) * a.K + k) * a.splits) * vv + vw;
      for (int j = 0; j < a.splits; ++j) s += g[j * vv];
    }
    a.gB[i] = Cast<T>::from(s);
  }
}

// ------------------------------------------------------------------------------------------
// attention backward: shared pieces of attn_gx_kernel and attn_gw_kernel.

template <typename T>
struct AttnBackArgs {
  const T* x;                 // (N, Cin, Tn * V)
  const T* tw;                // theta_w (K, E, Cin)
  const T* tb;                // theta_b (K, E) or null
  const T* pw;                // phi_w
  const T* pb;
  const acc_t<T>* gS;         // (N, K, V, V), already scaled by 1 / (E * T)
  const acc_t<T>* gx_in;      // attn_gx: (N, Cin, Tn * V), the mix part of gx
  T* gx_out;                  // attn_gx: gx = gx_in + attention part
  acc_t<T>* gtw;              // attn_gw: (K, E, Cin) scratch (zeroed)
  acc_t<T>* gpw;
  acc_t<T>* gtb;              // (K, E) scratch or null
  acc_t<T>* gpb;
  int N, Cin, Tn, V, K, E;
  int TT, P_pad, n_ptiles;
  int ET, n_etiles;           // embedding rows per tile (<= 48): the products have 2 * ET rows
  int CW, n_ctiles;           // Cin tile (multiple of 16)
  int splits, per_split;      // attn_gw: units (sample, frame tile) per block
};

constexpr int kAttnCPW = 1;

template <typename T, bool MMA>
struct AttnSmem {
  using AT = acc_t<T>;
  using CT = gemm_t<T, MMA>;
  CT* xs;      // x chunk (16 x P_pad), B operand of the theta/phi product
  CT* as;      // A operand chunk (up to 96 rows x 16)
  AT* tp;      // theta rows [0, et), phi rows [et, 2 et)
  CT* g;       // gtheta rows [0, et), gphi rows [et, 2 et)
  CT* xt;      // attn_gw: x tile (CW x P_pad), column-major B operand
  AT* gs;      // gS[n, k], rows padded to vp4
  AT* rowsum;  // attn_gw: bias gradients
  float* stage;
  int ldb, lda, ldt, ldg, vp4, trows, arows;
  size_t bytes;
  __host__ __device__ AttnSmem(void* base, const AttnBackArgs<T>& a, bool weights) {
    ldb = operand_ld<MMA>(a.P_pad);
    lda = operand_ld<MMA>(16);
    ldt = a.P_pad + 1;
    ldg = operand_ld<MMA>(a.P_pad);
    vp4 = round_up(a.V, 4);
    trows = round_up(2 * a.ET, 16);
    arows = weights ? trows : (trows > a.CW ? trows : a.CW);
    SmemCarver c(base);
    xs = c.take<CT>(16 * ldb);
    as = c.take<CT>(arows * lda);
    tp = c.take<AT>(trows * ldt);
    g = c.take<CT>(trows * ldg);
    xt = c.take<CT>(weights ? a.CW * ldb : 0);
    gs = c.take<AT>(a.V * vp4);
    rowsum = c.take<AT>(weights ? trows : 0);
    stage = c.take<float>(MMA ? kWarps * 256 : 0);
    bytes = c.bytes();
  }
};

// theta/phi of one frame tile for partition k, embedding rows [e0, e0 + et): tp rows [0, et) =
// theta, [et, 2 et) = phi, zero outside the valid columns. Ends with a __syncthreads.
template <typename T, bool MMA>
__device__ __forceinline__ void attn_recompute(const AttnBackArgs<T>& a, AttnSmem<T, MMA>& sm, int n, int k, int e0,
                                               int et, int t0, int p_valid, bool load_graphs) {
  using AT = acc_t<T>;
  using CT = gemm_t<T, MMA>;
  const int64_t tv = static_cast<int64_t>(a.Tn) * a.V;
  const int rows = 2 * et;
  const int rf = ceil_div(rows, 16);
  const int cf = a.P_pad / 16;
  const T* xn = a.x + static_cast<int64_t>(n) * a.Cin * tv + static_cast<int64_t>(t0) * a.V;
  TileAcc<CT, AT, MMA, kAttnCPW, false> acc;
  acc.zero();
  for (int c0 = 0; c0 < a.Cin; c0 += 16) {
    const int cc = min(16, a.Cin - c0);
    __syncthreads();  // xs / as / graphs free, tp / g no longer read
    if (load_graphs && c0 == 0) {
      const acc_t<T>* gsrc = a.gS + (static_cast<int64_t>(n) * a.K + k) * a.V * a.V;
      load_graph(sm.gs, gsrc, a.V, sm.vp4, false);
    }
    load_tile(sm.xs, sm.ldb, 16, a.P_pad, xn + c0 * tv, tv, int64_t(1), cc, p_valid);
    for (int idx = threadIdx.x; idx < 16 * rf * 16; idx += kThreads) {
      const int r = idx >> 4;
      const int c = idx & 15;
      CT v = zero_of<CT>();
      if (c < cc) {
        if (r < et) {
          v = convert<CT>(a.tw[(static_cast<int64_t>(k) * a.E + e0 + r) * a.Cin + c0 + c]);
        } else if (r < rows) {
          v = convert<CT>(a.pw[(static_cast<int64_t>(k) * a.E + e0 + r - et) * a.Cin + c0 + c]);
        }
      }
      sm.as[r * sm.lda + c] = v;
    }
    __syncthreads();
    acc.mma16(sm.as, sm.lda, sm.xs, sm.ldb, rf, cf);
  }
  AT* tp = sm.tp;
  const int ldt = sm.ldt;
  acc.for_each(rf, cf, sm.stage, [&](int r, int p, AT v) {
    if (r < rows) {
      AT val = AT(0);
      if (p < p_valid) {
        val = v;
        if (r < et) {
          if (a.tb != nullptr) val += to_acc(a.tb[static_cast<int64_t>(k) * a.E + e0 + r]);
        } else if (a.pb != nullptr) {
          val += to_acc(a.pb[static_cast<int64_t>(k) * a.E + e0 + r - et]);
        }
      }
      tp[r * ldt + p] = val;
    }
  });
  __syncthreads();
}

// g rows [0, et) = gtheta = sum_w phi[., w] gS[v, w]; rows [et, 2 et) = gphi = sum_v theta[., v] gS[v, w].
// Adds each row's total into rowsum (shared atomics) when rowsum is not null. Ends with a sync.
template <typename T, bool MMA>
__device__ __forceinline__ void attn_grad_rows(AttnSmem<T, MMA>& sm, int et, int frames, int V, acc_t<T>* rowsum) {
  using AT = acc_t<T>;
  const int rows = 2 * et;
  const int pairs = rows * frames;
  for (int q = threadIdx.x; q < pairs; q += kThreads) {
    const int r = q % rows;
    const int t = q / rows;
    AT total;
    if (r < et) {
      total = aggregate_frame_t(sm.g + r * sm.ldg + t * V, sm.tp + (et + r) * sm.ldt + t * V, sm.gs, sm.vp4, V);
    } else {
      total = aggregate_frame(sm.g + r * sm.ldg + t * V, sm.tp + (r - et) * sm.ldt + t * V, sm.gs, sm.vp4, V);
    }
    if (rowsum != nullptr) atomicAdd(rowsum + r, total);
  }
  __syncthreads();
}

// grid (N * n_ptiles, n_ctiles): gx[n, c-tile, tile] = gx_in + sum_k [theta_w; phi_w]^T [gtheta; gphi].
template <typename T, bool MMA>
__global__ void __launch_bounds__(kThreads, 1) attn_gx_kernel(const AttnBackArgs<T> a) {
  using AT = acc_t<T>;
  using CT = gemm_t<T, MMA>;
  AttnSmem<T, MMA> sm(dynamic_smem(), a, false);
  const int n = blockIdx.x / a.n_ptiles;
  const int pt = blockIdx.x - n * a.n_ptiles;
  const int t0 = pt * a.TT;
  const int frames = min(a.TT, a.Tn - t0);
  const int p_valid = frames * a.V;
  const int c0 = blockIdx.y * a.CW;
  const int cw = min(a.CW, a.Cin - c0);
  const int rf2 = a.CW / 16;
  const int cf = a.P_pad / 16;
  const int64_t tv = static_cast<int64_t>(a.Tn) * a.V;

  fill_zero(sm.g, sm.trows * sm.ldg);
  TileAcc<CT, AT, MMA, kAttnCPW, false> acc;
  acc.zero();
  for (int k = 0; k < a.K; ++k) {
    for (int e0 = 0; e0 < a.E; e0 += a.ET) {
      const int et = min(a.ET, a.E - e0);
      const int rows = 2 * et;
      attn_recompute<T, MMA>(a, sm, n, k, e0, et, t0, p_valid, e0 == 0);
      attn_grad_rows<T, MMA>(sm, et, frames, a.V, nullptr);
      for (int j0 = 0; j0 < rows; j0 += 16) {
        for (int idx = threadIdx.x; idx < a.CW * 16; idx += kThreads) {
          const int c = idx >> 4;
          const int jj = idx & 15;
          const int j = j0 + jj;
          CT v = zero_of<CT>();
          if (c < cw) {
            if (j < et) {
              v = convert<CT>(a.tw[(static_cast<int64_t>(k) * a.E + e0 + j) * a.Cin + c0 + c]);
            } else if (j < rows) {
              v = convert<CT>(a.pw[(static_cast<int64_t>(k) * a.E + e0 + j - et) * a.Cin + c0 + c]);
            }
          }
          sm.as[c * sm.lda + jj] = v;
        }
        __syncthreads();
        acc.mma16(sm.as, sm.lda, sm.g + j0 * sm.ldg, sm.ldg, rf2, cf);
        __syncthreads();
      }
    }
  }
  const int64_t base = (static_cast<int64_t>(n) * a.Cin + c0) * tv + static_cast<int64_t>(t0) * a.V;
  const AT* gx_in = a.gx_in;
  T* gx_out = a.gx_out;
  acc.for_each(rf2, cf, sm.stage, [&](int r, int p, AT v) {
    if (r < cw && p < p_valid) {
      const int64_t idx = base + r * tv + p;
      gx_out[idx] = Cast<T>::from(gx_in[idx] + v);
    }
  });
}

// grid (K * n_etiles * n_ctiles * splits): gtheta_w/gphi_w[k, e-tile, c-tile] (+ bias gradients)
// accumulated over the block's range of (sample, frame tile) units.
template <typename T, bool MMA>
__global__ void __launch_bounds__(kThreads, 1) attn_gw_kernel(const AttnBackArgs<T> a) {
  using AT = acc_t<T>;
  using CT = gemm_t<T, MMA>;
  AttnSmem<T, MMA> sm(dynamic_smem(), a, true);
  int b = blockIdx.x;
  const int split = b % a.splits;
  b /= a.splits;
  const int ct = b % a.n_ctiles;
  b /= a.n_ctiles;
  const int ei = b % a.n_etiles;
  const int k = b / a.n_etiles;
  const int e0 = ei * a.ET;
  const int et = min(a.ET, a.E - e0);
  const int rows = 2 * et;
  const int rf = ceil_div(rows, 16);
  const int c0 = ct * a.CW;
  const int cw = min(a.CW, a.Cin - c0);
  const int cfw = ceil_div(cw, 16);
  const bool want_rowsum = ct == 0 && (a.gtb != nullptr || a.gpb != nullptr);
  const int64_t tv = static_cast<int64_t>(a.Tn) * a.V;

  fill_zero(sm.g, sm.trows * sm.ldg);
  fill_zero(sm.rowsum, sm.trows);
  TileAcc<CT, AT, MMA, kAttnCPW, true> accw;
  accw.zero();
  const int units = a.N * a.n_ptiles;
  const int u_begin = split * a.per_split;
  const int u_end = min(u_begin + a.per_split, units);
  for (int u = u_begin; u < u_end; ++u) {
    const int n = u / a.n_ptiles;
    const int pt = u - n * a.n_ptiles;
    const int t0 = pt * a.TT;
    const int frames = min(a.TT, a.Tn - t0);
    const int p_valid = frames * a.V;
    attn_recompute<T, MMA>(a, sm, n, k, e0, et, t0, p_valid, true);
    load_tile(sm.xt, sm.ldb, a.CW, a.P_pad,
              a.x + (static_cast<int64_t>(n) * a.Cin + c0) * tv + static_cast<int64_t>(t0) * a.V, tv, int64_t(1),
              cw, p_valid);
    attn_grad_rows<T, MMA>(sm, et, frames, a.V, want_rowsum ? sm.rowsum : nullptr);
    for (int p0 = 0; p0 < a.P_pad; p0 += 16) accw.mma16(sm.g + p0, sm.ldg, sm.xt + p0, sm.ldb, rf, cfw);
  }
  AT* gtw = a.gtw;
  AT* gpw = a.gpw;
  const int E = a.E;
  const int Cin = a.Cin;
  accw.for_each(rf, cfw, sm.stage, [&](int r, int c, AT v) {
    if (r < rows && c < cw) {
      if (r < et) {
        atomic_add(gtw + (static_cast<int64_t>(k) * E + e0 + r) * Cin + c0 + c, v);
      } else {
        atomic_add(gpw + (static_cast<int64_t>(k) * E + e0 + r - et) * Cin + c0 + c, v);
      }
    }
  });
  if (want_rowsum) {
    __syncthreads();
    const int r = threadIdx.x;
    if (r < rows) {
      if (r < et) {
        if (a.gtb != nullptr) atomic_add(a.gtb + static_cast<int64_t>(k) * E + e0 + r, sm.rowsum[r]);
      } else if (a.gpb != nullptr) {
        atomic_add(a.gpb + static_cast<int64_t>(k) * E + e0 + r - et, sm.rowsum[r]);
      }
    }
  }
}

// ------------------------------------------------------------------------------------------
// wgrad: gW[k, o, c] += sum over units of sum_p gy[n, o, p] Z[n, k, c, p], Z = x M[n, k];
// gbias[o] += sum_p gy[n, o, p] in the k = 0, first-Cin-tile blocks.

template <typename T>
struct WgradArgs {
  const T* gy;                // (N, Cout, Tn * V)
  const T* x;                 // (N, Cin, Tn * V)
  const acc_t<T>* M;
  int64_t m_nstride;
  acc_t<T>* gW;               // (K, Cout, Cin) scratch (zeroed)
  acc_t<T>* gbias;            // (Cout) scratch (zeroed) or null
  int N, Cin, Cout, Tn, V, K;
  int TT, P_pad, n_ptiles;
  int RF, n_otiles, CW, n_ctiles, splits, per_split;
};

constexpr int kWgradCPW = 1;

template <typename T, bool MMA>
struct WgradSmem {
  using AT = acc_t<T>;
  using CT = gemm_t<T, MMA>;
  CT* gyt;
  CT* zt;
  AT* xs;
  AT* graph;
  AT* gbs;
  float* stage;
  int ldg, ldz, ldx, vp4;
  size_t bytes;
  __host__ __device__ WgradSmem(void* base, const WgradArgs<T>& a) {
    ldg = operand_ld<MMA>(a.P_pad);
    ldz = operand_ld<MMA>(a.P_pad);
    ldx = a.P_pad + 1;
    vp4 = round_up(a.V, 4);
    SmemCarver c(base);
    gyt = c.take<CT>(16 * a.RF * ldg);
    zt = c.take<CT>(a.CW * ldz);
    xs = c.take<AT>(16 * ldx);
    graph = c.take<AT>(a.V * vp4);
    gbs = c.take<AT>(16 * kMaxRowFrags);
    stage = c.take<float>(MMA ? kWarps * 256 : 0);
    bytes = c.bytes();
  }
};

template <typename T, bool MMA>
__global__ void __launch_bounds__(kThreads, 1) wgrad_kernel(const WgradArgs<T> a) {
  using AT = acc_t<T>;
  using CT = gemm_t<T, MMA>;
  WgradSmem<T, MMA> sm(dynamic_smem(), a);
  int b = blockIdx.x;
  const int split = b % a.splits;
  b /= a.splits;
  const int ct = b % a.n_ctiles;
  b /= a.n_ctiles;
  const int ot = b % a.n_otiles;
  const int k = b / a.n_otiles;
  const int o0 = ot * 16 * a.RF;
  const int orows = min(16 * a.RF, a.Cout - o0);
  const int c0 = ct * a.CW;
  const int cw = min(a.CW, a.Cin - c0);
  const int cfw = ceil_div(cw, 16);
  const bool do_bias = a.gbias != nullptr && k == 0 && ct == 0;
  const int64_t tv = static_cast<int64_t>(a.Tn) * a.V;
  const int64_t vv = static_cast<int64_t>(a.V) * a.V;

  fill_zero(sm.zt, a.CW * sm.ldz);  // columns >= p_valid and rows >= cw stay zero
  fill_zero(sm.gbs, 16 * kMaxRowFrags);
  TileAcc<CT, AT, MMA, kWgradCPW, true> acc;
  acc.zero();
  const int units = a.N * a.n_ptiles;
  const int u_begin = split * a.per_split;
  const int u_end = min(u_begin + a.per_split, units);
  for (int u = u_begin; u < u_end; ++u) {
    const int n = u / a.n_ptiles;
    const int pt = u - n * a.n_ptiles;
    const int t0 = pt * a.TT;
    const int frames = min(a.TT, a.Tn - t0);
    const int p_valid = frames * a.V;
    __syncthreads();  // the previous unit is done with gyt, zt, xs and graph
    load_tile(sm.gyt, sm.ldg, 16 * a.RF, a.P_pad,
              a.gy + (static_cast<int64_t>(n) * a.Cout + o0) * tv + static_cast<int64_t>(t0) * a.V, tv, int64_t(1),
              orows, p_valid);
    load_graph(sm.graph, a.M + n * a.m_nstride + k * vv, a.V, sm.vp4, false);
    const T* xn = a.x + (static_cast<int64_t>(n) * a.Cin + c0) * tv + static_cast<int64_t>(t0) * a.V;
    for (int cc0 = 0; cc0 < cw; cc0 += 16) {
      if (cc0 > 0) __syncthreads();  // xs no longer read
      load_tile(sm.xs, sm.ldx, 16, a.P_pad, xn + cc0 * tv, tv, int64_t(1), min(16, cw - cc0), p_valid);
      __syncthreads();
      aggregate_rows(sm.zt + cc0 * sm.ldz, sm.ldz, sm.xs, sm.ldx, sm.graph, sm.vp4, 16, frames, a.V);
    }
    __syncthreads();
    if (do_bias && static_cast<int>(threadIdx.x) < orows) {
      AT s = AT(0);
      const CT* row = sm.gyt + threadIdx.x * sm.ldg;
      for (int p = 0; p < p_valid; ++p) s += to_acc(row[p]);
      sm.gbs[threadIdx.x] += s;
    }
    for (int p0 = 0; p0 < a.P_pad; p0 += 16) acc.mma16(sm.gyt + p0, sm.ldg, sm.zt + p0, sm.ldz, a.RF, cfw);
  }
  AT* gW = a.gW;
  const int Cout = a.Cout;
  const int Cin = a.Cin;
  acc.for_each(a.RF, cfw, sm.stage, [&](int r, int c, AT v) {
    if (r < orows && c < cw) atomic_add(gW + (static_cast<int64_t>(k) * Cout + o0 + r) * Cin + c0 + c, v);
  });
  if (do_bias && static_cast<int>(threadIdx.x) < orows) atomic_add(a.gbias + o0 + threadIdx.x, sm.gbs[threadIdx.x]);
}

// ==========================================================================================
// host: planning and launching

struct FrameTiling {
  int TT = 1, P_pad = 16, n_ptiles = 1;
};

// Balanced tiles of whole frames with at most max(max_cols, V) columns each.
inline FrameTiling frame_tiling(int Tn, int V, int max_cols) {
  int tt = max_cols / V;
  if (tt < 1) tt = 1;
  if (tt > Tn) tt = Tn;
  FrameTiling f;
  f.n_ptiles = ceil_div(Tn, tt);
  f.TT = ceil_div(Tn, f.n_ptiles);
  f.P_pad = round_up(f.TT * V, 16);
  return f;
}

template <typename Args>
inline void apply_tiling(Args& a, const FrameTiling& f) {
  a.TT = f.TT;
  a.P_pad = f.P_pad;
  a.n_ptiles = f.n_ptiles;
}

// Choose the widest frame tiling (<= cap columns) whose shared memory fits the device.
template <typename Layout, typename Args>
inline cudaError_t fit_tiles(Args& a, int cap, const DeviceLimits& lim, size_t* smem) {
  for (int cols = cap;; cols /= 2) {
    apply_tiling(a, frame_tiling(a.Tn, a.V, cols));
    const size_t bytes = Layout(nullptr, a).bytes;
    if (bytes <= static_cast<size_t>(lim.max_smem)) {
      *smem = bytes;
      return cudaSuccess;
    }
    if (a.TT == 1) return cudaErrorInvalidConfiguration;
  }
}

template <typename T, bool MMA>
struct AttnLayoutGx {
  size_t bytes;
  AttnLayoutGx(void*, const AttnBackArgs<T>& a) : bytes(AttnSmem<T, MMA>(nullptr, a, false).bytes) {}
};
template <typename T, bool MMA>
struct AttnLayoutGw {
  size_t bytes;
  AttnLayoutGw(void*, const AttnBackArgs<T>& a) : bytes(AttnSmem<T, MMA>(nullptr, a, true).bytes) {}
};

struct Dims {
  int N, Cin, Cout, Tn, V, K, E;
};

inline bool fits_int(int64_t v) { return v >= 0 && v <= INT_MAX; }

inline cudaError_t check_sizes(const AgcSizes& s, Dims* d) {
  if (s.N < 1 || s.Cin < 1 || s.Cout < 1 || s.T < 1 || s.V < 1 || s.K < 1 || s.Ce < 0) return cudaErrorInvalidValue;
  if (s.V > kMaxJoints) return cudaErrorInvalidValue;
  if (!fits_int(s.N) || !fits_int(s.Cin) || !fits_int(s.Cout) || !fits_int(s.T) || !fits_int(s.K) ||
      !fits_int(s.Ce) || !fits_int(s.T * s.V) || !fits_int(s.N * s.K) || !fits_int(s.N * s.T)) {
    return cudaErrorInvalidValue;
  }
  *d = Dims{static_cast<int>(s.N), static_cast<int>(s.Cin), static_cast<int>(s.Cout), static_cast<int>(s.T),
            static_cast<int>(s.V), static_cast<int>(s.K), static_cast<int>(s.Ce)};
  return cudaSuccess;
}

// Rows per Cout tile: balanced tiles of at most 96 rows, as 16-row fragments.
inline void row_tiles(int rows, int* rf, int* n_tiles) {
  *n_tiles = ceil_div(rows, 16 * kMaxRowFrags);
  *rf = ceil_div(ceil_div(rows, *n_tiles), 16);
}

// Column tiles of a multiple of 16, at most cap wide.
inline void col_tiles(int cols, int cap, int* width, int* n_tiles) {
  *n_tiles = ceil_div(cols, cap);
  *width = round_up(ceil_div(cols, *n_tiles), 16);
}

// ---- mix (forward y, backward gx) ----
template <typename T, bool MMA>
cudaError_t run_mix(const Dims& d, const T* in, int in_ch, int out_ch, const acc_t<T>* M, int64_t m_nstride,
                    bool m_transpose, const T* W, int64_t w_sk, int64_t w_sr, int64_t w_sc, const T* bias, T* out,
                    acc_t<T>* out_acc, const DeviceLimits& lim, bool launch, cudaStream_t stream) {
  MixArgs<T> a{};
  a.x = in;
  a.M = M;
  a.m_nstride = m_nstride;
  a.m_transpose = m_transpose ? 1 : 0;
  a.W = W;
  a.w_sk = w_sk;
  a.w_sr = w_sr;
  a.w_sc = w_sc;
  a.bias = bias;
  a.out = out;
  a.out_acc = out_acc;
  a.N = d.N;
  a.Cin = in_ch;
  a.Cout = out_ch;
  a.Tn = d.Tn;
  a.V = d.V;
  a.K = d.K;
  int n_otiles = 1;
  row_tiles(out_ch, &a.RF, &n_otiles);
  const size_t graph_bytes = static_cast<size_t>(d.K) * d.V * round_up(d.V, 4) * sizeof(acc_t<T>);
  a.m_resident = graph_bytes <= 32 * 1024 ? 1 : 0;
  size_t smem = 0;
  POSEKERNELS_TRY((fit_tiles<MixSmem<T, MMA>>(a, 128 * kMixCPW, lim, &smem)));
  const int64_t blocks = static_cast<int64_t>(d.N) * a.n_ptiles;
  if (!fits_int(blocks) || n_otiles > 65535) return cudaErrorInvalidValue;
  if (!launch) return cudaSuccess;
  return launch_kernel(mix_kernel<T, MMA>, dim3(static_cast<unsigned>(blocks), n_otiles), kThreads, smem, stream, a);
}

// ---- pair (attention scores, gM) ----
template <typename T, bool MMA>
cudaError_t run_pair(const Dims& d, const T* x, const T* A1, int64_t a1_sk, const T* b1, const T* A2, int64_t a2_sk,
                     const T* b2, const T* rsrc, int R, Workspace& ws, acc_t<T>** out, int* splits_out,
                     const DeviceLimits& lim, bool launch, cudaStream_t stream) {
  PairArgs<T> a{};
  a.x = x;
  a.A1 = A1;
  a.a1_sk = a1_sk;
  a.b1 = b1;
  a.A2 = A2;
  a.a2_sk = a2_sk;
  a.b2 = b2;
  a.rsrc = rsrc;
  a.N = d.N;
  a.Cin = d.Cin;
  a.Tn = d.Tn;
  a.V = d.V;
  a.K = d.K;
  a.R = R;
  const int cap_rows = 48;  // rows per side: keeps the staged L and R tiles (and the footprint) small
  a.RS = ceil_div(R, ceil_div(R, cap_rows));
  size_t smem = 0;
  POSEKERNELS_TRY((fit_tiles<PairSmem<T, MMA>>(a, 128 * kPairCPW, lim, &smem)));
  const Split sp = split_units(a.n_ptiles, d.N * d.K, lim.sms);
  a.splits = sp.splits;
  a.per_split = sp.per;
  const int64_t blocks = static_cast<int64_t>(d.N) * d.K * a.splits;
  if (!fits_int(blocks)) return cudaErrorInvalidValue;
  a.out = ws.take<acc_t<T>>(blocks * d.V * d.V);
  *out = a.out;
  *splits_out = a.splits;
  if (!launch) return cudaSuccess;
  return launch_kernel(pair_kernel<T, MMA>, dim3(static_cast<unsigned>(blocks)), kThreads, smem, stream, a);
}

template <typename T>
cudaError_t run_graph(const T* A, const T* B, const T* attn, acc_t<T>* M, int64_t count_nk, const Dims& d,
                      const DeviceLimits& lim, bool launch, cudaStream_t stream) {
  if (!launch) return cudaSuccess;
  GraphArgs<T> g{A, B, attn, M, count_nk, d.K, d.V};
  const int64_t total = count_nk * d.V * d.V;
  return launch_kernel(graph_kernel<T>, dim3(elementwise_blocks(total, lim.sms)), kThreads, 0, stream, g);
}

template <typename T>
cudaError_t run_convert(const acc_t<T>* src, T* dst, int64_t count, int64_t period, const DeviceLimits& lim,
                        bool launch, cudaStream_t stream) {
  if (!launch || count == 0) return cudaSuccess;
  return launch_kernel(convert_kernel<T>, dim3(elementwise_blocks(count, lim.sms)), kThreads, 0, stream, src, dst,
                       count, period);
}

// Attention forward: scores, softmax; writes attn (T) and M (N, K, V, V).
template <typename T, bool MMA>
cudaError_t run_attention(const Dims& d, const T* x, const T* A, const T* B, const T* tw, const T* tb, const T* pw,
                          const T* pb, T* attn, acc_t<T>* M, Workspace& ws, const DeviceLimits& lim, bool launch,
                          cudaStream_t stream) {
  acc_t<T>* s_part = nullptr;
  int splits = 1;
  const int64_t w_sk = static_cast<int64_t>(d.E) * d.Cin;
  POSEKERNELS_TRY((run_pair<T, MMA>(d, x, tw, w_sk, tb, pw, w_sk, pb, nullptr, d.E, ws, &s_part, &splits, lim, launch,
                                    stream)));
  if (!launch) return cudaSuccess;
  SoftmaxArgs<T> s{};
  s.s_part = s_part;
  s.A = A;
  s.B = B;
  s.attn = attn;
  s.M = M;
  s.scale = acc_t<T>(1) / (static_cast<acc_t<T>>(d.E) * static_cast<acc_t<T>>(d.Tn));
  s.splits = splits;
  s.K = d.K;
  s.V = d.V;
  return launch_kernel(softmax_forward_kernel<T>, dim3(static_cast<unsigned>(d.N * d.K)), 128, 0, stream, s);
}

template <typename T, bool MMA>
cudaError_t agc_forward_t(const Dims& d, const AgcForwardArgs& p, const DeviceLimits& lim, Workspace& ws, bool launch,
                          cudaStream_t stream) {
  using AT = acc_t<T>;
  const T* x = static_cast<const T*>(p.x);
  const T* A = static_cast<const T*>(p.A);
  const T* W = static_cast<const T*>(p.W);
  const T* bias = static_cast<const T*>(p.bias);
  const T* B = static_cast<const T*>(p.B);
  const bool attention = d.E > 0;
  if (attention && (p.theta_w == nullptr || p.phi_w == nullptr || p.attn == nullptr)) return cudaErrorInvalidValue;
  const int64_t vv = static_cast<int64_t>(d.V) * d.V;
  AT* M = ws.take<AT>((attention ? static_cast<int64_t>(d.N) : 1) * d.K * vv);
  if (attention) {
    POSEKERNELS_TRY((run_attention<T, MMA>(d, x, A, B, static_cast<const T*>(p.theta_w),
                                           static_cast<const T*>(p.theta_b), static_cast<const T*>(p.phi_w),
                                           static_cast<const T*>(p.phi_b), static_cast<T*>(p.attn), M, ws, lim,
                                           launch, stream)));
  } else {
    POSEKERNELS_TRY(run_graph<T>(A, B, nullptr, M, d.K, d, lim, launch, stream));
  }
  const int64_t w_sk = static_cast<int64_t>(d.Cout) * d.Cin;
  return run_mix<T, MMA>(d, x, d.Cin, d.Cout, M, attention ? d.K * vv : 0, false, W, w_sk, d.Cin, 1, bias,
                         static_cast<T*>(p.y), nullptr, lim, launch, stream);
}

template <typename T, bool MMA>
cudaError_t agc_backward_t(const Dims& d, const AgcBackwardArgs& p, const DeviceLimits& lim, Workspace& ws,
                           bool launch, cudaStream_t stream) {
  using AT = acc_t<T>;
  const T* gy = static_cast<const T*>(p.grad_y);
  const T* x = static_cast<const T*>(p.x);
  const T* A = static_cast<const T*>(p.A);
  const T* W = static_cast<const T*>(p.W);
  const T* B = static_cast<const T*>(p.B);
  const T* tw = static_cast<const T*>(p.theta_w);
  const T* tb = static_cast<const T*>(p.theta_b);
  const T* pw = static_cast<const T*>(p.phi_w);
  const T* pb = static_cast<const T*>(p.phi_b);
  const bool attention = d.E > 0;
  const bool has_B = B != nullptr;
  if (attention && (tw == nullptr || pw == nullptr || p.gtheta_w == nullptr || p.gphi_w == nullptr)) {
    return cudaErrorInvalidValue;
  }
  if ((p.has_bias && p.gbias == nullptr) || (has_B && p.gB == nullptr) || p.gx == nullptr || p.gW == nullptr ||
      (tb != nullptr && p.gtheta_b == nullptr) || (pb != nullptr && p.gphi_b == nullptr)) {
    return cudaErrorInvalidValue;
  }
  const int64_t vv = static_cast<int64_t>(d.V) * d.V;
  const int64_t nkvv = static_cast<int64_t>(d.N) * d.K * vv;
  const int64_t tv = static_cast<int64_t>(d.Tn) * d.V;

  // 1. graphs M (and C when it was not saved)
  AT* M = ws.take<AT>(attention ? nkvv : d.K * vv);
  const T* attn = static_cast<const T*>(p.attn);
  if (attention && attn == nullptr) {
    T* attn_local = ws.take<T>(nkvv);
    POSEKERNELS_TRY((run_attention<T, MMA>(d, x, A, B, tw, tb, pw, pb, attn_local, M, ws, lim, launch, stream)));
    attn = attn_local;
  } else {
    POSEKERNELS_TRY(run_graph<T>(A, B, attention ? attn : nullptr, M, attention ? d.N * d.K : d.K, d, lim, launch,
                                 stream));
  }

  // 2. gM = dL/dM per sample (partial sums over frame-tile splits)
  AT* g_part = nullptr;
  int g_splits = 1;
  if (attention || has_B) {
    POSEKERNELS_TRY((run_pair<T, MMA>(d, x, W, static_cast<int64_t>(d.Cout) * d.Cin, nullptr, nullptr, 0, nullptr, gy,
                                      d.Cout, ws, &g_part, &g_splits, lim, launch, stream)));
  }
  if (has_B && launch) {
    GraphGradArgs<T> g{g_part, static_cast<T*>(p.gB), d.N, d.K, d.V, g_splits};
    POSEKERNELS_TRY(launch_kernel(graph_grad_kernel<T>, dim3(elementwise_blocks(d.K * vv, lim.sms)), kThreads, 0,
                                  stream, g));
  }

  // 3. attention: gS, then the weight-space gradients
  AT* gS = nullptr;
  AT* gx_acc = nullptr;
  if (attention) {
    gS = ws.take<AT>(nkvv);
    gx_acc = ws.take<AT>(static_cast<int64_t>(d.N) * d.Cin * tv);
    if (launch) {
      SoftmaxBackArgs<T> s{};
      s.attn = attn;
      s.g_part = g_part;
      s.gS = gS;
      s.scale = AT(1) / (static_cast<AT>(d.E) * static_cast<AT>(d.Tn));
      s.splits = g_splits;
      s.V = d.V;
      POSEKERNELS_TRY(launch_kernel(softmax_backward_kernel<T>, dim3(static_cast<unsigned>(d.N * d.K)), 128, 0,
                                    stream, s));
    }
  }

  // 4. gx through the graph product: gx = sum_k W[k]^T gy M[n,k]^T
  POSEKERNELS_TRY((run_mix<T, MMA>(d, gy, d.Cout, d.Cin, M, attention ? d.K * vv : 0, true, W,
                                   static_cast<int64_t>(d.Cout) * d.Cin, 1, d.Cin, nullptr,
                                   attention ? nullptr : static_cast<T*>(p.gx), gx_acc, lim, launch, stream)));

  // 5. attention part of gx and the embedding gradients
  const int64_t kec = static_cast<int64_t>(d.K) * d.E * d.Cin;
  const int64_t ke = static_cast<int64_t>(d.K) * d.E;
  if (attention) {
    AT* gtw = ws.take<AT>(kec);
    AT* gpw = ws.take<AT>(kec);
    AT* gtb = tb != nullptr ? ws.take<AT>(ke) : nullptr;
    AT* gpb = pb != nullptr ? ws.take<AT>(ke) : nullptr;
    AttnBackArgs<T> a{};
    a.x = x;
    a.tw = tw;
    a.tb = tb;
    a.pw = pw;
    a.pb = pb;
    a.gS = gS;
    a.gx_in = gx_acc;
    a.gx_out = static_cast<T*>(p.gx);
    a.gtw = gtw;
    a.gpw = gpw;
    a.gtb = gtb;
    a.gpb = gpb;
    a.N = d.N;
    a.Cin = d.Cin;
    a.Tn = d.Tn;
    a.V = d.V;
    a.K = d.K;
    a.E = d.E;
    a.n_etiles = ceil_div(d.E, 48);
    a.ET = ceil_div(d.E, a.n_etiles);

    AttnBackArgs<T> gxa = a;  // gx: Cin tiles of <= 96 rows
    col_tiles(d.Cin, 16 * kMaxRowFrags, &gxa.CW, &gxa.n_ctiles);
    size_t smem_gx = 0;
    POSEKERNELS_TRY((fit_tiles<AttnLayoutGx<T, MMA>>(gxa, 128 * kAttnCPW, lim, &smem_gx)));
    const int64_t gx_blocks = static_cast<int64_t>(d.N) * gxa.n_ptiles;
    if (!fits_int(gx_blocks) || gxa.n_ctiles > 65535) return cudaErrorInvalidValue;

    AttnBackArgs<T> gwa = a;  // weights: Cin tiles of <= 128 columns
    col_tiles(d.Cin, 128 * kAttnCPW, &gwa.CW, &gwa.n_ctiles);
    size_t smem_gw = 0;
    POSEKERNELS_TRY((fit_tiles<AttnLayoutGw<T, MMA>>(gwa, 128 * kAttnCPW, lim, &smem_gw)));
    const int64_t units = static_cast<int64_t>(d.N) * gwa.n_ptiles;
    const int64_t others = static_cast<int64_t>(d.K) * gwa.n_etiles * gwa.n_ctiles;
    if (!fits_int(units) || !fits_int(others)) return cudaErrorInvalidValue;
    const Split sp = split_units(static_cast<int>(units), static_cast<int>(others), lim.sms);
    gwa.splits = sp.splits;
    gwa.per_split = sp.per;
    const int64_t gw_blocks = others * gwa.splits;
    if (!fits_int(gw_blocks)) return cudaErrorInvalidValue;

    if (launch) {
      POSEKERNELS_TRY(launch_kernel(attn_gx_kernel<T, MMA>, dim3(static_cast<unsigned>(gx_blocks), gxa.n_ctiles),
                                    kThreads, smem_gx, stream, gxa));
      POSEKERNELS_TRY(cudaMemsetAsync(gtw, 0, kec * sizeof(AT), stream));
      POSEKERNELS_TRY(cudaMemsetAsync(gpw, 0, kec * sizeof(AT), stream));
      if (gtb != nullptr) POSEKERNELS_TRY(cudaMemsetAsync(gtb, 0, ke * sizeof(AT), stream));
      if (gpb != nullptr) POSEKERNELS_TRY(cudaMemsetAsync(gpb, 0, ke * sizeof(AT), stream));
      POSEKERNELS_TRY(launch_kernel(attn_gw_kernel<T, MMA>, dim3(static_cast<unsigned>(gw_blocks)), kThreads,
                                    smem_gw, stream, gwa));
      POSEKERNELS_TRY(run_convert<T>(gtw, static_cast<T*>(p.gtheta_w), kec, kec, lim, launch, stream));
      POSEKERNELS_TRY(run_convert<T>(gpw, static_cast<T*>(p.gphi_w), kec, kec, lim, launch, stream));
      if (gtb != nullptr) POSEKERNELS_TRY(run_convert<T>(gtb, static_cast<T*>(p.gtheta_b), ke, ke, lim, launch, stream));
      if (gpb != nullptr) POSEKERNELS_TRY(run_convert<T>(gpb, static_cast<T*>(p.gphi_b), ke, ke, lim, launch, stream));
    }
  }

  // 6. gW and gbias
  const int64_t koc = static_cast<int64_t>(d.K) * d.Cout * d.Cin;
  AT* gW = ws.take<AT>(koc);
  AT* gbias = p.has_bias ? ws.take<AT>(d.Cout) : nullptr;
  WgradArgs<T> w{};
  w.gy = gy;
  w.x = x;
  w.M = M;
  w.m_nstride = attention ? d.K * vv : 0;
  w.gW = gW;
  w.gbias = gbias;
  w.N = d.N;
  w.Cin = d.Cin;
  w.Cout = d.Cout;
  w.Tn = d.Tn;
  w.V = d.V;
  w.K = d.K;
  row_tiles(d.Cout, &w.RF, &w.n_otiles);
  col_tiles(d.Cin, 128 * kWgradCPW, &w.CW, &w.n_ctiles);
  size_t smem_w = 0;
  POSEKERNELS_TRY((fit_tiles<WgradSmem<T, MMA>>(w, 128 * kWgradCPW, lim, &smem_w)));
  const int64_t units = static_cast<int64_t>(d.N) * w.n_ptiles;
  const int64_t others = static_cast<int64_t>(d.K) * w.n_otiles * w.n_ctiles;
  if (!fits_int(units) || !fits_int(others)) return cudaErrorInvalidValue;
  const Split sp = split_units(static_cast<int>(units), static_cast<int>(others), lim.sms);
  w.splits = sp.splits;
  w.per_split = sp.per;
  const int64_t w_blocks = others * w.splits;
  if (!fits_int(w_blocks)) return cudaErrorInvalidValue;
  if (!launch) return cudaSuccess;
  POSEKERNELS_TRY(cudaMemsetAsync(gW, 0, koc * sizeof(AT), stream));
  if (gbias != nullptr) POSEKERNELS_TRY(cudaMemsetAsync(gbias, 0, d.Cout * sizeof(AT), stream));
  POSEKERNELS_TRY(launch_kernel(wgrad_kernel<T, MMA>, dim3(static_cast<unsigned>(w_blocks)), kThreads, smem_w,
                                stream, w));
  POSEKERNELS_TRY(run_convert<T>(gW, static_cast<T*>(p.gW), koc, koc, lim, launch, stream));
  if (gbias != nullptr) {
    POSEKERNELS_TRY(run_convert<T>(gbias, static_cast<T*>(p.gbias), static_cast<int64_t>(d.K) * d.Cout, d.Cout, lim,
                                   launch, stream));
  }
  return cudaSuccess;
}

// dtype (and tensor-core) dispatch of a planner/launcher template.
template <template <typename, bool> class Fn, typename... Args>
cudaError_t dispatch(DType dtype, bool mma, Args&&... args) {
  switch (dtype) {
    case DType::kFloat32:
      return Fn<float, false>::run(std::forward<Args>(args)...);
    case DType::kFloat64:
      return Fn<double, false>::run(std::forward<Args>(args)...);
    case DType::kFloat16:
      return mma ? Fn<__half, true>::run(std::forward<Args>(args)...)
                 : Fn<__half, false>::run(std::forward<Args>(args)...);
    case DType::kBFloat16:
      return mma ? Fn<__nv_bfloat16, true>::run(std::forward<Args>(args)...)
                 : Fn<__nv_bfloat16, false>::run(std::forward<Args>(args)...);
  }
  return cudaErrorInvalidValue;
}

template <typename T, bool MMA>
struct ForwardFn {
  static cudaError_t run(const Dims& d, const AgcForwardArgs& p, const DeviceLimits& lim, Workspace& ws, bool launch,
                         cudaStream_t stream) {
    return agc_forward_t<T, MMA>(d, p, lim, ws, launch, stream);
  }
};

template <typename T, bool MMA>
struct BackwardFn {
  static cudaError_t run(const Dims& d, const AgcBackwardArgs& p, const DeviceLimits& lim, Workspace& ws, bool launch,
                         cudaStream_t stream) {
    return agc_backward_t<T, MMA>(d, p, lim, ws, launch, stream);
  }
};

template <template <typename, bool> class Fn, typename P>
cudaError_t plan_or_run(const AgcSizes& sizes, DType dtype, const P& p, void* workspace, size_t workspace_bytes,
                        size_t* need, cudaStream_t stream) {
  Dims d{};
  POSEKERNELS_TRY(check_sizes(sizes, &d));
  DeviceLimits lim;
  POSEKERNELS_TRY(query_device(&lim));
  const bool mma = use_tensor_cores(lim);
  Workspace probe;
  POSEKERNELS_TRY((dispatch<Fn>(dtype, mma, d, p, lim, probe, false, stream)));
  if (need != nullptr) *need = probe.offset;
  if (workspace == nullptr && need != nullptr) return cudaSuccess;  // size query
  if (probe.offset > workspace_bytes || (probe.offset > 0 && workspace == nullptr)) return cudaErrorInvalidValue;
  Workspace ws;
  ws.base = reinterpret_cast<uintptr_t>(workspace);
  return dispatch<Fn>(dtype, mma, d, p, lim, ws, true, stream);
}

}  // namespace
}  // namespace detail

cudaError_t agc_forward_workspace_bytes(const AgcSizes& sizes, DType dtype, const AgcForwardArgs& args,
                                        size_t* bytes) {
  if (bytes == nullptr) return cudaErrorInvalidValue;
  return detail::plan_or_run<detail::ForwardFn>(sizes, dtype, args, nullptr, 0, bytes, nullptr);
}

cudaError_t agc_forward(const AgcSizes& sizes, DType dtype, const AgcForwardArgs& args, void* workspace,
                        size_t workspace_bytes, cudaStream_t stream) {
  return detail::plan_or_run<detail::ForwardFn>(sizes, dtype, args, workspace, workspace_bytes, nullptr, stream);
}

cudaError_t agc_backward_workspace_bytes(const AgcSizes& sizes, DType dtype, const AgcBackwardArgs& args,
                                         size_t* bytes) {
  if (bytes == nullptr) return cudaErrorInvalidValue;
  return detail::plan_or_run<detail::BackwardFn>(sizes, dtype, args, nullptr, 0, bytes, nullptr);
}

cudaError_t agc_backward(const AgcSizes& sizes, DType dtype, const AgcBackwardArgs& args, void* workspace,
                         size_t workspace_bytes, cudaStream_t stream) {
  return detail::plan_or_run<detail::BackwardFn>(sizes, dtype, args, workspace, workspace_bytes, nullptr, stream);
}

}  // namespace cuda
}  // namespace posekernels
