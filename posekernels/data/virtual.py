"""Virtual cameras: turn 3D world motion (e.g. imported CMU BVH) into 2D inputs and camera-frame
3D targets, the ground-truth-2D setting, optionally with detector-like 2D noise.

Default rig (:func:`default_rig`)
---------------------------------
Deterministic, in the Z-up world frame of :mod:`posekernels.data.bvh` (metres):

* 4 distortion-free pinhole cameras ``vcam0`` .. ``vcam3`` at azimuths 45, 135, 225 and 315
  degrees about the vertical axis (the corners of a square, like the Human3.6M rig),
  5.5 m horizontally from the origin, 1.6 m above the floor, all looking at (0, 0, 1.0);
* image 1000 x 1000 pixels, focal length 1150 px (fx = fy), principal point (500, 500).

Each sequence is re-centred before projection (``recenter="sequence"``): it is shifted
horizontally so that the mean x-y position of its root over the sequence is at the origin (the
height is kept), so every sequence is seen from the same distances. ``"first"`` uses the first
frame's root instead; ``"none"`` keeps the world positions. A subject who roams far from its
mean position can leave the image: coordinates outside [0, 1000) are kept as they are.

Camera frame: x right, y down, z forward; see :mod:`posekernels.data.cameras`.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from ..skeletons import SKELETONS
from .cameras import Camera, look_at_camera
from .formats import PoseSequence

__all__ = [
    "DEFAULT_RIG", "RigSpec", "default_rig", "recenter", "project_sequence", "project_sequences",
    "positions_2d_from_sequences", "DetectorNoise",
]

_H36M17 = SKELETONS["h36m17"]


@dataclass(frozen=True)
class RigSpec:
    """Parameters of a ring of identical cameras looking at a common point (see module doc)."""
    azimuths_deg: tuple[float, ...] = (45.0, 135.0, 225.0, 315.0)
    distance: float = 5.5
    height: float = 1.6
    target: tuple[float, float, float] = (0.0, 0.0, 1.0)
    width: int = 1000
    height_px: int = 1000
    focal: float = 1150.0
    prefix: str = "vcam"

    def cameras(self) -> list[Camera]:
        cams = []
        for i, az in enumerate(self.azimuths_deg):
            a = np.deg2rad(az)
            pos = (self.target[0] + self.distance * np.cos(a),
                   self.target[1] + self.distance * np.sin(a), self.height)
            cams.append(look_at_camera(f"{self.prefix}{i}", pos, self.target, width=self.width,
                                       height=self.height_px, focal=self.focal))
        return cams


DEFAULT_RIG = RigSpec()


def default_rig() -> list[Camera]:
    """The four cameras of the documented default rig."""
    return DEFAULT_RIG.cameras()


def recenter(positions: np.ndarray, mode: str = "sequence", root: int = 0) -> np.ndarray:
    """Shift a (frames, joints, 3) world sequence horizontally (x, y) as described above."""
    if mode == "none":
        return positions
    if mode == "sequence":
        shift = positions[:, root, :2].mean(axis=0)
    elif mode == "first":
        shift = positions[0, root, :2]
    else:
        raise ValueError(f"recenter mode must be 'sequence', 'first' or 'none', got {mode!r}")
    out = np.array(positions, dtype=np.float64, copy=True)
    out[..., :2] -= shift
    return out


def project_sequence(positions: np.ndarray, cameras: Sequence[Camera], *,
                     recenter_mode: str = "sequence", root: int = 0, min_depth: float = 0.3,
                     name: str = "sequence") -> list[tuple[np.ndarray, np.ndarray]]:
    """Project one world sequence (frames, joints, 3) through each camera.

    Returns one ``(uv, cam3d)`` pair per camera: pixels (frames, joints, 2) and camera-frame
    positions (frames, joints, 3), both float64. Raises ValueError if a joint comes closer than
    ``min_depth`` metres to a camera's image plane (or behind it).
    """
    pos = recenter(np.asarray(positions, dtype=np.float64), recenter_mode, root)
    out = []
    for cam in cameras:
        c3 = cam.world_to_camera(pos)
        zmin = float(c3[..., 2].min())
        if zmin < min_depth:
            raise ValueError(f"{name}: a joint is {zmin:.2f} m in front of camera {cam.name!r} "
                             f"(minimum {min_depth} m); re-centre the sequence or use a wider rig")
        out.append((cam.project(c3), c3))
    return out


@dataclass
class DetectorNoise:
    """Seeded 2D noise that imitates a keypoint detector (pixels of the camera's image).

    * Temporally correlated Gaussian jitter: per joint and axis an AR(1) process with lag-one
      correlation ``rho`` and stationary standard deviation ``sigma_px * joint_scale[j] *
      width / 1000`` (so ``sigma_px`` is in pixels of a 1000-pixel-wide image).
    * Outliers: each joint in each frame, with probability ``outlier_prob``, is displaced by
      ``outlier_px`` times a factor in [0.5, 1.5] (scaled like sigma) in a random direction.
    * Left/right swaps: in each frame, with probability ``swap_prob``, one left/right joint pair
      (from ``left`` / ``right``) is exchanged, as detectors confuse limbs.

    The defaults (sigma 4 px, mean jitter about 5 px) are of the order of a fine-tuned detector's
    error on Human3.6M at 1000 px. For h36m17 the jitter is scaled per joint: 1.0 for the torso
    and hips, 1.25 at elbows and knees, 1.5 at wrists and feet, 0.8 at the head joints.
    Noise is a pure function of ``(seed, key)``: the same sequence key gets the same noise.
    """
    sigma_px: float = 4.0
    rho: float = 0.7
    outlier_prob: float = 0.003
    outlier_px: float = 40.0
    swap_prob: float = 0.002
    seed: int = 0
    joint_scale: Sequence[float] | None = None
    left: Sequence[int] = _H36M17.left
    right: Sequence[int] = _H36M17.right

    H36M17_SCALE = (1.0, 1.0, 1.25, 1.5, 1.0, 1.25, 1.5, 1.0, 1.0, 0.8, 0.8,
                    1.0, 1.25, 1.5, 1.0, 1.25, 1.5)

    def rng_for(self, key) -> np.random.Generator:
        digest = zlib.crc32(repr(key).encode("utf-8"))
        return np.random.default_rng([int(self.seed) & 0xFFFFFFFF, digest])

    def __call__(self, uv: np.ndarray, key=None, *, width: int = 1000) -> np.ndarray:
        """Noisy copy of pixel coordinates ``uv`` (frames, joints, 2)."""
        uv = np.asarray(uv, dtype=np.float64)
        nf, nj, _ = uv.shape
        rng = self.rng_for(key)
        if self.joint_scale is not None:
            scale = np.asarray(self.joint_scale, dtype=np.float64)
        elif nj == 17:
            scale = np.asarray(self.H36M17_SCALE)
        else:
            scale = np.ones(nj)
        if scale.shape != (nj,):
            raise ValueError(f"joint_scale has {scale.size} entries for {nj} joints")
        if not 0 <= self.rho < 1:
            raise ValueError(f"rho must be in [0, 1), got {self.rho}")
        sigma = self.sigma_px * width / 1000.0 * scale[None, :, None]
        white = rng.standard_normal((nf, nj, 2))
        jitter = np.empty_like(white)
        jitter[0] = white[0]
        innov = np.sqrt(1.0 - self.rho ** 2)
        for t in range(1, nf):  # AR(1) recursion over frames (vectorised over joints)
            jitter[t] = self.rho * jitter[t - 1] + innov * white[t]
        out = uv + jitter * sigma
        hit = rng.random((nf, nj)) < self.outlier_prob
        if hit.any():
            n = int(hit.sum())
            ang = rng.uniform(0, 2 * np.pi, n)
            mag = self.outlier_px * width / 1000.0 * rng.uniform(0.5, 1.5, n)
            out[hit] += np.stack([np.cos(ang), np.sin(ang)], -1) * mag[:, None]
        pairs = [(l, r) for l, r in zip(self.left, self.right) if l < nj and r < nj]
        if pairs and self.swap_prob > 0:
            frames = np.flatnonzero(rng.random(nf) < self.swap_prob)
            which = rng.integers(0, len(pairs), frames.size)
            for t, k in zip(frames, which):
                l, r = pairs[k]
                out[t, [l, r]] = out[t, [r, l]]
        return out


def project_sequences(positions_3d: Mapping[str, Mapping[str, np.ndarray]],
                      cameras: Sequence[Camera] | Callable[[str, str, np.ndarray],
                                                           Sequence[Camera]] | None = None, *,
                      recenter_mode: str = "sequence", root: int = 0,
                      noise: DetectorNoise | None = None, fps: float | None = None,
                      subjects: Iterable[str] | None = None) -> list[PoseSequence]:
    """Make lifting pairs from ``positions_3d[subject][action]`` world sequences.

    Returns one :class:`PoseSequence` per (subject, action, camera) with ``positions_2d`` in
    pixels (noisy if ``noise`` is given; the clean projection is kept in ``extra["clean_2d"]``)
    and ``positions_3d`` in the camera frame (metres, absolute: make them root-relative when
    batching). ``cameras`` defaults to :func:`default_rig`; it may also be a function
    ``(subject, action, positions) -> cameras`` giving each clip its own cameras (then each
    sequence records its camera as ``extra["camera"]``, :meth:`Camera.to_dict`).
    """
    per_clip = callable(cameras)
    fixed = None if per_clip else (default_rig() if cameras is None else list(cameras))
    keep = None if subjects is None else set(subjects)
    out = []
    for subject in sorted(positions_3d):
        if keep is not None and subject not in keep:
            continue
        for action in sorted(positions_3d[subject]):
            pos = positions_3d[subject][action]
            cams = list(cameras(subject, action, pos)) if per_clip else fixed
            views = project_sequence(pos, cams, recenter_mode=recenter_mode, root=root,
                                     name=f"{subject}/{action}")
            for cam, (uv, c3) in zip(cams, views):
                extra = {"camera": cam.to_dict()} if per_clip else {}
                if noise is not None:
                    extra["clean_2d"] = uv
                    uv = noise(uv, (subject, action, cam.name), width=cam.width)
                out.append(PoseSequence(subject, action, cam.name, c3, uv,
                                        (cam.width, cam.height), fps, None, extra))
    return out


def positions_2d_from_sequences(sequences: Iterable[PoseSequence]
                                ) -> dict[str, dict[str, list[np.ndarray]]]:
    """Collect projected sequences into the VideoPose3D ``positions_2d[subject][action]`` layout
    (cameras in the order they appear), for :func:`posekernels.data.save_positions_2d`."""
    out: dict[str, dict[str, list[np.ndarray]]] = {}
    for seq in sequences:
        out.setdefault(seq.subject, {}).setdefault(seq.action, []).append(
            np.asarray(seq.positions_2d, dtype=np.float32))
    return out
