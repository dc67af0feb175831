"""Where the lifted person stands: root-relative poses placed in a calibrated camera's frame.

A lifter gives each frame's pose relative to its root joint, in metres, in the camera's axes
(x right, y down, z forward). With the camera's intrinsics and the frame's 2D keypoints in
pixels, the root's position follows from the pose's own size: the translation ``t`` that makes
the pose ``P + t`` project onto the keypoints. For a joint with pose ``(X, Y, Z)`` and ray
``(x, y)`` (undistorted normalised image coordinates, :meth:`posekernels.data.Camera.unproject`)
the projection condition ``(X + tx) = x (Z + tz)``, ``(Y + ty) = y (Z + tz)`` is linear in ``t``;
:func:`place_in_camera` solves it per frame by least squares over the usable joints, then takes
Gauss-Newton steps on the reprojection errors themselves (the linear rows are those errors times
depth, with the noisy ``x, y`` multiplying the unknown depth, which biases that solution towards
the camera under 2D noise), each joint weighted by a Cauchy function of its residual scaled by
the frame's median residual (``robust``), so that a wrong or swapped keypoint barely moves it.

The distance comes out in the units of the pose: a lifter that makes a person 5 % too small
puts them 5 % too close. Frames with fewer than two usable joints, or whose solution would put a
joint behind the camera, get NaN.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["place_in_camera", "MIN_DEPTH"]

ROBUST_C = 2.385  # Cauchy weights' scale, in robust standard deviations of the residuals
MIN_DEPTH = 0.05  # metres: a solution with a joint nearer the camera than this is refused (NaN)


def _float64(value: Any) -> np.ndarray:
    """A tensor or array-like as a float64 numpy array."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().double().numpy()
    return np.asarray(value, dtype=np.float64)


def _as_array(value: Any, name: str, last: int) -> np.ndarray:
    try:
        a = _float64(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected an array of numbers, got "
                         f"{type(value).__name__}") from None
    if a.ndim < 2 or a.shape[-1] != last:
        raise ValueError(f"{name}: expected shape (..., V, {last}), got {tuple(a.shape)}")
    return a


