"""BVH motion capture: parser, forward kinematics, and import to the Human3.6M 17-joint layout.

Parser
------
:func:`read_bvh` / :func:`parse_bvh` read any BVH file: a HIERARCHY of ``ROOT`` / ``JOINT`` /
``End Site`` blocks with ``OFFSET`` and ``CHANNELS`` (any number of X/Y/Z position and rotation
channels in any order: the usual 6-channel root and 3-channel joints, position-only joints,
several roots), then ``MOTION`` with ``Frames:``, ``Frame Time:`` and one line of channel values
per frame. End sites become joints named ``<parent>_End`` (``_End2``, ... if a joint has several).
Problems raise :class:`ValueError` naming the file and the line.

Forward kinematics (:func:`forward_kinematics`), vectorised over frames
---------------------------------------------------------------------
Rotation channels are in degrees and compose in the order listed: ``Zrotation Yrotation
Xrotation`` gives ``R_local = Rz @ Ry @ Rx`` (column vectors, right-handed, counter-clockwise
positive). A joint's local translation is ``OFFSET`` plus its position channels (if any). Then
``R_world[j] = R_world[parent] @ R_local[j]`` and ``p[j] = p[parent] + R_world[parent] @
translation[j]``. Results are in BVH units and axes.

Import (:func:`import_bvh`)
---------------------------
1. FK, then the joint table picks (or averages) BVH joints for each output joint
   (:data:`CMU_H36M17_TABLE` maps the CMU skeleton to the Human3.6M 17 joints).
2. Units and axes: multiply by ``scale`` (default :data:`CMU_UNIT_METRES`, 1 CMU unit =
   0.056444 m) and, for a Y-up file, map ``(x, y, z) -> (x, -z, y)``. **World frame of the
   output**: metres, right-handed, Z up, floor at z = 0 as captured; a subject whose root has
   zero rotation faces -Y with its left towards +X. The root trajectory is kept.
3. Frames dropped: frames whose channels are all exactly zero, and the added T-pose at the start
   (``tpose="auto"``: the first remaining frame is dropped when some joint, relative to the
   root, is more than ``tpose_jump`` metres away from where it is in the next frame, which a
   T-pose followed by natural motion always is; ``"first"`` drops the first frame
   unconditionally; ``"none"`` keeps it).
4. One-frame glitches are found at the source rate by a velocity check (:func:`find_glitches`:
   some joint moves faster than ``max_speed``, 10 m/s, within one frame). They are reported;
   with ``repair_glitches=True`` isolated spikes (away and straight back) are replaced by the
   neighbours' midpoint.
5. Resampling to ``fps`` (default 50) by linear interpolation of joint positions on the time
   grid ``t0 + k / fps`` (t0 = time of the first kept frame) up to the last kept frame; gaps left
   by dropped frames are interpolated across. ``fps=None`` keeps the source frames. The
   resampled clip may hold at most ``max_frames`` frames (default :data:`MAX_RESAMPLED_FRAMES`,
   2,000,000: 11 hours at 50 fps, 400 MB for 17 joints): a wild ``Frame Time`` (3 frames of
   100000 s would resample to 5,000,001 frames, 6.3 GB) raises ValueError naming the file, its
   frame time and frame count, before anything is allocated.

Collections (:func:`find_bvh_files`, :func:`bvh_sequence_name`)
-------------------------------------------------------------
BVH files or folders (searched recursively for ``*.bvh``) become a sorted file list, and each
file a ``(subject, action)`` name: the file's folder (the CMU subject, e.g. "01") and its stem
("01_01"); ``posekernels import-bvh`` and ``posekernels evaluate --bvh`` name sequences so.
"""
from __future__ import annotations

import math
import numbers
import os
import re
from dataclasses import dataclass
from typing import Sequence, Union

import numpy as np

__all__ = [
    "BvhJoint", "Bvh", "parse_bvh", "read_bvh", "forward_kinematics", "euler_to_matrix",
    "CMU_UNIT_METRES", "CMU_H36M17_TABLE", "BvhImport", "import_bvh", "find_glitches",
    "resample_positions", "resampled_length", "resolve_joint_table", "y_up_to_z_up",
    "MAX_RESAMPLED_FRAMES", "find_bvh_files", "bvh_sequence_name",
]

