"""BVH parser, forward kinematics, the CMU import pipeline and the import-bvh command."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from posekernels.cli import main
from posekernels.data import bvh as B
from posekernels.data.formats import load_positions_3d

CMU_DIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "cmu-mocap"
H36M_PARENTS = [-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 9, 8, 11, 12, 8, 14, 15]

# --------------------------------------------------------------------------------------------
# A small hierarchy with three different rotation orders and two end sites.
# --------------------------------------------------------------------------------------------
TOY_HEADER = """HIERARCHY
ROOT Hips
{
  OFFSET 0.0 0.0 0.0
  CHANNELS 6 Xposition Yposition Zposition Zrotation Yrotation Xrotation
  JOINT Chest
  {
    OFFSET 0 10 0
    CHANNELS 3 Xrotation Yrotation Zrotation
    JOINT Arm
    {
      OFFSET 5 0 0
      CHANNELS 3 Yrotation Xrotation Zrotation
      End Site
      {
        OFFSET 0 -4 0
      }
    }
  }
  JOINT Leg
  {
    OFFSET 2 -1 0
    CHANNELS 3 Zrotation Xrotation Yrotation
    End Site
    {
      OFFSET 0 -8 0
    }
  }
}
"""


def toy_bvh(frames: list[list[float]], frame_time: str = "0.0083333") -> str:
    lines = [TOY_HEADER, "MOTION", f"Frames: {len(frames)}", f"Frame Time: {frame_time}"]
    lines += [" ".join(f"{v:.6f}" for v in f) for f in frames]
    return "\n".join(lines) + "\n"


def test_parse_hierarchy_channels_and_end_sites():
    b = B.parse_bvh(toy_bvh([[0.0] * 15, [1.0] * 15]), "toy.bvh")
    assert b.names == ["Hips", "Chest", "Arm", "Arm_End", "Leg", "Leg_End"]
    assert [j.parent for j in b.joints] == [-1, 0, 1, 2, 0, 4]
    assert b.joints[0].channels == ("Xposition", "Yposition", "Zposition", "Zrotation",
                                    "Yrotation", "Xrotation")
    assert b.joints[2].channels == ("Yrotation", "Xrotation", "Zrotation")
    assert [j.channel_start for j in b.joints if j.channels] == [0, 6, 9, 12]
    assert b.joints[3].is_end_site and b.joints[3].channels == ()
    assert b.num_frames == 2 and b.num_channels == 15
    assert b.fps == 120.0  # ".0083333" snaps to 120 Hz
    assert B.parse_bvh(toy_bvh([[0.0] * 15], "0.04"), "x").fps == 25.0


def test_forward_kinematics_by_hand():
    z = [0.0] * 9
    frames = [
        # root at (1, 2, 3) turned +90 deg about Z; Arm turned -90 deg about its Z.
        [1, 2, 3, 90, 0, 0] + [0, 0, 0] + [0, 0, -90] + [0, 0, 0],
        # root Rz(90) Ry(90) at the origin, Chest Rx(90).
        [0, 0, 0, 90, 90, 0] + [90, 0, 0] + [0, 0, 0] + [0, 0, 0],
        # Leg channels are Z X Y: Rz(90) @ Rx(90).
        [0, 0, 0, 0, 0, 0] + z[:3] + z[:3] + [90, 90, 0],
    ]
    b = B.parse_bvh(toy_bvh(frames), "toy.bvh")
    p = B.forward_kinematics(b)
    # order: Hips, Chest, Arm, Arm_End, Leg, Leg_End
    want0 = [(1, 2, 3), (-9, 2, 3), (-9, 7, 3), (-9, 3, 3), (2, 4, 3), (10, 4, 3)]
    want1 = [(0, 0, 0), (-10, 0, 0), (-10, 0, -5), (-10, -4, -5), (1, 0, -2), (9, 0, -2)]
    want2 = [(0, 0, 0), (0, 10, 0), (5, 10, 0), (5, 6, 0), (2, -1, 0), (2, -1, -8)]
    np.testing.assert_allclose(p[0], want0, atol=1e-9)
    np.testing.assert_allclose(p[1], want1, atol=1e-9)
    np.testing.assert_allclose(p[2], want2, atol=1e-9)
    # frame selection
    np.testing.assert_allclose(B.forward_kinematics(b, [2]), p[2:3])


def _reference_fk(b: B.Bvh, frame: np.ndarray) -> np.ndarray:
    """Per-joint loop with scipy's intrinsic Euler rotations (uppercase = intrinsic)."""
    from scipy.spatial.transform import Rotation

    pos, rot = {}, {}
    for j, joint in enumerate(b.joints):
        vals = frame[joint.channel_start:joint.channel_start + len(joint.channels)]
        t = joint.offset.astype(float).copy()
        order, angles = "", []
        for ch, v in zip(joint.channels, vals):
            if ch.endswith("position"):
                t["XYZ".index(ch[0])] += v
            else:
                order += ch[0]
                angles.append(v)
        r = (Rotation.from_euler(order, angles, degrees=True).as_matrix() if order
             else np.eye(3))
        if joint.parent < 0:
            pos[j], rot[j] = t, r
        else:
            pos[j] = pos[joint.parent] + rot[joint.parent] @ t
            rot[j] = rot[joint.parent] @ r
    return np.stack([pos[j] for j in range(len(b.joints))])


