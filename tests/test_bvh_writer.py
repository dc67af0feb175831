"""h36m17 poses written as BVH (posekernels.data.bvh_writer) and the ``bvh`` command."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from posekernels.cli import main
from posekernels.data.bvh import forward_kinematics, parse_bvh, read_bvh
from posekernels.data.bvh_writer import H36M17_BVH_JOINTS, poses_to_bvh, save_bvh

PARENTS = (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 9, 8, 11, 12, 8, 14, 15)


def _rot(axis_angle: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotations of axis-angle vectors (float64, independent of the writer)."""
    theta = np.linalg.norm(axis_angle, axis=-1)[..., None, None]
    k = np.zeros(axis_angle.shape[:-1] + (3, 3))
    x, y, z = axis_angle[..., 0], axis_angle[..., 1], axis_angle[..., 2]
    k[..., 0, 1], k[..., 0, 2], k[..., 1, 2] = -z, y, -x
    k = k - np.swapaxes(k, -1, -2)
    t = np.maximum(theta, 1e-12)
    return np.eye(3) + np.sin(theta) / t * k + (1 - np.cos(theta)) / t ** 2 * (k @ k)


def _rigid_motion(rng: np.random.Generator, frames: int) -> np.ndarray:
    """(F, 17, 3) y-up positions of a random skeleton with constant bones and rigid pelvis and
    shoulder triangles, moved by random joint rotations (its own forward kinematics)."""
    off = {j: rng.normal(0, 0.05, 3) for j in range(1, 17)}
    for j, d in ((1, (-0.1, 0, 0)), (4, (0.1, 0, 0)), (7, (0, 0.25, 0)), (8, (0, 0.25, 0)),
                 (9, (0, 0.1, 0.05)), (10, (0, 0.12, 0)), (11, (0.15, -0.03, 0)),
                 (14, (-0.15, -0.03, 0)), (12, (0.28, 0, 0)), (13, (0.25, 0, 0)),
                 (15, (-0.28, 0, 0)), (16, (-0.25, 0, 0)), (2, (0, -0.42, 0)), (3, (0, -0.4, 0)),
                 (5, (0, -0.42, 0)), (6, (0, -0.4, 0))):
        off[j] = off[j] + np.array(d)
    t = np.linspace(0, 1, frames)[:, None]
    glob = {}
    pos = np.zeros((frames, 17, 3))
    pos[:, 0] = rng.normal(0, 1, 3) + t * rng.normal(0, 1, 3)
    for j in range(17):
        local = _rot(rng.normal(0, 0.6, 3) + t * rng.normal(0, 1.5, 3))
        q = PARENTS[j]
        if q >= 0:
            pos[:, j] = pos[:, q] + np.einsum("fij,j->fi", glob[q], off[j])
        glob[j] = local if q < 0 else glob[q] @ local
    return pos


def _fk(text: str, to: str = "y_up", scale: float = 1.0) -> np.ndarray:
    fk = forward_kinematics(parse_bvh(text)) / scale
    if to == "camera":
        return fk * np.array([1.0, -1.0, -1.0])
    if to == "z_up":
        return np.stack([fk[..., 0], -fk[..., 2], fk[..., 1]], -1)
    return fk


def test_rigid_motion_comes_back_exactly():
    rng = np.random.default_rng()
    pos = _rigid_motion(rng, 40)
    text = poses_to_bvh(pos, 30.0, frame="y_up", units="mm")
    bvh = parse_bvh(text)
    assert [j.name for j in bvh.joints if not j.is_end_site] == list(H36M17_BVH_JOINTS.values())
    assert bvh.num_frames == 40 and abs(bvh.fps - 30.0) < 1e-9
    np.testing.assert_allclose(_fk(text, scale=1000.0), pos, atol=2e-6, rtol=0)
    # the same motion in the other axes conventions gives the same file
    cam = pos * np.array([1.0, -1.0, -1.0])
    zup = np.stack([pos[..., 0], -pos[..., 2], pos[..., 1]], -1)
    assert poses_to_bvh(cam, 30.0, frame="camera", units="mm") == text
    np.testing.assert_allclose(_fk(poses_to_bvh(zup, 30.0, frame="z_up", units="mm"), "z_up",
                                   1000.0), zup, atol=2e-6, rtol=0)


