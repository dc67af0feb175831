"""VideoPose3D 3D/2D npz and P-STMO MPI-INF-3DHP npz: write in exactly those layouts, read back."""
from __future__ import annotations

import os

import numpy as np
import pytest

from posekernels.data import formats as F
from posekernels.data import splits


def rand_seq(rng, frames, joints, dims):
    return (rng.normal(size=(frames, joints, dims)) * 0.4 + 1.0).astype(np.float32)


def test_positions_3d_roundtrip_and_layout(tmp_path):
    rng = np.random.default_rng(1)
    data = {"S1": {"Walking 1": rand_seq(rng, 30, 17, 3), "Eating": rand_seq(rng, 12, 17, 3)},
            "S9": {"Walking": rand_seq(rng, 7, 17, 3)}}
    path = tmp_path / "data_3d_test.npz"
    F.save_positions_3d(path, data)
    raw = np.load(path, allow_pickle=True)["positions_3d"].item()  # the VideoPose3D way
    assert set(raw) == {"S1", "S9"} and set(raw["S1"]) == {"Walking 1", "Eating"}
    back = F.load_positions_3d(path, num_joints=17)
    for s in data:
        for a in data[s]:
            np.testing.assert_array_equal(back[s][a], data[s][a])
            assert back[s][a].dtype == np.float32
    assert [f for f in os.listdir(tmp_path)] == ["data_3d_test.npz"]  # no temp files left


def test_positions_2d_roundtrip_and_layout(tmp_path):
    rng = np.random.default_rng(2)
    data = {"S1": {"Walking 1": [rand_seq(rng, 30, 17, 2) * 500 for _ in range(4)]},
            "S11": {"Eating": [rand_seq(rng, 9, 17, 2) * 500 for _ in range(4)]}}
    path = tmp_path / "data_2d_test_gt.npz"
    F.save_positions_2d(path, data)
    npz = np.load(path, allow_pickle=True)
    meta = npz["metadata"].item()
    assert meta == {"layout_name": "h36m", "num_joints": 17,
                    "keypoints_symmetry": [[4, 5, 6, 11, 12, 13], [1, 2, 3, 14, 15, 16]]}
    raw = npz["positions_2d"].item()
    assert isinstance(raw["S1"]["Walking 1"], list) and len(raw["S1"]["Walking 1"]) == 4
    back, meta2 = F.load_h36m_2d(path)
    assert meta2 == meta
    for s in data:
        for a in data[s]:
            for c in range(4):
                np.testing.assert_array_equal(back[s][a][c], data[s][a][c])


def test_read_files_written_by_plain_numpy(tmp_path):
    """Files produced the way VideoPose3D's scripts produce them (np.savez_compressed of dicts)."""
    rng = np.random.default_rng(3)
    # Human3.6M: 32 joints, reduced to 17 by the standard selection.
    h32 = rng.normal(size=(11, 32, 3)).astype(np.float32)
    h32[:, :, 0] = np.arange(32)[None, :]  # tag each joint with its index
    p3 = tmp_path / "data_3d_h36m.npz"
    np.savez_compressed(p3, positions_3d={"S1": {"Directions": h32},
                                          "S9": {"Walking 1": h32[:5]}})
    d = F.load_h36m_3d(p3)
    assert d["S1"]["Directions"].shape == (11, 17, 3)
    np.testing.assert_array_equal(d["S1"]["Directions"][0, :, 0], splits.H36M_32_TO_17)
    assert d["S9"]["Walking 1"].shape == (5, 17, 3)
    assert F.load_h36m_3d(p3, num_joints=32)["S1"]["Directions"].shape == (11, 32, 3)
    # HumanEva: 15 joints, 3 cameras, Train/ and Validate/ subjects.
    he3 = tmp_path / "data_3d_humaneva15.npz"
    np.savez_compressed(he3, positions_3d={"Train/S1": {"Walk 1 chunk0": rand_seq(rng, 20, 15, 3)},
                                           "Validate/S2": {"Jog 1 chunk0": rand_seq(rng, 8, 15, 3)}})
    assert F.load_humaneva_3d(he3)["Validate/S2"]["Jog 1 chunk0"].shape == (8, 15, 3)
    he2 = tmp_path / "data_2d_humaneva15_gt.npz"
    meta = {"layout_name": "humaneva15", "num_joints": 15,
            "keypoints_symmetry": [[2, 3, 4, 8, 9, 10], [5, 6, 7, 11, 12, 13]]}
    np.savez_compressed(he2, positions_2d={"Train/S1": {"Walk 1 chunk0": [
        rand_seq(rng, 20, 15, 2) for _ in range(3)]}}, metadata=meta)
    pos2, meta2 = F.load_humaneva_2d(he2)
    assert len(pos2["Train/S1"]["Walk 1 chunk0"]) == 3 and meta2["layout_name"] == "humaneva15"
    with pytest.raises(ValueError, match="data_3d_humaneva15.npz.*expected 17 joints, got 15"):
        F.load_positions_3d(he3, num_joints=17)