#: Length of one CMU BVH unit in metres.
CMU_UNIT_METRES = 0.056444

#: Default bound on the length of a resampled clip (``max_frames`` of :func:`import_bvh`).
MAX_RESAMPLED_FRAMES = 2_000_000

JointSpec = Union[str, Sequence[str]]

#: Default joint table for the CMU "MotionBuilder-friendly" BVH files: entry i gives the BVH
#: joint (or the joints whose positions are averaged) for Human3.6M joint i.
CMU_H36M17_TABLE: tuple[JointSpec, ...] = (
    ("LeftUpLeg", "RightUpLeg"),            # 0 Hip (root): midpoint of the two hip joints
    "RightUpLeg", "RightLeg", "RightFoot",  # 1-3 RHip, RKnee, RFoot
    "LeftUpLeg", "LeftLeg", "LeftFoot",     # 4-6 LHip, LKnee, LFoot
    "Spine",                                # 7 Spine
    "Neck1",                                # 8 Thorax
    "Head",                                 # 9 Neck/Nose
    "Head_End",                             # 10 Head: the end site of Head
    "LeftArm", "LeftForeArm", "LeftHand",   # 11-13 LShoulder, LElbow, LWrist
    "RightArm", "RightForeArm", "RightHand",  # 14-16 RShoulder, RElbow, RWrist
)

_CHANNEL_RE = re.compile(r"^([XYZxyz])(position|rotation)$", re.IGNORECASE)


@dataclass(frozen=True)
class BvhJoint:
    name: str
    parent: int                    # index into Bvh.joints, -1 for a root
    offset: np.ndarray             # (3,) in BVH units
    channels: tuple[str, ...]      # normalised names, e.g. ("Zrotation", "Yrotation", ...)
    channel_start: int             # first column of this joint's channels in Bvh.motion
    is_end_site: bool = False


@dataclass
class Bvh:
    """A parsed BVH file. ``motion`` is (frames, channels) float64 in file order."""
    joints: list[BvhJoint]
    frame_time: float
    motion: np.ndarray
    source: str = "<bvh>"

    @property
    def names(self) -> list[str]:
        return [j.name for j in self.joints]

    @property
    def num_frames(self) -> int:
        return int(self.motion.shape[0])

    @property
    def num_channels(self) -> int:
        return int(self.motion.shape[1])

    @property
    def fps(self) -> float:
        """Frame rate; snapped to the nearest integer when within 0.01 % of it (".0083333")."""
        fps = 1.0 / self.frame_time
        r = round(fps)
        return float(r) if r > 0 and abs(fps - r) <= 1e-4 * r else fps

    def index(self, name: str) -> int:
        for i, j in enumerate(self.joints):
            if j.name == name:
                return i
        raise KeyError(name)


# --------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------

class _Tokens:
    def __init__(self, lines: list[str], source: str):
        self.toks: list[tuple[str, int]] = []
        for n, line in enumerate(lines, 1):
            for t in line.replace("{", " { ").replace("}", " } ").split():
                self.toks.append((t, n))
        self.i = 0
        self.source = source
        self.last_line = len(lines)

    def error(self, msg: str, line: int | None = None) -> ValueError:
        if line is None:
            line = self.toks[self.i][1] if self.i < len(self.toks) else self.last_line
        return ValueError(f"{self.source}: line {line}: {msg}")

    def peek(self) -> str | None:
        return self.toks[self.i][0] if self.i < len(self.toks) else None

    def next(self, what: str) -> tuple[str, int]:
        if self.i >= len(self.toks):
            raise self.error(f"unexpected end of HIERARCHY, expected {what}")
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def expect(self, word: str) -> int:
        tok, line = self.next(repr(word))
        if tok.upper() != word.upper():
            raise self.error(f"expected {word!r}, found {tok!r}", line)
        return line

    def number(self, what: str) -> float:
        tok, line = self.next(what)
        try:
            v = float(tok)
        except ValueError:
            raise self.error(f"expected a number for {what}, found {tok!r}", line) from None
        if not math.isfinite(v):
            raise self.error(f"{what} is not finite ({tok!r})", line)
        return v


