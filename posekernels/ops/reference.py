"""Plain PyTorch reference of the three ops: the specification, the fallback and the test oracle.

Written for readability, not speed: every formula appears exactly as in the documentation of
:func:`posekernels.ops.adaptive_graph_conv`, :func:`posekernels.ops.grouped_joint_linear` and
:func:`posekernels.ops.temporal_conv`.
Autograd comes from PyTorch itself.
"""
from __future__ import annotations

import torch
from torch import Tensor


def attention(x: Tensor, theta_w: Tensor, theta_b: Tensor | None, phi_w: Tensor,
              phi_b: Tensor | None) -> Tensor:
    """Data-dependent graph C (N, K, V, V): softmax over v of S / (Ce * T).

    S[n, k, v, w] = sum_{e, t} theta_k(x)[n, e, t, v] * phi_k(x)[n, e, t, w], where theta_k and
    phi_k are 1x1 convolutions (K, Ce, Cin) with optional biases (K, Ce).
    """
    ce = theta_w.shape[1]
    t = x.shape[2]
    theta = torch.einsum("kec,nctv->nketv", theta_w, x)
    phi = torch.einsum("kec,nctv->nketv", phi_w, x)
    if theta_b is not None:
        theta = theta + theta_b[None, :, :, None, None]
    if phi_b is not None:
        phi = phi + phi_b[None, :, :, None, None]
    s = torch.einsum("nketv,nketw->nkvw", theta, phi) / (ce * t)
    return torch.softmax(s, dim=-2)


def adaptive_graph_conv(x: Tensor, A: Tensor, W: Tensor, bias: Tensor | None = None,
                        B: Tensor | None = None, theta_w: Tensor | None = None,
                        theta_b: Tensor | None = None, phi_w: Tensor | None = None,
                        phi_b: Tensor | None = None) -> Tensor:
    """y[n,o,t,w] = sum_k (sum_c W[k,o,c] sum_v x[n,c,t,v] M[n,k,v,w] + bias[k,o])."""
    x = x.contiguous()  # einsum's traced decomposition may view it (torch.compile)
    n = x.shape[0]
    m = A.unsqueeze(0).expand(n, -1, -1, -1)  # (N, K, V, V)
    if B is not None:
        m = m + B
    if theta_w is not None:
        m = m + attention(x, theta_w, theta_b, phi_w, phi_b)
    aggregated = torch.einsum("nctv,nkvw->nkctw", x, m)
    y = torch.einsum("koc,nkctw->notw", W, aggregated)
    if bias is not None:
        y = y + bias.sum(0)[None, :, None, None]
    return y


def grouped_joint_linear(x: Tensor, W_joint: Tensor | None = None, b_joint: Tensor | None = None,
                         W_shared: Tensor | None = None, b_shared: Tensor | None = None,
                         lam: float | Tensor = 0.5) -> Tensor:
    """y[..., v, :] = lam (x_v W_joint[v] + b_joint[v]) + (1 - lam) (x_v W_shared + b_shared).

    With only one weight group given, that group alone is used.
    """
    unshared = shared = None
    if W_joint is not None:
        unshared = torch.einsum("...vc,vcd->...vd", x, W_joint)
        if b_joint is not None:
            unshared = unshared + b_joint
    if W_shared is not None:
        shared = x @ W_shared
        if b_shared is not None:
            shared = shared + b_shared
    if unshared is None:
        return shared
    if shared is None:
        return unshared
    return lam * unshared + (1 - lam) * shared


def joint_linear(x: Tensor, W: Tensor, b: Tensor | None = None) -> Tensor:
    """The kernel-level primitive: y[m, v, :] = x[m, v, :] @ W[v] + b[v] for x (M, V, C)."""
    y = torch.einsum("mvc,vcd->mvd", x, W)
    return y if b is None else y + b


def temporal_conv(x: Tensor, weight: Tensor, bias: Tensor | None = None,
                  residual: Tensor | None = None, padding: tuple[int, int] = (0, 0),
                  relu: bool = False, stride: int = 1) -> Tensor:
    """``act(conv_(k, 1), stride (s, 1)(x) + bias + residual)``, zero padding (left, right)."""
    F = torch.nn.functional
    w = weight if weight.dim() == 4 else weight[..., None]
    y = F.conv2d(F.pad(x, (0, 0, padding[0], padding[1])), w, bias, stride=(stride, 1))
    if residual is not None:
        y = y + residual
    return F.relu(y) if relu else y
