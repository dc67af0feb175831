// Argument validation of the posekernels:: ops, shared by every device's bindings.
//
// The Python front end (posekernels/ops/_validate.py) checks arguments before it calls an op,
// but torch.ops.posekernels.* can be called directly, so every kernel binding checks again here:
// bad ranks, shapes or sizes raise ValueError, non-floating or mismatched dtypes raise TypeError
// (TORCH_CHECK_VALUE / TORCH_CHECK_TYPE), never a crash. Non-contiguous tensors are accepted and
// made contiguous (the kernels index raw contiguous buffers).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace posekernels::checks {

using OptTensor = std::optional<at::Tensor>;

inline std::string shape_str(at::IntArrayRef sizes) {
  std::ostringstream out;
  out << "(";
  for (size_t i = 0; i < sizes.size(); ++i) {
    out << (i ? ", " : "") << sizes[i];
  }
  out << (sizes.size() == 1 ? ",)" : ")");
  return out.str();
}

inline std::string dtype_str(at::ScalarType t) {
  switch (t) {
    case at::kHalf: return "torch.float16";
    case at::kBFloat16: return "torch.bfloat16";
    case at::kFloat: return "torch.float32";
    case at::kDouble: return "torch.float64";
    default: return std::string("torch.") + c10::toString(t);
  }
}

inline bool is_supported_float(at::ScalarType t) {
  return t == at::kHalf || t == at::kBFloat16 || t == at::kFloat || t == at::kDouble;
}

// A defined dense floating tensor of the given rank.
inline void check_tensor(const at::Tensor& t, const char* name, int64_t rank, const char* doc) {
  TORCH_CHECK_VALUE(t.defined(), name, " must be a tensor of shape ", doc, ", got an undefined tensor");
  TORCH_CHECK_TYPE(t.layout() == at::kStrided, name, " must be a dense (strided) tensor, got layout ",
                   t.layout());
  TORCH_CHECK_TYPE(is_supported_float(t.scalar_type()), name,
                   " must be a floating-point tensor (float16, bfloat16, float32 or float64), got dtype ",
                   dtype_str(t.scalar_type()));
  TORCH_CHECK_VALUE(t.dim() == rank, name, " must have shape ", doc, " (", rank,
                    " dimensions), got ", shape_str(t.sizes()));
}

inline void check_shape(const at::Tensor& t, const char* name, std::initializer_list<int64_t> expected,
                        const char* doc) {
  const std::vector<int64_t> want(expected);
  TORCH_CHECK_VALUE(t.sizes().equals(want), name, " must have shape ", doc, " = ", shape_str(want),
                    ", got ", shape_str(t.sizes()));
}

// Same device as the reference tensor.
inline void check_same_device(const at::Tensor& t, const char* name, const at::Tensor& ref,
                              const char* ref_name) {
  TORCH_CHECK_VALUE(t.device() == ref.device(), name, " is on ", t.device(), " but ", ref_name, " is on ",
                    ref.device(), "; all tensors must be on one device");
}

// Same device and dtype as the reference tensor.
inline void check_same(const at::Tensor& t, const char* name, const at::Tensor& ref, const char* ref_name) {
  check_same_device(t, name, ref, ref_name);
  TORCH_CHECK_TYPE(t.scalar_type() == ref.scalar_type(), name, " has dtype ", dtype_str(t.scalar_type()),
                   " but ", ref_name, " has dtype ", dtype_str(ref.scalar_type()),
                   "; all tensors must share one dtype");
}

// A weight of an inference op (agc_unit_forward, tconv_forward): x's device and dtype, or bfloat16
// with a float32 x (the CPU kernels then run that weight's products with bfloat16 operands and
// float32 accumulation).
inline void check_weight(const at::Tensor& t, const char* name, const at::Tensor& x) {
  check_same_device(t, name, x, "x");
  TORCH_CHECK_TYPE(t.scalar_type() == x.scalar_type() ||
                       (t.scalar_type() == at::kBFloat16 && x.scalar_type() == at::kFloat),
                   name, " has dtype ", dtype_str(t.scalar_type()), " but x has dtype ",
                   dtype_str(x.scalar_type()), "; a weight must have x's dtype, or be "
                   "torch.bfloat16 with a torch.float32 x (bfloat16 products)");
}

