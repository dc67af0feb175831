"""The compiled ops of ``posekernels._C``, called without checks: fast paths for inference plans.

Each function here is one call of a ``posekernels::*`` operator of the compiled extension, the
same operator that the ``cpu`` and ``cuda`` backends of :mod:`posekernels.ops` run, without the
Python layer of the checked ops around it: no argument validation in Python (types, shapes,
finite weights, a graph ``A`` that must not require grad), no autocast casts, no backend choice,
no ``contiguous()`` copies. An inference plan (:class:`posekernels.inference.GLAGCNPlan`)
prepares its weights once, when it is built, and then calls these on every forward; everything
else should call the checked ops (:func:`posekernels.ops.adaptive_graph_conv`,
:func:`~posekernels.ops.grouped_joint_linear`, :func:`~posekernels.ops.temporal_conv`).

The caller passes contiguous tensors of one floating dtype on one device that :func:`available`
accepts, with the shapes documented below (those of the checked ops). The C++ operators still
check shapes, dtypes and devices themselves (a bad argument raises ValueError from C++, never
reads out of bounds), but not the rest. :func:`adaptive_graph_conv`, :func:`joint_linear`,
:func:`temporal_conv_train`, :func:`dropout` and :func:`batch_norm_act` are differentiable (their operators' autograd formulas are registered here,
with the fake kernels that let ``torch.compile`` and ``torch.library.opcheck`` trace every
operator).

Functions, the operators they call, and the devices with kernels:

* :func:`adaptive_graph_conv`: ``posekernels::agc_forward`` (cpu, cuda);
* :func:`graph_unit`: ``posekernels::agc_unit_forward`` (cpu);
* :func:`joint_linear`: ``posekernels::jl_forward`` (cpu, cuda);
* :func:`temporal_conv_weight`: ``posekernels::tconv_transform_weight`` (cpu);
* :func:`temporal_conv`: ``posekernels::tconv_forward`` (cpu);
* :func:`temporal_conv_train`: ``posekernels::tconv_train_forward`` / ``tconv_train_backward``
  (cpu, float32/float64);
* :func:`dropout`: ``posekernels::dropout_apply`` (cpu, cuda; float32/float64);
* :func:`batch_norm_act`: ``posekernels::bn_act_forward`` / ``bn_act_backward`` (cpu, cuda;
  float32/float64).

The operator schemas are defined in python_api/; ``cuda`` kernels exist only when the extension
was built with CUDA (:func:`posekernels.build_info`).
"""
from __future__ import annotations

import torch
from torch import Tensor

from .. import _ext
from . import _autograd

__all__ = ["available", "adaptive_graph_conv", "graph_unit", "joint_linear",
           "temporal_conv_weight", "temporal_conv", "temporal_conv_train", "dropout",
           "batch_norm_act"]

AGC_FORWARD = "posekernels::agc_forward"
AGC_BACKWARD = "posekernels::agc_backward"
AGC_UNIT_FORWARD = "posekernels::agc_unit_forward"
JL_FORWARD = "posekernels::jl_forward"
JL_BACKWARD = "posekernels::jl_backward"
TCONV_WEIGHT = "posekernels::tconv_transform_weight"
TCONV_FORWARD = "posekernels::tconv_forward"
DROPOUT = "posekernels::dropout_apply"
BN_ACT_FORWARD = "posekernels::bn_act_forward"
BN_ACT_BACKWARD = "posekernels::bn_act_backward"
TCONV_TRAIN_FORWARD = "posekernels::tconv_train_forward"
TCONV_TRAIN_BACKWARD = "posekernels::tconv_train_backward"