def test_forward_kinematics_matches_reference_on_random_angles():
    rng = np.random.default_rng(11)
    frames = rng.uniform(-180, 180, size=(7, 15))
    frames[:, :3] = rng.normal(size=(7, 3)) * 10
    b = B.parse_bvh(toy_bvh(frames.tolist()), "toy.bvh")
    got = B.forward_kinematics(b)
    for f in range(7):
        np.testing.assert_allclose(got[f], _reference_fk(b, b.motion[f]), atol=1e-9)


def test_euler_to_matrix_order():
    rng = np.random.default_rng(3)
    a = rng.uniform(-90, 90, size=(4, 3))
    from scipy.spatial.transform import Rotation

    for order in ("ZYX", "XYZ", "YXZ", "ZXY"):
        np.testing.assert_allclose(B.euler_to_matrix(a, order),
                                   Rotation.from_euler(order, a, degrees=True).as_matrix(),
                                   atol=1e-12)


def test_position_only_joint_and_multiple_roots():
    text = """HIERARCHY
ROOT A
{
OFFSET 1 0 0
CHANNELS 3 Zposition Xposition Yposition
JOINT B { OFFSET 0 1 0 CHANNELS 1 Xposition End Site { OFFSET 0 0 1 } }
}
ROOT C
{
OFFSET 0 0 0
CHANNELS 1 Yrotation
End Site
{
OFFSET 1 0 0
}
}
MOTION
Frames: 1
Frame Time: 0.01
3 1 2 5 90
"""
    b = B.parse_bvh(text, "two_roots.bvh")
    assert b.names == ["A", "B", "B_End", "C", "C_End"]
    p = B.forward_kinematics(b)[0]
    np.testing.assert_allclose(p[0], [1 + 1, 2, 3])          # offset + (x=1, y=2, z=3)
    np.testing.assert_allclose(p[1], [2 + 5, 3, 3])
    np.testing.assert_allclose(p[2], [7, 3, 4])
    np.testing.assert_allclose(p[4], [0, 0, -1], atol=1e-12)  # Ry(90) maps x to -z


