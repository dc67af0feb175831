"""Training: Lookahead/Ranger, schedules, config loading, the training loop (GLA-GCN two stages,
global-node GCN with K-means labels), checkpoints, resume, the train command and bad input."""
from __future__ import annotations

import json
import math
import os
import re

import numpy as np
import pytest
import torch

from _training_data import synthetic_positions
from posekernels.checkpoints import load_model
from posekernels.cli import main as cli
from posekernels.training import (ConfigError, Lookahead, TrainConfig, build_model,
                                  config_from_dict, cosine_lr, load_checkpoint, load_config,
                                  read_checkpoint, save_checkpoint, train)
from posekernels.training.optim import bn_momentum, ranger

TINY_GLA = {"arch": "glagcn", "receptive_field": 3, "channels": 8}
TINY_GN = {"arch": "global_node", "channels": 8, "skeleton": "h36m17", "num_classes": 4}


@pytest.fixture(scope="module")
def positions():
    return synthetic_positions()


def tiny_config(tmp_path, model=TINY_GLA, **kw) -> TrainConfig:
    base = dict(model=dict(model), val_subjects=["S2"], epochs=3, batch_size=64,
                out_dir=str(tmp_path / "run"), progress=False, threads=1, seed=1, val_every=0)
    base.update(kw)
    return config_from_dict(base)


# ------------------------------------------------------------------------------ optimiser
def test_lookahead_matches_hand_computation():
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(5))
    opt = Lookahead(torch.optim.SGD([w], lr=0.1), k=3, alpha=0.5)
    slow = w.detach().clone()
    fast = w.detach().clone()
    for step in range(1, 8):
        opt.zero_grad()
        (w ** 2).sum().backward()
        opt.step()
        fast = fast - 0.1 * 2 * fast
        if step % 3 == 0:
            slow = slow + 0.5 * (fast - slow)
            fast = slow.clone()
        torch.testing.assert_close(w.detach(), fast)


def test_ranger_state_dict_round_trip_continues_identically():
    def make():
        torch.manual_seed(0)
        lin = torch.nn.Linear(4, 2)
        return lin, ranger(lin.parameters(), lr=0.01)

    x = torch.randn(16, 4, generator=torch.Generator().manual_seed(1))

    def steps(lin, opt, n):
        for _ in range(n):
            opt.zero_grad()
            lin(x).square().mean().backward()
            opt.step()

    a, oa = make()
    steps(a, oa, 10)
    b, ob = make()
    steps(b, ob, 4)
    state = {"model": b.state_dict(), "opt": ob.state_dict()}
    c, oc = make()
    c.load_state_dict(state["model"])
    oc.load_state_dict(state["opt"])
    steps(c, oc, 6)
    for pa, pc in zip(a.parameters(), c.parameters()):
        torch.testing.assert_close(pa, pc, rtol=0, atol=0)
    inner = oa.optimizer
    assert isinstance(inner, torch.optim.RAdam)
    assert inner.defaults["betas"] == (0.95, 0.999) and inner.defaults["eps"] == 1e-5
    assert (oa.k, oa.alpha) == (6, 0.5)


def test_schedules():
    assert cosine_lr(0, 10, 0.01, 1e-5) == pytest.approx(0.01)
    assert cosine_lr(10, 10, 0.01, 1e-5) == pytest.approx(1e-5)
    assert cosine_lr(5, 10, 0.01, 1e-5) == pytest.approx((0.01 + 1e-5) / 2)
    assert bn_momentum(0, 80) == pytest.approx(0.1)
    assert bn_momentum(80, 80) == pytest.approx(0.001)
    assert bn_momentum(40, 80) == pytest.approx(0.1 * math.exp(-0.5 * math.log(100)))


# ------------------------------------------------------------------------------ config
def test_config_file_and_errors(tmp_path):
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"model": TINY_GLA, "epochs": 2, "lr": 1, "val_subjects": [9]}))
    cfg = load_config(good)
    assert cfg.epochs == 2 and cfg.lr == 1.0 and cfg.val_subjects == ["9"]
    cases = {
        "broken.json": ('{"epochs": 2,', "malformed JSON at line 1"),
        "unknown.json": ('{"epochz": 2}', "unknown key(s) ['epochz']"),
        "type.json": ('{"epochs": "two"}', "epochs: expected int"),
        "value.json": ('{"epochs": 0}', "epochs: must be >= 1"),
        "arch.json": ('{"model": {"arch": "resnet"}}', "model.arch: must be one of"),
        "list.json": ('[1, 2]', "must be a JSON object"),
    }
    for name, (text, msg) in cases.items():
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(ConfigError) as exc:
            load_config(path)
        assert str(path) in str(exc.value) and msg in str(exc.value), str(exc.value)
    with pytest.raises(ConfigError, match="missing.json: cannot read config"):
        load_config(tmp_path / "missing.json")


