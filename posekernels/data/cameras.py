"""Cameras: quaternions, world <-> camera transforms, projection with lens distortion,
screen-coordinate normalisation.

Conventions
-----------
* Quaternions are ``(w, x, y, z)``. A camera's ``orientation`` rotates camera coordinates into
  world coordinates, and its ``translation`` is the camera centre in world coordinates (metres),
  so ``X_cam = R^T (X_world - t)`` and ``X_world = R X_cam + t`` with ``R`` the matrix of
  ``orientation`` (the Human3.6M / VideoPose3D convention).
* Camera frame: x right, y down, z forward (along the optical axis); pixels ``u = fx * x' + cx``,
  ``v = fy * y' + cy`` with ``(x', y')`` the distorted normalised coordinates.
* Distortion models (radial ``k = (k1, k2, k3)``, tangential ``p = (p1, p2)``, ``r2 = x^2 + y^2``,
  ``radial = 1 + k1 r2 + k2 r2^2 + k3 r2^3``):

  - ``"brown"`` (Brown-Conrady, as OpenCV): ``x' = x radial + 2 p1 x y + p2 (r2 + 2 x^2)``,
    ``y' = y radial + p1 (r2 + 2 y^2) + 2 p2 x y``;
  - ``"h36m"`` (the form used with the Human3.6M calibration in VideoPose3D):
    ``s = radial + p1 x + p2 y``, ``x' = x s + p1 r2``, ``y' = y s + p2 r2``.

* Screen normalisation: ``normalize_screen_coordinates(X, w, h) = X / w * 2 - [1, h / w]`` maps
  the image width to [-1, 1] and keeps the aspect ratio; :func:`image_coordinates` inverts it.

All array functions accept numpy arrays or torch tensors (any leading shape) and return the
same kind.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from typing import Any, Mapping

import numpy as np

__all__ = [
    "Camera", "quaternion_to_matrix", "matrix_to_quaternion", "qrot", "world_to_camera",
    "camera_to_world", "project_to_2d", "undistort_points", "normalize_screen_coordinates",
    "image_coordinates",
    "look_at_camera", "load_cameras_json", "save_cameras_json",
]

DISTORTION_MODELS = ("brown", "h36m")


def _is_torch(x: Any) -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover
        return False
    return isinstance(x, torch.Tensor)


def _like(value: Any, ref: Any):
    """``value`` (array-like) as the same kind, dtype and device as ``ref``."""
    if _is_torch(ref):
        import torch

        return torch.as_tensor(np.asarray(value), dtype=ref.dtype, device=ref.device)
    return np.asarray(value, dtype=np.result_type(ref.dtype, np.float32))


def _sum_last(x):
    return x.sum(-1, keepdim=True) if _is_torch(x) else x.sum(-1, keepdims=True)


def _cat_last(parts):
    if _is_torch(parts[0]):
        import torch

        return torch.cat(parts, -1)
    return np.concatenate(parts, -1)


def _cross(a, b):
    if _is_torch(a):
        import torch

        return torch.linalg.cross(a, b, dim=-1)
    return np.cross(a, b)


# --------------------------------------------------------------------------------------------
# Quaternions
# --------------------------------------------------------------------------------------------

def quaternion_to_matrix(q) -> np.ndarray:
    """Rotation matrix (..., 3, 3) of unit quaternion(s) ``(w, x, y, z)`` (normalised first)."""
    q = np.asarray(q, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = np.moveaxis(q, -1, 0)
    m = np.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], axis=-1)
    return m.reshape(q.shape[:-1] + (3, 3))


def matrix_to_quaternion(m) -> np.ndarray:
    """Unit quaternion ``(w, x, y, z)`` (with ``w >= 0``) of a 3x3 rotation matrix."""
    m = np.asarray(m, dtype=np.float64)
    if m.shape != (3, 3):
        raise ValueError(f"expected a 3x3 matrix, got {m.shape}")
    tr = np.trace(m)
    # Pick the numerically largest component first.
    cands = np.array([tr, m[0, 0], m[1, 1], m[2, 2]])
    i = int(np.argmax(cands))
    if i == 0:
        s = math.sqrt(max(tr + 1.0, 0.0)) * 2
        q = [0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
    elif i == 1:
        s = math.sqrt(max(1.0 + m[0, 0] - m[1, 1] - m[2, 2], 0.0)) * 2
        q = [(m[2, 1] - m[1, 2]) / s, 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s]
    elif i == 2:
        s = math.sqrt(max(1.0 + m[1, 1] - m[0, 0] - m[2, 2], 0.0)) * 2
        q = [(m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s]
    else:
        s = math.sqrt(max(1.0 + m[2, 2] - m[0, 0] - m[1, 1], 0.0)) * 2
        q = [(m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s]
    q = np.asarray(q)
    q /= np.linalg.norm(q)
    return -q if q[0] < 0 else q


def qrot(q, v):
    """Rotate vectors ``v`` (..., 3) by quaternion(s) ``q`` (..., 4) ``(w, x, y, z)``.

    ``q`` broadcasts against ``v``'s leading dimensions (a single quaternion of shape (4,) is
    fine). Uses ``v + 2 w (u x v) + 2 u x (u x v)`` with ``u = (x, y, z)``; ``q`` must be unit.
    """
    q = _like(q, v)
    while q.ndim < v.ndim:
        q = q[None]
    w, u = q[..., :1], q[..., 1:]
    uv = _cross(u, v)
    uuv = _cross(u, uv)
    return v + 2 * (w * uv + uuv)


def _qinv(q):
    q = np.asarray(q, dtype=np.float64)
    return q * np.array([1, -1, -1, -1])


def world_to_camera(X, orientation, translation):
    """World points (..., 3) to camera coordinates: ``R^T (X - t)``."""
    t = _like(translation, X)
    return qrot(_qinv(np.asarray(orientation, dtype=np.float64) /
                      np.linalg.norm(orientation)), X - t)


def camera_to_world(X, orientation, translation):
    """Camera points (..., 3) to world coordinates: ``R X + t``."""
    t = _like(translation, X)
    return qrot(np.asarray(orientation, dtype=np.float64) / np.linalg.norm(orientation), X) + t


# --------------------------------------------------------------------------------------------
# Projection and normalisation
# --------------------------------------------------------------------------------------------

def project_to_2d(X, focal_length, center, radial_distortion=(0.0, 0.0, 0.0),
                  tangential_distortion=(0.0, 0.0), model: str = "brown"):
    """Project camera-frame points (..., 3) to pixels (..., 2) with lens distortion.

    ``focal_length`` = (fx, fy), ``center`` = (cx, cy) in pixels; see the module docstring for
    the two distortion models. Points must be in front of the camera (z > 0); nothing is
    clamped.
    """
    if model not in DISTORTION_MODELS:
        raise ValueError(f"unknown distortion model {model!r}; use one of {DISTORTION_MODELS}")
    f = _like(focal_length, X)
    c = _like(center, X)
    k = [float(v) for v in radial_distortion]
    p1, p2 = (float(v) for v in tangential_distortion)
    if len(k) != 3:
        raise ValueError("radial_distortion needs 3 coefficients (k1, k2, k3)")
    xy = X[..., :2] / X[..., 2:3]
    x, y = xy[..., 0:1], xy[..., 1:2]
    r2 = _sum_last(xy * xy)
    radial = 1 + k[0] * r2 + k[1] * r2 ** 2 + k[2] * r2 ** 3
    if model == "brown":
        xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
        yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    else:
        s = radial + p1 * x + p2 * y
        xd = x * s + p1 * r2
        yd = y * s + p2 * r2
    return _cat_last([xd, yd]) * f + c


def _undistort(xy, target, k, t, model, tol, max_iterations):
    """:func:`undistort_points`' iteration (float64 arrays)."""
    ones = np.ones(xy.shape[:-1] + (1,))
    active = np.isfinite(target).all(-1)
    for _ in range(max_iterations):
        d = project_to_2d(np.concatenate([xy, ones], -1), (1.0, 1.0), (0.0, 0.0), k, t,
                          model) - target
        active &= ~(np.abs(d).max(-1) <= tol)
        if not active.any():
            break
        xy = np.where(active[..., None], xy - d, xy)
    d = project_to_2d(np.concatenate([xy, ones], -1), (1.0, 1.0), (0.0, 0.0), k, t,
                      model) - target
    xy[~(np.abs(d).max(-1) <= tol * 10)] = np.nan
    return xy


