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

if _ext.has_extension():
    _autograd.register_agc(AGC_FORWARD, AGC_BACKWARD)
    _autograd.register_jl(JL_FORWARD, JL_BACKWARD)


def adaptive_graph_conv(x, A, W, bias, B, theta_w, theta_b, phi_w, phi_b):
    return torch.ops.posekernels.agc_forward(x, A, W, bias, B, theta_w, theta_b, phi_w, phi_b)[0]


def joint_linear(x, W, b):
    return torch.ops.posekernels.jl_forward(x, W, b)
