"""Evaluation: evaluate_sequences against the metrics computed by hand, the evaluate command on
tiny synthetic BVH files and a 3D npz (JSON keys, table), the shipped default model, bad input."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from _training_data import synthetic_positions, write_bvh
from posekernels import lift_sequence, metrics
from posekernels.cli import main as cli
from posekernels.evaluation import evaluate_sequences, headline, sequences_from_3d
from posekernels.training import build_model, save_checkpoint
from posekernels.checkpoints import default_checkpoint_path, load_default_model

KEYS = {"mpjpe", "p_mpjpe", "n_mpjpe", "mpjve", "frames"}


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model({"arch": "glagcn", "receptive_field": 3, "channels": 8})
    path = tmp_path_factory.mktemp("ck") / "tiny.pt"
    save_checkpoint(path, model)
    return path


@pytest.fixture(scope="module")
def bvh_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("bvh")
    write_bvh(root / "S7" / "S7_01.bvh", 150, seed=3)
    write_bvh(root / "S7" / "S7_02.bvh", 90, seed=4)
    return root


def test_evaluate_sequences_matches_hand_computation():
    torch.manual_seed(0)
    model = build_model({"arch": "glagcn", "receptive_field": 3, "channels": 8}).eval()
    seqs = sequences_from_3d(synthetic_positions(subjects=("A",), frames=120))
    summary = evaluate_sequences(model, seqs, flip_tta=True).summary()
    per_action = {}
    for s in seqs:
        pred = lift_sequence(model, s.normalized_2d().astype(np.float32), flip_tta=True)
        tgt = s.positions_3d - s.positions_3d[:, :1]
        errs = per_action.setdefault(s.action, {"mpjpe": [], "p_mpjpe": [], "pck": []})
        errs["mpjpe"].append(metrics.mpjpe(pred, tgt, root=0, reduce=False))
        errs["p_mpjpe"].append(metrics.p_mpjpe(pred, tgt, reduce=False))
        errs["pck"].append(metrics.pck(pred, tgt, root=0, reduce=False))
    for m in ("mpjpe", "p_mpjpe", "pck"):
        want = np.mean([np.concatenate(e[m]).mean() for e in per_action.values()])
        assert summary["mean_over_actions"][m] == pytest.approx(want, rel=1e-6)
    head = headline(summary)
    assert set(head) == KEYS | {"pck", "auc"}
    assert head["frames"] == sum(s.num_frames for s in seqs)
    assert sorted(summary["per_action"]) == ["A_00", "A_01"]


def test_evaluate_bvh_json(bvh_dir, tiny_checkpoint, capsys):
    rc = cli(["evaluate", "--bvh", str(bvh_dir), "--checkpoint", str(tiny_checkpoint), "--json"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    res = json.loads(out)
    assert KEYS <= set(res)
    assert all(isinstance(res[k], float) and res[k] > 0 for k in KEYS - {"frames"})
    # every frame of the 50 Hz imports, seen by the 4 virtual cameras
    from posekernels.data import import_bvh

    frames = sum(import_bvh(bvh_dir / "S7" / f"S7_0{i}.bvh").positions.shape[0] for i in (1, 2))
    assert res["frames"] == 4 * frames
    assert set(res["per_action"]) == {"S7_01", "S7_02"} and set(res["per_subject"]) == {"S7"}
    # per joint: named by the skeleton, and their mean is the headline MPJPE (both are means
    # over actions of frame-weighted means, and MPJPE is the mean over joints)
    from posekernels.skeletons import get_skeleton

    per_joint = res["per_joint_mpjpe"]
    assert list(per_joint) == list(get_skeleton("h36m17").joint_names)
    assert np.mean(list(per_joint.values())) == pytest.approx(res["mpjpe"], rel=1e-9)
    # bfloat16 products: recorded in the JSON, metrics within a millimetre or so
    assert cli(["evaluate", "--bvh", str(bvh_dir), "--checkpoint", str(tiny_checkpoint), "--json",
                "--precision", "bf16"]) == 0
    res16 = json.loads(capsys.readouterr().out)
    assert res["precision"] == "float32" and res16["precision"] == "bf16"
    assert res16["frames"] == res["frames"] and res16["mpjpe"] != res["mpjpe"]
    assert abs(res16["mpjpe"] - res["mpjpe"]) < 0.05 * res["mpjpe"]
    # one file, no flip, table output
    one = str(bvh_dir / "S7" / "S7_02.bvh")
    assert cli(["evaluate", "--bvh", one, "--checkpoint", str(tiny_checkpoint),
                "--no-flip"]) == 0
    table = capsys.readouterr().out
    assert "MPJPE (mm)" in table and "S7_02" in table and "Mean over actions" in table


def test_evaluate_bvh_at_another_frame_rate(bvh_dir, tiny_checkpoint, capsys):
    """--fps resamples the motion to the camera's rate; the JSON records it."""
    from posekernels.data import import_bvh

    fps = float(np.random.default_rng().choice([24.0, 30.0, 60.0]))
    one = bvh_dir / "S7" / "S7_01.bvh"
    assert cli(["evaluate", "--bvh", str(one), "--checkpoint", str(tiny_checkpoint), "--json",
                "--fps", str(fps)]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["fps"] == fps
    assert res["frames"] == 4 * import_bvh(one, fps=fps).positions.shape[0]
    assert cli(["evaluate", "--bvh", str(one), "--checkpoint", str(tiny_checkpoint),
                "--fps", "0"]) == 1
    assert "fps must be a frame rate" in capsys.readouterr().err


def test_evaluate_npz_subjects(tmp_path, tiny_checkpoint, capsys):
    from posekernels.data import save_positions_3d

    data = tmp_path / "d.npz"
    save_positions_3d(data, synthetic_positions(frames=100))
    assert cli(["evaluate", "--data-3d", str(data), "--subjects", "S2", "--checkpoint",
                str(tiny_checkpoint), "--json", "--by", "subject"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert set(res["per_subject"]) == {"S2"} and KEYS <= set(res)
    assert cli(["evaluate", "--data-3d", str(data), "--subjects", "S5", "--checkpoint",
                str(tiny_checkpoint)]) == 1
    assert "subject(s) ['S5'] not in the data" in capsys.readouterr().err


def test_evaluate_bad_input(tmp_path, bvh_dir, tiny_checkpoint, capsys):
    missing = tmp_path / "missing.pt"
    assert cli(["evaluate", "--bvh", str(bvh_dir), "--checkpoint", str(missing), "--json"]) == 1
    out, err = capsys.readouterr()
    assert out == "" and f"{missing}: no such checkpoint file" in err
    broken = tmp_path / "broken.bvh"
    broken.write_text("HIERARCHY\nROOT Hips\n{\n")
    assert cli(["evaluate", "--bvh", str(broken), "--checkpoint", str(tiny_checkpoint)]) == 1
    assert str(broken) in capsys.readouterr().err
    gn16 = tmp_path / "gn16.pt"
    save_checkpoint(gn16, build_model({"arch": "global_node", "channels": 8, "aux": None,
                                       "global_node": False}))
    assert cli(["evaluate", "--bvh", str(bvh_dir), "--checkpoint", str(gn16)]) == 1
    assert "the data has [17] joints but the model" in capsys.readouterr().err
    assert cli(["evaluate", "--bvh", str(tmp_path / "nothing"), "--checkpoint",
                str(tiny_checkpoint)]) == 1
    assert "no such file or folder" in capsys.readouterr().err


@pytest.mark.parametrize("mode", ["centered", "causal"])
def test_default_model_ships_and_evaluates(bvh_dir, capsys, mode):
    size = os.path.getsize(default_checkpoint_path(mode))
    assert size < 10 * 2 ** 20
    raw = torch.load(default_checkpoint_path(mode), weights_only=True)
    assert {"model_config", "model", "config", "metrics"} <= set(raw)
    assert "optimizer" not in raw
    model = load_default_model(mode=mode)
    assert not model.training and model.num_joints == 17
    assert model.causal == (mode == "causal")
    assert cli(["evaluate", "--bvh", str(bvh_dir), "--checkpoint", "default", "--mode", mode,
                "--cameras", "random", "--num-cameras", "2", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert KEYS <= set(res) and res["checkpoint"] == "default"


def test_evaluate_through_ones_own_camera(bvh_dir, tiny_checkpoint, tmp_path, capsys):
    """--camera-distribution: the cameras drawn are the user's (image size, field of view,
    height, distance as one-value ranges), every one of them, and recorded in the JSON; an inline
    object and a file give the same; bad keys, values and combinations are refused by name."""
    rng = np.random.default_rng()
    height, distance = float(rng.uniform(0.5, 3.0)), float(rng.uniform(3.0, 8.0))
    hfov = float(rng.uniform(45.0, 80.0))
    mine = {"image_sizes": [[1920, 1080]], "hfov_deg": [hfov, hfov], "height": [height, height],
            "distance": [distance, distance], "roll_deg": [0, 0], "center_jitter": 0.0}
    base = ["evaluate", "--bvh", str(bvh_dir), "--checkpoint", str(tiny_checkpoint),
            "--cameras", "random", "--num-cameras", "3", "--json"]
    assert cli(base + ["--camera-distribution", json.dumps(mine)]) == 0
    res = json.loads(capsys.readouterr().out)
    cams = [c for clip in res["cameras"]["per_clip"].values() for c in clip]
    assert len(cams) == 6 and res["cameras"]["distribution"]["height"] == [height, height]
    focal = 960.0 / np.tan(np.radians(hfov) / 2)
    # the distance is raised where a 2 m (fit_height) subject would not fit vertically
    expected_distance = max(distance, 1.0 / (540.0 / focal))
    from posekernels.data import import_bvh
    for clip, cs in res["cameras"]["per_clip"].items():
        pos = import_bvh(bvh_dir / "S7" / f"{clip.split('/')[1]}.bvh", fps=50.0).positions
        centre = pos[:, 0].mean(0)
        for c in cs:
            assert (c["width"], c["height"]) == (1920, 1080)
            np.testing.assert_allclose(c["focal_length"], [focal, focal], rtol=1e-9)
            np.testing.assert_allclose(c["center"], [960.0, 540.0], rtol=1e-12)
            t = np.asarray(c["translation"])
            assert t[2] == pytest.approx(height, abs=1e-9)
            assert np.hypot(*(t[:2] - centre[:2])) == pytest.approx(expected_distance, rel=1e-6)
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(mine))
    assert cli(base + ["--camera-distribution", str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["cameras"] == res["cameras"]
    big, binary = tmp_path / "big.json", tmp_path / "binary.json"
    big.write_text(json.dumps(dict(mine, pad=" " * 70000)))
    binary.write_bytes(bytes(rng.integers(128, 256, 64, dtype=np.uint8)))
    for arg, cams_kind, msg in (('{"heigth": [1, 2]}', "random", "unknown key(s) ['heigth']"),
                                ('{"hfov_deg": [90, 40]}', "random", "hfov_deg must satisfy"),
                                ("[1, 2]", "random", "must be an object of camera ranges"),
                                ("{oops", "random", "not valid JSON"),
                                (str(tmp_path / "none.json"), "random", "cannot read"),
                                (str(path), "rig", "needs --cameras random"),
                                (str(big), "random", "larger than 65,536 bytes"),
                                (str(binary), "random", "not UTF-8 text")):
        args = base[:5] + ["--cameras", cams_kind, "--json", "--camera-distribution", arg]
        assert cli(args) == 1
        err = capsys.readouterr().err
        assert "--camera-distribution" in err and msg in err, err
    with pytest.raises(ValueError, match="applies to cameras='random'"):
        sequences_from_3d(synthetic_positions(subjects=("A",), frames=30), cameras="rig",
                          camera_distribution=mine)
