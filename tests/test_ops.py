"""Every backend of the ops, on every device and dtype available here (the grid of
tests/_op_harness.py, `combo`), against float64: accuracy and gradients, the raw ops, bad input,
opcheck and torch.compile; then autocast, dispatch and build information. Inputs are drawn fresh
on every run (the seed is in the failure message). Backend-internal paths are in
test_<backend>_backend.py."""
from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import posekernels
from _op_harness import (AGC_NAMES, COMPILED, KERNELS, REFERENCE, TRITON, agc_args,
                         assert_close_scaled, bf16, check_agc, check_gjl, differentiable, f16,
                         f32, f64, grid, make_agc, make_gjl, raw, run_agc, run_gjl, theta_b_floor, to64,
                         typical_sizes)
from _tiny_models import TinyLifter
from posekernels import ops
from posekernels.ops import reference

# ----------------------------------------------------------------------------------------------
# accuracy and gradients against float64

# Every combination, the Triton interpreter too: V in {1, 5, 15, 16, 17}, K in {1, 2, 3}, each
# optional term on and off, channels above the interpreter's block of 16, a partial last time tile.
AGC_CASES = {
    "v17k3-all": (dict(n=2, cin=19, cout=21, ce=20, t=5, v=17, k=3), {}),
    "v16k2-thetab-only": (dict(n=3, cin=5, cout=7, ce=3, t=6, v=16, k=2), dict(with_b=False, phi_b=False)),
    "v15k1-phib-only-nobias": (dict(n=2, cin=33, cout=17, ce=5, t=5, v=15, k=1),
                               dict(with_bias=False, theta_b=False)),
    "v17k2-att-no-embbias": (dict(n=2, cin=9, cout=3, ce=17, t=4, v=17, k=2),
                             dict(theta_b=False, phi_b=False, with_bias=False)),
    "v17k2-noatt": (dict(n=3, cin=11, cout=19, ce=1, t=7, v=17, k=2), dict(attention=False)),
    "v16k3-W-only": (dict(n=2, cin=17, cout=5, ce=1, t=5, v=16, k=3),
                     dict(attention=False, with_b=False, with_bias=False)),
    "v15k3-noatt-B": (dict(n=1, cin=3, cout=33, ce=1, t=9, v=15, k=3), dict(attention=False, with_bias=False)),
    "tiny-v1-t1": (dict(n=1, cin=1, cout=1, ce=1, t=1, v=1, k=1), {}),
    "v5-t1": (dict(n=2, cin=2, cout=3, ce=2, t=1, v=5, k=2), {}),
}
TERMS = {"all": {}, "att-only": dict(with_b=False, with_bias=False, theta_b=False, phi_b=False),
         "no-emb-bias": dict(theta_b=False, phi_b=False), "phi_b-only": dict(theta_b=False, with_b=False),
         "noatt": dict(attention=False), "plain": dict(attention=False, with_b=False, with_bias=False)}
MODEL_SHAPES = {  # the model's layer sizes (C = 96, Ce = 24, K = 3), channel changes
    **{f"n{n}t{t}v{v}": (dict(n=n, cin=96, cout=96, ce=24, t=t, v=v, k=3), {})
       for n, t, v in [(4, 27, 17), (2, 81, 17), (3, 243, 15), (2, 20, 16)]},
    "cin2-cout96": (dict(n=5, cin=2, cout=96, ce=24, t=27, v=17, k=3), {}),
    "cin128-cout256": (dict(n=3, cin=128, cout=256, ce=64, t=9, v=17, k=3),
                       dict(with_b=False, theta_b=False, phi_b=False)),
}


@pytest.mark.parametrize("case", AGC_CASES)
def test_agc_matches_float64(combo, case):
    shape, terms = AGC_CASES[case]
    check_agc(combo, shape, **terms)


@pytest.mark.parametrize("combo", grid(interpreted=False))  # compiled kernels only
@pytest.mark.parametrize("v", [15, 16, 17])
@pytest.mark.parametrize("terms", TERMS)
def test_agc_terms_matches_float64(combo, v, terms):
    check_agc(combo, dict(n=2, cin=6, cout=5, ce=3, t=4, v=v, k=3), **TERMS[terms])


@pytest.mark.parametrize("combo", grid((f32, f16, bf16), interpreted=False))
@pytest.mark.parametrize("case", MODEL_SHAPES)
def test_agc_model_sized(combo, case):
    shape, terms = MODEL_SHAPES[case]
    check_agc(combo, shape, **terms)


@pytest.mark.parametrize("combo", grid((f64, f32), interpreted=False))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shape=st.fixed_dictionaries({
    "n": st.integers(1, 3), "cin": st.integers(1, 12), "cout": st.integers(1, 12), "ce": st.integers(1, 6),
    "t": st.integers(1, 9), "v": st.sampled_from([1, 5, 15, 16, 17]), "k": st.integers(1, 3)}),
    terms=st.fixed_dictionaries({k: st.booleans() for k in ("attention", "with_b", "with_bias",
                                                             "theta_b", "phi_b")}))
