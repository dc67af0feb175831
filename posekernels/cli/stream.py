"""``posekernels stream``: live lifting of 2D keypoints given as JSON lines, 3D poses out as JSON lines.

Input, one JSON object per line (``--input FILE`` or ``-`` for standard input)::

    {"keypoints": [[x, y], ...], "scores": [s, ...], "stream": "cam0", "frame": 17}
    {"keypoints": [[x, y, s], ...]}                 # a third value per point is its score
    {"keypoints": [x0, y0, s0, x1, y1, s1, ...]}    # flat lists (2 or 3 values per point)
    {"stream": "cam0", "end": true}                 # the stream ended: flush its last poses

``keypoints`` are in the ``--format`` layout (``coco17``: RTMPose / MMPose / YOLO-pose,
``openpose18``, ``body25``, ``blazepose33``, ``halpe26`` / ``halpe136``: AlphaPose,
``wholebody133``: RTMW / DWPose, ``h36m17``; see :mod:`posekernels.adapters`) in pixels of a
``--width`` x ``--height`` image (``--units unit`` for MediaPipe's fractions of the image
size). ``scores``, ``stream`` (a JSON string, or an integer in the signed 64-bit range; default
0), ``frame`` (an integer in that range, echoed back) and ``end`` (a JSON boolean) are optional;
other fields are ignored. Coordinates and scores must be JSON numbers or ``null`` (strings and
booleans are refused). A line with both ``keypoints`` and ``"end": true`` lifts that frame,
then ends the stream.

Missing points: ``null``, NaN or infinite values, a score below ``--min-score``, and coordinates
outside the sane range of the image -- x in [-W, 2W] and y in [-H, 2H] pixels (one image size
beyond each edge; [-1, 2] for ``--units unit``, [-3, 3] for ``--units normalized``) -- count as
missing: the lifter holds the joint's last value (see :mod:`posekernels.stream.lifter`).
Out-of-range points are noted on standard error with the line number.

Output, one JSON object per lifted frame (``--output FILE`` or ``-``)::

    {"stream": "cam0", "frame": 17, "index": 17, "pose_mm": [[x, y, z], ...],
     "latency_ms": 3.1, "age_ms": 2045.2}

``pose_mm``: the h36m17 pose in millimetres, root-relative, camera frame (x right, y down,
z forward); with ``--camera`` or ``--hfov`` also ``position_mm``, the same pose placed in the
camera's frame (where the person stands: the root's row is their position; ``null`` when the
frame had fewer than two usable keypoints; :func:`posekernels.inference.place_in_camera`);
``index``: the frame's position in its stream; ``latency_ms``: processing time from
reading the line that completed the pose's window to writing the pose; ``age_ms``: time since
the pose's own frame was read (adds the centred window's (T - 1) / 2 frames of delay). Every
line is strict JSON: no NaN or infinity is ever written (a non-finite pose is reported and
skipped).

Streams and slots: each live stream id holds one of ``--max-streams`` lifter slots (default 8,
at most 4096). ``"end": true`` flushes the stream's last poses and frees its slot; so does
``--idle-timeout`` seconds without a line for that stream (default 10; 0: never). An id that
comes back after its end or time-out starts a new stream (``index`` from 0). A new id while
every slot is live is reported and its line skipped.

Robustness: every line is read as bytes and handled on its own. A line that is not valid UTF-8,
longer than ``--max-line-bytes`` (default 1 MiB), not a JSON object, nested too deeply, or whose
fields have the wrong type or size is reported on standard error (``line N: ...``) and skipped;
the command goes on. At the end of the input, and on SIGTERM or SIGINT (lines already read are
still lifted, the rest of the input is not read; a signal that was ignored when the command
started stays ignored), every stream's pending poses are flushed. If the reader of the output
goes away (a closed pipe) the command stops quietly.

Exit status: 0, or 1 if any line (or non-finite pose) was skipped; 2 for a bad command line,
checkpoint or file. A SIGTERM / SIGINT stop exits like the end of the input (0 or 1); a closed
output pipe exits 0, any other write error 1 (reported).
"""
from __future__ import annotations

