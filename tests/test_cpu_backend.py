"""The fused C++ CPU backend on its own: float64 gradcheck, direct calls of the torch.ops with bad
input, reduced-precision inputs, and the kernel's internal paths (recomputed attention, thread
counts, uneven sample chunks). The cross-backend comparisons, opcheck and torch.compile live in
test_ops.py."""
from __future__ import annotations

import pytest
import torch

from posekernels import ops
from posekernels.ops import reference

pytestmark = pytest.mark.skipif("cpu" not in ops.available_backends("cpu"),
                                reason="the C++ extension (cpu backend) is not built")

AGC = ("x", "A", "W", "bias", "B", "theta_w", "theta_b", "phi_w", "phi_b")


def agc_args(n=2, cin=3, cout=4, ce=2, t=3, v=5, k=2, *, attention=True, with_b=True,
             with_bias=True, theta_b=True, phi_b=True, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=1.0):
        return (torch.randn(*shape, dtype=torch.float64, generator=gen) * scale).to(dtype)

    return {
        "x": rnd(n, cin, t, v),
        "A": torch.rand(k, v, v, dtype=torch.float64, generator=gen).to(dtype),
        "W": rnd(k, cout, cin, scale=0.5),
        "bias": rnd(k, cout) if with_bias else None,
        "B": rnd(k, v, v, scale=0.3) if with_b else None,
        "theta_w": rnd(k, ce, cin, scale=0.7) if attention else None,
        "theta_b": rnd(k, ce) if attention and theta_b else None,
        "phi_w": rnd(k, ce, cin, scale=0.7) if attention else None,
        "phi_b": rnd(k, ce) if attention and phi_b else None,
    }


def op_args(args):
    return tuple(args[name] for name in AGC)


def grads_through(fn, args, grad_out):
    """Output and gradients of every given input but A, through fn(**args)."""
    leaves = {k: (v.detach().clone().requires_grad_(k != "A") if v is not None else None)
              for k, v in args.items()}
    y = fn(**leaves)
    names = [k for k in AGC if k != "A" and leaves[k] is not None]
    grads = torch.autograd.grad(y, [leaves[k] for k in names], grad_out.to(y.dtype))
    return y.detach(), dict(zip(names, grads))


def cpu_agc(**kw):
    return ops.adaptive_graph_conv(**kw, backend="cpu")


# ---------------------------------------------------------------------------------------------
# gradcheck (float64)

AGC_CONFIGS = {
    "full": {},
    "no_attention": dict(attention=False),
    "attention_no_emb_bias": dict(theta_b=False, phi_b=False),
    "attention_phi_b_only": dict(theta_b=False, with_b=False),
    "plain": dict(attention=False, with_b=False, with_bias=False),
}


