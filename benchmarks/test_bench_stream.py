"""pytest-benchmark suite of StreamingLifter.push: one frame to each of S streams.

Run with ``make bench`` (or ``pytest benchmarks/test_bench_stream.py --benchmark-enable``). The
grid is kept small here (S = 1, 16 at T = 27, 81 on the CPU); benchmarks/stream_bench.py runs the
full grid (S up to 1024, T up to 243), the released-formulation baseline and the soak. On a CUDA
machine the same cases also run with and without the CUDA-graph step.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from posekernels.models import released_sagcn
from posekernels.stream import StreamingLifter

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _graph_modes(device):
    return [False, True] if device == "cuda" else [False]


CASES = [(d, g) for d in DEVICES for g in _graph_modes(d)]


@pytest.mark.parametrize("device,cuda_graph", CASES, ids=lambda v: str(v))
@pytest.mark.parametrize("T", [27, 81])
@pytest.mark.parametrize("S", [1, 16])
def test_stream_push(benchmark, device, cuda_graph, T, S):
    model = released_sagcn(T).to(device).eval()
    lifter = StreamingLifter(model, num_streams=S, device=device, cuda_graph=cuda_graph)
    frames = torch.from_numpy(np.random.default_rng(0).normal(0, 0.3, (S, 17, 2))
                              .astype(np.float32))
    for _ in range(lifter.latency_frames + 1):
        lifter.push(frames)
    out = benchmark(lifter.push, frames)
    assert out is not None and out.shape == (S, 17, 3)
    benchmark.extra_info.update(streams=S, window=T, cuda_graph=cuda_graph,
                                stream_frames_per_call=S)
