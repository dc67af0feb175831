"""``posekernels stream``: live lifting of 2D keypoints given as JSON lines, 3D poses out as JSON lines.

Input, one JSON object per line (``--input FILE`` or ``-`` for standard input)::

    {"keypoints": [[x, y], ...], "scores": [s, ...], "stream": "cam0", "frame": 17}
    {"keypoints": [[x, y, s], ...]}                 # a third value per point is its score
    {"keypoints": [x0, y0, s0, x1, y1, s1, ...]}    # flat lists (2 or 3 values per point)
    {"stream": "cam0", "end": true}                 # the stream ended: flush its last poses

``keypoints`` are in the ``--format`` layout (``coco17``: RTMPose / MMPose / YOLO-pose,
``openpose18``, ``body25``, ``blazepose33``, ``h36m17``) in pixels of a ``--width`` x
``--height`` image (``--units unit`` for MediaPipe's fractions of the image size). ``scores``,
``stream`` (any JSON string or number, default 0) and ``frame`` (echoed back) are optional.
Missing points may be ``null``/NaN or have a low score: the lifter holds their last value.

Output, one JSON object per lifted frame (``--output FILE`` or ``-``)::

    {"stream": "cam0", "frame": 17, "index": 17, "pose_mm": [[x, y, z], ...],
     "latency_ms": 3.1, "age_ms": 2045.2}

``pose_mm``: the h36m17 pose in millimetres, root-relative, camera frame (x right, y down,
z forward); ``index``: the frame's position in its stream; ``latency_ms``: processing time from
reading the line that completed the pose's window to writing the pose; ``age_ms``: time since
the pose's own frame was read (adds the centred window's (T - 1) / 2 frames of delay). At the
end of the input every stream is flushed. Malformed lines are reported on standard error (with
their line number) and skipped; the command exits 1 if there were any.
"""
from __future__ import annotations

import collections
import json
import math
import sys
import time


def register(sub) -> None:
    p = sub.add_parser("stream", help="lift JSON-lines 2D keypoints to 3D poses in real time")
    p.add_argument("--input", required=True, help="JSON lines file, or - for standard input")
    p.add_argument("--output", default="-", help="JSON lines output file, or - (default)")
    p.add_argument("--format", required=True,
                   choices=["coco17", "openpose18", "body25", "blazepose33", "h36m17"],
                   help="keypoint layout of the input")
    p.add_argument("--width", type=float, required=True, help="image width in pixels")
    p.add_argument("--height", type=float, required=True, help="image height in pixels")
    p.add_argument("--units", default="px", choices=["px", "unit", "normalized"],
                   help="input coordinates: pixels (default), fractions of the image size "
                        "(MediaPipe), or already normalised")
    p.add_argument("--checkpoint", default="default",
                   help="checkpoint file, or 'default' for the shipped model (default)")
    p.add_argument("--mode", choices=["centered", "causal"], default=None,
                   help="window mode; must match the model (default: the model's own)")
    p.add_argument("--min-score", type=float, default=0.3,
                   help="points with a lower score count as missing (default 0.3)")
    p.add_argument("--max-streams", type=int, default=8,
                   help="most distinct stream ids (default 8)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (default: torch's choice; 1 is steadier on a "
                        "machine shared with other work)")
    p.set_defaults(func=run)


def _parse_points(value, joints: int, what: str):
    """-> (list of [x, y] floats, list of scores or None); NaN for null points."""
    if not isinstance(value, list):
        raise ValueError(f"{what} must be a list")
    if value and not isinstance(value[0], list):  # flat list
        for width in (2, 3):
            if len(value) == joints * width:
                value = [value[i:i + width] for i in range(0, len(value), width)]
                break
        else:
            raise ValueError(f"{what}: a flat list needs {joints * 2} or {joints * 3} numbers, "
                             f"got {len(value)}")
    if len(value) != joints:
        raise ValueError(f"{what}: expected {joints} points for this format, got {len(value)}")
    pts, scores = [], []
    widths = {len(p) if isinstance(p, list) else -1 for p in value}
    if len(widths) != 1 or widths.pop() not in (2, 3):
        raise ValueError(f"{what}: every point must be [x, y] or [x, y, score]")
    for p in value:
        nums = [math.nan if v is None else float(v) for v in p]
        pts.append(nums[:2])
        scores.append(nums[2] if len(nums) == 3 else None)
    return pts, (scores if scores[0] is not None else None)