import argparse
import collections
import heapq
import json
import math
import os
import queue
import signal
import sys
import threading
import time

from ._args import add_weights_arg, int_in
from ._threads import add_threads_argument, steady_threads

MAX_STREAMS = 4096                 # --max-streams bound (each slot is preallocated)
DEFAULT_IDLE_TIMEOUT = 10.0        # seconds
DEFAULT_MAX_LINE_BYTES = 1 << 20   # 1 MiB
_INT64 = 1 << 63
_POLL_S = 0.1                      # how often a quiet input checks idle streams and signals
_SANE = {"px": (-1.0, 2.0), "unit": (-1.0, 2.0), "normalized": (-3.0, 3.0)}


def _finite(lo: float = -math.inf, what: str = "a finite number"):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        if not (math.isfinite(value) and value >= lo):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value
    return parse


def register(sub) -> None:
    from posekernels.adapters import FORMATS

    p = sub.add_parser(
        "stream", help="lift JSON-lines 2D keypoints to 3D poses in real time",
        description="Lift 2D keypoints given as JSON lines to 3D poses (JSON lines). Bad lines "
                    "are reported on stderr with their line number and skipped. Coordinates "
                    "outside x in [-W, 2W], y in [-H, 2H] pixels (or non-finite) count as "
                    "missing. Pending poses are flushed at the end of the input and on SIGTERM "
                    "/ SIGINT.")
    p.add_argument("--input", required=True, help="JSON lines file, or - for standard input")
    p.add_argument("--output", default="-", help="JSON lines output file, or - (default)")
    p.add_argument("--format", required=True,
                   choices=list(FORMATS),
                   help="keypoint layout of the input")
    p.add_argument("--width", type=_finite(what="a finite number"), required=True,
                   help="image width in pixels")
    p.add_argument("--height", type=_finite(what="a finite number"), required=True,
                   help="image height in pixels")
    p.add_argument("--units", default="px", choices=["px", "unit", "normalized"],
                   help="input coordinates: pixels (default), fractions of the image size "
                        "(MediaPipe), or already normalised. Points outside the sane range "
                        "(x in [-W, 2W], y in [-H, 2H] pixels; [-1, 2] in unit; [-3, 3] "
                        "normalised) or non-finite count as missing")
    p.add_argument("--checkpoint", default="default",
                   help="checkpoint file, or 'default' for the shipped model (default)")
    p.add_argument("--mode", choices=["centered", "causal"], default=None,
                   help="window mode; must match the model (default: the model's own). With "
                        "--checkpoint default it picks the shipped model: causal (the default) "
                        "or centered")
    p.add_argument("--fps", type=_finite(1.0, "a frame rate in [1, 1000]"), default=None,
                   help="the camera's frame rate: the model's windows then sample each stream "
                        "at the rate the model was trained at (50 Hz for the shipped models), "
                        "interpolating between frames; a 30 fps camera without it is lifted "
                        "worse (see README). Default: frames are taken as they come")
    p.add_argument("--model-fps", type=_finite(1.0, "a frame rate in [1, 1000]"), default=None,
                   help="with --fps: the rate the checkpoint was trained at, when it does not "
                        "record it (the shipped models do)")
    p.add_argument("--smooth", action="store_true",
                   help="One Euro smoothing of each stream's poses (causal, no added delay; "
                        "less jitter for about 0.5 mm of MPJPE, see README)")
    p.add_argument("--smooth-min-cutoff", type=_finite(0.0, "a cut-off in Hz > 0"), default=None,
                   metavar="HZ", help="with --smooth: the cut-off at rest (default 2)")
    p.add_argument("--smooth-beta", type=_finite(0.0, "a number >= 0"), default=None,
                   help="with --smooth: how fast the cut-off rises with speed (default 32)")
    p.add_argument("--min-score", type=_finite(what="a finite number"), default=0.3,
                   help="points with a lower score count as missing (default 0.3)")
    p.add_argument("--max-streams", type=int_in(1, MAX_STREAMS), default=8,
                   help=f"most streams live at once, 1 to {MAX_STREAMS} (default 8); a slot is "
                        "freed by 'end' or --idle-timeout")
    p.add_argument("--idle-timeout", type=_finite(0.0, "a number of seconds >= 0"),
                   default=DEFAULT_IDLE_TIMEOUT, metavar="SECONDS",
                   help="flush and free a stream that sent nothing for this long "
                        f"(default {DEFAULT_IDLE_TIMEOUT:g}; 0: never)")
    p.add_argument("--max-line-bytes", type=int_in(64, 1 << 30),
                   default=DEFAULT_MAX_LINE_BYTES, metavar="BYTES",
                   help=f"longer lines are reported and skipped (default {DEFAULT_MAX_LINE_BYTES}"
                        ", 1 MiB)")
    cam = p.add_mutually_exclusive_group()
    cam.add_argument("--camera", metavar="JSON", default=None,
                     help="the camera's intrinsics, inline JSON or a JSON file: focal_length "
                          "[fx, fy] and center [cx, cy] in pixels, optional radial_distortion "
                          "[k1, k2, k3], tangential_distortion [p1, p2], distortion_model "
                          "(brown, as OpenCV, or h36m); adds position_mm, each pose placed in "
                          "the camera's frame")
    cam.add_argument("--hfov", type=_finite(0.0, "a field of view in degrees"), default=None,
                     metavar="DEG", help="like --camera for a pinhole camera of this horizontal "
                                         "field of view, centred in the image")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--precision", choices=["float32", "bf16"], default="float32",
                   help="bf16: bfloat16 weight products (CPU; faster where the CPU has AVX-512 "
                        "BF16, a few millimetres off at most)")
    add_threads_argument(p)
    add_weights_arg(p)
    p.set_defaults(func=run)