# ------------------------------------------------------------------------------ training
def test_glagcn_two_stage_training_loss_decreases_and_checkpoint_round_trip(tmp_path, positions):
    cfg = tiny_config(tmp_path, epochs=4, stage1_epochs=2, val_every=2)
    res = train(cfg, positions_3d=positions, log=lambda *a: None)
    hist = res["history"]
    assert [h["stage"] for h in hist] == [1, 1, 2, 2]
    assert hist[1]["loss"] < hist[0]["loss"] and hist[3]["loss"] < hist[2]["loss"]
    assert [h["lr"] for h in hist] == pytest.approx([cosine_lr(e, 4, 0.01, 1e-5)
                                                     for e in range(4)])
    assert "val" in hist[1] and "val" in hist[3] and "val" not in hist[0]
    assert set(res["metrics"]) >= {"mpjpe", "p_mpjpe", "n_mpjpe", "mpjve", "pck", "auc",
                                   "frames"}
    model = res["model"]
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert bn.momentum == pytest.approx(bn_momentum(3, 4))
    # model.pt: state dict + config, loadable with weights_only=True, same predictions
    path = tmp_path / "run" / "model.pt"
    raw = torch.load(path, weights_only=True)
    assert raw["model_config"] == TINY_GLA and raw["config"]["epochs"] == 4
    loaded = load_checkpoint(path)
    x = torch.randn(5, 3, 17, 2)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    assert loaded.checkpoint_info["metrics"] == res["metrics"]
    assert loaded.frame_rate == 50.0  # the config's frame_rate, read by lift_sequence(fps=...)
    assert json.loads((tmp_path / "run" / "history.json").read_text())[-1]["epoch"] == 4


@pytest.mark.parametrize("cameras", ["rig", "random"])
def test_resume_inside_an_epoch_matches_uninterrupted_run(tmp_path, positions, monkeypatch,
                                                          cameras):
    """A run killed part-way through an epoch resumes from the mid-epoch last.pt (position,
    RNG state: random cameras, 2D noise and dropout draw from it) to the same weights."""
    from posekernels.training import trainer

    kw = dict(epochs=2, batch_size=16, cameras=cameras, model=dict(TINY_GLA, dropout=0.2),
              target_jitter=True)
    if cameras == "random":
        kw.update(augment_2d=True, scale_jitter=0.1, bone_jitter=0.1, bone_rotation=15,
                  limb_swing=[0.8, 1.4], speed_range=[0.8, 1.6], track_start=0.3, sample_balance=0.5, ema_decay=0.9,
                  motion_weight=0.5,
                  detector_joints=0.5, detector_joints_config={"yaw_deg": 20})
    quiet = lambda *a: None  # noqa: E731
    a = train(tiny_config(tmp_path / "a", **kw), positions_3d=positions, log=quiet)
    cfg_b = tiny_config(tmp_path / "b", checkpoint_minutes=1e-9, **kw)
    n_batches = a["history"][0]["steps"]
    stop_at = n_batches + int(torch.randint(2, n_batches - 1, ()))  # inside epoch 2
    real_batch, calls = trainer.TrainingData.batch, [0]

    def dying_batch(self, ids):
        calls[0] += 1
        if calls[0] > stop_at:
            raise KeyboardInterrupt
        return real_batch(self, ids)

    monkeypatch.setattr(trainer.TrainingData, "batch", dying_batch)
    with pytest.raises(KeyboardInterrupt):
        train(cfg_b, positions_3d=positions, log=quiet)
    monkeypatch.setattr(trainer.TrainingData, "batch", real_batch)
    state = read_checkpoint(tmp_path / "b" / "run" / "last.pt")
    assert state["epoch"] == 1 and state["epoch_progress"]["batch"] == stop_at - n_batches
    said = []
    b = train(cfg_b, positions_3d=positions, resume="auto", log=said.append)
    assert any(f"batch {stop_at - n_batches} of epoch 2" in m for m in said)
    sa, sb = a["model"].state_dict(), b["model"].state_dict()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=0, msg=k)
    assert [h["steps"] for h in b["history"]] == [h["steps"] for h in a["history"]]
    assert b["history"][-1]["loss"] == pytest.approx(a["history"][-1]["loss"], rel=1e-12)


