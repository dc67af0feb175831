// CUDA kernels of the posekernels:: ops (schemas: python_api/schema.cpp, posekernels/ops/_autograd.py).
//
// Every function validates its arguments with the checks shared by all devices (../checks.h:
// ValueError for bad shapes, sizes or devices, TypeError for dtypes), then checks what is
// specific to the CUDA kernels (CUDA tensors, V <= kMaxJoints), allocates its outputs and an
// opaque byte workspace with the caching allocator, and queues the launchers of csrc/cuda on the
// current stream of the input's device. Nothing synchronises with the host. Absent gradients
// are empty tensors of shape (0,), as the schema requires.
//
// Compiled only when the extension is built with CUDA (setup.py adds python_api/cuda/*.cpp and
// csrc/cuda/*.cu then).
#include "../checks.h"
#include "cuda/kernels.cuh"

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cstdint>
#include <optional>
#include <tuple>

namespace posekernels {
namespace {

using OptTensor = std::optional<at::Tensor>;
using AgcGrads = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                            at::Tensor, at::Tensor>;

cuda::DType kernel_dtype(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return cuda::DType::kFloat32;
    case at::kDouble: return cuda::DType::kFloat64;
    case at::kHalf: return cuda::DType::kFloat16;
    case at::kBFloat16: return cuda::DType::kBFloat16;
    default: break;
  }
  TORCH_CHECK_TYPE(false, "the posekernels cuda kernels take float16, bfloat16, float32 or float64 tensors, got ",
                   checks::dtype_str(t.scalar_type()));
  return cuda::DType::kFloat32;  // unreachable
}

// The checks of checks.h already put every tensor on the device of x; x must be a CUDA tensor.
void check_on_cuda(const at::Tensor& x, const char* name) {
  TORCH_CHECK_VALUE(x.is_cuda(), name, " must be a CUDA tensor for the posekernels cuda kernels, got a tensor on ",
                    x.device());
}

const void* ptr(const at::Tensor& t) { return t.const_data_ptr(); }
const void* ptr(const OptTensor& t) { return t.has_value() ? t->const_data_ptr() : nullptr; }

at::Tensor empty_grad(const at::Tensor& like) { return at::empty({0}, like.options()); }

// Errors of the planning step: an unsupported size is the caller's error (ValueError).
void check_plan(cudaError_t err, const char* op) {
  TORCH_CHECK_VALUE(err != cudaErrorInvalidConfiguration, "posekernels.", op,
                    " (cuda): these sizes need more shared memory per block than this GPU offers; "
                    "use backend='triton' or backend='reference'");
  TORCH_CHECK_VALUE(err != cudaErrorInvalidValue, "posekernels.", op,
                    " (cuda): sizes outside the range of the cuda kernels (every size must be below 2^31, "
                    "T * V too)");
  TORCH_CHECK(err == cudaSuccess, "posekernels.", op, " (cuda): ", cudaGetErrorString(err));
}

void check_launch(cudaError_t err, const char* op) {
  TORCH_CHECK(err == cudaSuccess, "posekernels.", op, " (cuda): kernel launch failed: ", cudaGetErrorString(err));
}

at::Tensor workspace(size_t bytes, const at::Tensor& like) {
  return at::empty({static_cast<int64_t>(bytes)}, like.options().dtype(at::kByte));
}

void check_joints(const checks::AgcArgs& a) {
  TORCH_CHECK_VALUE(a.V <= cuda::kMaxJoints, "x has V = ", a.V, " joints; the posekernels cuda kernels support at most ",
                    cuda::kMaxJoints, " (use backend='triton' or backend='reference')");
}

cuda::AgcSizes agc_sizes(const checks::AgcArgs& a) {
  cuda::AgcSizes s;
  s.N = a.N;
  s.Cin = a.Cin;
  s.Cout = a.Cout;
  s.T = a.T;
  s.V = a.V;
  s.K = a.K;
  s.Ce = a.Ce;
  return s;
}

std::tuple<at::Tensor, at::Tensor> agc_forward_cuda(const at::Tensor& x, const at::Tensor& A, const at::Tensor& W,
                                                    const OptTensor& bias, const OptTensor& B,
                                                    const OptTensor& theta_w, const OptTensor& theta_b,
                                                    const OptTensor& phi_w, const OptTensor& phi_b) {
  const auto a = checks::check_agc(x, A, W, bias, B, theta_w, theta_b, phi_w, phi_b);
  check_on_cuda(a.x, "x");
  check_joints(a);
  const cuda::DType dtype = kernel_dtype(a.x);
  const c10::cuda::CUDAGuard guard(a.x.device());

  at::Tensor y = at::empty({a.N, a.Cout, a.T, a.V}, a.x.options());
  at::Tensor attn = a.Ce > 0 ? at::empty({a.N, a.K, a.V, a.V}, a.x.options()) : empty_grad(a.x);

  const cuda::AgcSizes sizes = agc_sizes(a);
  cuda::AgcForwardArgs p;
  p.x = ptr(a.x);
  p.A = ptr(a.A);
  p.W = ptr(a.W);
  p.bias = ptr(a.bias);
  p.B = ptr(a.B);
  p.theta_w = ptr(a.theta_w);
  p.theta_b = ptr(a.theta_b);
  p.phi_w = ptr(a.phi_w);
  p.phi_b = ptr(a.phi_b);
  p.y = y.mutable_data_ptr();
  p.attn = a.Ce > 0 ? attn.mutable_data_ptr() : nullptr;

  size_t bytes = 0;
  check_plan(cuda::agc_forward_workspace_bytes(sizes, dtype, p, &bytes), "agc_forward");
  at::Tensor ws = workspace(bytes, a.x);
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream().stream();
  check_launch(cuda::agc_forward(sizes, dtype, p, bytes > 0 ? ws.mutable_data_ptr() : nullptr, bytes, stream),
               "agc_forward");
  return {y, attn};
}

AgcGrads agc_backward_cuda(const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& A, const at::Tensor& W,
                           const OptTensor& bias, const OptTensor& B, const OptTensor& theta_w,
                           const OptTensor& theta_b, const OptTensor& phi_w, const OptTensor& phi_b,
                           const at::Tensor& attn) {
  const auto a = checks::check_agc(x, A, W, bias, B, theta_w, theta_b, phi_w, phi_b);
  const at::Tensor gy = checks::check_agc_grad(grad_y, a);
  const at::Tensor saved = checks::check_agc_attn(attn, a);
  check_on_cuda(a.x, "x");
  check_joints(a);
  const cuda::DType dtype = kernel_dtype(a.x);
  const c10::cuda::CUDAGuard guard(a.x.device());

  const auto opts = a.x.options();
  at::Tensor gx = at::empty({a.N, a.Cin, a.T, a.V}, opts);
  at::Tensor gW = at::empty({a.K, a.Cout, a.Cin}, opts);
  at::Tensor gbias = a.bias.has_value() ? at::empty({a.K, a.Cout}, opts) : empty_grad(a.x);
  at::Tensor gB = a.B.has_value() ? at::empty({a.K, a.V, a.V}, opts) : empty_grad(a.x);
  at::Tensor gtw = a.Ce > 0 ? at::empty({a.K, a.Ce, a.Cin}, opts) : empty_grad(a.x);
  at::Tensor gtb = a.theta_b.has_value() ? at::empty({a.K, a.Ce}, opts) : empty_grad(a.x);
  at::Tensor gpw = a.Ce > 0 ? at::empty({a.K, a.Ce, a.Cin}, opts) : empty_grad(a.x);
  at::Tensor gpb = a.phi_b.has_value() ? at::empty({a.K, a.Ce}, opts) : empty_grad(a.x);

  const cuda::AgcSizes sizes = agc_sizes(a);
  cuda::AgcBackwardArgs p;
  p.grad_y = ptr(gy);
  p.x = ptr(a.x);
  p.A = ptr(a.A);
  p.W = ptr(a.W);
  p.has_bias = a.bias.has_value();
  p.B = ptr(a.B);
  p.theta_w = ptr(a.theta_w);
  p.theta_b = ptr(a.theta_b);
  p.phi_w = ptr(a.phi_w);
  p.phi_b = ptr(a.phi_b);
  // An empty attn (with attention) asks the kernels to recompute the softmax term.
  p.attn = (a.Ce > 0 && saved.numel() > 0) ? ptr(saved) : nullptr;
  p.gx = gx.mutable_data_ptr();
  p.gW = gW.mutable_data_ptr();
  p.gbias = a.bias.has_value() ? gbias.mutable_data_ptr() : nullptr;
  p.gB = a.B.has_value() ? gB.mutable_data_ptr() : nullptr;
  p.gtheta_w = a.Ce > 0 ? gtw.mutable_data_ptr() : nullptr;
  p.gtheta_b = a.theta_b.has_value() ? gtb.mutable_data_ptr() : nullptr;
  p.gphi_w = a.Ce > 0 ? gpw.mutable_data_ptr() : nullptr;
  p.gphi_b = a.phi_b.has_value() ? gpb.mutable_data_ptr() : nullptr;

  size_t bytes = 0;
  check_plan(cuda::agc_backward_workspace_bytes(sizes, dtype, p, &bytes), "agc_backward");
  at::Tensor ws = workspace(bytes, a.x);
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream().stream();
  check_launch(cuda::agc_backward(sizes, dtype, p, bytes > 0 ? ws.mutable_data_ptr() : nullptr, bytes, stream),
               "agc_backward");
  return {gx, gW, gbias, gB, gtw, gtb, gpw, gpb};
}

cuda::JlSizes jl_sizes(const checks::JlArgs& a) {
  cuda::JlSizes s;
  s.M = a.M;
  s.V = a.V;
  s.C = a.C;
  s.D = a.D;
  return s;
}

at::Tensor jl_forward_cuda(const at::Tensor& x, const at::Tensor& W, const OptTensor& b) {
  const auto a = checks::check_jl(x, W, b);
  check_on_cuda(a.x, "x");
  const cuda::DType dtype = kernel_dtype(a.x);
  const c10::cuda::CUDAGuard guard(a.x.device());
  at::Tensor y = at::empty({a.M, a.V, a.D}, a.x.options());
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream().stream();
  const cudaError_t err = cuda::jl_forward(jl_sizes(a), dtype, ptr(a.x), ptr(a.W), ptr(a.b), y.mutable_data_ptr(), stream);
  TORCH_CHECK_VALUE(err != cudaErrorInvalidValue, "posekernels.jl_forward (cuda): sizes outside the range of the cuda kernels");
  check_launch(err, "jl_forward");
  return y;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> jl_backward_cuda(const at::Tensor& grad_y, const at::Tensor& x,
                                                                const at::Tensor& W, bool has_bias) {
  const auto a = checks::check_jl(x, W, std::nullopt);
  const at::Tensor gy = checks::check_jl_grad(grad_y, a);
  check_on_cuda(a.x, "x");
  const cuda::DType dtype = kernel_dtype(a.x);
  const c10::cuda::CUDAGuard guard(a.x.device());
  const auto opts = a.x.options();
  at::Tensor gx = at::empty({a.M, a.V, a.C}, opts);
  at::Tensor gW = at::empty({a.V, a.C, a.D}, opts);
  at::Tensor gb = has_bias ? at::empty({a.V, a.D}, opts) : empty_grad(a.x);

  const cuda::JlSizes sizes = jl_sizes(a);
  size_t bytes = 0;
  check_plan(cuda::jl_backward_workspace_bytes(sizes, dtype, has_bias, &bytes), "jl_backward");
  at::Tensor ws = workspace(bytes, a.x);
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream().stream();
  check_launch(cuda::jl_backward(sizes, dtype, ptr(gy), ptr(a.x), ptr(a.W), has_bias, gx.mutable_data_ptr(),
                                 gW.mutable_data_ptr(), has_bias ? gb.mutable_data_ptr() : nullptr,
                                 bytes > 0 ? ws.mutable_data_ptr() : nullptr, bytes, stream),
               "jl_backward");
  return {gx, gW, gb};
}

// ---- training epilogues

cuda::BnActSizes bn_sizes(const at::Tensor& z) {
  cuda::BnActSizes s;
  s.N = z.size(0);
  s.C = z.size(1);
  s.L = s.N * s.C > 0 ? z.numel() / (s.N * s.C) : 0;
  return s;
}

at::Tensor dropout_apply_cuda(const at::Tensor& x, double p, const at::Tensor& seed) {
  const at::Tensor xc = checks::check_dropout(x);
  checks::check_dropout_p(p);
  const uint64_t key = static_cast<uint64_t>(checks::check_seed(seed));
  check_on_cuda(xc, "x");
  const c10::cuda::CUDAGuard guard(xc.device());
  at::Tensor y = at::empty_like(xc);
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream().stream();
  check_launch(cuda::dropout_apply(kernel_dtype(xc), xc.numel(), ptr(xc), y.mutable_data_ptr(), p, key, stream),
               "dropout_apply");
  return y;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> bn_act_forward_cuda(const at::Tensor& z, const OptTensor& weight,
                                                                   const OptTensor& bias, const OptTensor& residual,
                                                                   double p, const at::Tensor& seed, double eps,
                                                                   bool relu, std::optional<at::ScalarType> out_dtype) {
  const auto a = checks::check_bn_act(z, weight, bias, residual, p, eps);
  checks::check_bn_act_out_dtype(out_dtype, a.z, /*bf16_y=*/false);  // y in z's dtype only
  const uint64_t key = static_cast<uint64_t>(checks::check_seed(seed));
  check_on_cuda(a.z, "z");
  const cuda::DType dtype = kernel_dtype(a.z);
  const c10::cuda::CUDAGuard guard(a.z.device());
  const int64_t C = a.z.size(1);
  at::Tensor y = at::empty_like(a.z);
  at::Tensor mean = at::empty({C}, a.z.options());
  at::Tensor var = at::empty({C}, a.z.options());
  const cuda::BnActSizes sizes = bn_sizes(a.z);
  size_t bytes = 0;
  check_plan(cuda::bn_act_workspace_bytes(sizes, dtype, &bytes), "bn_act_forward");
  at::Tensor ws = workspace(bytes, a.z);
  cuda::BnActForwardArgs args;
  args.z = ptr(a.z);
  args.weight = ptr(a.weight);
  args.bias = ptr(a.bias);
  args.residual = ptr(a.residual);
  args.p = p;
  args.eps = eps;
  args.seed = key;
  args.relu = relu;
  args.y = y.mutable_data_ptr();
  args.mean = mean.mutable_data_ptr();
  args.var = var.mutable_data_ptr();
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream().stream();
  check_launch(cuda::bn_act_forward(sizes, dtype, args, bytes > 0 ? ws.mutable_data_ptr() : nullptr, bytes, stream),
               "bn_act_forward");
  return {y, mean, var};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> bn_act_backward_cuda(
    const at::Tensor& grad_y, const at::Tensor& z, const at::Tensor& y, const OptTensor& weight,
    const at::Tensor& mean, const at::Tensor& var, double p, const at::Tensor& seed, double eps, bool relu,
    bool has_residual) {
  const auto a = checks::check_bn_act(z, weight, std::nullopt, std::nullopt, p, eps);
  const auto [gy, yc] = checks::check_bn_act_grad(grad_y, y, mean, var, a);
  const uint64_t key = static_cast<uint64_t>(checks::check_seed(seed));
  check_on_cuda(a.z, "z");
  const cuda::DType dtype = kernel_dtype(a.z);
  const c10::cuda::CUDAGuard guard(a.z.device());
  const int64_t C = a.z.size(1);
  const at::Tensor mc = mean.contiguous(), vc = var.contiguous();
  at::Tensor gz = at::empty_like(a.z);
  at::Tensor gw = at::empty({C}, a.z.options());
  at::Tensor gb = at::empty({C}, a.z.options());
  at::Tensor gres = has_residual ? at::empty_like(a.z) : empty_grad(a.z);
  const cuda::BnActSizes sizes = bn_sizes(a.z);
  size_t bytes = 0;
  check_plan(cuda::bn_act_workspace_bytes(sizes, dtype, &bytes), "bn_act_backward");
  at::Tensor ws = workspace(bytes, a.z);
  cuda::BnActBackwardArgs args;
  args.grad_y = ptr(gy);
  args.z = ptr(a.z);
  args.y = ptr(yc);
  args.weight = ptr(a.weight);
  args.mean = ptr(mc);
  args.var = ptr(vc);
  args.p = p;
  args.eps = eps;
  args.seed = key;
  args.relu = relu;
  args.grad_z = gz.mutable_data_ptr();
  args.grad_weight = gw.mutable_data_ptr();
  args.grad_bias = gb.mutable_data_ptr();
  args.grad_residual = has_residual ? gres.mutable_data_ptr() : nullptr;
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream().stream();
  check_launch(cuda::bn_act_backward(sizes, dtype, args, bytes > 0 ? ws.mutable_data_ptr() : nullptr, bytes, stream),
               "bn_act_backward");
  return {gz, gw, gb, gres};
}

}  // namespace
}  // namespace posekernels

TORCH_LIBRARY_IMPL(posekernels, CUDA, m) {
  m.impl("dropout_apply", TORCH_FN(posekernels::dropout_apply_cuda));
  m.impl("bn_act_forward", TORCH_FN(posekernels::bn_act_forward_cuda));
  m.impl("bn_act_backward", TORCH_FN(posekernels::bn_act_backward_cuda));
  m.impl("agc_forward", TORCH_FN(posekernels::agc_forward_cuda));
  m.impl("agc_backward", TORCH_FN(posekernels::agc_backward_cuda));
  m.impl("jl_forward", TORCH_FN(posekernels::jl_forward_cuda));
  m.impl("jl_backward", TORCH_FN(posekernels::jl_backward_cuda));
}