inline OptTensor contiguous(const OptTensor& t) {
  return t.has_value() ? OptTensor(t->contiguous()) : std::nullopt;
}

// Validated, contiguous arguments of agc_forward / agc_backward.
struct AgcArgs {
  at::Tensor x, A, W;
  OptTensor bias, B, theta_w, theta_b, phi_w, phi_b;
  int64_t N = 0, Cin = 0, T = 0, V = 0, K = 0, Cout = 0, Ce = 0;
};

// bf16_weight: W and theta_w / phi_w may be bfloat16 with a float32 x (the CPU bindings of
// agc_forward, agc_backward and agc_unit_forward: bf16 products; see check_weight).
inline AgcArgs check_agc(const at::Tensor& x, const at::Tensor& A, const at::Tensor& W, const OptTensor& bias,
                         const OptTensor& B, const OptTensor& theta_w, const OptTensor& theta_b,
                         const OptTensor& phi_w, const OptTensor& phi_b, bool bf16_weight = false) {
  AgcArgs a;
  check_tensor(x, "x", 4, "(N, Cin, T, V)");
  a.N = x.size(0);
  a.Cin = x.size(1);
  a.T = x.size(2);
  a.V = x.size(3);
  TORCH_CHECK_VALUE(a.N >= 1 && a.Cin >= 1 && a.T >= 1 && a.V >= 1,
                    "x must have shape (N, Cin, T, V) with every size >= 1, got ", shape_str(x.sizes()));

  check_tensor(A, "A", 3, "(K, V, V)");
  a.K = A.size(0);
  TORCH_CHECK_VALUE(a.K >= 1, "A must hold at least one partition: shape (K, V, V) with K >= 1, got ",
                    shape_str(A.sizes()));
  check_shape(A, "A", {a.K, a.V, a.V}, "(K, V, V) with V = x.shape[3]");
  check_same(A, "A", x, "x");

  check_tensor(W, "W", 3, "(K, Cout, Cin)");
  a.Cout = W.size(1);
  TORCH_CHECK_VALUE(W.size(0) == a.K && W.size(2) == a.Cin && a.Cout >= 1, "W must have shape (K, Cout, Cin) = (",
                    a.K, ", Cout, ", a.Cin, ") with Cout >= 1, got ", shape_str(W.sizes()));
  if (bf16_weight) {
    check_weight(W, "W", x);
  } else {
    check_same(W, "W", x, "x");
  }

  if (bias.has_value()) {
    check_tensor(*bias, "bias", 2, "(K, Cout)");
    check_shape(*bias, "bias", {a.K, a.Cout}, "(K, Cout)");
    check_same(*bias, "bias", x, "x");
  }
  if (B.has_value()) {
    check_tensor(*B, "B", 3, "(K, V, V)");
    check_shape(*B, "B", {a.K, a.V, a.V}, "(K, V, V)");
    check_same(*B, "B", x, "x");
  }
  TORCH_CHECK_VALUE(theta_w.has_value() == phi_w.has_value(),
                    "theta_w and phi_w must be given together (attention) or both be None");
  if (!theta_w.has_value()) {
    TORCH_CHECK_VALUE(!theta_b.has_value(), "theta_b was given without theta_w/phi_w");
    TORCH_CHECK_VALUE(!phi_b.has_value(), "phi_b was given without theta_w/phi_w");
  } else {
    check_tensor(*theta_w, "theta_w", 3, "(K, Ce, Cin)");
    a.Ce = theta_w->size(1);
    TORCH_CHECK_VALUE(theta_w->size(0) == a.K && theta_w->size(2) == a.Cin && a.Ce >= 1,
                      "theta_w must have shape (K, Ce, Cin) = (", a.K, ", Ce, ", a.Cin,
                      ") with Ce >= 1, got ", shape_str(theta_w->sizes()));
    check_tensor(*phi_w, "phi_w", 3, "(K, Ce, Cin)");
    check_shape(*phi_w, "phi_w", {a.K, a.Ce, a.Cin}, "(K, Ce, Cin), the shape of theta_w");
    if (bf16_weight) {  // the embedding is one product: both bfloat16 or neither
      check_weight(*theta_w, "theta_w", x);
      check_same(*phi_w, "phi_w", *theta_w, "theta_w");
    } else {
      check_same(*theta_w, "theta_w", x, "x");
      check_same(*phi_w, "phi_w", x, "x");
    }
    if (theta_b.has_value()) {
      check_tensor(*theta_b, "theta_b", 2, "(K, Ce)");
      check_shape(*theta_b, "theta_b", {a.K, a.Ce}, "(K, Ce)");
      check_same(*theta_b, "theta_b", x, "x");
    }
    if (phi_b.has_value()) {
      check_tensor(*phi_b, "phi_b", 2, "(K, Ce)");
      check_shape(*phi_b, "phi_b", {a.K, a.Ce}, "(K, Ce)");
      check_same(*phi_b, "phi_b", x, "x");
    }
  }
  a.x = x.contiguous();
  a.A = A.contiguous();
  a.W = W.contiguous();
  a.bias = contiguous(bias);
  a.B = contiguous(B);
  a.theta_w = contiguous(theta_w);
  a.theta_b = contiguous(theta_b);
  a.phi_w = contiguous(phi_w);
  a.phi_b = contiguous(phi_b);
  return a;
}

