"""Random cameras: sampling, projection, training windows, augmentation and evaluation cameras."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from posekernels.data.random_cameras import (DEFAULT_CAMERAS, EVALUATION_CAMERAS,
                                             CameraDistribution, camera_distribution_from_dict,
                                             evaluation_cameras, project_windows, sample_cameras)
from posekernels.skeletons import get_skeleton
from posekernels.training.camera_data import (Augment2D, RandomCameraWindows,
                                              augment_2d_from_dict, fill_missing_windows)


def _walk(frames: int, rng: np.random.Generator, speed: float = 1.2) -> np.ndarray:
    """A plausible moving h36m17 body: a random rest pose (about 1.7 m tall) translated along a
    random heading with random joint wobble (world metres, z up, pelvis about 0.95 m high)."""
    base = np.array([[0, 0, .95], [-.12, 0, .95], [-.12, 0, .5], [-.12, 0, .08], [.12, 0, .95],
                     [.12, 0, .5], [.12, 0, .08], [0, 0, 1.2], [0, 0, 1.45], [0, 0, 1.55],
                     [0, 0, 1.7], [.18, 0, 1.42], [.3, 0, 1.15], [.35, 0, .9], [-.18, 0, 1.42],
                     [-.3, 0, 1.15], [-.35, 0, .9]])
    heading = rng.uniform(0, 2 * np.pi)
    c, s = np.cos(heading), np.sin(heading)
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    t = np.arange(frames)[:, None] / 50.0
    path = np.concatenate([speed * t * np.array([[c, s]]), np.zeros((frames, 1))], 1)
    wobble = 0.05 * rng.standard_normal((frames, 17, 3))
    return (base @ rot.T)[None] + path[:, None] + wobble + np.r_[rng.uniform(-2, 2, 2), 0]


def _project64(world, R, pos, f, c, k):
    """Independent float64 pinhole + radial projection (numpy)."""
    x = (world - pos) @ R.T
    xy = x[..., :2] / x[..., 2:3]
    r2 = (xy ** 2).sum(-1, keepdims=True)
    return xy * (1 + k[0] * r2 + k[1] * r2 ** 2) * f + c, x


def test_projection_matches_float64_reference_with_distortion():
    g = torch.Generator().manual_seed(int(torch.randint(0, 2 ** 31, ())))
    dist = CameraDistribution(k1=(-0.2, 0.2), k2=(-0.05, 0.05))
    look = torch.randn(64, 3, dtype=torch.float64, generator=g)
    look[:, 2] = 0.9 + 0.1 * look[:, 2]
    cams = sample_cameras(look, dist, generator=g)
    world = look[:, None, None] + 0.4 * torch.randn(64, 9, 17, 3, dtype=torch.float64,
                                                    generator=g)
    uv, xc, cams = project_windows(world, cams, min_depth=0.5)
    assert bool((cams.k.abs() > 0).any())
    for i in range(64):
        ref, xref = _project64(world[i].numpy(), cams.R[i].numpy(), cams.position[i].numpy(),
                               float(cams.focal[i]), cams.center[i].numpy(), cams.k[i].numpy())
        np.testing.assert_allclose(uv[i].numpy(), ref, rtol=1e-10, atol=1e-7)
        np.testing.assert_allclose(xc[i].numpy(), xref, rtol=1e-10, atol=1e-10)
    # the Camera objects of posekernels.data project the same way
    cam_list = cams.to_cameras()
    for i in (0, 17, 63):
        np.testing.assert_allclose(cam_list[i].project_world(world[i].numpy()), uv[i].numpy(),
                                   rtol=1e-9, atol=1e-6)


def test_rotation_is_orthonormal_and_focal_matches_fov():
    look = torch.zeros(500, 3, dtype=torch.float64)
    look[:, 2] = 1.0
    cams = sample_cameras(look)
    eye = torch.eye(3, dtype=torch.float64).expand(500, 3, 3)
    torch.testing.assert_close(torch.bmm(cams.R, cams.R.transpose(1, 2)), eye)
    assert torch.allclose(torch.linalg.det(cams.R), torch.ones(500, dtype=torch.float64))
    hfov = 2 * torch.rad2deg(torch.atan(cams.size[:, 0] / 2 / cams.focal))
    assert float(hfov.min()) >= 40 - 1e-9 and float(hfov.max()) <= 90 + 1e-9
    sizes = {tuple(int(v) for v in s) for s in cams.size}
    assert sizes <= set(DEFAULT_CAMERAS.image_sizes) and len(sizes) >= 5
    assert float(cams.position[:, 2].min()) >= 0.3 and float(cams.position[:, 2].max()) <= 3.0
    horiz = (cams.position[:, :2] - look[:, :2]).norm(dim=-1)
    assert float(horiz.min()) >= 2.0 - 1e-9 and float(horiz.max()) <= 9.0 + 1e-9
    pp = (cams.center - cams.size / 2).abs() / cams.size
    assert float(pp.max()) <= 0.02 + 1e-12


def test_windows_reproject_to_inputs_and_subject_in_view():
    rng = np.random.default_rng()
    sk = get_skeleton("h36m17")
    world = [_walk(int(rng.integers(60, 200)), rng, speed=float(rng.uniform(0, 3)))
             for _ in range(5)]
    for causal in (False, True):
        ds = RandomCameraWindows(world, receptive_field=27, causal=causal, flip=True,
                                 joints_left=sk.left, joints_right=sk.right, root=sk.root)
        ids = torch.randint(0, len(ds), (256,))
        x, y, cams = ds.batch(ids)
        assert x.shape == (256, 27, 17, 2) and y.shape == (256, 27, 17, 3)
        assert float(y[:, :, 0].abs().max()) == 0.0  # root-relative
        # reproject the target (plus the root in that camera's frame) with the sampled
        # intrinsics, in float64 with numpy: it gives the normalised input
        w = ds.world_windows(ids).double().numpy()
        for i in range(256):
            R, pos = cams.R[i].double().numpy(), cams.position[i].double().numpy()
            xc = (w[i] - pos) @ R.T
            assert xc[..., 2].min() >= 0.5 - 1e-4                  # in front of the camera
            np.testing.assert_allclose(y[i].numpy(), xc - xc[:, :1], atol=1e-5)
            full = y[i].double().numpy() + xc[:, :1]
            uv = full[..., :2] / full[..., 2:] * float(cams.focal[i]) + cams.center[i].numpy()
            wd, ht = (float(v) for v in cams.size[i])
            np.testing.assert_allclose(x[i].numpy(), uv / wd * 2 - [1, ht / wd], atol=2e-5)
            # a sane part of the image: the reference frame's pelvis well inside and its every
            # joint within half an image of the borders (the subject may walk out of the
            # picture during the window, as people do)
            ref = 26 if causal else 13
            rel = np.abs(uv[ref, 0] - [wd / 2, ht / 2]) / [wd / 2, ht / 2]
            assert rel.max() < 0.6
            size = np.array([wd, ht])
            assert (uv[ref] > -0.5 * size).all() and (uv[ref] < 1.5 * size).all()


def test_scale_jitter_scales_the_subject():
    rng = np.random.default_rng()
    sk = get_skeleton("h36m17")
    world = [_walk(60, rng, 0.0)]
    ds = RandomCameraWindows(world, receptive_field=1, joints_left=sk.left,
                             joints_right=sk.right, root=sk.root, scale_jitter=0.2)
    ids = torch.arange(60).repeat(20)
    _, y, _ = ds.batch(ids)
    ref = ds.world_windows(ids)
    size = y[:, 0].norm(dim=-1).sum(-1) / (ref[:, 0] - ref[:, 0, :1]).norm(dim=-1).sum(-1)
    assert float(size.min()) >= 0.8 - 1e-5 and float(size.max()) <= 1.2 + 1e-5
    assert float(size.max() - size.min()) > 0.2


def _jittered_walk(rng: np.random.Generator, **kw):
    """(skeleton, windows of a walk on the spot, the same after ``jitter_bones``
    (``RandomCameraWindows`` keywords ``kw``)); the root trajectory is checked unchanged."""
    sk = get_skeleton("h36m17")
    world = [_walk(60, rng, 0.0)]
    ds = RandomCameraWindows(world, receptive_field=9, joints_left=sk.left, joints_right=sk.right,
                             root=sk.root, parents=sk.parents, **kw)
    ref = ds.world_windows(torch.arange(60).repeat(10)).double()
    got = ds.jitter_bones(ref)
    torch.testing.assert_close(got[:, :, sk.root], ref[:, :, sk.root], rtol=0, atol=0)
    return sk, ref, got


def test_bone_jitter_changes_proportions_symmetrically():
    rng = np.random.default_rng()
    jit = float(rng.uniform(0.05, 0.3))
    sk, ref, got = _jittered_walk(rng, bone_jitter=jit)
    factors = []
    for j, q in enumerate(sk.parents):
        if q < 0:
            continue
        a = (got[:, :, j] - got[:, :, q]).norm(dim=-1)
        b = (ref[:, :, j] - ref[:, :, q]).norm(dim=-1)
        f = a / b
        # one factor per window and bone, constant over the window's frames, in 1 +- jit
        torch.testing.assert_close(f, f[:, :1].expand_as(f))
        assert float(f.min()) >= 1 - jit - 1e-9 and float(f.max()) <= 1 + jit + 1e-9
        # the bone keeps its direction
        cos = ((got[:, :, j] - got[:, :, q]) * (ref[:, :, j] - ref[:, :, q])).sum(-1) / (a * b)
        assert float(cos.min()) > 1 - 1e-9
        factors.append(f[:, 0])
    factors = torch.stack(factors, 1)                       # (N, bones), bone j-1 ends at j
    for left, right in zip(sk.left, sk.right):              # mirror bones share the factor
        torch.testing.assert_close(factors[:, left - 1], factors[:, right - 1])
    assert float(factors.std(0).min()) > jit / 4            # drawn afresh per window


def test_rotation_matrices_match_the_matrix_exponential():
    from posekernels.training.camera_data import _rotation_matrices
    g = torch.Generator().manual_seed(int(np.random.default_rng().integers(1 << 31)))
    axis = torch.randn(7, 5, 3, generator=g, dtype=torch.float64)
    axis = axis / axis.norm(dim=-1, keepdim=True)
    angle = (torch.rand(7, 5, generator=g, dtype=torch.float64) * 2 - 1) * math.pi
    x, y, z = axis.unbind(-1)
    k = torch.zeros(7, 5, 3, 3, dtype=torch.float64)
    k[..., 0, 1], k[..., 0, 2], k[..., 1, 2] = -z, y, -x
    k = k - k.transpose(-1, -2)
    torch.testing.assert_close(_rotation_matrices(axis, angle),
                               torch.linalg.matrix_exp(angle[..., None, None] * k))


def test_bone_rotation_turns_each_bone_rigidly_over_the_window():
    rng = np.random.default_rng()
    deg = float(rng.uniform(5, 40))
    sk, ref, got = _jittered_walk(rng, bone_rotation=deg)
    angles = {}
    for j, q in enumerate(sk.parents):
        if q < 0:
            continue
        a, b = got[:, :, j] - got[:, :, q], ref[:, :, j] - ref[:, :, q]
        torch.testing.assert_close(a.norm(dim=-1), b.norm(dim=-1))      # lengths kept
        # one rotation per window: the best rotation over the window's frames (Kabsch, float64)
        u, _, vh = torch.linalg.svd(a.transpose(1, 2) @ b)
        d = torch.sign(torch.linalg.det(u @ vh))
        r = u @ torch.diag_embed(torch.stack([torch.ones_like(d), torch.ones_like(d), d], -1)) @ vh
        torch.testing.assert_close(torch.einsum("nij,ntj->nti", r, b), a, atol=1e-9, rtol=0)
        ang = torch.rad2deg(torch.arccos(((r.diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2)
                                         .clamp(-1, 1)))
        assert float(ang.max()) <= deg + 1e-6
        angles[j] = ang
    spread = torch.stack(list(angles.values()), 1)
    assert float(spread.mean()) > deg / 4                     # drawn afresh, not near zero
    left, right = sk.left[1], sk.right[1]                     # mirror bones turn independently
    assert float((angles[left] - angles[right]).abs().max()) > 1.0


def test_limb_swing_rescales_each_limb_angle_about_its_window_mean():
    rng = np.random.default_rng()
    lo = float(rng.uniform(0.5, 1.0))
    hi = float(rng.uniform(1.1, 2.0))
    sk, ref, got = _jittered_walk(rng, limb_swing=(lo, hi))
    sided = set(sk.left) | set(sk.right)
    ref, got = ref.double(), got.double()
    factors = {}
    for j, q in enumerate(sk.parents):
        if q < 0:
            continue
        a, b = got[:, :, j] - got[:, :, q], ref[:, :, j] - ref[:, :, q]
        torch.testing.assert_close(a.norm(dim=-1), b.norm(dim=-1))      # lengths kept
        if not (j in sided and sk.parents[j] in sided):                 # trunk, offsets: as is
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
            continue
        # independent float64 computation: the mean direction of the recorded bone over the
        # window, each frame's angle to it and the plane they span
        ub = b / b.norm(dim=-1, keepdim=True)
        ua = a / a.norm(dim=-1, keepdim=True)
        m = ub.mean(1, keepdim=True)
        m = m / m.norm(dim=-1, keepdim=True)
        ang_b = torch.arccos((ub * m).sum(-1).clamp(-1, 1))
        ang_a = torch.arccos((ua * m).sum(-1).clamp(-1, 1))
        big = ang_b > 0.05                                  # frames with a measurable swing
        f = torch.where(big, ang_a / ang_b.clamp_min(1e-12), torch.nan)
        fw = torch.nanmean(f, 1)                            # one factor per window
        ok = big.any(1)
        assert ok.sum() > 10
        torch.testing.assert_close(f[big], fw[:, None].expand_as(f)[big], atol=1e-6, rtol=1e-6)
        assert float(fw[ok].min()) >= lo - 1e-6 and float(fw[ok].max()) <= hi + 1e-6
        # the new direction lies in the plane of the old one and the mean (same side of m)
        n = torch.cross(m.expand_as(ub), ub, dim=-1)
        assert float(((ua * n).sum(-1)[big]).abs().max()) < 1e-6
        side = (torch.cross(m.expand_as(ua), ua, dim=-1) * n).sum(-1)
        assert bool((side[big] > 0).all())
        factors[j] = torch.where(ok, fw, torch.nan)
    for left, right in zip(sk.left, sk.right):              # mirror limbs share the factor
        if left in factors:
            both = ~(factors[left].isnan() | factors[right].isnan())
            torch.testing.assert_close(factors[left][both], factors[right][both], atol=1e-6,
                                       rtol=1e-6)
    allf = torch.cat([f[~f.isnan()] for f in factors.values()])
    assert float(allf.max() - allf.min()) > (hi - lo) / 2  # drawn afresh per window


@pytest.mark.parametrize("value", [(0.3, 1.2), (1.2, 1.1), (1.0, 2.5), "wide", (1.0,)])
def test_limb_swing_range_is_checked(value):
    sk = get_skeleton("h36m17")
    with pytest.raises(ValueError, match="limb_swing"):
        RandomCameraWindows([_walk(30, np.random.default_rng(), 0.0)], receptive_field=9,
                            joints_left=sk.left, joints_right=sk.right, root=sk.root,
                            parents=sk.parents, limb_swing=value)


@pytest.mark.parametrize("kw, match", [
    ({"bone_jitter": 0.6}, "bone_jitter"), ({"bone_jitter": -0.1}, "bone_jitter"),
    ({"bone_rotation": 50.0}, "bone_rotation"), ({"bone_rotation": -1.0}, "bone_rotation"),
    ({"bone_jitter": 0.1, "parents": None}, "parents"),
    ({"bone_rotation": 10.0, "parents": None}, "parents"),
    ({"limb_swing": (0.8, 1.2), "parents": None}, "parents")])
def test_bone_jitter_and_rotation_arguments_are_checked(kw, match):
    sk = get_skeleton("h36m17")
    kw = {"parents": sk.parents, **kw}
    with pytest.raises(ValueError, match=match):
        RandomCameraWindows([_walk(20, np.random.default_rng(), 0.0)], receptive_field=9,
                            joints_left=sk.left, joints_right=sk.right, **kw)


def _leading_repeats(a: torch.Tensor) -> torch.Tensor:
    """(N,) how many of each window's first slots (N, T, ...) are exactly its slot 0."""
    same = (a == a[:, :1]).flatten(2).all(-1)
    return same.long().cumprod(1).sum(1)