def test_ema_is_the_moving_average_of_the_step_weights(tmp_path, positions, monkeypatch,
                                                       capsys):
    """model.pt holds w_ema <- d w_ema + (1 - d) w over every step's weights (BatchNorm
    statistics included), recomputed here in float64 from the weights the run passed through;
    last.pt keeps the last weights themselves, and the run returns the average."""
    from posekernels.training import trainer

    d = float(np.random.default_rng().uniform(0.5, 0.95))
    built, seen = [], []
    real_build, real_batch = trainer.build_model, trainer.TrainingData.batch

    def build(cfg):
        built.append(real_build(cfg))
        return built[-1]

    def batch(self, ids):  # the weights after the previous step
        seen.append({k: v.detach().double().clone() for k, v in built[0].state_dict().items()
                     if v.is_floating_point()})
        return real_batch(self, ids)

    monkeypatch.setattr(trainer, "build_model", build)
    monkeypatch.setattr(trainer.TrainingData, "batch", batch)
    cfg = tiny_config(tmp_path, epochs=2, batch_size=32, ema_decay=d, val_every=1,
                      model=dict(TINY_GLA, dropout=0.1))
    res = train(cfg, positions_3d=positions, log=lambda *a: None)
    last = read_checkpoint(tmp_path / "run" / "last.pt")
    steps = seen[1:] + [{k: v.double() for k, v in last["model"].items()
                         if v.is_floating_point()}]
    assert len(steps) == sum(h["steps"] for h in res["history"]) > 3
    ref = dict(steps[0])
    for w in steps[1:]:
        ref = {k: d * ref[k] + (1 - d) * w[k] for k in ref}
    got = read_checkpoint(tmp_path / "run" / "model.pt")["model"]
    for k, v in ref.items():
        torch.testing.assert_close(got[k].double(), v, rtol=1e-5, atol=1e-6, msg=k)
        if not torch.equal(steps[0][k], steps[-1][k]):  # a trained tensor: not the last one
            assert not torch.equal(got[k].double(), steps[-1][k]), k
    sd = res["model"].state_dict()
    for k in ref:
        torch.testing.assert_close(sd[k], got[k], rtol=0, atol=0)
    assert [h.get("val_weights") for h in res["history"]] == ["average"] * 2
    # last.pt holds both: the average by default (what validation read), the last on request
    last_path = tmp_path / "run" / "last.pt"
    for weights, want, which in (("auto", got, "average"), ("average", got, "average"),
                                 ("last", last["model"], "last")):
        m = load_model(last_path, weights=weights)
        assert m.checkpoint_info["weights"] == which
        for k, v in m.state_dict().items():
            torch.testing.assert_close(v, want[k], rtol=0, atol=0, msg=f"{weights}: {k}")
    assert load_model(tmp_path / "run" / "model.pt").checkpoint_info["weights"] == "model"
    # the commands: evaluate reads the average unless --weights last, and says which
    from posekernels.data import save_positions_3d

    data = tmp_path / "val.npz"
    save_positions_3d(data, {"S2": positions["S2"]})
    got_json = {}
    for flag in ("auto", "last"):
        capsys.readouterr()
        assert cli(["evaluate", "--data-3d", str(data), "--checkpoint", str(last_path),
                    "--weights", flag, "--json"]) == 0
        got_json[flag] = json.loads(capsys.readouterr().out)
    assert got_json["auto"]["weights"] == "average" and got_json["last"]["weights"] == "last"
    assert got_json["auto"]["mpjpe"] != got_json["last"]["mpjpe"]
    from posekernels.checkpoints import init_weights
    for weights, want in (("auto", got), ("last", last["model"])):  # fine-tuning from last.pt
        fresh = build_model(cfg.model)
        init_weights(fresh, last_path, weights=weights)
        for k, v in fresh.state_dict().items():
            torch.testing.assert_close(v, want[k], rtol=0, atol=0, msg=f"init {weights}: {k}")
    with pytest.raises(ValueError, match="holds no weight average"):
        load_model(tmp_path / "run" / "model.pt", weights="average")
    with pytest.raises(ValueError, match="weights must be one of"):
        load_model(last_path, weights="mean")
    with pytest.raises(ValueError, match="default models hold one set"):
        load_model("default", weights="average")
    with pytest.raises(ConfigError, match="ema_decay"):
        tiny_config(tmp_path, ema_decay=1.0)


def test_last_pt_with_a_broken_average_is_refused(tmp_path, positions):
    """An 'ema' entry that is not AveragedModel's state dict is refused, naming the file."""
    cfg = tiny_config(tmp_path, epochs=1, batch_size=32, ema_decay=0.9, val_every=0)
    train(cfg, positions_3d=positions, log=lambda *a: None)
    obj = read_checkpoint(tmp_path / "run" / "last.pt")
    for bad, match in (({"weight": torch.ones(2)}, "outside 'module.'"),
                       ({"module.x": 1.0}, "state dict of tensors"), ([1, 2], "state dict")):
        path = tmp_path / "bad.pt"
        torch.save(dict(obj, ema=bad), path)
        with pytest.raises(ValueError, match=match):
            load_model(path)
        assert load_model(path, weights="last") is not None  # the last weights stay readable


def test_target_jitter_is_the_released_rotation_and_scale():
    """Each sample's x-y rotated about the root by one of -5/0/+5 degrees and scaled by one of
    0.95/1/1.05 (checked against a float64 recovery of angle and scale), depth untouched, all
    nine combinations drawn, the inputs' generator honoured."""
    from posekernels.training.trainer import jitter_targets

    n = 600
    y = torch.randn(n, 3, 17, 3, dtype=torch.float64)
    out = jitter_targets(y)
    assert out.shape == y.shape and torch.equal(out[..., 2], y[..., 2])
    zy = torch.complex(y[..., 0], y[..., 1])
    zo = torch.complex(out[..., 0], out[..., 1])
    ratio = zo / zy  # s * exp(i theta), the same for every joint and frame of a sample
    per_sample = ratio.reshape(n, -1)
    assert (per_sample - per_sample[:, :1]).abs().max() < 1e-9
    scale, angle = per_sample[:, 0].abs(), torch.rad2deg(per_sample[:, 0].angle())
    s_idx = (scale[:, None] - torch.tensor([0.95, 1.0, 1.05], dtype=torch.float64)).abs()
    a_idx = (angle[:, None] - torch.tensor([-5.0, 0.0, 5.0], dtype=torch.float64)).abs()
    assert s_idx.min(1).values.max() < 1e-9 and a_idx.min(1).values.max() < 1e-9
    combos = set(zip(s_idx.argmin(1).tolist(), a_idx.argmin(1).tolist()))
    assert len(combos) == 9
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(jitter_targets(y, g1), jitter_targets(y, g2))
    assert jitter_targets(y.float()).dtype == torch.float32


