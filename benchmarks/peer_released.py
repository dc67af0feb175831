"""Peer baseline: the eager formulation of the released GLA-GCN graph unit, per partition.

This mirrors the structure of the authors' released unit as described in
../shared/reference/gla-gcn.md (written here from that description, not copied): for each
partition k, two 1x1 convolutions (theta, phi), a batched matmul over the whole window, a
softmax over the source joint, the adjacency added, a matmul of the flattened input with the
adjacency, and a 1x1 convolution; the partitions' outputs are summed. Same parameters and same
result as :func:`posekernels.ops.adaptive_graph_conv`; used by the benchmarks as the peer.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def released_graph_unit(x: Tensor, A: Tensor, W: Tensor, bias: Tensor | None, B: Tensor | None,
                        theta_w: Tensor | None, theta_b: Tensor | None, phi_w: Tensor | None,
                        phi_b: Tensor | None) -> Tensor:
    n, c, t, v = x.shape
    k_parts = A.shape[0]
    adjacency = A if B is None else A + B
    y = None
    for k in range(k_parts):
        m = adjacency[k]
        if theta_w is not None:
            a1 = F.conv2d(x, theta_w[k][:, :, None, None], None if theta_b is None else theta_b[k])
            a2 = F.conv2d(x, phi_w[k][:, :, None, None], None if phi_b is None else phi_b[k])
            a1 = a1.permute(0, 3, 1, 2).contiguous().view(n, v, -1)
            a2 = a2.view(n, -1, v)
            attn = torch.softmax(torch.matmul(a1, a2) / a1.size(-1), dim=-2)
            m = attn + m
        aggregated = torch.matmul(x.view(n, c * t, v), m).view(n, c, t, v)
        z = F.conv2d(aggregated, W[k][:, :, None, None], None if bias is None else bias[k])
        y = z if y is None else y + z
    return y


def released_icl_shared(x: Tensor, W_shared: Tensor, b_shared: Tensor) -> Tensor:
    """The released single shared head: Conv1d(C, D, 1) over every joint's C-vector. x (N, V, C)."""
    return F.conv1d(x.transpose(1, 2), W_shared.t()[:, :, None], b_shared).transpose(1, 2)


def released_icl_grouped(x: Tensor, W_joint: Tensor, b_joint: Tensor, W_shared: Tensor,
                         b_shared: Tensor, lam: float) -> Tensor:
    """Eager formulation of the individually connected layer: a per-joint loop of Linear layers
    plus the shared head, blended by lam. x (N, V, C)."""
    unshared = torch.stack([x[:, j] @ W_joint[j] + b_joint[j] for j in range(x.shape[1])], dim=1)
    shared = released_icl_shared(x, W_shared, b_shared)
    return lam * unshared + (1 - lam) * shared
