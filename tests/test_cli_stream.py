"""``posekernels stream``: JSON lines in, JSON lines out, equal to the offline lift; and the demo."""
import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import posekernels.checkpoints as checkpoints
import posekernels.stream as stream
from posekernels import adapters, lift_sequence
from posekernels.cli import main
from posekernels.models import GLAGCN


def _serve_model(monkeypatch, m):
    """Make every command's load_model (posekernels.checkpoints', and its re-export in
    posekernels.stream) return ``m``."""
    monkeypatch.setattr(checkpoints, "load_model", lambda *a, **k: m)
    monkeypatch.setattr(stream, "load_model", lambda *a, **k: m)


@pytest.fixture
def model(monkeypatch):
    torch.manual_seed(0)
    m = GLAGCN(receptive_field=9, channels=8).eval()
    _serve_model(monkeypatch, m)
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


def test_stream_cli_bf16_matches_offline_bf16(tmp_path, model):
    """--precision bf16: the stream's poses are lift_sequence(precision="bf16") (and not the
    float32 ones)."""
    a, sa = _coco_frames(12, int(np.random.default_rng().integers(1 << 30)))
    lines = [json.dumps({"keypoints": [[float(x), float(y), float(s)] for (x, y), s
                                       in zip(a[f], sa[f])], "stream": "c"}) for f in range(12)]
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(lines) + "\n")
    dst = tmp_path / "out.jsonl"
    assert main(["stream", "--input", str(src), "--output", str(dst), "--format", "coco17",
                 "--width", "640", "--height", "480", "--precision", "bf16"]) == 0
    got = np.array([json.loads(line)["pose_mm"] for line in dst.read_text().splitlines()])
    kp, _ = adapters.to_h36m17(a, sa, fmt="coco17", width=640, height=480)
    want = lift_sequence(model, kp, precision="bf16") * 1000.0
    plain = lift_sequence(model, kp) * 1000.0
    np.testing.assert_allclose(got, want, atol=0.02)
    assert np.abs(want - plain).max() > 0.02


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
    def missing(map_location="cpu", mode="centered"):
        raise ValueError(f"assets/default_{mode}.pt: the default model is missing")

    monkeypatch.setattr(checkpoints, "load_default_model", missing)
    assert stream.load_model is checkpoints.load_model
    assert stream.DefaultModelUnavailable is checkpoints.DefaultModelUnavailable
    with pytest.raises(checkpoints.DefaultModelUnavailable,
                       match=r"default_causal\.pt.*--checkpoint PATH"):
        checkpoints.load_model("default")