@pytest.mark.parametrize("causal", [True, False])
def test_track_start_pads_windows_like_a_new_track(causal):
    rng = np.random.default_rng()
    sk = get_skeleton("h36m17")
    t = 9
    world = [_walk(int(rng.integers(80, 120)), rng) for _ in range(3)]
    kw = dict(receptive_field=t, causal=causal, joints_left=sk.left, joints_right=sk.right,
              root=sk.root, augment=Augment2D(frame_drop_prob=0.0), flip=True)
    # (no dropped frames: a dropped frame is filled with the one before, a repeat of its own)
    ds = RandomCameraWindows(world, track_start=1.0, **kw)
    ids = torch.randint(0, len(ds), (3000,))
    x, y, _ = ds.batch(ids)
    # every window starts its track inside the window: its slots before the track's first frame
    # repeat that frame, the 2D input (noise and all) exactly as the 3D target
    lead_x, lead_y = _leading_repeats(x), _leading_repeats(y)
    assert torch.equal(lead_x, lead_y)
    ref = ds.ref
    assert int(lead_y.min()) >= 2
    # (a centred track may also end at the reference frame: then the whole window repeats it)
    lead_y = lead_y.clamp_max(ref + 1)
    # the number of real frames before the reference frame is uniform over 0 .. ref - 1
    counts = torch.bincount(ref + 1 - lead_y, minlength=ref)[:ref].double()
    assert float(counts.min()) > 0.6 * len(ids) / ref
    if not causal:                                           # and the track's last frames
        trail = _leading_repeats(y.flip(1))
        assert torch.equal(trail, _leading_repeats(x.flip(1)))
        assert int(trail.min()) >= 2
        assert set(trail.clamp_max(t - ref).tolist()) == set(range(2, t - ref + 1))
    # the reference frame is the sample's own frame: its world pose is the unpadded one
    first, last = ds.track_ends(len(ids))
    assert bool((first <= ref).all()) and bool((last >= ref).all())
    # with probability p a window is a track's start; without it windows are untouched
    p = float(rng.uniform(0.2, 0.8))
    first, _ = RandomCameraWindows(world, track_start=p, **kw).track_ends(20000)
    assert abs(float((first > 0).double().mean()) - p) < 0.03
    plain = RandomCameraWindows(world, **kw)
    assert plain.track_ends(10) is None
    # at a clip's ends the padded slots repeat the clip's first (last) frame's detection too,
    # not a fresh draw of noise per slot
    x0, y0, _ = plain.batch(ids)
    lead = _leading_repeats(y0)
    assert torch.equal(_leading_repeats(x0), lead)
    assert 0 < float((lead >= 2).double().mean()) < 0.2                # clip starts only
    # and so with windows played faster or slower (interpolated between recorded frames)
    fast = RandomCameraWindows(world, track_start=0.5, speed_range=[0.5, 2.0], **kw)
    xs, ys, _ = fast.batch(ids)
    assert torch.equal(_leading_repeats(xs), _leading_repeats(ys))
    if not causal:
        assert torch.equal(_leading_repeats(xs.flip(1)), _leading_repeats(ys.flip(1)))
    with pytest.raises(ValueError, match="track_start"):
        RandomCameraWindows(world, track_start=1.5, **kw)