def test_resume_rejects_a_malformed_epoch_position(tmp_path, positions):
    cfg = tiny_config(tmp_path, epochs=2)
    train(cfg, positions_3d=positions, stop_after=1, log=lambda *a: None)
    last = tmp_path / "run" / "last.pt"
    state = torch.load(last, weights_only=True)
    state["epoch_progress"] = {"batch": 3, "batches": 2, "batch_size": 64, "total": 1.0,
                               "count": 3, "seconds": 1.0, "rng": torch.get_rng_state()}
    torch.save(state, last)
    with pytest.raises(ValueError, match="epoch_progress"):
        train(cfg, positions_3d=positions, resume="auto", log=lambda *a: None)


def test_checkpoint_minutes_and_bone_jitter_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="checkpoint_minutes"):
        tiny_config(tmp_path, checkpoint_minutes=-1)
    with pytest.raises(ConfigError, match="bone_jitter"):
        tiny_config(tmp_path, cameras="random", bone_jitter=0.5)
    with pytest.raises(ConfigError, match="need cameras='random'"):
        tiny_config(tmp_path, bone_jitter=0.1)
    for bad in (-1.0, 46.0, float("nan")):
        with pytest.raises(ConfigError, match="bone_rotation"):
            tiny_config(tmp_path, cameras="random", bone_rotation=bad)
    with pytest.raises(ConfigError, match="need cameras='random'"):
        tiny_config(tmp_path, bone_rotation=10)
    for bad in ([0.4, 1.2], [1.5, 1.2], [1.0, 2.5], [1.0], [float("nan"), 1.2]):
        with pytest.raises(ConfigError, match="limb_swing"):
            tiny_config(tmp_path, cameras="random", limb_swing=bad)
    with pytest.raises(ConfigError, match="need cameras='random'"):
        tiny_config(tmp_path, limb_swing=[0.8, 1.2])
    tiny_config(tmp_path, cameras="random", limb_swing=[0.8, 1.2])
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ConfigError, match="track_start"):
            tiny_config(tmp_path, cameras="random", track_start=bad)
    with pytest.raises(ConfigError, match="track_start"):
        tiny_config(tmp_path, track_start=0.2)
    with pytest.raises(ConfigError, match="speed_range"):
        tiny_config(tmp_path, cameras="random", speed_range=[3.0, 1.0])
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ConfigError, match="sample_balance"):
            tiny_config(tmp_path, sample_balance=bad)
    for bad in (-0.1, 4.5, float("nan")):
        with pytest.raises(ConfigError, match="motion_weight"):
            tiny_config(tmp_path, cameras="random", motion_weight=bad)
    with pytest.raises(ConfigError, match="motion_weight"):
        tiny_config(tmp_path, motion_weight=1.0)  # the rig
    assert tiny_config(tmp_path, cameras="random", speed_range=[0.8, 2]).speed_range == [0.8, 2]
    for bad in (0.5, 2000.0, float("nan")):
        with pytest.raises(ConfigError, match="frame_rate"):
            tiny_config(tmp_path, frame_rate=bad)
    assert tiny_config(tmp_path, frame_rate=60).frame_rate == 60


def test_resume_matches_uninterrupted_run(tmp_path, positions):
    a = train(tiny_config(tmp_path / "a", epochs=3, stage1_epochs=1), positions_3d=positions,
              log=lambda *a: None)
    cfg_b = tiny_config(tmp_path / "b", epochs=3, stage1_epochs=1)
    part = train(cfg_b, positions_3d=positions, stop_after=2, log=lambda *a: None)
    assert part["model_path"] is None and len(part["history"]) == 2
    assert not (tmp_path / "b" / "run" / "model.pt").exists()
    b = train(cfg_b, positions_3d=positions, resume="auto", log=lambda *a: None)
    assert [h["epoch"] for h in b["history"]] == [1, 2, 3]
    sa, sb = a["model"].state_dict(), b["model"].state_dict()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=0, msg=k)
    assert b["history"][-1]["loss"] == a["history"][-1]["loss"]


def test_global_node_training_with_kmeans_labels(tmp_path, positions):
    cfg = tiny_config(tmp_path, model=TINY_GN, optimizer="adam", lr=3e-3, lr_schedule="exp",
                      epochs=4, batch_size=32)
    res = train(cfg, positions_3d=positions, log=lambda *a: None)
    losses = [h["loss"] for h in res["history"]]
    assert losses[-1] < losses[0]
    assert [h["stage"] for h in res["history"]] == [2, 2, 2, 2]
    assert [h["lr"] for h in res["history"]] == pytest.approx([3e-3 * 0.96 ** e for e in range(4)])
    loaded = load_checkpoint(tmp_path / "run" / "model.pt")
    assert loaded.aux == "action" and loaded.num_classes == 4