// grad_y of agc_backward: (N, Cout, T, V).
inline at::Tensor check_agc_grad(const at::Tensor& grad_y, const AgcArgs& a) {
  check_tensor(grad_y, "grad_y", 4, "(N, Cout, T, V)");
  check_shape(grad_y, "grad_y", {a.N, a.Cout, a.T, a.V}, "(N, Cout, T, V), the shape of the output");
  check_same(grad_y, "grad_y", a.x, "x");
  return grad_y.contiguous();
}

// attn of agc_backward: the forward's (N, K, V, V) softmax term with attention, or an empty
// tensor (with attention: recompute it). Without attention it is not used.
inline at::Tensor check_agc_attn(const at::Tensor& attn, const AgcArgs& a) {
  TORCH_CHECK_VALUE(attn.defined(), "attn must be a tensor (the forward's second output)");
  if (a.Ce == 0) {
    return attn;
  }
  TORCH_CHECK_TYPE(attn.layout() == at::kStrided, "attn must be a dense (strided) tensor, got layout ",
                   attn.layout());
  check_same(attn, "attn", a.x, "x");
  if (attn.numel() == 0) {
    return attn;
  }
  check_shape(attn, "attn", {a.N, a.K, a.V, a.V}, "(N, K, V, V), the forward's second output");
  return attn.contiguous();
}

// The shortcut arguments of agc_unit_forward, validated and contiguous: shortcut_w (Cout, Cin) or
// (Cout, Cin, 1, 1), shortcut_b (Cout,) only with shortcut_w, identity only when Cin == Cout and
// without shortcut_w.
inline std::pair<OptTensor, OptTensor> check_agc_shortcut(const AgcArgs& a, const OptTensor& shortcut_w,
                                                          const OptTensor& shortcut_b, bool identity) {
  OptTensor w;
  if (shortcut_w.has_value()) {
    TORCH_CHECK_VALUE(!identity, "identity_shortcut and shortcut_w are exclusive: pass one of them");
    const at::Tensor sw = shortcut_w->dim() == 4 && shortcut_w->size(2) == 1 && shortcut_w->size(3) == 1
                              ? shortcut_w->reshape({shortcut_w->size(0), shortcut_w->size(1)})
                              : *shortcut_w;
    check_tensor(sw, "shortcut_w", 2, "(Cout, Cin) or (Cout, Cin, 1, 1)");
    check_shape(sw, "shortcut_w", {a.Cout, a.Cin}, "(Cout, Cin)");
    check_weight(sw, "shortcut_w", a.x);
    w = sw.contiguous();
  }
  OptTensor b;
  if (shortcut_b.has_value()) {
    TORCH_CHECK_VALUE(shortcut_w.has_value(), "shortcut_b needs shortcut_w");
    check_tensor(*shortcut_b, "shortcut_b", 1, "(Cout,)");
    check_shape(*shortcut_b, "shortcut_b", {a.Cout}, "(Cout,)");
    check_same(*shortcut_b, "shortcut_b", a.x, "x");
    b = shortcut_b->contiguous();
  }
  TORCH_CHECK_VALUE(!identity || a.Cin == a.Cout, "identity_shortcut needs Cin == Cout, got Cin = ",
                    a.Cin, " and Cout = ", a.Cout);
  return {w, b};
}

