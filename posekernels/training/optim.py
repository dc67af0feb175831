"""Optimisers and schedules of the training recipes.

* :class:`Lookahead` (Zhang et al., 2019): keeps a slow copy of the weights; every ``k`` steps
  of the inner ("fast") optimiser the slow weights move ``alpha`` of the way to the fast ones and
  the fast weights are reset to them.
* :func:`ranger`: GLA-GCN's "Ranger" = ``torch.optim.RAdam`` (betas 0.95 / 0.999, eps 1e-5,
  no weight decay) inside Lookahead (k = 6, alpha = 0.5).
* :func:`cosine_lr` (lr to lr_min over the epochs, stepped once per epoch), :func:`exp_lr`,
  :func:`set_lr`, and :func:`bn_momentum` / :func:`set_bn_momentum` (BatchNorm momentum
  0.1 * exp(-epoch / epochs * ln 100): 0.1 at the start, 0.001 at the end; as in the released
  GLA-GCN code, the two shortcut BatchNorms of a GLA-GCN's first block stay out of the decay).
"""
from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import nn

__all__ = ["Lookahead", "ranger", "make_optimizer", "cosine_lr", "exp_lr", "set_lr",
           "bn_momentum", "set_bn_momentum", "released_undecayed_batchnorms"]


class Lookahead:
    """Lookahead wrapper around any ``torch.optim.Optimizer``.

    ``step()`` runs the inner optimiser; on every ``k``-th call the slow weights ``s`` and the
    fast weights ``w`` of every parameter become ``s + alpha * (w - s)``. ``param_groups`` are the
    inner optimiser's (set the learning rate there); ``state_dict()`` holds the inner state, the
    slow weights and the step counter, so a resumed run continues exactly.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, k: int = 6, alpha: float = 0.5):
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"Lookahead k must be a positive int, got {k!r}")
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"Lookahead alpha must lie in (0, 1], got {alpha!r}")
        self.optimizer = optimizer
        self.k, self.alpha = k, float(alpha)
        self.steps = 0
        self.slow = [p.detach().clone() for p in self._params()]

    def _params(self) -> list[torch.Tensor]:
        return [p for g in self.optimizer.param_groups for p in g["params"]]

    @property
    def param_groups(self):
        return self.optimizer.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    @torch.no_grad()
    def step(self, closure=None):
        loss = self.optimizer.step(closure)
        self.steps += 1
        if self.steps % self.k == 0:
            for p, s in zip(self._params(), self.slow):
                s.add_(p.detach() - s, alpha=self.alpha)
                p.copy_(s)
        return loss

    def state_dict(self) -> dict:
        return {"inner": self.optimizer.state_dict(), "slow": [s.clone() for s in self.slow],
                "steps": self.steps, "k": self.k, "alpha": self.alpha}

    def load_state_dict(self, state: dict) -> None:
        for key in ("inner", "slow", "steps"):
            if key not in state:
                raise ValueError(f"Lookahead state lacks {key!r}")
        params = self._params()
        if len(state["slow"]) != len(params):
            raise ValueError(f"Lookahead state has {len(state['slow'])} slow tensors for "
                             f"{len(params)} parameters")
        self.optimizer.load_state_dict(state["inner"])
        self.slow = [s.detach().to(p.device, p.dtype).clone()
                     for s, p in zip(state["slow"], params)]
        self.steps = int(state["steps"])


def ranger(params: Iterable[nn.Parameter], lr: float = 0.01, weight_decay: float = 0.0,
           k: int = 6, alpha: float = 0.5) -> Lookahead:
    """RAdam (betas 0.95/0.999, eps 1e-5) inside Lookahead (k = 6, alpha = 0.5)."""
    inner = torch.optim.RAdam(params, lr=lr, betas=(0.95, 0.999), eps=1e-5,
                              weight_decay=weight_decay)
    return Lookahead(inner, k=k, alpha=alpha)


def make_optimizer(name: str, params, lr: float, weight_decay: float = 0.0):
    """``"ranger"`` (:func:`ranger`) or ``"adam"`` (``torch.optim.Adam``)."""
    if name == "ranger":
        return ranger(params, lr=lr, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"optimizer must be 'ranger' or 'adam', got {name!r}")


def cosine_lr(epoch: int, epochs: int, lr: float, lr_min: float) -> float:
    """Cosine annealing from ``lr`` (epoch 0) to ``lr_min`` (epoch ``epochs``)."""
    return lr_min + 0.5 * (lr - lr_min) * (1.0 + math.cos(math.pi * epoch / max(epochs, 1)))


def exp_lr(epoch: int, lr: float, decay: float) -> float:
    """``lr * decay ** epoch``."""
    return lr * decay ** epoch


def set_lr(optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def bn_momentum(epoch: int, epochs: int, start: float = 0.1, end: float = 0.001) -> float:
    """``start * exp(-epoch / epochs * ln(start / end))``: 0.1 -> 0.001 over training."""
    return start * math.exp(-epoch / max(epochs, 1) * math.log(start / end))


def released_undecayed_batchnorms(model: nn.Module) -> list[nn.Module]:
    """The BatchNorms of ``model`` that the released GLA-GCN code leaves out of its momentum
    decay: in every :class:`~posekernels.models.GLAGCN` inside ``model``, the first (expand)
    block's two shortcut BatchNorms, ``expand.gcn.shortcut.bn`` (their ``gcn1.down.1``) and
    ``expand.residual.bn`` (their ``residual.bn``). Their decay touches the input BatchNorm and
    every block's graph and temporal BatchNorms only; the other blocks have no shortcut
    BatchNorm (C -> C, identity or no shortcut)."""
    from ..models import GLAGCN

    out = []
    for m in model.modules():
        if isinstance(m, GLAGCN):
            if m.expand.gcn.shortcut is not None:
                out.append(m.expand.gcn.shortcut.bn)
            if m.expand.residual is not None:
                out.append(m.expand.residual.bn)
    return out


def set_bn_momentum(model: nn.Module, momentum: float, *, released: bool = True) -> None:
    """Set the momentum of every BatchNorm of ``model``. ``released=True`` (default) matches
    the released GLA-GCN code: the BatchNorms of :func:`released_undecayed_batchnorms` keep
    the momentum they have (0.1, PyTorch's default, unless changed by hand); ``released=False``
    sets every BatchNorm, those two included."""
    keep = {id(m) for m in released_undecayed_batchnorms(model)} if released else set()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and id(m) not in keep:
            m.momentum = momentum