@pytest.mark.parametrize("config", list(AGC_CONFIGS))
def test_agc_gradcheck(config):
    args = agc_args(**AGC_CONFIGS[config])
    names = [k for k in AGC if args[k] is not None]
    tensors = [args[k].clone().requires_grad_(k != "A") for k in names]

    def fn(*ts):
        return cpu_agc(**dict(zip(names, ts)))

    assert torch.autograd.gradcheck(fn, tensors, eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("c,d", [(6, 3), (2, 5)])  # D < C (dot layout) and D >= C (axpy layout)
@pytest.mark.parametrize("groups", ["joint", "joint_bias", "shared", "both"])
def test_joint_linear_gradcheck(c, d, groups):
    gen = torch.Generator().manual_seed(1)
    v = 4
    x = torch.randn(2, 3, v, c, dtype=torch.float64, generator=gen, requires_grad=True)
    Wj = torch.randn(v, c, d, dtype=torch.float64, generator=gen, requires_grad=True)
    bj = torch.randn(v, d, dtype=torch.float64, generator=gen, requires_grad=True)
    Ws = torch.randn(c, d, dtype=torch.float64, generator=gen, requires_grad=True)
    bs = torch.randn(d, dtype=torch.float64, generator=gen, requires_grad=True)
    lam = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    if groups == "joint":
        inputs, fn = (x, Wj), lambda x, Wj: ops.grouped_joint_linear(x, Wj, backend="cpu")
    elif groups == "joint_bias":
        inputs, fn = (x, Wj, bj), lambda x, Wj, bj: ops.grouped_joint_linear(x, Wj, bj, backend="cpu")
    elif groups == "shared":
        inputs = (x, Ws, bs)
        fn = lambda x, Ws, bs: ops.grouped_joint_linear(x, None, None, Ws, bs, backend="cpu")  # noqa: E731
    else:
        inputs = (x, Wj, bj, Ws, bs, lam)
        fn = lambda *a: ops.grouped_joint_linear(*a, backend="cpu")  # noqa: E731
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# Direct op calls: results, empty gradients, recomputed attention

def test_agc_op_outputs_and_empty_gradients():
    args = agc_args(attention=False, with_b=False, with_bias=False)
    y, attn = torch.ops.posekernels.agc_forward(*op_args(args))
    assert attn.shape == (0,) and attn.dtype == y.dtype
    grads = torch.ops.posekernels.agc_backward(torch.ones_like(y), *op_args(args), attn)
    assert grads[0].shape == args["x"].shape and grads[1].shape == args["W"].shape
    assert all(g.shape == (0,) for g in grads[2:])

    args = agc_args(theta_b=False)
    y, attn = torch.ops.posekernels.agc_forward(*op_args(args))
    n, k, v = args["x"].shape[0], args["A"].shape[0], args["x"].shape[3]
    assert attn.shape == (n, k, v, v)
    torch.testing.assert_close(attn.sum(dim=-2), torch.ones(n, k, v, dtype=attn.dtype))
    grads = torch.ops.posekernels.agc_backward(torch.ones_like(y), *op_args(args), attn)
    shapes = [g.shape for g in grads]
    assert shapes[5] == (0,)  # theta_b absent
    assert shapes[7] == args["phi_b"].shape


def test_agc_backward_recomputes_attention_when_attn_is_empty():
    args = agc_args(n=3)
    y, attn = torch.ops.posekernels.agc_forward(*op_args(args))
    gy = torch.randn_like(y)
    saved = torch.ops.posekernels.agc_backward(gy, *op_args(args), attn)
    recomputed = torch.ops.posekernels.agc_backward(gy, *op_args(args), attn.new_empty(0))
    for a, b in zip(saved, recomputed):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_theta_b_gradient_is_exactly_zero():
    """Softmax over v ignores theta_b (it shifts each column of S by a constant)."""
    args = agc_args(n=2, t=4)
    _, g = grads_through(cpu_agc, args, torch.randn(2, 4, 4, 5, dtype=torch.float64))
    assert torch.count_nonzero(g["theta_b"]) == 0
    assert torch.count_nonzero(g["phi_b"]) > 0


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("n", [1, 5])  # one sample (no sample parallelism); uneven chunks
def test_agc_thread_counts(threads, n):
    args = agc_args(n=n, cin=5, cout=6, ce=3, t=4, v=7, k=3)
    gy = torch.randn(n, 6, 4, 7, dtype=torch.float64)
    y_ref, g_ref = grads_through(reference.adaptive_graph_conv, args, gy)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        y, g = grads_through(cpu_agc, args, gy)
    finally:
        torch.set_num_threads(previous)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    for name in g_ref:
        torch.testing.assert_close(g[name], g_ref[name], rtol=1e-9, atol=1e-10, msg=name)


def test_agc_is_reproducible():
    """Threads take samples dynamically, yet repeated calls agree bit for bit."""
    args = agc_args(n=7, cin=6, cout=5, ce=3, t=6, v=9, k=3, dtype=torch.float32)
    y, attn = torch.ops.posekernels.agc_forward(*op_args(args))
    gy = torch.randn_like(y)
    first = torch.ops.posekernels.agc_backward(gy, *op_args(args), attn)
    for _ in range(3):
        y2, attn2 = torch.ops.posekernels.agc_forward(*op_args(args))
        assert torch.equal(y2, y) and torch.equal(attn2, attn)
        again = torch.ops.posekernels.agc_backward(gy, *op_args(args), attn)
        assert all(torch.equal(a, b) for a, b in zip(first, again))


def test_noncontiguous_inputs_are_accepted():
    """The bindings make inputs contiguous themselves: a strided view gives the same result."""
    args = agc_args(n=2, cin=4, t=3, v=5)
    strided = dict(args)
    strided["x"] = args["x"].permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
    strided["W"] = args["W"].transpose(1, 2).contiguous().transpose(1, 2)
    assert not strided["x"].is_contiguous() and not strided["W"].is_contiguous()
    y, attn = torch.ops.posekernels.agc_forward(*op_args(args))
    y_nc, attn_nc = torch.ops.posekernels.agc_forward(*op_args(strided))
    torch.testing.assert_close(y_nc, y)
    gy = torch.randn_like(y)
    g = torch.ops.posekernels.agc_backward(gy, *op_args(args), attn)
    gy_nc = gy.transpose(2, 3).contiguous().transpose(2, 3)
    attn_nc = attn_nc.transpose(2, 3).contiguous().transpose(2, 3)
    g_nc = torch.ops.posekernels.agc_backward(gy_nc, *op_args(strided), attn_nc)
    for a, b in zip(g, g_nc):
        torch.testing.assert_close(a, b)

    x = torch.randn(4, 3, 6, dtype=torch.float64)
    W = torch.randn(3, 6, 2, dtype=torch.float64)
    x_nc = x.transpose(0, 1).contiguous().transpose(0, 1)
    torch.testing.assert_close(torch.ops.posekernels.jl_forward(x_nc, W, None),
                               torch.ops.posekernels.jl_forward(x, W, None))


# ---------------------------------------------------------------------------------------------
# Bad input through torch.ops.posekernels.* directly (no Python validation in between)

def _bad_agc_forward_cases():
    a = agc_args()
    cases = [
        ("x rank", dict(x=a["x"][0]), ValueError, r"x must have shape \(N, Cin, T, V\)"),
        ("x int", dict(x=a["x"].to(torch.int64)), TypeError, "x must be a floating-point"),
        ("x empty batch", dict(x=a["x"][:0]), ValueError, "every size >= 1"),
        ("A wrong V", dict(A=a["A"][:, :4, :4]), ValueError, r"A must have shape \(K, V, V\)"),
        ("A no partitions", dict(A=a["A"][:0]), ValueError, "at least one partition"),
        ("W wrong Cin", dict(W=a["W"][:, :, :2]), ValueError, r"W must have shape \(K, Cout, Cin\)"),
        ("W wrong K", dict(W=a["W"][:1]), ValueError, r"W must have shape \(K, Cout, Cin\)"),
        ("W dtype", dict(W=a["W"].float()), TypeError,
         "W has dtype torch.float32 but x has dtype torch.float64"),
        ("W int", dict(W=a["W"].to(torch.int32)), TypeError, "W must be a floating-point"),
        ("bias shape", dict(bias=a["bias"][:, :3]), ValueError,
         r"bias must have shape \(K, Cout\) = \(2, 4\)"),
        ("bias dtype", dict(bias=a["bias"].half()), TypeError, "bias has dtype"),
        ("B shape", dict(B=a["B"][:1]), ValueError, r"B must have shape \(K, V, V\)"),
        ("theta without phi", dict(phi_w=None, phi_b=None), ValueError, "theta_w and phi_w"),
        ("theta_b alone", dict(theta_w=None, phi_w=None, phi_b=None), ValueError, "theta_b was given"),
        ("phi_w shape", dict(phi_w=a["phi_w"][:, :1]), ValueError,
         r"phi_w must have shape \(K, Ce, Cin\)"),
        ("theta_w rank", dict(theta_w=a["theta_w"][0]), ValueError,
         r"theta_w must have shape \(K, Ce, Cin\)"),
        ("phi_b shape", dict(phi_b=a["phi_b"][:, :1]), ValueError, r"phi_b must have shape \(K, Ce\)"),
        ("phi_b dtype", dict(phi_b=a["phi_b"].float()), TypeError, "phi_b has dtype"),
    ]
    return [pytest.param(a, change, exc, match, id=name) for name, change, exc, match in cases]


@pytest.mark.parametrize("args,change,exc,match", _bad_agc_forward_cases())
def test_agc_forward_rejects_bad_input(args, change, exc, match):
    bad = {**args, **change}
    with pytest.raises(exc, match=match):
        torch.ops.posekernels.agc_forward(*op_args(bad))


def test_agc_backward_rejects_bad_input():
    a = agc_args()
    y, attn = torch.ops.posekernels.agc_forward(*op_args(a))
    gy = torch.ones_like(y)
    with pytest.raises(ValueError, match=r"grad_y must have shape \(N, Cout, T, V\)"):
        torch.ops.posekernels.agc_backward(gy[:, :2], *op_args(a), attn)
    with pytest.raises(TypeError, match="grad_y has dtype"):
        torch.ops.posekernels.agc_backward(gy.float(), *op_args(a), attn)
    with pytest.raises(TypeError, match="grad_y must be a floating-point"):
        torch.ops.posekernels.agc_backward(gy.long(), *op_args(a), attn)
    with pytest.raises(ValueError, match=r"attn must have shape \(N, K, V, V\)"):
        torch.ops.posekernels.agc_backward(gy, *op_args(a), attn[:, :1])
    with pytest.raises(TypeError, match="attn has dtype"):
        torch.ops.posekernels.agc_backward(gy, *op_args(a), attn.float())
    with pytest.raises(ValueError, match=r"W must have shape"):
        torch.ops.posekernels.agc_backward(gy, *op_args({**a, "W": a["W"][:, :, :1]}), attn)


@pytest.mark.parametrize("name,call,exc,match", [
    ("x rank", lambda x, W, b: (x[0], W, b), ValueError, r"x must have shape \(M, V, C\)"),
    ("x int", lambda x, W, b: (x.int(), W, b), TypeError, "x must be a floating-point"),
    ("x empty", lambda x, W, b: (x[:0], W, b), ValueError, "every size >= 1"),
    ("W wrong C", lambda x, W, b: (x, W[:, :5], b), ValueError,
     r"W must have shape \(V, C, D\) = \(3, 6, D\)"),
    ("W wrong V", lambda x, W, b: (x, W[:2], b), ValueError, r"W must have shape \(V, C, D\)"),
    ("b shape", lambda x, W, b: (x, W, b[:, :1]), ValueError, r"b must have shape \(V, D\) = \(3, 2\)"),
    ("W dtype", lambda x, W, b: (x, W.float(), b), TypeError, "W has dtype"),
    ("b dtype", lambda x, W, b: (x, W, b.half()), TypeError, "b has dtype"),
])
def test_jl_forward_rejects_bad_input(name, call, exc, match):
    x = torch.randn(4, 3, 6, dtype=torch.float64)
    W = torch.randn(3, 6, 2, dtype=torch.float64)
    b = torch.randn(3, 2, dtype=torch.float64)
    with pytest.raises(exc, match=match):
        torch.ops.posekernels.jl_forward(*call(x, W, b))


def test_jl_backward_rejects_bad_input_and_returns_empty_gb():
    x = torch.randn(4, 3, 6)
    W = torch.randn(3, 6, 2)
    gy = torch.randn(4, 3, 2)
    gx, gW, gb = torch.ops.posekernels.jl_backward(gy, x, W, False)
    assert gx.shape == x.shape and gW.shape == W.shape and gb.shape == (0,)
    assert torch.ops.posekernels.jl_backward(gy, x, W, True)[2].shape == (3, 2)
    with pytest.raises(ValueError, match=r"grad_y must have shape \(M, V, D\)"):
        torch.ops.posekernels.jl_backward(gy[:, :, :1], x, W, True)
    with pytest.raises(TypeError, match="grad_y has dtype"):
        torch.ops.posekernels.jl_backward(gy.double(), x, W, True)
    with pytest.raises(TypeError, match="x must be a floating-point"):
        torch.ops.posekernels.jl_backward(gy, x.long(), W, True)


# ---------------------------------------------------------------------------------------------
# float16 / bfloat16 inputs: computed in float32, returned in the input dtype

@pytest.mark.parametrize("dtype,tol", [(torch.float16, 5e-3), (torch.bfloat16, 4e-2)])
def test_agc_reduced_precision(dtype, tol):
    args = agc_args(n=2, cin=8, cout=8, ce=4, t=5, v=17, k=3, dtype=dtype, seed=3)
    ref_args = {k: (v.double() if v is not None else None) for k, v in args.items()}
    gy = torch.randn(2, 8, 5, 17, dtype=torch.float64)
    y_ref, g_ref = grads_through(reference.adaptive_graph_conv, ref_args, gy)
    y, g = grads_through(cpu_agc, args, gy)
    assert y.dtype == dtype
    _, attn = torch.ops.posekernels.agc_forward(*op_args(args))
    assert attn.dtype == dtype
    for name, got, want in [("y", y, y_ref)] + [(k, g[k], g_ref[k]) for k in g_ref]:
        assert got.dtype == dtype and got.shape == want.shape, name
        scale = want.abs().max().clamp_min(1.0)
        err = (got.double() - want).abs().max()
        assert err <= tol * scale, f"{name}: error {err:.3e} > {tol} x {scale:.3e}"


@pytest.mark.parametrize("dtype,tol", [(torch.float16, 5e-3), (torch.bfloat16, 4e-2)])
def test_joint_linear_reduced_precision(dtype, tol):
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(6, 17, 96, dtype=torch.float64, generator=gen)
    W = torch.randn(17, 96, 3, dtype=torch.float64, generator=gen) / 10
    b = torch.randn(17, 3, dtype=torch.float64, generator=gen)
    xs, Ws, bs = (t.to(dtype).requires_grad_() for t in (x, W, b))
    xr, Wr, br = (t.to(dtype).double().requires_grad_() for t in (x, W, b))
    y = ops.grouped_joint_linear(xs, Ws, bs, backend="cpu")
    y_ref = reference.joint_linear(xr, Wr, br)
    assert y.dtype == dtype
    gy = torch.randn_like(y_ref)
    got = torch.autograd.grad(y, (xs, Ws, bs), gy.to(dtype))
    want = torch.autograd.grad(y_ref, (xr, Wr, br), gy)
    for name, a, w in [("y", y, y_ref), ("gx", got[0], want[0]), ("gW", got[1], want[1]),
                       ("gb", got[2], want[2])]:
        assert a.dtype == dtype, name
        err = (a.double() - w).abs().max()
        assert err <= tol * w.abs().max().clamp_min(1.0), f"{name}: error {err:.3e}"


# ---------------------------------------------------------------------------------------------
# The backward ops as ops (test_ops.py runs opcheck on the forward ops)

@pytest.mark.parametrize("k", [1, 2])
def test_agc_backward_op_opcheck_and_fresh_outputs(k):
    args = agc_args(n=2, cin=3, cout=1, ce=1, t=2, v=4, k=k)
    y, attn = torch.ops.posekernels.agc_forward(*op_args(args))
    bw_args = (torch.randn_like(y),) + op_args(args) + (attn,)
    torch.library.opcheck(torch.ops.posekernels.agc_backward.default, bw_args)
    grads = torch.ops.posekernels.agc_backward(*bw_args)
    storages = [g.untyped_storage().data_ptr() for g in grads]
    assert len(set(storages)) == len(storages)  # no output aliases another


@pytest.mark.parametrize("c,d", [(4, 1), (1, 3), (5, 5)])
@pytest.mark.parametrize("has_bias", [True, False])
def test_jl_backward_op_opcheck(c, d, has_bias):
    x = torch.randn(3, 2, c, dtype=torch.float64)
    W = torch.randn(2, c, d, dtype=torch.float64)
    gy = torch.randn(3, 2, d, dtype=torch.float64)
    torch.library.opcheck(torch.ops.posekernels.jl_backward.default, (gy, x, W, has_bias))