def test_speed_range_plays_windows_faster_or_slower():
    rng = np.random.default_rng()
    sk = get_skeleton("h36m17")
    frames = 90
    # every joint moves on a straight line at its own constant velocity: a window played s
    # times as fast is the same line sampled s times as far apart (clamped at the clip's ends)
    base = rng.normal(size=(1, 17, 3))
    vel = rng.normal(size=(1, 17, 3)) * 0.01
    world = [base + vel * np.arange(frames)[:, None, None]]
    for causal in (False, True):
        ds = RandomCameraWindows(world, receptive_field=27, causal=causal, joints_left=sk.left,
                                 joints_right=sk.right, root=sk.root, speed_range=(0.5, 2.5))
        ids = torch.randint(0, ds.num_frames, (64,))
        speed = torch.empty(64).uniform_(0.5, 2.5)
        got = ds.world_windows(ids, speed).double()
        ref = 26 if causal else 13
        t = ids.double()[:, None] + (torch.arange(27).double() - ref)[None] * speed.double()[:, None]
        t = t.clamp(0, frames - 1)
        want = torch.from_numpy(base)[None] + torch.from_numpy(vel)[None] * t[..., None, None]
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
        torch.testing.assert_close(ds.world_windows(ids, torch.ones(64)), ds.world_windows(ids))
        # the reference slot is the recorded frame itself
        torch.testing.assert_close(got[:, ref], torch.from_numpy(world[0])[ids], rtol=0, atol=1e-6)
    x, y, _ = ds.batch(torch.arange(32))  # drawn per window inside batch()
    assert x.shape == (32, 27, 17, 2) and torch.isfinite(y).all()
    for bad in ((0.1, 1.0), (2.0, 1.0), (1.0,), "fast"):
        with pytest.raises(ValueError, match="speed_range"):
            RandomCameraWindows(world, receptive_field=27, joints_left=sk.left,
                                joints_right=sk.right, speed_range=bad)