def _parse_hierarchy(tk: _Tokens) -> list[BvhJoint]:
    joints: list[BvhJoint] = []
    columns = 0
    names: set[str] = set()

    def block(parent: int, name: str, is_end: bool, line: int) -> None:
        nonlocal columns
        tk.expect("{")
        index = len(joints)
        joints.append(None)  # placeholder keeps pre-order indices
        offset = None
        channels: tuple[str, ...] = ()
        start = columns
        while True:
            tok, tline = tk.next("'}'")
            up = tok.upper()
            if up == "OFFSET":
                if offset is not None:
                    raise tk.error(f"joint {name!r} has two OFFSETs", tline)
                offset = np.array([tk.number("OFFSET x"), tk.number("OFFSET y"),
                                   tk.number("OFFSET z")])
            elif up == "CHANNELS":
                if is_end:
                    raise tk.error("an End Site cannot have CHANNELS", tline)
                if channels:
                    raise tk.error(f"joint {name!r} has two CHANNELS lines", tline)
                ntok, nline = tk.next("channel count")
                if not ntok.isdigit():
                    raise tk.error(f"expected a channel count, found {ntok!r}", nline)
                parsed = []
                for _ in range(int(ntok)):
                    ctok, cline = tk.next("channel name")
                    m = _CHANNEL_RE.match(ctok)
                    if m is None:
                        raise tk.error(f"unknown channel {ctok!r} (expected X/Y/Z position or "
                                       "rotation)", cline)
                    parsed.append(m.group(1).upper() + m.group(2).lower())
                if len(set(parsed)) != len(parsed):
                    raise tk.error(f"joint {name!r} repeats a channel", nline)
                channels = tuple(parsed)
                start = columns
                columns += len(channels)
            elif up == "JOINT":
                if is_end:
                    raise tk.error("an End Site cannot have children", tline)
                child, cline = tk.next("joint name")
                block(index, child, False, cline)
            elif up == "END":
                if is_end:
                    raise tk.error("an End Site cannot have children", tline)
                tk.expect("Site")
                k = sum(1 for j in joints if j is not None and j.is_end_site and j.parent == index)
                block(index, f"{name}_End" + (str(k + 1) if k else ""), True, tline)
            elif tok == "}":
                break
            else:
                raise tk.error(f"unexpected {tok!r} in joint {name!r}", tline)
        if offset is None:
            raise tk.error(f"joint {name!r} has no OFFSET", line)
        if name in names:
            raise tk.error(f"duplicate joint name {name!r}", line)
        names.add(name)
        joints[index] = BvhJoint(name, parent, offset, channels, start, is_end)

    tk.expect("HIERARCHY")
    if (tk.peek() or "").upper() != "ROOT":
        raise tk.error("expected ROOT after HIERARCHY")
    try:
        while tk.peek() is not None:
            tok, line = tk.next("ROOT")
            if tok.upper() != "ROOT":
                raise tk.error(f"expected ROOT or MOTION, found {tok!r}", line)
            name, nline = tk.next("root name")
            block(-1, name, False, nline)
    except RecursionError:
        raise tk.error("hierarchy nested too deeply") from None
    return joints


