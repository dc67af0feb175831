"""Camera-randomised training windows with detector-like 2D augmentation.

:class:`RandomCameraWindows` keeps every training sequence's *world* positions on the training
device and, for each batch, gathers the windows (the index arithmetic of
:class:`posekernels.data.WindowDataset`), mirrors the flipped samples in the world, optionally
rescales the subject, optionally lets windows begin (or, centred, end) a track inside the window,
draws one camera per window
(:func:`posekernels.data.random_cameras.sample_cameras`), projects (optionally making some
windows' 2D as a COCO detector and :mod:`posekernels.adapters` make it:
:class:`~posekernels.data.detector_joints.DetectorJoints`), adds detector-like noise and
missing joints (:class:`Augment2D`), fills the missing joints by the streaming lifter's rule
(:func:`posekernels.stream.fill_missing`, the rule :class:`posekernels.stream.StreamingLifter`
applies) and normalises exactly as at inference. All of it
is vectorised over the batch (the only Python loops run over the window's frames).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ..data.detector_joints import DetectorJoints
from ..data.io import replace_from_mapping
from ..data.random_cameras import (DEFAULT_CAMERAS, CameraDistribution, project_windows,
                                   sample_cameras)
from ..data.virtual import DetectorNoise
from ..data.windows import WindowDataset
from ..skeletons import flip_permutation

__all__ = ["Augment2D", "RandomCameraWindows", "augment_2d_from_dict", "fill_missing_windows"]


@dataclass(frozen=True)
class Augment2D:
    """Detector-like corruption of projected 2D windows (pixels), drawn per sample.

    * Jitter: an AR(1) process over the window's frames per joint and axis (lag-one correlation
      uniform in ``rho``), standard deviation ``s_abs * w / 1000 + s_rel * subject height``
      pixels, with ``s_abs`` uniform in [0, ``sigma_px``] and ``s_rel`` uniform in
      [0, ``sigma_rel``] per sample, times the per-joint scale of
      :class:`posekernels.data.DetectorNoise` (wrists and feet 1.5, ...).
    * Outliers: each joint in each frame with probability ``outlier_prob`` moves by
      ``outlier_rel`` * subject height * [0.5, 1.5] in a random direction.
    * Left/right swaps: per frame with probability ``swap_prob`` one left/right pair exchanges.
    * Missing joints: with probability ``missing_sample_prob`` a sample loses each joint-frame
      with a probability uniform in [0, ``missing_max``]; any frame is dropped whole with
      probability ``frame_drop_prob``. Missing joints are filled by the streaming lifter's rule.
    """
    sigma_px: float = 8.0
    sigma_rel: float = 0.015
    rho: tuple[float, float] = (0.0, 0.9)
    outlier_prob: float = 0.004
    outlier_rel: float = 0.15
    swap_prob: float = 0.002
    missing_sample_prob: float = 0.5
    missing_max: float = 0.15
    frame_drop_prob: float = 0.01

    def __post_init__(self):
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "rho":
                try:
                    a, b = (float(x) for x in v)
                except (TypeError, ValueError):
                    raise ValueError(f"augment_2d: rho must be a (low, high) pair, got {v!r}") \
                        from None
                if not 0 <= a <= b < 1:
                    raise ValueError(f"augment_2d: rho must satisfy 0 <= low <= high < 1, got "
                                     f"{v!r}")
                object.__setattr__(self, "rho", (a, b))
                continue
            hi = 1.0 if f.name.endswith(("prob", "max")) else 1000.0
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= hi:
                raise ValueError(f"augment_2d: {f.name} must be a number in [0, {hi}], got {v!r}")
            object.__setattr__(self, f.name, float(v))

    def __call__(self, uv: torch.Tensor, width: torch.Tensor, left: Sequence[int],
                 right: Sequence[int], generator: torch.Generator | None = None):
        """Corrupt pixels ``uv`` (N, T, V, 2) of images ``width`` (N,) wide; returns
        ``(uv, valid)`` with ``valid`` (N, T, V) False for missing joints."""
        g = generator
        n, t, v, _ = uv.shape
        dev, dt = uv.device, uv.dtype

        def rand(*shape):
            return torch.rand(*shape, generator=g, device=dev, dtype=dt)

        ys = uv[..., 1]
        height = (ys.amax(-1) - ys.amin(-1)).mean(1).clamp_min(1.0)           # (N,) px
        scale = (torch.tensor(DetectorNoise.H36M17_SCALE, device=dev, dtype=dt) if v == 17
                 else torch.ones(v, device=dev, dtype=dt))
        sigma = (rand(n) * self.sigma_px * width / 1000 + rand(n) * self.sigma_rel * height)
        sigma = sigma[:, None, None, None] * scale[None, None, :, None]        # (N, 1, V, 1)
        rho = (self.rho[0] + (self.rho[1] - self.rho[0]) * rand(n))[:, None, None]
        innov = torch.sqrt(1 - rho * rho)
        white = torch.randn(n, t, v, 2, generator=g, device=dev, dtype=dt)
        steps = [white[:, 0]]
        for i in range(1, t):
            steps.append(rho * steps[-1] + innov * white[:, i])
        out = uv + torch.stack(steps, 1) * sigma
        if self.outlier_prob > 0:
            hit = rand(n, t, v) < self.outlier_prob
            ang = rand(n, t, v) * (2 * math.pi)
            mag = self.outlier_rel * height[:, None, None] * (0.5 + rand(n, t, v))
            kick = torch.stack([torch.cos(ang), torch.sin(ang)], -1) * mag[..., None]
            out = out + kick * hit[..., None]
        pairs = [(a, b) for a, b in zip(left, right) if a < v and b < v]
        if pairs and self.swap_prob > 0:
            pt = torch.tensor(pairs, device=dev)
            which = torch.randint(0, len(pairs), (n, t), generator=g, device=dev)
            swap = rand(n, t) < self.swap_prob
            idx = torch.arange(v, device=dev).expand(n, t, v).clone()
            a, b = pt[which, 0], pt[which, 1]
            a = torch.where(swap, a, idx[..., 0])  # no swap: joint 0 -> itself
            b = torch.where(swap, b, idx[..., 0])
            ia, ib = idx.gather(-1, a[..., None]), idx.gather(-1, b[..., None])
            idx.scatter_(-1, a[..., None], ib)
            idx.scatter_(-1, b[..., None], ia)
            out = out.gather(2, idx[..., None].expand(n, t, v, 2))
        rate = torch.where(rand(n) < self.missing_sample_prob, rand(n) * self.missing_max,
                           torch.zeros(n, device=dev, dtype=dt))
        missing = rand(n, t, v) < rate[:, None, None]
        missing |= (rand(n, t) < self.frame_drop_prob)[..., None]
        return out, ~missing


def _factor_range(value: Any, where: str, what: str, lo_bound: float,
                  hi_bound: float) -> tuple[float, float] | None:
    """None, or a (low, high) pair with lo_bound <= low <= high <= hi_bound."""
    if value is None:
        return None
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{where} must be a (low, high) pair of {what}, got {value!r}") \
            from None
    if not lo_bound <= lo <= hi <= hi_bound:
        raise ValueError(f"{where} must satisfy {lo_bound:g} <= low <= high <= {hi_bound:g}, "
                         f"got {value!r}")
    return lo, hi


def check_speed_range(value: Any, where: str = "speed_range") -> tuple[float, float] | None:
    """None, or a (low, high) pair with 0.25 <= low <= high <= 4 (playback-speed factors)."""
    return _factor_range(value, where, "speed factors", 0.25, 4.0)


def check_limb_swing(value: Any, where: str = "limb_swing") -> tuple[float, float] | None:
    """None, or a (low, high) pair with 0.5 <= low <= high <= 2 (limb-swing amplitude factors)."""
    return _factor_range(value, where, "amplitude factors", 0.5, 2.0)


def _topological_order(parents: Sequence[int], num_joints: int) -> list[int]:
    """The non-root joints, every parent before its children."""
    if len(parents) != num_joints:
        raise ValueError(f"parents has {len(parents)} entries for {num_joints} joints")
    order, placed = [], {j for j, q in enumerate(parents) if q < 0}
    while len(placed) < num_joints:
        new = [j for j, q in enumerate(parents) if j not in placed and q in placed]
        if not new:
            raise ValueError(f"parents {list(parents)} is not a tree")
        order += new
        placed.update(new)
    return order


def _rotation_matrices(axis: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (..., 3, 3) turning by ``angle`` (...) radians about unit ``axis``
    (..., 3) (Rodrigues: I + sin(a) K + (1 - cos(a)) K^2, K the cross-product matrix)."""
    x, y, z = axis.unbind(-1)
    zero = torch.zeros_like(x)
    k = torch.stack([torch.stack([zero, -z, y], -1), torch.stack([z, zero, -x], -1),
                     torch.stack([-y, x, zero], -1)], -2)
    a = angle[..., None, None]
    eye = torch.eye(3, dtype=axis.dtype, device=axis.device)
    return eye + torch.sin(a) * k + (1 - torch.cos(a)) * (k @ k)