def test_3dhp_train_and_test(tmp_path):
    rng = np.random.default_rng(4)
    train = {"S1 Seq1": [{"0": {"data_2d": rand_seq(rng, 10, 17, 2) * 1000,
                                "data_3d": rand_seq(rng, 10, 17, 3) * 1000},
                          "4": {"data_2d": rand_seq(rng, 10, 17, 2) * 1000,
                                "data_3d": rand_seq(rng, 10, 17, 3) * 1000}}, 25],
             "S2 Seq2": [{"8": {"data_2d": rand_seq(rng, 6, 17, 2) * 1000,
                                "data_3d": rand_seq(rng, 6, 17, 3) * 1000}}, 50]}
    p = tmp_path / "data_train_3dhp.npz"
    np.savez_compressed(p, data=train)
    seqs = F.load_3dhp(p)
    assert [s.key for s in seqs] == [("S1", "Seq1", "0"), ("S1", "Seq1", "4"), ("S2", "Seq2", "8")]
    assert seqs[0].fps == 25.0 and seqs[2].fps == 50.0 and seqs[0].image_size == (2048, 2048)
    np.testing.assert_allclose(seqs[1].positions_3d,
                               train["S1 Seq1"][0]["4"]["data_3d"] / 1000, rtol=1e-6)
    np.testing.assert_array_equal(seqs[1].positions_2d, train["S1 Seq1"][0]["4"]["data_2d"])
    test = {"TS1": {"data_2d": rand_seq(rng, 9, 17, 2) * 900, "data_3d": rand_seq(rng, 9, 17, 3),
                    "valid": np.array([1, 1, 0, 1, 1, 1, 0, 1, 1], dtype=np.float64)},
            "TS5": {"data_2d": rand_seq(rng, 4, 17, 2) * 900, "data_3d": rand_seq(rng, 4, 17, 3),
                    "valid": np.ones(4)}}
    q = tmp_path / "data_test_3dhp.npz"
    np.savez_compressed(q, data=test)
    ts = {s.subject: s for s in F.load_3dhp(q, units="m")}
    assert ts["TS1"].valid.tolist() == [True, True, False, True, True, True, False, True, True]
    assert ts["TS5"].image_size == (1920, 1080) and ts["TS5"].fps == 50.0
    np.testing.assert_array_equal(ts["TS1"].positions_3d, test["TS1"]["data_3d"])
    norm = ts["TS5"].normalized_2d()
    np.testing.assert_allclose(norm, test["TS5"]["data_2d"] / 1920 * 2 - [1, 1080 / 1920],
                               rtol=1e-6)
    bad = dict(test)
    bad["TS2"] = {"data_2d": rand_seq(rng, 4, 17, 2), "data_3d": rand_seq(rng, 4, 17, 3)}
    np.savez_compressed(q, data=bad)
    with pytest.raises(ValueError, match=r"data_test_3dhp\.npz.*TS2.*valid"):
        F.load_3dhp(q)


def _save(path, **entries):
    np.savez_compressed(path, **entries)
    return path


def test_bad_files_raise_value_error_naming_the_file(tmp_path):
    rng = np.random.default_rng(5)
    good = rand_seq(rng, 10, 17, 3)
    nan = good.copy()
    nan[[2, 7], 3, 1] = np.nan
    cases = {
        "missing_key": (_save(tmp_path / "a.npz", positions=good), "missing key 'positions_3d'"),
        "wrong_joints": (_save(tmp_path / "b.npz", positions_3d={"S1": {"A": good[:, :15]}}),
                         "expected 17 joints"),
        "nan_frames": (_save(tmp_path / "c.npz", positions_3d={"S1": {"A": nan}}),
                       r"2 frame\(s\) contain NaN.*frames 2, 7"),
        "empty_seq": (_save(tmp_path / "d.npz", positions_3d={"S1": {"A": good[:0]}}),
                      "empty sequence"),
        "not_dict": (_save(tmp_path / "e.npz", positions_3d=good), "must be a dict"),
        "wrong_dims": (_save(tmp_path / "f.npz", positions_3d={"S1": {"A": good[..., :2]}}),
                       r"expected shape \(frames, joints, 3\)"),
        "no_actions": (_save(tmp_path / "g.npz", positions_3d={"S1": {}}), "no actions"),
    }
    for name, (path, msg) in cases.items():
        with pytest.raises(ValueError, match=msg) as info:
            F.load_positions_3d(path, num_joints=17)
        assert str(path) in str(info.value), name
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"this is not a zip file at all")
    with pytest.raises(ValueError, match="junk.npz: not a readable npz"):
        F.load_positions_3d(junk)
    with pytest.raises(ValueError, match="nothere.npz: no such file"):
        F.load_positions_3d(tmp_path / "nothere.npz")
    # 2D: metadata missing / inconsistent
    p2 = _save(tmp_path / "h.npz", positions_2d={"S1": {"A": [good[..., :2]]}})
    with pytest.raises(ValueError, match="h.npz: missing key 'metadata'"):
        F.load_positions_2d(p2)
    p3 = _save(tmp_path / "i.npz", positions_2d={"S1": {"A": [good[..., :2]]}},
               metadata={"layout_name": "x", "num_joints": 15, "keypoints_symmetry": [[], []]})
    with pytest.raises(ValueError, match="i.npz: metadata says 15 joints"):
        F.load_positions_2d(p3)


