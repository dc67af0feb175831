"""Lifted h36m17 poses written as BVH: joint rotations for animation tools.

Animation tools (Blender, MotionBuilder, game engines) take motion as a skeleton with per-joint
rotations, not as joint positions. :func:`poses_to_bvh` turns a sequence of h36m17 positions
into one:

* the skeleton: the h36m17 tree with each bone's length the median over the sequence, in a rest
  pose standing upright (BVH's Y up), facing +Z, arms out sideways (a T-pose), the left side at
  +X; joints ``Hips`` (the root: a position and a rotation per frame), ``RightUpLeg`` /
  ``LeftUpLeg`` (hips), ``RightLeg`` / ``LeftLeg`` (knees), ``Spine``, ``Neck`` (the thorax),
  ``Head`` (h36m17's neck/nose joint), ``LeftArm`` / ``RightArm`` (shoulders), ``LeftForeArm`` /
  ``RightForeArm`` (elbows); the feet, the head top and the wrists are end sites;
* rotations: a joint with several children (the root, the thorax) takes the frame of its
  children (x from the right hip or shoulder to the left one, y towards the spine or the head,
  z = x cross y: the way the body faces), the rest offsets of those children being their mean
  positions in it; a joint with one child the smallest rotation from where its parent's
  rotation carries the child to where the child is (no twist about the bone beyond the
  parent's: positions do not show it);
* channels ``Xposition Yposition Zposition Zrotation Yrotation Xrotation`` for the root and
  ``Zrotation Yrotation Xrotation`` for the other joints (rotation = Rz Ry Rx, degrees),
  unwrapped over time so that the curves do not jump by 360 degrees.

So every limb and spine bone points exactly where the input's bone points and has its median
length; the positions come back exactly (:func:`posekernels.data.bvh.forward_kinematics`) when
the input's bones keep their lengths and the pelvis and shoulder triangles stay rigid. Motion
capture mapped to h36m17 bends a little there (CMU's lower back and clavicles: the legs come
back within 1 mm, the upper body within 15-21 mm on subjects 02, 05, 07 and 09), and a lifter's
poses change their bone lengths from frame to frame, which a fixed skeleton cannot.
"""
from __future__ import annotations

import math
import os

import numpy as np

from ..skeletons import SKELETONS

__all__ = ["poses_to_bvh", "save_bvh", "H36M17_BVH_JOINTS", "BVH_UNITS"]

_PARENTS = SKELETONS["h36m17"].parents
# the BVH joint name of every non-leaf h36m17 joint
H36M17_BVH_JOINTS = {0: "Hips", 1: "RightUpLeg", 2: "RightLeg", 4: "LeftUpLeg", 5: "LeftLeg",
                     7: "Spine", 8: "Neck", 9: "Head", 11: "LeftArm", 12: "LeftForeArm",
                     14: "RightArm", 15: "RightForeArm"}
# rest direction of the bone ending at each joint (Y up, facing +Z, left at +X)
_REST = {1: (-1, 0, 0), 2: (0, -1, 0), 3: (0, -1, 0), 4: (1, 0, 0), 5: (0, -1, 0),
         6: (0, -1, 0), 7: (0, 1, 0), 8: (0, 1, 0), 9: (0, 1, 0), 10: (0, 1, 0),
         11: (1, 0, 0), 12: (1, 0, 0), 13: (1, 0, 0), 14: (-1, 0, 0), 15: (-1, 0, 0),
         16: (-1, 0, 0)}
# joints with several children: (left child, right child, upper child)
_TRIANGLES = {0: (4, 1, 7), 8: (11, 14, 9)}
BVH_UNITS = {"m": 1.0, "cm": 100.0, "mm": 1000.0}
FRAMES = ("camera", "z_up", "y_up")


def _children(j: int) -> list[int]:
    return [c for c, q in enumerate(_PARENTS) if q == j]


def _to_y_up(p: np.ndarray, frame: str) -> np.ndarray:
    """Positions (..., 3) in BVH's axes: Y up (a rotation, never a mirror image)."""
    if frame == "camera":    # x right, y down, z forward -> x, -y, -z (180 degrees about x)
        return p * np.array([1.0, -1.0, -1.0])
    if frame == "z_up":      # x, y, z (z up) -> x, z, -y (90 degrees about x)
        return np.stack([p[..., 0], p[..., 2], -p[..., 1]], -1)
    return p