def test_flipped_samples_are_mirrored_world_poses():
    rng = np.random.default_rng()
    sk = get_skeleton("h36m17")
    world = [_walk(80, rng)]
    ds = RandomCameraWindows(world, receptive_field=9, flip=True, joints_left=sk.left,
                             joints_right=sk.right, root=sk.root)
    m = ds.num_frames
    ids = torch.arange(m)
    a, b = ds.world_windows(ids).double(), ds.world_windows(ids + m).double()
    perm = ds.perm
    mirrored = b[:, :, perm]
    # mirror about the reference root's x: x' = 2 r - x, other axes unchanged
    r = a[:, 4, 0, 0][:, None, None]
    torch.testing.assert_close(mirrored[..., 0], 2 * r - a[..., 0])
    torch.testing.assert_close(mirrored[..., 1:], a[..., 1:])


def test_bad_ranges_are_rejected_naming_the_key():
    with pytest.raises(ValueError, match="hfov_deg"):
        camera_distribution_from_dict({"hfov_deg": [90, 40]})
    with pytest.raises(ValueError, match="distance"):
        camera_distribution_from_dict({"distance": [0.1, 5]})
    with pytest.raises(ValueError, match="image_sizes"):
        camera_distribution_from_dict({"image_sizes": [[640, 0]]})
    with pytest.raises(ValueError, match="unknown key"):
        camera_distribution_from_dict({"focal": 3})
    with pytest.raises(ValueError, match="center_jitter"):
        camera_distribution_from_dict({"center_jitter": True})
    with pytest.raises(ValueError, match="missing_max"):
        augment_2d_from_dict({"missing_max": 2.0})
    with pytest.raises(ValueError, match="rho"):
        augment_2d_from_dict({"rho": [0.5, 1.0]})
    from posekernels.training import ConfigError, config_from_dict

    with pytest.raises(ConfigError, match="camera_distribution.*height"):
        config_from_dict({"cameras": "random", "camera_distribution": {"height": [3, 1]}})
    with pytest.raises(ConfigError, match="cameras"):
        config_from_dict({"cameras": "fisheye"})
    with pytest.raises(ConfigError, match="augment_2d"):
        config_from_dict({"cameras": "rig", "augment_2d": True})


