"""The two shipped lifters: they load, match their recorded configs, and stream exactly as
:func:`posekernels.lift_sequence` on a sequence seen through an unseen random camera."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from posekernels import lift_sequence
from posekernels.checkpoints import (build_model, default_checkpoint_path, load_model,
                                     read_checkpoint)
from posekernels.data.random_cameras import evaluation_cameras
from posekernels.stream import StreamingLifter, fill_missing
from posekernels.stream.motion import synth_walk


@pytest.mark.parametrize("mode", ["causal", "centered"])
def test_shipped_model_matches_its_config(mode):
    raw = read_checkpoint(default_checkpoint_path(mode))
    cfg = raw["config"]
    assert cfg["cameras"] == "random" and cfg["augment_2d"] is True
    assert raw["model_config"]["causal"] == (mode == "causal")
    model = build_model(raw["model_config"])
    model.load_state_dict(raw["model"])  # exact keys and shapes
    metrics = raw["metrics"]
    for setting in ("random_noise", "rig_noise", "rig"):
        assert 0 < metrics[setting]["mpjpe"] < 200
    loaded = load_model("default", mode=mode)
    assert loaded.causal == (mode == "causal") and not loaded.training
    for (k, a), (k2, b) in zip(sorted(model.state_dict().items()),
                               sorted(loaded.state_dict().items())):
        assert k == k2 and torch.equal(a, b)


@pytest.mark.parametrize("mode", ["causal", "centered"])
@pytest.mark.parametrize("camera_fps", [None, "drawn"])
def test_shipped_model_streams_as_lift_sequence(mode, camera_fps):
    rng = np.random.default_rng()
    world = synth_walk(int(rng.integers(60, 120)), 50.0, seed=int(rng.integers(0, 1000)))
    cam = evaluation_cameras(world, 1, seed=int(rng.integers(0, 2 ** 31)), key="walk")[0]
    kp = cam.normalize(cam.project_world(world)).astype(np.float32)
    kp[rng.random(kp.shape[:2]) < 0.05] = np.nan       # dropped joints
    model = load_model("default", mode=mode)
    assert model.frame_rate == 50.0                    # recorded in the checkpoint
    fps = None if camera_fps is None else float(rng.choice([24.0, 25.0, 30.0, 60.0]))
    lifter = StreamingLifter(model, fps=fps)           # the model's own mode
    assert lifter.mode == ("causal" if mode == "causal" else "centered")
    outs = [p for f in range(len(kp)) if (p := lifter.push(kp[f])) is not None]
    got = np.concatenate([np.stack(outs), lifter.flush()]) if outs else lifter.flush()
    ref = lift_sequence(model, fill_missing(kp), fps=fps)
    assert got.shape == ref.shape == (len(kp), 17, 3)
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)
    if mode == "causal":
        assert lifter.latency_frames == 0
