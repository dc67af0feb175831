"""Choose and check the One Euro smoothing of the shipped lifters on CMU motion.

The choice (``--tune``): the least jitter (MPJVE) among the settings that keep MPJPE within 1 %
of the unsmoothed lifter's, on training motion.

    python benchmarks/smoothing_cmu.py --tune            # grid on subject 02 (training motion)
    python benchmarks/smoothing_cmu.py --check           # the defaults on subject 09 (validation)

Each clip is seen through random evaluation cameras with detector noise (as ``posekernels
evaluate --cameras random --detector-noise``), lifted as a live stream would be (no test-time
flip), then smoothed with :func:`posekernels.stream.one_euro`; MPJPE (mm) and MPJVE (mm per
frame) over all clips, mean over actions. ``--fps`` resamples the motion to a camera's rate and
lifts with the windows at the model's rate.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def lifted(mode: str, subject: str, cmu: str, fps: float, cameras: int):
    """[(prediction, target, action)] for every clip of ``subject``."""
    import numpy as np

    from posekernels import lift_sequence
    from posekernels.checkpoints import load_model
    from posekernels.evaluation import sequences_from_bvh

    model = load_model("default", mode=mode)
    seqs = sequences_from_bvh([os.path.join(cmu, subject)], fps=fps, cameras="random",
                              num_cameras=cameras, detector_noise=True)
    out = []
    for s in seqs:
        pred = lift_sequence(model, s.normalized_2d().astype(np.float32),
                             fps=None if fps == model.frame_rate else fps)
        out.append((pred.astype(np.float64), np.asarray(s.positions_3d, np.float64), s.action))
    return out


def score(items, config, fps: float) -> dict:
    from posekernels.metrics import MetricAccumulator
    from posekernels.stream import one_euro

    acc = MetricAccumulator(("mpjpe", "mpjve"), root=0)
    for pred, target, action in items:
        acc.add("S", action, one_euro(pred, config, fps=fps), target)
    s = acc.summary()["mean_over_actions"]
    return {"mpjpe": round(float(s["mpjpe"]), 2), "mpjve": round(float(s["mpjve"]), 2)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cmu", default=os.path.join(ROOT, "..", "shared", "data", "cmu-mocap"))
    p.add_argument("--tune", action="store_true", help="grid search on --tune-subject")
    p.add_argument("--check", action="store_true", help="defaults on --check-subject")
    p.add_argument("--tune-subject", default="02")
    p.add_argument("--check-subject", default="09")
    p.add_argument("--modes", default="causal,centered")
    p.add_argument("--fps", type=float, default=50.0)
    p.add_argument("--cameras", type=int, default=2, help="random cameras per clip")
    args = p.parse_args(argv)
    from posekernels.stream import SMOOTHING_DEFAULTS

    for mode in args.modes.split(","):
        if args.tune:
            items = lifted(mode, args.tune_subject, args.cmu, args.fps, args.cameras)
            rows = [{"config": None, **score(items, None, args.fps)}]
            for mc, beta, dc in itertools.product((1.0, 2.0, 4.0, 8.0), (4.0, 16.0, 32.0, 64.0),
                                                  (1.0, 4.0)):
                cfg = {"min_cutoff": mc, "beta": beta, "d_cutoff": dc}
                rows.append({"config": cfg, **score(items, cfg, args.fps)})
            # the choice: least jitter (MPJVE) among those within 1 % of the unsmoothed MPJPE
            bound = rows[0]["mpjpe"] * 1.01
            ok = sorted((r for r in rows[1:] if r["mpjpe"] <= bound), key=lambda r: r["mpjve"])
            print(json.dumps({"mode": mode, "subject": args.tune_subject, "fps": args.fps,
                              "none": rows[0], "best_within_1pct": ok[:5],
                              "least_mpjpe": sorted(rows[1:], key=lambda r: r["mpjpe"])[:3]}))
        if args.check:
            items = lifted(mode, args.check_subject, args.cmu, args.fps, args.cameras)
            print(json.dumps({"mode": mode, "subject": args.check_subject, "fps": args.fps,
                              "none": score(items, None, args.fps),
                              "defaults": score(items, SMOOTHING_DEFAULTS, args.fps),
                              "config": SMOOTHING_DEFAULTS.to_dict()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