# --------------------------------------------------------------------------------------------
# A CMU-like skeleton for the import pipeline
# --------------------------------------------------------------------------------------------
CMU_LIKE = [
    # name, parent, offset (BVH units, Y up)
    ("Hips", None, (0, 0, 0)),
    ("LeftUpLeg", "Hips", (2, -1, 0)), ("LeftLeg", "LeftUpLeg", (0, -8, 0)),
    ("LeftFoot", "LeftLeg", (0, -8, 0)),
    ("RightUpLeg", "Hips", (-2, -1, 0)), ("RightLeg", "RightUpLeg", (0, -8, 0)),
    ("RightFoot", "RightLeg", (0, -8, 0)),
    ("Spine", "Hips", (0, 2, 0)), ("Neck1", "Spine", (0, 8, 0)), ("Head", "Neck1", (0, 2, 0)),
    ("LeftArm", "Spine", (3, 8, 0)), ("LeftForeArm", "LeftArm", (5, 0, 0)),
    ("LeftHand", "LeftForeArm", (4, 0, 0)),
    ("RightArm", "Spine", (-3, 8, 0)), ("RightForeArm", "RightArm", (-5, 0, 0)),
    ("RightHand", "RightForeArm", (-4, 0, 0)),
]
END_SITES = {"LeftFoot": (0, 0, 2), "RightFoot": (0, 0, 2), "Head": (0, 3, 0),
             "LeftHand": (1, 0, 0), "RightHand": (-1, 0, 0)}
NAMES = [n for n, _, _ in CMU_LIKE]
COL = {}  # first motion column of each joint
_c = 0
for _n, _p, _ in CMU_LIKE:
    COL[_n] = _c
    _c += 6 if _p is None else 3
NCH = _c
SPEED = 0.2  # BVH units per frame along +Z


def cmu_like_text(motion: np.ndarray) -> str:
    children = {n: [c for c, p, _ in CMU_LIKE if p == n] for n in NAMES}
    off = {n: o for n, _, o in CMU_LIKE}
    out = ["HIERARCHY"]

    def emit(name, depth, root=False):
        ind = "\t" * depth
        out.append(f"{ind}{'ROOT' if root else 'JOINT'} {name}")
        out.append(f"{ind}{{")
        out.append(f"{ind}\tOFFSET {off[name][0]} {off[name][1]} {off[name][2]}")
        if root:
            out.append(f"{ind}\tCHANNELS 6 Xposition Yposition Zposition Zrotation Yrotation "
                       "Xrotation")
        else:
            out.append(f"{ind}\tCHANNELS 3 Zrotation Yrotation Xrotation")
        for c in children[name]:
            emit(c, depth + 1)
        if name in END_SITES:
            e = END_SITES[name]
            out.extend([f"{ind}\tEnd Site", f"{ind}\t{{",
                        f"{ind}\t\tOFFSET {e[0]} {e[1]} {e[2]}", f"{ind}\t}}"])
        out.append(f"{ind}}}")

    emit("Hips", 0, root=True)
    out += ["MOTION", f"Frames: {len(motion)}", "Frame Time: .0083333"]
    out += [" ".join(f"{v:.4f}" for v in row) for row in motion]
    return "\n".join(out) + "\n"


def cmu_like_motion(n: int = 121, zero_frames: int = 1, glitch: int | None = None):
    """Frame 0: T-pose; then ``zero_frames`` all-zero frames; then arms down while the root
    walks along +Z at SPEED units per frame (position = SPEED * frame index)."""
    m = np.zeros((n, NCH))
    m[0, 1] = 17.0                                   # T-pose: root up, all rotations zero
    for f in range(1 + zero_frames, n):
        m[f, 0:3] = (0.5, 17.0, SPEED * f)
        m[f, COL["LeftArm"]] = -90.0                 # Z rotation: arm hangs down
        m[f, COL["RightArm"]] = 90.0
        m[f, COL["Spine"] + 2] = 1.5                 # small non-zero X tilt
    if glitch is not None:
        m[glitch, COL["LeftLeg"] + 2] = 60.0          # knee X rotation spike for one frame
    return m