def test_global_node_embedding_loss_and_baseline_train(tmp_path, positions):
    for i, model in enumerate([dict(TINY_GN, aux="embedding", embed_dim=5),
                               dict(TINY_GN, aux=None, global_node=False)]):
        cfg = tiny_config(tmp_path / str(i), model=model, optimizer="adam", lr=3e-3, epochs=2,
                          batch_size=32)
        res = train(cfg, positions_3d=positions, log=lambda *a: None)
        assert res["history"][1]["loss"] < res["history"][0]["loss"]
        assert load_checkpoint(tmp_path / str(i) / "run" / "model.pt").aux == model["aux"]


def test_frame_stride_keeps_every_camera_offset(tmp_path, positions):
    from posekernels.training import prepare_data

    cfg = tiny_config(tmp_path, frame_stride=4)
    model = build_model(cfg.model)
    data = prepare_data(cfg, model, torch.device("cpu"), positions)
    full = prepare_data(tiny_config(tmp_path), model, torch.device("cpu"), positions)
    assert full.dataset.num_frames == sum(full.dataset.lengths)
    # 2 clips x 4 cameras of 125 frames, one frame in 4 per camera with offsets 0, 1, 2, 3:
    # every frame of the motion is a sample from exactly one camera
    assert data.dataset.num_frames == 2 * 125
    local = data.dataset.local[data.dataset.frames] % 4
    assert sorted(set(local.tolist())) == [0, 1, 2, 3]
    x, y, labels = data.batch(torch.arange(6))
    assert x.shape == (6, 3, 17, 2) and y.shape == (6, 3, 17, 3) and labels is None
    assert torch.all(y[:, 1, 0] == 0)  # root-relative targets


# ------------------------------------------------------------------------------ checkpoints
def test_default_model_selection_by_mode(tmp_path, monkeypatch):
    """load_model("default") takes the causal lifter (streaming, export), load_default_model()
    the centred one (evaluation); a checkpoint file ignores the mode."""
    import posekernels.checkpoints as ck

    assert os.path.basename(ck.default_checkpoint_path("causal")) == "default_causal.pt"
    assert os.path.basename(ck.default_checkpoint_path()) == "default_centered.pt"
    assert ck.default_checkpoint_path("centred") == ck.default_checkpoint_path("centered")
    with pytest.raises(ValueError, match="mode must be one of"):
        ck.default_checkpoint_path("online")
    paths = {m: tmp_path / f"{m}.pt" for m in ("causal", "centered")}
    for mode, path in paths.items():
        ck.save_checkpoint(path, build_model(dict(TINY_GLA, causal=mode == "causal")))
    monkeypatch.setattr(ck, "default_checkpoint_path",
                        lambda mode="centered": str(paths[ck._default_mode(mode)]))
    assert ck.load_model("default").causal and ck.load_model("default", mode="causal").causal
    assert not ck.load_model("default", mode="centered").causal
    assert not ck.load_default_model().causal and ck.load_default_model(mode="causal").causal
    model = ck.load_model(paths["causal"], mode="centered")
    assert model.causal and not model.training
    with pytest.raises(ck.DefaultModelUnavailable, match="--checkpoint PATH"):
        ck.load_model("default", mode="online")


def test_checkpoint_errors_name_the_file(tmp_path):
    model = build_model(TINY_GLA)
    good = tmp_path / "good.pt"
    save_checkpoint(good, model)
    assert read_checkpoint(good)["model_config"] == TINY_GLA

    def expect(path, msg):
        with pytest.raises(ValueError) as exc:
            load_checkpoint(path)
        assert str(path) in str(exc.value) and msg in str(exc.value), str(exc.value)

    expect(tmp_path / "nope.pt", "no such checkpoint file")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    expect(junk, "not a readable posekernels checkpoint")
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(good.read_bytes()[:200])
    expect(trunc, "not a readable posekernels checkpoint")
    nokey = tmp_path / "nokey.pt"
    torch.save({"model": model.state_dict()}, nokey)
    expect(nokey, "missing key 'model_config'")
    state = dict(model.state_dict())
    del state["head.W_joint"]
    state["extra.weight"] = torch.zeros(1)
    torch.save({"model_config": TINY_GLA, "model": state}, tmp_path / "keys.pt")
    expect(tmp_path / "keys.pt", "missing keys ['head.W_joint']")
    torch.save({"model_config": dict(TINY_GLA, channels=12), "model": model.state_dict()},
               tmp_path / "shape.pt")
    expect(tmp_path / "shape.pt", "shape mismatch")
    torch.save({"model_config": {"arch": "mlp"}, "model": {}}, tmp_path / "arch.pt")
    expect(tmp_path / "arch.pt", "unknown model arch 'mlp'")
    torch.save({"model_config": dict(TINY_GLA, width=3), "model": {}}, tmp_path / "kw.pt")
    expect(tmp_path / "kw.pt", "bad argument")