if _ext.has_extension():
    _autograd.register_agc(AGC_FORWARD, AGC_BACKWARD)
    _autograd.register_jl(JL_FORWARD, JL_BACKWARD)
    _autograd.register_dropout(DROPOUT)
    _autograd.register_bn_act(BN_ACT_FORWARD, BN_ACT_BACKWARD)
    _autograd.register_tconv_train(TCONV_TRAIN_FORWARD, TCONV_TRAIN_BACKWARD)

    @torch.library.register_fake(AGC_UNIT_FORWARD)
    def _fake_agc_unit_forward(x, A, W, bias, B, theta_w, theta_b, phi_w, phi_b, shortcut_w,
                               shortcut_b, identity_shortcut, relu):
        n, _, t, v = x.shape
        return x.new_empty((n, W.shape[1], t, v))

    @torch.library.register_fake(TCONV_WEIGHT)
    def _fake_tconv_weight(weight, stride):
        o, c, k = weight.shape[:3]
        return weight.new_empty((6, o, ((k + stride - 1) // stride + 2) // 3 * stride * c))

    @torch.library.register_fake(TCONV_FORWARD)
    def _fake_tconv_forward(x, weight_t, kernel, stride, bias, residual, residual_w, pad_left,
                            pad_right, relu):
        n, _, t, v = x.shape
        t_out = (t + pad_left + pad_right - kernel) // stride + 1
        return x.new_empty((n, weight_t.shape[1], t_out, v))


# the devices each function has compiled kernels for (when the extension has that backend)
_DEVICES = {"adaptive_graph_conv": ("cpu", "cuda"), "graph_unit": ("cpu",),
            "joint_linear": ("cpu", "cuda"), "temporal_conv_weight": ("cpu",),
            "temporal_conv": ("cpu",), "dropout": ("cpu", "cuda"),
            "batch_norm_act": ("cpu", "cuda"),
            "temporal_conv_train": ("cpu",)}


def available(device: torch.device | str, op: str = "adaptive_graph_conv") -> bool:
    """Whether the compiled kernel behind function ``op`` of this module runs on ``device``
    here (the extension is built, with CUDA for a CUDA device)."""
    device = torch.device(device)
    if op not in _DEVICES:
        raise ValueError(f"op must be one of {list(_DEVICES)}, got {op!r}")
    return device.type in _DEVICES[op] and device.type in _ext.compiled_backends()


def adaptive_graph_conv(x: Tensor, A: Tensor, W: Tensor, bias: Tensor | None,
                        B: Tensor | None, theta_w: Tensor | None, theta_b: Tensor | None,
                        phi_w: Tensor | None, phi_b: Tensor | None) -> Tensor:
    """:func:`posekernels.ops.adaptive_graph_conv` (same arguments and result), unchecked."""
    return torch.ops.posekernels.agc_forward(x, A, W, bias, B, theta_w, theta_b, phi_w, phi_b)[0]


def graph_unit(x: Tensor, A: Tensor, W: Tensor, bias: Tensor | None, B: Tensor | None,
               theta_w: Tensor | None, theta_b: Tensor | None, phi_w: Tensor | None,
               phi_b: Tensor | None, shortcut_w: Tensor | None, shortcut_b: Tensor | None,
               relu: bool = True) -> Tensor:
    """A whole graph unit in one pass (CPU): ``act(adaptive_graph_conv(x, ...) + s)`` where the
    shortcut ``s`` is ``x`` itself when ``shortcut_w`` is None (then Cout = Cin), else the 1x1
    convolution ``shortcut_w`` (Cout, Cin, 1, 1) or (Cout, Cin) of x plus ``shortcut_b`` (Cout,);
    act is ReLU when ``relu``. Output (N, Cout, T, V).

    With a float32 ``x``, ``W``, ``shortcut_w`` and the attention embeddings ``theta_w`` /
    ``phi_w`` (both or neither) may be bfloat16: their products then take the operands rounded
    to bfloat16 and sum in float32 (the plans' ``precision="bf16"``)."""
    return torch.ops.posekernels.agc_unit_forward(x, A, W, bias, B, theta_w, theta_b, phi_w,
                                                  phi_b, shortcut_w, shortcut_b,
                                                  shortcut_w is None, relu)


def joint_linear(x: Tensor, W: Tensor, b: Tensor | None) -> Tensor:
    """One per-joint product: x (M, V, C), W (V, C, D), b (V, D) or None ->
    ``y[m, v] = x[m, v] @ W[v] + b[v]`` (M, V, D). The two weight groups of
    :func:`posekernels.ops.grouped_joint_linear` are blended first with
    :func:`posekernels.ops.blend_joint_weights`."""
    return torch.ops.posekernels.jl_forward(x, W, b)


def temporal_conv_weight(weight: Tensor, stride: int = 1) -> Tensor:
    """The Winograd F(4, 3) transform of a temporal convolution weight (O, C, k) or (O, C, k, 1)
    for ``stride``, which :func:`temporal_conv` takes (compute it once per weight)."""
    return torch.ops.posekernels.tconv_transform_weight(weight, stride)


def temporal_conv(x: Tensor, weight_t: Tensor, kernel: int, stride: int, bias: Tensor | None,
                  residual: Tensor | None, pad_left: int, pad_right: int, relu: bool,
                  residual_w: Tensor | None = None) -> Tensor:
    """:func:`posekernels.ops.temporal_conv` on a transformed weight (:func:`temporal_conv_weight`
    of a k-tap weight), with explicit padding: ``act(conv(x) + bias + r)`` where ``r`` is
    ``residual`` (N, O, T_out, V), or ``residual_w @ residual`` over channels when the 1x1
    weight ``residual_w`` (O, C_r) is given (its bias then belongs in ``bias``). Needs at least 3
    taps per stride phase (``ceil(kernel / stride) >= 3``) and paddings below ``kernel``.
    With a float32 ``x``, ``weight_t`` and ``residual_w`` may be bfloat16 (bfloat16 operands,
    float32 sums: the plans' ``precision="bf16"``)."""
    return torch.ops.posekernels.tconv_forward(x, weight_t, kernel, stride, bias, residual,
                                               residual_w, pad_left, pad_right, relu)


def dropout(x: Tensor, p: float, seed: Tensor) -> Tensor:
    """Counter-based dropout (CPU, CUDA): ``x / (1 - p)`` where element i is kept, 0 elsewhere; the
    mask is Philox4x32-10 of (``seed``, i), ``seed`` a one-element int64 CPU tensor. Its
    gradient is the same op applied to the incoming gradient."""
    return torch.ops.posekernels.dropout_apply(x, p, seed)


def batch_norm_act(z: Tensor, weight: Tensor | None, bias: Tensor | None,
                   residual: Tensor | None, p: float, seed: Tensor, eps: float,
                   relu: bool, out_dtype: torch.dtype | None = None
                   ) -> tuple[Tensor, Tensor, Tensor]:
    """Training-mode BatchNorm (batch statistics over every dimension of ``z`` (N, C, ...) but
    C) + counter-based dropout ``p`` + ``residual`` + ReLU (CPU: a statistics sweep and an elementwise sweep; CUDA:
    a statistics kernel and an elementwise kernel):
    ``(act(dropout(BN(z)) + residual), mean, biased variance)``. The running statistics are
    the caller's to update. ``out_dtype``: y's dtype (None: the computation's; cpu: also
    bfloat16, rounded once from float32)."""
    return torch.ops.posekernels.bn_act_forward(z, weight, bias, residual, p, seed, eps, relu,
                                                out_dtype)


def temporal_conv_train(x: Tensor, weight: Tensor, bias: Tensor | None, stride: int,
                        pad_left: int, pad_right: int) -> Tensor:
    """The differentiable temporal convolution (CPU, float32/float64): ``conv(x) + bias`` on the
    raw weight (O, C, k) or (O, C, k, 1), forward on the Winograd kernel; its backward computes
    the input gradient on the same kernel (phase by phase for a stride) and the weight gradient
    with oneDNN. Needs ``k >= 3 * stride`` and paddings below k."""
    return torch.ops.posekernels.tconv_train_forward(x, weight, bias, stride, pad_left, pad_right)