def augment_2d_from_dict(d: Mapping[str, Any] | None, where: str = "augment_2d_config"
                         ) -> Augment2D:
    """An :class:`Augment2D` with the given fields changed (errors name ``where`` and the key)."""
    return replace_from_mapping(Augment2D(), d, where, "Augment2D fields")


def fill_missing_windows(uv: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Fill the joints that are not ``valid`` in windows (N, T, V, 2) by the streaming lifter's
    rule (:func:`posekernels.stream.fill_missing`), frame by frame from each window's first
    frame, vectorised over the windows; ``uv`` in pixels, so only ``valid`` marks what is
    missing (no coordinate bound)."""
    from ..stream import fill_missing

    return fill_missing(torch.where(valid[..., None], uv, torch.full_like(uv, float("nan"))),
                        max_coordinate=math.inf)


class RandomCameraWindows:
    """Training windows seen through a fresh random camera per sample (module docstring).

    ``world``: per-sequence (F_i, V, 3) world positions (metres, z up). With ``flip=True`` the
    sample ids ``[num_frames, 2 num_frames)`` are the mirrored samples (world x mirrored about the
    root of the window's reference frame, left and right joints exchanged).
    """

    def __init__(self, world: Sequence[Any], *, receptive_field: int, causal: bool = False,
                 flip: bool = False, joints_left: Sequence[int], joints_right: Sequence[int],
                 root: int = 0, valid: Sequence[Any] | None = None,
                 cameras: CameraDistribution = DEFAULT_CAMERAS,
                 augment: Augment2D | None = None, scale_jitter: float = 0.0,
                 bone_jitter: float = 0.0, bone_rotation: float = 0.0,
                 limb_swing: Sequence[float] | None = None,
                 parents: Sequence[int] | None = None,
                 speed_range: Sequence[float] | None = None, track_start: float = 0.0,
                 detector_joints: DetectorJoints | None = None,
                 keys: Sequence[Any] | None = None, device: str | torch.device | None = None):
        world = [np.asarray(w, dtype=np.float64) for w in world]
        if not 0 <= track_start <= 1:
            raise ValueError(f"track_start must be a probability in [0, 1], got {track_start}")
        self._ds = WindowDataset([w[..., :2] for w in world], world, root=None,
                                 receptive_field=receptive_field, causal=causal, flip=False,
                                 valid=valid, keys=keys, device=device)
        if not 0 <= scale_jitter < 1:
            raise ValueError(f"scale_jitter must lie in [0, 1), got {scale_jitter}")
        if not 0 <= bone_jitter < 0.5:
            raise ValueError(f"bone_jitter must lie in [0, 0.5), got {bone_jitter}")
        if not 0 <= bone_rotation <= 45:
            raise ValueError(f"bone_rotation must lie in [0, 45] degrees, got {bone_rotation}")
        self.limb_swing = check_limb_swing(limb_swing)
        if (bone_jitter > 0 or bone_rotation > 0 or self.limb_swing is not None) \
                and parents is None:
            raise ValueError("bone_jitter, bone_rotation and limb_swing need the skeleton's "
                             "parents")
        self.speed_range = check_speed_range(speed_range)
        self.receptive_field = int(receptive_field)
        self.causal = bool(causal)
        self.flip = bool(flip)
        self.root = int(root)
        self.cameras = cameras
        self.augment = augment
        self.scale_jitter = float(scale_jitter)
        self.bone_jitter = float(bone_jitter)
        self.bone_rotation = float(bone_rotation)
        self.track_start = float(track_start)
        if detector_joints is not None and not isinstance(detector_joints, DetectorJoints):
            raise ValueError(f"detector_joints must be a DetectorJoints or None, got "
                             f"{type(detector_joints).__name__}")
        if detector_joints is not None and self._ds.num_joints != 17:
            raise ValueError(f"detector_joints needs the h36m17 layout, the data has "
                             f"{self._ds.num_joints} joints")
        self.detector_joints = detector_joints
        self.parents = None if parents is None else [int(q) for q in parents]
        self.left, self.right = list(joints_left), list(joints_right)
        if self.parents is not None:
            self._order = _topological_order(self.parents, self._ds.num_joints)
            # the limbs' bones: a sided joint whose parent is sided too (upper arm, forearm,
            # thigh, shin), not the shoulder or hip offsets from the trunk
            sided = set(self.left) | set(self.right)
            self._limbs = [j for j, q in enumerate(self.parents) if j in sided and q in sided]
        self.device = self._ds.device
        self.perm = torch.tensor(flip_permutation(self._ds.num_joints, self.left, self.right),
                                 device=self.device)
        self.ref = self.receptive_field - 1 if self.causal else (self.receptive_field - 1) // 2

    @property
    def num_frames(self) -> int:
        return self._ds.num_frames

    @property
    def lengths(self) -> list[int]:
        return self._ds.lengths

    def __len__(self) -> int:
        return self.num_frames * (2 if self.flip else 1)

    def sample_weights(self, balance: float, motion: float = 0.0) -> torch.Tensor:
        """(num_frames,) float64 sampling weights of the samples: those of
        :meth:`WindowDataset.sample_weights` for ``balance``, times ``(v / mean v) ** motion``
        with ``v`` a frame's speed (:meth:`frame_speeds`; its mean over the samples), floored at
        a tenth of the mean so that a still frame keeps a chance. ``motion`` 0 leaves them as
        they are; larger values draw fast motion more often."""
        motion = float(motion)
        if not 0 <= motion <= 4:
            raise ValueError(f"motion must lie in [0, 4], got {motion}")
        w = self._ds.sample_weights(balance)
        if motion == 0:
            return w
        v = self.frame_speeds()[self._ds.frames]
        rel = (v / v.mean()).clamp_min(0.1) if float(v.mean()) > 0 else torch.ones_like(v)
        return w * rel.pow(motion)

    def frame_speeds(self) -> torch.Tensor:
        """(total frames,) float64 speed of every recorded frame: the mean over the joints of
        the distance each joint moves, relative to the root, from the frame to the next one of
        its sequence (a sequence's last frame takes its previous frame's value; metres per
        data frame)."""
        ds = self._ds
        pos = ds.targets[:ds.num_total_frames].to(torch.float64)
        rel = pos - pos[:, self.root:self.root + 1]
        step = (rel[1:] - rel[:-1]).norm(dim=-1).mean(dim=-1)
        last = torch.arange(pos.shape[0], device=pos.device) == ds.start + ds.last
        nxt = torch.cat([step, step[-1:]])
        prev = torch.cat([step[:1], step])
        # a sequence's last frame: the step into it (one-frame sequences: 0)
        single = ds.last == 0
        return torch.where(single, torch.zeros_like(nxt), torch.where(last, prev, nxt))

    def world_windows(self, ids: torch.Tensor, speed: torch.Tensor | None = None
                      ) -> torch.Tensor:
        """World windows (N, T, V, 3) of sample ids (mirrored for the flipped ids); with
        ``speed`` (N,), each window's motion played that many times as fast around its
        reference frame (linear interpolation between the recorded frames)."""
        ids = ids.to(self.device)
        return self._world_windows(ids, self._frames(ids), speed)

    def _frames(self, ids: torch.Tensor) -> torch.Tensor:
        """Global frame (N,) of each sample id (flipped ids read their original's frame)."""
        return self._ds.frames[torch.remainder(ids.to(self.device), self._ds.num_frames)]

    def _world_windows(self, ids: torch.Tensor, frames: torch.Tensor,
                       speed: torch.Tensor | None) -> torch.Tensor:
        ds = self._ds
        m = ds.num_frames
        if speed is None:
            world = ds.targets[ds.window_indices(frames)]
        else:
            lo, hi, frac = ds.window_positions(frames, speed.to(self.device, ds.targets.dtype))
            w = frac[..., None, None].to(ds.targets.dtype)
            world = ds.targets[lo] * (1 - w) + ds.targets[hi] * w
        if self.flip:
            mirror = ids >= m
            if bool(mirror.any()):
                rx = world[:, self.ref, self.root, 0][:, None, None]
                flipped = world[:, :, self.perm].clone()
                flipped[..., 0] = 2 * rx - flipped[..., 0]
                world = torch.where(mirror[:, None, None, None], flipped, world)
        return world

    def jitter_bones(self, world: torch.Tensor, generator: torch.Generator | None = None
                     ) -> torch.Tensor:
        """World windows (N, T, V, 3) with new body proportions and, with ``bone_rotation``,
        new poses, rebuilt from the root outwards (the root trajectory is kept).

        Each bone (joint - parent) is scaled by a factor drawn per window and bone, uniform in
        1 +- ``bone_jitter``, the same for a bone and its mirror image (left/right pairs): a
        subject with other proportions. With ``bone_rotation`` > 0 each bone is then turned by a
        rotation drawn per window and bone (axis uniform on the sphere, angle uniform in
        0 .. ``bone_rotation`` degrees), left and right independently, the same rotation in
        every frame of the window: the motion stays smooth, and the poses (arm swing planes,
        stance, lean) are ones the recording does not hold. With ``limb_swing`` (low, high) each
        limb bone (a sided joint with a sided parent: upper arms, forearms, thighs, shins)
        swings wider or narrower about its direction averaged over the window: its angle to
        that direction is multiplied in every frame by a factor drawn per window and bone
        (uniform in low .. high, a bone and its mirror image alike; at most 180 degrees), in
        the plane the two directions span: a stride or arm swing of another amplitude (walking
        towards running), the bone's length kept."""
        n, _, v, _ = world.shape
        dev, dt = world.device, world.dtype
        s = None
        if self.bone_jitter > 0:
            s = 1 + self.bone_jitter * (2 * torch.rand(n, v, generator=generator, device=dev,
                                                       dtype=dt) - 1)
            # a joint and its mirror image both take the draw of the lower-numbered one
            s = s[:, torch.minimum(torch.arange(v, device=dev), self.perm)]
        rot = None
        if self.bone_rotation > 0:
            axis = torch.randn(n, v, 3, generator=generator, device=dev, dtype=dt)
            axis = axis / axis.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            angle = torch.rand(n, v, generator=generator, device=dev, dtype=dt) \
                * math.radians(self.bone_rotation)
            rot = _rotation_matrices(axis, angle)                       # (N, V, 3, 3)
        # every bone at once (a root's "bone" to itself is zero and never used)
        parent = torch.tensor([j if q < 0 else q for j, q in enumerate(self.parents)],
                              device=dev)
        bone = world - world[:, :, parent]                              # (N, T, V, 3)
        if rot is not None:
            bone = torch.einsum("nvij,ntvj->ntvi", rot, bone)
        if self.limb_swing is not None and self._limbs:
            bone = self._swing(bone, generator)
        if s is not None:
            bone = s[:, None, :, None] * bone
        out = world.clone()
        for j in self._order:
            out[:, :, j] = out[:, :, self.parents[j]] + bone[:, :, j]
        return out

    def edge_slots(self, ids: torch.Tensor, speed: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """(first, last) (N,) per window: its slots before ``first`` and after ``last`` read
        the clip's first or last frame, as slot ``first`` or ``last`` does (replicate padding
        at the clip's ends; ``speed`` as in :meth:`world_windows`)."""
        return self._edge_slots(self._frames(ids), speed)

    def _edge_slots(self, frames: torch.Tensor, speed: torch.Tensor | None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        ds = self._ds
        pos = ds.window_times(frames, 1.0 if speed is None
                              else speed.to(self.device, ds.targets.dtype))
        t = self.receptive_field
        before = (pos <= 0).sum(1)
        after = (pos >= ds.last[frames].unsqueeze(1).to(pos.dtype)).sum(1)
        return (before - 1).clamp_min(0), torch.where(after > 0, t - after, t - 1)

    def _swing(self, bone: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """``bone`` (N, T, V, 3) with the limb bones' swing amplitude rescaled (limb_swing)."""
        n, dev, dt = bone.shape[0], bone.device, bone.dtype
        v = bone.shape[2]
        lo, hi = self.limb_swing
        f = lo + (hi - lo) * torch.rand(n, v, generator=generator, device=dev, dtype=dt)
        f = f[:, torch.minimum(torch.arange(v, device=dev), self.perm)]
        limbs = torch.tensor(self._limbs, device=dev)
        b = bone[:, :, limbs]                                           # (N, T, L, 3)
        length = b.norm(dim=-1, keepdim=True)
        u = b / length.clamp_min(1e-12)
        mean = u.mean(1, keepdim=True)
        m = mean / mean.norm(dim=-1, keepdim=True).clamp_min(1e-12)     # (N, 1, L, 3)
        c = (u * m).sum(-1, keepdim=True).clamp(-1, 1)
        perp = u - c * m                                                # in-plane, normal to m
        sin = perp.norm(dim=-1, keepdim=True)
        w = perp / sin.clamp_min(1e-12)
        angle = (torch.atan2(sin, c) * f[:, None, limbs, None]).clamp_max(math.pi)
        turned = length * (m * torch.cos(angle) + w * torch.sin(angle))
        # a bone along its mean direction (or a mean of opposite directions) stays as it is
        keep = (sin < 1e-9) | (mean.norm(dim=-1, keepdim=True) < 1e-6)
        out = bone.clone()
        out[:, :, limbs] = torch.where(keep, b, turned)
        return out

    def track_ends(self, n: int, generator: torch.Generator | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(first, last) (n,) window slots of the track's first and last frames when tracks
        may begin inside windows (``track_start``), or None when they may not.

        With probability ``track_start`` a window holds the first frames of a track: it has
        ``h`` real frames before its reference frame, ``h`` uniform in ``0 .. ref - 1``, and
        the slots before those repeat the track's first frame, as the replicate padding of
        :func:`posekernels.lift_sequence` and a fresh :class:`posekernels.stream.StreamingLifter`
        stream give it. A centred window also ends its track inside the window with the same
        probability, drawn independently (``0 .. T - ref - 2`` real frames after the reference).
        """
        if self.track_start <= 0:
            return None
        t, ref, dev = self.receptive_field, self.ref, self.device

        def draw(span: int) -> tuple[torch.Tensor, torch.Tensor]:
            # (whether the track ends on this side, how many real frames it has there)
            hit = torch.rand(n, generator=generator, device=dev) < self.track_start
            real = torch.randint(0, max(span, 1), (n,), generator=generator, device=dev)
            return hit if span > 0 else torch.zeros_like(hit), real

        hit, real = draw(ref)
        first = torch.where(hit, ref - real, torch.zeros_like(real))
        last = torch.full_like(first, t - 1)
        if not self.causal:
            hit, real = draw(t - ref - 1)
            last = torch.where(hit, ref + real, last)
        return first, last

    def _slots(self, first: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        """(N, T) the slot each slot reads: ``clamp(k, first, last)``."""
        k = torch.arange(self.receptive_field, device=self.device)
        return torch.minimum(torch.maximum(k, first[:, None]), last[:, None])

    def batch(self, ids: torch.Tensor, generator: torch.Generator | None = None):
        """``(inputs (N, T, V, 2) normalised, targets (N, T, V, 3) root-relative camera frame,
        cameras)`` for sample ids."""
        speed = None
        if self.speed_range is not None:
            lo, hi = (math.log(v) for v in self.speed_range)
            u = torch.rand(len(ids), generator=generator, device=self.device,
                           dtype=self._ds.targets.dtype)
            speed = torch.exp(lo + (hi - lo) * u)
        ids = ids.to(self.device)
        frames = self._frames(ids)
        world = self._world_windows(ids, frames, speed)
        n = world.shape[0]
        if self.bone_jitter > 0 or self.bone_rotation > 0 or self.limb_swing is not None:
            world = self.jitter_bones(world, generator)
        ends = self.track_ends(n, generator)
        if ends is not None:
            world = torch.take_along_dim(world, self._slots(*ends)[:, :, None, None], dim=1)
        root_ref = world[:, self.ref, self.root]
        if self.scale_jitter > 0:
            s = 1 + self.scale_jitter * (2 * torch.rand(n, generator=generator,
                                                        device=world.device,
                                                        dtype=world.dtype) - 1)
            ground = root_ref * torch.tensor([1.0, 1.0, 0.0], device=world.device,
                                             dtype=world.dtype)
            world = ground[:, None, None] + s[:, None, None, None] * (world - ground[:, None, None])
            root_ref = world[:, self.ref, self.root]
        which = None
        if self.detector_joints is not None:
            which = self.detector_joints.draw(n, generator, world.device)
            # the face points move with the head; they are projected with the joints
            world = torch.cat([world, self.detector_joints.face(world, generator)], 2)
        cams = sample_cameras(root_ref, self.cameras, generator=generator)
        uv, cam3d, cams = project_windows(world, cams, root=self.root,
                                          min_depth=self.cameras.min_depth)
        if which is not None:
            v = self._ds.num_joints
            uv = self.detector_joints.apply(uv[:, :, :v], uv[:, :, v:], which, generator)
            cam3d = cam3d[:, :, :v]
        target = cam3d - cam3d[:, :, self.root:self.root + 1]
        if self.augment is not None:
            uv, valid = self.augment(uv, cams.size[:, 0], self.left, self.right, generator)
            uv = fill_missing_windows(uv, valid)
            # a padded slot repeats a frame's detection, noise and all, as inference pads it
            first, last = self._edge_slots(frames, speed)
            if ends is not None:
                first, last = torch.maximum(first, ends[0]), torch.minimum(last, ends[1])
            uv = torch.take_along_dim(uv, self._slots(first, last)[:, :, None, None], dim=1)
        return cams.normalize(uv), target, cams
