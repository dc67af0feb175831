"""Random cameras: a fresh camera for every training sample, and fixed unseen cameras for evaluation.

A lifter trained through one fixed rig learns that rig (its heights, distances, focal length and
image size) instead of the task. Here each training window is projected through its own camera,
drawn on the training device and vectorised over the batch, from :class:`CameraDistribution`
(every range is a field; the defaults are the documented distribution):

* **azimuth** of the camera around the subject, uniform over ``azimuth_deg`` (the full circle);
* camera **height** above the floor (world z = 0), uniform in ``height`` (0.3-3.0 m);
* horizontal **distance** from the subject's root, uniform in ``distance`` (2-9 m), raised where
  needed so that a ``fit_height`` (2.0 m) tall subject fits in the image's vertical field of
  view (a tight portrait camera cannot stand 2 m from a person);
* **look-at point**: the root (pelvis) of the window's reference frame (the centre frame of a
  centred window, the last frame of a causal one), offset in the image plane so that the pelvis
  lands uniformly within ``subject_offset`` (0.35) of the half-width and half-height from the
  image centre (people are not always in the middle of the picture), plus a Gaussian jitter of
  ``target_jitter`` (0.05 m) per axis;
* **roll** about the optical axis, uniform in ``roll_deg`` (+-5 degrees);
* **horizontal field of view** uniform in ``hfov_deg`` (40-90 degrees), hence the focal length
  ``f = (w / 2) / tan(hfov / 2)`` (square pixels, fx = fy);
* **image size** drawn uniformly from ``image_sizes`` (640x480, 1280x720, 1920x1080, 1080x1920,
  1000x1000, 3840x2160);
* **principal point** at the image centre plus a uniform jitter of ``center_jitter`` (2 %) of
  the width and height;
* optional **radial distortion** (Brown model, k1 and k2 uniform in ``k1`` and ``k2``; both
  (0, 0) by default).

A camera that would see a joint of the window closer than ``min_depth`` (0.5 m) or behind it (a
subject running at the camera) is moved back along its optical axis until it does not.
Inputs are normalised exactly as at inference (``x / w * 2 - [1, h / w]``); targets are
root-relative positions in that camera's frame (x right, y down, z forward, metres).

Evaluation (:func:`evaluation_cameras`) draws ``num_cameras`` static cameras per clip from
:data:`EVALUATION_CAMERAS` (the same ranges, with no subject offset: each camera looks at the
clip's mean root position at pelvis height, from far enough that every joint of the clip is at
least 1 m in front of it) with a numpy generator seeded by ``(camera_seed, clip name)``; the
default seed :data:`EVALUATION_SEED` is used by no training run (training draws from torch's
generator, reseeded per epoch from the training seed).
"""
from __future__ import annotations

import dataclasses
import math
import zlib
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from .cameras import Camera, matrix_to_quaternion
from .io import replace_from_mapping

__all__ = [
    "CameraDistribution", "DEFAULT_CAMERAS", "EVALUATION_CAMERAS", "EVALUATION_SEED",
    "CameraBatch", "sample_cameras", "project_windows", "evaluation_cameras",
    "camera_distribution_from_dict",
]

IMAGE_SIZES = ((640, 480), (1280, 720), (1920, 1080), (1080, 1920), (1000, 1000), (3840, 2160))
EVALUATION_SEED = 20261130


