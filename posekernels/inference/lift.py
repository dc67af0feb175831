"""Offline lifting of whole 2D sequences (one 3D pose per frame), and the facts about a lifting
model that every way of running it reads: its window (:func:`window_offsets`, and
:func:`window_sampling` for input at another frame rate than the model's) and its joint count
(:func:`model_joints`)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from ..data.windows import flip_pose
from .plan import PRECISIONS, GLAGCNPlan, build_plan
from .smoothing import one_euro, smoothing_config

# Normalised screen coordinates lie within about [-1, 1] (x / w * 2 - [1, h / w]); a joint beyond
# this magnitude is not a detection (no camera puts one 500 image widths off the image), and
# lifting it would give poses kilometres long, or NaN once float32 overflows: lift_sequence
# refuses it, the streaming lifter and fill_missing treat it as a missing joint.
MAX_COORDINATE = 1000.0

__all__ = ["lift_sequence", "window_offsets", "window_sampling", "WindowSampling", "model_rate",
           "model_joints"]


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


@dataclass(frozen=True)
class WindowSampling:
    """Where a model's window samples the input, relative to the frame it predicts.

    The model was trained on windows of T frames at its own rate ``model_fps``; input at ``fps``
    has ``step = fps / model_fps`` input frames between two window frames. Window frame k sits at
    input position ``t + offsets[k] * step``, between input frames ``t + lo[k]`` and
    ``t + hi[k]`` (``hi = lo + 1``, or ``hi = lo`` where the position is a whole frame), and is
    their linear interpolation ``lerp(x[t + lo], x[t + hi], weight)``. The input indices are
    clamped to the frames that exist (replicate padding), the same rule offline and live.

    ``delay``: input frames after t that the window reads (``max(hi)``; 0 for causal models), the
    live latency in frames; ``lookback``: input frames before t (``-min(lo)``). ``step == 1``
    gives whole offsets and zero weights: today's windows exactly.
    """

    lo: tuple
    hi: tuple
    weight: tuple
    step: float

    @property
    def delay(self) -> int:
        return max(self.hi)

    @property
    def lookback(self) -> int:
        return -min(self.lo)

    @property
    def span(self) -> int:
        """Input frames a live window touches: lookback + 1 + delay."""
        return self.lookback + 1 + self.delay

    @property
    def interpolates(self) -> bool:
        return any(w != 0.0 for w in self.weight)

    def gather(self, x: Tensor, centres: Tensor, last: int | Tensor) -> Tensor:
        """Windows (B, T, ...) of ``x`` (F, ...) around frames ``centres`` (B,), reading input
        indices clamped to [0, ``last``]: the one formula of :func:`lift_sequence` and
        :class:`posekernels.stream.StreamingLifter`."""
        lo = torch.tensor(self.lo, device=x.device)
        idx = (centres[:, None] + lo[None, :]).clamp_(0, last)
        a = x[idx]
        if not self.interpolates:
            return a
        hi = torch.tensor(self.hi, device=x.device)
        b = x[(centres[:, None] + hi[None, :]).clamp_(0, last)]
        return self.blend(a, b)

    def blend(self, a: Tensor, b: Tensor) -> Tensor:
        """``lerp(a, b, weight)`` over the window axis (axis 1 of (B, T, ...))."""
        w = torch.tensor(self.weight, dtype=a.dtype, device=a.device)
        return torch.lerp(a, b, w.view((1, -1) + (1,) * (a.dim() - 2)))


def _positive_rate(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(value) or not 1.0 <= float(value) <= 1000.0:
        raise ValueError(f"{name} must be a frame rate in frames per second in [1, 1000], got "
                         f"{value!r}")
    return float(value)


def model_rate(model: nn.Module, model_fps=None) -> float:
    """The frame rate a model was trained at: ``model_fps`` when given, else the model's
    ``frame_rate`` attribute (set by :func:`posekernels.checkpoints.load_checkpoint` from a
    checkpoint that records it, as the shipped lifters do); ValueError when neither says."""
    if model_fps is not None:
        return _positive_rate(model_fps, "model_fps")
    rate = getattr(model, "frame_rate", None)
    if rate is None:
        raise ValueError(
            "fps was given but the model does not record the frame rate it was trained at "
            "(no model.frame_rate): pass model_fps= too (50 for Human3.6M-trained models and "
            "posekernels' CMU training, 60 for HumanEva)")
    return _positive_rate(rate, "model.frame_rate")


def pose_rate(model: nn.Module, fps=None, model_fps=None) -> float:
    """The rate of the poses a lifter returns: one per input frame, so the input's ``fps`` when
    given, else the model's recorded rate (``model_fps`` or ``model.frame_rate``), else 50."""
    if fps is not None:
        return _positive_rate(fps, "fps")
    if model_fps is not None or getattr(model, "frame_rate", None) is not None:
        return model_rate(model, model_fps)
    return 50.0