def test_agc_random_shapes(combo, shape, terms):
    check_agc(combo, shape, **terms)


# (lead, V, C, D, groups, biases, lam); the joint-only ones are plain per-joint linears
GJL_CASES = {
    "joint-m37-v17-c13-d3": ((37,), 17, 13, 3, "joint", True, 0.3),
    "joint-m37-v17-c13-d3-nobias": ((37,), 17, 13, 3, "joint", False, 0.3),
    "joint-m20-v15-c40-d16": ((20,), 15, 40, 16, "joint", True, 0.3),
    "joint-m5-v16-c7-d16-nobias": ((5,), 16, 7, 16, "joint", False, 0.3),
    "joint-m1-v1-c1-d1": ((1,), 1, 1, 1, "joint", True, 0.3),
    "both-2x3-v17-c8-d3-lamtensor": ((2, 3), 17, 8, 3, "both", True, "tensor"),
    "shared-m9-v16-c6-d5": ((9,), 16, 6, 5, "shared", True, 0.7),
}
GJL_MORE = {  # compiled kernels only
    **{f"{groups}-{lam}-{'x'.join(map(str, lead))}-v{v}-c{c}-d{d}": (lead, v, c, d, groups, True, lam)
       for lead, v, c, d in [((64,), 17, 96, 3), ((5, 7), 15, 20, 1), ((3,), 16, 300, 16),
                             ((1,), 1, 1, 5), ((33,), 17, 33, 5)]
       for groups in ("both", "joint", "shared") for lam in (0.3, "tensor")},
}


@pytest.mark.parametrize("case", GJL_CASES)
def test_gjl_matches_float64(combo, case):
    check_gjl(combo, *GJL_CASES[case])


@pytest.mark.parametrize("combo", grid(interpreted=False))
@pytest.mark.parametrize("case", GJL_MORE)
def test_gjl_more_matches_float64(combo, case):
    check_gjl(combo, *GJL_MORE[case])


@pytest.mark.parametrize("combo", grid((f64, f32), interpreted=False))
@settings(max_examples=30, deadline=None)
@given(lead=st.lists(st.integers(1, 4), min_size=0, max_size=2).map(tuple),
       v=st.sampled_from([1, 15, 16, 17]), c=st.integers(1, 20), d=st.sampled_from([1, 3, 5, 16]),
       groups=st.sampled_from(["both", "joint", "shared"]), biases=st.booleans(),
       lam=st.one_of(st.floats(0, 1), st.floats(0, 1).map(lambda f: torch.tensor(f, dtype=f64))))
def test_gjl_random_shapes(combo, lead, v, c, d, groups, biases, lam):
    check_gjl(combo, lead, v, c, d, groups, biases, lam)


# cuda reduces weight gradients with atomics: repeated backward passes may differ in the last bits
GRADCHECK = dict(eps=1e-6, atol=1e-7, rtol=1e-5, nondet_tol=1e-12)


@pytest.mark.parametrize("combo", grid((f64,), interpreted=False))
@pytest.mark.parametrize("terms", TERMS)
def test_agc_gradcheck(combo, terms):
    a = make_agc(2, 3, 4, 2, 3, 5, 2, **TERMS[terms], device=combo.device)
    names = [k for k in AGC_NAMES if a[k] is not None]

    def fn(*ts):
        return ops.adaptive_graph_conv(**dict(zip(names, ts)), backend=combo.backend)

    assert torch.autograd.gradcheck(fn, [a[k].requires_grad_(k != "A") for k in names], **GRADCHECK)


@pytest.mark.parametrize("combo", grid((f64,), interpreted=False))
@pytest.mark.parametrize("c,d", [(6, 3), (2, 5)])  # D < C and D >= C (the cpu kernel's layouts)
@pytest.mark.parametrize("groups,biases", [("joint", False), ("joint", True), ("shared", True), ("both", True)])
def test_gjl_gradcheck(combo, c, d, groups, biases):
    a = make_gjl((2, 3), 4, c, d, joint=groups != "shared", shared=groups != "joint", biases=biases,
                 device=combo.device)
    names = [k for k, v in a.items() if v is not None]
    inputs = [a[k].requires_grad_() for k in names]
    if groups == "both":
        names.append("lam")
        inputs.append(torch.tensor(0.3, dtype=f64, device=combo.device, requires_grad=True))

    def fn(*ts):
        return ops.grouped_joint_linear(**dict(zip(names, ts)), backend=combo.backend)

    assert torch.autograd.gradcheck(fn, inputs, **GRADCHECK)


# ----------------------------------------------------------------------------------------------
# the raw ops (torch.ops.posekernels.*)


