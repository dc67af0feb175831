// Fused CPU kernels of posekernels: adaptive graph convolution (agc) and per-joint linear (jl).
//
// The formulas are those of posekernels/ops/reference.py. These functions trust their caller
// (python_api/ops_cpu.cpp validates): every tensor is a defined, contiguous CPU tensor, all share one
// floating dtype, and the shapes agree:
//   agc: x (N, Cin, T, V); A, B (K, V, V); W (K, Cout, Cin); bias (K, Cout);
//        theta_w, phi_w (K, Ce, Cin) (both or neither); theta_b, phi_b (K, Ce) (only with them);
//        grad_y (N, Cout, T, V); attn (N, K, V, V), or an empty tensor to recompute it.
//   jl:  x (M, V, C); W (V, C, D); b (V, D); grad_y (M, V, D).
// All sizes are >= 1. float32 and float64 are computed natively; float16 and bfloat16 are computed
// in float32 and the results returned in the input dtype.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <tuple>

namespace posekernels::cpu {

// Returns (y (N, Cout, T, V), attn). attn is the softmax term C (N, K, V, V) when theta_w is
// given (the backward reuses it), else an empty tensor of shape (0,).
std::tuple<at::Tensor, at::Tensor> agc_forward(
    const at::Tensor& x, const at::Tensor& A, const at::Tensor& W,
    const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& B,
    const std::optional<at::Tensor>& theta_w, const std::optional<at::Tensor>& theta_b,
    const std::optional<at::Tensor>& phi_w, const std::optional<at::Tensor>& phi_b);

// Returns (gx, gW, gbias, gB, gtheta_w, gtheta_b, gphi_w, gphi_b); the gradient of an absent
// input is an empty tensor of shape (0,). theta/phi are recomputed, not saved. If attn is empty
// while theta_w is given, the softmax term is recomputed as well.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
           at::Tensor>
agc_backward(const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& A,
             const at::Tensor& W, const std::optional<at::Tensor>& bias,
             const std::optional<at::Tensor>& B, const std::optional<at::Tensor>& theta_w,
             const std::optional<at::Tensor>& theta_b, const std::optional<at::Tensor>& phi_w,
             const std::optional<at::Tensor>& phi_b, const at::Tensor& attn);

// Inference only: y = act(agc(x) + shortcut(x)), one pass (the GraphUnit of GLA-GCN with its
// BatchNorm folded into W and bias). shortcut: x itself when identity_shortcut (Cin == Cout), else
// shortcut_w (Cout, Cin) @ x + shortcut_b when shortcut_w is given, else none; act = ReLU if relu.
at::Tensor agc_unit_forward(const at::Tensor& x, const at::Tensor& A, const at::Tensor& W,
                            const std::optional<at::Tensor>& bias,
                            const std::optional<at::Tensor>& B,
                            const std::optional<at::Tensor>& theta_w,
                            const std::optional<at::Tensor>& theta_b,
                            const std::optional<at::Tensor>& phi_w,
                            const std::optional<at::Tensor>& phi_b,
                            const std::optional<at::Tensor>& shortcut_w,
                            const std::optional<at::Tensor>& shortcut_b, bool identity_shortcut,
                            bool relu);

// y (M, V, D) = x[m, v] @ W[v] + b[v].
at::Tensor jl_forward(const at::Tensor& x, const at::Tensor& W, const std::optional<at::Tensor>& b);

// Returns (gx, gW, gb); gb is empty (shape (0,)) when has_bias is false.
std::tuple<at::Tensor, at::Tensor, at::Tensor> jl_backward(const at::Tensor& grad_y,
                                                           const at::Tensor& x,
                                                           const at::Tensor& W, bool has_bias);

// Inference-only temporal convolution with fused epilogue (csrc/cpu/temporal_conv.cpp):
// y (N, O, T_out, V) = act(conv_(k, 1), stride (s, 1)(x) + bias + residual), x (N, C, T, V) read
// as zero pad_left frames before and pad_right frames after,
// T_out = (T + pad_left + pad_right - k) / s + 1 >= 1; bias (O,) and residual (N, O, T_out, V)
// optional; with residual_w (O, Cr) the residual term is the 1x1 map residual_w @ residual
// (residual then (N, Cr, T_out, V)). The weight (O, C, k) is passed transformed by
// tconv_transform_weight(weight, s): weight_t (6, O, ceil(ceil(k / s) / 3) * s * C).
at::Tensor tconv_transform_weight(const at::Tensor& weight, int64_t stride);
at::Tensor tconv_forward(const at::Tensor& x, const at::Tensor& weight_t, int64_t kernel,
                         int64_t stride, const std::optional<at::Tensor>& bias,
                         const std::optional<at::Tensor>& residual,
                         const std::optional<at::Tensor>& residual_w, int64_t pad_left,
                         int64_t pad_right, bool relu);

// Training backward of the temporal convolution (csrc/cpu/temporal_conv.cpp), for x (N, C, T, V),
// weight (O, C, k), grad_y (N, O, T_out, V) of y = conv(x) (stride, pad_left; no epilogue):
// tconv_input_grad returns gx (N, C, T, V) on the Winograd forward kernel, phase by phase (needs
// at least 3 taps per stride phase and right paddings below that). (The weight gradient is
// oneDNN's, through at::convolution_backward: see python_api/ops_cpu.cpp.)
at::Tensor tconv_input_grad(const at::Tensor& grad_y, const at::Tensor& weight, int64_t T,
                            int64_t stride, int64_t pad_left);

// Training epilogues (csrc/cpu/bn_act.cpp); float32 and float64, and for bn_act a bfloat16 z
// (bf16 autocast: a convolution's output) with every other tensor float32. Dropout masks are
// Philox4x32-10 of (seed, element index): element i = 64 b + 16 w + j (w < 4, j < 16) of the
// contiguous tensor is kept when word w of Philox(key = seed, counter = 16 b + j) is below
// (1 - p) * 2^32; p in [0, 1).
// epilogue_avx512_enabled: whether these kernels run their AVX-512F compilation (the CPU has
// AVX-512F and FMA, and POSEKERNELS_CPU_EPILOGUE=baseline is not set; read once per process).
bool epilogue_avx512_enabled();

// dropout_apply: y = keep ? x / (1 - p) : 0 (its own backward, applied to the gradient).
at::Tensor dropout_apply(const at::Tensor& x, double p, int64_t seed);

// z (N, C, ...) with N * prod(...) >= 2: y = act(dropout(BN(z)) + residual), BN with the batch
// statistics over every dimension but C; returns (y, mean (C,), biased variance (C,)).
// weight/bias (C,) optional (1 and 0), residual shaped like z optional, act = ReLU if relu.
// A bfloat16 z is read as it is (no float32 copy); mean and var are then float32. y has z's
// compute dtype (float32 for a bfloat16 z), or with bf16_y (float32 computation) is bfloat16,
// rounded once as it is stored.
std::tuple<at::Tensor, at::Tensor, at::Tensor> bn_act_forward(
    const at::Tensor& z, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& residual, double p,
    int64_t seed, double eps, bool relu, bool bf16_y = false);

// Returns (grad_z, grad_weight (C,), grad_bias (C,), grad_residual (like z, or empty (0,) when
// has_residual is false)) of bn_act_forward, from its output y and its mean and variance.
// grad_z has z's dtype (a bfloat16 grad_z is rounded once, from a float32 computation); y and
// grad_y are both bfloat16 when the forward wrote a bfloat16 y.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> bn_act_backward(
    const at::Tensor& grad_y, const at::Tensor& z, const at::Tensor& y,
    const std::optional<at::Tensor>& weight, const at::Tensor& mean, const at::Tensor& var,
    double p, int64_t seed, double eps, bool relu, bool has_residual);

}  // namespace posekernels::cpu