def _masked_median(a: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Median over the last axis of the entries where ``mask`` holds (0 where none do)."""
    n = mask.sum(-1)
    srt = np.sort(np.where(mask, a, np.inf), axis=-1)
    lo = np.take_along_axis(srt, np.maximum((n - 1) // 2, 0)[..., None], -1)[..., 0]
    hi = np.take_along_axis(srt, np.maximum(n // 2, 0).clip(max=a.shape[-1] - 1)[..., None],
                            -1)[..., 0]
    return np.where(n > 0, 0.5 * (lo + hi), 0.0)


def place_in_camera(poses3d, keypoints2d, camera, *, scores=None, min_score: float = 0.3,
                    iterations: int = 5, robust: bool = True):
    """Camera-frame positions (..., V, 3) of root-relative poses seen by ``camera``.

    ``poses3d`` (..., V, 3): root-relative poses in metres, camera axes (what
    :func:`posekernels.lift_sequence` and :class:`posekernels.stream.StreamingLifter` return);
    ``keypoints2d`` (..., V, 2): the same frames' 2D keypoints in pixels of ``camera`` (a
    :class:`posekernels.data.Camera`: its focal length, principal point and distortion are
    used), the same joints in the same order; ``scores`` (..., V), optional: joints scored below
    ``min_score`` are not used, nor are non-finite keypoints. ``iterations``: Gauss-Newton
    steps after the linear solution (0: the linear least squares alone); ``robust``: Cauchy
    weights on the reprojection residuals (False: plain least squares).

    Returns the poses moved by each frame's solved translation (numpy float64 for numpy input,
    a tensor of the poses' dtype and device for tensor input); NaN for frames with fewer than
    two usable joints, or whose solution puts a joint less than :data:`MIN_DEPTH` in front of
    the camera. The root joint's row is the person's position.
    """
    from ..data.cameras import Camera

    if not isinstance(camera, Camera):
        raise ValueError(f"camera: expected a posekernels.data.Camera, got "
                         f"{type(camera).__name__}")
    if isinstance(iterations, bool) or not isinstance(iterations, int) or \
            not 0 <= iterations <= 20:
        raise ValueError(f"iterations: expected an integer in [0, 20], got {iterations!r}")
    p = _as_array(poses3d, "poses3d", 3)
    uv = _as_array(keypoints2d, "keypoints2d", 2)
    if uv.shape[:-1] != p.shape[:-1]:
        raise ValueError(f"keypoints2d: shape {tuple(uv.shape)} does not match poses3d "
                         f"{tuple(p.shape)} (the same frames and joints, 2 values each)")
    ok = np.isfinite(uv).all(-1) & np.isfinite(p).all(-1)
    if scores is not None:
        sc = _float64(scores)
        if sc.shape != p.shape[:-1]:
            raise ValueError(f"scores: expected shape {tuple(p.shape[:-1])}, got "
                             f"{tuple(sc.shape)}")
        ok &= sc >= min_score
    xy = camera.unproject(np.where(ok[..., None], uv, 0.0))
    ok &= np.isfinite(xy).all(-1)
    xy = np.where(ok[..., None], xy, 0.0)
    pz = np.where(ok[..., None], p, 0.0)
    x, y = xy[..., 0], xy[..., 1]
    X, Y, Z = pz[..., 0], pz[..., 1], pz[..., 2]
    enough = ok.sum(-1) >= 2
    eye = np.broadcast_to(np.eye(3), p.shape[:-2] + (3, 3))

    def solve(h: np.ndarray, g: np.ndarray, scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Batched h @ d = g where h is well conditioned (NaN elsewhere), and that mask."""
        good = enough & (np.abs(np.linalg.det(np.where(enough[..., None, None], h, eye)))
                         > 1e-12 * np.maximum(scale, 1e-300) ** 3)
        d = np.linalg.solve(np.where(good[..., None, None], h, eye),
                            np.where(good[..., None], g, 0.0)[..., None])[..., 0]
        return np.where(good[..., None], d, np.nan), good

    # 1. linear: rows [1, 0, -x] t = x Z - X and [0, 1, -y] t = y Z - Y per usable joint
    w = ok.astype(np.float64)
    rx, ry = x * Z - X, y * Z - Y
    h = np.zeros(p.shape[:-2] + (3, 3))
    h[..., 0, 0] = h[..., 1, 1] = w.sum(-1)
    h[..., 0, 2] = h[..., 2, 0] = -(w * x).sum(-1)
    h[..., 1, 2] = h[..., 2, 1] = -(w * y).sum(-1)
    h[..., 2, 2] = (w * (x * x + y * y)).sum(-1)
    g = np.stack([(w * rx).sum(-1), (w * ry).sum(-1), -(w * (x * rx + y * ry)).sum(-1)], -1)
    t, _ = solve(h, g, w.sum(-1))
    # 2. Gauss-Newton on the reprojection residuals (the linear rows are them times depth, and
    # their noisy x, y multiply the unknown depth: that solution comes out biased towards the
    # camera under 2D noise), with Cauchy weights when robust
    for _ in range(iterations):
        depth = Z + t[..., 2:3]
        front = ok & (depth > 0)
        inv = 1.0 / np.where(front, depth, 1.0)
        u, v = (X + t[..., 0:1]) * inv, (Y + t[..., 1:2]) * inv
        ex, ey = u - x, v - y
        w = front.astype(np.float64)
        if robust:
            res = np.hypot(ex, ey)
            med = _masked_median(res, front)[..., None]
            scale = ROBUST_C * 1.4826 * np.maximum(med, 1e-6)
            w = w / (1.0 + (res / scale) ** 2)
        # residual derivatives: d ex / d t = inv * [1, 0, -u], d ey / d t = inv * [0, 1, -v]
        wi = w * inv * inv
        h = np.zeros(p.shape[:-2] + (3, 3))
        h[..., 0, 0] = h[..., 1, 1] = wi.sum(-1)
        h[..., 0, 2] = h[..., 2, 0] = -(wi * u).sum(-1)
        h[..., 1, 2] = h[..., 2, 1] = -(wi * v).sum(-1)
        h[..., 2, 2] = (wi * (u * u + v * v)).sum(-1)
        wr = w * inv
        g = -np.stack([(wr * ex).sum(-1), (wr * ey).sum(-1),
                       -(wr * (u * ex + v * ey)).sum(-1)], -1)
        d, good = solve(h, g, wi.sum(-1))
        t = np.where(good[..., None], t + np.nan_to_num(d), t)
    out = p + t[..., None, :]
    depth_ok = np.where(ok, out[..., 2], np.inf).min(-1) >= MIN_DEPTH
    out = np.where((enough & depth_ok)[..., None, None], out, np.nan)
    if isinstance(poses3d, torch.Tensor):
        dtype = poses3d.dtype if poses3d.is_floating_point() else torch.float64
        return torch.as_tensor(out, dtype=dtype, device=poses3d.device)
    return out