def test_raw_agc_outputs(combo):
    """The forward op's second output is the softmax term, (0,) without attention; the backward
    op gives (0,) for absent inputs and (compiled ops) recomputes the term from an empty attn."""
    fwd, bwd = raw(combo.backend, "agc_forward"), raw(combo.backend, "agc_backward")
    tol, gtol = combo.tol
    a = make_agc(2, 6, 5, 4, 5, 17, 3, theta_b=False, dtype=combo.dtype, device=combo.device)
    r = to64(a)
    y, attn = fwd(*agc_args(a))
    assert attn.shape == (2, 3, 17, 17) and attn.dtype == combo.dtype
    assert_close_scaled(attn, reference.attention(*(r[k] for k in ("x", "theta_w", "theta_b", "phi_w", "phi_b"))),
                        tol, "attn")
    assert_close_scaled(attn.double().sum(2), torch.ones(2, 3, 17, dtype=f64, device=combo.device), tol, "column sums")
    assert_close_scaled(y, reference.adaptive_graph_conv(**r), tol, "y")
    gy = torch.randn_like(y)
    grads = bwd(gy, *agc_args(a), attn)
    assert [tuple(g.shape) for g in grads] == [tuple(a[k].shape) if a[k] is not None else (0,)
                                               for k in AGC_NAMES if k != "A"]
    if combo.backend != "triton":
        for saved, again in zip(grads, bwd(gy, *agc_args(a), attn.new_empty(0))):
            if saved.numel():
                assert_close_scaled(again, saved.double(), gtol, "recomputed vs saved attn")
    plain = {**a, **dict.fromkeys(("bias", "B", "theta_w", "theta_b", "phi_w", "phi_b"))}
    y, attn = fwd(*agc_args(plain))
    assert attn.shape == (0,)
    assert_close_scaled(y, reference.adaptive_graph_conv(**to64(plain)), tol, "y without attention")
    grads = bwd(torch.ones_like(y), *agc_args(plain), attn)
    assert grads[0].shape == a["x"].shape and grads[1].shape == a["W"].shape
    assert all(g.shape == (0,) for g in grads[2:])


def test_raw_jl(combo):
    fwd, bwd = raw(combo.backend, "jl_forward"), raw(combo.backend, "jl_backward")
    tol, gtol = combo.tol
    m, c = (4, 20) if combo.interpreted else (300, 96)
    a = make_gjl((m,), 17, c, 3, shared=False, dtype=combo.dtype, device=combo.device)
    x, W, b = a["x"], a["W_joint"], a["b_joint"]
    assert_close_scaled(fwd(x, W, b), reference.joint_linear(x.double(), W.double(), b.double()), tol, "y")
    gy = torch.randn(m, 17, 3, device=combo.device).to(combo.dtype)
    for has_bias in (True, False):
        gx, gW, gb = bwd(gy, x, W, has_bias)
        assert_close_scaled(gx, torch.einsum("mvd,vcd->mvc", gy.double(), W.double()), gtol, "gx")
        assert_close_scaled(gW, torch.einsum("mvc,mvd->vcd", x.double(), gy.double()), gtol, "gW")
        if has_bias:
            assert_close_scaled(gb, gy.double().sum(0), gtol, "gb")
        else:
            assert gb.shape == (0,)


def _strided(t):
    """The same values, held in transposed storage."""
    return t.transpose(-1, -2).contiguous().transpose(-1, -2)


@pytest.mark.parametrize("combo", grid((f32,)))
def test_noncontiguous_inputs(combo):
    """Strided inputs give their contiguous copies' results, through the front end and the ops."""
    b, tol = combo.backend, combo.tol[0]
    fwd, bwd = raw(b, "agc_forward"), raw(b, "agc_backward")
    a = make_agc(2, 6, 5, 3, 4, 17, 3, dtype=f32, device=combo.device)
    nc = {**a, **{k: _strided(a[k]) for k in ("x", "W", "B")}}
    assert not any(nc[k].is_contiguous() for k in ("x", "W", "B"))
    y_ref = reference.adaptive_graph_conv(**to64(a))
    assert_close_scaled(ops.adaptive_graph_conv(**nc, backend=b), y_ref, tol, "front end")
    (y, attn), (y_nc, attn_nc) = fwd(*agc_args(a)), fwd(*agc_args(nc))
    assert_close_scaled(y_nc, y_ref, tol, "op")
    gy = torch.randn_like(y)
    for g, g_nc in zip(bwd(gy, *agc_args(a), attn), bwd(_strided(gy), *agc_args(nc), _strided(attn_nc))):
        torch.testing.assert_close(g_nc, g)
    sliced = {**a, "x": make_agc(2, 6, 5, 3, 8, 17, 3, dtype=f32, device=combo.device)["x"][:, :, ::2]}
    assert_close_scaled(ops.adaptive_graph_conv(**sliced, backend=b),
                        reference.adaptive_graph_conv(**to64(sliced)), tol, "sliced x")
    x, W = torch.randn(4, 3, 6, device=combo.device), torch.randn(3, 6, 2, device=combo.device)
    jl = raw(b, "jl_forward")
    torch.testing.assert_close(jl(x.transpose(0, 1).contiguous().transpose(0, 1), W, None), jl(x, W, None))


