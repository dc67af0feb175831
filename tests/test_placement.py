"""Undistortion (Camera.unproject) and placing root-relative poses in a camera's frame."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from posekernels.data.cameras import Camera, undistort_points
from posekernels.inference import place_in_camera


def _camera(rng: np.random.Generator, model: str = "brown", distorted: bool = True) -> Camera:
    w, h = [(640, 480), (1920, 1080), (1080, 1920)][int(rng.integers(3))]
    f = float(rng.uniform(0.6, 1.5)) * w
    return Camera("c", w, h, (f, f * float(rng.uniform(0.98, 1.02))),
                  (w / 2 + float(rng.uniform(-20, 20)), h / 2 + float(rng.uniform(-20, 20))),
                  radial_distortion=(tuple(rng.uniform(-0.15, 0.1, 3) * [1, 0.3, 0.1])
                                     if distorted else (0.0, 0.0, 0.0)),
                  tangential_distortion=(tuple(rng.uniform(-2e-3, 2e-3, 2)) if distorted
                                         else (0.0, 0.0)),
                  distortion_model=model)


def _scene(rng: np.random.Generator, frames: int, joints: int = 17):
    """Root-relative poses (F, V, 3) about the size of a person and translations (F, 3) that
    keep them in front of the camera, inside about a 50-degree cone."""
    pose = rng.normal(0, 0.35, (frames, joints, 3))
    pose -= pose[:, :1]
    z = rng.uniform(2.5, 8.0, frames)
    t = np.stack([rng.uniform(-0.4, 0.4, frames) * z, rng.uniform(-0.3, 0.3, frames) * z, z], -1)
    return pose, t


@pytest.mark.parametrize("model", ["brown", "h36m"])
def test_unproject_inverts_project_along_the_rays(model):
    rng = np.random.default_rng()
    cam = _camera(rng, model)
    X = np.concatenate([rng.uniform(-0.5, 0.5, (500, 2)), np.ones((500, 1))], -1) \
        * rng.uniform(1, 9, (500, 1))
    xy = cam.unproject(cam.project(X))
    np.testing.assert_allclose(xy, X[:, :2] / X[:, 2:], atol=1e-8, rtol=0)
    got = cam.unproject(torch.tensor(cam.project(X)))                  # tensors in, tensors out
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), xy, atol=1e-12, rtol=0)


def test_unproject_without_distortion_and_bad_points():
    rng = np.random.default_rng()
    cam = _camera(rng, distorted=False)
    uv = rng.uniform(0, 1000, (40, 2))
    np.testing.assert_array_equal(cam.unproject(uv),
                                  (uv - np.array(cam.center)) / np.array(cam.focal_length))
    uv[3] = np.nan
    assert np.isnan(_camera(rng).unproject(uv)[3]).all()
    # a distortion that folds over (strong barrel far out) has no inverse there: NaN, not junk
    bad = Camera("c", 1000, 1000, (300.0, 300.0), (500.0, 500.0),
                 radial_distortion=(-0.5, 0.0, 0.0))
    far = bad.unproject(np.array([[500.0 + 0.5 * 300, 500.0], [499.0, 1e5]]))
    assert np.isfinite(far[0]).all() and np.isnan(far[1]).all()
    with pytest.raises(ValueError, match="uv"):
        undistort_points(np.zeros((3, 3)), (1.0, 1.0), (0.0, 0.0))


@pytest.mark.parametrize("model", ["brown", "h36m"])
def test_place_in_camera_recovers_the_translation_of_a_clean_projection(model):
    rng = np.random.default_rng()
    cam = _camera(rng, model)
    pose, t = _scene(rng, 64)
    uv = cam.project(pose + t[:, None])
    out = place_in_camera(pose, uv, cam)
    np.testing.assert_allclose(out, pose + t[:, None], atol=1e-6, rtol=0)
    out = place_in_camera(torch.tensor(pose, dtype=torch.float32), torch.tensor(uv), cam)
    assert out.dtype == torch.float32 and out.shape == pose.shape
    torch.testing.assert_close(out, torch.tensor(pose + t[:, None], dtype=torch.float32),
                               atol=1e-4, rtol=0)


def _reprojection_gradient(pose, t, xy):
    """d/dt of sum_j |(P_j + t)_xy / (P_j + t)_z - xy_j|^2 (float64, by finite differences of
    an independent formulation)."""
    def cost(tt):
        q = pose + tt
        return float((((q[:, :2] / q[:, 2:]) - xy) ** 2).sum())
    eps = 1e-7
    return np.array([(cost(t + eps * e) - cost(t - eps * e)) / (2 * eps) for e in np.eye(3)])


def test_non_robust_placement_minimises_the_reprojection_error():
    rng = np.random.default_rng()
    cam = _camera(rng, distorted=False)
    pose, t = _scene(rng, 8)
    uv = cam.project(pose + t[:, None]) + rng.normal(0, 4, (8, 17, 2))
    out = place_in_camera(pose, uv, cam, robust=False, iterations=20)
    xy = cam.unproject(uv)
    for f in range(8):
        tt = out[f, 0] - pose[f, 0]
        grad = _reprojection_gradient(pose[f], tt, xy[f])
        scale = _reprojection_gradient(pose[f], tt + [0, 0, 0.05], xy[f])
        assert np.abs(grad).max() < 1e-4 * np.abs(scale).max()
    # the linear solution alone (iterations=0) is another point: under this noise it differs
    lin = place_in_camera(pose, uv, cam, robust=False, iterations=0)
    assert np.abs(lin - out).max() > 1e-6


def test_robust_placement_shrugs_off_an_outlier():
    rng = np.random.default_rng()
    cam = _camera(rng, distorted=False)
    pose, t = _scene(rng, 32)
    uv = cam.project(pose + t[:, None]) + rng.normal(0, 1.0, (32, 17, 2))
    uv[:, 5] += rng.choice([-1, 1], (32, 2)) * 0.2 * cam.width      # one joint far off
    robust = np.linalg.norm(place_in_camera(pose, uv, cam)[:, 0] - t, axis=-1)
    plain = np.linalg.norm(place_in_camera(pose, uv, cam, robust=False)[:, 0] - t, axis=-1)
    assert robust.mean() < 0.3 * plain.mean()
    assert np.median(robust / t[:, 2]) < 0.01


def test_unusable_joints_are_left_out_and_empty_frames_are_nan():
    rng = np.random.default_rng()
    cam = _camera(rng)
    pose, t = _scene(rng, 6)
    uv = cam.project(pose + t[:, None]) + rng.normal(0, 2, (6, 17, 2))
    scores = rng.uniform(0.5, 1, (6, 17))
    scores[0, 3:9] = 0.1                     # frame 0: six joints scored out
    uv[1, 2] = np.nan                        # frame 1: one joint missing
    scores[2, 2:] = 0.0                      # frame 2: two joints left: still placed
    scores[3, 1:] = 0.0                      # frame 3: one joint: underdetermined
    uv[4] = np.nan                           # frame 4: nothing
    pose[5, 7] = np.inf                      # frame 5: a broken pose joint is left out too
    out = place_in_camera(pose, uv, cam, scores=scores)
    keep = np.ones(17, bool)
    keep[3:9] = False
    ref = place_in_camera(pose[:1, keep], uv[:1, keep], cam)
    np.testing.assert_allclose(out[0, keep], ref[0], atol=1e-9, rtol=0)
    sel = np.arange(17) != 2
    np.testing.assert_allclose(out[1, sel], place_in_camera(pose[1:2, sel], uv[1:2, sel],
                                                            cam)[0], atol=1e-9, rtol=0)
    assert np.isfinite(out[2]).all()
    assert np.isnan(out[3]).all() and np.isnan(out[4]).all()
    sel = np.arange(17) != 7
    np.testing.assert_allclose(out[5, sel], place_in_camera(pose[5:6, sel], uv[5:6, sel],
                                                            cam)[0], atol=1e-9, rtol=0)


def test_a_solution_behind_the_camera_is_refused():
    rng = np.random.default_rng()
    cam = _camera(rng, distorted=False)
    pose, t = _scene(rng, 4)
    # keypoints that only a person behind the camera projects to (the pinhole formula does
    # not care): the least-squares answer has negative depth, which is refused
    uv = cam.project(pose + t[:, None] * [1, 1, -1])
    assert np.isnan(place_in_camera(pose, uv, cam)).all()
    assert np.isfinite(place_in_camera(pose, cam.project(pose + t[:, None]), cam)).all()


def test_placement_arguments_are_checked():
    rng = np.random.default_rng()
    cam = _camera(rng)
    pose, t = _scene(rng, 3)
    uv = cam.project(pose + t[:, None])
    with pytest.raises(ValueError, match="camera"):
        place_in_camera(pose, uv, {"focal_length": [1000, 1000]})
    with pytest.raises(ValueError, match="keypoints2d"):
        place_in_camera(pose, uv[:, :16], cam)
    with pytest.raises(ValueError, match="poses3d"):
        place_in_camera(pose[..., :2], uv, cam)
    with pytest.raises(ValueError, match="scores"):
        place_in_camera(pose, uv, cam, scores=np.ones((3, 16)))
    with pytest.raises(ValueError, match="iterations"):
        place_in_camera(pose, uv, cam, iterations=-1)
    with pytest.raises(ValueError, match="poses3d"):
        place_in_camera("a pose", uv, cam)
