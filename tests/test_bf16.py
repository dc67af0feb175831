"""The bfloat16 weight products of the CPU inference plans (build_plan(precision="bf16")).

The product kernel (csrc/cpu/gemm_bf16.cpp) against the exact float64 product of the
bfloat16-rounded operands, on the AVX-512 BF16 path and on the emulated one; the two inference
operators with bfloat16 weights against float64 references; the dtype rules; the plan, the
streaming lifter and lift_sequence with precision="bf16"; and the errors for what it cannot do.
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _tiny_models import metre_glagcn, stream_staggered

from posekernels import _ext, lift_sequence
from posekernels.inference import build_plan
from posekernels.models import GLAGCN
from posekernels.ops import reference, unchecked
from posekernels.stream import StreamingLifter

pytestmark = pytest.mark.skipif("cpu" not in _ext.compiled_backends(),
                                reason="needs the compiled CPU extension")

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

RNG = np.random.default_rng()


def _bf(t):
    """The float64 value of t rounded to bfloat16 (round to nearest even)."""
    return t.to(torch.bfloat16).double()


def _strided(rows, cols, pad, gen, dtype=torch.float32):
    return torch.randn(rows, cols + pad, generator=gen).to(dtype)[:, :cols]


def _check_product(R, S, Q, pad, beta, use_bias, relu, seed):
    gen = torch.Generator().manual_seed(seed)
    A = _strided(R, Q, pad, gen, torch.bfloat16)
    B = _strided(Q, S, pad, gen)
    C0 = _strided(R, S, pad, gen)
    C = C0.clone() if beta != 0.0 else torch.full_like(C0, float("nan"))
    C = torch.as_strided(torch.empty(R * (S + pad)), (R, S), (S + pad, 1)).copy_(C)
    bias = torch.randn(R, generator=gen) if use_bias else None
    want = A.double() @ _bf(B)
    if beta != 0.0:
        want = want + beta * C0.double()
    if use_bias:
        want = want + bias.double()[:, None]
    if relu:
        want = want.clamp_min(0)
    _ext._C._bf16_gemm(A, B, C, beta, bias, relu)
    assert torch.isfinite(C).all()
    # exact products of the rounded operands, float32 sums over Q terms of size ~1
    bound = 1e-6 * (Q ** 0.5) * 8 + 1e-6
    assert (C.double() - want).abs().max().item() < bound


@settings(max_examples=60, deadline=None)
@given(R=st.integers(1, 40), S=st.integers(1, 120), Q=st.integers(1, 1100), pad=st.integers(0, 5),
       beta=st.sampled_from([0.0, 1.0, -0.5]), use_bias=st.booleans(), relu=st.booleans(),
       seed=st.integers(0, 2**31 - 1))
def test_bf16_product_is_the_exact_product_of_rounded_operands(R, S, Q, pad, beta, use_bias, relu,
                                                               seed):
    """Rows across the 8-row tile, columns across the 16-lane vectors and 48-column panels, odd
    depths (a half-empty last pair) and depths across the 512-deep blocks."""
    _check_product(R, S, Q, pad, beta, use_bias, relu, seed)


def test_large_bf16_product_outside_a_parallel_region():
    """Big enough to be split over column panels between threads."""
    _check_product(96, 1000, 300, 3, 0.0, True, True, int(RNG.integers(1 << 31)))


def test_emulated_bf16_product_in_a_subprocess():
    """POSEKERNELS_CPU_GEMM=blas: the operands rounded the same way, through the float32
    product (what a CPU without AVX-512 BF16 runs)."""
    code = (
        "import sys; sys.path.insert(0, 'tests')\n"
        "from posekernels import _ext\n"
        "assert _ext._C.build_info()['cpu_bf16'] == 'emulated'\n"
        "from test_bf16 import _check_product\n"
        "for i, (R, S, Q) in enumerate([(1, 1, 1), (9, 50, 3), (17, 97, 513), (40, 130, 1100)]):\n"
        f"    _check_product(R, S, Q, i % 3, [0.0, 1.0, -0.5][i % 3], i % 2 == 0, i % 2 == 1, "
        f"{int(RNG.integers(1 << 30))} + i)\n")
    env = dict(os.environ, POSEKERNELS_CPU_GEMM="blas")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]


def _local_scale(scale, frames=12):
    """The largest term magnitude within +-frames of each output frame (Winograd tiles mix
    neighbouring outputs)."""
    return F.max_pool2d(scale, (2 * frames + 1, 1), stride=1, padding=(frames, 0))


@pytest.mark.parametrize("k,stride", [(9, 1), (9, 3), (3, 1), (5, 1)])
def test_temporal_conv_with_bf16_weights(k, stride):
    """tconv_forward with a bfloat16 transformed weight (and 1x1 residual weight): the Winograd
    components' operands are rounded, which costs more than rounding a direct convolution's
    operands (measured over 200 draws: 3.8e-2 of the local term scale at worst, against 4e-3 for
    a direct convolution of rounded operands); bound 0.1 of the local scale, and the error must
    be that of bfloat16, not of float32 (the bf16 path ran)."""
    worst = 0.0
    for _ in range(4):
        g = torch.Generator().manual_seed(int(RNG.integers(1 << 31)))
        N, C, O, V = 2, int(RNG.integers(1, 40)), int(RNG.integers(1, 40)), 5
        T = int(RNG.integers(k, 60))
        pad = (k - 1) // 2
        x = torch.randn(N, C, T, V, generator=g)
        w = torch.randn(O, C, k, generator=g)
        b = torch.randn(O, generator=g)
        t_out = (T + 2 * pad - k) // stride + 1
        Cr = int(RNG.integers(1, 20))
        r = torch.randn(N, Cr, t_out, V, generator=g)
        rw = torch.randn(O, Cr, generator=g)
        wt = unchecked.temporal_conv_weight(w, stride)
        got = unchecked.temporal_conv(x, wt.bfloat16(), k, stride, b, r, pad, pad, False,
                                      residual_w=rw.bfloat16())
        res = torch.einsum("oc,nctv->notv", rw.double(), r.double())
        want = reference.temporal_conv(x.double(), w.double(), b.double(), res, (pad, pad), False,
                                       stride)
        res_abs = torch.einsum("oc,nctv->notv", rw.double().abs(), r.double().abs())
        scale = reference.temporal_conv(x.double().abs(), w.double().abs(), b.double().abs(),
                                        res_abs, (pad, pad), False, stride)
        err = ((got.double() - want).abs() / _local_scale(scale)).max().item()
        assert err < 0.1
        worst = max(worst, err)
    assert worst > 1e-5  # float32 would be ~1e-6


@pytest.mark.parametrize("bf16_embedding", [False, True])
def test_graph_unit_with_bf16_weights(bf16_embedding):
    """agc_unit_forward with bfloat16 W and 1x1 shortcut weight against float64: the channel
    mix's operands rounded (the joint mixing, the softmax term and the epilogue stay float32):
    within 2^-7 of the sum of the terms' magnitudes, and visibly not float32. With bfloat16
    attention embeddings too, the softmax term moves with the rounded logits: within 2^-6 of the
    terms (logits of size ~1 here)."""
    g = torch.Generator().manual_seed(int(RNG.integers(1 << 31)))
    N, C, O, T, V, K, E = 3, int(RNG.integers(2, 40)), int(RNG.integers(2, 40)), 11, 17, 3, 4
    x = torch.randn(N, C, T, V, generator=g)
    A = torch.rand(K, V, V, generator=g) / V
    W = torch.randn(K, O, C, generator=g)
    bias = torch.randn(K, O, generator=g)
    B = torch.randn(K, V, V, generator=g) * 0.1
    th = torch.randn(K, E, C, generator=g) / C ** 0.5
    ph = torch.randn(K, E, C, generator=g) / C ** 0.5
    sw, sb = torch.randn(O, C, generator=g), torch.randn(O, generator=g)
    emb = (lambda t: t.bfloat16()) if bf16_embedding else (lambda t: t)
    got = unchecked.graph_unit(x, A, W.bfloat16(), bias, B, emb(th), None, emb(ph), None,
                               sw.bfloat16(), sb, relu=False)
    want = (reference.adaptive_graph_conv(x.double(), A.double(), W.double(), bias.double(),
                                          B.double(), th.double(), None, ph.double(), None)
            + torch.einsum("oc,nctv->notv", sw.double(), x.double()) + sb.double()[:, None, None])
    # magnitudes: |W| applied to |x M| (M = A + B + the attention, rows summing to <= ~2)
    mix = reference.adaptive_graph_conv(x.double().abs(), A.double().abs() + B.double().abs() + 1,
                                        W.double().abs(), None, None, None, None, None, None)
    terms = mix + torch.einsum("oc,nctv->notv", sw.double().abs(), x.double().abs())
    err = (got.double() - want).abs()
    assert (err <= (2 ** -6 if bf16_embedding else 2 ** -7) * terms + 1e-5).all()
    assert err.max().item() > 1e-5 * terms.max().item()


def test_weight_dtype_rules():
    x = torch.randn(1, 4, 9, 5)
    wt = unchecked.temporal_conv_weight(torch.randn(6, 4, 9), 1)
    with pytest.raises(TypeError, match="weight_t has dtype torch.float16"):
        unchecked.temporal_conv(x, wt.half(), 9, 1, None, None, 4, 4, False)
    with pytest.raises(TypeError, match="weight_t has dtype torch.bfloat16 but x has dtype "
                                        "torch.float64"):
        unchecked.temporal_conv(x.double(), wt.bfloat16(), 9, 1, None, None, 4, 4, False)
    A, W = torch.rand(2, 5, 5), torch.randn(2, 6, 4)
    with pytest.raises(TypeError, match="W has dtype torch.bfloat16 but x has dtype torch.float64"):
        unchecked.graph_unit(x.double(), A.double(), W.bfloat16(), None, None, None, None, None,
                             None, None, None)
    with pytest.raises(TypeError, match="shortcut_w has dtype torch.float16"):
        unchecked.graph_unit(x, A, W, None, None, None, None, None, None, torch.randn(6, 4).half(),
                             None)
    with pytest.raises(TypeError, match="phi_w has dtype torch.float32 but theta_w has dtype "
                                        "torch.bfloat16"):
        unchecked.graph_unit(x, A, W, None, None, torch.randn(2, 3, 4).bfloat16(), None,
                             torch.randn(2, 3, 4), None, None, None)
    # the training op keeps one dtype
    with pytest.raises(TypeError, match="W has dtype torch.bfloat16"):
        unchecked.adaptive_graph_conv(x, A, W.bfloat16(), None, None, None, None, None, None)


def _glagcn(**kw):
    torch.manual_seed(int(RNG.integers(1 << 31)))
    model = GLAGCN(receptive_field=27, channels=16, **kw).eval()
    for m in model.modules():
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            m.running_mean.normal_(0, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    return model


@pytest.mark.parametrize("kw", [dict(), dict(causal=True, head="shared", sequence_branch=False),
                                dict(window_norm=True, head="shared", sequence_branch=False)])
def test_bf16_plan_against_the_float64_model(kw):
    model = _glagcn(**kw)
    x = torch.randn(6, 27, 17, 2) * 0.5
    with torch.no_grad():
        want = model.double()(x.double())[:, 0]
        model.float()
        got32 = build_plan(model)(x)
        got16 = build_plan(model, precision="bf16")(x)
    scale = want.abs().max().item()
    err16 = (got16.double() - want).abs().max().item()
    err32 = (got32.double() - want).abs().max().item()
    assert err16 < 3e-2 * scale
    assert err16 > 10 * err32  # the bf16 path ran
    plan = build_plan(model, precision="bf16")
    assert plan.precision == "bf16"
    assert plan.expand.gcn.W.dtype == torch.bfloat16
    assert plan.stages[0].block1.tcn.weight_t.dtype == torch.bfloat16
    assert plan.head_W.dtype == torch.float32
    if plan.expand.gcn.theta_w is not None:
        assert plan.expand.gcn.theta_w.dtype == torch.bfloat16


def test_bf16_stream_equals_lift_sequence():
    T = 9
    model = metre_glagcn(T, bool(RNG.integers(2)), int(RNG.integers(1 << 30)))
    S = 3
    lengths = [int(RNG.integers(1, 3 * T)) for _ in range(S)]
    starts = [int(RNG.integers(0, 5)) for _ in range(S)]
    seqs = [torch.from_numpy(RNG.normal(size=(n, 17, 2)).astype(np.float32) * 0.5)
            for n in lengths]
    lifter = StreamingLifter(model, num_streams=S, precision="bf16")
    assert lifter.precision == "bf16"
    outs, _ = stream_staggered(lifter, seqs, starts)
    for i in range(S):
        want = lift_sequence(model, seqs[i], precision="bf16")
        plain = lift_sequence(model, seqs[i])
        got = torch.stack(outs[i])
        assert (got - want).abs().max().item() < 1e-5 * max(1.0, want.abs().max().item())
        assert (want - plain).abs().max().item() > 0


def test_bf16_errors():
    model = _glagcn(head="shared", sequence_branch=False)
    with pytest.raises(ValueError, match="precision must be one of"):
        build_plan(model, precision="float16")
    with pytest.raises(ValueError, match="precision='bf16' needs a float32 model"):
        build_plan(model.double(), precision="bf16")
    model.float()
    with pytest.raises(ValueError, match="precision='bf16' needs a float32 model"):
        build_plan(model, precision="bf16", backend="reference")
    with pytest.raises(ValueError, match="needs a folded GLA-GCN plan"):
        build_plan(model, precision="bf16", fold=False)
    with pytest.raises(ValueError, match="it needs fold=True"):
        lift_sequence(model, np.zeros((5, 17, 2), np.float32) + 0.1, precision="bf16",
                      fold=False)
    with pytest.raises(ValueError, match="precision must be one of"):
        StreamingLifter(model, precision="half")
