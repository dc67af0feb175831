"""The fused C++ CPU backend's internal paths: thread counts and uneven sample chunks, bitwise
reproducibility, the exactly-zero theta_b gradient. Accuracy, gradients (gradcheck too), the raw
ops, bad input, opcheck and torch.compile run over every backend in test_ops.py."""
from __future__ import annotations

import pytest
import torch

from _op_harness import agc_args, f32, make_agc, run_agc, to64
from posekernels import ops
from posekernels.ops import unchecked

pytestmark = pytest.mark.skipif("cpu" not in ops.available_backends("cpu"),
                                reason="the C++ extension (cpu backend) is not built")


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("n", [1, 5])  # one sample (no sample parallelism); uneven chunks
def test_agc_thread_counts(threads, n):
    a = make_agc(n, 5, 6, 3, 4, 7, 3)
    gy = torch.randn(n, 6, 4, 7, dtype=torch.float64)
    y_ref, g_ref = run_agc(a, "reference", gy)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        y, g = run_agc(a, "cpu", gy)
    finally:
        torch.set_num_threads(previous)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    for name in g_ref:
        torch.testing.assert_close(g[name], g_ref[name], rtol=1e-9, atol=1e-10, msg=name)


def test_agc_is_reproducible():
    """Threads take samples dynamically, yet repeated calls agree bit for bit."""
    args = agc_args(make_agc(7, 6, 5, 3, 6, 9, 3, dtype=f32))
    y, attn = torch.ops.posekernels.agc_forward(*args)
    gy = torch.randn_like(y)
    first = torch.ops.posekernels.agc_backward(gy, *args, attn)
    for _ in range(3):
        y2, attn2 = torch.ops.posekernels.agc_forward(*args)
        assert torch.equal(y2, y) and torch.equal(attn2, attn)
        again = torch.ops.posekernels.agc_backward(gy, *args, attn)
        assert all(torch.equal(a, b) for a, b in zip(first, again))


def test_theta_b_gradient_is_exactly_zero():
    """Softmax over v ignores theta_b (it shifts each column of S by a constant)."""
    a = make_agc(2, 3, 4, 2, 4, 5, 2)
    _, g = run_agc(to64(a), "cpu", torch.randn(2, 4, 4, 5, dtype=torch.float64))
    assert torch.count_nonzero(g["theta_b"]) == 0
    assert torch.count_nonzero(g["phi_b"]) > 0


@pytest.mark.parametrize("bf16_cpu", [True, False])
@pytest.mark.parametrize("x_dtype", [torch.float32, torch.bfloat16])
def test_agc_under_autocast_computes_in_float32(x_dtype, bf16_cpu, monkeypatch):
    """Under CPU bf16 autocast the cpu backend casts the graph op's arguments to float32 (its
    kernels compute in float32 anyway) and returns float32: the same bits as the call outside
    autocast on the same (float32-cast) inputs, gradients included, each in its leaf's dtype;
    that call has bfloat16 W, theta_w and phi_w (bf16 products) on a CPU with AVX-512 BF16
    (``bf16_cpu``; emulated here when this CPU lacks it) and float32 ones elsewhere. The other
    backends keep the autocast dtype."""
    monkeypatch.setattr(ops, "_CPU_BF16", bf16_cpu)
    args = make_agc(3, 5, 6, 3, 7, 17, 3, dtype=f32)
    args["x"] = args["x"].to(x_dtype)
    names = [k for k, v in args.items() if v is not None and k != "A"]

    def run(autocast, backend="cpu", bf16_weights=False):
        leaves = {k: (v.detach().clone().requires_grad_(k in names) if v is not None else None)
                  for k, v in args.items()}
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            if bf16_weights:
                kw = {k: (v.bfloat16() if k in ("W", "theta_w", "phi_w") else v)
                      for k, v in leaves.items()}
                y = unchecked.adaptive_graph_conv(**kw)
            else:
                y = ops.adaptive_graph_conv(**leaves, backend=backend)
        gy = torch.linspace(-1, 1, y.numel()).reshape(y.shape).to(y.dtype)
        return y, torch.autograd.grad(y, [leaves[k] for k in names], gy), leaves

    y, grads, leaves = run(True)
    assert y.dtype == torch.float32
    for g, k in zip(grads, names):
        assert g.dtype == leaves[k].dtype, k
    args["x"] = args["x"].float()
    y32, grads32, _ = run(False, bf16_weights=bf16_cpu)
    assert torch.equal(y, y32)
    for g, e, k in zip(grads, grads32, names):
        assert torch.equal(g.float(), e.to(g.dtype).float()), k
    y_ref, _, _ = run(True, "reference")
    assert y_ref.dtype == torch.bfloat16
