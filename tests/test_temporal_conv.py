"""The inference kernels of the CPU plan: the Winograd temporal convolution with fused epilogue
(posekernels.ops.temporal_conv / posekernels::tconv_forward) and the graph unit with fused
shortcut + ReLU (posekernels::agc_unit_forward), against float64 references."""
from __future__ import annotations

import math
import pytest
import torch
import torch.nn.functional as F

from posekernels import _ext, ops
from posekernels.ops import reference

pytestmark = pytest.mark.skipif("cpu" not in _ext.compiled_backends(),
                                reason="needs the compiled CPU extension")

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


def _conv64(x, w, b, r, pads, relu, stride=1):
    return reference.temporal_conv(x.double(), w.double(), None if b is None else b.double(),
                                   None if r is None else r.double(), pads, relu, stride)


@settings(max_examples=60, deadline=None)
@given(N=st.integers(1, 3), C=st.integers(1, 20), O=st.integers(1, 20), T=st.integers(1, 40),
       V=st.integers(1, 19), k=st.integers(1, 11), stride=st.sampled_from([1, 1, 2, 3]),
       left=st.integers(0, 6), right=st.integers(0, 6),
       use_bias=st.booleans(), use_res=st.booleans(), relu=st.booleans(),
       seed=st.integers(0, 2**31 - 1))
def test_temporal_conv_matches_float64(N, C, O, T, V, k, stride, left, right, use_bias, use_res,
                                       relu, seed):
    if T + left + right < k:
        return
    t_out = (T + left + right - k) // stride + 1
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, C, T, V, generator=g)
    w = torch.randn(O, C, k, generator=g)
    b = torch.randn(O, generator=g) if use_bias else None
    r = torch.randn(N, O, t_out, V, generator=g) if use_res else None
    for dtype in (torch.float64, torch.float32):
        got = ops.temporal_conv(x.to(dtype), w.to(dtype), None if b is None else b.to(dtype),
                                residual=None if r is None else r.to(dtype),
                                padding=(left, right), stride=stride, relu=relu, backend="cpu")
        want = _conv64(x, w, b, r, (left, right), relu, stride)
        assert got.shape == want.shape == (N, O, t_out, V)
        if dtype == torch.float64:
            assert (got - want).abs().max().item() < 1e-10
        else:
            # Winograd F(4, 3) in float32: a tile of 4 outputs mixes its inputs, so an output's
            # error is relative to the magnitudes of the terms of the outputs near it (frames
            # within +-12 here); over 480 draws with k = 3..12 it stayed within 2.2e-6 of the
            # output's own terms (k < 3 runs the direct reference); bound 1e-5 of the local scale
            scale = _conv64(x.abs(), w.abs(), None if b is None else b.abs(),
                            None if r is None else r.abs(), (left, right), False, stride)
            local = F.max_pool2d(scale, (25, 1), stride=1, padding=(12, 0))
            assert ((got.double() - want).abs() <= 1e-5 * local + 1e-7).all()


def test_temporal_conv_model_sized_layer():
    """The (9, 1) layer of GLA-GCN at C = 96, T = 81, V = 17 with residual and ReLU."""
    g = torch.Generator().manual_seed(torch.seed() % 2**31)
    x = torch.relu(torch.randn(2, 96, 81, 17, generator=g))
    w = torch.randn(96, 96, 9, 1, generator=g) / (96 * 9) ** 0.5
    b, r = torch.randn(96, generator=g), torch.randn(2, 96, 81, 17, generator=g)
    got = ops.temporal_conv(x, w, b, residual=r, relu=True)
    want = _conv64(x, w, b, r, (4, 4), True)
    assert (got.double() - want).abs().max().item() < 1e-5 * want.abs().max().item()


def test_temporal_conv_strided_model_layer():
    """The stride-3 (9, 1) layer of a strided module at C = 96, T = 81 -> 27, with ReLU."""
    g = torch.Generator().manual_seed(torch.seed() % 2**31)
    x = torch.relu(torch.randn(3, 96, 81, 17, generator=g))
    w = torch.randn(96, 96, 9, 1, generator=g) / (96 * 9) ** 0.5
    b = torch.randn(96, generator=g)
    got = ops.temporal_conv(x, w, b, stride=3, relu=True)
    want = _conv64(x, w, b, None, (4, 4), True, 3)
    assert got.shape == (3, 96, 27, 17)
    assert (got.double() - want).abs().max().item() < 1e-5 * want.abs().max().item()