def window_sampling(receptive_field: int, causal: bool, fps=None,
                    model_fps: float = 50.0) -> WindowSampling:
    """The :class:`WindowSampling` of a model with window T = ``receptive_field`` (centred or
    causal, see :func:`window_offsets`) for input at ``fps`` frames per second when the model
    was trained at ``model_fps``; ``fps=None`` means the input is at the model's rate."""
    offsets = window_offsets(receptive_field, causal).tolist()
    if fps is None:
        return WindowSampling(tuple(offsets), tuple(offsets), (0.0,) * len(offsets), 1.0)
    step = _positive_rate(fps, "fps") / _positive_rate(model_fps, "model_fps")
    lo, hi, weight = [], [], []
    for k in offsets:
        pos = k * step
        whole = round(pos)
        if abs(pos - whole) <= 1e-9 * max(1.0, abs(pos)):
            pos = float(whole)
        f = math.floor(pos)
        w = pos - f
        lo.append(int(f))
        hi.append(int(f) + (1 if w > 0 else 0))
        weight.append(float(w))
    return WindowSampling(tuple(lo), tuple(hi), tuple(weight), step)


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
                  batch_size: int = 1024, fold: bool = True, fps: float | None = None,
                  model_fps: float | None = None, smoothing=None, precision: str = "float32"):
    """Lift a 2D sequence (F, V, 2) of normalised keypoints to 3D poses (F, V, 3).

    Every frame gets its own window of the model's receptive field T, padded by replicating the
    first and last frames (centred models pad both ends by (T - 1) / 2; causal models, whose
    window ends at the predicted frame, pad only on the left). Windows are gathered by index
    arithmetic and lifted ``batch_size`` at a time on the model's device, in eval mode and
    without gradients. Single-frame models (no ``receptive_field`` attribute, input (N, V, 2))
    are applied frame by frame in batches. NaN/inf and coordinates beyond ``MAX_COORDINATE``
    (1000; pixels passed by mistake, say) raise ValueError: fill missing joints first
    (:func:`posekernels.stream.fill_missing`).

    ``fps``: the input's frame rate, when it is not the rate the model was trained at (a 30 fps
    webcam, a 50 Hz model): each window then samples the input at the model's frame spacing,
    interpolating linearly between input frames (:func:`window_sampling`), so the model sees
    motion at the speed it learned; one pose still comes out per input frame. ``model_fps``: the
    model's rate, default ``model.frame_rate`` (:func:`model_rate`). ``fps=None`` lifts the
    frames as they are.

    ``smoothing``: One Euro filtering of the lifted poses in frame order (None: off; True: the
    defaults; a dict or :class:`~posekernels.inference.SmoothingConfig`), at the input's rate
    (``fps``, else the model's, else 50): the filter ``StreamingLifter(smoothing=...)`` applies.

    ``flip_tta=True`` averages each prediction with the mirrored prediction of the mirrored
    input (test-time flip, using the model skeleton's left/right lists).

    ``fold=True`` (default) runs a :class:`~posekernels.models.GLAGCN` through its folded
    inference plan (:func:`posekernels.inference.build_plan`: BatchNorms folded, fused compiled
    kernels on the CPU), the same computation :class:`~posekernels.stream.StreamingLifter` does,
    so that streamed and offline results agree to float rounding. The plan's outputs differ from
    the model's own forward by float32 rounding only (about 1e-5 relative at most: its CPU
    temporal convolution uses a Winograd transform); ``fold=False`` calls ``model`` itself.

    ``precision="bf16"``: the plan's weight products with bfloat16 operands and float32
    accumulation (a float32 GLA-GCN on the CPU; see :func:`posekernels.inference.build_plan`):
    faster on CPUs with AVX-512 BF16, and off by a few millimetres at most
    (``StreamingLifter(precision="bf16")`` computes the same).

    Returns a tensor on the model's device, or a numpy array when ``keypoints2d`` was one.
    The output is root-relative in the model's units (metres for posekernels' models).
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    if precision != "float32" and not fold:
        raise ValueError(f"precision={precision!r} runs the folded plan; it needs fold=True")
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
    largest = float(kp.abs().max())
    if largest > MAX_COORDINATE:
        raise ValueError(f"keypoints2d has coordinates up to {largest:.4g}, beyond "
                         f"+-{MAX_COORDINATE:g}: expected normalised screen coordinates "
                         "(x / w * 2 - [1, h / w], about [-1, 1]); pixels? normalise them with "
                         "posekernels.data.normalize_screen_coordinates (fill_missing treats "
                         "such joints as missing)")

    skeleton = getattr(model, "skeleton", None)
    left, right = (skeleton.left, skeleton.right) if skeleton is not None else ((), ())
    windowed = hasattr(model, "receptive_field")
    sampling = window_sampling(receptive_field, causal, fps,
                               model_rate(model, model_fps) if fps is not None else 50.0)
    smooth = smoothing_config(smoothing, pose_rate(model, fps, model_fps))
    out = torch.empty(frames, kp.shape[1], 3, device=kp.device, dtype=kp.dtype)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            runner = model
            if fold:
                plan = build_plan(model, precision=precision)
                if isinstance(plan, GLAGCNPlan):  # (B, T, V, 2) -> (B, V, 3) directly
                    runner = _WindowToPose(plan)
            for start in range(0, frames, batch_size):
                idx = torch.arange(start, min(frames, start + batch_size), device=kp.device)
                windows = sampling.gather(kp, idx, frames - 1)  # (B, T, V, 2)
                pred = _predict(runner, windows, windowed)
                if flip_tta:
                    mirrored = _predict(runner, flip_pose(windows, left, right), windowed)
                    pred = (pred + flip_pose(mirrored, left, right)) / 2
                out[idx] = pred
    finally:
        model.train(was_training)
    if smooth is not None:
        out = one_euro(out, smooth)
    return out.cpu().numpy() if as_numpy else out
