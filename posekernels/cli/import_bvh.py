"""``posekernels import-bvh``: convert BVH motion capture to a VideoPose3D 3D npz.

    posekernels import-bvh PATH... --out data_3d_<name>.npz [--fps 50] [--subject NAME]

Each PATH is a BVH file or a folder searched recursively for ``*.bvh``. The output holds
``positions_3d[subject][action]`` (frames, 17, 3) in metres (Human3.6M joint order, Z-up world;
see :mod:`posekernels.data.bvh`), with subject = the file's folder name (the CMU subject, e.g.
"01") unless ``--subject`` is given, and action = the file stem ("01_01"). Defaults suit the CMU
files (unit 0.056444 m, Y up, CMU joint table). Every file is imported before anything is
written; on any error nothing is written and the exit status is 1. ``--report`` also writes a
JSON summary with the dropped source frames and the flagged (glitch) output frames.
"""
from __future__ import annotations

import json
import os
import sys


def register(sub) -> None:
    p = sub.add_parser(
        "import-bvh", help="convert BVH files to a 3D npz (Human3.6M 17 joints)",
        description="Convert BVH motion capture (default: the CMU conventions) to a VideoPose3D "
                    "data_3d npz: positions_3d[subject][action] (frames, 17, 3) in metres, Z-up "
                    "world, Human3.6M joint order; subject = the file's folder (or --subject), "
                    "action = the file stem. Nothing is written if any file fails.")
    p.add_argument("paths", nargs="+", metavar="PATH", help="BVH files or folders")
    p.add_argument("--out", required=True, help="output file, e.g. data_3d_cmu.npz")
    p.add_argument("--fps", type=float, default=50.0,
                   help="output frame rate (default 50; 0 keeps the source rate)")
    p.add_argument("--subject", default=None,
                   help="subject name for every file (default: each file's folder name)")
    p.add_argument("--scale", type=float, default=None,
                   help="metres per BVH unit (default: the CMU unit, 0.056444)")
    p.add_argument("--up", choices=("y", "z"), default="y", help="up axis of the BVH (default y)")
    p.add_argument("--tpose", choices=("auto", "first", "none"), default="auto",
                   help="drop the leading T-pose frame (default auto-detect)")
    p.add_argument("--max-speed", type=float, default=10.0,
                   help="velocity-check limit for glitch flags, m/s (default 10)")
    p.add_argument("--repair-glitches", action="store_true",
                   help="replace isolated one-frame spikes by the neighbours' midpoint")
    p.add_argument("--joint-table", default=None,
                   help="JSON list of 17 entries (BVH joint name, or list of names to average; "
                        "end sites are '<joint>_End'); default: the CMU table")
    p.add_argument("--report", default=None, help="also write a JSON summary here")
    p.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    p.set_defaults(func=run)


def _load_table(path: str):
    try:
        with open(path, encoding="utf-8") as f:
            table = json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot read joint table ({exc})") from None
    ok = isinstance(table, list) and len(table) == 17 and all(
        isinstance(e, str) or (isinstance(e, list) and e and all(isinstance(n, str) for n in e))
        for e in table)
    if not ok:
        raise ValueError(f"{path}: joint table must be a JSON list of 17 entries, each a joint "
                         "name or a non-empty list of names")
    return table


def run(args) -> int:
    from posekernels.data import bvh as bvh_mod
    from posekernels.data.formats import save_positions_3d
    from posekernels.data.io import atomic_write_text

    try:
        out_dir = os.path.dirname(os.path.abspath(args.out))
        if not os.path.isdir(out_dir):
            raise ValueError(f"{args.out}: output folder does not exist")
        if args.report and not os.path.isdir(os.path.dirname(os.path.abspath(args.report))):
            raise ValueError(f"{args.report}: report folder does not exist")
        if args.fps < 0:
            raise ValueError(f"--fps must be >= 0, got {args.fps}")
        table = _load_table(args.joint_table) if args.joint_table else bvh_mod.CMU_H36M17_TABLE
        scale = bvh_mod.CMU_UNIT_METRES if args.scale is None else args.scale
        files = bvh_mod.find_bvh_files(args.paths)
        positions: dict[str, dict[str, object]] = {}
        report: dict[str, dict[str, dict]] = {}
        for path in files:
            subject, action = bvh_mod.bvh_sequence_name(path, args.subject)
            if action in positions.get(subject, {}):
                raise ValueError(f"{path}: duplicate sequence {subject}/{action}")
            res = bvh_mod.import_bvh(path, joint_table=table, scale=scale, up_axis=args.up,
                                     fps=args.fps or None, tpose=args.tpose,
                                     max_speed=args.max_speed,
                                     repair_glitches=args.repair_glitches)
            positions.setdefault(subject, {})[action] = res.positions
            report.setdefault(subject, {})[action] = {
                "file": os.path.basename(path), "frames": int(res.positions.shape[0]),
                "fps": res.fps, "source_fps": res.source_fps,
                "dropped_source_frames": res.dropped.tolist(),
                "glitch_source_frames": res.glitches.tolist(),
                "flagged_frames": res.flagged.tolist(), "repaired": res.repaired,
            }
            if not args.quiet:
                msg = (f"{subject}/{action}: {res.positions.shape[0]} frames at {res.fps:g} Hz "
                       f"(dropped {res.dropped.size} source frame(s))")
                if res.glitches.size:
                    msg += f", {res.glitches.size} glitch(es), flagged frames " + \
                        ",".join(str(i) for i in res.flagged[:10]) + \
                        (" ..." if res.flagged.size > 10 else "")
                print(msg)
        save_positions_3d(args.out, positions)
        if args.report:
            atomic_write_text(args.report, json.dumps(report, indent=1))
    except ValueError as exc:
        print(f"posekernels import-bvh: error: {exc}", file=sys.stderr)
        return 1
    if not args.quiet:
        n = sum(len(a) for a in positions.values())
        frames = sum(v.shape[0] for a in positions.values() for v in a.values())
        print(f"wrote {args.out}: {n} sequence(s), {frames} frames, "
              f"{len(positions)} subject(s)")
    return 0