# ----------------------------------------------------------------------------------------------
# bad input: the front end gives every backend the same clear errors (checked before dispatch);
# the compiled ops check again for direct callers

def _set(t, index, value):
    t = t.clone()
    t[index] = value
    return t


BAD_AGC = {  # name: (change of the arguments, error, message)
    "x rank": (lambda a: dict(x=a["x"][0]), ValueError, r"x must have shape \(N, Cin, T, V\)"),
    "x int": (lambda a: dict(x=a["x"].to(torch.int64)), TypeError, "x must be a floating-point"),
    "x not tensor": (lambda a: dict(x=a["x"].cpu().numpy()), TypeError, "x must be a torch.Tensor"),
    "empty batch": (lambda a: dict(x=a["x"][:0]), ValueError, "non-empty batch and window"),
    "empty window": (lambda a: dict(x=a["x"][:, :, :0]), ValueError, "non-empty batch and window"),
    "A wrong V": (lambda a: dict(A=a["A"][:, :16, :16]), ValueError, r"A must have shape \(K, V, V\)"),
    "A nan": (lambda a: dict(A=_set(a["A"], (0, 1, 2), float("nan"))), ValueError, "A contains NaN or inf"),
    "A inf": (lambda a: dict(A=_set(a["A"], (2, 0, 0), float("inf"))), ValueError, "A contains NaN or inf"),
    "W wrong K": (lambda a: dict(W=a["W"][:2]), ValueError, r"W must have shape \(K, Cout, Cin\)"),
    "W wrong Cin": (lambda a: dict(W=a["W"][:, :, :3]), ValueError, r"W must have shape \(K, Cout, Cin\)"),
    "W dtype": (lambda a: dict(W=a["W"].double()), TypeError, "W has dtype"),
    "bias shape": (lambda a: dict(bias=a["bias"][:, :5]), ValueError, r"bias must have shape \(K, Cout\)"),
    "B shape": (lambda a: dict(B=a["B"][:2]), ValueError, r"B must have shape \(K, V, V\)"),
    "theta without phi": (lambda a: dict(phi_w=None, phi_b=None), ValueError, "theta_w and phi_w"),
    "theta_b alone": (lambda a: dict(theta_w=None, phi_w=None, phi_b=None), ValueError, "theta_b was given"),
    "phi_w shape": (lambda a: dict(phi_w=a["phi_w"][:, :2]), ValueError, r"phi_w must have shape \(K, Ce, Cin\)"),
    "theta_b shape": (lambda a: dict(theta_b=a["theta_b"][:, :1]), ValueError, r"theta_b must have shape \(K, Ce\)"),
    "mixed device": (lambda a: dict(W=a["W"].to("meta")), ValueError, "W is on meta"),
}
FRONT_END = grid((f32,), REFERENCE + KERNELS)


@pytest.mark.parametrize("combo", FRONT_END)
@pytest.mark.parametrize("case", BAD_AGC)
def test_agc_bad_input(combo, case):
    if combo.device == "cuda" and case in ("A nan", "A inf"):
        pytest.skip("checked on the device (torch._assert_async), which would end the CUDA context")
    change, exc, match = BAD_AGC[case]
    a = make_agc(2, 4, 6, 3, 5, 17, 3, dtype=f32, device=combo.device)
    with pytest.raises(exc, match=match):
        ops.adaptive_graph_conv(**{**a, **change(a)}, backend=combo.backend)


BAD_GJL = {  # name: (change of the arguments, error, message)
    "x rank": (lambda a: dict(x=a["x"][0, 0]), ValueError, r"x must have shape \(\.\.\., V, C\)"),
    "x int": (lambda a: dict(x=a["x"].to(torch.int32)), TypeError, "x must be a floating-point"),
    "empty": (lambda a: dict(x=a["x"][:0]), ValueError, "x must not be empty"),
    "no weights": (lambda a: dict.fromkeys(("W_joint", "b_joint", "W_shared", "b_shared")), ValueError,
                   "needs W_joint"),
    "W_joint V": (lambda a: dict(W_joint=a["W_joint"][:16]), ValueError, r"W_joint must have shape \(V, C, D\)"),
    "W_shared C": (lambda a: dict(W_shared=a["W_shared"][:7]), ValueError, r"W_shared must have shape \(C, D\)"),
    "D mismatch": (lambda a: dict(W_shared=a["W_shared"][:, :2], b_shared=a["b_shared"][:2]), ValueError,
                   "to match W_joint's D"),
    "b_joint shape": (lambda a: dict(b_joint=a["b_joint"][:, :2]), ValueError, r"b_joint must have shape \(V, D\)"),
    "b_shared alone": (lambda a: dict(W_shared=None), ValueError, "b_shared was given without W_shared"),
    "dtype": (lambda a: dict(W_joint=a["W_joint"].double()), TypeError, "W_joint has dtype"),
    "lam high": (lambda a: dict(lam=1.5), ValueError, r"lam must lie in \[0, 1\]"),
    "lam negative tensor": (lambda a: dict(lam=torch.tensor(-0.1)), ValueError, r"lam must lie in \[0, 1\]"),
    "lam vector": (lambda a: dict(lam=torch.rand(2)), ValueError, "0-dim tensor"),
    "lam string": (lambda a: dict(lam="half"), TypeError, "lam must be a float"),
    "lam int tensor": (lambda a: dict(lam=torch.tensor(1)), TypeError, "lam must be a floating-point"),
}


