// Host-side API of the CUDA kernels of posekernels: adaptive graph convolution (agc), per-joint
// linear (jl) and the training epilogues (dropout, BatchNorm + dropout + residual + ReLU).
//
// This header is included by the torch bindings (python_api/cuda/ops_cuda.cpp, compiled by the
// host C++ compiler) and by the .cu files; it declares plain host functions over raw device
// pointers and needs only the CUDA runtime API. The formulas are those of
// posekernels/ops/reference.py:
//
//   agc: x (N, Cin, T, V); A, B (K, V, V); W (K, Cout, Cin); bias (K, Cout);
//        theta_w, phi_w (K, Ce, Cin); theta_b, phi_b (K, Ce).
//        y[n,o,t,w] = sum_k (sum_c W[k,o,c] sum_v x[n,c,t,v] M[n,k,v,w] + bias[k,o]),
//        M = A + B + C,  C[n,k] = softmax over v of S[n,k,v,w] / (Ce * T),
//        S[n,k,v,w] = sum_{e,t} theta_k(x)[n,e,t,v] phi_k(x)[n,e,t,w].
//   jl:  x (M, V, C); W (V, C, D); b (V, D).  y[m,v] = x[m,v] @ W[v] + b[v].
//
// Contract (the caller validates; python_api/cuda/ops_cuda.cpp does):
//   * every pointer is a contiguous device buffer of the current device, in one element type
//     `dtype`; optional inputs are nullptr when absent; Ce == 0 means no attention (theta/phi
//     pointers null);
//   * every size >= 1 (Ce >= 0), V <= kMaxJoints, T * V < 2^31 and each size < 2^31;
//   * `workspace` is a device buffer of at least the byte count returned by the matching
//     *_workspace_bytes function for the same sizes, dtype, pointer presence and current device;
//     it is scratch only (no contents are expected or kept);
//   * all work is queued on `stream`; nothing synchronises with the host. The returned
//     cudaError_t is the launch status (cudaGetLastError after each launch); errors of the
//     kernels themselves surface at the next synchronising call, as usual.
//
// Precision: float16/bfloat16 inputs are computed with fp32 accumulation (tensor cores through
// WMMA on sm_80+, SIMT otherwise; the environment variable POSEKERNELS_CUDA_NO_MMA=1 forces
// the SIMT path), float32 in fp32 (SIMT), float64 in fp64 (SIMT). On the tensor-core path the
// joint-aggregated operand of each channel product is rounded to the input dtype, and the
// backward reads the softmax term from the saved attn (input dtype) like every caller of the op.
// Graphs, scores and every intermediate that leaves a block are fp32 (fp64 for float64).
// Weight gradients are reduced with atomicAdd into workspace buffers, so they can differ between
// runs in the last bits.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

