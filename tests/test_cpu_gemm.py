"""The AVX-512 float32 product inside the CPU kernels (csrc/cpu/gemm_avx512.cpp), against float64.

Shapes are drawn fresh to cover the kernel's edges: rows not a multiple of its 8-row tile, column
tails inside its 16-lane vectors and 48-column panels, depths across its 256-deep blocks, both
transpositions, leading dimensions larger than the rows, alpha/beta, and beta = 0 over a C full
of NaN (which must not be read).
"""
from __future__ import annotations

import pytest
import torch

from posekernels import _ext

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


def _module():
    mod = _ext._C
    if mod is None or mod.build_info().get("cpu_gemm") != "avx512":
        pytest.skip("the AVX-512 product is not used on this CPU/build")
    return mod


def _matrix(rows, cols, pad, gen):
    """A (rows, cols) float32 view with row stride cols + pad (leading dimension > cols)."""
    base = torch.randn(rows, cols + pad, generator=gen)
    return base[:, :cols]


@settings(max_examples=60, deadline=None)
@given(R=st.integers(1, 40), S=st.integers(1, 120), Q=st.integers(1, 600),
       trans_a=st.booleans(), trans_b=st.booleans(), pad=st.integers(0, 5),
       beta=st.sampled_from([0.0, 1.0, -0.5]), alpha=st.sampled_from([1.0, 0.25]),
       use_bias=st.booleans(), relu=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_avx512_gemm_matches_float64(R, S, Q, trans_a, trans_b, pad, beta, alpha, use_bias, relu,
                                     seed):
    mod = _module()
    gen = torch.Generator().manual_seed(seed)
    A = _matrix(Q, R, pad, gen) if trans_a else _matrix(R, Q, pad, gen)
    B = _matrix(S, Q, pad, gen) if trans_b else _matrix(Q, S, pad, gen)
    C0 = _matrix(R, S, pad, gen)
    C = C0.clone() if beta != 0.0 else torch.full_like(C0, float("nan"))
    C = torch.as_strided(torch.empty(R * (S + pad)), (R, S), (S + pad, 1)).copy_(C)
    opA = A.t() if trans_a else A
    opB = B.t() if trans_b else B
    expected = alpha * (opA.double() @ opB.double())
    if beta != 0.0:
        expected = expected + beta * C0.double()
    bias = torch.randn(R, generator=gen) if use_bias else None
    if use_bias:
        expected = expected + bias.double()[:, None]
    if relu:  # the epilogue applies once, after the last depth block (Q > 256: several)
        expected = expected.clamp_min(0)
    mod._avx512_gemm(A, B, C, trans_a, trans_b, alpha, beta, bias, relu)
    # float32 accumulation over Q terms of size ~1: error ~ sqrt(Q) * 6e-8 per entry
    bound = 1e-6 * (Q ** 0.5) * 8 + 1e-6
    assert torch.isfinite(C).all()
    assert (C.double() - expected).abs().max().item() < bound


def test_avx512_gemm_leaves_the_rest_of_c_alone():
    """Masked stores: entries of C's rows beyond its columns (the padding of the leading
    dimension) keep their values."""
    mod = _module()
    gen = torch.Generator().manual_seed(torch.seed() % 2**31)
    A = torch.randn(13, 300, generator=gen)
    B = torch.randn(300, 37, generator=gen)
    storage = torch.randn(13, 37 + 11, generator=gen)
    before = storage.clone()
    C = storage[:, :37]
    mod._avx512_gemm(A, B, C, False, False, 1.0, 0.0)
    assert torch.equal(storage[:, 37:], before[:, 37:])
    torch.testing.assert_close(C.double(), A.double() @ B.double(), rtol=0, atol=1e-4)


def test_avx512_gemm_rejects_bad_arguments():
    mod = _module()
    A, B = torch.randn(4, 5), torch.randn(5, 6)
    with pytest.raises(ValueError, match="do not form a product"):
        mod._avx512_gemm(A, B, torch.empty(4, 7), False, False, 1.0, 0.0)
    with pytest.raises(ValueError, match="B must be a 2-D torch.float32"):
        mod._avx512_gemm(A, B.double(), torch.empty(4, 6), False, False, 1.0, 0.0)
    with pytest.raises(ValueError, match="A must be a 2-D torch.float32"):
        mod._avx512_gemm(A.t(), B, torch.empty(4, 6), False, False, 1.0, 0.0)


def test_blas_fallback_gives_the_same_op_results(tmp_path):
    """POSEKERNELS_CPU_GEMM=blas (read once per process) turns the AVX-512 product off; the graph
    convolution then agrees with the AVX-512 one to float32 rounding."""
    import os
    import subprocess
    import sys

    _module()
    script = (
        "import torch, posekernels\n"
        "g = torch.Generator().manual_seed(3)\n"
        "x = torch.randn(2, 8, 30, 17, generator=g); A = torch.rand(3, 17, 17, generator=g)\n"
        "W = torch.randn(3, 16, 8, generator=g); th = torch.randn(3, 4, 8, generator=g)\n"
        "b = torch.randn(3, 16, generator=g)\n"
        "y = posekernels.ops.adaptive_graph_conv(x, A, W, b, theta_w=th, phi_w=th.flip(0),"
        " backend='cpu')\n"
        "W2 = torch.randn(3, 8, 8, generator=g)\n"
        "u = torch.ops.posekernels.agc_unit_forward(x, A, W2, b[:, :8], None, th, None,"
        " th.flip(0), None, None, None, True, True)\n"
        "torch.save((posekernels.build_info()['cpu_gemm'], y, u), __import__('sys').argv[1])\n"
    )
    outs = {}
    for kind in ("avx512", "blas"):
        env = dict(os.environ)
        env.pop("POSEKERNELS_CPU_GEMM", None)
        if kind == "blas":
            env["POSEKERNELS_CPU_GEMM"] = "blas"
        path = tmp_path / f"{kind}.pt"
        subprocess.run([sys.executable, "-c", script, str(path)], check=True, env=env)
        outs[kind] = torch.load(path)
    assert outs["avx512"][0] == "avx512" and outs["blas"][0] == "blas"
    torch.testing.assert_close(outs["avx512"][1], outs["blas"][1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(outs["avx512"][2], outs["blas"][2], rtol=1e-5, atol=1e-5)
    assert (outs["blas"][2] == 0).any() and (outs["blas"][2] > 0).any()  # the ReLU acted