def parse_bvh(text: str, source: str = "<bvh>") -> Bvh:
    """Parse BVH text. ``source`` (usually the file name) prefixes every error message."""
    lines = text.splitlines()
    motion_at = next((i for i, ln in enumerate(lines) if ln.strip().upper() == "MOTION"), None)
    if motion_at is None:
        if not any(ln.strip() for ln in lines):
            raise ValueError(f"{source}: empty file")
        raise ValueError(f"{source}: no MOTION section")
    tk = _Tokens(lines[:motion_at], source)
    joints = _parse_hierarchy(tk)
    n_channels = sum(len(j.channels) for j in joints)
    if n_channels == 0:
        raise ValueError(f"{source}: the hierarchy declares no channels")

    rest = [(i + 1, ln.strip()) for i, ln in enumerate(lines[motion_at + 1:], motion_at + 1)]
    rest = [(n, ln) for n, ln in rest if ln]
    if len(rest) < 2:
        raise ValueError(f"{source}: line {motion_at + 1}: MOTION needs 'Frames:' and "
                         "'Frame Time:' lines")
    (n1, l1), (n2, l2) = rest[0], rest[1]
    m1 = re.fullmatch(r"Frames\s*:\s*(\S+)", l1, re.IGNORECASE)
    if m1 is None or not m1.group(1).isdigit():
        raise ValueError(f"{source}: line {n1}: expected 'Frames: <count>', found {l1[:40]!r}")
    m2 = re.fullmatch(r"Frame\s+Time\s*:\s*(\S+)", l2, re.IGNORECASE)
    try:
        frame_time = float(m2.group(1)) if m2 else float("nan")
    except ValueError:
        frame_time = float("nan")
    if not (frame_time > 0 and math.isfinite(frame_time)):
        raise ValueError(f"{source}: line {n2}: expected 'Frame Time: <seconds>' with a "
                         f"positive value, found {l2[:40]!r}")
    n_frames = int(m1.group(1))
    data = rest[2:]
    if n_frames == 0:
        raise ValueError(f"{source}: empty sequence (Frames: 0)")
    if len(data) != n_frames:
        raise ValueError(f"{source}: declares {n_frames} frames but has {len(data)} lines of "
                         "motion data")
    try:
        values = np.array(" ".join(ln for _, ln in data).split(), dtype=np.float64)
        ok = values.size == n_frames * n_channels
    except ValueError:
        ok = False
    if not ok:  # locate the offending line
        for n, ln in data:
            parts = ln.split()
            if len(parts) != n_channels:
                raise ValueError(f"{source}: line {n}: {len(parts)} values, the hierarchy "
                                 f"declares {n_channels} channels")
            try:
                [float(p) for p in parts]
            except ValueError:
                bad = next(p for p in parts if not _is_float(p))
                raise ValueError(f"{source}: line {n}: {bad[:20]!r} is not a number") from None
        raise ValueError(f"{source}: malformed motion data")  # pragma: no cover
    motion = values.reshape(n_frames, n_channels)
    finite = np.isfinite(motion).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise ValueError(f"{source}: line {data[bad[0]][0]}: NaN or infinite channel values "
                         f"in {bad.size} frame(s) (first: frame {bad[0]})")
    return Bvh(joints, frame_time, motion, source)


