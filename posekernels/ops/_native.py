"""The compiled backends: C++ ops ``posekernels::agc_*`` / ``posekernels::jl_*`` from ``posekernels._C``.

One op serves both the ``cpu`` backend (its CPU kernel, csrc/cpu) and the ``cuda`` backend (its
CUDA kernel, csrc/cuda); the tensor's device picks the kernel. The schemas are defined in
python_api/ops.cpp; fake kernels and autograd are registered here from Python.
"""
from __future__ import annotations

import torch

from .. import _ext
from . import _autograd

AGC_FORWARD = "posekernels::agc_forward"
AGC_BACKWARD = "posekernels::agc_backward"
JL_FORWARD = "posekernels::jl_forward"
JL_BACKWARD = "posekernels::jl_backward"

TCONV_WEIGHT = "posekernels::tconv_transform_weight"
TCONV_FORWARD = "posekernels::tconv_forward"

if _ext.has_extension():
    _autograd.register_agc(AGC_FORWARD, AGC_BACKWARD)
    _autograd.register_jl(JL_FORWARD, JL_BACKWARD)

    @torch.library.register_fake("posekernels::agc_unit_forward")
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


def adaptive_graph_conv(x, A, W, bias, B, theta_w, theta_b, phi_w, phi_b):
    return torch.ops.posekernels.agc_forward(x, A, W, bias, B, theta_w, theta_b, phi_w, phi_b)[0]


def joint_linear(x, W, b):
    return torch.ops.posekernels.jl_forward(x, W, b)


def temporal_conv_weight(weight, stride=1):
    """The Winograd-transformed weight of a (O, C, k[, 1]) weight for the given stride."""
    return torch.ops.posekernels.tconv_transform_weight(weight, stride)


def temporal_conv(x, weight_t, kernel, stride, bias, residual, pad_left, pad_right, relu):
    return torch.ops.posekernels.tconv_forward(x, weight_t, kernel, stride, bias, residual, None,
                                               pad_left, pad_right, relu)