def test_demo_runs_and_saves_png(tmp_path, capsys, model):
    png = tmp_path / "demo.png"
    code = main(["demo", "--frames", "30", "--png", str(png)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "p50" in out and "p99" in out and "frames/s" in out and "MPJPE" in out
    assert png.exists() and png.stat().st_size > 1000


def test_demo_empty_picture_paths_write_nothing(tmp_path, capsys, monkeypatch, model):
    monkeypatch.chdir(tmp_path)
    code = main(["demo", "--frames", "30", "--png", "", "--gif", ""])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "saved" not in out and list(tmp_path.iterdir()) == []


def test_stream_cli_with_a_checkpoint_file(tmp_path):
    torch.manual_seed(2)
    model = checkpoints.build_model({"arch": "glagcn", "receptive_field": 3, "channels": 8,
                                  "causal": True})
    path = tmp_path / "m.pt"
    checkpoints.save_checkpoint(path, model)
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


# ----------------------------------------------------------------------------- hostile input
def _strict(line):
    """json.loads that refuses NaN / Infinity (what a strict JSON reader does)."""
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")
    return json.loads(line, parse_constant=refuse)


def _frame_line(kp, sc, stream="cam0", **extra):
    pts = [[float(x), float(y), float(s)] for (x, y), s in zip(kp, sc)]
    return json.dumps({"keypoints": pts, "stream": stream, **extra}).encode()


def _run(tmp_path, capsys, raw_lines, *flags):
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"\n".join(raw_lines) + b"\n")
    dst = tmp_path / "out.jsonl"
    code = main(["stream", "--input", str(src), "--output", str(dst), "--format", "coco17",
                 "--width", "640", "--height", "480", *flags])
    out = [_strict(line) for line in dst.read_text().splitlines()]
    return code, out, capsys.readouterr().err


def _offline(model, kp, sc):
    h36, hsc = adapters.to_h36m17(kp, sc, fmt="coco17", width=640, height=480)
    return lift_sequence(model, stream.fill_missing(h36, hsc, min_score=0.3)) * 1000.0


_VALID = _frame_line(np.full((17, 2), 300.0), np.ones(17)).decode()
_HOSTILE = {
    "deep nesting": b"[" * 100_000 + b"]" * 100_000,
    "deep nesting in a field": b'{"stream": "cam0", "keypoints": ' + b"[" * 100_000
                               + b"]" * 100_000 + b"}",
    "400-digit frame": _VALID[:-1].encode() + b', "frame": ' + b"7" * 400 + b"}",
    "400-digit stream id": _VALID.replace('"cam0"', "9" * 400).encode(),
    "5000-digit integer": b'{"stream": "cam0", "frame": ' + b"1" * 5000 + b"}",
    "invalid utf-8 in a string": _VALID.replace("cam0", "cam\udcff0").encode(
        "utf-8", "surrogateescape"),
    "invalid utf-8 bytes": b"\xff\xfe\x00{\x80",
    "string coordinate": _VALID.replace("[300.0, 300.0, 1.0]", '["900", 300.0, 1.0]', 1).encode(),
    "boolean coordinate": _VALID.replace("[300.0, 300.0, 1.0]", "[true, 300.0, 1.0]", 1).encode(),
    "string score": _VALID.replace("[300.0, 300.0, 1.0]", '[300.0, 300.0, "1"]', 1).encode(),
    "end as a string": b'{"stream": "cam0", "end": "false"}',
    "end as a number": b'{"stream": "cam0", "end": 1}',
    "boolean stream id": _VALID.replace('"cam0"', "true").encode(),
    "huge line": _VALID[:-1].encode() + b', "pad": "' + b"x" * (2 << 20) + b'"}',
    "not an object": b"[1, 2, 3]",
    "a bare number": b"1e400",
    "nul bytes": b"\x00\x00\x00",
}


@pytest.mark.parametrize("name", list(_HOSTILE))
def test_hostile_line_is_reported_and_the_stream_goes_on(tmp_path, capsys, model, name):
    kp, sc = _coco_frames(14, 4)
    raw = [_frame_line(kp[f], sc[f], frame=f) for f in range(14)]
    raw.insert(7, _HOSTILE[name])      # line 8
    raw.insert(11, b"not json")        # line 12: line numbers still right after the bad line
    code, out, err = _run(tmp_path, capsys, raw)
    assert code == 1, err
    assert "line 8:" in err and "line 12:" in err, err
    assert "Traceback" not in err
    assert [r["frame"] for r in out] == list(range(14))
    assert [r["index"] for r in out] == list(range(14))  # "end": "false" did not end the stream
    np.testing.assert_allclose(np.array([r["pose_mm"] for r in out]), _offline(model, kp, sc),
                               atol=0.02)


def test_huge_line_limit_is_configurable(tmp_path, capsys, model):
    kp, sc = _coco_frames(6, 2)
    raw = [_frame_line(kp[f], sc[f]) for f in range(6)]
    raw.insert(2, b'{"pad": "' + b"y" * 10_000 + b'"}')
    code, out, err = _run(tmp_path, capsys, raw, "--max-line-bytes", "4096")
    assert code == 1 and "line 3: longer than --max-line-bytes=4096" in err, err
    assert len(out) == 6


@pytest.mark.parametrize("case", ["all at 1e30", "some out of range"])
def test_out_of_range_coordinates_count_as_missing(tmp_path, capsys, model, case):
    """1e30, -1e30, Infinity, a 400-digit integer, x beyond 2 * width: missing points (held at
    their last value), never NaN in the output; points inside [-W, 2W] x [-H, 2H] stay valid."""
    kp, sc = _coco_frames(12, 6)
    raw = [_frame_line(kp[f], sc[f]) for f in range(12)]
    missing = kp.copy()
    pts = [[repr(float(x)), repr(float(y)), "0.9"] for x, y in kp[5]]
    if case == "all at 1e30":
        pts = [["1e30", "1e30", "0.9"]] * 17
        missing[5] = np.nan
    else:
        bad = {1: ["-1e30", "100"], 3: ["100", "7" * 400], 4: ["1e999", "10"],
               6: ["1281", "100"], 8: ["100", "-481"], 9: ["NaN", "10"]}
        for j, p in bad.items():
            pts[j] = p + ["0.9"]
            missing[5, j] = np.nan
        pts[10] = ["-639.5", "959.5", "0.9"]        # inside the sane range: kept
        kp[5, 10] = missing[5, 10] = [-639.5, 959.5]
    sc = sc.copy()
    sc[5] = 0.9
    raw[5] = ('{"stream": "cam0", "keypoints": [' + ", ".join(
        "[" + ", ".join(p) + "]" for p in pts) + "]}").encode()
    code, out, err = _run(tmp_path, capsys, raw)
    assert code == 0, err
    assert "line 6:" in err and "sane range" in err
    assert len(out) == 12
    got = np.array([r["pose_mm"] for r in out])
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, _offline(model, missing, sc), atol=0.02)