def expected_positions(frame_pos: float) -> dict[str, np.ndarray]:
    """Analytic metres, Z-up, for the arms-down pose at fractional frame ``frame_pos``."""
    s = B.CMU_UNIT_METRES
    root = np.array([0.5, 17.0, SPEED * frame_pos])
    tilt = B.euler_to_matrix(np.array([1.5]), "X")
    spine = root + np.array([0, 2, 0])
    lhand = spine + tilt @ (np.array([3, 8, 0]) + np.array([0, -5, 0]) + np.array([0, -4, 0]))
    hip_mid = root + np.array([0, -1, 0])
    lfoot = root + np.array([2, -17, 0])
    out = {"Hip": hip_mid, "LWrist": lhand, "LFoot": lfoot}
    return {k: B.y_up_to_z_up(v * s) for k, v in out.items()}


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_import_units_axes_tpose_zero_frames_and_resampling(tmp_path):
    motion = cmu_like_motion(n=121, zero_frames=1)
    f = write(tmp_path / "07" / "07_99.bvh", cmu_like_text(motion))
    res = B.import_bvh(f)
    assert res.source_fps == 120.0 and res.fps == 50.0
    assert res.dropped.tolist() == [0, 1]             # T-pose and the all-zero frame
    # kept frames 2..120 span 118 / 120 s; output every 1/50 s from frame 2.
    n_out = int(np.floor(118 / 120 * 50 + 1e-6)) + 1
    assert res.positions.shape == (n_out, 17, 3)
    assert res.glitches.size == 0 and res.flagged.size == 0
    for k in (0, 1, 7, n_out - 1):
        src = 2 + 2.4 * k
        want = expected_positions(src)
        np.testing.assert_allclose(res.positions[k, 0], want["Hip"], atol=1e-9)
        np.testing.assert_allclose(res.positions[k, 13], want["LWrist"], atol=1e-9)
        np.testing.assert_allclose(res.positions[k, 6], want["LFoot"], atol=1e-9)
    # Z is up: the head is above the feet; walking along BVH +Z goes towards world -Y.
    assert (res.positions[:, 10, 2] > res.positions[:, 3, 2] + 0.5).all()
    assert res.positions[-1, 0, 1] < res.positions[0, 0, 1]
    # Left is +X for a subject facing BVH +Z.
    assert (res.positions[:, 4, 0] > res.positions[:, 1, 0]).all()
    # Without resampling every kept source frame comes back.
    raw = B.import_bvh(f, fps=None)
    assert raw.positions.shape[0] == 119 and raw.fps == 120.0


def test_tpose_modes(tmp_path):
    motion = cmu_like_motion(n=40, zero_frames=0)
    f = write(tmp_path / "x.bvh", cmu_like_text(motion))
    assert B.import_bvh(f, fps=None).dropped.tolist() == [0]
    assert B.import_bvh(f, fps=None, tpose="first").dropped.tolist() == [0]
    assert B.import_bvh(f, fps=None, tpose="none").positions.shape[0] == 40
    # Without a T-pose, "auto" keeps the first frame; "first" still drops it.
    g = write(tmp_path / "y.bvh", cmu_like_text(motion[1:]))
    assert B.import_bvh(g, fps=None).positions.shape[0] == 39
    assert B.import_bvh(g, fps=None, tpose="first").positions.shape[0] == 38