def run(args) -> int:
    import numpy as np

    from posekernels import adapters
    from posekernels.stream import StreamingLifter, load_model
    from posekernels.stream._checkpoint import DefaultModelUnavailable

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.max_streams < 1:
        print("posekernels stream: --max-streams must be at least 1", file=sys.stderr)
        return 2
    if args.units != "normalized" and not (args.width > 0 and args.height > 0):
        print("posekernels stream: --width and --height must be positive", file=sys.stderr)
        return 2
    try:
        model = load_model(args.checkpoint, device=args.device)
    except (DefaultModelUnavailable, ValueError, OSError) as exc:
        print(f"posekernels stream: {exc}", file=sys.stderr)
        return 2
    joints = adapters.FORMATS[args.format]
    try:
        lifter = StreamingLifter(model, num_streams=args.max_streams, mode=args.mode,
                                 device=args.device, min_score=args.min_score)
    except ValueError as exc:
        print(f"posekernels stream: {exc}", file=sys.stderr)
        return 2
    if lifter.num_joints != 17:
        print(f"posekernels stream: the model has {lifter.num_joints} joints; the adapters "
              "produce h36m17 (17)", file=sys.stderr)
        return 2

    src = sys.stdin if args.input == "-" else open(args.input, encoding="utf-8")
    dst = sys.stdout if args.output == "-" else open(args.output, "w", encoding="utf-8")
    slots: dict = {}                    # stream id -> lifter stream index
    ids: dict = {}                      # lifter stream index -> stream id
    pending = collections.defaultdict(collections.deque)  # index -> (frame id, read time)
    bad = 0

    def emit(index: int, frame_index: int, pose, started: float) -> None:
        frame_id, read_at = pending[index].popleft()
        now = time.perf_counter()
        rec = {"stream": ids[index], "frame": frame_id, "index": int(frame_index),
               "pose_mm": np.round(np.asarray(pose, dtype=np.float64) * 1000.0, 2).tolist(),
               "latency_ms": round((now - started) * 1e3, 3),
               "age_ms": round((now - read_at) * 1e3, 3)}
        dst.write(json.dumps(rec) + "\n")

    def flush(index: int) -> None:
        started = time.perf_counter()
        done = int(lifter.counts[index]) - len(pending[index])
        for k, pose in enumerate(lifter.flush(index)):
            emit(index, done + k, pose, started)
        pending[index].clear()

    try:
        for lineno, line in enumerate(src, 1):
            read_at = time.perf_counter()
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
                if not isinstance(rec, dict):
                    raise ValueError("each line must be a JSON object")
                sid = rec.get("stream", 0)
                if not isinstance(sid, (str, int)) or isinstance(sid, bool):
                    raise ValueError("stream must be a string or an integer")
                if rec.get("end"):
                    if sid in slots:
                        flush(slots[sid])
                    continue
                if "keypoints" not in rec:
                    raise ValueError("missing 'keypoints'")
                pts, inline_scores = _parse_points(rec["keypoints"], joints, "keypoints")
                scores = rec.get("scores", inline_scores)
                if scores is not None:
                    if not isinstance(scores, list) or len(scores) != joints:
                        raise ValueError(f"scores must be a list of {joints} numbers")
                    scores = [math.nan if s is None else float(s) for s in scores]
                if sid not in slots:
                    if len(slots) >= args.max_streams:
                        raise ValueError(f"more than --max-streams={args.max_streams} "
                                         "distinct streams")
                    slots[sid] = len(slots)
                    ids[slots[sid]] = sid
            except (ValueError, TypeError) as exc:
                bad += 1
                print(f"posekernels stream: line {lineno}: {exc}; skipped", file=sys.stderr)
                continue
            index = slots[sid]
            kp, sc = adapters.to_h36m17(np.asarray(pts, dtype=np.float64), scores,
                                        fmt=args.format, width=args.width, height=args.height,
                                        units=args.units)
            pending[index].append((rec.get("frame", int(lifter.counts[index])), read_at))
            pose = lifter.push(kp, sc, streams=index)
            if pose is not None:
                emit(index, int(lifter.last_frame_index[0]), pose, read_at)
            if args.output == "-":
                dst.flush()
        for index in list(ids):
            flush(index)
    finally:
        if src is not sys.stdin:
            src.close()
        if dst is not sys.stdout:
            dst.close()
        else:
            dst.flush()
    if bad:
        print(f"posekernels stream: {bad} malformed line(s) skipped", file=sys.stderr)
        return 1
    return 0
