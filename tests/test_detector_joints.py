"""2D inputs made as a COCO detector and posekernels.adapters make them
(posekernels.data.detector_joints): face sites on BVH heads, the torch adapter against the numpy
adapter, the training windows' face geometry against forward kinematics, the evaluation path,
the training option and its errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from _training_data import swinging_motion, write_bvh
from test_bvh import COL, cmu_like_text
from posekernels.adapters import coco17_to_h36m17
from posekernels.data import import_bvh, parse_bvh
from posekernels.data.bvh import CMU_H36M17_TABLE, CMU_UNIT_METRES, forward_kinematics
from posekernels.data.detector_joints import (COCO17_FROM_H36M17_FACE, FACE_SITE_NAMES,
                                              FACE_SITES, DetectorJoints, adapter_h36m17,
                                              add_face_sites, detector_joints_from_dict,
                                              detector_view)
from posekernels.skeletons import get_skeleton
from posekernels.training.camera_data import RandomCameraWindows


def _random_rotations(frames: int, rng, keep=()) -> str:
    m = swinging_motion(frames, int(rng.integers(1 << 30)))
    m[1:, 3:] = rng.uniform(-60, 60, (frames, m.shape[1] - 3))
    for name in keep:  # joints whose rotation stays zero
        m[:, COL[name]:COL[name] + 3] = 0.0
    return cmu_like_text(m)


def test_face_sites_move_rigidly_with_the_head():
    rng = np.random.default_rng()
    b = add_face_sites(parse_bvh(_random_rotations(40, rng), "random.bvh"))
    pos = forward_kinematics(b) * CMU_UNIT_METRES                 # (F, J, 3) metres, y up
    head = pos[:, b.index("Head")]
    sites = np.stack([pos[:, b.index(n)] for n in FACE_SITE_NAMES], 1)
    offsets = np.array(list(FACE_SITES.values()))
    # rigid: distances to the head and between the sites are those of the nominal offsets
    np.testing.assert_allclose(np.linalg.norm(sites - head[:, None], axis=-1),
                               np.broadcast_to(np.linalg.norm(offsets, axis=-1), (41, 5)),
                               rtol=1e-9)
    pair = np.linalg.norm(sites[:, :, None] - sites[:, None], axis=-1)
    np.testing.assert_allclose(pair, np.broadcast_to(
        np.linalg.norm(offsets[:, None] - offsets[None], axis=-1), (41, 5, 5)), atol=1e-9)
    # and they turn with it (not a fixed world offset)
    assert np.ptp(sites[:, 0] - head, axis=0).max() > 0.05
    with pytest.raises(ValueError, match="already has joints"):
        add_face_sites(b)
    bare = parse_bvh(_random_rotations(3, rng), "bare.bvh")
    with pytest.raises(ValueError, match="no joint 'Skull'"):
        add_face_sites(bare, head="Skull")


@pytest.mark.parametrize("eyes", [False, True])
def test_torch_adapter_matches_the_numpy_adapter(eyes):
    g = torch.Generator().manual_seed(int(np.random.default_rng().integers(1 << 31)))
    uv = torch.rand(3, 5, 17, 2, generator=g, dtype=torch.float64) * 1000
    face = torch.rand(3, 5, 5, 2, generator=g, dtype=torch.float64) * 1000
    uv22 = torch.cat([uv, face], 2).numpy()
    coco = uv22[..., list(COCO17_FROM_H36M17_FACE), :]
    scores = np.ones(coco.shape[:-1])
    scores[..., 1:3] = 0.9 if eyes else 0.5                       # eyes more confident: eyes
    scores[..., 3:5] = 0.6
    want, _ = coco17_to_h36m17(coco, scores)
    got = adapter_h36m17(uv, face, torch.full((3, 5), eyes))
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-9)
    # the joints COCO has are passed through; the others follow the rules
    keep = [1, 2, 3, 4, 5, 6, 11, 12, 13, 14, 15, 16]
    assert torch.equal(got[..., keep, :], uv[..., keep, :])
    torch.testing.assert_close(got[..., 8, :], (uv[..., 11, :] + uv[..., 14, :]) / 2)
    assert torch.equal(got[..., 9, :], face[..., 0, :])
    # detector_view is the numpy adapter on one sequence (no scores: the ears)
    np.testing.assert_allclose(detector_view(uv22[0]), coco17_to_h36m17(coco[0])[0], atol=1e-9)
    with pytest.raises(ValueError, match=r"uv22 must be \(frames, 22, 2\)"):
        detector_view(uv22[0, :, :17])


def test_training_faces_match_forward_kinematics():
    """With the head unturned from the trunk, the face the training windows build from the
    h36m17 joints alone equals the one forward kinematics gives (orientation and handedness)."""
    rng = np.random.default_rng()
    text = _random_rotations(30, rng, keep=("Neck1", "Head"))
    b = add_face_sites(parse_bvh(text, "fk.bvh"))
    pos = import_bvh(b, joint_table=tuple(CMU_H36M17_TABLE) + FACE_SITE_NAMES, tpose="none",
                     fps=None).positions                          # metres, z up
    exact = DetectorJoints(yaw_deg=0, shift_up=0, scale_forward=0, scale_side=0)
    world = torch.tensor(pos[None, :, :17])
    got = exact.face(world)[0].numpy()
    np.testing.assert_allclose(got, pos[:, 17:], atol=1e-9)
    # random draws keep the face rigid in the head's up axis and within the stated ranges
    g = torch.Generator().manual_seed(int(rng.integers(1 << 31)))
    wide = DetectorJoints(yaw_deg=60, shift_up=0.05, scale_forward=0.3, scale_side=0.2)
    many = world.expand(64, -1, -1, -1)
    faces = wide.face(many, g)
    rel = faces - many[:, :, 9:10]
    up = (many[:, :, 10] - many[:, :, 9])
    up = up / up.norm(dim=-1, keepdim=True)
    height = (rel * up[:, :, None]).sum(-1)                        # (64, T, 5)
    base = torch.tensor([v[1] for v in FACE_SITES.values()], dtype=height.dtype)
    shift = height - base
    assert float(shift.abs().max()) <= 0.05 + 1e-9
    assert float((shift - shift[..., :1]).abs().max()) < 1e-9     # one shift per window
    assert float(shift.std()) > 0.01


def test_detector_joint_windows():
    rng = np.random.default_rng()
    sk = get_skeleton("h36m17")
    text = [cmu_like_text(swinging_motion(120, int(rng.integers(1 << 30)))) for _ in range(3)]
    world = [import_bvh(parse_bvh(t, f"c{i}.bvh"), fps=None).positions
             for i, t in enumerate(text)]
    kw = dict(receptive_field=9, flip=True, joints_left=sk.left, joints_right=sk.right,
              root=sk.root)
    ds = RandomCameraWindows(world, detector_joints=DetectorJoints(prob=1.0), **kw)
    ids = torch.randint(0, len(ds), (128,))
    x, y, cams = ds.batch(ids, torch.Generator().manual_seed(int(rng.integers(1 << 31))))
    assert x.shape == (128, 9, 17, 2) and y.shape == (128, 9, 17, 3)
    # the adapter's rules hold on the normalised inputs (normalisation is affine)
    torch.testing.assert_close(x[..., 8, :], (x[..., 11, :] + x[..., 14, :]) / 2)
    torch.testing.assert_close(x[..., 0, :], (x[..., 1, :] + x[..., 4, :]) / 2)
    torch.testing.assert_close(x[..., 7, :], (x[..., 0, :] + x[..., 8, :]) / 2)
    # limbs are the projected mocap joints: reproject the targets
    w = ds.world_windows(ids).double().numpy()
    off = []
    for i in range(0, 128, 8):
        R, pos = cams.R[i].double().numpy(), cams.position[i].double().numpy()
        xc = (w[i] - pos) @ R.T
        uv = xc[..., :2] / xc[..., 2:] * float(cams.focal[i]) + cams.center[i].numpy()
        wd, ht = (float(v) for v in cams.size[i])
        norm = uv / wd * 2 - [1, ht / wd]
        limbs = [1, 2, 3, 4, 5, 6, 11, 12, 13, 14, 15, 16]
        np.testing.assert_allclose(x[i][:, limbs].numpy(), norm[:, limbs], atol=2e-5)
        np.testing.assert_allclose(y[i].numpy(), xc - xc[:, :1], atol=1e-5)
        # the neck/nose input is the nose, not the Head joint: metres apart in 3D, so visibly
        # apart in the image unless the camera looks along the face
        off.append(np.linalg.norm(x[i][:, 9].numpy() - norm[:, 9], axis=-1).mean())
    assert np.median(off) > 1e-3
    # prob 0: every window's input is the projected mocap joints
    ds0 = RandomCameraWindows(world, detector_joints=DetectorJoints(prob=0.0), **kw)
    a = ds0.batch(ids, torch.Generator().manual_seed(5))
    w0 = ds0.world_windows(ids).double().numpy()
    R, pos = a[2].R[0].double().numpy(), a[2].position[0].double().numpy()
    xc = (w0[0] - pos) @ R.T
    uv = xc[..., :2] / xc[..., 2:] * float(a[2].focal[0]) + a[2].center[0].numpy()
    wd, ht = (float(v) for v in a[2].size[0])
    np.testing.assert_allclose(a[0][0].numpy(), uv / wd * 2 - [1, ht / wd], atol=2e-5)


def test_detector_joints_errors():
    with pytest.raises(ValueError, match="detector_joints: prob must be a number in"):
        DetectorJoints(prob=1.5)
    with pytest.raises(ValueError, match="yaw_deg"):
        DetectorJoints(yaw_deg=-1)
    with pytest.raises(ValueError, match=r"cfg: unknown key\(s\) \['nose'\]"):
        detector_joints_from_dict({"nose": 1}, "cfg")
    with pytest.raises(ValueError, match="cfg: detector_joints: eyes_prob"):
        detector_joints_from_dict({"eyes_prob": "half"}, "cfg")
    assert detector_joints_from_dict({"yaw_deg": 10}).yaw_deg == 10.0
    sk = get_skeleton("h36m17")
    world = [np.random.default_rng().normal(size=(30, 17, 3))]
    with pytest.raises(ValueError, match="detector_joints must be a DetectorJoints"):
        RandomCameraWindows(world, receptive_field=3, joints_left=sk.left,
                            joints_right=sk.right, detector_joints=0.5)
    with pytest.raises(ValueError, match="needs the h36m17 layout"):
        RandomCameraWindows([np.concatenate([world[0], world[0][:, :1]], 1)],
                            receptive_field=3, joints_left=sk.left, joints_right=sk.right,
                            detector_joints=DetectorJoints())


def test_training_config_detector_joints():
    from posekernels.training.config import ConfigError, config_from_dict

    base = {"cameras": "random", "detector_joints": 0.5}
    cfg = config_from_dict(dict(base, detector_joints_config={"yaw_deg": 20}), "c.json")
    assert cfg.detector_joints == 0.5
    with pytest.raises(ConfigError, match="detector_joints: must be a probability"):
        config_from_dict(dict(base, detector_joints=2), "c.json")
    with pytest.raises(ConfigError, match="need cameras='random'"):
        config_from_dict({"detector_joints": 0.5}, "c.json")
    with pytest.raises(ConfigError, match="sets 'prob' through detector_joints"):
        config_from_dict(dict(base, detector_joints_config={"prob": 1}), "c.json")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['roll'\]"):
        config_from_dict(dict(base, detector_joints_config={"roll": 1}), "c.json")


def test_evaluate_through_a_coco_detector(tmp_path, capsys):
    """evaluate --keypoints coco17: the same cameras and targets, the adapter's inputs."""
    from posekernels.cli import main as cli
    from posekernels.evaluation import sequences_from_bvh
    from posekernels.training import build_model, save_checkpoint

    rng = np.random.default_rng()
    path = write_bvh(tmp_path / "S3" / "S3_01.bvh", 80, seed=int(rng.integers(1 << 30)))
    kw = dict(cameras="random", num_cameras=2)
    plain = sequences_from_bvh([str(path)], **kw)
    coco = sequences_from_bvh([str(path)], keypoints="coco17", **kw)
    assert [s.key for s in plain] == [s.key for s in coco]
    for p, c in zip(plain, coco):
        assert p.extra["camera"] == c.extra["camera"] and c.extra["keypoints"] == "coco17"
        np.testing.assert_allclose(c.positions_3d, p.positions_3d, atol=1e-9)
        limbs = [1, 2, 3, 4, 5, 6, 11, 12, 13, 14, 15, 16]
        np.testing.assert_allclose(c.positions_2d[:, limbs], p.positions_2d[:, limbs],
                                   atol=1e-6)
        np.testing.assert_allclose(c.positions_2d[:, 8], p.positions_2d[:, [11, 14]].mean(1),
                                   atol=1e-6)
        assert np.abs(c.positions_2d[:, 9] - p.positions_2d[:, 9]).max() > 1.0  # pixels
    noisy = sequences_from_bvh([str(path)], keypoints="coco17", detector_noise=True, **kw)
    again = sequences_from_bvh([str(path)], keypoints="coco17", detector_noise=True, **kw)
    assert np.abs(noisy[0].positions_2d - coco[0].positions_2d).max() > 0.1
    np.testing.assert_array_equal(noisy[0].positions_2d, again[0].positions_2d)
    with pytest.raises(ValueError, match="keypoints must be one of"):
        sequences_from_bvh([str(path)], keypoints="openpose")

    torch.manual_seed(0)
    ck = tmp_path / "tiny.pt"
    save_checkpoint(ck, build_model({"arch": "glagcn", "receptive_field": 3, "channels": 8}))
    assert cli(["evaluate", "--bvh", str(path), "--checkpoint", str(ck), "--cameras", "random",
                "--keypoints", "coco17", "--detector-noise", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["keypoints"] == "coco17" and out["frames"] > 0
    npz = tmp_path / "d.npz"
    np.savez(npz, positions_3d={"S1": {"a": np.zeros((5, 17, 3))}})
    assert cli(["evaluate", "--data-3d", str(npz), "--checkpoint", str(ck),
                "--keypoints", "coco17"]) == 1
    assert "--keypoints coco17 needs --bvh" in capsys.readouterr().err
