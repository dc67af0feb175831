"""Argument checks shared by every backend: bad input fails here, in Python, with a clear error.

Shape, dtype and device checks are free (metadata only). Value checks (NaN/inf in A, lam in
[0, 1] for a tensor lam) read data: on CPU they raise ValueError; on CUDA they are queued with
``torch._assert_async`` so no host synchronisation happens; under ``torch.compile`` tracing they
are skipped.
"""
from __future__ import annotations

import numbers

import torch
from torch import Tensor

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

# temporal_conv: zero frames added on either side at most (2^20; a sane bound that keeps every
# size computation far from overflow)
MAX_TEMPORAL_PADDING = 1 << 20


def _compiling() -> bool:
    return torch.compiler.is_compiling()


def _tensor(name: str, t, ndim: int, shape_doc: str) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {shape_doc}, got {type(t).__name__}")
    if t.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{name} must be a floating-point tensor (float16, bfloat16, float32 or "
                        f"float64), got dtype {t.dtype}")
    if t.dim() != ndim:
        raise ValueError(f"{name} must have shape {shape_doc} ({ndim} dimensions), "
                         f"got {tuple(t.shape)}")
    return t


def _expect(name: str, t: Tensor, expected: tuple, shape_doc: str) -> None:
    if tuple(t.shape) != tuple(expected):
        raise ValueError(f"{name} must have shape {shape_doc} = {tuple(expected)}, got {tuple(t.shape)}")


def _same(name: str, t: Tensor, ref: Tensor, ref_name: str) -> None:
    if t.device != ref.device:
        raise ValueError(f"{name} is on {t.device} but {ref_name} is on {ref.device}; "
                         "all tensors must be on one device")
    if t.dtype != ref.dtype:
        raise TypeError(f"{name} has dtype {t.dtype} but {ref_name} has dtype {ref.dtype}; "
                        "all tensors must share one dtype")


def _check_finite(name: str, t: Tensor) -> None:
    if _compiling():
        return
    if t.device.type == "cpu":
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} contains NaN or inf; it must be finite")
    else:
        torch._assert_async(torch.isfinite(t).all(), f"{name} contains NaN or inf; it must be finite")


def check_adaptive_graph_conv(x, A, W, bias, B, theta_w, theta_b, phi_w, phi_b) -> None:
    x = _tensor("x", x, 4, "(N, Cin, T, V)")
    n, cin, t, v = x.shape
    if n == 0 or t == 0:
        raise ValueError(f"x must have a non-empty batch and window (N >= 1, T >= 1), got shape {tuple(x.shape)}")
    if cin == 0 or v == 0:
        raise ValueError(f"x must have Cin >= 1 and V >= 1, got shape {tuple(x.shape)}")
    A = _tensor("A", A, 3, "(K, V, V)")
    k = A.shape[0]
    if k == 0:
        raise ValueError("A must hold at least one partition (K >= 1), got K = 0")
    _expect("A", A, (k, v, v), "(K, V, V) with V = x.shape[3]")
    _same("A", A, x, "x")
    if A.requires_grad and torch.is_grad_enabled():
        raise ValueError("A requires grad, but A is a constant graph: adaptive_graph_conv gives "
                         "gradients to every argument except A, so A would silently get none. "
                         "Pass A.detach() (or build it under torch.no_grad()); a learned graph "
                         "belongs in B, which does get a gradient")
    W = _tensor("W", W, 3, "(K, Cout, Cin)")
    if W.shape[0] != k or W.shape[2] != cin or W.shape[1] == 0:
        raise ValueError(f"W must have shape (K, Cout, Cin) = ({k}, Cout, {cin}) with Cout >= 1, "
                         f"got {tuple(W.shape)}")
    _same("W", W, x, "x")
    cout = W.shape[1]
    if bias is not None:
        _tensor("bias", bias, 2, "(K, Cout)")
        _expect("bias", bias, (k, cout), "(K, Cout)")
        _same("bias", bias, x, "x")
    if B is not None:
        _tensor("B", B, 3, "(K, V, V)")
        _expect("B", B, (k, v, v), "(K, V, V)")
        _same("B", B, x, "x")
    if (theta_w is None) != (phi_w is None):
        raise ValueError("theta_w and phi_w must be given together (attention) or both be None")
    if theta_w is None:
        for name, val in (("theta_b", theta_b), ("phi_b", phi_b)):
            if val is not None:
                raise ValueError(f"{name} was given without theta_w/phi_w; pass the attention "
                                 "weights too or leave it None")
    else:
        _tensor("theta_w", theta_w, 3, "(K, Ce, Cin)")
        ce = theta_w.shape[1]
        if theta_w.shape[0] != k or theta_w.shape[2] != cin or ce == 0:
            raise ValueError(f"theta_w must have shape (K, Ce, Cin) = ({k}, Ce, {cin}) with Ce >= 1, "
                             f"got {tuple(theta_w.shape)}")
        _same("theta_w", theta_w, x, "x")
        _tensor("phi_w", phi_w, 3, "(K, Ce, Cin)")
        _expect("phi_w", phi_w, (k, ce, cin), "(K, Ce, Cin), the shape of theta_w")
        _same("phi_w", phi_w, x, "x")
        for name, val in (("theta_b", theta_b), ("phi_b", phi_b)):
            if val is not None:
                _tensor(name, val, 2, "(K, Ce)")
                _expect(name, val, (k, ce), "(K, Ce)")
                _same(name, val, x, "x")
    _check_finite("A", A)