@pytest.mark.parametrize("N, T", [(1, 30), (3, 13)])
def test_tconv_fused_1x1_residual(N, T):
    """residual_w: the residual term is a 1x1 map of another input (the expand block's shortcut
    from the 2 input coordinates)."""
    g = torch.Generator().manual_seed(torch.seed() % 2**31)
    h, xin = torch.randn(N, 12, T, 17, generator=g), torch.randn(N, 2, T, 17, generator=g)
    w, b = torch.randn(12, 12, 9, generator=g), torch.randn(12, generator=g)
    rw, rb = torch.randn(12, 2, generator=g), torch.randn(12, generator=g)
    want = torch.relu(_conv64(h, w, b + rb, None, (4, 4), False)
                      + torch.einsum("oc,nctv->notv", rw.double(), xin.double()))
    for dtype, bound in ((torch.float64, 1e-10), (torch.float32, 1e-5)):
        wt = torch.ops.posekernels.tconv_transform_weight(w.to(dtype), 1)
        got = torch.ops.posekernels.tconv_forward(h.to(dtype), wt, 9, 1, (b + rb).to(dtype),
                                                  xin.to(dtype), rw.to(dtype)[..., None, None],
                                                  4, 4, True)
        assert (got.double() - want).abs().max().item() < bound * want.abs().max().item()


def _draw_tconv_case(gen):
    """A random training-convolution case: k >= 3 * stride, paddings below k."""
    stride = int(torch.randint(1, 4, (), generator=gen))
    k = int(torch.randint(3 * stride, 3 * stride + 5, (), generator=gen))
    pl, pr = (int(v) for v in torch.randint(0, k, (2,), generator=gen))
    T = max(1, k - pl - pr) + int(torch.randint(0, 30, (), generator=gen))
    N, C, O, V = (int(v) for v in torch.randint(1, 6, (4,), generator=gen))
    return N, C, O, T, V, k, stride, pl, pr


@pytest.mark.parametrize("draw", range(12))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_temporal_conv_gradients_match_float64(draw, dtype):
    """ops.temporal_conv with gradients (cpu backend: Winograd forward and input gradient,
    oneDNN weight gradient) against F.conv2d in float64: output, x, weight, bias, residual."""
    gen = torch.Generator().manual_seed(int(torch.randint(0, 2 ** 31, ())))
    N, C, O, T, V, k, s, pl, pr = _draw_tconv_case(gen)
    x64 = torch.randn(N, C, T, V, dtype=torch.float64, generator=gen)
    w64 = torch.randn(O, C, k, dtype=torch.float64, generator=gen) / math.sqrt(C * k)
    b64 = torch.randn(O, dtype=torch.float64, generator=gen)
    t_out = (T + pl + pr - k) // s + 1
    r64 = torch.randn(N, O, t_out, V, dtype=torch.float64, generator=gen)
    leaves = [t.to(dtype).requires_grad_() for t in (x64, w64, b64, r64)]
    x, w, b, r = leaves
    y = ops.temporal_conv(x, w, b, residual=r, padding=(pl, pr), stride=s, relu=True,
                          backend="cpu")
    leaves64 = [t.clone().requires_grad_() for t in (x64, w64, b64, r64)]
    xx, ww, bb, rr = leaves64
    ref = F.relu(F.conv2d(F.pad(xx, (0, 0, pl, pr)), ww[..., None], bb, stride=(s, 1)) + rr)
    g = torch.randn(ref.shape, dtype=torch.float64, generator=gen)
    got = torch.autograd.grad(y, leaves, g.to(dtype))
    want = torch.autograd.grad(ref, leaves64, g)
    tol = 2e-5 if dtype == torch.float32 else 1e-11
    case = dict(N=N, C=C, O=O, T=T, V=V, k=k, stride=s, pads=(pl, pr))
    assert (y.double() - ref).abs().max().item() <= tol * (ref.abs().max().item() + 1), case
    for name, a, e in zip("xwbr", got, want):
        err = (a.double() - e).abs().max().item()
        assert err <= tol * (e.abs().max().item() + 1), (name, err, case)


