"""Causal smoothing of lifted poses: the One Euro filter (Casiez, Roussel and Vogel, CHI 2012).

A live lifter's poses jitter from frame to frame (detector noise goes straight through a causal
window). The One Euro filter is an exponential smoother whose cut-off frequency rises with the
speed of the signal: slow motion is smoothed hard (jitter gone), fast motion lightly (little
lag). Per joint, with ``dt = 1 / fps``::

    alpha(fc)  = 1 / (1 + 1 / (2 pi fc dt))
    dx         = (x_t - xhat_{t-1}) / dt
    dxhat_t    = dxhat_{t-1} + alpha(d_cutoff) (dx - dxhat_{t-1})
    fc         = min_cutoff + beta |dxhat_t|          (|.|: the joint's 3D speed, m/s)
    xhat_t     = xhat_{t-1} + alpha(fc) (x_t - xhat_{t-1})

and ``xhat_0 = x_0``, ``dxhat_0 = 0``. It uses the past only, so it adds no algorithmic delay;
the same recurrence runs offline (:func:`one_euro`, and ``lift_sequence(smoothing=...)``) and
live (:class:`OneEuroFilter`, which :class:`~posekernels.stream.StreamingLifter` applies with
``smoothing=...``), so that streamed and offline results still agree.

The defaults (``SMOOTHING_DEFAULTS``) were chosen on CMU training motion (subject 02's clips),
never on the validation subject; benchmarks/RESULTS.md has what they do there.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = ["OneEuroFilter", "SmoothingConfig", "one_euro", "SMOOTHING_DEFAULTS",
           "smoothing_config"]


@dataclass(frozen=True)
class SmoothingConfig:
    """One Euro parameters: ``min_cutoff`` (Hz, the cut-off at rest), ``beta`` (s/m: how fast
    the cut-off rises with speed), ``d_cutoff`` (Hz, the cut-off of the speed estimate), and
    ``fps`` (the rate of the poses; None: the lifter's camera rate, else 50)."""

    min_cutoff: float = 1.0
    beta: float = 0.0
    d_cutoff: float = 1.0
    fps: float | None = None

    def __post_init__(self):
        for name in ("min_cutoff", "beta", "d_cutoff"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"smoothing {name} must be a finite number, got {v!r}")
        if not self.min_cutoff > 0 or not self.d_cutoff > 0 or self.beta < 0:
            raise ValueError(f"smoothing needs min_cutoff > 0, d_cutoff > 0 and beta >= 0, got "
                             f"min_cutoff={self.min_cutoff}, beta={self.beta}, "
                             f"d_cutoff={self.d_cutoff}")
        if self.fps is not None and (isinstance(self.fps, bool)
                                     or not isinstance(self.fps, (int, float))
                                     or not 1 <= self.fps <= 1000):
            raise ValueError(f"smoothing fps must be a frame rate in [1, 1000], got {self.fps!r}")

    def to_dict(self) -> dict:
        return asdict(self)


SMOOTHING_DEFAULTS = SmoothingConfig(min_cutoff=2.0, beta=32.0, d_cutoff=1.0)


def smoothing_config(value, fps: float | None = None) -> SmoothingConfig | None:
    """``None``/``False`` -> no smoothing; ``True`` -> the defaults; a :class:`SmoothingConfig`
    or a dict of its fields -> that. ``fps`` fills in a config's missing rate."""
    if value is None or value is False:
        return None
    if value is True:
        cfg = SMOOTHING_DEFAULTS
    elif isinstance(value, SmoothingConfig):
        cfg = value
    elif isinstance(value, dict):
        unknown = sorted(set(value) - {"min_cutoff", "beta", "d_cutoff", "fps"})
        if unknown:
            raise ValueError(f"smoothing: unknown key(s) {unknown}; valid: min_cutoff, beta, "
                             "d_cutoff, fps")
        cfg = SmoothingConfig(**value)
    else:
        raise TypeError(f"smoothing must be None, a bool, a dict or a SmoothingConfig, got "
                        f"{type(value).__name__}")
    if cfg.fps is None:
        cfg = SmoothingConfig(cfg.min_cutoff, cfg.beta, cfg.d_cutoff,
                              float(fps) if fps is not None else 50.0)
    return cfg


def _alpha(cutoff, dt: float):
    """The smoothing factor of cut-off ``cutoff`` (Hz; a number or a tensor) at step ``dt``."""
    return 1.0 / (1.0 + 1.0 / (2.0 * math.pi * cutoff * dt))


class OneEuroFilter:
    """The One Euro filter over S independent streams of poses (V, 3), on a device.

    ``step(poses (n, V, 3), streams (n,) int array)`` filters one pose per listed stream (in
    place of nothing: it returns the filtered poses) and advances those streams; ``reset``
    starts streams over. State: the last filtered pose and speed estimate per stream.
    """

    def __init__(self, config: SmoothingConfig, num_streams: int, num_joints: int,
                 device=None, dtype=torch.float32):
        if config.fps is None:
            raise ValueError("OneEuroFilter needs config.fps (see smoothing_config)")
        self.config = config
        self.dt = 1.0 / float(config.fps)
        self.alpha_d = _alpha(config.d_cutoff, self.dt)
        self.x = torch.zeros(num_streams, num_joints, 3, device=device, dtype=dtype)
        self.dx = torch.zeros_like(self.x)
        self.started = np.zeros(num_streams, dtype=bool)

    def reset(self, streams=None) -> None:
        if streams is None:
            self.started[:] = False
        else:
            self.started[np.asarray(streams)] = False

    def step(self, poses: Tensor, streams: np.ndarray) -> Tensor:
        streams = np.asarray(streams, dtype=np.int64)
        sel = torch.from_numpy(streams).to(self.x.device)
        x = poses.to(self.x.device, self.x.dtype)
        prev, dprev = self.x.index_select(0, sel), self.dx.index_select(0, sel)
        new_x, new_dx = _one_euro_step(x, prev, dprev, self.config, self.dt, self.alpha_d)
        fresh = torch.from_numpy(~self.started[streams]).to(self.x.device)[:, None, None]
        new_x = torch.where(fresh, x, new_x)
        new_dx = torch.where(fresh, torch.zeros_like(new_dx), new_dx)
        self.x.index_copy_(0, sel, new_x)
        self.dx.index_copy_(0, sel, new_dx)
        self.started[streams] = True
        return new_x


def _one_euro_step(x, prev, dprev, cfg: SmoothingConfig, dt: float, alpha_d: float):
    dx = (x - prev) / dt
    dxhat = dprev + alpha_d * (dx - dprev)
    speed = torch.linalg.vector_norm(dxhat, dim=-1, keepdim=True)  # (n, V, 1) m/s
    a = _alpha(cfg.min_cutoff + cfg.beta * speed, dt)
    return prev + a * (x - prev), dxhat


def one_euro(poses, config=True, fps: float | None = None):
    """Offline One Euro filtering of a pose sequence (F, V, 3) (numpy in, numpy out; a tensor
    keeps its dtype and device): the recurrence :class:`OneEuroFilter` applies live.
    ``config``: as :func:`smoothing_config` (True: the defaults); ``fps``: the poses' rate when
    the config does not give one (default 50)."""
    cfg = smoothing_config(config, fps)
    as_numpy = not isinstance(poses, Tensor)
    p = torch.as_tensor(np.asarray(poses) if as_numpy else poses)
    if p.dim() != 3 or p.shape[-1] != 3:
        raise ValueError(f"poses must have shape (F, V, 3), got {tuple(p.shape)}")
    if cfg is None or p.shape[0] == 0:
        return poses
    filt = OneEuroFilter(cfg, 1, p.shape[1], device=p.device, dtype=p.dtype)
    out = torch.empty_like(p)
    zero = np.zeros(1, dtype=np.int64)
    for f in range(p.shape[0]):
        out[f] = filt.step(p[f:f + 1], zero)[0]
    return out.numpy() if as_numpy else out
