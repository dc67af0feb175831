"""Streaming benchmark: per-frame latency and stream-frames per second of StreamingLifter.

For every S (streams) x T (window) it builds the released GLA-GCN architecture
(:func:`posekernels.models.released_sagcn`, C = 96, random weights: speed does not depend on
them), fills all S streams, then times ``push`` of one frame to every stream:

* ``p50`` / ``p99``: latency of one push (one frame of every stream; for S = 1 the per-frame
  latency of a live stream), milliseconds;
* ``stream-fps``: S / median push time (stream-frames lifted per second);
* ``released``: windows per second of the released formulation (the authors' eager graph unit
  per partition, benchmarks/peer_released.py, unfolded BatchNorms, ``model(x)``) at the same
  batch (the lifter's forward batch, ``min(S, max_batch)``), and ``eager``: the posekernels
  model's own forward (fused ops, no folding) at that batch; ``speedup`` = stream-fps / released.
  The three are timed in one loop, interleaved, so that the changing load of a shared machine
  affects them alike; medians are reported.

On CUDA both the CUDA-graph step and the eager step are measured (``--cuda-graph both``).
``--soak`` pushes up to ``--soak-frames`` frames (default 1,000,000; stops at ``--soak-seconds``)
through one stream and reports the resident memory (and CUDA memory) at the start and the end.

    python benchmarks/stream_bench.py --streams 1,16,256,1024 --windows 27,81,243 --json out.json
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.peer_released import released_graph_unit, released_icl_shared  # noqa: E402
from posekernels import ops  # noqa: E402
from posekernels.models import released_sagcn  # noqa: E402
from posekernels.stream import StreamingLifter  # noqa: E402


@contextlib.contextmanager
def released_formulation():
    """Route the models' two ops through the released code's eager formulation."""
    agc, gjl = ops.adaptive_graph_conv, ops.grouped_joint_linear

    def agc_released(x, A, W, bias=None, B=None, theta_w=None, theta_b=None, phi_w=None,
                     phi_b=None, *, backend=None):
        return released_graph_unit(x, A, W, bias, B, theta_w, theta_b, phi_w, phi_b)

    def gjl_released(x, W_joint=None, b_joint=None, W_shared=None, b_shared=None, lam=0.5, *,
                     backend=None):
        return released_icl_shared(x, W_shared, b_shared)

    ops.adaptive_graph_conv, ops.grouped_joint_linear = agc_released, gjl_released
    try:
        yield
    finally:
        ops.adaptive_graph_conv, ops.grouped_joint_linear = agc, gjl


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rss_mib() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def bench_stream(S, T, device, cuda_graph, seconds, channels=96, max_batch=None,
                 baseline=True, tune_allocator=True, bf16=False):
    """Time lifter pushes; in the same loop (interleaved, so that a shared machine's changing
    load hits all of them alike) time the released formulation and the model's own eager forward
    at the lifter's forward batch, and with ``bf16`` a second lifter with
    ``precision="bf16"``."""
    model = released_sagcn(T, channels=channels).to(device).eval()
    lifter = StreamingLifter(model, num_streams=S, device=device, cuda_graph=cuda_graph,
                             max_batch=max_batch, tune_allocator=tune_allocator)
    lifter_bf16 = (StreamingLifter(model, num_streams=S, device=device, cuda_graph=cuda_graph,
                                   max_batch=max_batch, tune_allocator=tune_allocator,
                                   precision="bf16") if bf16 else None)
    rng = np.random.default_rng(0)
    frames = torch.from_numpy(rng.normal(0, 0.3, size=(S, 17, 2)).astype(np.float32))
    for _ in range(lifter.latency_frames + 1):  # fill: the windows of all streams become ready
        lifter.push(frames)
        if lifter_bf16 is not None:
            lifter_bf16.push(frames)
    batch = min(S, lifter.max_batch)
    x = torch.randn(batch, T, 17, 2, device=device) * 0.3

    def released():
        with released_formulation():
            model(x)
        _sync(device)

    def eager():
        model(x)
        _sync(device)

    others = {"released": released, "eager": eager} if baseline and not cuda_graph else {}
    if lifter_bf16 is not None:
        others["push_bf16"] = lambda: lifter_bf16.push(frames)
    times = {"push": [], **{k: [] for k in others}}
    start = time.perf_counter()
    with torch.inference_mode():
        for fn in others.values():
            fn()
        while len(times["push"]) < 3 or (time.perf_counter() - start < seconds
                                         and len(times["push"]) < 1000):
            t0 = time.perf_counter()
            out = lifter.push(frames)
            times["push"].append(time.perf_counter() - t0)
            for k, fn in others.items():
                t0 = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t0)
    assert out is not None and out.shape == (S, 17, 3)
    ms = np.array(times["push"]) * 1e3
    row = dict(S=S, T=T, cuda_graph=bool(lifter.cuda_graph), steps=len(ms),
               p50_ms=float(np.percentile(ms, 50)), p99_ms=float(np.percentile(ms, 99)),
               stream_fps=float(S / np.median(ms) * 1e3), max_batch=lifter.max_batch,
               forward_batch=batch)
    for k in others:
        if k == "push_bf16":
            bms = np.array(times[k]) * 1e3
            row.update(bf16_p50_ms=float(np.percentile(bms, 50)),
                       bf16_p99_ms=float(np.percentile(bms, 99)),
                       bf16_stream_fps=float(S / np.median(bms) * 1e3))
            continue
        row[f"{k}_wps"] = float(batch / statistics.median(times[k]))
    if "released_wps" in row and "bf16_stream_fps" in row:
        row["bf16_speedup_vs_released"] = row["bf16_stream_fps"] / row["released_wps"]
    if "released_wps" in row:
        # per window, the lifter's rate against the released formulation's
        windows_per_push = S
        row["speedup_vs_released"] = (windows_per_push / np.median(ms) * 1e3) / row["released_wps"]
    return row


def soak(device, frames, seconds, T=27, channels=16):
    model = released_sagcn(T, channels=channels).to(device).eval()
    lifter = StreamingLifter(model, device=device)  # the allocator tuned, as by default
    rng = np.random.default_rng(0)
    pool = rng.normal(0, 0.3, size=(64, 17, 2)).astype(np.float32)
    pool[5, 3] = np.nan  # exercise the missing-data path too
    for i in range(200):
        lifter.push(pool[i % 64])
    rss0 = rss_mib()
    cuda0 = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
    start = time.perf_counter()
    n = 0
    samples = []
    while n < frames and time.perf_counter() - start < seconds:
        lifter.push(pool[n % 64])
        n += 1
        if n % 10000 == 0:
            samples.append((n, rss_mib()))
    elapsed = time.perf_counter() - start
    return dict(frames=n, seconds=elapsed, fps=n / elapsed, T=T, channels=channels,
                rss_start_mib=rss0, rss_end_mib=rss_mib(), rss_samples=samples[-5:],
                rss_min_mib=min((r for _, r in samples), default=rss0),
                rss_max_mib=max((r for _, r in samples), default=rss0),
                cuda_start=cuda0,
                cuda_end=torch.cuda.memory_allocated(device) if device.type == "cuda" else 0)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--streams", default="1,16,256,1024")
    p.add_argument("--windows", default="27,81,243")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--cuda-graph", default="both", choices=["both", "on", "off"])
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument("--seconds", type=float, default=6.0, help="time per measurement")
    p.add_argument("--max-batch", type=int, default=None)
    p.add_argument("--no-baseline", action="store_true")
    p.add_argument("--soak", action="store_true")
    p.add_argument("--soak-frames", type=int, default=1_000_000)
    p.add_argument("--soak-seconds", type=float, default=600.0)
    p.add_argument("--json", default=None)
    p.add_argument("--allocator", default="tuned", choices=["tuned", "default"],
                   help="tuned: the lifter calls posekernels.tune_cpu_allocator (its default; "
                        "process-wide, so the released formulation and the eager model timed "
                        "in the same process get it too); default: glibc's own settings for all")
    p.add_argument("--bf16", action="store_true",
                   help="also time a lifter with precision='bf16' (bfloat16 weight products), "
                        "interleaved in the same loop")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    graphs = {"both": [False, True], "on": [True], "off": [False]}[args.cuda_graph]
    if device.type != "cuda":
        graphs = [False]
    info = dict(machine=platform.processor() or platform.machine(), cpus=os.cpu_count(),
                torch=torch.__version__, threads=torch.get_num_threads(), device=str(device),
                load_avg=os.getloadavg(), allocator=args.allocator)
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    print(json.dumps(info), flush=True)
    rows = []
    print(f"{'S':>5} {'T':>4} {'graph':>5} {'p50 ms':>9} {'p99 ms':>9} {'stream-fps':>11} "
          f"{'batch':>5} {'eager w/s':>10} {'released w/s':>12} {'speedup':>7}", flush=True)
    for T in [int(t) for t in args.windows.split(",")]:
        for S in [int(s) for s in args.streams.split(",")]:
            for graph in graphs:
                row = bench_stream(S, T, device, graph, args.seconds, max_batch=args.max_batch,
                                   baseline=not args.no_baseline,
                                   tune_allocator=args.allocator == "tuned", bf16=args.bf16)
                rows.append(row)
                print(f"{S:>5} {T:>4} {str(row['cuda_graph']):>5} {row['p50_ms']:9.2f} "
                      f"{row['p99_ms']:9.2f} {row['stream_fps']:11.1f} {row['forward_batch']:>5} "
                      f"{row.get('eager_wps', float('nan')):10.1f} "
                      f"{row.get('released_wps', float('nan')):12.1f} "
                      f"{row.get('speedup_vs_released', float('nan')):7.2f}"
                      + (f"  bf16: p50 {row['bf16_p50_ms']:.2f} ms, p99 {row['bf16_p99_ms']:.2f}"
                         f" ms, {row['bf16_stream_fps']:.1f} stream-fps, "
                         f"{row.get('bf16_speedup_vs_released', float('nan')):.2f}x"
                         if "bf16_p50_ms" in row else ""), flush=True)
    result = dict(info=info, rows=rows)
    if args.soak:
        result["soak"] = soak(device, args.soak_frames, args.soak_seconds)
        print(json.dumps(result["soak"]), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
