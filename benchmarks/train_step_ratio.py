"""The training-step ratio, cpu against reference, with the two steps interleaved.

pytest-benchmark (``benchmarks/test_bench_train.py``) times each implementation's rounds one
after the other, so a slow spell of a shared machine lands on one side of a ratio only. This
script builds the same steps (:func:`benchmarks.test_bench_train.make_step`: the same models,
batches, inputs, loss and SGD) and alternates them round by round (cpu, reference, then
reference, cpu, ...), so that both see the same load. It reports each side's median step, the
ratio of the medians and the quartiles of the per-round ratios (reference / cpu of the same
round pair).

    python benchmarks/train_step_ratio.py --rounds 15 --threads 2 [--shapes released_T81_b32,...]
        [--bf16] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.test_bench_train import SHAPES, make_step  # noqa: E402


def quartiles(values):
    """(lower quartile, median, upper quartile) of a list of numbers (statistics' exclusive
    method; the median alone for fewer than two values)."""
    if len(values) < 2:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4)
    return q1, q2, q3


def measure(shape: str, rounds: int, warmup: int, bf16: bool = False) -> dict:
    """Interleaved rounds of one shape; times in milliseconds."""
    suffix = "_bf16" if bf16 else ""
    impls = ("cpu" + suffix, "reference" + suffix)
    steps = {impl: make_step(shape, impl) for impl in impls}
    for step in steps.values():
        for _ in range(warmup):
            step()
    times = {impl: [] for impl in impls}
    for r in range(rounds):
        for impl in (impls if r % 2 == 0 else impls[::-1]):
            t0 = time.perf_counter()
            steps[impl]()
            times[impl].append((time.perf_counter() - t0) * 1e3)
    cpu, ref = times[impls[0]], times[impls[1]]
    pair = [b / a for a, b in zip(cpu, ref)]
    return {"shape": shape, "precision": "bf16 autocast" if bf16 else "float32",
            "rounds": rounds, "cpu_ms": statistics.median(cpu),
            "reference_ms": statistics.median(ref),
            "ratio_of_medians": statistics.median(ref) / statistics.median(cpu),
            "pair_ratio_quartiles": quartiles(pair), "cpu_times_ms": cpu,
            "reference_times_ms": ref}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=15, help="round pairs per shape (default 15)")
    p.add_argument("--warmup", type=int, default=2, help="warm-up steps per implementation")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--shapes", default=",".join(SHAPES),
                   help=f"comma-separated, from {', '.join(SHAPES)}")
    p.add_argument("--bf16", action="store_true",
                   help="both steps under CPU bf16 autocast (cpu_bf16 against reference_bf16)")
    p.add_argument("--json", help="write the results (every round's times too) to this file")
    args = p.parse_args(argv)
    shapes = [s for s in args.shapes.split(",") if s]
    unknown = [s for s in shapes if s not in SHAPES]
    if unknown or not shapes:
        p.error(f"--shapes: unknown {unknown or 'none given'}; expected some of {list(SHAPES)}")
    if args.rounds < 1 or args.warmup < 0 or args.threads < 1:
        p.error("--rounds and --threads must be >= 1 and --warmup >= 0")
    import posekernels
    from posekernels import ops

    if "cpu" not in ops.available_backends("cpu"):
        p.error("the cpu backend is not built (pip install -e . builds it)")
    posekernels.tune_cpu_allocator()  # freed activations kept, as the trainer runs
    threads_before = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        results = _run(shapes, args)
    finally:
        torch.set_num_threads(threads_before)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"threads": args.threads, "torch": torch.__version__,
                       "results": results}, f, indent=1)
    return 0


def _run(shapes, args) -> list:
    """Print the table row by row; the results."""
    print(f"{platform.machine()} {platform.processor() or ''} torch {torch.__version__}, "
          f"{args.threads} threads, {args.rounds} interleaved round pairs")
    print("| model, batch | precision | cpu (ms) | reference (ms) | ratio of medians | "
          "per-pair ratio quartiles |")
    print("|---|---|---:|---:|---:|---|")
    results = []
    for shape in shapes:
        r = measure(shape, args.rounds, args.warmup, args.bf16)
        results.append(r)
        q1, q2, q3 = r["pair_ratio_quartiles"]
        print(f"| {shape} | {r['precision']} | {r['cpu_ms']:,.0f} | {r['reference_ms']:,.0f} | "
              f"**{r['ratio_of_medians']:.2f}x** | {q1:.2f} / {q2:.2f} / {q3:.2f} |", flush=True)
    return results


if __name__ == "__main__":
    sys.exit(main())