extern "C++" {
namespace posekernels {
namespace cuda {

enum class DType : int { kFloat32 = 0, kFloat64 = 1, kFloat16 = 2, kBFloat16 = 3 };

// Largest joint count V the agc kernels accept (the graphs are staged in shared memory).
constexpr int64_t kMaxJoints = 128;

struct AgcSizes {
  int64_t N = 0, Cin = 0, Cout = 0, T = 0, V = 0, K = 0;
  int64_t Ce = 0;  // 0: no attention term
};

struct AgcForwardArgs {
  const void* x = nullptr;
  const void* A = nullptr;
  const void* W = nullptr;
  const void* bias = nullptr;     // optional
  const void* B = nullptr;        // optional
  const void* theta_w = nullptr;  // with Ce > 0
  const void* theta_b = nullptr;  // optional
  const void* phi_w = nullptr;    // with Ce > 0
  const void* phi_b = nullptr;    // optional
  void* y = nullptr;              // (N, Cout, T, V)
  void* attn = nullptr;           // (N, K, V, V) softmax term C; required when Ce > 0
};

struct AgcBackwardArgs {
  const void* grad_y = nullptr;   // (N, Cout, T, V)
  const void* x = nullptr;
  const void* A = nullptr;
  const void* W = nullptr;
  bool has_bias = false;
  const void* B = nullptr;
  const void* theta_w = nullptr;
  const void* theta_b = nullptr;
  const void* phi_w = nullptr;
  const void* phi_b = nullptr;
  const void* attn = nullptr;     // the forward's C (N, K, V, V); nullptr: recompute it
  void* gx = nullptr;             // (N, Cin, T, V)
  void* gW = nullptr;             // (K, Cout, Cin)
  void* gbias = nullptr;          // (K, Cout) when has_bias
  void* gB = nullptr;             // (K, V, V) when B is given
  void* gtheta_w = nullptr;       // (K, Ce, Cin) when Ce > 0
  void* gtheta_b = nullptr;       // (K, Ce) when theta_b is given
  void* gphi_w = nullptr;         // (K, Ce, Cin) when Ce > 0
  void* gphi_b = nullptr;         // (K, Ce) when phi_b is given
};

cudaError_t agc_forward_workspace_bytes(const AgcSizes& sizes, DType dtype, const AgcForwardArgs& args,
                                        size_t* bytes);
cudaError_t agc_forward(const AgcSizes& sizes, DType dtype, const AgcForwardArgs& args, void* workspace,
                        size_t workspace_bytes, cudaStream_t stream);

cudaError_t agc_backward_workspace_bytes(const AgcSizes& sizes, DType dtype, const AgcBackwardArgs& args,
                                         size_t* bytes);
cudaError_t agc_backward(const AgcSizes& sizes, DType dtype, const AgcBackwardArgs& args, void* workspace,
                         size_t workspace_bytes, cudaStream_t stream);

struct JlSizes {
  int64_t M = 0, V = 0, C = 0, D = 0;
};

// y (M, V, D) = x[m, v] @ W[v] (+ b[v] when b is not null). Needs no workspace.
cudaError_t jl_forward(const JlSizes& sizes, DType dtype, const void* x, const void* W, const void* b, void* y,
                       cudaStream_t stream);

cudaError_t jl_backward_workspace_bytes(const JlSizes& sizes, DType dtype, bool has_bias, size_t* bytes);
// gx (M, V, C), gW (V, C, D), gb (V, D) (only when has_bias; may be null otherwise).
cudaError_t jl_backward(const JlSizes& sizes, DType dtype, const void* grad_y, const void* x, const void* W,
                        bool has_bias, void* gx, void* gW, void* gb, void* workspace, size_t workspace_bytes,
                        cudaStream_t stream);

// ---- training epilogues (bn_act.cu), float32 and float64 only -----------------------------
// Masks: element i = 64 b + 16 w + j of a contiguous tensor is kept when word w of
// Philox4x32-10(key = seed, counter = 16 b + j) < (1 - p) 2^32 (the cpu backend's masks).

// y = x / (1 - p) where kept, 0 elsewhere (numel elements; p in [0, 1)). Needs no workspace.
cudaError_t dropout_apply(DType dtype, int64_t numel, const void* x, void* y, double p, uint64_t seed,
                          cudaStream_t stream);

// z (N, C, L) contiguous (L: the product of the trailing dimensions), N L >= 2.
struct BnActSizes {
  int64_t N = 0, C = 0, L = 0;
};

struct BnActForwardArgs {
  const void* z = nullptr;
  const void* weight = nullptr;    // (C,), optional
  const void* bias = nullptr;      // (C,), optional
  const void* residual = nullptr;  // like z, optional
  double p = 0.0, eps = 1e-5;
  uint64_t seed = 0;
  bool relu = false;
  void* y = nullptr;     // like z: act(dropout(BN(z)) + residual)
  void* mean = nullptr;  // (C,) batch mean
  void* var = nullptr;   // (C,) biased batch variance
};

struct BnActBackwardArgs {
  const void* grad_y = nullptr;
  const void* z = nullptr;
  const void* y = nullptr;
  const void* weight = nullptr;  // optional
  const void* mean = nullptr;    // the forward's (C,)
  const void* var = nullptr;
  double p = 0.0, eps = 1e-5;
  uint64_t seed = 0;
  bool relu = false;
  void* grad_z = nullptr;
  void* grad_weight = nullptr;    // (C,), always written
  void* grad_bias = nullptr;      // (C,), always written
  void* grad_residual = nullptr;  // like z; nullptr: not wanted
};

cudaError_t bn_act_workspace_bytes(const BnActSizes& sizes, DType dtype, size_t* bytes);
cudaError_t bn_act_forward(const BnActSizes& sizes, DType dtype, const BnActForwardArgs& args, void* workspace,
                           size_t workspace_bytes, cudaStream_t stream);
cudaError_t bn_act_backward(const BnActSizes& sizes, DType dtype, const BnActBackwardArgs& args, void* workspace,
                            size_t workspace_bytes, cudaStream_t stream);

}  // namespace cuda
}  // namespace posekernels
}  // extern "C++"
