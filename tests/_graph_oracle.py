"""Test-only oracle shared by the model tests: the three 2s-AGCN partitions built directly from
the reference description (independent of posekernels.skeletons)."""
import torch


def partitions(edges, v):
    """A_0 = I; A_1 (inward) and A_2 (outward) from (child, parent) edges, column-normalised."""
    a = torch.zeros(3, v, v, dtype=torch.float64)
    a[0] = torch.eye(v, dtype=torch.float64)
    for child, parent in edges:
        a[1, parent, child] = 1.0
        a[2, child, parent] = 1.0
    for k in (1, 2):
        col = a[k].sum(0)
        a[k] = torch.where(col > 0, a[k] / torch.where(col > 0, col, torch.ones_like(col)), a[k])
    return a
