"""Temporal windows for lifting models, gathered on the device by index arithmetic.

:class:`WindowDataset` concatenates every sequence into one (frames, joints, 2) input tensor and
one (frames, joints, 3) target tensor on the chosen device (with ``flip=True``, followed by
their mirrored copies), plus per-frame integer tables (sequence start, last frame, position in
the sequence). A batch of samples is gathered with one indexing operation:

``window[n, k] = inputs[start[f_n] + clamp(t_n + k - pad, 0, length[f_n] - 1)]``

for centred windows (``pad = (T - 1) // 2``; a causal window uses ``pad = T - 1``, i.e. frames
``t - T + 1 .. t``). Clamping is replicate ("edge") padding at the sequence ends. There is one
sample per frame (per valid frame when validity masks are given); with ``flip=True`` the
dataset has twice as many samples, the second half horizontally flipped: x of the normalised
2D input and of the 3D target negated, left and right joints exchanged.

Inputs are normalised screen coordinates (:func:`posekernels.data.normalize_screen_coordinates`);
targets are root-relative camera-frame positions in metres with the root joint exactly 0.
Batches: inputs (N, T, V, 2), targets (N, 1, V, 3).
"""
from __future__ import annotations

from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch

from ..skeletons import SKELETONS, flip_permutation

__all__ = ["WindowDataset", "flip_pose", "flip_permutation"]

_H36M17 = SKELETONS["h36m17"]


def flip_pose(x, left: Sequence[int] = _H36M17.left, right: Sequence[int] = _H36M17.right):
    """Mirror poses (..., joints, C): negate x (channel 0) and exchange left/right joints.

    Works on numpy arrays and torch tensors; used for flip augmentation and test-time flipping
    (both for normalised 2D inputs and camera-frame 3D outputs). The permutation is
    :func:`posekernels.skeletons.flip_permutation` (also importable from here).
    """
    perm = flip_permutation(x.shape[-2], left, right)
    out = x[..., perm, :]
    if isinstance(x, torch.Tensor):
        out = out.clone()
    else:
        out = np.array(out, copy=True)
    out[..., 0] = -out[..., 0]
    return out