// Validated, contiguous arguments of jl_forward / jl_backward.
struct JlArgs {
  at::Tensor x, W;
  OptTensor b;
  int64_t M = 0, V = 0, C = 0, D = 0;
};

inline JlArgs check_jl(const at::Tensor& x, const at::Tensor& W, const OptTensor& b) {
  JlArgs a;
  check_tensor(x, "x", 3, "(M, V, C)");
  a.M = x.size(0);
  a.V = x.size(1);
  a.C = x.size(2);
  TORCH_CHECK_VALUE(a.M >= 1 && a.V >= 1 && a.C >= 1, "x must have shape (M, V, C) with every size >= 1, got ",
                    shape_str(x.sizes()));
  check_tensor(W, "W", 3, "(V, C, D)");
  a.D = W.size(2);
  TORCH_CHECK_VALUE(W.size(0) == a.V && W.size(1) == a.C && a.D >= 1, "W must have shape (V, C, D) = (", a.V,
                    ", ", a.C, ", D) with D >= 1, got ", shape_str(W.sizes()));
  check_same(W, "W", x, "x");
  if (b.has_value()) {
    check_tensor(*b, "b", 2, "(V, D)");
    check_shape(*b, "b", {a.V, a.D}, "(V, D)");
    check_same(*b, "b", x, "x");
  }
  a.x = x.contiguous();
  a.W = W.contiguous();
  a.b = contiguous(b);
  return a;
}

inline at::Tensor check_jl_grad(const at::Tensor& grad_y, const JlArgs& a) {
  check_tensor(grad_y, "grad_y", 3, "(M, V, D)");
  check_shape(grad_y, "grad_y", {a.M, a.V, a.D}, "(M, V, D), the shape of the output");
  check_same(grad_y, "grad_y", a.x, "x");
  return grad_y.contiguous();
}

// Integer arguments of the temporal convolution ops. Every one is bounded before any arithmetic
// uses it, so no size computation below (or in the kernel) can overflow int64:
//   1 <= kernel <= kMaxTconvKernel (2^20 taps),
//   1 <= stride <= kernel      (a larger stride skips input frames that no output reads),
//   0 <= pad_left, pad_right < kernel (a wider padding only adds outputs that read no input).
// posekernels.ops.temporal_conv sends every other case to the reference (F.conv2d).
constexpr int64_t kMaxTconvKernel = int64_t{1} << 20;

inline void check_tconv_stride(int64_t stride, int64_t kernel) {
  TORCH_CHECK_VALUE(stride >= 1 && stride <= kernel, "stride must be >= 1 and <= kernel = ", kernel,
                    ", got ", stride);
}

inline void check_tconv_kernel(int64_t kernel) {
  TORCH_CHECK_VALUE(kernel >= 1 && kernel <= kMaxTconvKernel, "kernel must be >= 1 and <= ",
                    kMaxTconvKernel, ", got ", kernel);
}

// a * b for a, b >= 0; raises ValueError naming `what` when the product exceeds int64.
inline int64_t checked_mul(int64_t a, int64_t b, const char* what) {
  TORCH_CHECK_VALUE(a >= 0 && b >= 0 && (a == 0 || b <= std::numeric_limits<int64_t>::max() / a), what,
                    " = ", a, " * ", b, " is out of range");
  return a * b;
}

// The depth of the transformed weight, ceil(ceil(kernel / stride) / 3) * stride * C, for a
// bounded kernel and stride (checked: C comes from a tensor and can be anything).
inline int64_t tconv_depth(int64_t kernel, int64_t stride, int64_t C) {
  const int64_t sub_filters = ((kernel + stride - 1) / stride + 2) / 3;
  return checked_mul(checked_mul(sub_filters, stride, "the transformed weight's depth"), C,
                     "the transformed weight's depth");
}

