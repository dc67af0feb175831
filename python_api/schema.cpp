// Schemas of the posekernels:: ops: the contract shared by every backend. The CPU kernels are
// registered for them in ops_cpu.cpp, the CUDA kernels in cuda/ops_cuda.cpp (when the extension
// is built with CUDA); posekernels/ops/_autograd.py registers their fake kernels and autograd
// formulas from Python.
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <vector>

TORCH_LIBRARY(posekernels, m) {
  const std::vector<at::Tag> tags{at::Tag::pt2_compliant_tag};
  m.def(
      "agc_forward(Tensor x, Tensor A, Tensor W, Tensor? bias, Tensor? B, Tensor? theta_w, "
      "Tensor? theta_b, Tensor? phi_w, Tensor? phi_b) -> (Tensor, Tensor)",
      tags);
  m.def(
      "agc_backward(Tensor grad_y, Tensor x, Tensor A, Tensor W, Tensor? bias, Tensor? B, "
      "Tensor? theta_w, Tensor? theta_b, Tensor? phi_w, Tensor? phi_b, Tensor attn) -> "
      "(Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)",
      tags);
  // Inference only (no autograd formula): relu?(agc(x) + shortcut(x)) in one pass.
  m.def(
      "agc_unit_forward(Tensor x, Tensor A, Tensor W, Tensor? bias, Tensor? B, Tensor? theta_w, "
      "Tensor? theta_b, Tensor? phi_w, Tensor? phi_b, Tensor? shortcut_w, Tensor? shortcut_b, "
      "bool identity_shortcut, bool relu) -> Tensor",
      tags);
  m.def("jl_forward(Tensor x, Tensor W, Tensor? b) -> Tensor", tags);
  m.def("jl_backward(Tensor grad_y, Tensor x, Tensor W, bool has_bias) -> (Tensor, Tensor, Tensor)", tags);
  // Inference only (no autograd formula): the temporal convolution with fused bias, residual and
  // ReLU that inference plans use on the CPU.
  m.def("tconv_transform_weight(Tensor weight, int stride) -> Tensor", tags);
  m.def(
      "tconv_forward(Tensor x, Tensor weight_t, int kernel, int stride, Tensor? bias, "
      "Tensor? residual, Tensor? residual_w, int pad_left, int pad_right, bool relu) -> Tensor",
      tags);
  // Training epilogues (CPU, CUDA): counter-based dropout and BatchNorm (batch statistics) + dropout +
  // residual + ReLU. seed: a one-element int64 tensor (drawn from torch's generator by the caller).
  m.def("dropout_apply(Tensor x, float p, Tensor seed) -> Tensor", tags);
  m.def(
      "bn_act_forward(Tensor z, Tensor? weight, Tensor? bias, Tensor? residual, float p, "
      "Tensor seed, float eps, bool relu, ScalarType? out_dtype=None) -> (Tensor, Tensor, Tensor)",
      tags);
  m.def(
      "bn_act_backward(Tensor grad_y, Tensor z, Tensor y, Tensor? weight, Tensor mean, "
      "Tensor var, float p, Tensor seed, float eps, bool relu, bool has_residual) -> "
      "(Tensor, Tensor, Tensor, Tensor)",
      tags);
  // Training temporal convolution (CPU): y = conv(x) + bias on the raw weight (O, C, k[, 1]),
  // and its backward (grad_x, grad_weight (O, C, k), grad_bias or empty (0,)).
  m.def(
      "tconv_train_forward(Tensor x, Tensor weight, Tensor? bias, int stride, int pad_left, "
      "int pad_right) -> Tensor",
      tags);
  m.def(
      "tconv_train_backward(Tensor grad_y, Tensor x, Tensor weight, int stride, int pad_left, "
      "int pad_right, bool has_bias) -> (Tensor, Tensor, Tensor)",
      tags);
}
