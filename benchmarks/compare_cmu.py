"""The papers' claims at equal budget, on camera-randomised CMU data, several seeds each.

    python benchmarks/compare_cmu.py --runs gla --seeds 0,1,2       # the three GLA-GCN variants
    python benchmarks/compare_cmu.py --runs gn --seeds 0,1,2        # global node vs baseline
    python benchmarks/compare_cmu.py --table-only                   # mean / std table

Claims compared (same data, same optimiser steps, same seeds):

* GLA-GCN (Yu et al., ICCV 2023): the full model (sequence branch + individually connected
  layer, two training stages) against the released-model configuration (no sequence branch,
  shared head) and against the individually connected layer without the sequence branch;
* the global-node GCN (Liu, Zou, Tang, ACCV 2020) against the same network without the global
  node (and without its auxiliary pose-class loss).

Data: CMU subjects 01, 02, 05, 06, 07 train, 09 validates (converted by
benchmarks/train_cmu.py into the git-ignored out/cmu/data_3d_cmu.npz). Training draws a fresh
random camera per sample per step (posekernels.data.random_cameras, exact projections, no 2D
noise); validation sees every clip of subject 09 through 4 random evaluation cameras (the
evaluation seed, which no training run uses), test-time flip on. GLA-GCN runs use the released
recipe (Ranger, cosine lr 0.01, BN momentum decay, batch 32, T = 27, C = 32); the global-node
runs Adam lr 5e-3 cosine, batch 64, C = 64. The frame strides give both families about 170
optimiser steps per epoch.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.train_cmu import GLA, GN, convert, train_run, write_table  # noqa: E402

CAMERAS = dict(cameras="random", val_cameras="random", val_num_cameras=4)
GLA_CMP = dict(GLA, frame_stride=8, **CAMERAS)
GN_CMP = dict(GN, frame_stride=4, **CAMERAS)

RUNS = {
    "gla_full": dict(GLA_CMP, model={"arch": "glagcn", "receptive_field": 27, "channels": 32,
                                     "sequence_branch": True, "head": "icl"}),
    "gla_icl": dict(GLA_CMP, model={"arch": "glagcn", "receptive_field": 27, "channels": 32,
                                    "sequence_branch": False, "head": "icl"}),
    "released": dict(GLA_CMP, model={"arch": "released_sagcn", "receptive_field": 27,
                                     "channels": 32}),
    "global_node": dict(GN_CMP, model={"arch": "global_node", "channels": 64,
                                       "skeleton": "h36m17", "global_node": True,
                                       "aux": "action", "num_classes": 50}),
    "gcn_baseline": dict(GN_CMP, model={"arch": "global_node", "channels": 64,
                                        "skeleton": "h36m17", "global_node": False,
                                        "aux": None}),
}
GROUPS = {"gla": ["gla_full", "gla_icl", "released"], "gn": ["global_node", "gcn_baseline"]}
LABELS = {
    "gla_full": "GLA-GCN full (sequence branch + ICL, two stages)",
    "gla_icl": "GLA-GCN, ICL head, no sequence branch",
    "released": "Released-model configuration (shared head, no sequence branch)",
    "global_node": "Global-node GCN (K-means pose classes, K = 50)",
    "gcn_baseline": "Baseline GCN (no global node)",
}


def run_one(name: str, seed: int, out: str, data: str, threads: int, epochs: int | None) -> None:
    recipe = RUNS[name] if epochs is None else dict(RUNS[name], epochs=epochs)
    train_run(recipe, os.path.join(out, f"{name}_s{seed}"), data, threads, seed,
              f"{name} seed {seed}")


def summarize(out: str) -> dict:
    """Mean and standard deviation over seeds of every finished run; writes
    out/compare.json and out/compare.md and prints the table."""
    from posekernels.training import read_checkpoint

    rows = {}
    for name in RUNS:
        per_seed = []
        for entry in sorted(os.listdir(out)) if os.path.isdir(out) else []:
            if not entry.startswith(f"{name}_s") or not entry[len(name) + 2:].isdigit():
                continue
            path = os.path.join(out, entry, "model.pt")
            if not os.path.isfile(path):
                continue
            ck = read_checkpoint(path)
            with open(os.path.join(out, entry, "history.json"), encoding="utf-8") as f:
                hist = json.load(f)
            per_seed.append({"seed": ck["config"]["seed"], "mpjpe": ck["metrics"]["mpjpe"],
                             "p_mpjpe": ck["metrics"]["p_mpjpe"],
                             "steps": sum(h.get("steps", 0) for h in hist),
                             "train_seconds": round(sum(h.get("seconds", 0) for h in hist), 1),
                             "epochs": ck["config"]["epochs"]})
        if per_seed:
            def stat(key):
                vals = [r[key] for r in per_seed]
                return (statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0)
            rows[name] = {"label": LABELS[name], "seeds": per_seed, "mpjpe": stat("mpjpe"),
                          "p_mpjpe": stat("p_mpjpe")}
    lines = ["| Run | Seeds | Steps per run | MPJPE mean +- std (mm) | P-MPJPE mean +- std (mm) |",
             "|---|---:|---:|---:|---:|"]
    for name, r in rows.items():
        steps = sorted({s["steps"] for s in r["seeds"]})
        lines.append(f"| {r['label']} | {len(r['seeds'])} | {'/'.join(map(str, steps))} | "
                     f"{r['mpjpe'][0]:.1f} +- {r['mpjpe'][1]:.1f} | "
                     f"{r['p_mpjpe'][0]:.1f} +- {r['p_mpjpe'][1]:.1f} |")
    write_table(out, "compare", rows, lines)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cmu", default=os.path.join(ROOT, "..", "shared", "data", "cmu-mocap"))
    p.add_argument("--out", default=os.path.join(ROOT, "out", "cmu", "compare"))
    p.add_argument("--data", default=os.path.join(ROOT, "out", "cmu", "data_3d_cmu.npz"))
    p.add_argument("--runs", default="gla,gn",
                   help=f"comma-separated run names {list(RUNS)} or groups {list(GROUPS)}")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int, default=None, help="override every run's epochs")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--table-only", action="store_true")
    args = p.parse_args(argv)
    if not args.table_only:
        names = []
        for item in args.runs.split(","):
            names += GROUPS.get(item, [item])
        for name in names:
            if name not in RUNS:
                raise SystemExit(f"unknown run {name!r}; choose from {list(RUNS)} or "
                                 f"{list(GROUPS)}")
        convert(args.cmu, args.data)
        for seed in (int(s) for s in args.seeds.split(",")):
            for name in names:
                run_one(name, seed, args.out, args.data, args.threads, args.epochs)
    summarize(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