// Validated, contiguous arguments of tconv_transform_weight: weight (O, C, k) or (O, C, k, 1),
// 1 <= stride <= k.
inline at::Tensor check_tconv_weight(const at::Tensor& weight, int64_t stride) {
  TORCH_CHECK_VALUE(weight.defined() && (weight.dim() == 3 || (weight.dim() == 4 && weight.size(3) == 1)),
                    "weight must have shape (O, C, k) or (O, C, k, 1), got ",
                    weight.defined() ? shape_str(weight.sizes()) : std::string("an undefined tensor"));
  const at::Tensor w = weight.dim() == 4 ? weight.squeeze(3) : weight;
  check_tensor(w, "weight", 3, "(O, C, k)");
  TORCH_CHECK_VALUE(w.size(0) >= 1 && w.size(1) >= 1 && w.size(2) >= 1,
                    "weight must have shape (O, C, k) with every size >= 1, got ", shape_str(weight.sizes()));
  check_tconv_kernel(w.size(2));
  check_tconv_stride(stride, w.size(2));
  // the transformed weight (6, O, depth) must have a representable size
  checked_mul(checked_mul(6, w.size(0), "the transformed weight's size"), tconv_depth(w.size(2), stride, w.size(1)),
              "the transformed weight's size");
  return w.contiguous();
}

// Validated, contiguous arguments of tconv_forward.
struct TconvArgs {
  at::Tensor x, weight_t;
  OptTensor bias, residual, residual_w;
};

inline TconvArgs check_tconv(const at::Tensor& x, const at::Tensor& weight_t, int64_t kernel,
                             int64_t stride, const OptTensor& bias, const OptTensor& residual,
                             const OptTensor& residual_w, int64_t pad_left, int64_t pad_right) {
  check_tensor(x, "x", 4, "(N, C, T, V)");
  const int64_t N = x.size(0), C = x.size(1), T = x.size(2), V = x.size(3);
  TORCH_CHECK_VALUE(N >= 1 && C >= 1 && T >= 1 && V >= 1,
                    "x must have shape (N, C, T, V) with every size >= 1, got ", shape_str(x.sizes()));
  check_tconv_kernel(kernel);
  check_tconv_stride(stride, kernel);
  TORCH_CHECK_VALUE(pad_left >= 0 && pad_left < kernel && pad_right >= 0 && pad_right < kernel,
                    "pad_left and pad_right must be >= 0 and <= kernel - 1 = ", kernel - 1, ", got ",
                    pad_left, " and ", pad_right);
  const int64_t depth = tconv_depth(kernel, stride, C);
  check_tensor(weight_t, "weight_t", 3, "(6, O, ceil(ceil(kernel / stride) / 3) * stride * C)");
  const int64_t O = weight_t.size(1);
  TORCH_CHECK_VALUE(weight_t.size(0) == 6 && O >= 1 && weight_t.size(2) == depth,
                    "weight_t must be the transformed weight (tconv_transform_weight) of shape "
                    "(6, O, ceil(ceil(kernel / stride) / 3) * stride * C) = (6, O, ", depth,
                    ") for kernel = ", kernel, ", stride = ", stride, " and C = ", C, ", got ",
                    shape_str(weight_t.sizes()));
  check_weight(weight_t, "weight_t", x);
  // both paddings are < 2^20; T is a tensor size, which an expanded view can push near 2^63
  TORCH_CHECK_VALUE(T <= std::numeric_limits<int64_t>::max() - 2 * kMaxTconvKernel,
                    "x has T = ", T, " frames, out of range");
  TORCH_CHECK_VALUE(T + pad_left + pad_right >= kernel, "T + pad_left + pad_right = ",
                    T + pad_left + pad_right, " must be >= the kernel size ", kernel);
  const int64_t T_out = (T + pad_left + pad_right - kernel) / stride + 1;
  if (bias.has_value()) {
    check_tensor(*bias, "bias", 1, "(O,)");
    check_shape(*bias, "bias", {O}, "(O,)");
    check_same(*bias, "bias", x, "x");
  }
  OptTensor rw;
  if (residual_w.has_value()) {
    TORCH_CHECK_VALUE(residual.has_value(), "residual_w needs residual (the input of the 1x1 map)");
    const at::Tensor w2 = residual_w->dim() == 4 && residual_w->size(2) == 1 && residual_w->size(3) == 1
                              ? residual_w->reshape({residual_w->size(0), residual_w->size(1)})
                              : *residual_w;
    check_tensor(w2, "residual_w", 2, "(O, Cr)");
    TORCH_CHECK_VALUE(w2.size(0) == O && w2.size(1) >= 1, "residual_w must have shape (O, Cr) = (",
                      O, ", Cr), got ", shape_str(residual_w->sizes()));
    check_weight(w2, "residual_w", x);
    check_tensor(*residual, "residual", 4, "(N, Cr, T_out, V)");
    check_shape(*residual, "residual", {N, w2.size(1), T_out, V},
                "(N, Cr, T_out, V), the input of the 1x1 map residual_w");
    check_same(*residual, "residual", x, "x");
    rw = w2.contiguous();
  } else if (residual.has_value()) {
    check_tensor(*residual, "residual", 4, "(N, O, T_out, V)");
    check_shape(*residual, "residual", {N, O, T_out, V}, "(N, O, T_out, V), the shape of the output");
    check_same(*residual, "residual", x, "x");
  }
  return TconvArgs{x.contiguous(), weight_t.contiguous(), contiguous(bias), contiguous(residual), rw};
}