def test_fill_missing_windows_is_the_streaming_rule():
    from posekernels.stream import fill_missing

    g = torch.Generator().manual_seed(int(torch.randint(0, 2 ** 31, ())))
    uv = torch.randn(6, 20, 17, 2, dtype=torch.float64, generator=g)
    valid = torch.rand(6, 20, 17, generator=g) > 0.3
    valid[2, :3] = False  # a window whose first frames have nothing valid
    out = fill_missing_windows(uv, valid)
    for i in range(6):
        ref = fill_missing(torch.where(valid[i, ..., None], uv[i], float("nan")).numpy())
        np.testing.assert_allclose(out[i].numpy(), ref, rtol=0, atol=0)


def test_augment_statistics():
    g = torch.Generator().manual_seed(int(torch.randint(0, 2 ** 31, ())))
    n, t, v = 4000, 9, 17
    uv = 500 + 100 * torch.randn(n, t, v, 2, dtype=torch.float64, generator=g)
    aug = Augment2D(outlier_prob=0.0, swap_prob=0.0, missing_sample_prob=1.0, missing_max=0.2,
                    frame_drop_prob=0.0)
    out, valid = aug(uv, torch.full((n,), 1000.0, dtype=torch.float64), [4, 5, 6], [1, 2, 3],
                     generator=g)
    miss = 1 - valid.double().mean()
    assert abs(float(miss) - 0.1) < 0.01           # rate uniform in [0, 0.2]: mean 0.1
    noise = (out - uv)
    assert float(noise.abs().mean()) > 0.5          # noise is there
    none = Augment2D(sigma_px=0, sigma_rel=0, outlier_prob=0, swap_prob=0, missing_sample_prob=0,
                     frame_drop_prob=0)
    same, valid = none(uv, torch.full((n,), 1000.0, dtype=torch.float64), [4], [1], generator=g)
    assert torch.equal(same, uv) and bool(valid.all())


