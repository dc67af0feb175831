"""pytest-benchmark suite of one whole training step on the CPU: forward, loss, backward, SGD.

Each group is one model at one batch size, with the ``cpu`` backend (fused graph op, counter-based
dropout, fused BatchNorm epilogues) beside ``cpu_unfused`` (the same backend with the plain
PyTorch epilogues, F.batch_norm + bernoulli dropout + add + ReLU: the training step before the
fused epilogues) and the ``reference`` backend (plain PyTorch throughout); ratios within a group
are the figures that count. The convolutions are oneDNN's in all three. ``cpu_bf16`` and
``reference_bf16`` run the same steps with the forward under CPU bf16 autocast (the trainer's
``amp_cpu``: oneDNN's bf16 convolutions; on the cpu backend the epilogues run in float32 and
the graph op's weight products in bf16 where the CPU has AVX-512 BF16, on the reference one
everything in bf16), a group of their own. The three shapes are those of
the training-step issue:

* ``released_sagcn(T=27, C=96)`` at batch 64 and ``released_sagcn(T=81, C=96)`` at batch 32 (the
  authors' released configuration, MPJPE loss);
* ``GLAGCN(T=27, C=96)`` at batch 64 (full model: sequence branch + ICL head, stage-1 loss).

The module keeps freed memory for reuse (``posekernels.tune_cpu_allocator``, as the trainer
does by default) for every implementation; ``POSEKERNELS_BENCH_PLAIN_MALLOC=1`` leaves glibc's
defaults, ``POSEKERNELS_BENCH_ROUNDS`` sets the rounds (default 5).

Run with ``make bench`` or ``pytest benchmarks/test_bench_train.py --benchmark-enable``.
"""
from __future__ import annotations

import contextlib
import functools
import os

import pytest
import torch

from posekernels import ops
from posekernels.models import GLAGCN, released_sagcn
from posekernels.models.glagcn import mpjpe_loss

SHAPES = {
    "released_T27_b64": (lambda: released_sagcn(27, 96), 64, 27),
    "released_T81_b32": (lambda: released_sagcn(81, 96), 32, 81),
    "glagcn_T27_b64": (lambda: GLAGCN(receptive_field=27, channels=96), 64, 27),
}


@contextlib.contextmanager
def plain_epilogues():
    """The models' BatchNorm/dropout epilogues on the reference formulation (any backend)."""
    saved = ops.batch_norm_act, ops.dropout
    ops.batch_norm_act = functools.partial(saved[0], backend="reference")
    ops.dropout = functools.partial(saved[1], backend="reference")
    try:
        yield
    finally:
        ops.batch_norm_act, ops.dropout = saved


@pytest.fixture(scope="module", autouse=True)
def tuned_allocator():
    """The step as the trainer runs it: glibc keeps freed activations (the trainer's
    ``tune_allocator``, default on; process-wide, so every implementation gets it)."""
    import posekernels

    if os.environ.get("POSEKERNELS_BENCH_PLAIN_MALLOC") != "1":
        posekernels.tune_cpu_allocator()


def make_step(name: str, impl: str):
    """A closure running one training step of model ``name`` with ``impl`` ("cpu",
    "cpu_unfused" or "reference"; a "_bf16" suffix: the forward under CPU bf16 autocast, as the
    trainer's ``amp_cpu`` runs it; fixed inputs)."""
    amp = impl.endswith("_bf16")
    impl = impl.removesuffix("_bf16")
    backend = "cpu" if impl == "cpu_unfused" else impl
    build, batch, window = SHAPES[name]
    torch.manual_seed(0)
    model = build().train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(batch, window, 17, 2, generator=gen)
    target = torch.randn(batch, window, 17, 3, generator=gen) * 0.2

    def step():
        with ops.use_backend(backend), (plain_epilogues() if impl == "cpu_unfused"
                                        else contextlib.nullcontext()):
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                if model.sequence_branch:
                    loss = model.loss(x, target, stage=1)
                else:
                    loss = mpjpe_loss(model(x), target[:, window // 2:window // 2 + 1])
            loss.backward()
            opt.step()
        return loss.detach()

    return step


@pytest.mark.parametrize("impl", ["cpu", "cpu_unfused", "reference", "cpu_bf16",
                                  "reference_bf16"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_training_step(benchmark, shape, impl):
    if not impl.startswith("reference") and "cpu" not in ops.available_backends("cpu"):
        pytest.skip("the cpu backend is not built")
    step = make_step(shape, impl)
    step()  # warm-up (allocator, oneDNN primitive cache)
    precision = "bf16 autocast" if impl.endswith("_bf16") else "float32"
    benchmark.group = (f"training step cpu {shape} {precision} {torch.get_num_threads()} "
                       "threads")
    benchmark.extra_info.update(shape=shape, impl=impl, threads=torch.get_num_threads())
    rounds = int(os.environ.get("POSEKERNELS_BENCH_ROUNDS", "5"))
    loss = benchmark.pedantic(step, rounds=rounds, iterations=1, warmup_rounds=1)
    assert torch.isfinite(loss)