def test_glitch_flags_and_repair(tmp_path):
    motion = cmu_like_motion(n=121, zero_frames=0, glitch=51)
    f = write(tmp_path / "g.bvh", cmu_like_text(motion))
    res = B.import_bvh(f)
    # The knee spike makes the left foot jump away at frame 51 and back at 52.
    assert res.glitches.tolist() == [51, 52]
    assert res.spikes.tolist() == [51]
    # Output k sits at source frame 1 + 2.4 k (49, 51.4, 53.8): the jumps lie in (50, 52],
    # inside the intervals ending at k = 21 and k = 22.
    assert res.flagged.tolist() == [21, 22]
    fixed = B.import_bvh(f, repair_glitches=True)
    assert fixed.repaired and fixed.glitches.tolist() == [51, 52]
    clean = B.import_bvh(write(tmp_path / "c.bvh",
                               cmu_like_text(cmu_like_motion(n=121, zero_frames=0))))
    np.testing.assert_allclose(fixed.positions, clean.positions, atol=1e-9)
    assert np.abs(res.positions - clean.positions).max() > 0.05
    # Isolated check of the velocity test on positions
    pos = np.cumsum(np.full((30, 2, 3), 0.001), axis=0)
    pos[10, 1] += 0.5
    frames, spikes = B.find_glitches(pos, 100.0, max_speed=10.0)
    assert frames.tolist() == [10, 11] and spikes.tolist() == [10]


def test_resample_positions_linear():
    t = np.array([0.0, 0.1, 0.2, 0.4])
    x = np.stack([t * 3.0, -t], axis=-1)
    out, lower, w = B.resample_positions(x, t, 20.0)
    grid = np.arange(9) / 20.0
    np.testing.assert_allclose(out, np.stack([grid * 3.0, -grid], -1), atol=1e-12)
    assert lower.tolist()[:3] == [0, 0, 1]


def test_resampled_length_is_bounded(tmp_path):
    """A wild Frame Time would resample a 3-frame file to millions of frames (100000 s: 5,000,001
    frames, 6.3 GB): import_bvh refuses before allocating, naming the file, its frame time and
    frame count; max_frames moves the bound, fps=None keeps the source frames."""
    text = cmu_like_text(cmu_like_motion(n=3, zero_frames=0))
    huge = write(tmp_path / "07" / "07_77.bvh", text.replace("Frame Time: .0083333",
                                                             "Frame Time: 100000"))
    with pytest.raises(ValueError, match=r"07_77\.bvh: 3 frames with 'Frame Time: 100000'.*"
                                         r"5,000,001 frames at 50 fps, more than max_frames = "
                                         r"2,000,000"):
        B.import_bvh(huge)
    assert B.MAX_RESAMPLED_FRAMES == 2_000_000
    assert B.import_bvh(huge, fps=None).positions.shape == (2, 17, 3)  # T-pose dropped
    wild = write(tmp_path / "w.bvh", text.replace("Frame Time: .0083333", "Frame Time: 1e300"))
    with pytest.raises(ValueError, match=r"w\.bvh: 3 frames with 'Frame Time: 1e\+300'"):
        B.import_bvh(wild)
    # the bound itself: 1000 s between the kept frames is 50,001 frames at 50 fps
    slow = write(tmp_path / "s.bvh", text.replace("Frame Time: .0083333", "Frame Time: 1000"))
    with pytest.raises(ValueError, match="50,001 frames"):
        B.import_bvh(slow, max_frames=50_000)
    assert B.import_bvh(slow, max_frames=50_001).positions.shape == (50_001, 17, 3)
    assert B.import_bvh(slow, fps=0.01, max_frames=11).positions.shape == (11, 17, 3)
    for bad in (0, -5, 2.5, True):
        with pytest.raises(ValueError, match="max_frames must be a positive int or None"):
            B.import_bvh(slow, max_frames=bad)
    for bad in (0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="fps must be a positive finite number"):
            B.import_bvh(slow, fps=bad)


def test_resample_positions_max_frames():
    t = np.array([0.0, 1e6])
    x = np.zeros((2, 3))
    assert B.resampled_length(t, 50.0) == 50_000_001
    assert B.resampled_length(np.array([0.0, 1e308]), 1e10) == math.inf
    with pytest.raises(ValueError, match="50,000,001 frames, more than max_frames = 1,000"):
        B.resample_positions(x, t, 50.0, max_frames=1000)
    out, _, _ = B.resample_positions(x, np.array([0.0, 1.0]), 50.0, max_frames=51)
    assert out.shape == (51, 3)