def test_non_finite_model_output_is_never_written(tmp_path, capsys, monkeypatch):
    torch.manual_seed(0)
    m = GLAGCN(receptive_field=3, channels=8).eval()
    with torch.no_grad():
        next(m.head.parameters()).fill_(float("nan"))
    _serve_model(monkeypatch, m)
    kp, sc = _coco_frames(4, 1)
    code, out, err = _run(tmp_path, capsys, [_frame_line(kp[f], sc[f]) for f in range(4)])
    assert code == 1 and out == []
    assert err.count("non-finite pose") == 4


# ----------------------------------------------------------------------------- slots
def test_more_ids_than_max_streams_are_served_after_ends(tmp_path, capsys, model):
    """A tracker's ids come and go: with --max-streams 2, six people (and one id used twice) are
    all served; a third live id is refused on its line without stopping the others."""
    people = {f"p{k}": _coco_frames(5 + k, 10 + k) for k in range(6)}
    raw, order = [], []
    for k in range(0, 6, 2):
        a, b = f"p{k}", f"p{k + 1}"
        for f in range(max(len(people[a][0]), len(people[b][0]))):
            for sid in (a, b):
                if f < len(people[sid][0]):
                    raw.append(_frame_line(people[sid][0][f], people[sid][1][f], stream=sid))
            if k == 2 and f == 1:
                raw.append(_frame_line(people["p0"][0][0], people["p0"][1][0], stream="late"))
                refused = len(raw)
        raw.append(json.dumps({"stream": a, "end": True}).encode())
        raw.append(json.dumps({"stream": b, "end": True}).encode())
        order += [a, b]
    again = _coco_frames(4, 99)  # p0 comes back: a new stream, index from 0
    raw += [_frame_line(again[0][f], again[1][f], stream="p0") for f in range(4)]
    code, out, err = _run(tmp_path, capsys, raw, "--max-streams", "2")
    assert code == 1
    assert f"line {refused}: a new stream 'late'" in err and "--max-streams=2" in err, err
    assert err.count("skipped") == 2  # the refused line, and the summary
    for sid in order:
        got = [r for r in out if r["stream"] == sid]
        kp, sc = people[sid]
        if sid == "p0":
            got, again_got = got[:len(kp)], got[len(kp):]
            assert [r["index"] for r in again_got] == list(range(4))
            np.testing.assert_allclose(np.array([r["pose_mm"] for r in again_got]),
                                       _offline(model, *again), atol=0.02)
        assert [r["index"] for r in got] == list(range(len(kp))), sid
        np.testing.assert_allclose(np.array([r["pose_mm"] for r in got]),
                                   _offline(model, kp, sc), atol=0.02)


class _SlowStdin:
    """A stdin whose binary readline sleeps at the float entries of ``items`` (in the reader
    thread) and then notes how many poses the output file holds."""

    def __init__(self, items, out_path):
        self.buffer = self
        self.items = list(items)
        self.out_path = out_path
        self.seen_after_pause = []

    def readline(self, limit=-1):
        while self.items and isinstance(self.items[0], float):
            time.sleep(self.items.pop(0))
            self.seen_after_pause.append(len(self.out_path.read_text().splitlines()))
        return self.items.pop(0) + b"\n" if self.items else b""