# ----------------------------------------------------------------------------- line parsing
class LineError(ValueError):
    """A line that is reported and skipped."""


def _short(value, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _number(v, what: str) -> float:
    """A JSON number (or null -> NaN) as a float; huge integers become +-inf. No bools/strings."""
    if v is None:
        return math.nan
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise LineError(f"{what} must be a number or null, got {_short(v)} "
                        f"({type(v).__name__})")
    if isinstance(v, int):
        try:
            return float(v)
        except OverflowError:
            return math.inf if v > 0 else -math.inf
    return v


def _int64(v, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise LineError(f"{what} must be an integer, got {_short(v)} ({type(v).__name__})")
    if not -_INT64 <= v < _INT64:
        raise LineError(f"{what} must fit in a signed 64-bit integer")
    return v


def _parse_points(value, joints: int, what: str):
    """-> (list of [x, y] floats, list of scores or None); NaN for null points."""
    if not isinstance(value, list):
        raise LineError(f"{what} must be a list, got {type(value).__name__}")
    if value and not isinstance(value[0], list):  # flat list
        for width in (2, 3):
            if len(value) == joints * width:
                value = [value[i:i + width] for i in range(0, len(value), width)]
                break
        else:
            raise LineError(f"{what}: a flat list needs {joints * 2} or {joints * 3} numbers, "
                            f"got {len(value)}")
    if len(value) != joints:
        raise LineError(f"{what}: expected {joints} points for this format, got {len(value)}")
    widths = {len(p) if isinstance(p, list) else -1 for p in value}
    if len(widths) != 1 or widths.pop() not in (2, 3):
        raise LineError(f"{what}: every point must be [x, y] or [x, y, score]")
    pts, scores = [], []
    for j, p in enumerate(value):
        nums = [_number(v, f"{what}[{j}]") for v in p]
        pts.append(nums[:2])
        scores.append(nums[2] if len(nums) == 3 else None)
    return pts, (scores if scores[0] is not None else None)


def parse_record(rec, joints: int, sane):
    """A decoded JSON line -> (stream id, frame or None, points or None, scores, end, number of
    out-of-range points). Raises LineError for anything malformed. ``sane``: ((xlo, xhi),
    (ylo, yhi)) in input units; points outside (or non-finite) become NaN (missing)."""
    if not isinstance(rec, dict):
        raise LineError(f"each line must be a JSON object, got {type(rec).__name__}")
    sid = rec.get("stream", 0)
    if isinstance(sid, bool) or not isinstance(sid, (str, int)):
        raise LineError(f"'stream' must be a string or an integer, got {_short(sid)}")
    if isinstance(sid, int):
        _int64(sid, "'stream'")
    end = rec.get("end", False)
    if not isinstance(end, bool):
        raise LineError(f"'end' must be true or false, got {_short(end)} ({type(end).__name__})")
    frame = rec.get("frame")
    if frame is not None:
        _int64(frame, "'frame'")
    if "keypoints" not in rec:
        if end:
            return sid, frame, None, None, True, 0
        raise LineError("missing 'keypoints'")
    pts, inline_scores = _parse_points(rec["keypoints"], joints, "keypoints")
    scores = rec.get("scores", inline_scores)
    if scores is not None:
        if not isinstance(scores, list) or len(scores) != joints:
            raise LineError(f"'scores' must be a list of {joints} numbers")
        scores = [_number(s, f"scores[{j}]") for j, s in enumerate(scores)]
    (xlo, xhi), (ylo, yhi) = sane
    outside = 0
    for p in pts:
        x, y = p
        if math.isnan(x) or math.isnan(y):
            p[0] = p[1] = math.nan
        elif not (xlo <= x <= xhi and ylo <= y <= yhi):  # also catches +-inf
            p[0] = p[1] = math.nan
            outside += 1
    return sid, frame, pts, scores, end, outside


# ----------------------------------------------------------------------------- input reading
class _TextAsBytes:
    """readline(limit) -> bytes over a text stream (a caller-provided sys.stdin without .buffer)."""

    def __init__(self, f):
        self.f = f

    def readline(self, limit: int) -> bytes:
        return self.f.readline(limit).encode("utf-8", "surrogateescape")


def _reader(f, max_bytes: int, out: queue.Queue, stop: threading.Event) -> None:
    """Put (lineno, bytes or None when too long, length, read time) for each line, then None.
    Memory stays bounded: a too-long line is read through in pieces and dropped."""
    def put(item) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    lineno = 0
    try:
        while not stop.is_set():
            chunk = f.readline(max_bytes + 1)
            if not chunk:
                break
            lineno += 1
            read_at = time.perf_counter()
            if len(chunk) > max_bytes and not chunk.endswith(b"\n"):
                total = len(chunk)
                while chunk and not chunk.endswith(b"\n") and not stop.is_set():
                    chunk = f.readline(max_bytes + 1)
                    total += len(chunk)
                if not put((lineno, None, total, read_at)):
                    return
                continue
            if not put((lineno, chunk, len(chunk), read_at)):
                return
    except Exception as exc:  # an unreadable input ends it; the main loop reports
        put(("error", exc))
        return
    put(None)


# ----------------------------------------------------------------------------- the command
class _OutputClosed(Exception):
    """The output cannot be written: no args for a closed pipe (quiet), else the error."""


def _report(msg: str) -> None:
    try:
        print(f"posekernels stream: {msg}", file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


def _smoothing(args):
    """The lifter's ``smoothing`` from --smooth and its two overrides."""
    if not getattr(args, "smooth", False):
        if getattr(args, "smooth_min_cutoff", None) is not None or \
                getattr(args, "smooth_beta", None) is not None:
            raise ValueError("--smooth-min-cutoff / --smooth-beta need --smooth")
        return None
    import dataclasses

    from posekernels.inference import SMOOTHING_DEFAULTS

    overrides = {"min_cutoff": args.smooth_min_cutoff, "beta": args.smooth_beta}
    return dataclasses.replace(SMOOTHING_DEFAULTS,
                               **{k: v for k, v in overrides.items() if v is not None})


CAMERA_KEYS = ("focal_length", "center", "radial_distortion", "tangential_distortion",
               "distortion_model")


def camera_from_args(args):
    """The --camera / --hfov camera (a posekernels.data.Camera of the --width x --height image),
    or None; ValueError naming the option on a bad value."""
    from posekernels.data.cameras import Camera

    from ._args import read_json_object

    hfov, text = getattr(args, "hfov", None), getattr(args, "camera", None)
    if hfov is None and text is None:
        return None
    if args.units == "normalized":
        raise ValueError("--camera / --hfov need pixel (or --units unit) input: normalised "
                         "coordinates do not say where the image's pixels are")
    w, h = float(args.width), float(args.height)
    if hfov is not None:
        if not 1.0 <= hfov <= 179.0:
            raise ValueError(f"--hfov must be a field of view in [1, 179] degrees, got {hfov:g}")
        f = w / 2 / math.tan(math.radians(hfov) / 2)
        return Camera("hfov", round(w), round(h), (f, f), (w / 2, h / 2))
    d, where = read_json_object(text, "--camera")
    if not isinstance(d, dict):
        raise ValueError(f"{where}: expected a JSON object with {', '.join(CAMERA_KEYS)}")
    unknown = sorted(set(d) - set(CAMERA_KEYS))
    if unknown or "focal_length" not in d or "center" not in d:
        raise ValueError(f"{where}: needs focal_length and center"
                         + (f"; unknown key(s) {unknown}" if unknown else "")
                         + f"; valid keys: {list(CAMERA_KEYS)}")
    for key, value in d.items():
        if key != "distortion_model" and not (
                isinstance(value, list) and all(isinstance(v, (int, float))
                                                and not isinstance(v, bool) for v in value)):
            raise ValueError(f"{where}: {key} must be a list of numbers, got {value!r}")
    try:
        cam = Camera("camera", round(w), round(h), **d)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: {exc}") from None
    if min(cam.focal_length) <= 0:
        raise ValueError(f"{where}: focal_length must be positive, got {list(cam.focal_length)}")
    return cam


def run(args) -> int:
    import numpy as np

    from posekernels import adapters
    from posekernels.checkpoints import DefaultModelUnavailable, load_model
    from posekernels.data.cameras import image_coordinates
    from posekernels.inference import place_in_camera
    from posekernels.stream import StreamingLifter

    if args.units != "normalized" and not (args.width > 0 and args.height > 0):
        _report("--width and --height must be positive")
        return 2
    if not 1 <= args.max_streams <= MAX_STREAMS:  # callers that bypass the parser
        _report(f"--max-streams must be an integer in [1, {MAX_STREAMS}]")
        return 2
    try:
        camera = camera_from_args(args)
    except ValueError as exc:
        _report(str(exc))
        return 2
    steady_threads(args.threads, _report, args.device)
    try:
        model = load_model(args.checkpoint, device=args.device, mode=args.mode,
                           weights=getattr(args, "weights", "auto"))
    except (DefaultModelUnavailable, ValueError, OSError) as exc:
        _report(str(exc))
        return 2
    joints = adapters.FORMATS[args.format]
    try:
        lifter = StreamingLifter(model, num_streams=args.max_streams, mode=args.mode,
                                 device=args.device, min_score=args.min_score,
                                 fps=getattr(args, "fps", None),
                                 model_fps=getattr(args, "model_fps", None),
                                 smoothing=_smoothing(args),
                                 precision=getattr(args, "precision", "float32"))
    except (ValueError, TypeError) as exc:
        _report(str(exc))
        return 2
    if lifter.num_joints != 17:
        _report(f"the model has {lifter.num_joints} joints; the adapters produce h36m17 (17)")
        return 2
    lo, hi = _SANE[args.units]
    scale = (1.0, 1.0) if args.units != "px" else (args.width, args.height)
    sane = ((lo * scale[0], hi * scale[0]), (lo * scale[1], hi * scale[1]))
    idle = float(getattr(args, "idle_timeout", DEFAULT_IDLE_TIMEOUT))
    max_line = int(getattr(args, "max_line_bytes", DEFAULT_MAX_LINE_BYTES))

    try:
        if args.input == "-":
            buf = getattr(sys.stdin, "buffer", None)
            src, own_src = (buf if buf is not None else _TextAsBytes(sys.stdin)), False
        else:
            src, own_src = open(args.input, "rb"), True
    except OSError as exc:
        _report(f"cannot read --input: {exc}")
        return 2
    try:
        dst, own_dst = ((sys.stdout, False) if args.output == "-"
                        else (open(args.output, "w", encoding="utf-8"), True))
    except OSError as exc:
        if own_src:
            src.close()
        _report(f"cannot write --output: {exc}")
        return 2

    slots: dict = {}                     # live stream id -> lifter slot
    ids: dict = {}                       # lifter slot -> stream id
    free = list(range(args.max_streams))  # a heap: the lowest free slot is taken first
    last_seen: collections.OrderedDict = collections.OrderedDict()  # slot -> time, oldest first
    pending = collections.defaultdict(collections.deque)  # slot -> (frame id, read time)
    bad = 0
    stop_signal: list = []

    def write(lines: list) -> None:
        if not lines:
            return
        try:
            dst.write("".join(lines))
            dst.flush()
        except BrokenPipeError:
            raise _OutputClosed() from None
        except (OSError, ValueError) as exc:  # a full disk, a closed file: nowhere to write
            raise _OutputClosed(exc) from None

    def pose_line(index: int, frame_index: int, pose, started: float):
        nonlocal bad
        frame_id, read_at, kp2d = pending[index].popleft()
        pose = np.asarray(pose, dtype=np.float64)
        if not np.isfinite(pose).all():
            bad += 1
            _report(f"stream {_short(ids[index])} frame {frame_id}: the model gave a "
                    "non-finite pose; skipped")
            return None
        placed = None
        if camera is not None:
            kp, sc = kp2d
            at = place_in_camera(pose[None], image_coordinates(kp, args.width, args.height)[None],
                                 camera, scores=None if sc is None else sc[None],
                                 min_score=args.min_score)[0]
            placed = np.round(at * 1000.0, 2).tolist() if np.isfinite(at).all() else None
        now = time.perf_counter()
        rec = {"stream": ids[index], "frame": frame_id, "index": int(frame_index),
               "pose_mm": np.round(pose * 1000.0, 2).tolist(),
               **({"position_mm": placed} if camera is not None else {}),
               "latency_ms": round((now - started) * 1e3, 3),
               "age_ms": round((now - read_at) * 1e3, 3)}
        return json.dumps(rec, allow_nan=False) + "\n"

    def finish(index: int) -> None:
        """Flush a stream's pending poses and free its slot."""
        started = time.perf_counter()
        done = int(lifter.counts[index]) - len(pending[index])
        out = []
        try:
            for k, pose in enumerate(lifter.flush(index)):
                line = pose_line(index, done + k, pose, started)
                if line is not None:
                    out.append(line)
        finally:
            pending.pop(index, None)
            last_seen.pop(index, None)
            del slots[ids.pop(index)]
            heapq.heappush(free, index)
        write(out)

    def expire(now: float) -> None:
        if idle <= 0:
            return
        while last_seen:
            index, seen = next(iter(last_seen.items()))
            if now - seen < idle:
                break
            finish(index)

    def handle(lineno: int, raw, length: int, read_at: float) -> None:
        nonlocal bad
        try:
            if raw is None:
                raise LineError(f"longer than --max-line-bytes={max_line} ({length} bytes)")
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise LineError(f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset "
                                f"{exc.start})") from None
            if lineno == 1:
                text = text.lstrip("\ufeff")
            text = text.strip()
            if not text:
                return
            try:
                rec = json.loads(text)
            except RecursionError:
                raise LineError("JSON nested too deeply") from None
            except ValueError as exc:
                raise LineError(f"not valid JSON: {exc}") from None
            sid, frame, pts, scores, end, outside = parse_record(rec, joints, sane)
            if outside:
                _report(f"line {lineno}: {outside} point(s) outside the image's sane range, "
                        "taken as missing")
            if pts is None:  # an end line without a frame
                if sid in slots:
                    finish(slots[sid])
                return
            kp, sc = adapters.to_h36m17(np.asarray(pts, dtype=np.float64), scores,
                                        fmt=args.format, width=args.width, height=args.height,
                                        units=args.units)
            if sid not in slots:
                if not free:
                    raise LineError(
                        f"a new stream {_short(sid)} but all --max-streams={args.max_streams} "
                        "slots are live; end a stream ({\"stream\": id, \"end\": true})"
                        + (f" or let one idle for --idle-timeout={idle:g} s" if idle > 0
                           else ""))
                index = heapq.heappop(free)
                slots[sid], ids[index] = index, sid
            index = slots[sid]
        except _OutputClosed:
            raise
        except Exception as exc:  # every other failure is this line's alone
            bad += 1
            msg = str(exc) if isinstance(exc, LineError) else f"{type(exc).__name__}: {exc}"
            _report(f"line {lineno}: {msg[:300]}; skipped")
            return
        last_seen[index] = time.monotonic()
        last_seen.move_to_end(index)
        pending[index].append((frame if frame is not None else int(lifter.counts[index]),
                               read_at, (kp, sc) if camera is not None else None))
        try:
            pose = lifter.push(kp, sc, streams=index)
        except Exception as exc:  # the lifter checks before it changes any state
            pending[index].pop()
            bad += 1
            _report(f"line {lineno}: {type(exc).__name__}: {str(exc)[:300]}; skipped")
            return
        if pose is not None:
            line = pose_line(index, int(lifter.last_frame_index[0]), pose, read_at)
            write([line] if line is not None else [])
        if end:
            finish(index)

    def on_signal(signum, frame) -> None:
        stop_signal.append(signum)

    handlers = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                if signal.getsignal(sig) is not signal.SIG_IGN:  # an ignored signal stays so
                    handlers[sig] = signal.signal(sig, on_signal)
            except (ValueError, OSError):
                pass
    lines: queue.Queue = queue.Queue(maxsize=64)
    stop_reading = threading.Event()
    reader = threading.Thread(target=_reader, args=(src, max_line, lines, stop_reading),
                              name="posekernels-stream-reader", daemon=True)
    reader.start()
    closed = None
    try:
        while True:
            if stop_signal:
                stop_reading.set()
                try:
                    item = lines.get_nowait()  # what was already read is still lifted
                except queue.Empty:
                    break
            else:
                try:
                    item = lines.get(timeout=_POLL_S)
                except queue.Empty:
                    expire(time.monotonic())
                    continue
            if item is None:
                break
            if item[0] == "error":
                _report(f"reading the input failed: {item[1]}")
                bad += 1
                break
            expire(time.monotonic())
            handle(*item)
        for index in sorted(ids):
            finish(index)
    except _OutputClosed as exc:
        closed = exc
    finally:
        stop_reading.set()
        if own_src:
            reader.join(timeout=5.0)  # let it leave the file before it is closed
        for sig, old in handlers.items():
            try:
                signal.signal(sig, old)
            except (ValueError, OSError, TypeError):
                pass
        if own_src:
            try:
                src.close()
            except OSError:
                pass
        if closed is not None and dst is sys.stdout:
            # the reader went away: point stdout at devnull so that Python's own flush at exit
            # does not print a BrokenPipeError (the recipe of the signal module's docs)
            try:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
                os.close(devnull)
            except (OSError, ValueError, AttributeError):
                pass
        try:
            if own_dst:
                dst.close()
            else:
                dst.flush()
        except (OSError, ValueError):
            pass
    if closed is not None:
        if closed.args:
            _report(f"cannot write the output: {closed.args[0]}")
            return 1
        return 0
    if stop_signal:
        _report(f"stopped by {signal.Signals(stop_signal[0]).name}; pending poses flushed")
    if bad:
        _report(f"{bad} line(s) or pose(s) skipped")
        return 1
    return 0
