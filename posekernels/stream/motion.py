"""A built-in test motion: a procedural walk in place, h36m17 joints in metres (Z-up world).

:func:`synth_walk` needs no data file, so the demo and the benchmarks always have a sequence
with ground truth. The figure (about 1.7 m tall, Human3.6M-like bone lengths) walks on the spot
with a 1.1 s stride, swings its arms against its legs, bobs and sways with the gait, and turns
slowly about the vertical axis (one turn per ``turn_period`` seconds) so every camera sees it
from every side. A small seeded per-joint wobble keeps frames from repeating exactly.
"""
from __future__ import annotations

import numpy as np

__all__ = ["synth_walk", "camera_view", "user_camera"]


def _rot_x(a):
    c, s = np.cos(a), np.sin(a)
    z, o = np.zeros_like(a), np.ones_like(a)
    return np.stack([np.stack([o, z, z], -1), np.stack([z, c, -s], -1),
                     np.stack([z, s, c], -1)], -2)


def synth_walk(frames: int = 300, fps: float = 50.0, *, turn_period: float = 12.0,
               seed: int = 0) -> np.ndarray:
    """(frames, 17, 3) world positions in metres, h36m17 order, Z up, feet near z = 0."""
    if frames < 1 or fps <= 0:
        raise ValueError("frames must be >= 1 and fps > 0")
    t = np.arange(frames) / fps
    phase = 2 * np.pi * t / 1.1
    rng = np.random.default_rng(seed)
    # body frame: x = the figure's left-to-right axis, y = forward, z = up
    pelvis = np.stack([0.02 * np.sin(phase), np.zeros_like(t),
                       0.95 + 0.02 * np.cos(2 * phase)], -1)
    out = np.zeros((frames, 17, 3))
    out[:, 0] = pelvis
    down = np.array([0.0, 0.0, -1.0])

    def limb(a_sagittal):  # a unit vector rotated forward (about x) from straight down
        return np.einsum("fij,j->fi", _rot_x(a_sagittal), down)

    for side, sign, hip_j, knee_j, foot_j in (("R", 1.0, 1, 2, 3), ("L", -1.0, 4, 5, 6)):
        swing = 0.45 * np.sin(phase + (0 if side == "R" else np.pi))
        bend = 0.15 + 0.55 * np.clip(np.sin(phase + (0.6 if side == "R" else 0.6 + np.pi)), 0, 1)
        hip = pelvis + np.array([0.13 * sign, 0.0, 0.0])
        knee = hip + 0.45 * limb(swing)
        foot = knee + 0.44 * limb(swing - bend)
        out[:, hip_j], out[:, knee_j], out[:, foot_j] = hip, knee, foot
    lean = 0.05 + 0.02 * np.cos(2 * phase)
    spine = pelvis + 0.23 * limb(np.pi - lean)
    thorax = spine + 0.25 * limb(np.pi - lean)
    out[:, 7], out[:, 8] = spine, thorax
    out[:, 9] = thorax + np.array([0.0, 0.06, 0.10])
    out[:, 10] = thorax + np.array([0.0, 0.02, 0.24])
    for side, sign, sh_j, el_j, wr_j in (("L", -1.0, 11, 12, 13), ("R", 1.0, 14, 15, 16)):
        swing = 0.35 * np.sin(phase + (0 if side == "L" else np.pi))
        shoulder = thorax + np.array([0.16 * sign, 0.0, -0.02])
        elbow = shoulder + 0.28 * limb(swing)
        wrist = elbow + 0.25 * limb(swing + 0.3 + 0.2 * np.sin(phase) ** 2)
        out[:, sh_j], out[:, el_j], out[:, wr_j] = shoulder, elbow, wrist
    out += rng.normal(0.0, 0.004, size=out.shape)
    # turn about the vertical axis through the pelvis
    yaw = 2 * np.pi * t / turn_period
    c, s = np.cos(yaw), np.sin(yaw)
    rel = out - np.stack([pelvis[:, 0], pelvis[:, 1], np.zeros_like(t)], -1)[:, None]
    x = c[:, None] * rel[..., 0] - s[:, None] * rel[..., 1]
    y = s[:, None] * rel[..., 0] + c[:, None] * rel[..., 1]
    return np.stack([x, y, rel[..., 2]], -1)


def user_camera():
    """An ordinary camera unlike the default rig: 1920 x 1080, focal length 1400 px, 3.5 m from
    the subject at azimuth 30 degrees, 2.2 m high, looking down at the pelvis (0, 0, 0.95)."""
    from ..data.cameras import look_at_camera

    a = np.deg2rad(30.0)
    return look_at_camera("user", (3.5 * np.cos(a), 3.5 * np.sin(a), 2.2), (0.0, 0.0, 0.95),
                          width=1920, height=1080, focal=1400.0)


def camera_view(world: np.ndarray, camera_index: int | str = 0, *, with_root: bool = False):
    """Project a world sequence through camera ``camera_index`` of the default virtual rig, or
    through :func:`user_camera` for ``"user"``.

    Returns ``(keypoints2d, pose3d, camera)``: normalised screen coordinates (F, 17, 2) float32,
    the root-relative camera-frame ground truth (F, 17, 3) in metres, and the camera; with
    ``with_root``, also the root's camera-frame position (F, 3) in metres (where the person
    stands).
    """
    from ..data.virtual import default_rig, project_sequence

    if camera_index == "user":
        cam = user_camera()
    else:
        cams = default_rig()
        cam = cams[int(camera_index) % len(cams)]
    (uv, c3), = project_sequence(world, [cam], recenter_mode="sequence")
    kp = cam.normalize(uv).astype(np.float32)
    pose = (c3 - c3[:, :1]).astype(np.float32)
    return (kp, pose, cam, c3[:, 0].astype(np.float64)) if with_root else (kp, pose, cam)