@pytest.mark.parametrize("idle", ["0.3", "0"])
def test_idle_timeout_frees_the_slot(tmp_path, capsys, monkeypatch, model, idle):
    a, b = _coco_frames(6, 20), _coco_frames(6, 21)
    items = [_frame_line(a[0][f], a[1][f], stream="A") for f in range(6)]
    items.append(1.5)  # A goes quiet for 1.5 s: with a 0.3 s idle time it is flushed meanwhile
    items += [_frame_line(b[0][f], b[1][f], stream="B") for f in range(6)]
    dst = tmp_path / "out.jsonl"
    dst.write_text("")
    fake = _SlowStdin(items, dst)
    monkeypatch.setattr("sys.stdin", fake)
    code = main(["stream", "--input", "-", "--output", str(dst), "--format", "coco17",
                 "--width", "640", "--height", "480", "--max-streams", "1",
                 "--idle-timeout", idle])
    out = [_strict(line) for line in dst.read_text().splitlines()]
    err = capsys.readouterr().err
    got_a = [r for r in out if r["stream"] == "A"]
    got_b = [r for r in out if r["stream"] == "B"]
    np.testing.assert_allclose(np.array([r["pose_mm"] for r in got_a]), _offline(model, *a),
                               atol=0.02)
    if idle == "0":  # never freed: B is refused, A still flushed at the end
        assert code == 1 and got_b == []
        assert "line 7: a new stream 'B'" in err and "line 12:" in err
        assert fake.seen_after_pause == [2]  # only A's live poses (T = 9: 6 - 4) meanwhile
    else:
        assert code == 0, err
        assert fake.seen_after_pause == [6]  # all of A, flushed during the pause
        np.testing.assert_allclose(np.array([r["pose_mm"] for r in got_b]),
                                   _offline(model, *b), atol=0.02)


@pytest.mark.parametrize("flags, message", [
    (["--max-streams", "100000000"], "--max-streams: expected an integer in [1, 4096]"),
    (["--max-streams", "0"], "--max-streams"),
    (["--max-streams", "1e8"], "--max-streams"),
    (["--idle-timeout", "-1"], "--idle-timeout"),
    (["--idle-timeout", "nan"], "--idle-timeout"),
    (["--min-score", "nan"], "--min-score"),
    (["--max-line-bytes", "0"], "--max-line-bytes"),
    (["--width", "inf"], "--width"),
    (["--threads", "-1"], "--threads"),
])
def test_bad_flags_are_refused_by_the_parser(tmp_path, capsys, model, flags, message):
    src = tmp_path / "in.jsonl"
    src.write_text("")
    with pytest.raises(SystemExit) as exc:
        main(["stream", "--input", str(src), "--format", "coco17", "--width", "640",
              "--height", "480", *flags])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_missing_input_file_is_a_clear_error(tmp_path, capsys, model):
    code = main(["stream", "--input", str(tmp_path / "nope.jsonl"), "--format", "coco17",
                 "--width", "640", "--height", "480"])
    assert code == 2 and "cannot read --input" in capsys.readouterr().err


# ----------------------------------------------------------------------------- processes
def _checkpoint(tmp_path):
    torch.manual_seed(3)
    m = checkpoints.build_model({"arch": "glagcn", "receptive_field": 9, "channels": 8})
    path = tmp_path / "m.pt"
    checkpoints.save_checkpoint(path, m)
    return path, m.eval()


