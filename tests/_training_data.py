"""Small synthetic motion for the training and evaluation tests: CMU-like BVH files whose joints
swing smoothly (different frequencies and phases per joint and per sequence)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from test_bvh import CMU_LIKE, NCH, cmu_like_text


def swinging_motion(frames: int, seed: int) -> np.ndarray:
    """(frames + 1, channels): a T-pose frame, then every joint rotating smoothly (+-35 deg)
    while the root walks slowly and turns."""
    rng = np.random.default_rng(seed)
    t = np.arange(frames)[:, None] / 120.0
    freq = rng.uniform(0.3, 1.5, NCH)
    phase = rng.uniform(0, 2 * np.pi, NCH)
    amp = rng.uniform(10, 35, NCH)
    m = np.zeros((frames + 1, NCH))
    m[0, 1] = 17.0
    m[1:] = amp * np.sin(2 * np.pi * freq * t + phase)
    m[1:, 0] = 3.0 * np.sin(0.4 * t[:, 0])           # root x, y, z position (BVH units)
    m[1:, 1] = 17.0 + 0.5 * np.sin(2.0 * t[:, 0])
    m[1:, 2] = 10.0 * t[:, 0]
    m[1:, 3] = 0.0                                   # root Z rotation: keep upright
    m[1:, 4] = 60.0 * np.sin(0.3 * t[:, 0] + phase[4])   # root Y rotation: turning
    m[1:, 5] = 0.0
    return m


def write_bvh(path: Path, frames: int, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(cmu_like_text(swinging_motion(frames, seed)))
    return path


def synthetic_positions(subjects=("S1", "S2"), clips: int = 2, frames: int = 300,
                        seed: int = 0) -> dict:
    """``positions_3d[subject][action]`` (world, metres, 17 joints, 50 Hz) from synthetic BVH."""
    from posekernels.data import import_bvh, parse_bvh

    out: dict = {}
    for i, s in enumerate(subjects):
        for c in range(clips):
            text = cmu_like_text(swinging_motion(frames, seed + 10 * i + c))
            res = import_bvh(parse_bvh(text, f"{s}_{c}.bvh"), repair_glitches=True)
            out.setdefault(s, {})[f"{s}_{c:02d}"] = res.positions.astype(np.float32)
    return out


__all__ = ["swinging_motion", "write_bvh", "synthetic_positions", "CMU_LIKE"]
