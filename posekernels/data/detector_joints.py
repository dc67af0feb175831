"""2D inputs as a COCO keypoint detector and :mod:`posekernels.adapters` make them.

The lifters' h36m17 joints are motion-capture joints (CMU: thorax = ``Neck1``, neck/nose = the
``Head`` joint inside the neck, head = the end site of ``Head``). A live pipeline gives COCO-17
points (nose, eyes, ears, shoulders, ...), and :func:`posekernels.adapters.coco17_to_h36m17`
builds h36m17 from them: thorax = the shoulders' midpoint, neck/nose = the nose, head = the
ears' (or eyes') centre pushed away from the thorax. Those land elsewhere than the mocap joints
(on the CMU skeleton the shoulders' midpoint lies a few centimetres below and behind ``Neck1``,
and the nose about 10 cm in front of the ``Head`` joint), so a lifter trained only on mocap
joints sees a systematic shift in some of its inputs on a real camera. This module makes those
inputs from motion capture, to measure the shift's cost and to train with it:

* :data:`FACE_SITES`: nose, eyes and ears at nominal adult positions relative to the ``Head``
  joint, in the head's frame (metres; x the subject's left, y up, z forward). CMU BVH files hold
  no face markers, so these are approximations (about 4 cm above the ``Head`` joint and 10.5 cm
  in front of it for the nose; eyes 3.2 cm either side, 7 cm up, 8.5 cm forward; ears 7.5 cm
  either side, 6 cm up, 1 cm back), not measurements.
* :func:`add_face_sites`: those points as end sites of a parsed BVH's ``Head`` joint (CMU rest
  pose: y up, the subject facing +z, its left +x), so forward kinematics moves them with the
  head; :data:`FACE_SITE_NAMES` are their names for :func:`posekernels.data.bvh.import_bvh`'s
  joint table, after the 17 h36m17 entries.
* :data:`COCO17_FROM_H36M17_FACE`: the COCO-17 points as indices into those 22 points, and
  :func:`detector_view`: a projected sequence of 22 points turned into the h36m17 input a COCO
  detector and the adapter give (detector noise, if any, added to the COCO points first).
* :class:`DetectorJoints`: the same for training windows, vectorised in torch: face points
  built from the h36m17 joints alone (the head's up axis from the ``Head`` joint to its end
  site, its left axis from the shoulders, turned by a random yaw), with the face's geometry
  drawn per window around the nominal one, and the adapter's rules applied in 2D.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Mapping

import numpy as np
import torch

from ..adapters import HEAD_EXTENSION, coco17_to_h36m17
from .bvh import CMU_UNIT_METRES, Bvh, BvhJoint
from .io import replace_from_mapping

__all__ = ["FACE_SITES", "FACE_SITE_NAMES", "COCO17_FROM_H36M17_FACE", "COCO17_NOISE_SCALE",
           "COCO17_LEFT", "COCO17_RIGHT", "KEYPOINT_STYLES", "add_face_sites", "detector_view",
           "DetectorJoints", "detector_joints_from_dict", "adapter_h36m17"]

#: Nominal face points relative to the ``Head`` joint (metres; x left, y up, z forward).
FACE_SITES: dict[str, tuple[float, float, float]] = {
    "Nose": (0.0, 0.04, 0.105),
    "LeftEye": (0.032, 0.07, 0.085),
    "RightEye": (-0.032, 0.07, 0.085),
    "LeftEar": (0.075, 0.06, -0.01),
    "RightEar": (-0.075, 0.06, -0.01),
}
FACE_SITE_NAMES: tuple[str, ...] = tuple(FACE_SITES)

# h36m17 indices used below
_PELVIS, _RHIP, _LHIP, _SPINE, _THORAX, _NECK, _HEAD = 0, 1, 4, 7, 8, 9, 10
_LSHO, _RSHO = 11, 14

#: COCO-17 order (nose, eyes, ears, shoulders, elbows, wrists, hips, knees, ankles; left before
#: right) as indices into the 22 points h36m17 + :data:`FACE_SITE_NAMES`.
COCO17_FROM_H36M17_FACE: tuple[int, ...] = (17, 18, 19, 20, 21, 11, 14, 12, 15, 13, 16,
                                            4, 1, 5, 2, 6, 3)
#: Detector-noise scale per COCO-17 point (as DetectorNoise's h36m17 scale: head 0.8, elbows and
#: knees 1.25, wrists and ankles 1.5).
COCO17_NOISE_SCALE: tuple[float, ...] = (0.8, 0.8, 0.8, 0.8, 0.8, 1.0, 1.0, 1.25, 1.25, 1.5, 1.5,
                                         1.0, 1.0, 1.25, 1.25, 1.5, 1.5)
COCO17_LEFT: tuple[int, ...] = (1, 3, 5, 7, 9, 11, 13, 15)
COCO17_RIGHT: tuple[int, ...] = (2, 4, 6, 8, 10, 12, 14, 16)

#: The 2D input styles of evaluation: mocap joints as they are, or through a COCO detector.
KEYPOINT_STYLES = ("h36m17", "coco17")


def add_face_sites(bvh: Bvh, head: str = "Head", unit: float = CMU_UNIT_METRES) -> Bvh:
    """``bvh`` with :data:`FACE_SITES` added as end sites of joint ``head`` (in place; returned).

    The offsets assume the CMU rest pose (y up, the subject facing +z, its left +x) and are
    converted to BVH units (``unit`` metres each). Raises ValueError when ``head`` is missing or
    the sites are there already."""
    try:
        h = bvh.index(head)
    except KeyError:
        raise ValueError(f"{bvh.source}: no joint {head!r} to attach the face sites to") from None
    have = set(bvh.names) & set(FACE_SITE_NAMES)
    if have:
        raise ValueError(f"{bvh.source}: already has joints {sorted(have)}")
    for name, offset in FACE_SITES.items():
        bvh.joints.append(BvhJoint(name, h, np.asarray(offset, dtype=np.float64) / unit, (), 0,
                                   True))
    return bvh


def detector_view(uv22: np.ndarray, noise=None, key=None, width: int = 1000) -> np.ndarray:
    """The h36m17 pixels (F, 17, 2) that a COCO detector and the adapter give for a projected
    sequence ``uv22`` (F, 22, 2) of h36m17 + face points: the COCO-17 points taken from it,
    ``noise`` (a :class:`posekernels.data.DetectorNoise`, e.g. with :data:`COCO17_NOISE_SCALE`)
    added to them when given, then :func:`posekernels.adapters.coco17_to_h36m17`."""
    uv22 = np.asarray(uv22, dtype=np.float64)
    if uv22.ndim != 3 or uv22.shape[1:] != (22, 2):
        raise ValueError(f"uv22 must be (frames, 22, 2) (h36m17 + face points), got {uv22.shape}")
    coco = uv22[:, list(COCO17_FROM_H36M17_FACE)]
    if noise is not None:
        coco = noise(coco, key, width=width)
    return coco17_to_h36m17(coco)[0]


def adapter_h36m17(uv: torch.Tensor, face: torch.Tensor, use_eyes: torch.Tensor | None = None
                   ) -> torch.Tensor:
    """:func:`posekernels.adapters.coco17_to_h36m17` in torch on h36m17 pixels ``uv`` (..., 17, 2)
    and the face points ``face`` (..., 5, 2) (:data:`FACE_SITE_NAMES` order): hips, knees, feet
    and arms are COCO's as they are; pelvis, spine, thorax, neck/nose and head follow the
    adapter's rules. ``use_eyes`` (broadcast to ``uv.shape[:-2]``) takes the eyes' centre for the
    head instead of the ears' (the adapter does when the eyes are the more confident)."""
    out = uv.clone()
    pelvis = (uv[..., _LHIP, :] + uv[..., _RHIP, :]) / 2
    thorax = (uv[..., _LSHO, :] + uv[..., _RSHO, :]) / 2
    centre = (face[..., 3, :] + face[..., 4, :]) / 2
    if use_eyes is not None:
        eyes = (face[..., 1, :] + face[..., 2, :]) / 2
        centre = torch.where(use_eyes[..., None], eyes, centre)
    out[..., _PELVIS, :] = pelvis
    out[..., _SPINE, :] = (pelvis + thorax) / 2
    out[..., _THORAX, :] = thorax
    out[..., _NECK, :] = face[..., 0, :]
    out[..., _HEAD, :] = centre + HEAD_EXTENSION * (centre - thorax)
    return out


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-9)