def _is_float(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def read_bvh(path: str | os.PathLike) -> Bvh:
    """Read and parse a BVH file (errors name the file)."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8", errors="strict") as f:
            text = f.read()
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text file") from None
    except OSError as exc:
        raise ValueError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return parse_bvh(text, path)


# --------------------------------------------------------------------------------------------
# Forward kinematics
# --------------------------------------------------------------------------------------------

def _axis_rotation(axis: str, deg: np.ndarray) -> np.ndarray:
    """(F, 3, 3) rotation about a coordinate axis, counter-clockwise positive, in degrees."""
    a = np.deg2rad(deg)
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    if axis == "X":
        m = [o, z, z, z, c, -s, z, s, c]
    elif axis == "Y":
        m = [c, z, s, z, o, z, -s, z, c]
    else:
        m = [c, -s, z, s, c, z, z, z, o]
    return np.stack(m, axis=-1).reshape(deg.shape + (3, 3))


def euler_to_matrix(angles_deg, order: str) -> np.ndarray:
    """Compose axis rotations in the listed order: ``order="ZYX"`` gives ``Rz @ Ry @ Rx``.

    ``angles_deg`` is (..., len(order)) in degrees; returns (..., 3, 3).
    """
    angles = np.asarray(angles_deg, dtype=np.float64)
    order = order.upper()
    if angles.shape[-1] != len(order) or any(a not in "XYZ" for a in order):
        raise ValueError(f"order {order!r} does not match angles of shape {angles.shape}")
    out = None
    for k, axis in enumerate(order):
        r = _axis_rotation(axis, angles[..., k])
        out = r if out is None else out @ r
    return out if out is not None else np.broadcast_to(np.eye(3), angles.shape[:-1] + (3, 3))


def forward_kinematics(bvh: Bvh, frames=None) -> np.ndarray:
    """World positions (frames, joints, 3) of every joint and end site, in BVH units.

    ``frames`` optionally selects frames (anything that indexes ``bvh.motion`` rows).
    """
    motion = bvh.motion if frames is None else bvh.motion[frames]
    if motion.ndim == 1:
        motion = motion[None]
    nf = motion.shape[0]
    pos = np.empty((nf, len(bvh.joints), 3))
    rots: list[np.ndarray | None] = [None] * len(bvh.joints)
    for j, joint in enumerate(bvh.joints):
        trans = np.broadcast_to(joint.offset, (nf, 3)).copy()
        rot = None
        for k, ch in enumerate(joint.channels):
            col = motion[:, joint.channel_start + k]
            axis = "XYZ".index(ch[0])
            if ch.endswith("position"):
                trans[:, axis] += col
            else:
                r = _axis_rotation(ch[0], col)
                rot = r if rot is None else rot @ r
        if joint.parent < 0:
            pos[:, j] = trans
            rots[j] = rot
        else:
            prot = rots[joint.parent]
            step = trans if prot is None else np.einsum("fij,fj->fi", prot, trans)
            pos[:, j] = pos[:, joint.parent] + step
            rots[j] = prot if rot is None else (rot if prot is None else prot @ rot)
    return pos


# --------------------------------------------------------------------------------------------
# Import pipeline
# --------------------------------------------------------------------------------------------

def resolve_joint_table(bvh: Bvh, table: Sequence[JointSpec]) -> list[list[int]]:
    """Joint indices for each table entry (a name, or a list of names to average)."""
    index = {name: i for i, name in enumerate(bvh.names)}
    out = []
    for k, spec in enumerate(table):
        names = [spec] if isinstance(spec, str) else list(spec)
        if not names:
            raise ValueError(f"{bvh.source}: joint table entry {k} is empty")
        idx = []
        for name in names:
            if name not in index:
                raise ValueError(f"{bvh.source}: joint table entry {k} needs joint {name!r}, "
                                 f"which the hierarchy lacks (it has: {', '.join(bvh.names)})")
            idx.append(index[name])
        out.append(idx)
    return out


def y_up_to_z_up(x: np.ndarray) -> np.ndarray:
    """Map Y-up coordinates to Z-up: ``(x, y, z) -> (x, -z, y)`` (a proper rotation)."""
    return np.stack([x[..., 0], -x[..., 2], x[..., 1]], axis=-1)


def find_glitches(positions: np.ndarray, fps: float, max_speed: float = 10.0
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Velocity check for one-frame glitches in (frames, joints, 3) positions (metres).

    Frame t is flagged when some joint moved faster than ``max_speed`` (m/s) between frames
    t - 1 and t: a jump within one frame interval, which a marker swap or an inverse-kinematics
    flip produces and real motion does not (everyday motion stays below about 9 m/s at the
    wrists and feet; raise ``max_speed`` for throwing or kicking). Returns ``(frames, spikes)``:
    the sorted flagged frame indices, and the subset that are isolated spikes (the joint jumps
    away at t and straight back at t + 1, so frames t - 1 and t + 1 agree), which can be
    repaired by the neighbours' midpoint.
    """
    if not max_speed > 0:
        raise ValueError(f"max_speed must be positive, got {max_speed}")
    nf = positions.shape[0]
    if nf < 2:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    step = max_speed / fps
    jump = np.linalg.norm(np.diff(positions, axis=0), axis=-1) > step   # (F-1, J): t-1 -> t
    frames = np.flatnonzero(jump.any(axis=1)) + 1
    if nf < 3:
        return frames.astype(np.int64), np.zeros(0, dtype=np.int64)
    back = np.linalg.norm(positions[2:] - positions[:-2], axis=-1) <= step   # (F-2, J)
    spike = (jump[:-1] & jump[1:] & back).any(axis=1)
    spikes = np.flatnonzero(spike) + 1
    return frames.astype(np.int64), spikes.astype(np.int64)


def _count(n: float) -> str:
    return f"{int(n):,}" if n < 1e15 else f"{n:.3g}"


def resampled_length(times: np.ndarray, fps: float) -> float:
    """Number of frames :func:`resample_positions` makes from samples at ``times`` (seconds) at
    ``fps``: ``floor((times[-1] - times[0]) * fps) + 1``, as a float (inf when it overflows)."""
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    if len(times) <= 1:
        return 1.0
    frames = float(times[-1] - times[0]) * float(fps)
    return math.floor(frames + 1e-6) + 1.0 if math.isfinite(frames) else math.inf


def resample_positions(positions: np.ndarray, times: np.ndarray, fps: float,
                       max_frames: int | None = None
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Linear interpolation of (frames, ...) samples taken at increasing ``times`` (seconds) onto
    ``times[0] + k / fps`` for every k with the time within ``[times[0], times[-1]]``.

    Returns ``(resampled, lower, weight)``: output k is
    ``positions[lower[k]] * (1 - weight[k]) + positions[lower[k] + 1] * weight[k]``.
    ``max_frames``: raise ValueError (before allocating) when the result would hold more frames.
    """
    n_out = resampled_length(times, fps)
    if max_frames is not None and n_out > max_frames:
        raise ValueError(f"resampling {positions.shape[0]} samples spanning "
                         f"{float(times[-1] - times[0]):g} s to {fps:g} fps would give "
                         f"{_count(n_out)} frames, more than max_frames = {max_frames:,}")
    n = positions.shape[0]
    if n == 1:
        return positions.copy(), np.zeros(1, dtype=np.int64), np.zeros(1)
    n_out = int(n_out)
    t = times[0] + np.arange(n_out) / fps
    lower = np.clip(np.searchsorted(times, t, side="right") - 1, 0, n - 2)
    w = np.clip((t - times[lower]) / (times[lower + 1] - times[lower]), 0.0, 1.0)
    shape = (-1,) + (1,) * (positions.ndim - 1)
    out = positions[lower] * (1 - w).reshape(shape) + positions[lower + 1] * w.reshape(shape)
    return out, lower, w


@dataclass
class BvhImport:
    """Result of :func:`import_bvh`.

    ``positions``: (frames, joints, 3) float64 in metres in the output world frame, at ``fps``.
    ``dropped``: source frame indices removed (all-zero frames and the T-pose).
    ``glitches``: source frame indices flagged by the velocity check (:func:`find_glitches`);
    ``spikes``: those that are isolated one-frame spikes (replaced by the neighbours' midpoint
    when ``repaired``); ``flagged``: the output frames k whose interval from frame k - 1 contains
    a glitch (the frames at which a jump shows in the output), to exclude or inspect downstream.
    """
    positions: np.ndarray
    fps: float
    source_fps: float
    dropped: np.ndarray
    glitches: np.ndarray
    spikes: np.ndarray
    flagged: np.ndarray
    repaired: bool
    source: str


def import_bvh(path_or_bvh: str | os.PathLike | Bvh, *,
               joint_table: Sequence[JointSpec] = CMU_H36M17_TABLE,
               scale: float = CMU_UNIT_METRES, up_axis: str = "y", fps: float | None = 50.0,
               tpose: str = "auto", tpose_jump: float = 0.2, drop_zero_frames: bool = True,
               max_speed: float = 10.0, repair_glitches: bool = False,
               max_frames: int | None = MAX_RESAMPLED_FRAMES) -> BvhImport:
    """Import a BVH file as joint positions in metres (see the module docstring for each step).

    ``up_axis`` is the file's up axis: ``"y"`` (converted to Z-up) or ``"z"`` (kept).
    ``max_speed`` (m/s) is the velocity-check limit of :func:`find_glitches`. ``max_frames``
    bounds the number of resampled frames (default :data:`MAX_RESAMPLED_FRAMES`, 2,000,000;
    None: no bound). Raises ValueError naming the file when the file is malformed, the table
    names missing joints, no frame is left, or resampling would exceed ``max_frames`` (that error
    also gives the file's frame time and frame count).
    """
    if max_frames is not None and (isinstance(max_frames, bool) or not isinstance(max_frames, int)
                                   or max_frames < 1):
        raise ValueError(f"max_frames must be a positive int or None, got {max_frames!r}")
    if fps is not None and not (isinstance(fps, numbers.Real) and not isinstance(fps, bool)
                                and math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive finite number or None, got {fps!r}")
    bvh = path_or_bvh if isinstance(path_or_bvh, Bvh) else read_bvh(path_or_bvh)
    src = bvh.source
    if tpose not in ("auto", "first", "none"):
        raise ValueError(f"tpose must be 'auto', 'first' or 'none', got {tpose!r}")
    if up_axis not in ("y", "z"):
        raise ValueError(f"up_axis must be 'y' or 'z', got {up_axis!r}")
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    table = resolve_joint_table(bvh, joint_table)

    keep = np.ones(bvh.num_frames, dtype=bool)
    if drop_zero_frames:
        keep &= np.any(bvh.motion != 0, axis=1)
    kept = np.flatnonzero(keep)
    if kept.size == 0:
        raise ValueError(f"{src}: no frames left after dropping all-zero frames")

    def mapped(frames) -> np.ndarray:
        full = forward_kinematics(bvh, frames)
        out = np.stack([full[:, idx].mean(axis=1) for idx in table], axis=1) * scale
        return y_up_to_z_up(out) if up_axis == "y" else out

    if tpose == "first":
        kept = kept[1:]
    elif tpose == "auto" and kept.size >= 2:
        two = mapped(kept[:2])
        rel = two - two[:, :1]
        if np.linalg.norm(rel[0] - rel[1], axis=-1).max() > tpose_jump:
            kept = kept[1:]
    if kept.size == 0:
        raise ValueError(f"{src}: no frames left after dropping the T-pose")
    dropped = np.setdiff1d(np.arange(bvh.num_frames), kept)

    times = kept * (1.0 / bvh.fps)
    if fps is not None and fps != bvh.fps and max_frames is not None:
        n_out = resampled_length(times, float(fps))
        if n_out > max_frames:
            raise ValueError(
                f"{src}: {bvh.num_frames} frames with 'Frame Time: {bvh.frame_time:g}' "
                f"({float(times[-1] - times[0]):g} s between the first and last kept frame) "
                f"would resample to {_count(n_out)} frames at {float(fps):g} fps, more than "
                f"max_frames = {max_frames:,}; check the file's Frame Time, or pass a larger "
                "max_frames (max_frames=None: no bound) or fps=None (keep the source frames)")

    pos = mapped(kept)
    if not np.isfinite(pos).all():
        raise ValueError(f"{src}: forward kinematics produced non-finite positions")
    src_fps = bvh.fps
    glitch_local, spikes = find_glitches(pos, src_fps, max_speed)
    if repair_glitches and spikes.size:
        pos[spikes] = 0.5 * (pos[spikes - 1] + pos[spikes + 1])
    if fps is None or fps == src_fps:
        out, out_fps, out_times = pos, src_fps, times
    else:
        out, _, _ = resample_positions(pos, times, float(fps))
        out_fps = float(fps)
        out_times = times[0] + np.arange(out.shape[0]) / out_fps
    # Output frame k shows a glitch between source frames i-1 and i when its interval
    # (t[k-1], t[k]] overlaps (T[i-1], T[i]].
    flagged = set()
    for i in glitch_local:
        lo = max(1, int(np.searchsorted(out_times, times[i - 1], side="right")))
        hi = min(out.shape[0] - 1, int(np.searchsorted(out_times, times[i], side="left")))
        flagged.update(range(lo, hi + 1))
    flagged = np.array(sorted(flagged), dtype=np.int64)
    return BvhImport(positions=out, fps=out_fps, source_fps=src_fps, dropped=dropped,
                     glitches=kept[glitch_local], spikes=kept[spikes],
                     flagged=flagged.astype(np.int64), repaired=bool(repair_glitches), source=src)


def find_bvh_files(paths: Sequence[str | os.PathLike]) -> list[str]:
    """The BVH files named by ``paths``: each a file (taken as it is) or a folder searched
    recursively for ``*.bvh`` (any case; sorted within the folder). A folder without BVH files
    or a path that does not exist raises ValueError naming it."""
    files: list[str] = []
    for path in map(os.fspath, paths):
        if os.path.isdir(path):
            found = []
            for root, _, names in os.walk(path):
                found += [os.path.join(root, n) for n in names if n.lower().endswith(".bvh")]
            if not found:
                raise ValueError(f"{path}: no .bvh files in this folder")
            files += sorted(found)
        elif os.path.isfile(path):
            files.append(path)
        else:
            raise ValueError(f"{path}: no such file or folder")
    return files


def bvh_sequence_name(path: str | os.PathLike, subject: str | None = None) -> tuple[str, str]:
    """``(subject, action)`` of a BVH file: ``subject`` if given, else the name of the file's
    folder; the action is the file name without its extension."""
    path = os.fspath(path)
    subject = subject or os.path.basename(os.path.dirname(os.path.abspath(path)))
    return subject, os.path.splitext(os.path.basename(path))[0]
