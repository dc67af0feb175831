"""Input at another frame rate than the model's: windows sampled at the model's frame spacing.

window_sampling against exact positions, lift_sequence(fps=...) against an independent float64
construction (np.interp per coordinate), straight-line motion at two rates giving the same
windows, the streaming lifter equal to lift_sequence at any rate, the checkpoint's frame_rate,
errors, and the commands' --fps."""
import json
import math

import numpy as np
import pytest
import torch
from _tiny_models import metre_glagcn, stream_staggered

from posekernels import lift_sequence
from posekernels.checkpoints import load_checkpoint, load_default_model, save_checkpoint
from posekernels.cli import main as cli
from posekernels.inference import model_rate, window_offsets, window_sampling
from posekernels.stream import StreamingLifter

RNG = np.random.default_rng()


def _rates(n):
    """n random (fps, model_fps) pairs, with the common camera rates among them."""
    common = [(30.0, 50.0), (25.0, 50.0), (60.0, 50.0), (24.0, 60.0), (29.97, 50.0)]
    drawn = [(float(RNG.uniform(5, 240)), float(RNG.uniform(10, 120))) for _ in range(n)]
    return common + drawn


def _model(T, causal, seed, double=False):
    m = metre_glagcn(T, causal, seed)
    return m.double() if double else m