def undistort_points(uv, focal_length, center, radial_distortion=(0.0, 0.0, 0.0),
                     tangential_distortion=(0.0, 0.0), model: str = "brown", *,
                     tol: float = 1e-9, max_iterations: int = 100):
    """Pixels (..., 2) to undistorted normalised image coordinates (..., 2): ``(x, y)`` with
    ``project_to_2d([x, y, 1]) == uv``, the inverse of :func:`project_to_2d` along the rays.

    Without distortion this is ``(uv - c) / f``. With it, fixed-point iteration on the
    residual (``xy += (uv - c) / f - distort(xy)``, computed in float64) until every point is
    within ``tol`` (in normalised units) or ``max_iterations`` pass; a point where it has not
    converged by then (distortion too strong to invert there) comes back NaN. NaN inputs give
    NaN."""
    if model not in DISTORTION_MODELS:
        raise ValueError(f"unknown distortion model {model!r}; use one of {DISTORTION_MODELS}")
    if uv.shape[-1] != 2:
        raise ValueError(f"uv: expected (..., 2) pixel coordinates, got shape {tuple(uv.shape)}")
    torch_in = _is_torch(uv)
    a = uv.detach().cpu().double().numpy() if torch_in else np.asarray(uv, dtype=np.float64)
    f = np.asarray(focal_length, dtype=np.float64)
    c = np.asarray(center, dtype=np.float64)
    target = (a - c) / f
    k = [float(v) for v in radial_distortion]
    t = [float(v) for v in tangential_distortion]
    xy = target.copy()
    if any(k) or any(t):
        with np.errstate(over="ignore", invalid="ignore"):  # diverging points become NaN
            xy = _undistort(xy, target, k, t, model, tol, max_iterations)
    if torch_in:
        import torch

        return torch.as_tensor(xy, dtype=uv.dtype if uv.is_floating_point() else torch.float64,
                               device=uv.device)
    return xy