@dataclass(frozen=True)
class DetectorJoints:
    """Training windows whose 2D input follows a COCO detector and the adapter
    (:func:`adapter_h36m17`), drawn per window with probability ``prob``.

    The face points are built from the window's h36m17 world joints: the head's up axis runs
    from the ``Head`` joint (9) to its end site (10), its left axis is the shoulders' (11 - 14)
    made orthogonal to it, forward is left x up; the head is then turned about its up axis by a
    yaw uniform in +-``yaw_deg`` (one per window: a head turned from the trunk). Each window's
    face is :data:`FACE_SITES` with every point moved up or down by one draw uniform in
    +-``shift_up`` metres, forward offsets scaled by a draw in 1 +- ``scale_forward`` and
    sideways offsets by one in 1 +- ``scale_side``. With probability ``eyes_prob`` the head is
    made from the eyes' centre instead of the ears'.
    """
    prob: float = 0.5
    yaw_deg: float = 30.0
    shift_up: float = 0.03
    scale_forward: float = 0.2
    scale_side: float = 0.15
    eyes_prob: float = 0.5

    def __post_init__(self):
        limits = {"prob": 1.0, "yaw_deg": 90.0, "shift_up": 0.1, "scale_forward": 0.5,
                  "scale_side": 0.5, "eyes_prob": 1.0}
        for f in fields(self):
            v = getattr(self, f.name)
            hi = limits[f.name]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= hi:
                raise ValueError(f"detector_joints: {f.name} must be a number in [0, {hi}], got "
                                 f"{v!r}")
            object.__setattr__(self, f.name, float(v))

    def draw(self, n: int, generator: torch.Generator | None = None,
             device: torch.device | str | None = None) -> torch.Tensor:
        """(n,) bool: which windows take the detector's joints."""
        return torch.rand(n, generator=generator, device=device) < self.prob

    def face(self, world: torch.Tensor, generator: torch.Generator | None = None
             ) -> torch.Tensor:
        """Face points (N, T, 5, 3) (:data:`FACE_SITE_NAMES` order) of world windows
        (N, T, 17, 3) (metres, z up), one face geometry and head yaw per window."""
        n = world.shape[0]
        dev, dt = world.device, world.dtype

        def uniform(half, *shape):
            return (2 * torch.rand(*shape, generator=generator, device=dev, dtype=dt) - 1) * half

        up = _unit(world[..., _HEAD, :] - world[..., _NECK, :])
        side = world[..., _LSHO, :] - world[..., _RSHO, :]
        left = _unit(side - (side * up).sum(-1, keepdim=True) * up)
        fwd = torch.linalg.cross(left, up, dim=-1)
        yaw = uniform(math.radians(self.yaw_deg), n)[:, None, None]
        left, fwd = (torch.cos(yaw) * left + torch.sin(yaw) * fwd,
                     torch.cos(yaw) * fwd - torch.sin(yaw) * left)
        base = torch.tensor(list(FACE_SITES.values()), device=dev, dtype=dt)       # (5, 3)
        off = base.expand(n, 5, 3).clone()
        off[..., 0] = off[..., 0] * (1 + uniform(self.scale_side, n))[:, None]
        off[..., 1] = off[..., 1] + uniform(self.shift_up, n)[:, None]
        off[..., 2] = off[..., 2] * (1 + uniform(self.scale_forward, n))[:, None]
        axes = torch.stack([left, up, fwd], -2)                                   # (N, T, 3, 3)
        return world[..., _NECK, None, :] + torch.einsum("nfk,ntkc->ntfc", off, axes)

    def apply(self, uv: torch.Tensor, face_uv: torch.Tensor, which: torch.Tensor,
              generator: torch.Generator | None = None) -> torch.Tensor:
        """h36m17 pixels (N, T, 17, 2) with the windows ``which`` (N,) made as the adapter makes
        them from the projected face points ``face_uv`` (N, T, 5, 2)."""
        eyes = torch.rand(uv.shape[0], generator=generator, device=uv.device) < self.eyes_prob
        det = adapter_h36m17(uv, face_uv, eyes[:, None])
        return torch.where(which[:, None, None, None], det, uv)


def detector_joints_from_dict(d: Mapping[str, Any] | None, where: str = "detector_joints"
                              ) -> DetectorJoints:
    """A :class:`DetectorJoints` with the given fields changed (errors name ``where`` and the
    key)."""
    return replace_from_mapping(DetectorJoints(), d, where, "DetectorJoints fields")