@pytest.mark.parametrize("combo", FRONT_END)
@pytest.mark.parametrize("case", BAD_GJL)
def test_gjl_bad_input(combo, case):
    change, exc, match = BAD_GJL[case]
    a = make_gjl((4,), 17, 8, 3, dtype=f32, device=combo.device)
    with pytest.raises(exc, match=match):
        ops.grouped_joint_linear(**{**a, **change(a)}, backend=combo.backend)


BAD_AGC_OP = {  # straight into the compiled op (arguments of make_agc(2, 3, 4, 2, 3, 5, 2))
    "x rank": (lambda a: dict(x=a["x"][0]), ValueError, r"x must have shape \(N, Cin, T, V\)"),
    "x int": (lambda a: dict(x=a["x"].to(torch.int64)), TypeError, "x must be a floating-point"),
    "x empty batch": (lambda a: dict(x=a["x"][:0]), ValueError, "every size >= 1"),
    "A wrong V": (lambda a: dict(A=a["A"][:, :4, :4]), ValueError, r"A must have shape \(K, V, V\)"),
    "A no partitions": (lambda a: dict(A=a["A"][:0]), ValueError, "at least one partition"),
    "W wrong Cin": (lambda a: dict(W=a["W"][:, :, :2]), ValueError, r"W must have shape \(K, Cout, Cin\)"),
    "W wrong K": (lambda a: dict(W=a["W"][:1]), ValueError, r"W must have shape \(K, Cout, Cin\)"),
    "W dtype": (lambda a: dict(W=a["W"].float()), TypeError, "W has dtype torch.float32 but x has dtype torch.float64"),
    "W int": (lambda a: dict(W=a["W"].to(torch.int32)), TypeError, "W must be a floating-point"),
    "bias shape": (lambda a: dict(bias=a["bias"][:, :3]), ValueError, r"bias must have shape \(K, Cout\) = \(2, 4\)"),
    "bias dtype": (lambda a: dict(bias=a["bias"].half()), TypeError, "bias has dtype"),
    "B shape": (lambda a: dict(B=a["B"][:1]), ValueError, r"B must have shape \(K, V, V\)"),
    "theta without phi": (lambda a: dict(phi_w=None, phi_b=None), ValueError, "theta_w and phi_w"),
    "phi without theta": (lambda a: dict(theta_w=None, theta_b=None), ValueError, "theta_w and phi_w"),
    "theta_b alone": (lambda a: dict(theta_w=None, phi_w=None, phi_b=None), ValueError, "theta_b was given"),
    "phi_w shape": (lambda a: dict(phi_w=a["phi_w"][:, :1]), ValueError, r"phi_w must have shape \(K, Ce, Cin\)"),
    "theta_w rank": (lambda a: dict(theta_w=a["theta_w"][0]), ValueError, r"theta_w must have shape \(K, Ce, Cin\)"),
    "theta_b shape": (lambda a: dict(theta_b=a["theta_b"][:, :1]), ValueError, r"theta_b must have shape \(K, Ce\)"),
    "phi_b shape": (lambda a: dict(phi_b=a["phi_b"][:, :1]), ValueError, r"phi_b must have shape \(K, Ce\)"),
    "phi_b dtype": (lambda a: dict(phi_b=a["phi_b"].float()), TypeError, "phi_b has dtype"),
}
RAW_OPS = grid((f64,), COMPILED)


@pytest.mark.parametrize("combo", RAW_OPS)
@pytest.mark.parametrize("case", BAD_AGC_OP)
def test_agc_op_bad_input(combo, case):
    change, exc, match = BAD_AGC_OP[case]
    a = make_agc(2, 3, 4, 2, 3, 5, 2, device=combo.device)
    with pytest.raises(exc, match=match):
        torch.ops.posekernels.agc_forward(*agc_args({**a, **change(a)}))


@pytest.mark.parametrize("combo", RAW_OPS)
def test_agc_backward_op_bad_input(combo):
    a = make_agc(2, 3, 4, 2, 3, 5, 2, device=combo.device)
    pk, args = torch.ops.posekernels, agc_args(a)
    y, attn = pk.agc_forward(*args)
    gy = torch.ones_like(y)
    for bad, exc, match in [
            ((gy[:, :2], *args, attn), ValueError, r"grad_y must have shape \(N, Cout, T, V\)"),
            ((gy.float(), *args, attn), TypeError, "grad_y has dtype"),
            ((gy.long(), *args, attn), TypeError, "grad_y must be a floating-point"),
            ((gy, *args, attn[:, :1]), ValueError, r"attn must have shape \(N, K, V, V\)"),
            ((gy, *args, attn.float()), TypeError, "attn has dtype"),
            ((gy, *agc_args({**a, "W": a["W"][:, :, :1]}), attn), ValueError, "W must have shape")]:
        with pytest.raises(exc, match=match):
            pk.agc_backward(*bad)