def test_temporal_conv_train_gradcheck_opcheck_compile():
    x = torch.randn(2, 3, 11, 2, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 3, 9, 1, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True)
    fwd = torch.ops.posekernels.tconv_train_forward
    for stride, pl, pr in [(1, 4, 4), (3, 4, 4), (3, 6, 0), (2, 8, 1)]:
        assert torch.autograd.gradcheck(lambda *a: fwd(*a, stride, pl, pr), (x, w, b))
        torch.library.opcheck(fwd, (x, w, b, stride, pl, pr))
        torch.library.opcheck(fwd, (x.float(), w.float(), None, stride, pl, pr))

    def f(x, w, b):
        return ops.temporal_conv(x, w, b, padding=(6, 0), stride=3, relu=True).square().sum()

    xf, wf, bf = (t.detach().float().requires_grad_() for t in (x, w, b))
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    g1 = torch.autograd.grad(compiled(xf, wf, bf), (xf, wf, bf))
    g2 = torch.autograd.grad(f(xf, wf, bf), (xf, wf, bf))
    for a, e in zip(g1, g2):
        torch.testing.assert_close(a, e)


def test_temporal_conv_train_refuses_what_it_cannot_run():
    x, w = torch.randn(1, 3, 10, 4), torch.randn(5, 3, 9)
    with pytest.raises(ValueError, match="at least 3 taps in every stride phase"):
        torch.ops.posekernels.tconv_train_forward(x, w, None, 4, 4, 4)
    with pytest.raises(ValueError, match="pad_left and pad_right"):
        torch.ops.posekernels.tconv_train_forward(x, w, None, 1, 9, 0)
    with pytest.raises(ValueError, match="input channels"):
        torch.ops.posekernels.tconv_train_forward(x, torch.randn(5, 2, 9), None, 1, 4, 4)
    with pytest.raises(TypeError, match="float32 or float64"):
        torch.ops.posekernels.tconv_train_forward(x.half(), w.half(), None, 1, 4, 4)
    with pytest.raises(ValueError, match="grad_y must have shape"):
        torch.ops.posekernels.tconv_train_backward(torch.randn(1, 5, 9, 4), x, w, 1, 4, 4, False)
    # the front end sends those cases (and 16-bit training) to the reference formulation
    xs = x.clone().requires_grad_()
    y = ops.temporal_conv(xs, w, stride=4)
    y.sum().backward()
    assert xs.grad is not None and y.shape == (1, 5, 3, 4)
    xb = x.to(torch.bfloat16).requires_grad_()
    ops.temporal_conv(xb, w.to(torch.bfloat16)).sum().backward()
    assert xb.grad.dtype == torch.bfloat16


