"""``posekernels bvh``: the JSON lines of ``posekernels stream`` written as a BVH animation.

    posekernels bvh --input poses.jsonl --output person.bvh --fps 30 [--stream ID]
        [--field auto|position_mm|pose_mm] [--units cm|m|mm]

Reads the output lines of ``posekernels stream`` (one pose per line), takes one stream's poses
(``--stream``; needed when the file holds several), orders them by ``index`` and writes them as
a BVH skeleton with per-joint rotations (:mod:`posekernels.data.bvh_writer`). ``--field auto``
takes ``position_mm`` (poses placed in the camera: the person moves through the scene) when
every line of the stream has one, else ``pose_mm`` (root-relative: the root stays at the
origin). Frames missing from the stream (an index skipped, a ``null`` position) are filled by
linear interpolation between their neighbours, and their number is reported on stderr; the
file's frame rate is ``--fps``, the camera's. Exit status: 0, or 2 for a bad file or option
(reported on stderr).
"""
from __future__ import annotations

import json
import math
import sys

from ._args import int_in

MAX_LINE_BYTES = 1 << 20
MAX_FRAMES = 10_000_000


def register(sub) -> None:
    p = sub.add_parser("bvh", help="write posekernels stream output as a BVH animation",
                       description="Write one stream of `posekernels stream` output (JSON "
                                   "lines) as a BVH animation with joint rotations.")
    p.add_argument("--input", required=True, help="JSON lines written by posekernels stream")
    p.add_argument("--output", required=True, help="the .bvh file to write")
    p.add_argument("--fps", type=float, required=True, help="the camera's frame rate")
    p.add_argument("--stream", default=None,
                   help="the stream id to write (needed when the file holds several)")
    p.add_argument("--field", choices=["auto", "position_mm", "pose_mm"], default="auto",
                   help="position_mm (placed in the camera, from stream --camera/--hfov), "
                        "pose_mm (root-relative), or auto (default): position_mm when every "
                        "line has one")
    p.add_argument("--units", choices=["cm", "m", "mm"], default="cm",
                   help="the BVH file's length unit (default cm)")
    p.add_argument("--max-frames", type=int_in(1, MAX_FRAMES), default=1_000_000,
                   help="refuse streams longer than this (default 1,000,000 frames)")
    p.set_defaults(func=run)


def _report(msg: str) -> None:
    print(f"posekernels bvh: {msg}", file=sys.stderr)


def _points(value, where: str):
    """A 17 x 3 list of finite numbers, or None for JSON null."""
    if value is None:
        return None
    if not (isinstance(value, list) and len(value) == 17 and all(
            isinstance(p, list) and len(p) == 3 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                for v in p) for p in value)):
        raise ValueError(f"{where}: expected 17 [x, y, z] points of finite numbers")
    return value


def read_stream_lines(path: str, stream, max_frames: int):
    """{stream id: {index: (pose_mm, position_mm or None, whether the line has position_mm)}}
    from the stream output (metres x 1000 arrays as written)."""
    import numpy as np

    out: dict = {}
    with open(path, "rb") as f:
        lineno = 0
        while True:
            raw = f.readline(MAX_LINE_BYTES + 1)   # a line is never read whole past the limit
            if not raw:
                break
            lineno += 1
            if len(raw) > MAX_LINE_BYTES:
                raise ValueError(f"line {lineno}: longer than {MAX_LINE_BYTES} bytes")
            try:
                text = raw.decode("utf-8").strip()
            except UnicodeDecodeError:
                raise ValueError(f"line {lineno}: not valid UTF-8") from None
            if not text:
                continue
            try:
                rec = json.loads(text)
            except (ValueError, RecursionError):
                raise ValueError(f"line {lineno}: not a JSON line of posekernels stream") \
                    from None
            if not isinstance(rec, dict) or "pose_mm" not in rec or "index" not in rec:
                raise ValueError(f"line {lineno}: not a pose line of posekernels stream (needs "
                                 "index and pose_mm)")
            sid = rec.get("stream", 0)
            if stream is not None and str(sid) != stream:
                continue
            idx = rec["index"]
            if isinstance(idx, bool) or not isinstance(idx, int) or not 0 <= idx < max_frames:
                raise ValueError(f"line {lineno}: index must be an integer in [0, "
                                 f"{max_frames}), got {idx!r}")
            pose = _points(rec["pose_mm"], f"line {lineno}: pose_mm")
            if pose is None:
                raise ValueError(f"line {lineno}: pose_mm is null")
            has_placed = "position_mm" in rec
            placed = (_points(rec["position_mm"], f"line {lineno}: position_mm")
                      if has_placed else None)
            frames = out.setdefault(str(sid), {})
            if idx in frames:
                raise ValueError(f"line {lineno}: stream {sid!r} index {idx} appears twice")
            frames[idx] = (np.asarray(pose, dtype=np.float64),
                           None if placed is None else np.asarray(placed, dtype=np.float64),
                           has_placed)
    return out


def _fill(idx, poses, total: int):
    """(total, 17, 3) poses at indices 0..total-1 from the known (idx, poses), each gap filled
    by linear interpolation (ends held)."""
    import numpy as np

    flat = poses.reshape(len(idx), -1)
    grid = np.arange(total)
    return np.stack([np.interp(grid, idx, flat[:, k]) for k in range(flat.shape[1])],
                    -1).reshape(total, 17, 3)


def run(args) -> int:
    import numpy as np

    from posekernels.data.bvh_writer import save_bvh

    if not (math.isfinite(args.fps) and 0 < args.fps <= 10000):
        _report(f"--fps must be a frame rate in (0, 10000], got {args.fps:g}")
        return 2
    try:
        streams = read_stream_lines(args.input, args.stream, args.max_frames)
    except OSError as exc:
        _report(f"cannot read --input: {exc.strerror or exc}")
        return 2
    except ValueError as exc:
        _report(f"--input {args.input}: {exc}")
        return 2
    if not streams:
        _report(f"--input {args.input}: no poses"
                + (f" of stream {args.stream!r}" if args.stream is not None else ""))
        return 2
    if len(streams) > 1:
        _report(f"--input {args.input} holds {len(streams)} streams "
                f"({', '.join(sorted(streams)[:8])}{', ...' if len(streams) > 8 else ''}); "
                "choose one with --stream")
        return 2
    (sid, frames), = streams.items()
    has_pos = all(f[2] for f in frames.values())
    field = args.field
    if field == "auto":
        field = "position_mm" if has_pos else "pose_mm"
    if field == "position_mm" and not has_pos:
        _report("--field position_mm: the lines have no position_mm (run posekernels stream "
                "with --camera or --hfov)")
        return 2
    use = {i: (f[1] if field == "position_mm" else f[0]) for i, f in frames.items()}
    known = sorted(i for i, v in use.items() if v is not None)
    if not known:
        _report(f"stream {sid!r}: no frame has a {field}")
        return 2
    total = max(frames) + 1
    poses = _fill(np.asarray(known), np.stack([use[i] for i in known]) / 1000.0, total)
    filled = total - len(known)
    try:
        save_bvh(args.output, poses, float(args.fps), frame="camera", units=args.units)
    except OSError as exc:
        _report(f"cannot write --output: {exc.strerror or exc}")
        return 2
    except ValueError as exc:
        _report(str(exc))
        return 2
    if filled:
        _report(f"{filled} of {total} frame(s) missing from stream {sid!r}: interpolated")
    print(f"wrote {args.output}: {total} frames of stream {sid!r} ({field}) at {args.fps:g} "
          f"fps, {args.units}")
    return 0