class WindowDataset:
    """All sequences on one device; batches gathered by index arithmetic (see module doc).

    Parameters
    ----------
    inputs_2d : sequence of (F_i, V, 2) arrays or tensors, normalised screen coordinates.
    targets_3d : sequence of (F_i, V, 3) camera-frame positions in metres, or None (inference).
        Made root-relative here (root joint subtracted, so the root is exactly 0).
    receptive_field : window length T (odd for centred windows).
    causal : windows end at the current frame instead of being centred on it.
    flip : add a horizontally flipped copy of every sample (augmentation).
    joints_left, joints_right : joints exchanged by the flip (default: Human3.6M 17 joints).
    root : root joint index for root-relative targets, or None to keep targets as given.
    valid : optional per-sequence boolean masks; only valid frames become samples (the windows
        still read neighbouring invalid frames' inputs).
    keys : optional per-sequence labels (e.g. (subject, action, camera)) kept in ``self.keys``.
    device, dtype : where and how the tensors are stored.
    """

    def __init__(self, inputs_2d: Sequence[Any], targets_3d: Sequence[Any] | None = None, *,
                 receptive_field: int = 27, causal: bool = False, flip: bool = False,
                 joints_left: Sequence[int] = _H36M17.left,
                 joints_right: Sequence[int] = _H36M17.right, root: int | None = 0,
                 valid: Sequence[Any] | None = None, keys: Sequence[Any] | None = None,
                 device: str | torch.device | None = None, dtype: torch.dtype = torch.float32):
        inputs_2d = list(inputs_2d)
        if not inputs_2d:
            raise ValueError("WindowDataset needs at least one sequence")
        if receptive_field < 1:
            raise ValueError(f"receptive_field must be >= 1, got {receptive_field}")
        if not causal and receptive_field % 2 == 0:
            raise ValueError(f"a centred window needs an odd receptive_field, got "
                             f"{receptive_field}")
        if targets_3d is not None:
            targets_3d = list(targets_3d)
            if len(targets_3d) != len(inputs_2d):
                raise ValueError(f"{len(inputs_2d)} input sequences but {len(targets_3d)} "
                                 "target sequences")
        if valid is not None:
            valid = list(valid)
            if len(valid) != len(inputs_2d):
                raise ValueError("valid needs one mask per sequence")
        self.keys = list(keys) if keys is not None else list(range(len(inputs_2d)))
        if len(self.keys) != len(inputs_2d):
            raise ValueError("keys needs one label per sequence")
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.dtype = dtype
        self.receptive_field = int(receptive_field)
        self.causal = bool(causal)
        self.flip = bool(flip)
        self.root = root

        def as_np(a):
            return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)

        xs, ys, lengths, masks = [], [], [], []
        num_joints = None
        for i, x in enumerate(inputs_2d):
            x = as_np(x)
            name = f"sequence {self.keys[i]!r}"
            if x.ndim != 3 or x.shape[-1] != 2 or not np.issubdtype(x.dtype, np.number):
                raise ValueError(f"{name}: inputs must be numeric (frames, joints, 2), got "
                                 f"{x.shape}")
            if x.shape[0] == 0:
                raise ValueError(f"{name}: empty sequence")
            if num_joints is None:
                num_joints = int(x.shape[1])
            elif x.shape[1] != num_joints:
                raise ValueError(f"{name}: {x.shape[1]} joints, expected {num_joints}")
            xs.append(x)
            lengths.append(int(x.shape[0]))
            if targets_3d is not None:
                y = as_np(targets_3d[i])
                if y.shape != (x.shape[0], num_joints, 3):
                    raise ValueError(f"{name}: targets must be ({x.shape[0]}, {num_joints}, 3), "
                                     f"got {y.shape}")
                y = y.astype(np.float64)
                if root is not None:
                    y = y - y[:, root:root + 1]
                ys.append(y)
            if valid is not None:
                m = as_np(valid[i]).reshape(-1).astype(bool)
                if m.shape[0] != x.shape[0]:
                    raise ValueError(f"{name}: valid mask has {m.shape[0]} entries for "
                                     f"{x.shape[0]} frames")
                masks.append(m)
        x_all = np.concatenate(xs).astype(np.float64, copy=False)
        y_all = np.concatenate(ys) if ys else None
        for what, arr in (("inputs", x_all), ("targets", y_all)):
            if arr is not None and not np.isfinite(arr).all():
                bad = int(np.flatnonzero(~np.isfinite(arr).reshape(len(arr), -1).all(1))[0])
                seq = int(np.searchsorted(np.cumsum(lengths), bad, side="right"))
                raise ValueError(f"sequence {self.keys[seq]!r}: {what} contain NaN or infinite "
                                 "values")
        self.num_joints = num_joints
        self.lengths = lengths
        dev = self.device
        total = int(sum(lengths))
        self.num_total_frames = total
        perm = flip_permutation(num_joints, joints_left, joints_right)
        sign = np.array([-1.0, 1.0, 1.0])

        def stack_with_flip(a: np.ndarray) -> torch.Tensor:
            # rows [0, total): as given; rows [total, 2 total): mirrored copy (used by flip).
            if self.flip:
                a = np.concatenate([a, a[:, perm] * sign[: a.shape[-1]]])
            return torch.from_numpy(np.ascontiguousarray(a)).to(device=dev, dtype=dtype)

        self.inputs = stack_with_flip(x_all)
        self.targets = stack_with_flip(y_all) if y_all is not None else None
        lens = torch.tensor(lengths, dtype=torch.int64)
        starts = torch.cumsum(lens, 0) - lens
        self.seq_id = torch.repeat_interleave(torch.arange(len(lengths)), lens).to(dev)
        self.start = starts.to(dev)[self.seq_id]
        self.last = (lens - 1).to(dev)[self.seq_id]
        self.local = torch.arange(total, device=dev) - self.start
        if masks:
            self.frames = torch.from_numpy(np.flatnonzero(np.concatenate(masks))).to(dev)
        else:
            self.frames = torch.arange(total, device=dev)
        if self.frames.numel() == 0:
            raise ValueError("no valid frames")
        pad = self.receptive_field - 1 if self.causal else (self.receptive_field - 1) // 2
        self.offsets = torch.arange(self.receptive_field, device=dev) - pad
        self.perm = torch.tensor(perm, device=dev)

    # ------------------------------------------------------------------------------------
    @classmethod
    def from_sequences(cls, sequences: Iterable[Any], **kwargs) -> "WindowDataset":
        """Build from :class:`posekernels.data.PoseSequence` objects (2D normalised per camera
        image size, camera-frame 3D targets, validity masks and keys taken from them)."""
        seqs = list(sequences)
        has_3d = all(s.positions_3d is not None for s in seqs)
        has_valid = any(s.valid is not None for s in seqs)
        valid = ([s.valid if s.valid is not None else np.ones(s.num_frames, bool) for s in seqs]
                 if has_valid else None)
        return cls([s.normalized_2d() for s in seqs],
                   [s.positions_3d for s in seqs] if has_3d else None,
                   valid=kwargs.pop("valid", valid), keys=kwargs.pop("keys", [s.key for s in seqs]),
                   **kwargs)

    @property
    def num_frames(self) -> int:
        """Frames that are samples (valid frames), without the flipped copies."""
        return int(self.frames.numel())

    def __len__(self) -> int:
        return self.num_frames * (2 if self.flip else 1)

    def _sample_ids(self, idx) -> torch.Tensor:
        ids = torch.as_tensor(idx, dtype=torch.int64).to(self.device).reshape(-1)
        n = len(self)
        if ids.numel() and (int(ids.min()) < -n or int(ids.max()) >= n):
            raise IndexError(f"sample index out of range for {n} samples")
        return torch.remainder(ids, n)

    def sample_weights(self, balance: float) -> torch.Tensor:
        """(num_frames,) float64 sampling weight of each sample (the flipped copy weighs as its
        original): ``L ** -balance`` for a sample of a sequence with ``L`` samples, so that a
        sequence weighs ``L ** (1 - balance)`` in all. ``balance`` 0 weighs every frame alike
        (a long sequence dominates as it does in one pass over the data), 1 every sequence
        alike; values between interpolate."""
        balance = float(balance)
        if not 0 <= balance <= 1:
            raise ValueError(f"balance must lie in [0, 1], got {balance}")
        seq = self.seq_id[self.frames]
        counts = torch.bincount(seq, minlength=len(self.lengths)).to(torch.float64)
        return counts[seq].pow(-balance)

    def frame_of(self, idx) -> torch.Tensor:
        """Global frame index of each sample id."""
        return self.frames[torch.remainder(self._sample_ids(idx), self.num_frames)]

    def sequence_of(self, idx) -> torch.Tensor:
        """Sequence index (into ``keys``) of each sample id."""
        return self.seq_id[self.frame_of(idx)]

    def window_indices(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, T) global frame indices of the windows around global frames ``frames`` (N,)."""
        local = self.local[frames].unsqueeze(1) + self.offsets.unsqueeze(0)
        local = torch.minimum(local.clamp_min(0), self.last[frames].unsqueeze(1))
        return self.start[frames].unsqueeze(1) + local

    def window_times(self, frames: torch.Tensor, speed: torch.Tensor | float = 1.0
                     ) -> torch.Tensor:
        """(N, T) local times ``local + offsets[k] * speed`` of the window slots around global
        frames ``frames`` (N,) played ``speed`` (N,) (or one number) times as fast, not clamped:
        slots before 0 or after the sequence's last frame are the ones replicate padding fills.
        The dtype is ``speed``'s (the targets' for a number)."""
        dtype = speed.dtype if isinstance(speed, torch.Tensor) else self.dtype
        speed = torch.as_tensor(speed, dtype=dtype, device=self.device)
        return self.local[frames].unsqueeze(1).to(dtype) \
            + self.offsets.unsqueeze(0).to(dtype) * (speed.unsqueeze(1) if speed.ndim else speed)

    def window_positions(self, frames: torch.Tensor, speed: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Windows around global frames ``frames`` (N,) played ``speed`` (N,) times as fast:
        window slot k sits at local time ``local + offsets[k] * speed`` (the reference slot on
        the frame itself), clamped to the sequence as the replicate padding does. Returns global
        indices ``(lo, hi)`` (N, T) and the weight ``frac`` of ``hi`` for linear
        interpolation."""
        last = self.last[frames].unsqueeze(1)
        pos = torch.minimum(self.window_times(frames, speed).clamp_min(0), last.to(speed.dtype))
        lo = pos.floor()
        frac = pos - lo
        lo = lo.to(torch.int64)
        hi = torch.minimum(lo + 1, last)
        start = self.start[frames].unsqueeze(1)
        return start + lo, start + hi, frac

    def batch(self, idx) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Inputs (N, T, V, 2) and targets (N, 1, V, 3) (None without targets) for sample ids."""
        return self._gather(self._sample_ids(idx))

    def _gather(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        m = self.num_frames
        frames = self.frames[torch.remainder(ids, m)]
        # Flipped samples read the mirrored copy stored after the original rows.
        shift = (ids >= m).to(torch.int64) * self.num_total_frames if self.flip else 0
        x = self.inputs[self.window_indices(frames) + (shift.unsqueeze(1) if self.flip else 0)]
        y = self.targets[frames + shift].unsqueeze(1) if self.targets is not None else None
        return x, y

    def __getitem__(self, idx):
        if isinstance(idx, (int, np.integer)):
            x, y = self.batch([int(idx)])
            return x[0], (y[0] if y is not None else None)
        return self.batch(idx)

    def batches(self, batch_size: int, *, shuffle: bool = True,
                generator: torch.Generator | None = None, drop_last: bool = False,
                with_ids: bool = False) -> Iterator:
        """Iterate over all samples in batches (random order when ``shuffle``; ``generator`` is a
        CPU :class:`torch.Generator` for reproducible order). Yields ``(inputs, targets)``, or
        ``(inputs, targets, sample_ids)`` with ``with_ids=True``."""
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        n = len(self)
        order = (torch.randperm(n, generator=generator) if shuffle else torch.arange(n))
        order = order.to(self.device)
        stop = n - n % batch_size if drop_last else n
        for s in range(0, stop, batch_size):
            ids = order[s:s + batch_size]
            x, y = self._gather(ids)
            yield (x, y, ids) if with_ids else (x, y)