def check_grouped_joint_linear(x, W_joint, b_joint, W_shared, b_shared, lam) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor of shape (..., V, C), got {type(x).__name__}")
    if x.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"x must be a floating-point tensor, got dtype {x.dtype}")
    if x.dim() < 2:
        raise ValueError(f"x must have shape (..., V, C) (at least 2 dimensions), got {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"x must not be empty, got shape {tuple(x.shape)}")
    v, c = x.shape[-2], x.shape[-1]
    if W_joint is None and W_shared is None:
        raise ValueError("grouped_joint_linear needs W_joint (V, C, D), W_shared (C, D) or both")
    d = None
    if W_joint is not None:
        _tensor("W_joint", W_joint, 3, "(V, C, D)")
        if W_joint.shape[0] != v or W_joint.shape[1] != c or W_joint.shape[2] == 0:
            raise ValueError(f"W_joint must have shape (V, C, D) = ({v}, {c}, D) with D >= 1, "
                             f"got {tuple(W_joint.shape)}")
        _same("W_joint", W_joint, x, "x")
        d = W_joint.shape[2]
        if b_joint is not None:
            _tensor("b_joint", b_joint, 2, "(V, D)")
            _expect("b_joint", b_joint, (v, d), "(V, D)")
            _same("b_joint", b_joint, x, "x")
    elif b_joint is not None:
        raise ValueError("b_joint was given without W_joint")
    if W_shared is not None:
        _tensor("W_shared", W_shared, 2, "(C, D)")
        if W_shared.shape[0] != c or W_shared.shape[1] == 0:
            raise ValueError(f"W_shared must have shape (C, D) = ({c}, D) with D >= 1, "
                             f"got {tuple(W_shared.shape)}")
        if d is not None and W_shared.shape[1] != d:
            raise ValueError(f"W_shared must have shape (C, D) = ({c}, {d}) to match W_joint's D, "
                             f"got {tuple(W_shared.shape)}")
        _same("W_shared", W_shared, x, "x")
        d = W_shared.shape[1]
        if b_shared is not None:
            _tensor("b_shared", b_shared, 1, "(D,)")
            _expect("b_shared", b_shared, (d,), "(D,)")
            _same("b_shared", b_shared, x, "x")
    elif b_shared is not None:
        raise ValueError("b_shared was given without W_shared")
    if isinstance(lam, Tensor):
        if lam.dim() != 0:
            raise ValueError(f"lam must be a float or a 0-dim tensor, got shape {tuple(lam.shape)}")
        if not lam.is_floating_point():
            raise TypeError(f"lam must be a floating-point tensor, got dtype {lam.dtype}")
        if lam.device != x.device and lam.device.type != "cpu":
            raise ValueError(f"lam is on {lam.device} but x is on {x.device}")
        if not _compiling():
            ok = (lam >= 0) & (lam <= 1)
            if lam.device.type == "cpu":
                if not bool(ok):
                    raise ValueError(f"lam must lie in [0, 1], got {float(lam)}")
            else:
                torch._assert_async(ok, "lam must lie in [0, 1]")
    elif isinstance(lam, numbers.Real) and not isinstance(lam, bool):
        if not 0.0 <= float(lam) <= 1.0:
            raise ValueError(f"lam must lie in [0, 1], got {lam}")
    else:
        raise TypeError(f"lam must be a float in [0, 1] or a 0-dim tensor, got {type(lam).__name__}")


def temporal_padding(padding, kernel: int) -> tuple[int, int]:
    """``padding`` of :func:`posekernels.ops.temporal_conv` as (left, right)."""
    if padding is None:
        return (kernel - 1) // 2, (kernel - 1) // 2
    if isinstance(padding, numbers.Integral) and not isinstance(padding, bool):
        pads = (int(padding), int(padding))
    elif (isinstance(padding, (tuple, list)) and len(padding) == 2
          and all(isinstance(p, numbers.Integral) and not isinstance(p, bool) for p in padding)):
        pads = (int(padding[0]), int(padding[1]))
    else:
        raise TypeError(f"padding must be None, an int or a pair of ints (left, right), got {padding!r}")
    if min(pads) < 0:
        raise ValueError(f"padding must be >= 0, got {padding!r}")
    if max(pads) > MAX_TEMPORAL_PADDING:
        raise ValueError(f"padding must be at most {MAX_TEMPORAL_PADDING} frames on each side, "
                         f"got {padding!r}")
    return pads


def check_temporal_conv(x, weight, bias, residual, pads: tuple[int, int], stride: int = 1) -> int:
    """Checks the arguments of :func:`posekernels.ops.temporal_conv`; returns T_out."""
    if not isinstance(stride, numbers.Integral) or isinstance(stride, bool) or stride < 1:
        raise ValueError(f"stride must be an int >= 1, got {stride!r}")
    _tensor("x", x, 4, "(N, C, T, V)")
    n, c, t, v = x.shape
    if min(x.shape) < 1:
        raise ValueError(f"x must have shape (N, C, T, V) with every size >= 1, got {tuple(x.shape)}")
    if not isinstance(weight, Tensor) or weight.dim() not in (3, 4) or (
            weight.dim() == 4 and weight.shape[3] != 1):
        shape = tuple(weight.shape) if isinstance(weight, Tensor) else type(weight).__name__
        raise ValueError(f"weight must have shape (O, C, k) or (O, C, k, 1), got {shape}")
    _tensor("weight", weight, weight.dim(), "(O, C, k)")
    if weight.shape[1] != c or weight.shape[0] < 1 or weight.shape[2] < 1:
        raise ValueError(f"weight must have shape (O, C, k) = (O, {c}, k) with O, k >= 1, got "
                         f"{tuple(weight.shape)}")
    _same("weight", weight, x, "x")
    o, k = weight.shape[0], weight.shape[2]
    if t + pads[0] + pads[1] < k:
        raise ValueError(f"T + padding = {t + sum(pads)} must be >= the kernel size {k}")
    t_out = (t + pads[0] + pads[1] - k) // stride + 1
    if bias is not None:
        _tensor("bias", bias, 1, "(O,)")
        _expect("bias", bias, (o,), "(O,)")
        _same("bias", bias, x, "x")
    if residual is not None:
        _tensor("residual", residual, 4, "(N, O, T_out, V)")
        _expect("residual", residual, (n, o, t_out, v), "(N, O, T_out, V), the output's shape")
        _same("residual", residual, x, "x")
    return t_out