// ---------------------------------------------------------------- training epilogues (bn_act.cpp)
// Kernels take float32 and float64 (callers widen 16-bit tensors or fall back to the reference
// formulation); the CPU bn_act also takes a bfloat16 z (check_bn_act's bf16_z).
inline void check_epilogue_dtype(const at::Tensor& t, const char* name) {
  TORCH_CHECK_TYPE(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, name,
                   " must be float32 or float64 for the fused epilogue kernels, got dtype ",
                   dtype_str(t.scalar_type()));
}

inline void check_dropout_p(double p) {
  TORCH_CHECK_VALUE(std::isfinite(p) && p >= 0.0 && p < 1.0, "p must lie in [0, 1), got ", p);
}

// The seed: a one-element int64 tensor on the CPU.
inline int64_t check_seed(const at::Tensor& seed) {
  TORCH_CHECK_VALUE(seed.defined() && seed.layout() == at::kStrided && seed.numel() == 1,
                    "seed must be a one-element int64 tensor, got ",
                    seed.defined() ? shape_str(seed.sizes()) : std::string("an undefined tensor"));
  TORCH_CHECK_TYPE(seed.scalar_type() == at::kLong, "seed must be an int64 tensor, got dtype ",
                   dtype_str(seed.scalar_type()));
  TORCH_CHECK_VALUE(seed.device().is_cpu(), "seed must be a CPU tensor, got one on ", seed.device());
  return seed.item<int64_t>();
}

inline at::Tensor check_dropout(const at::Tensor& x) {
  TORCH_CHECK_VALUE(x.defined(), "x must be a tensor, got an undefined tensor");
  TORCH_CHECK_TYPE(x.layout() == at::kStrided, "x must be a dense (strided) tensor");
  check_epilogue_dtype(x, "x");
  return x.contiguous();
}

struct BnActArgs {
  at::Tensor z;
  OptTensor weight, bias, residual;
};

// The dtype of bn_act's tensors other than z (and grad_z): float32 for a bfloat16 z, else z's.
inline at::ScalarType bn_act_dtype(const at::Tensor& z) {
  return z.scalar_type() == at::kBFloat16 ? at::kFloat : z.scalar_type();
}

// t on z's device with bn_act's compute dtype (z's own, or float32 for a bfloat16 z).
inline void check_bn_act_tensor(const at::Tensor& t, const char* name, const at::Tensor& z) {
  if (z.scalar_type() != at::kBFloat16) {
    check_same(t, name, z, "z");
    return;
  }
  check_same_device(t, name, z, "z");
  TORCH_CHECK_TYPE(t.scalar_type() == at::kFloat, name, " must be float32 with a bfloat16 z, got dtype ",
                   dtype_str(t.scalar_type()));
}