def test_import_bvh_cli(tmp_path, capsys):
    a = write(tmp_path / "in" / "07" / "07_01.bvh", cmu_like_text(cmu_like_motion(60)))
    write(tmp_path / "in" / "09" / "09_01.bvh", cmu_like_text(cmu_like_motion(80)))
    out = tmp_path / "data_3d_cmu.npz"
    rep = tmp_path / "report.json"
    rc = main(["import-bvh", str(tmp_path / "in"), "--out", str(out), "--fps", "50",
               "--report", str(rep)])
    assert rc == 0
    data = load_positions_3d(out, num_joints=17)
    assert sorted(data) == ["07", "09"] and list(data["07"]) == ["07_01"]
    direct = B.import_bvh(a).positions
    np.testing.assert_allclose(data["07"]["07_01"], direct, atol=1e-6)
    raw = np.load(out, allow_pickle=True)["positions_3d"].item()  # VideoPose3D layout
    assert raw["09"]["09_01"].dtype == np.float32 and raw["09"]["09_01"].shape[1:] == (17, 3)
    report = json.loads(rep.read_text())
    assert report["07"]["07_01"]["dropped_source_frames"] == [0, 1]
    assert "wrote" in capsys.readouterr().out
    # --subject and --fps 0 (keep the source rate)
    out2 = tmp_path / "data_3d_one.npz"
    assert main(["import-bvh", str(a), "--out", str(out2), "--subject", "S7", "--fps", "0",
                 "-q"]) == 0
    assert load_positions_3d(out2)["S7"]["07_01"].shape[0] == 58



def test_find_bvh_files_and_sequence_names(tmp_path):
    a = write(tmp_path / "in" / "07" / "07_02.bvh", "x")
    b = write(tmp_path / "in" / "07" / "07_01.BVH", "x")
    c = write(tmp_path / "in" / "09" / "deep" / "09_01.bvh", "x")
    write(tmp_path / "in" / "07" / "notes.txt", "x")
    single = write(tmp_path / "one.bvh", "x")
    files = B.find_bvh_files([tmp_path / "in", str(single)])
    assert files == [str(b), str(a), str(c), str(single)]
    assert B.bvh_sequence_name(a) == ("07", "07_02")
    assert B.bvh_sequence_name(c, subject="S9") == ("S9", "09_01")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty: no .bvh files in this folder"):
        B.find_bvh_files([tmp_path / "empty"])
    with pytest.raises(ValueError, match="missing: no such file or folder"):
        B.find_bvh_files([str(tmp_path / "missing")])

