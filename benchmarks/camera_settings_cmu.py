"""Lifters through camera settings outside the training distribution (CMU subject 09).

    python benchmarks/camera_settings_cmu.py CHECKPOINT [CHECKPOINT ...] [--data out/cmu/data_3d_cmu.npz]

Each setting draws 4 static cameras per clip with the evaluation seed from a
:class:`posekernels.data.random_cameras.CameraDistribution` (looking at the clip's mean root,
as the standard evaluation cameras do), adds detector-like 2D noise and lifts with test-time
flip; prints MPJPE / P-MPJPE (mm) per setting and checkpoint ("default:centered" and
"default:causal" name the shipped lifters). The data file is the one benchmarks/train_cmu.py
converts.
"""
from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from posekernels.data.random_cameras import (EVALUATION_CAMERAS, EVALUATION_SEED,  # noqa: E402
                                             CameraDistribution, evaluation_cameras)

SETTINGS = {
    "standard (the evaluation cameras)": EVALUATION_CAMERAS,
    "far (9-15 m)": CameraDistribution(subject_offset=0.0, target_jitter=0.0,
                                       distance=(9.0, 15.0)),
    "telephoto (hfov 20-35 deg, 6-12 m)": CameraDistribution(
        subject_offset=0.0, target_jitter=0.0, hfov_deg=(20.0, 35.0), distance=(6.0, 12.0)),
    "wide (hfov 90-110 deg)": CameraDistribution(subject_offset=0.0, target_jitter=0.0,
                                                 hfov_deg=(90.0, 110.0)),
    "high (3.5-5 m up, 2-5 m away)": CameraDistribution(
        subject_offset=0.0, target_jitter=0.0, height=(3.5, 5.0), distance=(2.0, 5.0)),
    "floor (0-0.3 m up)": CameraDistribution(subject_offset=0.0, target_jitter=0.0,
                                             height=(0.0, 0.3)),
    "barrel distortion (k1 -0.3..-0.1)": CameraDistribution(
        subject_offset=0.0, target_jitter=0.0, k1=(-0.3, -0.1), k2=(0.0, 0.05)),
    "tilted (roll up to +-25 deg)": CameraDistribution(
        subject_offset=0.0, target_jitter=0.0, roll_deg=(-25.0, 25.0)),
}


def main(argv=None) -> int:
    from posekernels.checkpoints import checkpoint_path, load_checkpoint
    from posekernels.data import DetectorNoise, load_positions_3d, project_sequences
    from posekernels.evaluation import evaluate_sequences, headline

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--data", default=os.path.join(ROOT, "out", "cmu", "data_3d_cmu.npz"))
    p.add_argument("--subjects", nargs="+", default=["09"])
    p.add_argument("--settings", default=None,
                   help="comma-separated first words of the settings to run (default: all), "
                        "e.g. standard,high,floor")
    args = p.parse_args(argv)
    settings = SETTINGS
    if args.settings:
        wanted = [w for w in args.settings.split(",") if w]
        settings = {n: d for n, d in SETTINGS.items() if n.split()[0] in wanted}
        known = {n.split()[0] for n in SETTINGS}
        if not settings or set(wanted) - known:
            p.error(f"--settings: expected first words among {sorted(known)}, got {wanted}")
    models = {c: load_checkpoint(checkpoint_path(c)) for c in args.checkpoints}
    pos = load_positions_3d(args.data)
    for name, dist in settings.items():
        def clip_cameras(subject, action, clip, dist=dist):
            return evaluation_cameras(clip, 4, seed=EVALUATION_SEED, key=f"{subject}/{action}",
                                      dist=dist)
        seqs = project_sequences(pos, clip_cameras, recenter_mode="none",
                                 noise=DetectorNoise(seed=0), subjects=args.subjects)
        for c, model in models.items():
            h = headline(evaluate_sequences(model, seqs, flip_tta=True).summary())
            print(f"{name:36s} {c}: {h['mpjpe']:.1f} / {h['p_mpjpe']:.1f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
