"""What a new track costs a lifter: the same frames lifted with and without their history.

    python benchmarks/track_start_cmu.py CHECKPOINT [CHECKPOINT ...] [--data out/cmu/data_3d_cmu.npz]

A tracker that picks a person up mid-motion starts a stream whose first windows are mostly
padding (the first frame repeated, as :func:`posekernels.lift_sequence` and a fresh
:class:`posekernels.stream.StreamingLifter` stream pad them). For every clip of the subjects
(seen through 4 random evaluation cameras with detector noise, test-time flip), frames
``[cut, cut + frames)`` are lifted twice: inside the whole clip (with ``cut`` frames of history)
and as the first frames of a track that starts at ``cut``. Prints the mean MPJPE (mm) of both
and of the whole clips (every frame, and the clips' first ``frames`` frames), per checkpoint
("default:centered" and "default:causal" name the shipped lifters). The data file is the one
benchmarks/train_cmu.py converts.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def root_relative_error_mm(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(F,) mean per-joint error in mm of root-relative (F, V, 3) poses (root = joint 0)."""
    pred = pred - pred[:, :1]
    target = target - target[:, :1]
    return np.linalg.norm(pred - target, axis=-1).mean(-1) * 1000.0


def main(argv=None) -> int:
    import torch

    from posekernels.checkpoints import checkpoint_path, load_checkpoint
    from posekernels.data import DetectorNoise, load_positions_3d, project_sequences
    from posekernels.data.random_cameras import EVALUATION_SEED, evaluation_cameras
    from posekernels.inference import lift_sequence

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--data", default=os.path.join(ROOT, "out", "cmu", "data_3d_cmu.npz"))
    p.add_argument("--subjects", nargs="+", default=["09"])
    p.add_argument("--cut", type=int, default=20, help="frames of history before the track")
    p.add_argument("--frames", type=int, default=10, help="frames compared after the cut")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    if args.cut < 1 or args.frames < 1:
        p.error("--cut and --frames must be at least 1")
    torch.set_num_threads(args.threads)

    pos = load_positions_3d(args.data)

    def clip_cameras(subject, action, clip):
        return evaluation_cameras(clip, 4, seed=EVALUATION_SEED, key=f"{subject}/{action}")

    seqs = project_sequences(pos, clip_cameras, recenter_mode="none",
                             noise=DetectorNoise(seed=0), subjects=args.subjects)
    seqs = [s for s in seqs if len(s.positions_3d) >= args.cut + args.frames]
    if not seqs:
        p.error(f"no clip has {args.cut + args.frames} frames")
    for c in args.checkpoints:
        model = load_checkpoint(checkpoint_path(c))
        history, fresh, first, every = [], [], [], []
        for s in seqs:
            x = s.normalized_2d().astype(np.float32)
            t = np.asarray(s.positions_3d, dtype=np.float64)
            whole = root_relative_error_mm(lift_sequence(model, x, flip_tta=True), t)
            track = root_relative_error_mm(lift_sequence(model, x[args.cut:], flip_tta=True),
                                           t[args.cut:])
            history.append(whole[args.cut:args.cut + args.frames])
            fresh.append(track[:args.frames])
            first.append(whole[:args.frames])
            every.append(whole)
        mean = lambda parts: float(np.concatenate(parts).mean())  # noqa: E731
        print(f"{c}: frames {args.cut}-{args.cut + args.frames - 1} with {args.cut} frames of "
              f"history {mean(history):.1f} mm, as a new track's first {args.frames} "
              f"{mean(fresh):.1f} mm; whole clips {mean(every):.1f} mm, their first "
              f"{args.frames} frames {mean(first):.1f} mm ({len(seqs)} clips x cameras)",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