MALFORMED = {
    "no_motion": lambda t: t.split("MOTION")[0],
    "bad_channel": lambda t: t.replace("Xrotation Yrotation Zrotation", "Xrotation Yrot Zrotation"),
    "short_line": lambda t: t.rstrip("\n").rsplit(" ", 1)[0] + "\n",
    "missing_frames": lambda t: t.replace("Frames: 3", "Frames: 5"),
    "zero_frames": lambda t: t.split("Frames:")[0] + "Frames: 0\nFrame Time: 0.01\n",
    "nan_value": lambda t: t.replace("0.500000", "nan", 1),
    "word_value": lambda t: t.replace("0.500000", "abc", 1),
    "no_offset": lambda t: t.replace("OFFSET 5 0 0\n", "", 1),
    "unbalanced": lambda t: t.replace("}\n\nMOTION", "\nMOTION"),
    "bad_frame_time": lambda t: t.replace("Frame Time: 0.0083333", "Frame Time: -1"),
    "empty": lambda t: "",
    "binary": None,
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_bvh_raises_naming_file(tmp_path, case):
    good = toy_bvh([[0.5] * 15, [0.25] * 15, [0.125] * 15])
    path = tmp_path / f"{case}.bvh"
    if MALFORMED[case] is None:
        path.write_bytes(b"\xff\xfe\x00\x81" * 50)
    else:
        path.write_text(MALFORMED[case](good))
    with pytest.raises(ValueError, match=case):
        B.read_bvh(path)


def test_import_errors_name_file_and_leave_no_output(tmp_path, capsys):
    good = write(tmp_path / "in" / "07" / "07_01.bvh", cmu_like_text(cmu_like_motion(60)))
    bad = write(tmp_path / "in" / "07" / "07_02.bvh",
                cmu_like_text(cmu_like_motion(60)).replace("Frames: 60", "Frames: 61"))
    out = tmp_path / "out" / "data_3d_x.npz"
    out.parent.mkdir()
    rc = main(["import-bvh", str(good), str(bad), "--out", str(out)])
    assert rc == 1
    err = capsys.readouterr().err
    assert "07_02.bvh" in err and "61 frames" in err
    assert os.listdir(out.parent) == []
    # A skeleton without the joints the table needs.
    toy = write(tmp_path / "toy.bvh", toy_bvh([[0.5] * 15, [0.25] * 15]))
    with pytest.raises(ValueError, match=r"toy\.bvh.*LeftUpLeg"):
        B.import_bvh(toy)
    assert main(["import-bvh", str(toy), "--out", str(out)]) == 1
    assert "toy.bvh" in capsys.readouterr().err
    # All-zero data: nothing left.
    z = np.zeros((5, NCH))
    zf = write(tmp_path / "zeros.bvh", cmu_like_text(z))
    with pytest.raises(ValueError, match=r"zeros\.bvh.*no frames"):
        B.import_bvh(zf)
    assert main(["import-bvh", str(tmp_path / "missing.bvh"), "--out", str(out)]) == 1
    assert os.listdir(out.parent) == []


# --------------------------------------------------------------------------------------------
# Real CMU data (read at run time from ../shared, never copied into the repository)
# --------------------------------------------------------------------------------------------
@pytest.mark.skipif(not CMU_DIR.is_dir(), reason="CMU mocap folder ../shared/data/cmu-mocap absent")
def test_real_cmu_bone_lengths(tmp_path):
    files = [CMU_DIR / "07" / "07_01.bvh", CMU_DIR / "09" / "09_01.bvh"]
    files = [f for f in files if f.is_file()]
    if not files:
        pytest.skip("expected CMU clips not found")
    out = tmp_path / "data_3d_cmu.npz"
    assert main(["import-bvh", *map(str, files), "--out", str(out), "-q"]) == 0
    data = load_positions_3d(out, num_joints=17)
    for f in files:
        pos = data[f.parent.name][f.stem].astype(np.float64)
        assert pos.shape[0] > 40
        bones = np.stack([np.linalg.norm(pos[:, j] - pos[:, p], axis=-1)
                          for j, p in enumerate(H36M_PARENTS) if p >= 0], axis=1)
        # Every bone has a human length in metres.
        assert (bones.mean(0) > 0.04).all() and (bones.mean(0) < 0.6).all(), bones.mean(0)
        # Limb bones are rigid in the BVH: constant over time (interpolation aside).
        limbs = [0, 1, 2, 3, 4, 5, 11, 12, 14, 15]  # hips, legs, arms (bone = child - 1)
        assert bones[:, limbs].std(0).max() < 0.003
        thigh, shin = bones[:, 1].mean(), bones[:, 2].mean()
        assert 0.3 < thigh < 0.55 and 0.3 < shin < 0.55
        # Z-up metres: head above the hip, hip about a metre above the floor.
        assert (pos[:, 10, 2] > pos[:, 0, 2]).all()
        assert 0.7 < np.median(pos[:, 0, 2]) < 1.2
        speed = np.linalg.norm(np.diff(pos[:, 0, :2], axis=0), axis=-1).mean() * 50
        lo, hi = {"07_01": (1.0, 1.7), "09_01": (2.8, 4.5)}[f.stem]  # walk; run (m/s)
        assert lo < speed < hi, speed