def test_failed_save_leaves_no_file(tmp_path):
    model = build_model(TINY_GLA)
    target = tmp_path / "model.pt"
    with pytest.raises(Exception):
        save_checkpoint(target, model, extra=lambda: None)  # a lambda cannot be pickled
    assert os.listdir(tmp_path) == []
    save_checkpoint(target, model)
    before = target.read_bytes()
    with pytest.raises(Exception):
        save_checkpoint(target, model, extra=lambda: None)
    assert target.read_bytes() == before and os.listdir(tmp_path) == ["model.pt"]


# ------------------------------------------------------------------------------ command line
def test_train_command_with_config_and_flags(tmp_path, positions, capsys):
    from posekernels.data import save_positions_3d

    data = tmp_path / "data_3d.npz"
    save_positions_3d(data, positions)
    conf = tmp_path / "run.json"
    conf.write_text(json.dumps({"model": TINY_GLA, "val_subjects": ["S2"], "epochs": 5,
                                "batch_size": 64, "progress": False, "threads": 1}))
    out = tmp_path / "out"
    rc = cli(["train", "--config", str(conf), "--data-3d", str(data), "--epochs", "2",
              "--out-dir", str(out), "--channels", "6", "--model-args", '{"head": "shared"}'])
    assert rc == 0, capsys.readouterr().err
    ck = torch.load(out / "model.pt", weights_only=True)
    assert ck["config"]["epochs"] == 2
    assert ck["model_config"] == dict(TINY_GLA, channels=6, head="shared")
    assert "epoch 2/2" in capsys.readouterr().out
    # resume a finished run: nothing left to do, same file
    assert cli(["train", "--config", str(conf), "--data-3d", str(data), "--epochs", "2",
                "--out-dir", str(out), "--channels", "6", "--model-args",
                '{"head": "shared"}', "--resume"]) == 0


def test_train_command_bad_input(tmp_path, positions, capsys):
    from posekernels.data import save_positions_3d

    data = tmp_path / "data_3d.npz"
    save_positions_3d(data, positions)
    bad = tmp_path / "bad.json"
    bad.write_text('{"model": {"arch": "glagcn"}, "epochs": -1}')
    out = tmp_path / "out"
    assert cli(["train", "--config", str(bad), "--out-dir", str(out)]) == 1
    err = capsys.readouterr().err
    assert str(bad) in err and "epochs" in err
    assert cli(["train", "--data-3d", str(data), "--val-subjects", "S9", "--out-dir", str(out),
                "--arch", "glagcn", "--receptive-field", "3", "--channels", "4"]) == 1
    assert "validation subject(s) ['S9'] not in the data" in capsys.readouterr().err
    assert cli(["train", "--data-3d", str(data), "--out-dir", str(out), "--arch", "glagcn",
                "--receptive-field", "4"]) == 1
    assert "receptive_field must be 3**k" in capsys.readouterr().err
    assert cli(["train", "--data-3d", str(tmp_path / "none.npz"), "--out-dir", str(out)]) == 1
    assert "none.npz: no such file" in capsys.readouterr().err
    data16 = tmp_path / "data16.npz"
    save_positions_3d(data16, {s: {a: v[:, 1:] for a, v in acts.items()}
                               for s, acts in positions.items()})
    assert cli(["train", "--data-3d", str(data16), "--out-dir", str(out), "--arch", "glagcn",
                "--receptive-field", "3", "--channels", "4"]) == 1
    err = capsys.readouterr().err
    assert str(data16) in err and "expected 17 joints, got 16" in err
    assert not out.exists() or not any(p.suffix == ".pt" for p in out.iterdir())
    assert cli(["train", "--data-3d", str(data), "--out-dir", str(out), "--model-args", "{"]) == 1
    assert "--model-args: malformed JSON" in capsys.readouterr().err
    # resuming from a checkpoint without training state
    model_only = tmp_path / "model_only.pt"
    save_checkpoint(model_only, build_model(TINY_GLA))
    assert cli(["train", "--data-3d", str(data), "--val-subjects", "S2", "--out-dir", str(out),
                "--arch", "glagcn", "--receptive-field", "3", "--channels", "8",
                "--resume", str(model_only), "--no-progress"]) == 1
    assert "missing key 'optimizer'" in capsys.readouterr().err


