"""How far from the truth :func:`posekernels.inference.place_in_camera` puts the lifted person.

Subject 09 of ``../shared/data/cmu-mocap`` (or ``--bvh``) seen through random evaluation cameras
with detector noise, as ``posekernels evaluate --cameras random --detector-noise`` sees it; each
clip lifted by the given lifters (test-time flip), each pose placed in its camera from the noisy
2D keypoints, and compared with the camera-frame mocap joints. Also placed: the true
root-relative poses (what the 2D noise alone costs). Prints a Markdown table, millimetres:
the root's position error (3D, and its depth and sideways parts), the depth error relative to
the distance, and the camera-frame MPJPE of the placed poses (absolute, no root alignment).

    python benchmarks/placement_cmu.py default:centered default:causal
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # the checkout's posekernels, installed or not


def main(argv=None) -> int:
    import torch

    import posekernels
    from posekernels.checkpoints import load_model
    from posekernels.data.cameras import Camera
    from posekernels.evaluation import sequences_from_bvh
    from posekernels.inference import lift_sequence, place_in_camera

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("lifters", nargs="+", help="checkpoint paths or default:centered / "
                   "default:causal")
    p.add_argument("--bvh", default=os.path.join(ROOT, "..", "shared", "data", "cmu-mocap",
                                                 "09"))
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    posekernels.tune_cpu_allocator()
    seqs = sequences_from_bvh([args.bvh], cameras="random", detector_noise=True)

    def measure(lift) -> dict:
        root, depth, side, rel, absolute, frames, missing = [], [], [], [], [], 0, 0
        for s in seqs:
            cam = Camera.from_dict(s.extra["camera"])
            truth = s.positions_3d
            pose = lift(s)
            placed = place_in_camera(pose - pose[:, :1], s.positions_2d, cam)
            ok = np.isfinite(placed).all((-1, -2))
            missing += int((~ok).sum())
            frames += len(ok)
            err = placed[ok, 0] - truth[ok, 0]
            root.append(np.linalg.norm(err, axis=-1))
            depth.append(np.abs(err[:, 2]))
            side.append(np.linalg.norm(err[:, :2], axis=-1))
            rel.append(np.abs(err[:, 2]) / truth[ok, 0, 2])
            absolute.append(np.linalg.norm(placed[ok] - truth[ok], axis=-1).mean(-1))
        cat = lambda xs: float(np.concatenate(xs).mean())  # noqa: E731
        return {"root": 1000 * cat(root), "depth": 1000 * cat(depth), "side": 1000 * cat(side),
                "rel": 100 * cat(rel), "abs": 1000 * cat(absolute), "frames": frames,
                "missing": missing}

    def model_lift(model):
        def lift(s):
            out = lift_sequence(model, s.normalized_2d(), flip_tta=True)
            return out.numpy() if isinstance(out, torch.Tensor) else np.asarray(out)
        return lift

    rows = [("true root-relative poses", measure(lambda s: s.positions_3d))]
    for name in args.lifters:
        if name.startswith("default:"):
            model = load_model("default", mode=name.split(":", 1)[1])
        else:
            model = load_model(name)
        rows.append((name, measure(model_lift(model))))
    print(f"{len(seqs)} clip-camera pairs, {rows[0][1]['frames']} frames")
    print("| poses placed | root error | its depth part | sideways part | depth error / distance "
          "| camera-frame MPJPE | frames without a placement |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in rows:
        print(f"| {name} | {r['root']:.1f} | {r['depth']:.1f} | {r['side']:.1f} | "
              f"{r['rel']:.2f} % | {r['abs']:.1f} | {r['missing']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