def test_bones_keep_their_directions_and_median_lengths():
    rng = np.random.default_rng()
    pos = _rigid_motion(rng, 30)
    pos = pos + rng.normal(0, 0.02, pos.shape)        # a lifter's poses: no bone is rigid
    back = _fk(poses_to_bvh(pos, 50.0, frame="camera", units="m"), "camera")
    for j, q in enumerate(PARENTS):
        if q < 0:
            continue
        a, b = back[:, j] - back[:, q], pos[:, j] - pos[:, q]
        la, lb = np.linalg.norm(a, axis=-1), np.linalg.norm(b, axis=-1)
        if q not in (0, 8):    # single-child joints aim each bone exactly, at its median length
            cos = (a * b).sum(-1) / (la * lb)
            assert cos.min() > 1 - 1e-9
            np.testing.assert_allclose(la, np.median(lb), rtol=1e-5)
    # the root's frame: the hips' line keeps its direction
    a, b = back[:, 4] - back[:, 1], pos[:, 4] - pos[:, 1]
    cos = (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)
    assert cos.min() > 1 - 1e-9
    np.testing.assert_allclose(back[:, 0], pos[:, 0], atol=1e-6)


def test_cmu_motion_round_trip(tmp_path):
    """Real mocap mapped to h36m17: the legs come back, the upper body within the bending of
    CMU's lower back and clavicles."""
    from posekernels.data import import_bvh

    path = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "cmu-mocap",
                        "07", "07_01.bvh")
    if not os.path.isfile(path):
        pytest.skip("the CMU data of ../shared is not here")
    pos = import_bvh(path).positions
    out = tmp_path / "walk.bvh"
    save_bvh(out, pos, 50.0, frame="z_up", units="cm")
    back = forward_kinematics(read_bvh(out)) / 100.0
    back = np.stack([back[..., 0], -back[..., 2], back[..., 1]], -1)
    err = np.linalg.norm(back - pos, axis=-1)
    # (resampling to 50 Hz interpolates positions, which bends the legs' bones by a millimetre)
    assert err[:, :7].max() < 2e-3 and err.max() < 0.03


@pytest.mark.parametrize("kw, match", [
    ({"positions": np.zeros((3, 16, 3))}, "positions"),
    ({"positions": "walk"}, "positions"),
    ({"fps": 0.0}, "fps"), ({"fps": float("nan")}, "fps"), ({"fps": True}, "fps"),
    ({"frame": "world"}, "frame"), ({"units": "inch"}, "units"),
])
def test_bad_arguments_are_named(kw, match):
    pos = _rigid_motion(np.random.default_rng(), 3)
    args = {"positions": pos, "fps": 30.0, **kw}
    with pytest.raises(ValueError, match=match):
        poses_to_bvh(args.pop("positions"), args.pop("fps"), **args)


def test_broken_frames_are_refused():
    pos = _rigid_motion(np.random.default_rng(), 5)
    pos[2, 7] = np.nan
    with pytest.raises(ValueError, match="1 frame"):
        poses_to_bvh(pos, 30.0)
    pos = _rigid_motion(np.random.default_rng(), 5)
    pos[3, 4] = pos[3, 1]                              # hips on top of each other
    with pytest.raises(ValueError, match="frame 3"):
        poses_to_bvh(pos, 30.0, frame="y_up")