// z (N, C, ...) with at least two values per channel; weight/bias (C,); residual like z.
// bf16_z (the CPU kernels): z may also be bfloat16, the other tensors then float32.
inline BnActArgs check_bn_act(const at::Tensor& z, const OptTensor& weight, const OptTensor& bias,
                              const OptTensor& residual, double p, double eps, bool bf16_z = false) {
  TORCH_CHECK_VALUE(z.defined() && z.dim() >= 2, "z must be a tensor of shape (N, C, ...), got ",
                    z.defined() ? shape_str(z.sizes()) : std::string("an undefined tensor"));
  TORCH_CHECK_TYPE(z.layout() == at::kStrided, "z must be a dense (strided) tensor");
  if (!(bf16_z && z.scalar_type() == at::kBFloat16)) {
    TORCH_CHECK_TYPE(z.scalar_type() == at::kFloat || z.scalar_type() == at::kDouble,
                     "z must be float32 or float64", bf16_z ? " (or bfloat16)" : "",
                     " for the fused epilogue kernels, got dtype ", dtype_str(z.scalar_type()));
  }
  const int64_t C = z.size(1);
  TORCH_CHECK_VALUE(C >= 1 && z.numel() / C >= 2,
                    "z needs more than one value per channel for batch statistics, got shape ",
                    shape_str(z.sizes()));
  const std::vector<std::pair<const OptTensor*, const char*>> vecs{{&weight, "weight"}, {&bias, "bias"}};
  for (const auto& [t, name] : vecs) {
    if (t->has_value()) {
      check_bn_act_tensor(**t, name, z);
      TORCH_CHECK_VALUE((*t)->dim() == 1 && (*t)->size(0) == C, name, " must have shape (C,) = (",
                        C, ",), got ", shape_str((*t)->sizes()));
    }
  }
  if (residual.has_value()) {
    check_bn_act_tensor(*residual, "residual", z);
    TORCH_CHECK_VALUE(residual->sizes().equals(z.sizes()), "residual must have the shape of z ",
                      shape_str(z.sizes()), ", got ", shape_str(residual->sizes()));
  }
  check_dropout_p(p);
  TORCH_CHECK_VALUE(std::isfinite(eps) && eps > 0.0, "eps must be a positive number, got ", eps);
  return BnActArgs{z.contiguous(), contiguous(weight), contiguous(bias), contiguous(residual)};
}

// bn_act_forward's out_dtype: None or z's compute dtype (false), or (bf16_y, the CPU kernels)
// bfloat16 with a float32 computation (true: y is written in bfloat16).
inline bool check_bn_act_out_dtype(const std::optional<at::ScalarType>& out_dtype, const at::Tensor& z,
                                   bool bf16_y) {
  if (!out_dtype.has_value() || *out_dtype == bn_act_dtype(z)) return false;
  TORCH_CHECK_TYPE(bf16_y && *out_dtype == at::kBFloat16 && bn_act_dtype(z) == at::kFloat,
                   "out_dtype must be None or ", dtype_str(bn_act_dtype(z)),
                   bf16_y && bn_act_dtype(z) == at::kFloat ? " (or torch.bfloat16)" : "",
                   " for a z of dtype ", dtype_str(z.scalar_type()), ", got ", dtype_str(*out_dtype));
  return true;
}

// The backward's extra tensors: grad_y and y shaped like z (bn_act's compute dtype, or both
// bfloat16 after a forward with a bfloat16 out_dtype: bf16_y), mean and var (C,).
inline std::pair<at::Tensor, at::Tensor> check_bn_act_grad(const at::Tensor& grad_y, const at::Tensor& y,
                                                           const at::Tensor& mean, const at::Tensor& var,
                                                           const BnActArgs& a, bool bf16_y = false) {
  const std::vector<std::pair<const at::Tensor*, const char*>> like_z{{&grad_y, "grad_y"}, {&y, "y"}};
  const bool y16 = bf16_y && y.defined() && y.scalar_type() == at::kBFloat16 &&
                   bn_act_dtype(a.z) == at::kFloat;
  for (const auto& [t, name] : like_z) {
    TORCH_CHECK_VALUE(t->defined(), name, " must be a tensor, got an undefined tensor");
    if (y16) {
      check_same_device(*t, name, a.z, "z");
      TORCH_CHECK_TYPE(t->scalar_type() == at::kBFloat16, name,
                       " must be bfloat16 like y, got dtype ", dtype_str(t->scalar_type()));
    } else {
      check_bn_act_tensor(*t, name, a.z);
    }
    TORCH_CHECK_VALUE(t->sizes().equals(a.z.sizes()), name, " must have the shape of z ",
                      shape_str(a.z.sizes()), ", got ", shape_str(t->sizes()));
  }
  const std::vector<std::pair<const at::Tensor*, const char*>> stats{{&mean, "mean"}, {&var, "var"}};
  for (const auto& [t, name] : stats) {
    TORCH_CHECK_VALUE(t->defined(), name, " must be a tensor, got an undefined tensor");
    check_bn_act_tensor(*t, name, a.z);
    TORCH_CHECK_VALUE(t->dim() == 1 && t->size(0) == a.z.size(1), name, " must have shape (C,) = (",
                      a.z.size(1), ",), got ", shape_str(t->sizes()));
  }
  return {grad_y.contiguous(), y.contiguous()};
}