def test_writers_validate_and_leave_nothing_behind(tmp_path):
    rng = np.random.default_rng(6)
    bad = rand_seq(rng, 5, 17, 3)
    bad[1] = np.inf
    out = tmp_path / "data_3d_bad.npz"
    with pytest.raises(ValueError, match="data_3d_bad.npz.*NaN or infinite"):
        F.save_positions_3d(out, {"S1": {"A": bad}})
    with pytest.raises(ValueError, match="joints"):
        F.save_positions_3d(out, {"S1": {"A": rand_seq(rng, 5, 17, 3), "B": rand_seq(rng, 5, 16, 3)}})
    with pytest.raises(ValueError, match="metadata"):
        F.save_positions_2d(tmp_path / "x.npz", {"S1": {"A": [rand_seq(rng, 5, 15, 2)]}})
    assert os.listdir(tmp_path) == []
    # A failed overwrite keeps the previous file intact.
    good = {"S1": {"A": rand_seq(rng, 5, 17, 3)}}
    F.save_positions_3d(out, good)
    with pytest.raises(ValueError):
        F.save_positions_3d(out, {"S1": {"A": bad}})
    np.testing.assert_array_equal(F.load_positions_3d(out)["S1"]["A"], good["S1"]["A"])
    assert os.listdir(tmp_path) == ["data_3d_bad.npz"]


def test_splits_and_action_names():
    assert splits.H36M_TRAIN_SUBJECTS == ("S1", "S5", "S6", "S7", "S8")
    assert splits.H36M_TEST_SUBJECTS == ("S9", "S11")
    assert len(splits.H36M_ACTIONS) == 15 and len(splits.H36M_32_TO_17) == 17
    assert splits.canonical_action("Walking 1") == "Walking"
    assert splits.canonical_action("TakingPhoto 1") == "Photo"
    assert splits.canonical_action("WalkingDog") == "WalkDog"
    assert splits.canonical_action("Walk 1 chunk0") == "Walk"
    assert splits.canonical_action("01_01") == "01_01"
    assert set(splits.HUMANEVA_EVAL_ACTIONS) <= set(splits.HUMANEVA_ACTIONS)


def test_pair_sequences_world_to_camera_and_trim(tmp_path):
    from posekernels.data import virtual as V

    rng = np.random.default_rng(7)
    world = {"S9": {"Walking 1": rand_seq(rng, 12, 17, 3), "Eating": rand_seq(rng, 6, 17, 3)}}
    cams = V.default_rig()[:2]
    p2 = {"S9": {a: [np.concatenate([c.project_world(w.astype(np.float64)),
                                     rng.uniform(0, 999, size=(3, 17, 2))]) for c in cams]
                 for a, w in world["S9"].items()}}
    seqs = F.pair_sequences(world, p2, {"S9": cams}, actions=["Walking"])
    assert [s.key for s in seqs] == [("S9", "Walking 1", "vcam0"), ("S9", "Walking 1", "vcam1")]
    for s, c in zip(seqs, cams):
        assert s.positions_2d.shape == (12, 17, 2)            # trimmed to the 3D length
        np.testing.assert_allclose(s.positions_3d, c.world_to_camera(
            world["S9"]["Walking 1"].astype(np.float64)), atol=1e-12)
        np.testing.assert_allclose(c.project(s.positions_3d), s.positions_2d, atol=1e-6)
    short = {"S9": {a: [v[:4] for v in views] for a, views in p2["S9"].items()}}
    with pytest.raises(ValueError, match="S9/Eating/vcam0: 2D has 4 frames"):
        F.pair_sequences(world, short, {"S9": cams})
    with pytest.raises(ValueError, match="2 2D views but 1 cameras"):
        F.pair_sequences(world, p2, {"S9": cams[:1]})


def test_data_takes_joint_facts_from_the_skeletons_module():
    """posekernels.data keeps no copy of skeleton facts: its defaults are posekernels.skeletons'."""
    import inspect

    from posekernels.data import virtual, windows
    from posekernels.skeletons import flip_permutation, get_skeleton

    h = get_skeleton("h36m17")
    params = inspect.signature(windows.flip_pose).parameters
    assert (params["left"].default, params["right"].default) == (h.left, h.right)
    noise = virtual.DetectorNoise()
    assert (tuple(noise.left), tuple(noise.right)) == (h.left, h.right)
    assert F.h36m_metadata()["keypoints_symmetry"] == [list(h.left), list(h.right)]
    assert windows.flip_permutation is flip_permutation
    assert h.flip_permutation() == flip_permutation(17, h.left, h.right)