@pytest.mark.parametrize("causal", [False, True])
def test_window_sampling_positions(causal):
    for T in (1, 3, 9, 27, 81):
        assert window_sampling(T, causal).lo == tuple(window_offsets(T, causal).tolist())
        for fps, model_fps in _rates(20):
            s = window_sampling(T, causal, fps, model_fps)
            step = fps / model_fps
            assert s.step == pytest.approx(step, rel=1e-15)
            for k, off in enumerate(window_offsets(T, causal).tolist()):
                want = off * step
                assert 0.0 <= s.weight[k] < 1.0
                assert s.hi[k] - s.lo[k] == (1 if s.weight[k] > 0 else 0)
                assert s.lo[k] + s.weight[k] == pytest.approx(want, abs=1e-9)
            assert s.delay == (0 if causal else math.ceil((T - 1) // 2 * step - 1e-9))
            assert s.lookback == -math.floor(window_offsets(T, causal)[0].item() * step + 1e-9)
            assert s.span == s.lookback + 1 + s.delay


def test_whole_steps_do_not_interpolate():
    s = window_sampling(9, False, 100.0, 50.0)
    assert not s.interpolates and s.lo == (-8, -6, -4, -2, 0, 2, 4, 6, 8)
    s = window_sampling(27, False, 50.0, 50.0)
    assert not s.interpolates and s.lo == tuple(range(-13, 14)) and s.delay == 13


def test_gather_is_linear_interpolation_in_time():
    """Windows against np.interp of every coordinate at the (clamped) sampling positions."""
    for causal in (False, True):
        for fps, model_fps in _rates(6):
            F = int(RNG.integers(1, 60))
            x = RNG.normal(size=(F, 5, 2))
            s = window_sampling(9, causal, fps, model_fps)
            got = s.gather(torch.from_numpy(x), torch.arange(F), F - 1).numpy()
            offs = window_offsets(9, causal).numpy() * (fps / model_fps)
            grid = np.arange(F)
            for t in range(F):
                pos = t + offs
                for j in range(5):
                    for c in range(2):
                        want = np.interp(pos, grid, x[:, j, c])
                        np.testing.assert_allclose(got[t, :, j, c], want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("causal", [False, True])
def test_lift_sequence_at_another_rate_against_float64_windows(causal):
    T = 9
    model = _model(T, causal, int(RNG.integers(1 << 30)), double=True)
    for fps, model_fps in _rates(2):
        F = int(RNG.integers(T, 4 * T))
        x = RNG.normal(size=(F, 17, 2)) * 0.5
        offs = window_offsets(T, causal).numpy() * (fps / model_fps)
        grid = np.arange(F)
        windows = np.empty((F, T, 17, 2))
        for j in range(17):
            for c in range(2):
                for t in range(F):
                    windows[t, :, j, c] = np.interp(t + offs, grid, x[:, j, c])
        with torch.no_grad():
            want = model(torch.from_numpy(windows))[:, 0].numpy()
        got = lift_sequence(model, x, fps=fps, model_fps=model_fps, fold=False)
        scale = max(1.0, np.abs(want).max())
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * scale)
        # the folded plan in float64 gives the same to rounding ...
        folded = lift_sequence(model, x, fps=fps, model_fps=model_fps, fold=True)
        np.testing.assert_allclose(folded, want, rtol=0, atol=1e-10 * scale)
        # ... and in float32 up to float32 rounding: random test models are badly conditioned
        # now and then (over 400 draws the folded float32 plan was up to 3.4e-4 off, the unfolded
        # float32 model up to 2.5e-4), so the bound is a multiple of that tail, not of eps32
        got32 = lift_sequence(model.float(), x.astype(np.float32), fps=fps, model_fps=model_fps)
        model.double()
        assert np.abs(got32 - want).max() < 2e-3 * scale


def test_slow_camera_sees_the_models_speed():
    """Straight-line motion filmed at 30 fps and at 50 fps: with fps=30 the interior windows are
    exactly those of the 50 Hz recording at the same instants, so the poses are equal."""
    T, model = 9, _model(9, False, 7, double=True)
    a, b = RNG.normal(size=(17, 2)) * 0.3, RNG.normal(size=(17, 2)) * 0.5  # x(t) = a + b t
    t30 = np.arange(60) / 30.0
    t50 = np.arange(100) / 50.0
    x30 = a + b * t30[:, None, None]
    x50 = a + b * t50[:, None, None]
    y30 = lift_sequence(model, x30, fps=30.0, model_fps=50.0, fold=False)
    y50 = lift_sequence(model, x50, fold=False)
    native = lift_sequence(model, x30, fold=False)
    h = (T - 1) // 2
    for i in range(10, 50):  # 30 fps frame i at time i / 30 = 50 Hz frame 5 i / 3
        if (5 * i) % 3 == 0 and h <= 5 * i // 3 < 100 - h:
            scale = max(1.0, np.abs(y50).max())
            np.testing.assert_allclose(y30[i], y50[5 * i // 3], rtol=0, atol=1e-12 * scale)
            assert np.abs(native[i] - y50[5 * i // 3]).max() > 1e-6  # without fps it differs


@pytest.mark.parametrize("causal", [False, True])
def test_stream_equals_lift_sequence_at_any_rate(causal):
    T = 9
    model = _model(T, causal, int(RNG.integers(1 << 30)))
    for fps, model_fps in _rates(2)[3:]:  # 24 -> 60, 29.97 -> 50 and two drawn rates
        S = 3
        lengths = [int(RNG.integers(1, 3 * T)) for _ in range(S)]
        starts = [int(RNG.integers(0, 5)) for _ in range(S)]
        seqs = [torch.from_numpy(RNG.normal(size=(n, 17, 2)).astype(np.float32) * 0.5)
                for n in lengths]
        lifter = StreamingLifter(model, num_streams=S, fps=fps, model_fps=model_fps,
                                 flip_tta=bool(RNG.integers(2)))
        s = window_sampling(T, causal, fps, model_fps)
        assert lifter.latency_frames == s.delay and lifter.ring.shape[1] == s.span + 1
        outs, flushed = stream_staggered(lifter, seqs, starts)
        assert flushed == [min(s.delay, n) for n in lengths]
        for i in range(S):
            want = lift_sequence(model, seqs[i], fps=fps, model_fps=model_fps,
                                 flip_tta=lifter.flip_tta)
            assert (torch.stack(outs[i]) - want).abs().max().item() < 1e-5


def test_model_rate_and_errors():
    model = _model(9, False, 1)
    x = RNG.normal(size=(12, 17, 2)).astype(np.float32)
    with pytest.raises(ValueError, match="model_fps"):
        lift_sequence(model, x, fps=30.0)
    with pytest.raises(ValueError, match="model_fps"):
        StreamingLifter(model, fps=30.0)
    for bad in (0, -30.0, float("nan"), float("inf"), True, "30", 5000.0):
        with pytest.raises(ValueError, match="fps must be a frame rate"):
            lift_sequence(model, x, fps=bad, model_fps=50.0)
        with pytest.raises(ValueError, match="model_fps must be a frame rate"):
            lift_sequence(model, x, fps=30.0, model_fps=bad)
    model.frame_rate = 60.0
    assert model_rate(model) == 60.0 and model_rate(model, 25) == 25.0
    np.testing.assert_array_equal(lift_sequence(model, x, fps=30.0),
                                  lift_sequence(model, x, fps=30.0, model_fps=60.0))


def test_checkpoint_records_frame_rate(tmp_path):
    model = _model(9, True, 2)
    save_checkpoint(tmp_path / "a.pt", model, frame_rate=60.0)
    assert load_checkpoint(tmp_path / "a.pt").frame_rate == 60.0
    save_checkpoint(tmp_path / "b.pt", model)
    assert not hasattr(load_checkpoint(tmp_path / "b.pt"), "frame_rate")
    for bad in (0.0, "50", float("nan"), True):
        save_checkpoint(tmp_path / "c.pt", model, frame_rate=bad)
        with pytest.raises(ValueError, match="frame_rate"):
            load_checkpoint(tmp_path / "c.pt")
    for mode in ("causal", "centered"):
        assert load_default_model(mode=mode).frame_rate == 50.0


def test_commands_take_the_camera_rate(tmp_path, capsys):
    """stream --fps equals lift_sequence(fps=...); evaluate --fps records the resampling."""
    from _training_data import write_bvh

    from posekernels import adapters

    model = _model(9, False, 3)
    path = tmp_path / "m.pt"
    save_checkpoint(path, model, frame_rate=50.0)
    rng = np.random.default_rng()
    kp = rng.uniform(200, 400, size=(17, 2)) + rng.normal(0, 5, size=(20, 17, 2))
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"keypoints": kp[f].reshape(-1).tolist(), "stream": 0})
                           + "\n" for f in range(20)))
    dst = tmp_path / "out.jsonl"
    assert cli(["stream", "--input", str(src), "--output", str(dst), "--format", "coco17",
                "--width", "640", "--height", "480", "--checkpoint", str(path),
                "--fps", "30"]) == 0
    got = np.array([json.loads(line)["pose_mm"] for line in dst.read_text().splitlines()])
    h36m, _ = adapters.to_h36m17(kp, None, fmt="coco17", width=640, height=480)
    want = lift_sequence(load_checkpoint(path), h36m, fps=30.0) * 1000.0
    np.testing.assert_allclose(got, want, atol=0.02)
    args = ["stream", "--input", str(src), "--output", str(dst), "--format", "coco17",
            "--width", "640", "--height", "480", "--checkpoint", str(path), "--fps"]
    with pytest.raises(SystemExit):
        cli(args + ["0"])
    assert "--fps" in capsys.readouterr().err
    assert cli(args + ["5000"]) == 2
    assert "fps must be a frame rate" in capsys.readouterr().err

    bvh = write_bvh(tmp_path / "S7" / "S7_01.bvh", 120, seed=5)
    runs = {}
    for extra in ([], ["--native-rate"]):
        assert cli(["evaluate", "--bvh", str(bvh), "--checkpoint", str(path), "--json",
                    "--fps", "30", *extra]) == 0
        runs[bool(extra)] = json.loads(capsys.readouterr().out)
    assert runs[False]["windows_resampled_from_fps"] == 30.0
    assert runs[False]["model_frame_rate"] == 50.0
    assert runs[True]["windows_resampled_from_fps"] is None
    assert runs[False]["mpjpe"] != runs[True]["mpjpe"]