@pytest.mark.parametrize("call, exc, msg", [
    (lambda: ops.temporal_conv(torch.randn(2, 3, 10), torch.randn(4, 3, 9)), ValueError,
     r"x must have shape \(N, C, T, V\)"),
    (lambda: ops.temporal_conv(torch.randn(1, 3, 10, 4), torch.randn(4, 2, 9)), ValueError,
     r"weight must have shape \(O, C, k\) = \(O, 3, k\)"),
    (lambda: ops.temporal_conv(torch.randn(1, 3, 4, 4), torch.randn(4, 3, 9), padding=0),
     ValueError, "must be >= the kernel size 9"),
    (lambda: ops.temporal_conv(torch.randn(1, 3, 10, 4), torch.randn(4, 3, 9), stride=0),
     ValueError, "stride must be an int >= 1"),
    (lambda: ops.temporal_conv(torch.randn(1, 3, 10, 4), torch.randn(4, 3, 9), torch.randn(3)),
     ValueError, r"bias must have shape \(O,\)"),
    (lambda: ops.temporal_conv(torch.randn(1, 3, 10, 4), torch.randn(4, 3, 9),
                               residual=torch.randn(1, 4, 9, 4)), ValueError, "residual"),
    (lambda: ops.temporal_conv(torch.randn(1, 3, 10, 4), torch.randn(4, 3, 9), padding=(1, -1)),
     ValueError, "padding must be >= 0"),
    (lambda: ops.temporal_conv(torch.randn(1, 3, 10, 4), torch.randn(4, 3, 9), padding="same"),
     TypeError, "padding must be None, an int or a pair"),
    (lambda: torch.ops.posekernels.tconv_forward(torch.randn(1, 3, 10, 4), torch.randn(6, 4, 5),
                                                 9, 1, None, None, None, 4, 4, False),
     ValueError, r"weight_t must be the transformed weight"),
    (lambda: torch.ops.posekernels.tconv_forward(torch.randn(1, 3, 10, 4), torch.randn(6, 4, 9),
                                                 9, 0, None, None, None, 4, 4, False),
     ValueError, "stride must be >= 1"),
    (lambda: torch.ops.posekernels.tconv_forward(
        torch.randn(1, 3, 10, 4), torch.ops.posekernels.tconv_transform_weight(
            torch.randn(4, 3, 9), 1), 9, 1, None, None, torch.randn(4, 2), 4, 4, False),
     ValueError, "residual_w needs residual"),
    (lambda: torch.ops.posekernels.tconv_forward(
        torch.randn(1, 3, 10, 4), torch.ops.posekernels.tconv_transform_weight(
            torch.randn(4, 3, 9), 1), 9, 1, None, torch.randn(1, 3, 10, 4), torch.randn(4, 2), 4,
        4, False),
     ValueError, r"residual must have shape \(N, Cr, T_out, V\)"),
])
def test_temporal_conv_bad_input(call, exc, msg):
    with pytest.raises(exc, match=msg):
        call()


def test_temporal_conv_opcheck():
    x, w = torch.randn(2, 3, 11, 5), torch.randn(4, 3, 9)
    for stride, t_out in ((1, 11), (3, 4)):
        wt = torch.ops.posekernels.tconv_transform_weight(w, stride)
        torch.library.opcheck(torch.ops.posekernels.tconv_transform_weight, (w, stride),
                              test_utils=("test_schema", "test_faketensor"))
        torch.library.opcheck(torch.ops.posekernels.tconv_forward,
                              (x, wt, 9, stride, torch.randn(4), torch.randn(2, 4, t_out, 5), None,
                               4, 4, True),
                              test_utils=("test_schema", "test_faketensor"))


def _unit64(x, A, W, bias, B, tw, tb, pw, pb, sc_w, sc_b, identity, relu):
    d = [None if t is None else t.double() for t in (x, A, W, bias, B, tw, tb, pw, pb, sc_w, sc_b)]
    y = reference.adaptive_graph_conv(*d[:9])
    if identity:
        y = y + d[0]
    elif sc_w is not None:
        y = y + torch.einsum("oc,nctv->notv", d[9], d[0])
        if sc_b is not None:
            y = y + d[10][None, :, None, None]
    return torch.relu(y) if relu else y


@pytest.mark.parametrize("shortcut", ["none", "identity", "conv", "conv_nobias"])
@pytest.mark.parametrize("N, T", [(1, 40), (3, 9)])  # time blocks (N < threads) and samples
def test_agc_unit_forward_matches_float64(shortcut, N, T):
    g = torch.Generator().manual_seed(torch.seed() % 2**31)
    C, O, K, E, V = 6, 6 if shortcut == "identity" else 7, 3, 2, 17
    x = torch.randn(N, C, T, V, generator=g)
    A = torch.rand(K, V, V, generator=g)
    W, bias = torch.randn(K, O, C, generator=g), torch.randn(K, O, generator=g)
    B = torch.randn(K, V, V, generator=g) * 0.1
    tw, pw = torch.randn(K, E, C, generator=g), torch.randn(K, E, C, generator=g)
    tb, pb = torch.randn(K, E, generator=g), torch.randn(K, E, generator=g)
    sc_w = torch.randn(O, C, generator=g) if shortcut.startswith("conv") else None
    sc_b = torch.randn(O, generator=g) if shortcut == "conv" else None
    identity = shortcut == "identity"
    want = _unit64(x, A, W, bias, B, tw, tb, pw, pb, sc_w, sc_b, identity, True)
    for dtype, bound in ((torch.float64, 1e-10), (torch.float32, 1e-4)):
        args = [None if t is None else t.to(dtype)
                for t in (x, A, W, bias, B, tw, tb, pw, pb, sc_w, sc_b)]
        got = torch.ops.posekernels.agc_unit_forward(*args, identity, True)
        assert (got.double() - want).abs().max().item() < bound * max(1.0, want.abs().max().item())