@pytest.mark.parametrize("combo", RAW_OPS)
@pytest.mark.parametrize("name,call,exc,match", [
    ("x rank", lambda x, W, b: (x[0], W, b), ValueError, r"x must have shape \(M, V, C\)"),
    ("x int", lambda x, W, b: (x.int(), W, b), TypeError, "x must be a floating-point"),
    ("x empty", lambda x, W, b: (x[:0], W, b), ValueError, "every size >= 1"),
    ("W wrong C", lambda x, W, b: (x, W[:, :5], b), ValueError, r"W must have shape \(V, C, D\) = \(3, 6, D\)"),
    ("W wrong V", lambda x, W, b: (x, W[:2], b), ValueError, r"W must have shape \(V, C, D\)"),
    ("b shape", lambda x, W, b: (x, W, b[:, :1]), ValueError, r"b must have shape \(V, D\) = \(3, 2\)"),
    ("W dtype", lambda x, W, b: (x, W.float(), b), TypeError, "W has dtype"),
    ("b dtype", lambda x, W, b: (x, W, b.half()), TypeError, "b has dtype"),
])
def test_jl_op_bad_input(combo, name, call, exc, match):
    a = make_gjl((4,), 3, 6, 2, shared=False, device=combo.device)
    with pytest.raises(exc, match=match):
        torch.ops.posekernels.jl_forward(*call(a["x"], a["W_joint"], a["b_joint"]))


@pytest.mark.parametrize("combo", RAW_OPS)
def test_jl_backward_op_bad_input(combo):
    a = make_gjl((4,), 3, 6, 2, shared=False, dtype=f32, device=combo.device)
    x, W, gy = a["x"], a["W_joint"], torch.randn(4, 3, 2, device=combo.device)
    for bad, exc, match in [((gy[:, :, :1], x, W, True), ValueError, r"grad_y must have shape \(M, V, D\)"),
                            ((gy.double(), x, W, True), TypeError, "grad_y has dtype"),
                            ((gy, x.long(), W, True), TypeError, "x must be a floating-point")]:
        with pytest.raises(exc, match=match):
            torch.ops.posekernels.jl_backward(*bad)


@pytest.mark.parametrize("combo", grid((f64,), REFERENCE + KERNELS))
def test_A_requiring_grad_is_refused(combo):
    """A is a constant graph (no gradient on any backend): an A that requires grad is an error,
    not a silently missing gradient, from the front end and the raw op; under no_grad it is
    harmless."""
    a = make_agc(1, 3, 4, 2, 3, 5, 2, device=combo.device)
    A = a["A"].clone().requires_grad_(True)
    with pytest.raises(ValueError, match=r"A requires grad.*A.detach\(\)"):
        ops.adaptive_graph_conv(**{**a, "A": A}, backend=combo.backend)
    if combo.backend != "reference":
        with pytest.raises(ValueError, match="A requires grad"):
            raw(combo.backend, "agc_forward")(*agc_args({**a, "A": A}))
    with torch.no_grad():
        y = ops.adaptive_graph_conv(**{**a, "A": A}, backend=combo.backend)
    assert_close_scaled(y, reference.adaptive_graph_conv(**a), 1e-10, str(combo))


# ----------------------------------------------------------------------------------------------
# torch.library: opcheck and torch.compile

OPCHECK = grid((f64,), COMPILED) + grid((f32,), TRITON)


@pytest.mark.parametrize("combo", OPCHECK)
@pytest.mark.parametrize("terms", ["all", "plain", "att-only", "noatt"])
def test_opcheck_agc(combo, terms):
    a = make_agc(2, 5, 4, 3, 3, 17, 3, **TERMS[terms], dtype=combo.dtype, device=combo.device)
    for name in differentiable(a):
        a[name].requires_grad_(True)
    torch.library.opcheck(raw(combo.backend, "agc_forward").default, agc_args(a))


@pytest.mark.parametrize("combo", OPCHECK)
@pytest.mark.parametrize("k", [1, 2])
def test_opcheck_agc_backward(combo, k):
    a = make_agc(2, 3, 1, 1, 2, 4, k, dtype=combo.dtype, device=combo.device)
    y, attn = raw(combo.backend, "agc_forward")(*agc_args(a))
    args = (torch.randn_like(y), *agc_args(a), attn)
    torch.library.opcheck(raw(combo.backend, "agc_backward").default, args)
    grads = raw(combo.backend, "agc_backward")(*args)
    storages = [g.untyped_storage().data_ptr() for g in grads]
    assert len(set(storages)) == len(storages)  # no output aliases another


