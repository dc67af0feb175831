"""The bfloat16 weight products of the CPU kernels: the inference plans (build_plan(precision=
"bf16")) and the graph op's training path under bf16 autocast.

The product kernels (csrc/cpu/gemm_bf16.cpp: a bfloat16 weight, or two float32 operands, the
second one optionally transposed) against the exact float64 product of the bfloat16-rounded
operands, on the AVX-512 BF16 path and on the emulated one; the two inference operators with
bfloat16 weights against float64 references; the graph op's forward and backward with bfloat16
weights against a float64 oracle that rounds exactly the operands the kernels round; the dtype
rules; the plan, the streaming lifter and lift_sequence with precision="bf16"; and the errors for
what it cannot do.
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


def _check_rounded_product(R, S, Q, pad, beta, trans_b, seed):
    """_bf16_gemm_rounded: both float32 operands rounded to bfloat16, op(B) = B or B^T."""
    gen = torch.Generator().manual_seed(seed)
    A = _strided(R, Q, pad, gen)
    B = _strided(S, Q, pad, gen) if trans_b else _strided(Q, S, pad, gen)
    C0 = _strided(R, S, pad, gen)
    C = torch.as_strided(torch.empty(R * (S + pad)), (R, S), (S + pad, 1))
    C.copy_(C0 if beta != 0.0 else torch.full_like(C0, float("nan")))
    want = _bf(A) @ (_bf(B).t() if trans_b else _bf(B))
    if beta != 0.0:
        want = want + beta * C0.double()
    _ext._C._bf16_gemm_rounded(A, B, C, trans_b, beta)
    assert torch.isfinite(C).all()
    assert (C.double() - want).abs().max().item() < 1e-6 * (Q ** 0.5) * 8 + 1e-6


@settings(max_examples=60, deadline=None)
@given(R=st.integers(1, 40), S=st.integers(1, 120), Q=st.integers(1, 1100), pad=st.integers(0, 5),
       beta=st.sampled_from([0.0, 1.0, -0.5]), trans_b=st.booleans(),
       seed=st.integers(0, 2**31 - 1))
def test_rounded_bf16_product_is_the_exact_product_of_rounded_operands(R, S, Q, pad, beta,
                                                                        trans_b, seed):
    """Both operands float32 (the graph op's weight-gradient products): transposed panels
    across 16 x 16 register tiles, odd depths, depths across the 512-deep blocks."""
    _check_rounded_product(R, S, Q, pad, beta, trans_b, seed)


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
        "from test_bf16 import _check_product, _check_rounded_product\n"
        "for i, (R, S, Q) in enumerate([(1, 1, 1), (9, 50, 3), (17, 97, 513), (40, 130, 1100)]):\n"
        f"    _check_product(R, S, Q, i % 3, [0.0, 1.0, -0.5][i % 3], i % 2 == 0, i % 2 == 1, "
        f"{int(RNG.integers(1 << 30))} + i)\n"
        "    _check_rounded_product(R, S, Q, i % 3, [0.0, 1.0, -0.5][i % 3], i % 2 == 0, "
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


def _pack_case_outputs(seed):
    """bf16 results whose B operands the fused pack writes (tests below): raw temporal
    convolutions over shapes whose columns cross the products' 48-column panels, odd depths (the
    last pair half empty), strides and residual maps; and bf16 plans of small GLA-GCNs (graph
    units with identity, 1x1 and no shortcut; 2 and 4 input channels), one sample (time blocks
    over two threads) and several. Deterministic in ``seed``."""
    from _tiny_models import randomize_bn_affine_

    rng = np.random.default_rng(seed)
    outs = []
    threads = torch.get_num_threads()
    try:
        for i in range(10):
            g = torch.Generator().manual_seed(int(rng.integers(1 << 31)))
            k, stride = [(9, 1), (9, 3), (3, 1), (5, 1), (7, 3)][i % 5]
            N, C, O = int(rng.integers(1, 4)), int(rng.integers(1, 50)), int(rng.integers(1, 40))
            V = int(rng.choice([1, 5, 16, 17, 33]))
            T = int(rng.integers(k, 90))
            pad = (k - 1) // 2
            t_out = (T + 2 * pad - k) // stride + 1
            Cr = int(rng.integers(1, 20))
            x = torch.randn(N, C, T, V, generator=g) + 0.5
            wt = unchecked.temporal_conv_weight(torch.randn(O, C, k, generator=g), stride)
            b = torch.randn(O, generator=g)
            r = torch.randn(N, Cr, t_out, V, generator=g) if i % 2 == 0 else None
            rw = torch.randn(O, Cr, generator=g).bfloat16() if i % 2 == 0 else None
            torch.set_num_threads(1 + i % 2)
            outs.append(unchecked.temporal_conv(x, wt.bfloat16(), k, stride, b, r, pad, pad,
                                                i % 3 == 0, residual_w=rw))
        for j, kw in enumerate([dict(), dict(window_norm=True, head="shared",
                                             sequence_branch=False)]):
            g = torch.Generator().manual_seed(int(rng.integers(1 << 31)))
            torch.manual_seed(int(rng.integers(1 << 31)))
            model = randomize_bn_affine_(GLAGCN(receptive_field=27, channels=16, **kw).eval(), g)
            plan = build_plan(model, precision="bf16")
            for n, th in [(1, 2), (5, 1), (5, 2)]:
                torch.set_num_threads(th)
                with torch.no_grad():
                    outs.append(plan(torch.randn(n, 27, 17, 2, generator=g) * 0.5))
    finally:
        torch.set_num_threads(threads)
    return outs


def test_fused_bf16_pack_gives_the_bits_of_the_separate_pack(tmp_path):
    """With AVX-512 BF16 the producers of the bf16 products' B operands (the temporal
    convolution's Winograd input transform, the graph unit's joint mixing) write them packed
    themselves, and an identity shortcut enters the graph unit's product store without a copy;
    POSEKERNELS_CPU_BF16_PACK=separate (a subprocess) writes float32 rows that the product packs.
    Same rounding, same sums: the same bits."""
    from posekernels import build_info

    if build_info()["cpu_bf16_pack"] != "fused":
        pytest.skip("no AVX-512 BF16 here: the fused pack does not run")
    seed = int(RNG.integers(1 << 31))
    dst = tmp_path / "separate.pt"
    code = ("import sys, torch; sys.path.insert(0, 'tests')\n"
            "from posekernels import build_info\n"
            "assert build_info()['cpu_bf16_pack'] == 'separate'\n"
            "from test_bf16 import _pack_case_outputs\n"
            f"torch.save(_pack_case_outputs({seed}), sys.argv[1])\n")
    env = dict(os.environ, POSEKERNELS_CPU_BF16_PACK="separate")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code, str(dst)], cwd=root, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    want = torch.load(dst)
    got = _pack_case_outputs(seed)
    assert len(got) == len(want) == 16
    for i, (a, b) in enumerate(zip(got, want)):
        assert torch.isfinite(a).all()
        assert torch.equal(a, b), (i, (a - b).abs().max().item())


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
    # the training op: bfloat16 weights only with a float32 x, never float16
    with pytest.raises(TypeError, match="W has dtype torch.bfloat16 but x has dtype torch.float64"):
        unchecked.adaptive_graph_conv(x.double(), A.double(), W.bfloat16(), None, None, None,
                                      None, None, None)
    with pytest.raises(TypeError, match="W has dtype torch.float16"):
        unchecked.adaptive_graph_conv(x, A, W.half(), None, None, None, None, None, None)
    with pytest.raises(TypeError, match="bias has dtype torch.bfloat16"):
        unchecked.adaptive_graph_conv(x, A, W.bfloat16(), torch.randn(2, 6).bfloat16(), None,
                                      None, None, None, None)


class _RoundedProduct(torch.autograd.Function):
    """a @ b on bfloat16-rounded operands with float64 sums, and its gradients the same way
    (bf16(g) @ bf16(b)^T, bf16(a)^T @ bf16(g)): what the cpu kernels' bf16 products compute."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return _bf(a) @ _bf(b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        ga = _bf(g) @ _bf(b).transpose(-1, -2)
        gb = _bf(a).transpose(-1, -2) @ _bf(g)
        return ga.sum_to_size(a.shape), gb.sum_to_size(b.shape)