def test_agc_unit_forward_bad_shortcut():
    x, A, W = torch.randn(1, 4, 5, 3), torch.rand(2, 3, 3), torch.randn(2, 6, 4)
    with pytest.raises(ValueError, match="identity_shortcut needs Cin == Cout"):
        torch.ops.posekernels.agc_unit_forward(x, A, W, None, None, None, None, None, None, None,
                                               None, True, True)
    with pytest.raises(ValueError, match=r"shortcut_w must have shape \(Cout, Cin\)"):
        torch.ops.posekernels.agc_unit_forward(x, A, W, None, None, None, None, None, None,
                                               torch.randn(6, 5), None, False, True)
    with pytest.raises(ValueError, match="shortcut_b needs shortcut_w"):
        torch.ops.posekernels.agc_unit_forward(x, A, W, None, None, None, None, None, None, None,
                                               torch.randn(6), False, True)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_reduced_precision_inputs_compute_in_float32(dtype):
    """bf16/fp16 inputs run in float32 and come back in the input dtype (both inference ops)."""
    g = torch.Generator().manual_seed(torch.seed() % 2**31)
    x = torch.randn(2, 8, 20, 17, generator=g)
    w, b = torch.randn(8, 8, 9, generator=g) / 8, torch.randn(8, generator=g)
    want = _conv64(x.to(dtype).float(), w.to(dtype).float(), b.to(dtype).float(), None, (4, 4), True)
    got = ops.temporal_conv(x.to(dtype), w.to(dtype), b.to(dtype), relu=True)
    assert got.dtype == dtype
    assert (got.double() - want).abs().max().item() < 2e-2 * max(1.0, want.abs().max().item())
    A = torch.rand(3, 17, 17, generator=g)
    W = torch.randn(3, 8, 8, generator=g) / 8
    unit = [t.to(dtype) for t in (x, A, W)]
    got = torch.ops.posekernels.agc_unit_forward(*unit, None, None, None, None, None, None, None,
                                                 None, True, True)
    want = _unit64(x.to(dtype), A.to(dtype), W.to(dtype), None, None, None, None, None, None,
                   None, None, True, True)
    assert got.dtype == dtype
    assert (got.double() - want).abs().max().item() < 2e-2 * max(1.0, want.abs().max().item())


# ---------------------------------------------------------------------------------------------
# hostile integer arguments: an error, never a crash

