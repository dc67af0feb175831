"""The CPU kernels' float32 matrix product against the BLAS of the PyTorch wheel, one thread.

The shapes are the products inside posekernels' CPU kernels at C = 96, V = 17: the graph
convolution's channel mix (96 x 288 by a block of 24 frames = 408 columns, or a whole T = 243
sample), its attention embeddings (144 x 96), and the Winograd temporal convolution's per-component
product (96 x 288 by 6 tiles = 102 columns). Both run single-threaded, as inside the kernels'
parallel loops; medians of 30 calls, interleaved.

    python benchmarks/cpu_gemm_bench.py
"""
from __future__ import annotations

import statistics
import time

import torch

from posekernels import _ext, build_info

SHAPES = [(96, 288, 408), (96, 288, 102), (144, 96, 408), (96, 864, 408), (96, 288, 4131)]


def main() -> None:
    mod = _ext._C
    if mod is None or build_info().get("cpu_gemm") != "avx512":
        raise SystemExit("the AVX-512 product is not in use here (build_info()['cpu_gemm'])")
    torch.set_num_threads(1)
    print("| R x Q x S | avx512 GFLOP/s | torch.mm (BLAS) GFLOP/s | ratio |")
    print("|---|---:|---:|---:|")
    for R, Q, S in SHAPES:
        A, B, C = torch.randn(R, Q), torch.randn(Q, S), torch.empty(R, S)
        runs = {"avx512": [], "blas": []}
        calls = {"avx512": lambda: mod._avx512_gemm(A, B, C, False, False, 1.0, 0.0),
                 "blas": lambda: torch.mm(A, B, out=C)}
        for _ in range(3):
            for f in calls.values():
                f()
        for _ in range(30):
            for name, f in calls.items():
                t = time.perf_counter()
                f()
                runs[name].append(time.perf_counter() - t)
        flop = 2 * R * Q * S
        fast = flop / statistics.median(runs["avx512"]) / 1e9
        blas = flop / statistics.median(runs["blas"]) / 1e9
        print(f"| {R} x {Q} x {S} | {fast:.0f} | {blas:.0f} | {fast / blas:.2f}x |")


if __name__ == "__main__":
    main()