def normalize_screen_coordinates(X, w: float, h: float):
    """Pixels (..., 2) to normalised screen coordinates: ``X / w * 2 - [1, h / w]``."""
    if X.shape[-1] != 2:
        raise ValueError(f"expected (..., 2) coordinates, got shape {tuple(X.shape)}")
    return X / w * 2 - _like([1.0, h / w], X)


def image_coordinates(X, w: float, h: float):
    """Inverse of :func:`normalize_screen_coordinates`: ``(X + [1, h / w]) * w / 2``."""
    if X.shape[-1] != 2:
        raise ValueError(f"expected (..., 2) coordinates, got shape {tuple(X.shape)}")
    return (X + _like([1.0, h / w], X)) * w / 2


# --------------------------------------------------------------------------------------------
# Camera objects
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Camera:
    """A calibrated camera (see the module docstring for every convention).

    ``translation`` is the camera centre in world coordinates, in metres.
    """
    name: str
    width: int
    height: int
    focal_length: tuple[float, float]
    center: tuple[float, float]
    orientation: tuple[float, float, float, float] = (1.0, 0.0, 0.0, 0.0)
    translation: tuple[float, float, float] = (0.0, 0.0, 0.0)
    radial_distortion: tuple[float, float, float] = (0.0, 0.0, 0.0)
    tangential_distortion: tuple[float, float] = (0.0, 0.0)
    distortion_model: str = "brown"

    def __post_init__(self):
        def tup(name, n):
            v = tuple(float(x) for x in getattr(self, name))
            if len(v) != n or not all(math.isfinite(x) for x in v):
                raise ValueError(f"camera {self.name!r}: {name} needs {n} finite numbers")
            object.__setattr__(self, name, v)

        tup("focal_length", 2)
        tup("center", 2)
        tup("orientation", 4)
        tup("translation", 3)
        tup("radial_distortion", 3)
        tup("tangential_distortion", 2)
        if np.linalg.norm(self.orientation) < 1e-8:
            raise ValueError(f"camera {self.name!r}: orientation quaternion is zero")
        if self.distortion_model not in DISTORTION_MODELS:
            raise ValueError(f"camera {self.name!r}: unknown distortion model "
                             f"{self.distortion_model!r}")
        if int(self.width) <= 0 or int(self.height) <= 0:
            raise ValueError(f"camera {self.name!r}: image size must be positive")
        object.__setattr__(self, "width", int(self.width))
        object.__setattr__(self, "height", int(self.height))

    @property
    def rotation(self) -> np.ndarray:
        """Camera-to-world rotation matrix (columns: camera x, y, z axes in world)."""
        return quaternion_to_matrix(self.orientation)

    def world_to_camera(self, X):
        return world_to_camera(X, self.orientation, self.translation)

    def camera_to_world(self, X):
        return camera_to_world(X, self.orientation, self.translation)

    def project(self, X_cam):
        """Camera-frame points (..., 3) to pixels (..., 2)."""
        return project_to_2d(X_cam, self.focal_length, self.center, self.radial_distortion,
                             self.tangential_distortion, self.distortion_model)

    def project_world(self, X):
        return self.project(self.world_to_camera(X))

    def unproject(self, uv):
        """Pixels (..., 2) to the undistorted normalised image coordinates (..., 2) of their
        rays, ``(x / z, y / z)`` in the camera frame (:func:`undistort_points`)."""
        return undistort_points(uv, self.focal_length, self.center, self.radial_distortion,
                                self.tangential_distortion, self.distortion_model)

    def normalize(self, uv):
        return normalize_screen_coordinates(uv, self.width, self.height)

    def denormalize(self, xy):
        return image_coordinates(xy, self.width, self.height)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Camera":
        return cls(**dict(d))