_FUZZ_CHILD = r'''
import itertools, sys
import torch
import posekernels  # noqa: F401  (registers the ops)
from posekernels import ops

BIG = [-2**63, -2**62, -2**31, -1, 0, 1, 2, 3, 4, 8, 9, 2**20, 2**20 + 1, 2**31 - 1, 2**31,
       2**32 + 3, 2**62, 2**62 + 1, 2**63 - 1]
PADS = [-2**63, -1, 0, 1, 8, 2**20, 2**62, 2**63 - 1]
OK_ERRORS = (ValueError, TypeError, RuntimeError, OverflowError)
pk = torch.ops.posekernels
weights = {}  # (kernel, stride, C) -> a transformed weight of the right shape, when it is small


def weight_candidates(kernel, stride, c):
    """The right transformed weight when it is small; else an empty one (an overflowing depth
    can wrap around to 0: C = 4, stride = 2**62) and an arbitrary one."""
    if 1 <= stride <= kernel <= 64:
        if (kernel, stride, c) not in weights:
            weights[kernel, stride, c] = pk.tconv_transform_weight(torch.randn(2, c, kernel),
                                                                   stride)
        return [weights[kernel, stride, c]]
    return [torch.randn(6, 2, 0), torch.randn(6, 2, 5)]


calls = 0
for stride in BIG:  # tconv_transform_weight(weight, stride)
    for k in (1, 3, 9):
        calls += 1
        try:
            pk.tconv_transform_weight(torch.randn(2, 4, k), stride)
        except OK_ERRORS:
            pass
for x in (torch.randn(1, 2, 10, 3), torch.randn(1, 4, 9, 2)):  # tconv_forward
    for kernel, stride in itertools.product(BIG, repeat=2):
        for wt in weight_candidates(kernel, stride, x.shape[1]):
            for left, right in itertools.product(PADS, repeat=2):
                calls += 1
                try:
                    pk.tconv_forward(x, wt, kernel, stride, None, None, None, left, right, True)
                except OK_ERRORS:
                    pass
small = [-2**63, -1, 0, 1, 3, 9, 2**20 + 1, 2**31, 2**62, 2**63 - 1, 2**64]
x, w = torch.randn(1, 2, 10, 3), torch.randn(4, 2, 9)
for backend in ("cpu", "reference"):  # the Python front end
    for stride, left, right in itertools.product(small, repeat=3):
        calls += 1
        try:
            ops.temporal_conv(x, w, stride=stride, padding=(left, right), backend=backend)
        except OK_ERRORS:
            pass
print("SURVIVED", calls)
'''


def test_raw_tconv_integer_arguments_never_crash():
    """tconv_forward / tconv_transform_weight (raw ops and the Python front end) with huge,
    negative and overflowing kernel, stride and padding values: every call returns or raises;
    the process survives (a child process, so a crash fails this test instead of pytest)."""
    import subprocess
    import sys
    from pathlib import Path

    proc = subprocess.run([sys.executable, "-c", _FUZZ_CHILD], capture_output=True, text=True,
                          timeout=600, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0 and "SURVIVED" in proc.stdout, (
        f"exit code {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")


@pytest.mark.parametrize("call,match", [
    (lambda: torch.ops.posekernels.tconv_forward(torch.randn(1, 4, 9, 2), torch.randn(6, 1, 0), 3,
                                                 2**62, None, None, None, 0, 0, False),
     r"stride must be >= 1 and <= kernel = 3, got 4611686018427387904"),
    (lambda: torch.ops.posekernels.tconv_forward(torch.randn(1, 4, 9, 2), torch.randn(6, 1, 8),
                                                 2**40, 1, None, None, None, 0, 0, False),
     r"kernel must be >= 1 and <= 1048576"),
    (lambda: torch.ops.posekernels.tconv_forward(
        torch.randn(1, 3, 10, 4), torch.ops.posekernels.tconv_transform_weight(
            torch.randn(4, 3, 9), 1), 9, 1, None, None, None, 2**62, 2**62, False),
     r"pad_left and pad_right must be >= 0 and <= kernel - 1 = 8"),
    (lambda: torch.ops.posekernels.tconv_transform_weight(torch.randn(1, 4, 3), 2**62),
     r"stride must be >= 1 and <= kernel = 3"),
    (lambda: ops.temporal_conv(torch.randn(1, 3, 10, 4), torch.randn(4, 3, 9), padding=2**62),
     r"padding must be at most 1048576 frames"),
])
def test_tconv_integer_bounds_are_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_front_end_sends_wide_padding_to_the_reference():
    """A padding of k frames or more (legal for a convolution) runs the reference formulation,
    since the fused kernel's raw op only takes paddings below k."""
    x, w, b = torch.randn(1, 3, 10, 4), torch.randn(4, 3, 9), torch.randn(4)
    got = ops.temporal_conv(x, w, b, padding=(9, 12), stride=2, relu=True, backend="cpu")
    want = _conv64(x, w, b, None, (9, 12), True, 2)
    assert got.shape == want.shape and (got.double() - want).abs().max().item() < 1e-4
