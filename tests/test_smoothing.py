"""One Euro smoothing: the recurrence against an independent float64 loop, its limits, the live
filter equal to the offline one through StreamingLifter / lift_sequence, and bad settings."""
import math

import numpy as np
import pytest
import torch
from _tiny_models import metre_glagcn, stream_staggered

from posekernels import lift_sequence
from posekernels.inference import SMOOTHING_DEFAULTS, SmoothingConfig, one_euro
from posekernels.stream import StreamingLifter

RNG = np.random.default_rng()


def _oracle(x, min_cutoff, beta, d_cutoff, fps):
    """The published recurrence, joint by joint, in float64 Python."""
    dt = 1.0 / fps

    def alpha(fc):
        tau = 1.0 / (2 * math.pi * fc)
        return 1.0 / (1.0 + tau / dt)

    F, V, _ = x.shape
    out = np.empty_like(x)
    for v in range(V):
        xh, dxh = x[0, v].copy(), np.zeros(3)
        out[0, v] = xh
        for f in range(1, F):
            dx = (x[f, v] - xh) / dt
            dxh = dxh + alpha(d_cutoff) * (dx - dxh)
            fc = min_cutoff + beta * np.linalg.norm(dxh)
            xh = xh + alpha(fc) * (x[f, v] - xh)
            out[f, v] = xh
    return out


def test_one_euro_against_the_recurrence():
    for _ in range(4):
        cfg = dict(min_cutoff=float(RNG.uniform(0.2, 5)), beta=float(RNG.uniform(0, 20)),
                   d_cutoff=float(RNG.uniform(0.5, 3)), fps=float(RNG.choice([25, 30, 50, 60])))
        x = np.cumsum(RNG.normal(scale=0.02, size=(int(RNG.integers(2, 60)), 5, 3)), axis=0)
        got = one_euro(x, cfg)
        np.testing.assert_allclose(got, _oracle(x, **cfg), rtol=0, atol=1e-12)
        assert got.dtype == x.dtype
        t = one_euro(torch.from_numpy(x.astype(np.float32)), cfg)
        assert t.dtype == torch.float32
        np.testing.assert_allclose(t.numpy(), _oracle(x, **cfg), atol=1e-5)


def test_limits():
    x = np.broadcast_to(RNG.normal(size=(1, 4, 3)), (30, 4, 3)).copy()
    np.testing.assert_allclose(one_euro(x, True), x, atol=1e-15)  # a still pose stays put
    noisy = x + RNG.normal(scale=0.01, size=x.shape)
    assert np.abs(np.diff(one_euro(noisy, True), axis=0)).mean() < \
        np.abs(np.diff(noisy, axis=0)).mean() / 2  # jitter damped
    passthrough = one_euro(noisy, {"min_cutoff": 1e6, "beta": 0.0})
    np.testing.assert_allclose(passthrough, noisy, atol=1e-6)
    assert one_euro(noisy, None) is noisy


@pytest.mark.parametrize("causal", [False, True])
def test_stream_smoothing_equals_lift_sequence(causal):
    T = 9
    model = metre_glagcn(T, causal, int(RNG.integers(1 << 30)))
    fps = float(RNG.choice([30.0, 50.0]))
    smooth = {"min_cutoff": float(RNG.uniform(0.5, 3)), "beta": float(RNG.uniform(0, 10))}
    S = 3
    lengths = [int(RNG.integers(1, 3 * T)) for _ in range(S)]
    starts = [int(RNG.integers(0, 4)) for _ in range(S)]
    seqs = [torch.from_numpy(RNG.normal(size=(n, 17, 2)).astype(np.float32) * 0.5)
            for n in lengths]
    lifter = StreamingLifter(model, num_streams=S, fps=fps, model_fps=50.0, smoothing=smooth)
    assert lifter.smoothing.fps == fps
    for round_ in range(2):  # the second round after flush: the filter starts over
        outs, _ = stream_staggered(lifter, seqs, starts)
        for i in range(S):
            want = lift_sequence(model, seqs[i], fps=fps, model_fps=50.0, smoothing=smooth)
            plain = lift_sequence(model, seqs[i], fps=fps, model_fps=50.0)
            got = torch.stack(outs[i])
            assert (got - want).abs().max().item() < 1e-5 * max(1.0, want.abs().max().item())
            if lengths[i] > 2:
                assert (want - plain).abs().max().item() > 1e-6  # it did smooth


def test_bad_settings():
    model = metre_glagcn(3, True, 0)
    for bad, match in (({"min_cutoff": 0}, "min_cutoff > 0"), ({"beta": -1}, "beta >= 0"),
                       ({"d_cutoff": float("nan")}, "d_cutoff must be a finite"),
                       ({"fps": 0}, "fps must be a frame rate"), ({"cutoff": 1}, "unknown key")):
        with pytest.raises(ValueError, match=match):
            StreamingLifter(model, smoothing=bad)
        with pytest.raises(ValueError, match=match):
            lift_sequence(model, RNG.normal(size=(5, 17, 2)).astype(np.float32), smoothing=bad)
    with pytest.raises(TypeError, match="smoothing must be"):
        StreamingLifter(model, smoothing="strong")
    with pytest.raises(ValueError, match=r"\(F, V, 3\)"):
        one_euro(np.zeros((4, 17, 2)))
    assert isinstance(SMOOTHING_DEFAULTS, SmoothingConfig)


def test_stream_command_smooths_like_lift_sequence(tmp_path, capsys):
    import json

    from posekernels import adapters
    from posekernels.checkpoints import load_checkpoint, save_checkpoint
    from posekernels.cli import main as cli

    path = tmp_path / "m.pt"
    save_checkpoint(path, metre_glagcn(9, True, 4), frame_rate=50.0)
    kp = RNG.uniform(200, 400, size=(17, 2)) + RNG.normal(0, 5, size=(25, 17, 2))
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"keypoints": kp[f].reshape(-1).tolist()}) + "\n"
                           for f in range(25)))
    dst = tmp_path / "out.jsonl"
    base = ["stream", "--input", str(src), "--output", str(dst), "--format", "coco17",
            "--width", "640", "--height", "480", "--checkpoint", str(path)]
    assert cli(base + ["--smooth", "--smooth-beta", "5"]) == 0
    got = np.array([json.loads(line)["pose_mm"] for line in dst.read_text().splitlines()])
    h36m, _ = adapters.to_h36m17(kp, None, fmt="coco17", width=640, height=480)
    cfg = dict(SMOOTHING_DEFAULTS.to_dict(), beta=5.0, fps=None)
    want = lift_sequence(load_checkpoint(path), h36m, smoothing=cfg) * 1000.0
    np.testing.assert_allclose(got, want, atol=0.02)
    assert cli(base + ["--smooth-beta", "5"]) == 2
    assert "need --smooth" in capsys.readouterr().err
