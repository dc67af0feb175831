"""``posekernels demo`` (what ``make demo`` runs): stream a motion through the lifters, live.

A built-in procedural walk (:func:`posekernels.stream.motion.synth_walk`; or a BVH file with
``--bvh``) is seen through an ordinary camera unlike the training rig
(:func:`posekernels.stream.motion.user_camera`: 1920 x 1080, focal 1400 px, 3.5 m away, 2.2 m
high, looking down; ``--camera 0..3`` takes a camera of the default rig instead) and pushed frame
by frame through a :class:`~posekernels.stream.StreamingLifter`. With ``--checkpoint default``
and no ``--mode`` both shipped lifters run, the causal one and the centred one; otherwise the one
model given. For each it prints the per-frame latency (p50 / p99 of ``push``), frames per
second, the delay (frames and milliseconds at the motion's frame rate), MPJPE and P-MPJPE against
the ground truth and the largest difference from the offline :func:`posekernels.lift_sequence`,
and saves a PNG (the 2D input at three instants above each model's lifted 3D pose over the
ground truth) and an animated GIF of the whole clip (matplotlib).

If the default checkpoint is not installed, the demo says so loudly and runs a randomly
initialised model instead: latency and throughput are then real, the MPJPE is meaningless.
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np

from ._threads import add_threads_argument, steady_threads


def register(sub) -> None:
    p = sub.add_parser("demo", help="stream a built-in motion through the lifters (latency, "
                                    "delay, MPJPE, PNG, GIF)")
    p.add_argument("--bvh", default=None, help="a BVH file (CMU layout) instead of the built-in "
                                               "motion")
    p.add_argument("--frames", type=int, default=400, help="frames of built-in motion (default 400)")
    p.add_argument("--fps", type=float, default=50.0, help="frame rate (default 50)")
    p.add_argument("--camera", default="user",
                   help="'user' (an ordinary camera unlike the training rig, the default) or a "
                        "default-rig camera 0-3")
    p.add_argument("--checkpoint", default="default", help="checkpoint file or 'default'")
    p.add_argument("--mode", choices=["centered", "causal"], default=None,
                   help="with --checkpoint default: only this shipped model (default: both)")
    p.add_argument("--png", default=os.path.join("build", "stream_demo.png"),
                   help="where to save the picture (default build/stream_demo.png; '' for "
                        "none)")
    p.add_argument("--gif", default=os.path.join("build", "stream_demo.gif"),
                   help="where to save the animation of the whole clip (default "
                        "build/stream_demo.gif; '' for none)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", choices=["float32", "bf16"], default="float32",
                   help="bf16: the lifters' weight products in bfloat16 (CPU; see README)")
    add_threads_argument(p)
    p.set_defaults(func=run)


NOTICE = """
##############################################################################
#  NOTICE: the default checkpoint is not installed ({reason}).
#  The demo runs a RANDOMLY INITIALISED GLA-GCN (T=27, C=32) instead: latency and
#  frames per second are real, the MPJPE and the 3D picture are MEANINGLESS.
##############################################################################
"""


def _models(args):
    """[(label, model, trained)] for the run (see the module docstring)."""
    from posekernels.checkpoints import DefaultModelUnavailable, load_model
    from posekernels.models import GLAGCN

    if args.checkpoint != "default":
        return [("model", load_model(args.checkpoint, device=args.device), True)]
    out = []
    for mode in ([args.mode] if args.mode else ["causal", "centered"]):
        try:
            out.append((mode, load_model("default", device=args.device, mode=mode), True))
        except DefaultModelUnavailable as exc:
            print(NOTICE.format(reason=str(exc).split(";")[0]), file=sys.stderr, flush=True)
            import torch

            torch.manual_seed(0)
            out.append((mode, GLAGCN(receptive_field=27, channels=32, causal=mode == "causal")
                        .to(args.device).eval(), False))
    return out


_COLOURS = {"causal": "tab:blue", "centered": "tab:red", "model": "tab:red"}


def _plot_2d(ax, kp, skeleton):
    for j, p in enumerate(skeleton.parents):
        if p >= 0:
            ax.plot(kp[[j, p], 0], kp[[j, p], 1], "-", color="tab:green", lw=2.5)
    ax.scatter(kp[:, 0], kp[:, 1], s=10, c="k")


def _plot_3d(ax, pose, gt, skeleton, colour, label):
    # camera frame (x right, y down, z forward) shown with up = -y
    for p3, col, lab, lw in ((gt, "0.55", "ground truth", 2.0), (pose, colour, label, 2.5)):
        for j, p in enumerate(skeleton.parents):
            if p >= 0:
                ax.plot(p3[[j, p], 0], p3[[j, p], 2], -p3[[j, p], 1], color=col, lw=lw,
                        label=lab if j == 1 else None)
    ax.set_xlim(-0.55, 0.55), ax.set_ylim(-0.55, 0.55), ax.set_zlim(-0.95, 0.95)
    ax.set_box_aspect((1.1, 1.1, 1.9), zoom=1.25)
    ax.view_init(elev=12, azim=-70)
    ax.set_xlabel("x (m)"), ax.set_ylabel("depth (m)"), ax.set_zlabel("up (m)")


def _frame_bounds(kp):
    lo, hi = kp.reshape(-1, 2).min(0), kp.reshape(-1, 2).max(0)
    pad = 0.1 * float(max(hi - lo))
    return lo - pad, hi + pad


def _draw(png, kp, results, gt, frames, skeleton):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = 1 + len(results)
    fig = plt.figure(figsize=(5.0 * len(frames), 6.0 * rows))
    lo, hi = _frame_bounds(kp)
    for i, f in enumerate(frames):
        ax = fig.add_subplot(rows, len(frames), i + 1)
        _plot_2d(ax, kp[f], skeleton)
        ax.set_xlim(lo[0], hi[0]), ax.set_ylim(hi[1], lo[1])
        ax.set_aspect("equal")
        ax.set_title(f"2D input (normalised), frame {f}")
        for r, res in enumerate(results):
            ax3 = fig.add_subplot(rows, len(frames), (r + 1) * len(frames) + i + 1,
                                  projection="3d")
            _plot_3d(ax3, res["pred"][f], gt[f], skeleton, _COLOURS[res["label"]],
                     res["label"])
            err = float(np.linalg.norm(res["pred"][f] - gt[f], axis=-1).mean() * 1000)
            ax3.set_title(f"{res['label']} lifter, frame {f}: {err:.0f} mm")
            if i == 0:
                ax3.legend(loc="upper left", fontsize=9)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(png)), exist_ok=True)
    fig.savefig(png, dpi=90)
    plt.close(fig)


def _animate(gif, kp, results, gt, fps, skeleton, max_frames=120):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.animation import FuncAnimation, PillowWriter

    step = max(1, -(-len(kp) // max_frames))
    frames = list(range(0, len(kp), step))
    cols = 1 + len(results)
    fig = plt.figure(figsize=(4.5 * cols, 4.8))
    lo, hi = _frame_bounds(kp)
    ax2 = fig.add_subplot(1, cols, 1)
    axes = [fig.add_subplot(1, cols, c + 2, projection="3d") for c in range(len(results))]

    def update(f):
        ax2.cla()
        _plot_2d(ax2, kp[f], skeleton)
        ax2.set_xlim(lo[0], hi[0]), ax2.set_ylim(hi[1], lo[1]), ax2.set_aspect("equal")
        ax2.set_title(f"2D input, frame {f}")
        for ax, res in zip(axes, results):
            ax.cla()
            _plot_3d(ax, res["pred"][f], gt[f], skeleton, _COLOURS[res["label"]], res["label"])
            ax.set_title(f"{res['label']} lifter")
        return []

    anim = FuncAnimation(fig, update, frames=frames, blit=False)
    os.makedirs(os.path.dirname(os.path.abspath(gif)), exist_ok=True)
    anim.save(gif, writer=PillowWriter(fps=max(1.0, fps / step)), dpi=60)
    plt.close(fig)


def _bone_sum(poses) -> float:
    """Mean total bone length of h36m17 poses (F, 17, 3): the body's size."""
    from posekernels.skeletons import get_skeleton

    return float(sum(np.linalg.norm(poses[:, j] - poses[:, q], axis=-1).mean()
                     for j, q in get_skeleton("h36m17").bones()))