def _command(path, *flags):
    return [sys.executable, "-m", "posekernels", "stream", "--format", "coco17", "--width", "640",
            "--height", "480", "--checkpoint", str(path), "--threads", "1", *flags]


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_signal_mid_stream_flushes_pending_poses(tmp_path, sig):
    path, m = _checkpoint(tmp_path)
    kp, sc = _coco_frames(7, 8)
    p = subprocess.Popen(_command(path, "--input", "-"), stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        for f in range(7):
            p.stdin.write(_frame_line(kp[f], sc[f], frame=f) + b"\n")
        p.stdin.flush()
        live = [p.stdout.readline() for _ in range(3)]  # T = 9: frames 0-2 are out, 3-6 pending
        p.send_signal(getattr(signal, sig))             # stdin stays open
        rest, err = p.communicate(timeout=120)
    finally:
        p.kill()
    err = err.decode()
    assert p.returncode == 0, err
    out = [_strict(line) for line in live + rest.splitlines()]
    assert [r["frame"] for r in out] == list(range(7))
    assert f"stopped by {sig}" in err and "Traceback" not in err
    np.testing.assert_allclose(np.array([r["pose_mm"] for r in out]), _offline(m, kp, sc),
                               atol=0.02)


def test_closed_output_pipe_exits_quietly(tmp_path):
    path, _ = _checkpoint(tmp_path)
    kp, sc = _coco_frames(2000, 9)
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"".join(_frame_line(kp[f], sc[f]) + b"\n" for f in range(2000)))
    p = subprocess.Popen(_command(path, "--input", str(src)), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    try:
        _strict(p.stdout.readline())
        p.stdout.close()  # the consumer goes away (like `| head -1`)
        err = p.stderr.read().decode()
        p.wait(timeout=120)
    finally:
        p.kill()
    assert p.returncode == 0, err
    assert err == "", err


# ----------------------------------------------------------------------------- placement
def _walk_in_pixels(frames: int):
    """A built-in walk seen by the demo's user camera: h36m17 pixels (F, 17, 2), the camera."""
    from posekernels.data.cameras import image_coordinates
    from posekernels.stream.motion import camera_view, synth_walk

    kp, _, cam = camera_view(synth_walk(frames), "user")
    return image_coordinates(kp.astype(np.float64), cam.width, cam.height), cam


@pytest.mark.parametrize("how", ["camera", "hfov"])
def test_stream_cli_places_poses_in_the_camera(tmp_path, capsys, monkeypatch, how):
    from posekernels.data.cameras import image_coordinates
    from posekernels.inference import place_in_camera

    # the shipped causal lifter: a random model's poses need not fit any placement in front
    # of the camera
    model = checkpoints.load_model("default", mode="causal")
    _serve_model(monkeypatch, model)

    uv, cam = _walk_in_pixels(14)
    sc = np.random.default_rng().uniform(0.5, 1.0, (14, 17))
    sc[5, :16] = 0.0                                     # frame 5: one usable joint: null
    lines = [json.dumps({"keypoints": [[float(x), float(y), float(s)] for (x, y), s
                                       in zip(uv[f], sc[f])]}).encode() for f in range(14)]
    if how == "camera":
        flags = ["--camera", json.dumps({"focal_length": list(cam.focal_length),
                                         "center": list(cam.center)})]
    else:
        flags = ["--hfov", repr(float(np.degrees(2 * np.arctan(960 / 1400.0))))]
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"\n".join(lines) + b"\n")
    dst = tmp_path / "out.jsonl"
    code = main(["stream", "--input", str(src), "--output", str(dst), "--format", "h36m17",
                 "--width", "1920", "--height", "1080", *flags])
    assert code == 0, capsys.readouterr().err
    recs = [_strict(line) for line in dst.read_text().splitlines()]
    assert len(recs) == 14
    kp, hsc = adapters.to_h36m17(uv, sc, fmt="h36m17", width=1920, height=1080)
    pose = lift_sequence(model, stream.fill_missing(kp, hsc, min_score=0.3))
    want = place_in_camera(pose, image_coordinates(kp, 1920, 1080), cam, scores=hsc) * 1000.0
    assert recs[5]["position_mm"] is None and np.isnan(want[5]).all()
    for f in (0, 1, 2, 3, 4, 6, 13):
        np.testing.assert_allclose(recs[f]["position_mm"], want[f], atol=0.02)
        placed, pose_mm = np.array(recs[f]["position_mm"]), np.array(recs[f]["pose_mm"])
        np.testing.assert_allclose(placed - placed[0], pose_mm - pose_mm[0], atol=0.03)
        assert 2500 < placed[0, 2] < 4500  # the walk is about 3.5 m from the camera


@pytest.mark.parametrize("flags, message", [
    (["--camera", '{"focal_length": [1000, 1000]}'], "needs focal_length and center"),
    (["--camera", '{"focal_length": [1000, 1000], "center": [1, 2], "fx": 3}'], "fx"),
    (["--camera", '{"focal_length": [1000], "center": [320, 240]}'], "focal_length"),
    (["--camera", '{"focal_length": [-5, 5], "center": [320, 240]}'], "positive"),
    (["--camera", '{"focal_length": ["a", 5], "center": [320, 240]}'], "list of numbers"),
    (["--camera", "[1, 2]"], "JSON object"),
    (["--camera", "no-such-file.json"], "cannot read"),
    (["--hfov", "0.5"], "--hfov"),
    (["--hfov", "30", "--units", "normalized"], "pixel"),
])
def test_bad_camera_is_a_clear_error(tmp_path, capsys, model, flags, message):
    src = tmp_path / "in.jsonl"
    src.write_text("")
    code = main(["stream", "--input", str(src), "--format", "coco17", "--width", "640",
                 "--height", "480", *flags])
    err = capsys.readouterr().err
    assert code == 2 and message in err and ("--camera" in err or "--hfov" in err)