# ----------------------------------------------------------------------------- the command
def _stream_lines(pos_m: np.ndarray, stream="cam0", placed: bool = True, skip=()):
    lines = []
    for i, p in enumerate(pos_m):
        if i in skip:
            continue
        rec = {"stream": stream, "frame": 100 + i, "index": i,
               "pose_mm": ((p - p[0]) * 1000).tolist(), "latency_ms": 1.0, "age_ms": 2.0}
        if placed:
            rec["position_mm"] = (p * 1000).tolist()
        lines.append(json.dumps(rec))
    return lines


def test_bvh_command_writes_the_placed_stream(tmp_path, capsys):
    rng = np.random.default_rng()
    pos = _rigid_motion(rng, 25) * np.array([1.0, -1.0, -1.0]) + [0, 0, 4.0]   # camera frame
    other = _rigid_motion(rng, 5)
    src = tmp_path / "poses.jsonl"
    src.write_text("\n".join(_stream_lines(pos) + _stream_lines(other, 3)) + "\n")
    out = tmp_path / "a.bvh"
    assert main(["bvh", "--input", str(src), "--output", str(out), "--fps", "30"]) == 2
    assert "choose one with --stream" in capsys.readouterr().err
    assert main(["bvh", "--input", str(src), "--output", str(out), "--fps", "30",
                 "--stream", "cam0"]) == 0
    np.testing.assert_allclose(_fk(out.read_text(), "camera", 100.0), pos, atol=1e-6)
    # root-relative poses: the root stays at the origin
    assert main(["bvh", "--input", str(src), "--output", str(out), "--fps", "30",
                 "--stream", "cam0", "--field", "pose_mm", "--units", "m"]) == 0
    np.testing.assert_allclose(_fk(out.read_text(), "camera"), pos - pos[:, :1], atol=1e-5)
    # frames missing from the stream are interpolated (and said to be)
    src.write_text("\n".join(_stream_lines(pos, skip=(7, 8))) + "\n")
    capsys.readouterr()
    assert main(["bvh", "--input", str(src), "--output", str(out), "--fps", "30"]) == 0
    assert "2 of 25 frame(s) missing" in capsys.readouterr().err
    back = _fk(out.read_text(), "camera", 100.0)
    assert back.shape == (25, 17, 3)
    np.testing.assert_allclose(back[7:9, 0], pos[6, 0] + (pos[9, 0] - pos[6, 0])
                               * np.array([[1 / 3], [2 / 3]]), atol=1e-6)


@pytest.mark.parametrize("content, flags, message", [
    ("not json\n", [], "line 1"),
    ('{"index": 0}\n', [], "pose_mm"),
    ('{"index": -1, "pose_mm": []}\n', [], "index"),
    ('{"index": 0, "pose_mm": [[1, 2]]}\n', [], "17 [x, y, z]"),
    ("", [], "no poses"),
    ("x" * (1 << 21), [], "longer than"),
    (b"\xff\xfe\n", [], "UTF-8"),
    ("[" * 100_000 + "]" * 100_000 + "\n", [], "line 1"),
    ('{"index": 0, "pose_mm": ' + json.dumps([[1e999, 0, 0]] * 17) + "}\n", [], "finite"),
    (None, ["--field", "position_mm"], "no position_mm"),
    (None, ["--fps", "0"], "--fps"),
    (None, ["--stream", "nobody"], "no poses of stream"),
])
def test_bvh_command_errors_are_clear(tmp_path, capsys, content, flags, message):
    src = tmp_path / "poses.jsonl"
    if content is None:
        content = "\n".join(_stream_lines(_rigid_motion(np.random.default_rng(), 4),
                                          placed=False)) + "\n"
    if isinstance(content, bytes):
        src.write_bytes(content)
    else:
        src.write_text(content)
    fps = [] if "--fps" in flags else ["--fps", "30"]
    code = main(["bvh", "--input", str(src), "--output", str(tmp_path / "x.bvh"), *fps,
                 *flags])
    assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "x.bvh").exists()