@pytest.mark.parametrize("combo", OPCHECK)
@pytest.mark.parametrize("has_bias", [True, False])
def test_opcheck_jl(combo, has_bias):
    a = make_gjl((6,), 17, 5, 3, shared=False, biases=has_bias, dtype=combo.dtype, device=combo.device)
    x, W, b = (t.requires_grad_() if t is not None else None for t in (a["x"], a["W_joint"], a["b_joint"]))
    torch.library.opcheck(raw(combo.backend, "jl_forward").default, (x, W, b))


@pytest.mark.parametrize("combo", OPCHECK)
@pytest.mark.parametrize("c,d", [(4, 1), (1, 3), (5, 5)])
@pytest.mark.parametrize("has_bias", [True, False])
def test_opcheck_jl_backward(combo, c, d, has_bias):
    a = make_gjl((3,), 2, c, d, shared=False, dtype=combo.dtype, device=combo.device)
    gy = torch.randn(3, 2, d, dtype=combo.dtype, device=combo.device)
    torch.library.opcheck(raw(combo.backend, "jl_backward").default, (gy, a["x"], a["W_joint"], has_bias))


@pytest.mark.parametrize("combo,compiler", [
    pytest.param(p.values[0], compiler, id=f"{p.id}-{compiler}", marks=[*p.marks, *(
        [pytest.mark.slow] if compiler == "inductor" and p.values[0].device == "cpu" else [])])
    for p in grid((f32,)) for compiler in ("aot_eager", "inductor")])
def test_torch_compile_fullgraph(combo, compiler):
    """A model on the ops traces (fake kernels), runs and differentiates under torch.compile; the
    device's default backend is picked with backend=None, so that choice traces too."""
    default = ops.available_backends(combo.device)[0] == combo.backend
    model = TinyLifter(backend=None if default else combo.backend).to(combo.device)
    x = torch.randn(3, 9, 17, 2, device=combo.device)
    eager = model(x)
    out = torch.compile(model, fullgraph=True, backend=compiler)(x)
    torch.testing.assert_close(out, eager, rtol=1e-5 if compiler == "aot_eager" else 1e-4, atol=1e-5)
    model64 = copy.deepcopy(model).double()
    model64.backend = "reference"
    assert_close_scaled(out, model64(x.double()), 1e-4, "compiled vs float64")
    out.sum().backward()
    assert model.lam.grad is not None and model.theta_w.grad is not None


# ----------------------------------------------------------------------------------------------
# autocast: the constant graph and float32 weights meet a reduced-precision activation

CPU_ALL = (("reference", "cpu"), ("cpu", "cpu"), ("triton", "cpu"))
# bfloat16 rounds each input to 8 significant bits (2^-9 relative); these small sums stay within
# about 1e-2 of the output's largest value, gradients within 2e-2
BF16_OP_REL = 3e-2


@pytest.mark.parametrize("combo", grid((f32, bf16), CPU_ALL))  # combo.dtype: x's dtype
def test_agc_under_cpu_autocast(combo):
    """Under torch.autocast("cpu", bfloat16) a float32 A and float32 weights are cast with x, on
    every backend: output close to float64 (bfloat16; float32 on the cpu backend, which computes
    in float32 and casts to float32 instead), float32 gradients for the float32 leaves."""
    a = make_agc(2, 5, 6, 3, 4, 17, 3, dtype=f32)
    gout = torch.randn(2, 6, 4, 17, dtype=f64)
    y_ref, g_ref = run_agc(to64(a), "reference", gout)
    floors = typical_sizes(lambda gy: run_agc(to64(a), "reference", gy), gout)
    names = differentiable(a)
    leaves = {k: (v.detach().clone().requires_grad_(k in names) if v is not None else None)
              for k, v in a.items()}
    with torch.autocast("cpu", dtype=torch.bfloat16):  # x as a previous layer returns it
        y = ops.adaptive_graph_conv(**{**leaves, "x": leaves["x"].to(combo.dtype)}, backend=combo.backend)
    assert y.dtype == (torch.float32 if combo.backend == "cpu" else torch.bfloat16)
    assert_close_scaled(y, y_ref, BF16_OP_REL, f"{combo} y")
    for name, grad in zip(names, torch.autograd.grad(y, [leaves[n] for n in names], gout.to(y.dtype))):
        assert grad.dtype == torch.float32 and bool(torch.isfinite(grad).all()), name
        floor = theta_b_floor(g_ref) if name == "theta_b" else floors[name]
        assert_close_scaled(grad, g_ref[name], 2 * BF16_OP_REL, f"{combo} grad {name}", floor)


