"""pytest-benchmark suite of one whole training step on the CPU: forward, loss, backward, SGD.

Each group is one model at one batch size, with the ``cpu`` backend (fused graph op, counter-based
dropout, fused BatchNorm epilogues) beside the ``reference`` backend (plain PyTorch: oneDNN
convolutions, F.batch_norm, bernoulli dropout); their ratio is the figure that counts. The three
shapes are those of the training-step issue:

* ``released_sagcn(T=27, C=96)`` at batch 64 and ``released_sagcn(T=81, C=96)`` at batch 32 (the
  authors' released configuration, MPJPE loss);
* ``GLAGCN(T=27, C=96)`` at batch 64 (full model: sequence branch + ICL head, stage-1 loss).

Run with ``make bench`` or ``pytest benchmarks/test_bench_train.py --benchmark-enable``.
"""
from __future__ import annotations

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


def make_step(name: str, backend: str):
    """A closure running one training step of model ``name`` on ``backend`` (fixed inputs)."""
    build, batch, window = SHAPES[name]
    torch.manual_seed(0)
    model = build().train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(batch, window, 17, 2, generator=gen)
    target = torch.randn(batch, window, 17, 3, generator=gen) * 0.2

    def step():
        with ops.use_backend(backend):
            opt.zero_grad(set_to_none=True)
            if model.sequence_branch:
                loss = model.loss(x, target, stage=1)
            else:
                loss = mpjpe_loss(model(x), target[:, window // 2:window // 2 + 1])
            loss.backward()
            opt.step()
        return loss.detach()

    return step


@pytest.mark.parametrize("backend", ["cpu", "reference"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_training_step(benchmark, shape, backend):
    if backend not in ops.available_backends("cpu"):
        pytest.skip(f"backend {backend!r} is not built")
    step = make_step(shape, backend)
    step()  # warm-up (allocator, oneDNN primitive cache)
    benchmark.group = f"training step cpu {shape} float32 {torch.get_num_threads()} threads"
    benchmark.extra_info.update(shape=shape, backend=backend, threads=torch.get_num_threads())
    loss = benchmark.pedantic(step, rounds=5, iterations=1, warmup_rounds=1)
    assert torch.isfinite(loss)