def _swing(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(F, 3, 3) smallest rotations taking unit vectors a (F, 3) to unit vectors b (F, 3)."""
    v = np.cross(a, b)
    c = np.einsum("fi,fi->f", a, b)
    s = np.linalg.norm(v, axis=-1)
    k = np.zeros(a.shape[:-1] + (3, 3))
    k[:, 0, 1], k[:, 0, 2], k[:, 1, 2] = -v[:, 2], v[:, 1], -v[:, 0]
    k = k - np.swapaxes(k, 1, 2)
    eye = np.broadcast_to(np.eye(3), k.shape)
    # Rodrigues with the axis unnormalised: I + K + K^2 (1 - c) / s^2
    coef = np.where(s > 1e-12, (1 - c) / np.maximum(s, 1e-12) ** 2, 0.5)[:, None, None]
    r = eye + k + coef * (k @ k)
    # opposite vectors: a half turn about any axis normal to a
    opposite = (s <= 1e-12) & (c < 0)
    if opposite.any():
        ax = np.cross(a[opposite], np.array([1.0, 0.0, 0.0]))
        weak = np.linalg.norm(ax, axis=-1) < 1e-6
        ax[weak] = np.cross(a[opposite][weak], np.array([0.0, 1.0, 0.0]))
        ax = ax / np.linalg.norm(ax, axis=-1, keepdims=True)
        r[opposite] = 2 * np.einsum("fi,fj->fij", ax, ax) - np.eye(3)
    return r


def _euler_zyx(r: np.ndarray) -> np.ndarray:
    """Degrees (F, 3) = (z, y, x) with r = Rz(z) Ry(y) Rx(x)."""
    sy = np.clip(-r[:, 2, 0], -1.0, 1.0)
    y = np.arcsin(sy)
    lock = np.abs(sy) > 1 - 1e-9
    z = np.where(lock, np.arctan2(-r[:, 0, 1], r[:, 1, 1]), np.arctan2(r[:, 1, 0], r[:, 0, 0]))
    x = np.where(lock, 0.0, np.arctan2(r[:, 2, 1], r[:, 2, 2]))
    return np.degrees(np.stack([z, y, x], -1))


def poses_to_bvh(positions, fps: float, *, frame: str = "camera", units: str = "cm") -> str:
    """The BVH text of an h36m17 pose sequence (see the module docstring).

    ``positions`` (F, 17, 3) in metres: root-relative poses (what the lifters give) or placed
    ones (:func:`posekernels.inference.place_in_camera`; the root then moves through the
    scene). ``frame``: their axes, ``"camera"`` (x right, y down, z forward: the lifters'
    output), ``"z_up"`` (a world frame with z up, as the training data) or ``"y_up"`` (already
    BVH's). ``units``: the file's length unit, ``"cm"`` (default), ``"m"`` or ``"mm"``.
    ``fps``: the poses' frame rate. Every value must be finite (fill or drop frames first).
    """
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or \
            not (math.isfinite(fps) and 0 < fps <= 10000):
        raise ValueError(f"fps: expected a frame rate in (0, 10000], got {fps!r}")
    if frame not in FRAMES:
        raise ValueError(f"frame: expected one of {FRAMES}, got {frame!r}")
    if units not in BVH_UNITS:
        raise ValueError(f"units: expected one of {sorted(BVH_UNITS)}, got {units!r}")
    try:
        p = np.asarray(positions, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("positions: expected an (F, 17, 3) array of numbers") from None
    if p.ndim != 3 or p.shape[1:] != (17, 3) or p.shape[0] < 1:
        raise ValueError(f"positions: expected shape (F, 17, 3) (h36m17, F >= 1), got "
                         f"{p.shape}")
    if not np.isfinite(p).all():
        bad = int((~np.isfinite(p).all((1, 2))).sum())
        raise ValueError(f"positions: {bad} frame(s) hold NaN or infinite values; fill or drop "
                         "them first (posekernels.stream.fill_missing fills 2D gaps)")
    p = _to_y_up(p, frame) * BVH_UNITS[units]
    bone = {j: p[:, j] - p[:, q] for j, q in enumerate(_PARENTS) if q >= 0}
    length = {j: float(np.median(np.linalg.norm(b, axis=-1))) for j, b in bone.items()}
    if min(length.values()) <= 0:
        short = [j for j, v in length.items() if v <= 0]
        raise ValueError(f"positions: the bones ending at joints {short} have zero length")
    offset = {j: length[j] * np.array(_REST[j], dtype=np.float64) for j in bone}
    frames = {}
    for j, (left, right, up) in _TRIANGLES.items():
        # the pelvis and the shoulders: the joint's frame is x from the right child to the
        # left one, y towards the upper child (made normal to x), z = x cross y (the facing);
        # each child's offset is its mean position in that frame, so a rigid triangle comes
        # back exactly
        x = bone[left] - bone[right]
        y = bone[up] - np.einsum("fi,fi->f", bone[up], x)[:, None] * x \
            / np.maximum(np.einsum("fi,fi->f", x, x), 1e-24)[:, None]
        nx, ny = np.linalg.norm(x, axis=-1), np.linalg.norm(y, axis=-1)
        if (nx <= 0).any() or (ny <= 0).any():
            f = int(np.nonzero((nx <= 0) | (ny <= 0))[0][0])
            raise ValueError(f"positions: frame {f} has a degenerate "
                             f"{'pelvis' if j == 0 else 'shoulder line'} (joints {left}, "
                             f"{right}, {up} in a line)")
        x, y = x / nx[:, None], y / ny[:, None]
        frames[j] = np.stack([x, y, np.cross(x, y)], -1)                  # (F, 3, 3) columns
        for c in (left, right, up):
            offset[c] = np.einsum("fij,fi->fj", frames[j], bone[c]).mean(0)
    nf = p.shape[0]
    glob: dict[int, np.ndarray] = {}
    local: dict[int, np.ndarray] = {}
    for j in H36M17_BVH_JOINTS:                     # parents come before children
        kids = _children(j)
        seen = np.stack([bone[c] for c in kids], 1)                       # (F, K, 3)
        norm = np.linalg.norm(seen, axis=-1, keepdims=True)
        if (norm <= 0).any():
            f = int(np.nonzero((norm <= 0).any((1, 2)))[0][0])
            raise ValueError(f"positions: frame {f} has a zero-length bone at joint {j}")
        parent = glob.get(_PARENTS[j])
        if j in frames:
            r = frames[j]
        else:
            rest_dir = offset[kids[0]] / np.linalg.norm(offset[kids[0]])
            carried = np.broadcast_to(rest_dir, (nf, 3)) if parent is None \
                else parent @ rest_dir
            r = _swing(carried, seen[:, 0] / norm[:, 0])
            if parent is not None:
                r = r @ parent
        glob[j] = r
        local[j] = r if parent is None else np.swapaxes(parent, 1, 2) @ r

    lines = ["HIERARCHY"]
    order: list[int] = []

    def write(j: int, depth: int) -> None:
        order.append(j)
        pad = "  " * depth
        name = H36M17_BVH_JOINTS[j]
        off = np.zeros(3) if j == 0 else offset[j]
        lines.append(f"{pad}{'ROOT' if j == 0 else 'JOINT'} {name}")
        lines.append(f"{pad}{{")
        lines.append(f"{pad}  OFFSET {off[0]:.6f} {off[1]:.6f} {off[2]:.6f}")
        lines.append(f"{pad}  CHANNELS " + ("6 Xposition Yposition Zposition " if j == 0
                                            else "3 ") + "Zrotation Yrotation Xrotation")
        for c in _children(j):
            if c in H36M17_BVH_JOINTS:
                write(c, depth + 1)
            else:
                e = offset[c]
                lines.append(f"{pad}  End Site")
                lines.append(f"{pad}  {{")
                lines.append(f"{pad}    OFFSET {e[0]:.6f} {e[1]:.6f} {e[2]:.6f}")
                lines.append(f"{pad}  }}")
        lines.append(f"{pad}}}")

    write(0, 0)
    cols = [p[:, 0]]
    for j in order:                 # the channels in the order the hierarchy lists the joints
        cols.append(np.degrees(np.unwrap(np.radians(_euler_zyx(local[j])), axis=0)))
    motion = np.concatenate(cols, 1)
    lines += ["MOTION", f"Frames: {nf}", f"Frame Time: {1.0 / fps:.8f}"]
    lines += [" ".join(f"{v:.6f}" for v in row) for row in motion]
    return "\n".join(lines) + "\n"


def save_bvh(path: str | os.PathLike, positions, fps: float, **kwargs) -> None:
    """Write :func:`poses_to_bvh` ``(positions, fps, **kwargs)`` to ``path`` (atomically: a
    failed write leaves no partial file)."""
    from .io import atomic_write_text

    atomic_write_text(path, poses_to_bvh(positions, fps, **kwargs))
