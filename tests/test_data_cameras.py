"""Cameras, projection with distortion, normalisation, and the virtual rig with detector noise."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from posekernels.data import cameras as C
from posekernels.data import formats as F
from posekernels.data import virtual as V


def rand_quat(rng, n=None):
    q = rng.normal(size=(4,) if n is None else (n, 4))
    return q / np.linalg.norm(q, axis=-1, keepdims=True)


def test_quaternions_against_scipy():
    rng = np.random.default_rng(10)
    q = rand_quat(rng, 20)
    want = Rotation.from_quat(q[:, [1, 2, 3, 0]]).as_matrix()  # scipy is (x, y, z, w)
    np.testing.assert_allclose(C.quaternion_to_matrix(q), want, atol=1e-12)
    for qi in list(q) + [np.array([0.0, 1.0, 0.0, 0.0]), np.array([0.0, 0.0, 0.0, 1.0]),
                         np.array([0.0, 0.6, 0.8, 0.0])]:
        back = C.matrix_to_quaternion(C.quaternion_to_matrix(qi))
        assert np.allclose(back, qi, atol=1e-10) or np.allclose(back, -qi, atol=1e-10)
    v = rng.normal(size=(20, 5, 3))
    got = C.qrot(q[:, None, :], v)
    np.testing.assert_allclose(got, np.einsum("nij,nkj->nki", want, v), atol=1e-12)
    got_t = C.qrot(q[:, None, :], torch.tensor(v))
    np.testing.assert_allclose(got_t.numpy(), got, atol=1e-12)


def test_world_camera_round_trip():
    rng = np.random.default_rng(11)
    q, t = rand_quat(rng), rng.normal(size=3) * 3
    x = rng.normal(size=(8, 17, 3))
    r = C.quaternion_to_matrix(q)
    cam = C.world_to_camera(x, q, t)
    np.testing.assert_allclose(cam, (x - t) @ r, atol=1e-12)          # R^T (X - t)
    np.testing.assert_allclose(C.camera_to_world(cam, q, t), x, atol=1e-12)
    cam_t = C.world_to_camera(torch.tensor(x), q, t)
    np.testing.assert_allclose(cam_t.numpy(), cam, atol=1e-12)


def ref_project(p, f, c, k, tan, model):
    out = []
    for x, y, z in p.reshape(-1, 3):
        x, y = x / z, y / z
        r2 = x * x + y * y
        rad = 1 + k[0] * r2 + k[1] * r2 ** 2 + k[2] * r2 ** 3
        if model == "brown":
            xd = x * rad + 2 * tan[0] * x * y + tan[1] * (r2 + 2 * x * x)
            yd = y * rad + tan[0] * (r2 + 2 * y * y) + 2 * tan[1] * x * y
        else:
            s = rad + tan[0] * x + tan[1] * y
            xd, yd = x * s + tan[0] * r2, y * s + tan[1] * r2
        out.append((f[0] * xd + c[0], f[1] * yd + c[1]))
    return np.array(out).reshape(p.shape[:-1] + (2,))


@pytest.mark.parametrize("model", ["brown", "h36m"])
def test_projection_with_distortion(model):
    rng = np.random.default_rng(12)
    p = rng.normal(size=(6, 17, 3)) * 0.5 + np.array([0.2, -0.1, 4.5])
    f, c = (1145.0, 1143.8), (512.5, 515.4)
    k, tan = (-0.207, 0.247, -0.003), (-0.0014, -0.0009)
    got = C.project_to_2d(p, f, c, k, tan, model=model)
    np.testing.assert_allclose(got, ref_project(p, f, c, k, tan, model), atol=1e-9)
    got_t = C.project_to_2d(torch.tensor(p), f, c, k, tan, model=model)
    np.testing.assert_allclose(got_t.numpy(), got, atol=1e-9)
    plain = C.project_to_2d(p, f, c)
    np.testing.assert_allclose(plain, p[..., :2] / p[..., 2:] * f + c, atol=1e-9)
    with pytest.raises(ValueError):
        C.project_to_2d(p, f, c, model="fisheye")


def test_screen_normalisation():
    rng = np.random.default_rng(13)
    uv = rng.uniform(0, 1000, size=(5, 17, 2))
    n = C.normalize_screen_coordinates(uv, 1000, 1002)
    np.testing.assert_allclose(n, uv / 1000 * 2 - [1, 1.002])
    np.testing.assert_allclose(C.image_coordinates(n, 1000, 1002), uv, atol=1e-9)
    np.testing.assert_allclose(C.normalize_screen_coordinates(np.array([[0.0, 0.0], [1000, 500]]),
                                                              1000, 1000), [[-1, -1], [1, 0]])
    nt = C.normalize_screen_coordinates(torch.tensor(uv, dtype=torch.float32), 1000, 1002)
    assert nt.dtype == torch.float32
    np.testing.assert_allclose(nt.numpy(), n, atol=1e-5)


def test_look_at_camera_and_json(tmp_path):
    cam = C.look_at_camera("c", (4.0, -3.0, 1.6), (0.0, 0.0, 1.0), width=1000, height=800,
                           focal=1150.0)
    r = cam.rotation
    np.testing.assert_allclose(r.T @ r, np.eye(3), atol=1e-12)
    assert np.linalg.det(r) == pytest.approx(1.0)
    np.testing.assert_allclose(cam.project_world(np.array([[0.0, 0.0, 1.0]])), [[500, 400]],
                               atol=1e-9)
    above, below = cam.project_world(np.array([[0, 0, 1.5], [0, 0, 0.5]]))
    assert above[1] < 400 < below[1]                      # image y points down
    right = np.cross(r[:, 2], [0, 0, 1])                  # camera's right in the world
    assert cam.project_world(np.array([right * 0.5 + [0, 0, 1.0]]))[0, 0] > 500
    path = tmp_path / "cams.json"
    C.save_cameras_json(path, {"S1": [cam]})
    back = C.load_cameras_json(path)["S1"][0]
    assert back == cam
    doc = {"units": "mm", "subjects": {"S9": [{"name": "54138969", "width": 1000, "height": 1002,
                                               "focal_length": [1145.0, 1143.8],
                                               "center": [512.5, 515.4],
                                               "orientation": [0.14, -0.15, -0.76, 0.62],
                                               "translation": [1841.1, 4955.3, 1563.4],
                                               "radial_distortion": [-0.2, 0.24, -0.003],
                                               "tangential_distortion": [-0.001, -0.0009],
                                               "distortion_model": "h36m"}]}}
    path.write_text(json.dumps(doc))
    c9 = C.load_cameras_json(path)["S9"][0]
    np.testing.assert_allclose(c9.translation, [1.8411, 4.9553, 1.5634])
    path.write_text(json.dumps({"subjects": {"S1": [{"name": "x", "width": 10}]}}))
    with pytest.raises(ValueError, match=r"cams\.json: subjects\['S1'\]\[0\]"):
        C.load_cameras_json(path)
    path.write_text("{not json")
    with pytest.raises(ValueError, match=r"cams\.json: cannot read"):
        C.load_cameras_json(path)


# ---- virtual rig ----------------------------------------------------------------------------
def walking_sequence(rng, frames=80):
    """A 17-joint body (Z-up, metres) drifting across the floor with some wobble."""
    base = rng.normal(size=(17, 3)) * np.array([0.15, 0.1, 0.4]) + np.array([0, 0, 1.0])
    base[0] = (0.0, 0.0, 0.95)
    t = np.arange(frames) / 50.0
    drift = np.stack([1.2 * t + 3.0, 0.3 * np.sin(t), np.zeros_like(t)], -1)
    return base[None] + drift[:, None] + rng.normal(size=(frames, 17, 3)) * 0.01


def test_default_rig_geometry():
    cams = V.default_rig()
    assert [c.name for c in cams] == ["vcam0", "vcam1", "vcam2", "vcam3"]
    for c in cams:
        assert (c.width, c.height, c.focal_length, c.center) == (1000, 1000, (1150.0, 1150.0),
                                                                 (500.0, 500.0))
        assert np.hypot(*c.translation[:2]) == pytest.approx(5.5)
        assert c.translation[2] == pytest.approx(1.6)
        np.testing.assert_allclose(c.project_world(np.array([[0.0, 0.0, 1.0]])), [[500, 500]],
                                   atol=1e-9)
    az = sorted(np.degrees(np.arctan2(c.translation[1], c.translation[0])) % 360 for c in cams)
    np.testing.assert_allclose(az, [45, 135, 225, 315])


def test_project_sequences_recentre_and_consistency(tmp_path):
    rng = np.random.default_rng(20)
    seq = walking_sequence(rng)
    seqs = V.project_sequences({"07": {"07_01": seq}}, fps=50.0)
    assert len(seqs) == 4 and seqs[0].key == ("07", "07_01", "vcam0")
    cams = V.default_rig()
    for s, cam in zip(seqs, cams):
        np.testing.assert_allclose(s.positions_2d, cam.project(s.positions_3d), atol=1e-9)
        world = cam.camera_to_world(s.positions_3d)
        np.testing.assert_allclose(world[:, 0, :2].mean(0), [0, 0], atol=1e-9)   # re-centred
        np.testing.assert_allclose(world[..., 2], seq[..., 2], atol=1e-9)          # height kept
        np.testing.assert_allclose(world - world[:, :1], seq - seq[:, :1], atol=1e-9)
        assert (s.positions_3d[..., 2] > 3.0).all()
        assert s.image_size == (1000, 1000) and s.fps == 50.0
    # Without re-centring, the sequence 3 m + away walks into a camera: clear error.
    far = seq + np.array([4.5, 4.5, 0.0])
    with pytest.raises(ValueError, match="07/far.*vcam0"):
        V.project_sequences({"07": {"far": far}}, recenter_mode="none")
    # Into the 2D npz format and back.
    pos2d = V.positions_2d_from_sequences(seqs)
    path = tmp_path / "data_2d_cmu_gt.npz"
    F.save_positions_2d(path, pos2d)
    back, meta = F.load_positions_2d(path)
    assert len(back["07"]["07_01"]) == 4 and meta["num_joints"] == 17
    np.testing.assert_allclose(back["07"]["07_01"][2], seqs[2].positions_2d, rtol=1e-6)


def test_detector_noise_is_seeded_and_has_the_stated_statistics():
    rng = np.random.default_rng(21)
    uv = rng.uniform(100, 900, size=(4000, 17, 2))
    plain = V.DetectorNoise(sigma_px=4.0, rho=0.7, outlier_prob=0.0, swap_prob=0.0, seed=3)
    a = plain(uv, ("S", "A", "vcam0"))
    np.testing.assert_array_equal(a, plain(uv, ("S", "A", "vcam0")))
    assert not np.allclose(a, plain(uv, ("S", "A", "vcam1")))
    assert not np.allclose(a, V.DetectorNoise(outlier_prob=0.0, swap_prob=0.0, seed=4)(
        uv, ("S", "A", "vcam0")))
    e = a - uv
    scale = np.asarray(V.DetectorNoise.H36M17_SCALE)
    np.testing.assert_allclose(e.std(axis=(0, 2)), 4.0 * scale, rtol=0.1)
    lag1 = np.mean([np.corrcoef(e[1:, j, 0], e[:-1, j, 0])[0, 1] for j in range(17)])
    assert lag1 == pytest.approx(0.7, abs=0.05)
    # Twice the image width -> twice the pixels.
    np.testing.assert_allclose((plain(uv, "k", width=2000) - uv).std(), 2 * (plain(uv, "k") - uv).std())
    # Outliers and left/right swaps.
    small = uv[:200]
    out = V.DetectorNoise(sigma_px=0.0, outlier_prob=1.0, outlier_px=40.0, swap_prob=0.0)(small)
    d = np.linalg.norm(out - small, axis=-1)
    assert d.min() >= 20 - 1e-9 and d.max() <= 60 + 1e-9
    sw = V.DetectorNoise(sigma_px=0.0, outlier_prob=0.0, swap_prob=1.0)(small)
    changed = (sw != small).any(-1)
    assert (changed.sum(1) == 2).all()   # exactly one left/right pair per frame