def test_evaluation_cameras_are_fixed_by_seed_and_see_the_whole_clip():
    rng = np.random.default_rng()
    clip = _walk(300, rng, speed=2.5)
    a = evaluation_cameras(clip, 5, seed=7, key="S/a")
    b = evaluation_cameras(clip, 5, seed=7, key="S/a")
    c = evaluation_cameras(clip, 5, seed=8, key="S/a")
    assert [x.to_dict() for x in a] == [x.to_dict() for x in b]
    assert [x.to_dict() for x in a] != [x.to_dict() for x in c]
    for cam in a:
        xc = cam.world_to_camera(clip)
        assert xc[..., 2].min() >= 1.0 - 1e-9
    with pytest.raises(ValueError, match="num_cameras"):
        evaluation_cameras(clip, 0)
    assert EVALUATION_CAMERAS.subject_offset == 0.0


def test_evaluate_random_cameras_same_seed_same_json(tmp_path, capsys):
    from posekernels.cli import main
    from posekernels.data import save_positions_3d
    from posekernels.models import GLAGCN
    from posekernels.training import save_checkpoint

    rng = np.random.default_rng()
    path = tmp_path / "data_3d_walk.npz"
    save_positions_3d(path, {"S9": {"walk": _walk(90, rng), "run": _walk(70, rng, 3.0)}})
    torch.manual_seed(int(rng.integers(0, 2 ** 31)))
    model = GLAGCN(receptive_field=9, channels=8, sequence_branch=False, head="shared").eval()
    ck = tmp_path / "m.pt"
    save_checkpoint(str(ck), model, model_config={"arch": "glagcn", "receptive_field": 9,
                                                  "channels": 8, "sequence_branch": False,
                                                  "head": "shared"})
    outs = []
    for seed in (11, 11, 12):
        assert main(["evaluate", "--data-3d", str(path), "--checkpoint", str(ck), "--cameras",
                     "random", "--num-cameras", "3", "--camera-seed", str(seed), "--json"]) == 0
        outs.append(json.loads(capsys.readouterr().out))
    assert outs[0] == outs[1]
    assert outs[0]["mpjpe"] != outs[2]["mpjpe"]
    cams = outs[0]["cameras"]
    assert cams["kind"] == "random" and cams["seed"] == 11 and cams["num_cameras"] == 3
    assert len(cams["per_clip"]["S9/walk"]) == 3
    assert main(["evaluate", "--data-3d", str(path), "--checkpoint", str(ck), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["cameras"] == {"kind": "rig"}
    assert main(["evaluate", "--data-3d", str(path), "--checkpoint", str(ck), "--cameras",
                 "random", "--num-cameras", "0"]) == 1
    assert "--num-cameras" in capsys.readouterr().err


def test_training_with_random_cameras_lowers_the_loss(tmp_path):
    from posekernels.training import config_from_dict, train

    rng = np.random.default_rng()
    data = {s: {a: _walk(int(rng.integers(80, 140)), rng, float(rng.uniform(0, 2)))
                for a in ("walk", "run")} for s in ("A", "B", "C")}
    cfg = config_from_dict({
        "model": {"arch": "glagcn", "receptive_field": 9, "channels": 16,
                  "sequence_branch": True, "head": "icl", "causal": True},
        "val_subjects": ["C"], "epochs": 3, "batch_size": 32, "optimizer": "adam", "lr": 3e-3,
        "cameras": "random", "augment_2d": True, "scale_jitter": 0.1, "val_cameras": "random",
        "val_num_cameras": 2, "detector_noise": True, "device": "cpu", "out_dir": str(tmp_path),
        "progress": False, "amp_cpu": True})  # bf16 autocast on the CPU
    result = train(cfg, positions_3d=data, log=lambda *a: None)
    losses = [h["loss"] for h in result["history"]]
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0]
    assert math.isfinite(result["metrics"]["mpjpe"])


@pytest.mark.parametrize("causal", [False, True])
def test_streaming_on_random_cameras_agrees_with_evaluate(causal):
    from posekernels.evaluation import evaluate_sequences, headline, sequences_from_3d
    from posekernels.metrics import MetricAccumulator
    from posekernels.models import GLAGCN
    from posekernels.stream import StreamingLifter

    rng = np.random.default_rng()
    data = {"S9": {"walk": _walk(70, rng), "run": _walk(50, rng, 3.0)}}
    seqs = sequences_from_3d(data, cameras="random", num_cameras=2, detector_noise=True,
                             camera_seed=int(rng.integers(0, 2 ** 31)))
    torch.manual_seed(int(rng.integers(0, 2 ** 31)))
    model = GLAGCN(receptive_field=9, channels=8, sequence_branch=False, head="shared",
                   causal=causal).eval()
    ref = headline(evaluate_sequences(model, seqs, flip_tta=False).summary())
    acc = MetricAccumulator(root=0)
    lifter = StreamingLifter(model, num_streams=1)
    for seq in seqs:
        lifter.reset()
        kp = seq.normalized_2d().astype(np.float32)
        outs = [p[0] for f in range(len(kp)) if (p := lifter.push(kp[f][None])) is not None]
        rest = lifter.flush()
        pred = np.concatenate([np.stack(outs)] + ([rest] if len(rest) else []))
        acc.add(seq.subject, seq.action, pred, seq.positions_3d)
    got = headline(acc.summary())
    for key in ("mpjpe", "p_mpjpe", "n_mpjpe"):
        assert abs(got[key] - ref[key]) < 1e-3, (key, got[key], ref[key])


@pytest.mark.parametrize("balance, motion", [(0.0, 1.0), (1.0, 0.5), (0.5, 2.0), (1.0, 0.0)])
def test_motion_weighted_sample_weights_match_float64(balance, motion):
    """sample_weights(balance, motion): the clip balance times (speed / mean) ** motion, a
    frame's speed the mean joint displacement relative to the root to the next frame of its
    sequence (the last frame: the step into it), floored at a tenth of the mean."""
    rng = np.random.default_rng()
    sk = get_skeleton("h36m17")
    world = [rng.standard_normal((int(rng.integers(2, 40)), 17, 3)) * rng.uniform(0.05, 0.5)
             + rng.standard_normal(3) for _ in range(int(rng.integers(2, 6)))]
    world.append(np.repeat(world[0][:1], 5, axis=0))  # a still clip: every frame floored
    stride = int(rng.integers(1, 4))
    valid = [np.arange(len(w)) % stride == 0 for w in world]
    ds = RandomCameraWindows(world, receptive_field=9, joints_left=sk.left,
                             joints_right=sk.right, root=sk.root, valid=valid)
    speeds, base = [], []
    for w, m in zip(world, valid):
        rel = w - w[:, sk.root:sk.root + 1]
        step = np.linalg.norm(np.diff(rel, axis=0), axis=-1).mean(-1)
        v = np.append(step, step[-1]) if len(w) > 1 else np.zeros(1)
        speeds.append(v[m])
        base.append(np.full(int(m.sum()), float(m.sum()) ** -balance))
    v, base = np.concatenate(speeds), np.concatenate(base)
    expect = base * np.maximum(v / v.mean(), 0.1) ** motion
    got = ds.sample_weights(balance, motion=motion)
    assert got.dtype == torch.float64 and got.shape == (ds.num_frames,)
    np.testing.assert_allclose(got.numpy(), expect, rtol=1e-5)
    if motion > 0:  # faster frames weigh more within a clip of equal balance weights
        assert float(got[-1]) < float(got.max())


@pytest.mark.parametrize("motion", [-0.5, 4.5, float("nan")])
def test_motion_weight_range_is_checked(motion):
    sk = get_skeleton("h36m17")
    ds = RandomCameraWindows([_walk(30, np.random.default_rng())], receptive_field=9,
                             joints_left=sk.left, joints_right=sk.right, root=sk.root)
    with pytest.raises(ValueError, match="motion"):
        ds.sample_weights(1.0, motion=motion)