def _rate(model, args) -> dict:
    """A trained model that records its frame rate samples the motion at that rate (fps=...);
    a model that does not takes the frames as they are."""
    return {"fps": args.fps} if getattr(model, "frame_rate", None) is not None else {}


def _precision(args) -> str:
    return getattr(args, "precision", "float32")


def _stream(model, kp, args):
    """Push every frame through a lifter; the poses, latencies and the lifter."""
    from posekernels.stream import StreamingLifter

    mode = args.mode if args.checkpoint != "default" else None
    lifter = StreamingLifter(model, mode=mode, device=args.device, precision=_precision(args),
                             **_rate(model, args))
    T = lifter.receptive_field
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
    return pred, np.array(times) * 1e3, wall, t_flush, lifter


def run(args) -> int:
    import torch

    from posekernels import lift_sequence, metrics
    from posekernels.inference import place_in_camera
    from posekernels.skeletons import get_skeleton
    from posekernels.stream.motion import camera_view, synth_walk

    if args.frames < 1:
        raise SystemExit("--frames must be at least 1")
    camera = args.camera
    if camera != "user":
        if camera not in ("0", "1", "2", "3"):
            print(f"posekernels demo: --camera must be 'user' or 0-3, got {camera!r}",
                  file=sys.stderr)
            return 2
        camera = int(camera)
    steady_threads(args.threads, lambda msg: print(f"posekernels demo: {msg}", file=sys.stderr),
                   args.device)
    try:
        models = _models(args)
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
    kp, gt, cam, root = camera_view(world, camera, with_root=True)
    uv = cam.denormalize(kp.astype(np.float64))
    print(f"motion: {source}; camera {cam.name} ({cam.width}x{cam.height}, focal "
          f"{cam.focal_length[0]:.0f} px); torch threads {torch.get_num_threads()}")
    results = []
    for label, model, trained in models:
        try:
            pred, ms, wall, t_flush, lifter = _stream(model, kp, args)
        except ValueError as exc:
            print(f"posekernels demo: {exc}", file=sys.stderr)
            return 2
        offline = lift_sequence(model, kp, precision=_precision(args), **_rate(model, args))
        delay = lifter.latency_frames
        print(f"[{label}] {type(model).__name__} T={lifter.receptive_field} "
              f"({'trained' if trained else 'RANDOM weights'}), mode {lifter.mode}, delay "
              f"{delay} frames = {delay / args.fps * 1e3:.0f} ms at {args.fps:g} fps, device "
              f"{lifter.device}, precision {lifter.precision}")
        print(f"[{label}] frames: {len(kp)}  per-frame latency p50 {np.percentile(ms, 50):.2f} "
              f"ms, p99 {np.percentile(ms, 99):.2f} ms  ->  {len(kp) / wall:.1f} frames/s "
              f"(flush of the last {delay} frames: {t_flush * 1e3:.1f} ms)")
        print(f"[{label}] MPJPE {metrics.mpjpe(pred, gt):.1f} mm, P-MPJPE "
              f"{metrics.p_mpjpe(pred, gt):.1f} mm vs ground truth"
              + ("" if trained else "  (random weights: meaningless)"))
        placed = place_in_camera(pred, uv, cam)[:, 0]
        err = np.linalg.norm(placed - root, axis=-1)
        size = _bone_sum(pred) / _bone_sum(gt)
        share = 100 * np.nanmean(err / root[:, 2])
        print(f"[{label}] placed in the camera (place_in_camera): root "
              f"{1e3 * np.nanmean(err):.0f} mm from the truth on average ({share:.1f} % of the "
              f"{root[:, 2].mean():.1f} m distance; the lifted body is {size:.2f}x the true "
              "one's size, and the distance scales with it)"
              + ("" if trained else "  (meaningless)"))
        print(f"[{label}] streamed vs offline lift_sequence: max |difference| "
              f"{np.abs(pred - offline).max():.2e} m")
        results.append({"label": label, "pred": pred})
    skeleton = get_skeleton("h36m17")
    try:
        n = len(kp)
        if args.png:
            _draw(args.png, kp, results, gt, [n // 5, n // 2, (4 * n) // 5], skeleton)
            print(f"saved {args.png}")
        if args.gif:
            _animate(args.gif, kp, results, gt, args.fps, skeleton)
            print(f"saved {args.gif}")
    except ImportError:
        print("matplotlib is not installed: no picture (pip install 'posekernels[viz]')")
    return 0