@pytest.mark.parametrize("mode", ["centered", "causal"])
def test_train_from_the_shipped_recipe_and_ones_own_camera(tmp_path, mode):
    """--config default:MODE is the shipped lifter's recipe without its machine's settings;
    --camera-distribution (inline or a file) sets the training cameras; bad values are refused
    by name."""
    from posekernels.checkpoints import (default_checkpoint_path, default_training_config,
                                         read_checkpoint)
    from posekernels.cli import build_parser
    from posekernels.cli.train import config_from_args

    shipped = read_checkpoint(default_checkpoint_path(mode))["config"]
    recipe = default_training_config(mode)
    assert set(shipped) - set(recipe) == {"data_3d", "out_dir", "device", "threads", "init_from"}
    assert all(recipe[k] == shipped[k] for k in recipe)
    rng = np.random.default_rng()
    height, hfov = round(float(rng.uniform(0.5, 3.0)), 3), round(float(rng.uniform(40, 90)), 3)
    mine = {"image_sizes": [[1280, 720]], "height": [height, height], "hfov_deg": [hfov, hfov]}
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(mine))
    parser = build_parser()
    base = ["train", "--config", f"default:{mode}", "--init-from", f"default:{mode}",
            "--epochs", "2", "--lr", "3e-4", "--data-3d", str(tmp_path / "d.npz"),
            "--out-dir", str(tmp_path / "out")]
    for arg in (json.dumps(mine), str(path)):
        cfg = config_from_args(parser.parse_args(base + ["--camera-distribution", arg]))
        assert cfg.camera_distribution == mine and cfg.init_from == f"default:{mode}"
        assert (cfg.epochs, cfg.lr, cfg.out_dir) == (2, 3e-4, str(tmp_path / "out"))
        assert cfg.model == shipped["model"] and cfg.track_start == shipped["track_start"]
        assert cfg.cameras == "random" and cfg.amp_cpu == shipped["amp_cpu"]
    for args, msg in ((["--config", "default:sideways"], "mode must be one of"),
                      (["--camera-distribution", '{"heigth": [1, 2]}'],
                       "unknown key(s) ['heigth']"),
                      (["--camera-distribution", '{"height": [3, 1]}'], "height must satisfy"),
                      (["--camera-distribution", str(tmp_path / "none.json")], "cannot read"),
                      (["--camera-distribution", "{oops"], "not valid JSON")):
        with pytest.raises(ValueError, match=re.escape(msg) if "[" in msg else msg):
            config_from_args(parser.parse_args(base + args))


def test_amp_is_off_on_cpu_and_numbers_are_float32(tmp_path, positions):
    res = train(tiny_config(tmp_path, epochs=1, amp=True), positions_3d=positions,
                log=lambda *a: None)
    assert all(p.dtype == torch.float32 for p in res["model"].parameters())
    assert np.isfinite(res["history"][0]["loss"])


# ------------------------------------------------------------------------------ init_from
def _random_bn_(model, seed):
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.3)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.bias.shape, generator=g) * 0.2)
    return model


def test_init_weights_copies_and_widens_to_window_norm(tmp_path):
    from posekernels.checkpoints import init_weights, save_checkpoint

    seed = int(torch.randint(0, 2**31 - 1, ()).item())
    torch.manual_seed(seed)
    src = _random_bn_(build_model(dict(TINY_GLA, causal=True)), seed)
    path = tmp_path / "src.pt"
    save_checkpoint(path, src)
    # the same configuration: an exact copy
    same = build_model(dict(TINY_GLA, causal=True))
    got = init_weights(same, path)
    assert got["widened"] == [] and got["copied"] == len(same.state_dict())
    for k, t in same.state_dict().items():
        assert torch.equal(t, src.state_dict()[k]), k
    # window_norm: the input layers take 4 channels per joint; the source fills the first two
    wide = build_model(dict(TINY_GLA, causal=True, window_norm=True))
    got = init_weights(wide, path)
    assert set(got["widened"]) >= {"data_bn.weight", "data_bn.running_mean",
                                   "expand.gcn.W", "expand.residual.conv.weight"}
    ws, ss = wide.state_dict(), src.state_dict()
    for k in ss:
        if k in got["widened"]:
            continue
        assert torch.equal(ws[k], ss[k]), k
    torch.testing.assert_close(ws["data_bn.running_mean"].view(17, 4)[:, :2],
                               ss["data_bn.running_mean"].view(17, 2), rtol=0, atol=0)
    assert torch.equal(ws["data_bn.running_mean"].view(17, 4)[:, 2:], torch.zeros(17, 2))
    assert torch.equal(ws["data_bn.running_var"].view(17, 4)[:, 2:], torch.ones(17, 2))
    torch.testing.assert_close(ws["expand.gcn.W"][..., :2], ss["expand.gcn.W"], rtol=0, atol=0)
    assert torch.equal(ws["expand.gcn.W"][..., 2:], torch.zeros_like(ws["expand.gcn.W"][..., 2:]))
    # a model the source does not fit is refused, naming the tensors
    with pytest.raises(ValueError, match="shapes differ: .*W"):
        init_weights(build_model(dict(TINY_GLA, channels=12)), path)
    with pytest.raises(ValueError, match="no place for"):
        init_weights(build_model(dict(TINY_GLA, sequence_branch=False)), path)
    with pytest.raises(ValueError, match="no such checkpoint"):
        init_weights(same, tmp_path / "missing.pt")


