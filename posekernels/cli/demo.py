"""``posekernels demo`` (what ``make demo`` runs): stream a motion through the lifter, live.

A built-in procedural walk (:func:`posekernels.stream.motion.synth_walk`; or a BVH file with
``--bvh``) is projected through a camera of the default virtual rig and pushed frame by frame
through a :class:`~posekernels.stream.StreamingLifter` with the default checkpoint. It prints the
per-frame latency (p50 / p99 of ``push``), frames per second, the MPJPE against the ground truth,
the largest difference from the offline :func:`posekernels.lift_sequence`, and saves a PNG of the
2D input next to the lifted 3D pose (matplotlib).

If the default checkpoint is not installed, the demo says so loudly and runs a randomly
initialised model instead: latency and throughput are then real, the MPJPE is meaningless.
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np


def register(sub) -> None:
    p = sub.add_parser("demo", help="stream a built-in motion through the lifter (latency, fps, "
                                    "MPJPE, PNG)")
    p.add_argument("--bvh", default=None, help="a BVH file (CMU layout) instead of the built-in "
                                               "motion")
    p.add_argument("--frames", type=int, default=400, help="frames of built-in motion (default 400)")
    p.add_argument("--fps", type=float, default=50.0, help="frame rate (default 50)")
    p.add_argument("--camera", type=int, default=0, help="rig camera 0-3 (default 0)")
    p.add_argument("--checkpoint", default="default", help="checkpoint file or 'default'")
    p.add_argument("--mode", choices=["centered", "causal"], default=None)
    p.add_argument("--png", default=os.path.join("build", "stream_demo.png"),
                   help="where to save the picture (default build/stream_demo.png)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (default: torch's choice; 1 is steadier on a "
                        "machine shared with other work)")
    p.set_defaults(func=run)


NOTICE = """
##############################################################################
#  NOTICE: the default checkpoint is not installed ({reason}).
#  The demo runs a RANDOMLY INITIALISED GLA-GCN (T=27, C=32) instead: latency and
#  frames per second are real, the MPJPE and the 3D picture are MEANINGLESS.
##############################################################################
"""


def _model(args):
    from posekernels.models import GLAGCN
    from posekernels.stream import load_model
    from posekernels.stream._checkpoint import DefaultModelUnavailable

    try:
        return load_model(args.checkpoint, device=args.device), True
    except DefaultModelUnavailable as exc:
        if args.checkpoint != "default":
            raise
        print(NOTICE.format(reason=str(exc).split(";")[0]), file=sys.stderr, flush=True)
        import torch

        torch.manual_seed(0)
        return GLAGCN(receptive_field=27, channels=32).to(args.device).eval(), False


def _draw(png, kp, pred, gt, frames, skeleton):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(4 * len(frames), 7.5))
    for i, f in enumerate(frames):
        ax = fig.add_subplot(2, len(frames), i + 1)
        for j, p in enumerate(skeleton.parents):
            if p >= 0:
                ax.plot(kp[f, [j, p], 0], kp[f, [j, p], 1], "b-", lw=2)
        ax.scatter(kp[f, :, 0], kp[f, :, 1], s=8, c="k")
        ax.set_aspect("equal")
        ax.invert_yaxis()
        ax.set_title(f"2D input, frame {f}")
        ax3 = fig.add_subplot(2, len(frames), len(frames) + i + 1, projection="3d")
        for pose, style, label in ((gt[f], "0.6", "ground truth"), (pred[f], "r", "lifted")):
            # camera frame (x right, y down, z forward) shown with up = -y
            for j, p in enumerate(skeleton.parents):
                if p >= 0:
                    ax3.plot(pose[[j, p], 0], pose[[j, p], 2], -pose[[j, p], 1], color=style,
                             lw=2, label=label if j == 1 else None)
        ax3.set_xlim(-1, 1), ax3.set_ylim(-1, 1), ax3.set_zlim(-1, 1)
        ax3.set_xlabel("x"), ax3.set_ylabel("z (depth)"), ax3.set_zlabel("up")
        ax3.set_title(f"3D, frame {f}")
        if i == 0:
            ax3.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(png)), exist_ok=True)
    fig.savefig(png, dpi=80)
    plt.close(fig)


def run(args) -> int:
    import torch

    from posekernels import lift_sequence, metrics
    from posekernels.skeletons import get_skeleton
    from posekernels.stream import StreamingLifter
    from posekernels.stream.motion import camera_view, synth_walk

    if args.frames < 1:
        raise SystemExit("--frames must be at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        model, trained = _model(args)
    except (ValueError, OSError) as exc:
        print(f"posekernels demo: {exc}", file=sys.stderr)
        return 2
    if args.bvh:
        from posekernels.data import import_bvh

        world = import_bvh(args.bvh, fps=args.fps).positions
        source = f"BVH {args.bvh}"
    else:
        world = synth_walk(args.frames, args.fps)
        source = f"built-in walk ({args.frames} frames at {args.fps:g} fps)"
    kp, gt, cam = camera_view(world, args.camera)
    try:
        lifter = StreamingLifter(model, mode=args.mode, device=args.device)
    except ValueError as exc:
        print(f"posekernels demo: {exc}", file=sys.stderr)
        return 2
    T = lifter.receptive_field
    print(f"motion: {source}, camera {cam.name}; model: {type(model).__name__} T={T} "
          f"({'trained' if trained else 'RANDOM weights'}), mode {lifter.mode}, "
          f"delay {lifter.latency_frames} frames, device {lifter.device}, "
          f"torch threads {torch.get_num_threads()}")
    for f in range(min(len(kp), T + 3)):  # warm-up, then start over
        lifter.push(kp[f])
    lifter.reset()
    times, outs = [], []
    t_all = time.perf_counter()
    for f in range(len(kp)):
        t0 = time.perf_counter()
        out = lifter.push(kp[f])
        times.append(time.perf_counter() - t0)
        if out is not None:
            outs.append(out)
    t0 = time.perf_counter()
    rest = lifter.flush()
    t_flush = time.perf_counter() - t0
    wall = time.perf_counter() - t_all
    pred = np.concatenate([np.stack(outs)] + [rest]) if outs else rest
    offline = lift_sequence(model, kp)
    ms = np.array(times) * 1e3
    err = metrics.mpjpe(pred, gt)
    perr = metrics.p_mpjpe(pred, gt)
    print(f"frames: {len(kp)}  per-frame latency p50 {np.percentile(ms, 50):.2f} ms, "
          f"p99 {np.percentile(ms, 99):.2f} ms  ->  {len(kp) / wall:.1f} frames/s "
          f"(flush of the last {lifter.latency_frames} frames: {t_flush * 1e3:.1f} ms)")
    print(f"MPJPE {err:.1f} mm, P-MPJPE {perr:.1f} mm vs ground truth"
          + ("" if trained else "  (random weights: meaningless)"))
    print(f"streamed vs offline lift_sequence: max |difference| "
          f"{np.abs(pred - offline).max():.2e} m")
    try:
        n = len(kp)
        _draw(args.png, kp, pred, gt, [n // 5, n // 2, (4 * n) // 5], get_skeleton("h36m17"))
        print(f"saved {args.png}")
    except ImportError:
        print("matplotlib is not installed: no picture (pip install 'posekernels[viz]')")
    return 0