def look_at_camera(name: str, position, target, *, width: int, height: int, focal: float,
                   up=(0.0, 0.0, 1.0), center=None) -> Camera:
    """A distortion-free pinhole camera at ``position`` looking at ``target`` (world, metres).

    Its image x axis is horizontal (perpendicular to ``up``) and y points down; the principal
    point defaults to the image centre.
    """
    pos = np.asarray(position, dtype=np.float64)
    fwd = np.asarray(target, dtype=np.float64) - pos
    if np.linalg.norm(fwd) < 1e-9:
        raise ValueError(f"camera {name!r}: position and target coincide")
    fwd /= np.linalg.norm(fwd)
    right = np.cross(fwd, np.asarray(up, dtype=np.float64))
    if np.linalg.norm(right) < 1e-9:
        raise ValueError(f"camera {name!r}: viewing direction is parallel to up")
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    rot = np.stack([right, down, fwd], axis=1)
    if center is None:
        center = (width / 2.0, height / 2.0)
    return Camera(name, width, height, (focal, focal), tuple(center),
                  tuple(matrix_to_quaternion(rot)), tuple(pos))


def save_cameras_json(path: str | os.PathLike, cameras: Mapping[str, list[Camera]]) -> None:
    """Write ``{subject: [Camera, ...]}`` as JSON (schema of :func:`load_cameras_json`)."""
    from .io import atomic_write_text

    doc = {"units": "m", "subjects": {s: [c.to_dict() for c in cams]
                                      for s, cams in cameras.items()}}
    atomic_write_text(path, json.dumps(doc, indent=1))


def load_cameras_json(path: str | os.PathLike) -> dict[str, list[Camera]]:
    """Read per-subject camera calibrations from JSON.

    Schema: ``{"units": "m" | "mm", "subjects": {subject: [camera, ...]}}`` where each camera is
    a dict of :class:`Camera` fields (``name``, ``width``, ``height``, ``focal_length``,
    ``center``, ``orientation``, ``translation``, optional ``radial_distortion``,
    ``tangential_distortion``, ``distortion_model``). ``units`` applies to ``translation``,
    which is converted to metres. Cameras are listed in the order of the 2D file's camera lists.
    Use this to supply Human3.6M / HumanEva calibrations (this package ships none).
    """
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot read camera JSON ({exc})") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("subjects"), dict):
        raise ValueError(f"{path}: expected an object with a 'subjects' dict")
    units = doc.get("units", "m")
    if units not in ("m", "mm"):
        raise ValueError(f"{path}: units must be 'm' or 'mm', got {units!r}")
    scale = 1e-3 if units == "mm" else 1.0
    out: dict[str, list[Camera]] = {}
    for subject, cams in doc["subjects"].items():
        if not isinstance(cams, list) or not cams:
            raise ValueError(f"{path}: subjects[{subject!r}] must be a non-empty list")
        lst = []
        for i, c in enumerate(cams):
            if not isinstance(c, dict):
                raise ValueError(f"{path}: subjects[{subject!r}][{i}] must be an object")
            c = dict(c)
            c.setdefault("name", f"{subject}/{i}")
            if "translation" in c:
                c["translation"] = [float(v) * scale for v in c["translation"]]
            try:
                lst.append(Camera.from_dict(c))
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{path}: subjects[{subject!r}][{i}]: {exc}") from exc
        out[str(subject)] = lst
    return out