@dataclass(frozen=True)
class CameraDistribution:
    """Ranges of the random cameras (see the module docstring). Ranges are ``(low, high)``."""
    azimuth_deg: tuple[float, float] = (0.0, 360.0)
    height: tuple[float, float] = (0.3, 3.0)
    distance: tuple[float, float] = (2.0, 9.0)
    hfov_deg: tuple[float, float] = (40.0, 90.0)
    roll_deg: tuple[float, float] = (-5.0, 5.0)
    image_sizes: tuple[tuple[int, int], ...] = IMAGE_SIZES
    center_jitter: float = 0.02
    subject_offset: float = 0.35
    target_jitter: float = 0.05
    k1: tuple[float, float] = (0.0, 0.0)
    k2: tuple[float, float] = (0.0, 0.0)
    fit_height: float = 2.0
    min_depth: float = 0.5

    def __post_init__(self):
        def rng(name, lo=-math.inf, hi=math.inf):
            v = getattr(self, name)
            try:
                a, b = (float(x) for x in v)
            except (TypeError, ValueError):
                raise ValueError(f"camera distribution: {name} must be a (low, high) pair of "
                                 f"numbers, got {v!r}") from None
            if not (math.isfinite(a) and math.isfinite(b)) or a > b or a < lo or b > hi:
                raise ValueError(f"camera distribution: {name} must satisfy {lo} <= low <= high "
                                 f"<= {hi}, got {v!r}")
            object.__setattr__(self, name, (a, b))

        def num(name, lo, hi):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
                raise ValueError(f"camera distribution: {name} must be a number in [{lo}, {hi}],"
                                 f" got {v!r}")
            object.__setattr__(self, name, float(v))

        rng("azimuth_deg", -720.0, 720.0)
        rng("height", -10.0, 100.0)
        rng("distance", 0.5, 1000.0)
        rng("hfov_deg", 1.0, 170.0)
        rng("roll_deg", -180.0, 180.0)
        rng("k1", -1.0, 1.0)
        rng("k2", -1.0, 1.0)
        num("center_jitter", 0.0, 0.25)
        num("subject_offset", 0.0, 0.9)
        num("target_jitter", 0.0, 1.0)
        num("fit_height", 0.0, 10.0)
        num("min_depth", 0.05, 10.0)
        sizes = self.image_sizes
        try:
            sizes = tuple((int(w), int(h)) for w, h in sizes)
        except (TypeError, ValueError):
            raise ValueError("camera distribution: image_sizes must be a list of [width, "
                             f"height] pairs, got {self.image_sizes!r}") from None
        if not sizes or any(not (16 <= w <= 16384 and 16 <= h <= 16384) for w, h in sizes):
            raise ValueError("camera distribution: image_sizes must be a non-empty list of "
                             f"[width, height] pairs in [16, 16384], got {self.image_sizes!r}")
        object.__setattr__(self, "image_sizes", sizes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        return {k: [list(s) for s in v] if k == "image_sizes" else
                (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


DEFAULT_CAMERAS = CameraDistribution()
EVALUATION_CAMERAS = CameraDistribution(subject_offset=0.0, target_jitter=0.0)


def camera_distribution_from_dict(d: Mapping[str, Any] | None,
                                  where: str = "camera_distribution",
                                  base: CameraDistribution = DEFAULT_CAMERAS
                                  ) -> CameraDistribution:
    """``base`` (the training distribution unless given) with the fields of ``d`` changed
    (unknown keys and bad values raise ValueError naming ``where`` and the key)."""
    return replace_from_mapping(base, d, where, "camera ranges")


@dataclass
class CameraBatch:
    """N pinhole cameras (torch tensors on one device): world-to-camera rotation ``R`` (N, 3, 3)
    (rows: camera x, y, z axes in world), centre ``position`` (N, 3), ``focal`` (N,) px,
    ``center`` (N, 2) px, ``size`` (N, 2) (width, height), radial ``k`` (N, 2)."""
    R: torch.Tensor
    position: torch.Tensor
    focal: torch.Tensor
    center: torch.Tensor
    size: torch.Tensor
    k: torch.Tensor

    def world_to_camera(self, X: torch.Tensor) -> torch.Tensor:
        """World points (N, ..., 3) to camera coordinates."""
        shape = X.shape
        Xf = X.reshape(shape[0], -1, 3) - self.position[:, None, :]
        return torch.bmm(Xf, self.R.transpose(1, 2)).reshape(shape)

    def project(self, Xc: torch.Tensor) -> torch.Tensor:
        """Camera points (N, ..., 3) to pixels (N, ..., 2) (radial distortion included)."""
        n = Xc.shape[0]
        view = (n,) + (1,) * (Xc.dim() - 2)
        xy = Xc[..., :2] / Xc[..., 2:3]
        r2 = (xy * xy).sum(-1, keepdim=True)
        k1 = self.k[:, 0].reshape(view + (1,))
        k2 = self.k[:, 1].reshape(view + (1,))
        radial = 1 + k1 * r2 + k2 * r2 * r2
        return xy * radial * self.focal.reshape(view + (1,)) + self.center.reshape(view + (2,))

    def normalize(self, uv: torch.Tensor) -> torch.Tensor:
        """Pixels (N, ..., 2) to normalised screen coordinates ``x / w * 2 - [1, h / w]``."""
        n = uv.shape[0]
        view = (n,) + (1,) * (uv.dim() - 2)
        w = self.size[:, 0].reshape(view + (1,))
        h = self.size[:, 1].reshape(view + (1,))
        off = torch.cat([torch.ones_like(w), h / w], -1)
        return uv / w * 2 - off

    def to_cameras(self, prefix: str = "rand") -> list[Camera]:
        """The cameras as :class:`posekernels.data.Camera` objects (float64, CPU)."""
        out = []
        for i in range(self.R.shape[0]):
            rot = self.R[i].double().cpu().numpy().T  # camera-to-world
            w, h = (int(round(float(v))) for v in self.size[i])
            out.append(Camera(f"{prefix}{i}", w, h, (float(self.focal[i]),) * 2,
                              tuple(float(v) for v in self.center[i]),
                              tuple(matrix_to_quaternion(rot)),
                              tuple(float(v) for v in self.position[i]),
                              (float(self.k[i, 0]), float(self.k[i, 1]), 0.0)))
        return out


def _uniform(lo_hi, n, gen, device, dtype):
    lo, hi = lo_hi
    return lo + (hi - lo) * torch.rand(n, generator=gen, device=device, dtype=dtype)


def sample_cameras(look_at: torch.Tensor, dist: CameraDistribution = DEFAULT_CAMERAS, *,
                   generator: torch.Generator | None = None) -> CameraBatch:
    """One random camera per row of ``look_at`` (N, 3): world points (metres, z up) that the
    cameras are placed around (the subjects' roots); see the module docstring."""
    if look_at.dim() != 2 or look_at.shape[1] != 3:
        raise ValueError(f"look_at must be (N, 3), got {tuple(look_at.shape)}")
    n, dev, dt = look_at.shape[0], look_at.device, look_at.dtype
    g = generator
    sizes = torch.tensor(dist.image_sizes, device=dev, dtype=dt)
    size = sizes[torch.randint(0, len(dist.image_sizes), (n,), generator=g, device=dev)]
    w, h = size[:, 0], size[:, 1]
    hfov = torch.deg2rad(_uniform(dist.hfov_deg, n, g, dev, dt))
    tan_h = torch.tan(hfov / 2)
    focal = (w / 2) / tan_h
    tan_v = (h / 2) / focal
    # distance: uniform in the range, at least far enough for the fit height to fit vertically
    d_fit = (dist.fit_height / 2) / tan_v
    lo = torch.clamp(d_fit, min=dist.distance[0])
    hi = torch.maximum(lo, torch.full_like(lo, dist.distance[1]))
    d = lo + (hi - lo) * torch.rand(n, generator=g, device=dev, dtype=dt)
    az = torch.deg2rad(_uniform(dist.azimuth_deg, n, g, dev, dt))
    cam_z = _uniform(dist.height, n, g, dev, dt)
    pos = torch.stack([look_at[:, 0] + d * torch.cos(az), look_at[:, 1] + d * torch.sin(az),
                       cam_z], -1)
    target = look_at + dist.target_jitter * torch.randn(n, 3, generator=g, device=dev, dtype=dt)
    fwd = target - pos
    up = torch.tensor([0.0, 0.0, 1.0], device=dev, dtype=dt).expand(n, 3)
    fwd = fwd / fwd.norm(dim=-1, keepdim=True)
    right = torch.linalg.cross(fwd, up)
    right = right / right.norm(dim=-1, keepdim=True).clamp_min(1e-9)
    down = torch.linalg.cross(fwd, right)
    # subject offset: turn the camera so that the look-at point lands at (u, v) * offset of the
    # half image from the centre (u, v uniform in [-1, 1])
    if dist.subject_offset > 0:
        u = (2 * torch.rand(n, generator=g, device=dev, dtype=dt) - 1) * dist.subject_offset
        v = (2 * torch.rand(n, generator=g, device=dev, dtype=dt) - 1) * dist.subject_offset
        # direction of the look-at point in the turned camera: (u tan_h, v tan_v, 1)
        a = torch.stack([u * tan_h, v * tan_v, torch.ones_like(u)], -1)
        a = a / a.norm(dim=-1, keepdim=True)
        # build the new axes: rotate the frame so that fwd (old) maps to a in the new frame
        R_old = torch.stack([right, down, fwd], 1)            # rows: axes in world
        R_turn = _rotation_between(torch.tensor([0.0, 0.0, 1.0], device=dev, dtype=dt)
                                   .expand(n, 3), a)          # maps e_z to a
        # world-to-camera: x_cam = R_turn @ (R_old @ x) so the target direction becomes a
        R = torch.bmm(R_turn, R_old)
    else:
        R = torch.stack([right, down, fwd], 1)
    roll = torch.deg2rad(_uniform(dist.roll_deg, n, g, dev, dt))
    c, s = torch.cos(roll), torch.sin(roll)
    zero, one = torch.zeros_like(c), torch.ones_like(c)
    R_roll = torch.stack([torch.stack([c, -s, zero], -1), torch.stack([s, c, zero], -1),
                          torch.stack([zero, zero, one], -1)], 1)
    R = torch.bmm(R_roll, R)
    jit = (2 * torch.rand(n, 2, generator=g, device=dev, dtype=dt) - 1) * dist.center_jitter
    center = size / 2 + jit * size
    k = torch.stack([_uniform(dist.k1, n, g, dev, dt), _uniform(dist.k2, n, g, dev, dt)], -1)
    return CameraBatch(R, pos, focal, center, size, k)


def _rotation_between(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (N, 3, 3) that map unit vectors a (N, 3) onto unit vectors b (N, 3)
    (Rodrigues; a and b are never opposite here: b has a positive z and a = e_z)."""
    v = torch.linalg.cross(a, b)
    c = (a * b).sum(-1)
    n = a.shape[0]
    vx = torch.zeros(n, 3, 3, device=a.device, dtype=a.dtype)
    vx[:, 0, 1], vx[:, 0, 2] = -v[:, 2], v[:, 1]
    vx[:, 1, 0], vx[:, 1, 2] = v[:, 2], -v[:, 0]
    vx[:, 2, 0], vx[:, 2, 1] = -v[:, 1], v[:, 0]
    eye = torch.eye(3, device=a.device, dtype=a.dtype).expand(n, 3, 3)
    return eye + vx + torch.bmm(vx, vx) / (1 + c).reshape(n, 1, 1)


def project_windows(world: torch.Tensor, cams: CameraBatch, *, root: int = 0,
                    min_depth: float | None = None):
    """Project world windows (N, T, V, 3) through ``cams`` (one camera per window).

    Returns ``(uv, cam3d, cams)``: pixels (N, T, V, 2), camera-frame positions (N, T, V, 3)
    (absolute, metres) and the cameras, moved back along their optical axes where a joint was
    closer than ``min_depth`` metres (or behind the camera).
    """
    Xc = cams.world_to_camera(world)
    if min_depth is not None:
        zmin = Xc[..., 2].reshape(Xc.shape[0], -1).amin(1)
        push = torch.clamp(min_depth - zmin, min=0.0)
        if bool((push > 0).any()):
            # moving the centre back by `push` along the optical axis adds `push` to every depth
            cams = dataclasses.replace(cams, position=cams.position - push[:, None] * cams.R[:, 2])
            Xc = Xc + torch.stack([torch.zeros_like(push), torch.zeros_like(push), push], -1
                                  ).reshape(-1, *([1] * (Xc.dim() - 2)), 3)
    return cams.project(Xc), Xc, cams


def evaluation_cameras(positions: np.ndarray, num_cameras: int, *, seed: int = EVALUATION_SEED,
                       key: str = "", dist: CameraDistribution = EVALUATION_CAMERAS, root: int = 0,
                       min_depth: float = 1.0, prefix: str = "rand") -> list[Camera]:
    """``num_cameras`` static cameras for one world clip (F, V, 3) (metres, z up), drawn from
    ``dist`` with a generator seeded by ``(seed, key)``; see the module docstring."""
    if isinstance(num_cameras, bool) or not isinstance(num_cameras, (int, np.integer)) \
            or num_cameras < 1:
        raise ValueError(f"num_cameras must be a positive integer, got {num_cameras!r}")
    pos = np.asarray(positions, dtype=np.float64)
    if pos.ndim != 3 or pos.shape[-1] != 3 or pos.shape[0] == 0:
        raise ValueError(f"positions must be (frames, joints, 3), got {pos.shape}")
    digest = zlib.crc32(key.encode("utf-8"))
    g = torch.Generator().manual_seed((int(seed) & 0xFFFFFFFF) * 1_000_003 + digest)
    centre = pos[:, root].mean(0)
    look_at = torch.tensor(centre, dtype=torch.float64).expand(int(num_cameras), 3).contiguous()
    cams = sample_cameras(look_at, dist, generator=g)
    world = torch.tensor(pos, dtype=torch.float64).expand(int(num_cameras), *pos.shape)
    _, _, cams = project_windows(world, cams, root=root, min_depth=min_depth)
    return cams.to_cameras(prefix)