@pytest.mark.parametrize("combo", grid((bf16,), CPU_ALL))
@pytest.mark.parametrize("lam", [0.3, "tensor"])
def test_gjl_under_cpu_autocast(combo, lam):
    a = make_gjl((3, 2), 17, 8, 3, dtype=f32)
    lam = torch.tensor(0.3) if lam == "tensor" else lam
    gout = torch.randn(3, 2, 17, 3, dtype=torch.float64)
    lam64 = lam.double() if isinstance(lam, torch.Tensor) else lam
    y_ref, g_ref = run_gjl(to64(a), lam64, "reference", gout)
    floors = typical_sizes(lambda gy: run_gjl(to64(a), lam64, "reference", gy), gout)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, g = run_gjl({**a, "x": a["x"].bfloat16()}, lam, combo.backend, gout)
    assert y.dtype == torch.bfloat16
    assert_close_scaled(y, y_ref, BF16_OP_REL, f"{combo} y")
    for name, ref in g_ref.items():
        assert g[name] is not None and bool(torch.isfinite(g[name]).all()), name
        assert_close_scaled(g[name], ref, 2 * BF16_OP_REL, f"{combo} grad {name}", floors[name])


@pytest.mark.parametrize("combo", grid((bf16,), CPU_ALL[:2]))  # no triton kernel (the reference runs)
def test_temporal_conv_under_cpu_autocast(combo):
    x, w, b = torch.randn(2, 6, 20, 17), torch.randn(5, 6, 9) / 8, torch.randn(5)
    r = torch.randn(2, 5, 7, 17)
    want = reference.temporal_conv(x.double(), w.double(), b.double(), r.double(), (4, 4), True, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        y = ops.temporal_conv(x.bfloat16(), w, b, residual=r, stride=3, relu=True, backend=combo.backend)
    assert y.dtype == torch.bfloat16
    assert_close_scaled(y, want, BF16_OP_REL, str(combo))


def test_autocast_leaves_float64_alone():
    """Like torch's autocast, float64 tensors are not cast: a float64 argument next to a float32
    one is still a dtype error, and an all-float64 call runs in float64."""
    a = make_agc(1, 3, 4, 2, 3, 5, 2, dtype=f32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for backend in ops.available_backends("cpu"):
            cast = "float32" if backend == "cpu" else "bfloat16"  # cpu: computes in float32
            with pytest.raises(TypeError,
                               match=f"W has dtype torch.float64 but x has dtype torch.{cast}"):
                ops.adaptive_graph_conv(**{**a, "W": a["W"].double()}, backend=backend)
            assert ops.adaptive_graph_conv(**to64(a), backend=backend).dtype == torch.float64
    # outside autocast a mixed call is an error, as before
    with pytest.raises(TypeError, match="A has dtype torch.float32 but x has dtype torch.bfloat16"):
        ops.adaptive_graph_conv(**{**a, "x": a["x"].bfloat16()})


# ----------------------------------------------------------------------------------------------
# the reference itself, dispatch, build information


def test_reference_equals_released_formulation():
    """The op's semantics equal the released GLA-GCN graph unit (per-partition eager form)."""
    from benchmarks.peer_released import released_graph_unit

    a = make_agc(3, 7, 9, 4, 11, 17, 3)
    assert_close_scaled(reference.adaptive_graph_conv(**a), released_graph_unit(**a), 1e-12, "released")


def test_gjl_reference_literal_blend():
    """The reference is the literal spec: two products blended by lam."""
    a, lam = make_gjl((5,), 17, 8, 3), 0.3
    x = a["x"]
    expected = torch.stack([
        lam * (x[:, v] @ a["W_joint"][v] + a["b_joint"][v])
        + (1 - lam) * (x[:, v] @ a["W_shared"] + a["b_shared"]) for v in range(17)], dim=1)
    torch.testing.assert_close(reference.grouped_joint_linear(**a, lam=lam), expected)


def test_build_info_and_backends():
    info = posekernels.build_info()
    for key in ("version", "torch_version", "compiled_backends", "cuda_arch_list"):
        assert key in info
    assert info["version"] == posekernels.__version__
    assert info["extension"], f"extension failed to load: {info['extension_error']}"
    assert "cpu" in info["compiled_backends"]
    assert ops.available_backends("cpu")[0] == "cpu"
    assert "reference" in ops.available_backends("cuda")


def test_use_backend_and_unknown_backend():
    a = make_agc(1, 3, 3, 2, 2, 5, 2, with_b=False, with_bias=False)
    with ops.use_backend("reference"):
        y = ops.adaptive_graph_conv(**a)
    assert_close_scaled(y, reference.adaptive_graph_conv(**a), 1e-12, "use_backend")
    with pytest.raises(ValueError, match="backend must be one of"):
        ops.adaptive_graph_conv(**a, backend="magic")
    with pytest.raises(ValueError, match="not available"):
        ops.adaptive_graph_conv(**a, backend="cuda")
    with pytest.raises(ValueError, match="backend must be one of"):
        with ops.use_backend("fast"):
            pass


def test_fresh_import_loads_extension_without_warnings():
    """`import posekernels` as the first import of a process loads the extension silently."""
    import os
    import subprocess
    import sys

    code = ("import warnings; warnings.simplefilter('error')\n"
            "import posekernels\n"
            "info = posekernels.build_info()\n"
            "assert info['extension'], info['extension_error']\n")
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "TRITON_INTERPRET": "0"})
