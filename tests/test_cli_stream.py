"""``posekernels stream``: JSON lines in, JSON lines out, equal to the offline lift; and the demo."""
import json

import numpy as np
import pytest
import torch

import posekernels.stream as stream
from posekernels import adapters, lift_sequence
from posekernels.cli import main
from posekernels.models import GLAGCN


@pytest.fixture
def model(monkeypatch):
    torch.manual_seed(0)
    m = GLAGCN(receptive_field=9, channels=8).eval()
    monkeypatch.setattr(stream, "load_model", lambda *a, **k: m)
    return m


def _coco_frames(n, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.uniform(200, 400, size=(17, 2))
    return base + rng.normal(0, 5, size=(n, 17, 2)), rng.uniform(0.5, 1, size=(n, 17))


def test_stream_cli_two_streams_match_offline(tmp_path, model):
    a, sa = _coco_frames(12, 0)
    b, sb = _coco_frames(5, 1)
    lines = []
    for f in range(12):
        kp = [[float(x), float(y), float(s)] for (x, y), s in zip(a[f], sa[f])]
        lines.append(json.dumps({"keypoints": kp, "stream": "cam0", "frame": 100 + f}))
        if f < 5:
            flat = [float(v) for v in b[f].reshape(-1)]
            lines.append(json.dumps({"keypoints": flat, "scores": sb[f].tolist(), "stream": 7}))
        if f == 6:
            lines.append(json.dumps({"stream": 7, "end": True}))
    lines.insert(3, "this is not json")
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(lines) + "\n")
    dst = tmp_path / "out.jsonl"
    code = main(["stream", "--input", str(src), "--output", str(dst), "--format", "coco17",
                 "--width", "640", "--height", "480", "--checkpoint", "default"])
    assert code == 1  # one malformed line was skipped (and reported)
    recs = [json.loads(line) for line in dst.read_text().splitlines()]
    for sid, seq, sc, frames in (("cam0", a, sa, [100 + f for f in range(12)]),
                                 (7, b, sb, list(range(5)))):
        got = [r for r in recs if r["stream"] == sid]
        assert [r["frame"] for r in got] == frames
        assert [r["index"] for r in got] == list(range(len(frames)))
        assert all(r["latency_ms"] >= 0 and r["age_ms"] >= r["latency_ms"] for r in got)
        kp, _ = adapters.to_h36m17(seq, sc, fmt="coco17", width=640, height=480)
        want = lift_sequence(model, kp) * 1000.0
        np.testing.assert_allclose(np.array([r["pose_mm"] for r in got]), want, atol=0.02)


def test_stream_cli_stdin_stdout_blazepose_missing_points(monkeypatch, capsys, model):
    import io

    rng = np.random.default_rng(3)
    lines = []
    for f in range(6):
        pts = rng.uniform(0.3, 0.7, size=(33, 2)).tolist()
        if f == 2:
            pts[11] = [None, None]
        lines.append(json.dumps({"keypoints": pts, "scores": [0.9] * 33}))
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(lines)))
    code = main(["stream", "--input", "-", "--format", "blazepose33", "--units", "unit",
                 "--width", "640", "--height", "480", "--mode", "centered"])
    assert code == 0
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(out) == 6 and all(np.isfinite(r["pose_mm"]).all() for r in out)


def test_stream_cli_errors(tmp_path, capsys, model):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"keypoints": [[0, 0]] * 17}) + "\n")
    code = main(["stream", "--input", str(src), "--format", "coco17", "--width", "640",
                 "--height", "480", "--mode", "causal"])
    assert code == 2 and "does not match the model" in capsys.readouterr().err
    src.write_text(json.dumps({"keypoints": [[0, 0]] * 16}) + "\n")
    code = main(["stream", "--input", str(src), "--format", "coco17", "--width", "640",
                 "--height", "480"])
    err = capsys.readouterr().err
    assert code == 1 and "line 1" in err and "expected 17 points" in err


def test_default_checkpoint_error_is_clear(monkeypatch):
    from posekernels.stream import _checkpoint

    training = pytest.importorskip("posekernels.training.checkpoint")

    def missing(map_location="cpu"):
        raise ValueError("assets/default_model.pt: the default model is missing")

    monkeypatch.setattr(training, "load_default_model", missing)
    with pytest.raises(_checkpoint.DefaultModelUnavailable, match="--checkpoint PATH"):
        _checkpoint.load_model("default")


def test_demo_runs_and_saves_png(tmp_path, capsys, model):
    png = tmp_path / "demo.png"
    code = main(["demo", "--frames", "30", "--png", str(png)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "p50" in out and "p99" in out and "frames/s" in out and "MPJPE" in out
    assert png.exists() and png.stat().st_size > 1000


def test_stream_cli_with_a_checkpoint_file(tmp_path):
    training = pytest.importorskip("posekernels.training.checkpoint")
    torch.manual_seed(2)
    model = training.build_model({"arch": "glagcn", "receptive_field": 3, "channels": 8,
                                  "causal": True})
    path = tmp_path / "m.pt"
    training.save_checkpoint(path, model)
    a, sa = _coco_frames(4, 5)
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"keypoints": a[f].tolist()}) + "\n" for f in range(4)))
    dst = tmp_path / "out.jsonl"
    code = main(["stream", "--input", str(src), "--output", str(dst), "--format", "coco17",
                 "--width", "640", "--height", "480", "--checkpoint", str(path)])
    assert code == 0
    got = np.array([json.loads(line)["pose_mm"] for line in dst.read_text().splitlines()])
    kp, _ = adapters.to_h36m17(a, None, fmt="coco17", width=640, height=480)
    np.testing.assert_allclose(got, lift_sequence(model.eval(), kp) * 1000.0, atol=0.02)
