// CPU kernels of the posekernels:: ops (schemas: schema.cpp). Each validates its arguments
// (checks.h) and runs the fused kernels of csrc/cpu.
#include "checks.h"
#include "cpu/kernels.h"

#include <ATen/core/Tensor.h>
#include <ATen/ops/constant_pad_nd.h>
#include <ATen/ops/convolution_backward.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

namespace posekernels {
namespace {

using OptTensor = std::optional<at::Tensor>;
using AgcGrads = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                            at::Tensor, at::Tensor>;

std::tuple<at::Tensor, at::Tensor> agc_forward_cpu(const at::Tensor& x, const at::Tensor& A,
                                                   const at::Tensor& W, const OptTensor& bias,
                                                   const OptTensor& B, const OptTensor& theta_w,
                                                   const OptTensor& theta_b, const OptTensor& phi_w,
                                                   const OptTensor& phi_b) {
  // bfloat16 W / theta_w / phi_w with a float32 x: bf16 products (checks::check_weight)
  const auto a = checks::check_agc(x, A, W, bias, B, theta_w, theta_b, phi_w, phi_b, true);
  return cpu::agc_forward(a.x, a.A, a.W, a.bias, a.B, a.theta_w, a.theta_b, a.phi_w, a.phi_b);
}

AgcGrads agc_backward_cpu(const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& A,
                          const at::Tensor& W, const OptTensor& bias, const OptTensor& B,
                          const OptTensor& theta_w, const OptTensor& theta_b, const OptTensor& phi_w,
                          const OptTensor& phi_b, const at::Tensor& attn) {
  const auto a = checks::check_agc(x, A, W, bias, B, theta_w, theta_b, phi_w, phi_b, true);
  const at::Tensor gy = checks::check_agc_grad(grad_y, a);
  const at::Tensor at = checks::check_agc_attn(attn, a);
  return cpu::agc_backward(gy, a.x, a.A, a.W, a.bias, a.B, a.theta_w, a.theta_b, a.phi_w, a.phi_b, at);
}

at::Tensor agc_unit_forward_cpu(const at::Tensor& x, const at::Tensor& A, const at::Tensor& W,
                                const OptTensor& bias, const OptTensor& B, const OptTensor& theta_w,
                                const OptTensor& theta_b, const OptTensor& phi_w,
                                const OptTensor& phi_b, const OptTensor& shortcut_w,
                                const OptTensor& shortcut_b, bool identity_shortcut, bool relu) {
  const auto a = checks::check_agc(x, A, W, bias, B, theta_w, theta_b, phi_w, phi_b,
                                   /*bf16_weight=*/true);
  const auto [sw, sb] = checks::check_agc_shortcut(a, shortcut_w, shortcut_b, identity_shortcut);
  return cpu::agc_unit_forward(a.x, a.A, a.W, a.bias, a.B, a.theta_w, a.theta_b, a.phi_w, a.phi_b,
                               sw, sb, identity_shortcut, relu);
}

at::Tensor jl_forward_cpu(const at::Tensor& x, const at::Tensor& W, const OptTensor& b) {
  const auto a = checks::check_jl(x, W, b);
  return cpu::jl_forward(a.x, a.W, a.b);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> jl_backward_cpu(const at::Tensor& grad_y, const at::Tensor& x,
                                                               const at::Tensor& W, bool has_bias) {
  const auto a = checks::check_jl(x, W, std::nullopt);
  const at::Tensor gy = checks::check_jl_grad(grad_y, a);
  return cpu::jl_backward(gy, a.x, a.W, has_bias);
}

at::Tensor tconv_transform_weight_cpu(const at::Tensor& weight, int64_t stride) {
  return cpu::tconv_transform_weight(checks::check_tconv_weight(weight, stride), stride);
}

at::Tensor tconv_forward_cpu(const at::Tensor& x, const at::Tensor& weight_t, int64_t kernel,
                             int64_t stride, const OptTensor& bias, const OptTensor& residual,
                             const OptTensor& residual_w, int64_t pad_left, int64_t pad_right,
                             bool relu) {
  const auto a = checks::check_tconv(x, weight_t, kernel, stride, bias, residual, residual_w,
                                     pad_left, pad_right);
  return cpu::tconv_forward(a.x, a.weight_t, kernel, stride, a.bias, a.residual, a.residual_w,
                            pad_left, pad_right, relu);
}

at::Tensor dropout_apply_cpu(const at::Tensor& x, double p, const at::Tensor& seed) {
  const at::Tensor xc = checks::check_dropout(x);
  checks::check_dropout_p(p);
  return cpu::dropout_apply(xc, p, checks::check_seed(seed));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> bn_act_forward_cpu(
    const at::Tensor& z, const OptTensor& weight, const OptTensor& bias, const OptTensor& residual,
    double p, const at::Tensor& seed, double eps, bool relu,
    std::optional<at::ScalarType> out_dtype) {
  const auto a = checks::check_bn_act(z, weight, bias, residual, p, eps, /*bf16_z=*/true);
  const bool bf16_y = checks::check_bn_act_out_dtype(out_dtype, a.z, /*bf16_y=*/true);
  return cpu::bn_act_forward(a.z, a.weight, a.bias, a.residual, p, checks::check_seed(seed), eps,
                             relu, bf16_y);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> bn_act_backward_cpu(
    const at::Tensor& grad_y, const at::Tensor& z, const at::Tensor& y, const OptTensor& weight,
    const at::Tensor& mean, const at::Tensor& var, double p, const at::Tensor& seed, double eps,
    bool relu, bool has_residual) {
  const auto a = checks::check_bn_act(z, weight, std::nullopt, std::nullopt, p, eps, /*bf16_z=*/true);
  const auto [gy, yc] = checks::check_bn_act_grad(grad_y, y, mean, var, a, /*bf16_y=*/true);
  return cpu::bn_act_backward(gy, a.z, yc, a.weight, mean.contiguous(), var.contiguous(), p,
                              checks::check_seed(seed), eps, relu, has_residual);
}

at::Tensor tconv_train_forward_cpu(const at::Tensor& x, const at::Tensor& weight,
                                   const OptTensor& bias, int64_t stride, int64_t pad_left,
                                   int64_t pad_right) {
  const auto a = checks::check_tconv_train(x, weight, bias, stride, pad_left, pad_right);
  return cpu::tconv_forward(a.x, cpu::tconv_transform_weight(a.weight, stride), a.weight.size(2),
                            stride, a.bias, std::nullopt, std::nullopt, pad_left, pad_right, false);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> tconv_train_backward_cpu(
    const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& weight, int64_t stride,
    int64_t pad_left, int64_t pad_right, bool has_bias) {
  const auto a = checks::check_tconv_train(x, weight, std::nullopt, stride, pad_left, pad_right);
  const at::Tensor gy = checks::check_tconv_train_grad(grad_y, a);
  at::Tensor gx = cpu::tconv_input_grad(gy, a.weight, a.x.size(2), stride, pad_left);
  // The weight gradient is oneDNN's (measured faster than an unfolded product on our kernel at
  // the models' shapes); an asymmetric padding is written out first.
  const int64_t k = a.weight.size(2);
  const at::Tensor xin = pad_left == pad_right
                             ? a.x
                             : at::constant_pad_nd(a.x, {0, 0, pad_left, pad_right}, 0);
  const int64_t pad = pad_left == pad_right ? pad_left : 0;
  at::Tensor gw = std::get<1>(at::convolution_backward(
                                  gy, xin, a.weight.view({a.weight.size(0), a.weight.size(1), k, 1}),
                                  std::nullopt, {stride, 1}, {pad, 0}, {1, 1}, false, {0, 0}, 1,
                                  {false, true, false}))
                      .view(weight.sizes());
  at::Tensor gb = has_bias ? gy.sum({0, 2, 3}) : at::empty({0}, gy.options());
  return {gx, gw, gb};
}

}  // namespace
}  // namespace posekernels

TORCH_LIBRARY_IMPL(posekernels, CPU, m) {
  m.impl("agc_forward", TORCH_FN(posekernels::agc_forward_cpu));
  m.impl("agc_backward", TORCH_FN(posekernels::agc_backward_cpu));
  m.impl("agc_unit_forward", TORCH_FN(posekernels::agc_unit_forward_cpu));
  m.impl("jl_forward", TORCH_FN(posekernels::jl_forward_cpu));
  m.impl("jl_backward", TORCH_FN(posekernels::jl_backward_cpu));
  m.impl("tconv_transform_weight", TORCH_FN(posekernels::tconv_transform_weight_cpu));
  m.impl("tconv_forward", TORCH_FN(posekernels::tconv_forward_cpu));
  m.impl("dropout_apply", TORCH_FN(posekernels::dropout_apply_cpu));
  m.impl("tconv_train_forward", TORCH_FN(posekernels::tconv_train_forward_cpu));
  m.impl("tconv_train_backward", TORCH_FN(posekernels::tconv_train_backward_cpu));
  m.impl("bn_act_forward", TORCH_FN(posekernels::bn_act_forward_cpu));
  m.impl("bn_act_backward", TORCH_FN(posekernels::bn_act_backward_cpu));
}