def test_train_init_from_starts_from_the_checkpoint(tmp_path, positions):
    from posekernels.checkpoints import save_checkpoint

    torch.manual_seed(int(torch.randint(0, 2**31 - 1, ()).item()))
    src = build_model(dict(TINY_GLA))
    save_checkpoint(tmp_path / "src.pt", src)
    lines = []
    cfg = tiny_config(tmp_path, epochs=1, lr=1e-12, lr_min=1e-12, optimizer="adam",
                      init_from=str(tmp_path / "src.pt"))
    res = train(cfg, positions_3d=positions, log=lines.append)
    assert any("started from" in ln for ln in lines)
    # with a vanishing learning rate the weights stay the source's
    for k, p in res["model"].named_parameters():
        torch.testing.assert_close(p.detach(), src.state_dict()[k], rtol=0, atol=1e-8)
    # a resumed run takes its last.pt: init_from is not read again
    again = tiny_config(tmp_path, epochs=2, lr=1e-12, lr_min=1e-12, optimizer="adam",
                        init_from=str(tmp_path / "moved-away.pt"))
    train(again, resume="auto", positions_3d=positions, log=lambda *a: None)
    bad = tiny_config(tmp_path, out_dir=str(tmp_path / "fresh"),
                      init_from=str(tmp_path / "nothing.pt"))
    with pytest.raises(ConfigError, match="init_from: .*no such checkpoint"):
        train(bad, positions_3d=positions, log=lambda *a: None)


@pytest.mark.parametrize("balance", [0.0, 1.0])
def test_sample_balance_draws_short_clips_as_often_as_long_ones(tmp_path, positions,
                                                                monkeypatch, balance):
    """sample_balance 1 draws every training sequence alike (with replacement; a clip of 60
    frames as often as one of 300); 0 is one pass over the frames per epoch."""
    from posekernels.training import trainer

    pos = {s: dict(a) for s, a in positions.items()}
    short = sorted(pos["S1"])[0]
    pos["S1"][short] = pos["S1"][short][:60]
    drawn, datasets = [], []
    real_batch = trainer.TrainingData.batch

    def recording_batch(self, ids):
        drawn.append(self.dataset.sequence_of(ids))
        datasets.append(self.dataset)
        return real_batch(self, ids)

    monkeypatch.setattr(trainer.TrainingData, "batch", recording_batch)
    train(tiny_config(tmp_path, epochs=3, batch_size=32, sample_balance=balance),
          positions_3d=pos, log=lambda *a: None)
    ds = datasets[0]
    is_short = torch.tensor([k[:2] == ("S1", short) for k in ds.keys])
    assert 0 < int(is_short.sum()) < len(ds.keys)
    seq = torch.cat(drawn)
    lengths = torch.tensor(ds.lengths, dtype=torch.float64)
    want = float(is_short.sum() / len(ds.keys)) if balance == 1 else \
        float(lengths[is_short].sum() / lengths.sum())
    share = float(is_short[seq].double().mean())
    # binomial spread over len(seq) >= 1000 draws: 3 standard deviations
    tol = 3 * (want * (1 - want) / len(seq)) ** 0.5 if balance == 1 else 0.01
    assert abs(share - want) < tol, (share, want)
    if balance == 0:  # one pass: every frame once per epoch in each orientation's place
        counts = torch.bincount(torch.cat(drawn), minlength=len(ds.keys))
        assert torch.equal(counts, (3 * lengths).to(torch.int64))


@pytest.mark.parametrize("balance, motion", [(0.0, 1.0), (1.0, 2.0)])
def test_motion_weight_draws_fast_frames_more_often(tmp_path, positions, monkeypatch, balance,
                                                    motion):
    """motion_weight g draws each epoch's frames with replacement by the dataset's weights for
    (sample_balance, g); the frames drawn are faster on average than the frames themselves."""
    from posekernels.training import trainer
    from posekernels.training.camera_data import RandomCameraWindows

    drawn, datasets, calls = [], [], []
    real_batch = trainer.TrainingData.batch
    real_weights = RandomCameraWindows.sample_weights

    def recording_batch(self, ids):
        drawn.append(self.dataset._frames(ids))
        datasets.append(self.dataset)
        return real_batch(self, ids)

    def recording_weights(self, b, motion=0.0):
        calls.append((b, motion))
        return real_weights(self, b, motion=motion)

    monkeypatch.setattr(trainer.TrainingData, "batch", recording_batch)
    monkeypatch.setattr(RandomCameraWindows, "sample_weights", recording_weights)
    train(tiny_config(tmp_path, epochs=2, batch_size=32, cameras="random", val_every=0,
                      sample_balance=balance, motion_weight=motion),
          positions_3d=positions, log=lambda *a: None)
    assert calls == [(balance, motion)]
    ds = datasets[0]
    speed = ds.frame_speeds()
    frames = torch.cat(drawn)
    assert float(speed[frames].mean()) > float(speed[ds._ds.frames].mean())


@pytest.mark.parametrize("tune", [True, False])
def test_trainer_tunes_the_cpu_allocator_unless_told_not_to(tmp_path, positions, monkeypatch,
                                                            tune):
    import posekernels

    calls = []
    monkeypatch.setattr(posekernels, "tune_cpu_allocator", lambda: calls.append(1) or True)
    cfg = tiny_config(tmp_path, epochs=1, batch_size=32, val_every=0, tune_allocator=tune)
    train(cfg, positions_3d=positions, log=lambda *a: None)
    assert calls == ([1] if tune else [])
    with pytest.raises(ConfigError, match="tune_allocator"):
        tiny_config(tmp_path, tune_allocator="yes")