def _agc_bf16_oracle(x, A, W, bias, B, theta_w, theta_b, phi_w, phi_b):
    """adaptive_graph_conv in float64 with the weight products (the embedding and the channel
    mix) on bfloat16-rounded operands: every other product (joint mixing, the attention's
    (V, V) products) unrounded, as in the kernels."""
    n, c, t, v = x.shape
    k, o, _ = W.shape
    e = theta_w.shape[1]
    xs = x.reshape(n, c, t * v)
    tp = _RoundedProduct.apply(torch.cat([theta_w, phi_w]).reshape(2 * k * e, c), xs)
    tp = tp.reshape(n, 2, k, e, t, v) + torch.stack([theta_b, phi_b])[None, :, :, :, None, None]
    s = torch.einsum("nketv,nketw->nkvw", tp[:, 0], tp[:, 1]) / (e * t)
    m = A + B + torch.softmax(s, dim=-2)
    z = torch.einsum("nctv,nkvw->nkctw", x, m).reshape(n, k * c, t * v)
    y = _RoundedProduct.apply(W.permute(1, 0, 2).reshape(o, k * c), z)
    return (y + bias.sum(0)[None, :, None]).reshape(n, o, t, v)


@pytest.mark.parametrize("n,c,t,o,e", [(3, 12, 9, 10, 4), (2, 33, 27, 20, 7), (5, 8, 1, 16, 3)])
def test_graph_op_with_bf16_weights_against_the_float64_oracle(n, c, t, o, e):
    """agc_forward / agc_backward with bfloat16 W, theta_w, phi_w and a float32 x (the cpu
    backend under bf16 autocast): outputs and every gradient against the float64 oracle that
    rounds the same operands (odd depths, several time blocks, more samples than threads); the
    weights' gradients come back in bfloat16."""
    gen = torch.Generator().manual_seed(int(RNG.integers(1 << 31)))
    v, k = 17, 3
    x = torch.randn(n, c, t, v, generator=gen)
    A = torch.rand(k, v, v, generator=gen)
    W, bias = torch.randn(k, o, c, generator=gen) / c ** 0.5, torch.randn(k, o, generator=gen)
    B = torch.randn(k, v, v, generator=gen) * 0.1
    tw, pw = (torch.randn(k, e, c, generator=gen) / c ** 0.5 for _ in range(2))
    tb, pb = torch.randn(k, e, generator=gen), torch.randn(k, e, generator=gen)
    gy = torch.randn(n, o, t, v, generator=gen)
    bf = [a.bfloat16() for a in (W, tw, pw)]
    y, attn = torch.ops.posekernels.agc_forward(x, A, bf[0], bias, B, bf[1], tb, bf[2], pb)
    grads = torch.ops.posekernels.agc_backward(gy, x, A, bf[0], bias, B, bf[1], tb, bf[2], pb,
                                               attn)
    assert y.dtype == torch.float32
    assert [g.dtype for g in grads] == [torch.float32, torch.bfloat16, torch.float32,
                                        torch.float32, torch.bfloat16, torch.float32,
                                        torch.bfloat16, torch.float32]

    leaves = [a.double().requires_grad_() for a in (x, bf[0], bias, B, bf[1], tb, bf[2], pb)]
    lx, lW, lbias, lB, ltw, ltb, lpw, lpb = leaves
    want = _agc_bf16_oracle(lx, A.double(), lW, lbias, lB, ltw, ltb, lpw, lpb)
    want_grads = torch.autograd.grad(want, leaves, gy.double())

    def close(got, ref, name, rel):
        # float32 sums; where a float32 intermediate and its float64 value round to different
        # bfloat16 neighbours, one term moves by 2^-8 of itself: bounded by rel of the scale
        scale = ref.abs().max().item()
        err = (got.double() - ref).abs().max().item()
        assert err <= rel * scale + 1e-6, (name, err, scale)

    close(y, want.detach(), "y", 1e-3)
    names = ["x", "W", "bias", "B", "theta_w", "theta_b", "phi_w", "phi_b"]
    for g, w, name in zip(grads, want_grads, names):
        if name == "theta_b":  # exactly zero (the softmax ignores it)
            assert torch.count_nonzero(g) == 0
            continue
        # the weights' gradients also carry their own rounding to bfloat16 (2^-9)
        close(g, w, name, 6e-3 if g.dtype == torch.bfloat16 else 1e-3)
    # and the rounding is really there: on average the output lies far closer to the oracle
    # than to the unrounded float64 op (the rare rounding flips above dominate only the maximum)
    plain = reference.adaptive_graph_conv(x.double(), A.double(), bf[0].double(), bias.double(),
                                          B.double(), bf[1].double(), tb.double(), bf[2].double(),
                                          pb.double())
    assert (y.double() - plain).abs().mean() > 10 * (y.double() - want.detach()).abs().mean()


def test_opcheck_graph_op_with_bf16_weights():
    """The fake kernels and autograd registration hold for the mixed-dtype call too (float32
    outputs, bfloat16 gradients of the bfloat16 weights)."""
    gen = torch.Generator().manual_seed(int(RNG.integers(1 << 31)))
    x = torch.randn(2, 6, 5, 7, generator=gen, requires_grad=True)
    A = torch.rand(2, 7, 7, generator=gen)
    W = torch.randn(2, 4, 6, generator=gen).bfloat16().requires_grad_()
    tw, pw = (torch.randn(2, 3, 6, generator=gen).bfloat16().requires_grad_() for _ in range(2))
    bias, B = torch.randn(2, 4, generator=gen), torch.randn(2, 7, 7, generator=gen)
    args = (x, A, W, bias.requires_grad_(), B.requires_grad_(), tw, None, pw, None)
    torch.library.opcheck(torch.ops.posekernels.agc_forward.default, args)
    y, attn = torch.ops.posekernels.agc_forward(*args)
    bargs = (torch.randn_like(y), *(a.detach() if a is not None else None for a in args), attn)
    torch.library.opcheck(torch.ops.posekernels.agc_backward.default, bargs)


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
