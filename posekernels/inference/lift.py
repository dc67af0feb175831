"""Offline lifting of whole 2D sequences (one 3D pose per frame), and the facts about a lifting
model that every way of running it reads: its window (:func:`window_offsets`) and its joint
count (:func:`model_joints`)."""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from ..data.windows import flip_pose
from .plan import GLAGCNPlan, build_plan

__all__ = ["lift_sequence", "window_offsets", "model_joints"]


class _WindowToPose(nn.Module):
    """A plan (B, T, V, 2) -> (B, V, 3) seen as a model (B, T, V, 2) -> (B, 1, V, 3)."""

    def __init__(self, plan: nn.Module):
        super().__init__()
        self.plan = plan

    def forward(self, windows: Tensor) -> Tensor:
        return self.plan(windows)[:, None]


def window_offsets(receptive_field: int, causal: bool) -> Tensor:
    """Frame offsets of a window relative to the frame it predicts.

    Centred windows cover [t - (T - 1) / 2, t + (T - 1) / 2]; causal windows [t - T + 1, t].
    """
    start = -(receptive_field - 1) if causal else -((receptive_field - 1) // 2)
    return torch.arange(receptive_field) + start


def model_joints(model: nn.Module) -> int | None:
    """The number of joints V a lifting model takes: its ``num_joints``, else its skeleton's
    (``model.skeleton.num_joints``); None when it has neither."""
    joints = getattr(model, "num_joints", None)
    if joints is None:
        joints = getattr(getattr(model, "skeleton", None), "num_joints", None)
    return None if joints is None else int(joints)


def _model_layout(model: nn.Module) -> tuple[int, bool, int | None]:
    receptive_field = int(getattr(model, "receptive_field", 1))
    causal = bool(getattr(model, "causal", False))
    return receptive_field, causal, model_joints(model)


def _predict(model: nn.Module, windows: Tensor, windowed: bool) -> Tensor:
    """windows (B, T, V, 2) -> (B, V, 3)."""
    if windowed:
        return model(windows)[:, 0]
    return model(windows[:, 0])


def lift_sequence(model: nn.Module, keypoints2d, *, flip_tta: bool = False,
                  batch_size: int = 1024, fold: bool = True):
    """Lift a 2D sequence (F, V, 2) of normalised keypoints to 3D poses (F, V, 3).

    Every frame gets its own window of the model's receptive field T, padded by replicating the
    first and last frames (centred models pad both ends by (T - 1) / 2; causal models, whose
    window ends at the predicted frame, pad only on the left). Windows are gathered by index
    arithmetic and lifted ``batch_size`` at a time on the model's device, in eval mode and
    without gradients. Single-frame models (no ``receptive_field`` attribute, input (N, V, 2))
    are applied frame by frame in batches.

    ``flip_tta=True`` averages each prediction with the mirrored prediction of the mirrored
    input (test-time flip, using the model skeleton's left/right lists).

    ``fold=True`` (default) runs a :class:`~posekernels.models.GLAGCN` through its folded
    inference plan (:func:`posekernels.inference.build_plan`: BatchNorms folded, fused compiled
    kernels on the CPU), the same computation :class:`~posekernels.stream.StreamingLifter` does,
    so that streamed and offline results agree to float rounding. The plan's outputs differ from
    the model's own forward by float32 rounding only (about 1e-5 relative at most: its CPU
    temporal convolution uses a Winograd transform); ``fold=False`` calls ``model`` itself.

    Returns a tensor on the model's device, or a numpy array when ``keypoints2d`` was one.
    The output is root-relative in the model's units (metres for posekernels' models).
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    as_numpy = isinstance(keypoints2d, np.ndarray)
    if not isinstance(keypoints2d, (np.ndarray, Tensor)):
        raise TypeError(f"keypoints2d must be a numpy array or torch tensor of shape (F, V, 2), "
                        f"got {type(keypoints2d).__name__}")
    param = next(model.parameters())
    kp = torch.as_tensor(keypoints2d).to(param.device, param.dtype)
    receptive_field, causal, joints = _model_layout(model)
    if kp.dim() != 3 or kp.shape[-1] != 2:
        raise ValueError(f"keypoints2d must have shape (F, V, 2), got {tuple(kp.shape)}")
    if joints is not None and kp.shape[1] != joints:
        raise ValueError(f"keypoints2d must have shape (F, V, 2) with V = {joints} joints for this "
                         f"model, got {tuple(kp.shape)}")
    frames = kp.shape[0]
    if frames == 0:
        raise ValueError("keypoints2d is empty (F = 0); nothing to lift")
    if not bool(torch.isfinite(kp).all()):
        raise ValueError("keypoints2d contains NaN or inf; fill missing joints first "
                         "(posekernels.stream.StreamingLifter does this for live input)")

    skeleton = getattr(model, "skeleton", None)
    left, right = (skeleton.left, skeleton.right) if skeleton is not None else ((), ())
    windowed = hasattr(model, "receptive_field")
    offsets = window_offsets(receptive_field, causal).to(kp.device)
    out = torch.empty(frames, kp.shape[1], 3, device=kp.device, dtype=kp.dtype)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            runner = model
            if fold:
                plan = build_plan(model)
                if isinstance(plan, GLAGCNPlan):  # (B, T, V, 2) -> (B, V, 3) directly
                    runner = _WindowToPose(plan)
            for start in range(0, frames, batch_size):
                idx = torch.arange(start, min(frames, start + batch_size), device=kp.device)
                gather = (idx[:, None] + offsets[None, :]).clamp_(0, frames - 1)
                windows = kp[gather]  # (B, T, V, 2)
                pred = _predict(runner, windows, windowed)
                if flip_tta:
                    mirrored = _predict(runner, flip_pose(windows, left, right), windowed)
                    pred = (pred + flip_pose(mirrored, left, right)) / 2
                out[idx] = pred
    finally:
        model.train(was_training)
    return out.cpu().numpy() if as_numpy else out