// Validated, contiguous arguments of tconv_train_forward / tconv_train_backward: x (N, C, T, V),
// weight (O, C, k) or (O, C, k, 1), bias (O,), float32/float64, 1 <= stride, at least 3 taps in
// every stride phase (k >= 3 * stride), paddings in [0, k), T_out >= 1.
struct TconvTrainArgs {
  at::Tensor x, weight;
  OptTensor bias;
  int64_t T_out;
};

inline TconvTrainArgs check_tconv_train(const at::Tensor& x, const at::Tensor& weight,
                                        const OptTensor& bias, int64_t stride, int64_t pad_left,
                                        int64_t pad_right) {
  check_tensor(x, "x", 4, "(N, C, T, V)");
  check_epilogue_dtype(x, "x");
  const int64_t N = x.size(0), C = x.size(1), T = x.size(2), V = x.size(3);
  TORCH_CHECK_VALUE(N >= 1 && C >= 1 && T >= 1 && V >= 1,
                    "x must have shape (N, C, T, V) with every size >= 1, got ", shape_str(x.sizes()));
  TORCH_CHECK_VALUE(stride >= 1, "stride must be >= 1, got ", stride);
  const at::Tensor w = check_tconv_weight(weight, stride);
  check_same(w, "weight", x, "x");
  const int64_t k = w.size(2);
  TORCH_CHECK_VALUE(w.size(1) == C, "weight must have C = ", C, " input channels (x has shape ",
                    shape_str(x.sizes()), "), got weight of shape ", shape_str(weight.sizes()));
  TORCH_CHECK_VALUE(k / stride >= 3,
                    "the training kernels need at least 3 taps in every stride phase, got kernel ",
                    k, " and stride ", stride);
  TORCH_CHECK_VALUE(pad_left >= 0 && pad_left < k && pad_right >= 0 && pad_right < k,
                    "pad_left and pad_right must be >= 0 and <= kernel - 1 = ", k - 1, ", got ",
                    pad_left, " and ", pad_right);
  TORCH_CHECK_VALUE(T + pad_left + pad_right >= k, "x has ", T, " frames: with padding (",
                    pad_left, ", ", pad_right, ") that is fewer than the kernel's ", k);
  if (bias.has_value()) {
    check_same(*bias, "bias", x, "x");
    TORCH_CHECK_VALUE(bias->dim() == 1 && bias->size(0) == w.size(0), "bias must have shape (O,) = (",
                      w.size(0), ",), got ", shape_str(bias->sizes()));
  }
  return TconvTrainArgs{x.contiguous(), w, contiguous(bias), (T + pad_left + pad_right - k) / stride + 1};
}

// grad_y of tconv_train_backward: (N, O, T_out, V), the shape of the forward's output.
inline at::Tensor check_tconv_train_grad(const at::Tensor& grad_y, const TconvTrainArgs& a) {
  check_tensor(grad_y, "grad_y", 4, "(N, O, T_out, V)");
  check_shape(grad_y, "grad_y", {a.x.size(0), a.weight.size(0), a.T_out, a.x.size(3)},
              "(N, O, T_out, V), the shape of the output");
  check_same(grad_y, "grad_y", a.x, "x");
  return grad_y.contiguous();
}

}  // namespace posekernels::checks
