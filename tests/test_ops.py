"""Every available backend of both ops against the float64 reference, plus bad input, opcheck and
torch.compile. Inputs are drawn fresh on every run."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import posekernels
from _tiny_models import TinyLifter
from posekernels import ops
from posekernels.ops import reference

CPU_KERNEL_BACKENDS = [b for b in ops.available_backends("cpu") if b != "reference"]
_FAST = [b for b in CPU_KERNEL_BACKENDS if b != "triton"]  # triton runs interpreted here: tiny cases only
AGC_NAMES = ("x", "A", "W", "bias", "B", "theta_w", "theta_b", "phi_w", "phi_b")


def _rand(*shape, dtype, gen, scale=1.0):
    return (torch.randn(*shape, dtype=torch.float64, generator=gen) * scale).to(dtype)


def make_agc(n, cin, cout, ce, t, v, k, *, attention, with_b, with_bias, with_emb_bias=True,
             dtype=torch.float64, seed=None):
    gen = torch.Generator().manual_seed(seed if seed is not None else torch.seed())
    args = {
        "x": _rand(n, cin, t, v, dtype=dtype, gen=gen),
        "A": torch.rand(k, v, v, dtype=torch.float64, generator=gen).to(dtype),
        "W": _rand(k, cout, cin, dtype=dtype, gen=gen, scale=1 / math.sqrt(cin * k)),
        "bias": _rand(k, cout, dtype=dtype, gen=gen) if with_bias else None,
        "B": _rand(k, v, v, dtype=dtype, gen=gen, scale=0.3) if with_b else None,
        "theta_w": None, "theta_b": None, "phi_w": None, "phi_b": None,
    }
    if attention:
        args["theta_w"] = _rand(k, ce, cin, dtype=dtype, gen=gen, scale=1 / math.sqrt(cin))
        args["phi_w"] = _rand(k, ce, cin, dtype=dtype, gen=gen, scale=1 / math.sqrt(cin))
        if with_emb_bias:
            args["theta_b"] = _rand(k, ce, dtype=dtype, gen=gen)
            args["phi_b"] = _rand(k, ce, dtype=dtype, gen=gen)
    return args


def _differentiable(args):
    return [name for name in AGC_NAMES if name != "A" and args[name] is not None]


def run_agc(args, backend, grad_out=None):
    """Forward and (when grad_out is given) the gradient of every differentiable input."""
    leaves = {k: (v.detach().clone().requires_grad_(k in _differentiable(args)) if v is not None else None)
              for k, v in args.items()}
    y = ops.adaptive_graph_conv(**leaves, backend=backend)
    if grad_out is None:
        return y.detach(), {}
    names = _differentiable(args)
    grads = torch.autograd.grad(y, [leaves[n] for n in names], grad_out.to(y.dtype))
    return y.detach(), dict(zip(names, grads))


def assert_close_scaled(actual, expected, rel, name, scale=None):
    """|actual - expected| <= rel * scale elementwise, scale = max|expected| unless given."""
    actual = actual.double()
    if scale is None:
        scale = expected.abs().max().clamp_min(1e-12)
    err = (actual - expected).abs().max()
    assert err <= rel * scale, f"{name}: max error {err:.3e} exceeds {rel:g} x scale {scale:.3e}"


TOL = {torch.float64: 1e-10, torch.float32: 2e-5, torch.float16: 5e-3}


def check_agc_backend(backend, dtype, **shape):
    args = make_agc(dtype=dtype, **shape)
    ref_args = {k: (v.double() if v is not None else None) for k, v in args.items()}
    n, cin, t, v = args["x"].shape
    gout = torch.randn(n, args["W"].shape[1], t, v, dtype=torch.float64)
    y_ref, g_ref = run_agc(ref_args, "reference", gout)
    y, g = run_agc(args, backend, gout)
    assert y.dtype == dtype and y.shape == y_ref.shape
    assert_close_scaled(y, y_ref, TOL[dtype], f"{backend} y")
    assert set(g) == set(g_ref)
    for name in g_ref:
        assert g[name].shape == g_ref[name].shape, name
        # theta_b's exact gradient is 0: a bias constant over v leaves a softmax over v unchanged,
        # so its rounding noise is judged against the size of theta_w's gradient.
        scale = g_ref["theta_w"].abs().max() if name == "theta_b" else None
        assert_close_scaled(g[name], g_ref[name], TOL[dtype] * 5, f"{backend} grad {name}", scale)


agc_shapes = st.fixed_dictionaries({
    "n": st.integers(1, 3), "cin": st.integers(1, 12), "cout": st.integers(1, 12),
    "ce": st.integers(1, 6), "t": st.integers(1, 9), "v": st.sampled_from([1, 5, 15, 16, 17]),
    "k": st.integers(1, 3), "attention": st.booleans(), "with_b": st.booleans(),
    "with_bias": st.booleans(), "with_emb_bias": st.booleans(),
})


@pytest.mark.parametrize("backend", _FAST)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shape=agc_shapes)
def test_agc_backend_matches_reference(backend, dtype, shape):
    check_agc_backend(backend, dtype, **shape)


@pytest.mark.parametrize("backend", _FAST)
@pytest.mark.parametrize("n,t", [(4, 27), (2, 81)])
def test_agc_backend_model_sized(backend, n, t):
    """The real layer shape (C=96, Ce=24, V=17, K=3) with every term present."""
    check_agc_backend(backend, torch.float32, n=n, cin=96, cout=96, ce=24, t=t, v=17, k=3,
                      attention=True, with_b=True, with_bias=True)


@pytest.mark.parametrize("backend", CPU_KERNEL_BACKENDS)
def test_agc_noncontiguous_inputs(backend):
    args = make_agc(2, 6, 5, 3, 4, 17, 3, attention=True, with_b=True, with_bias=True,
                    dtype=torch.float32)
    # the same values, held in transposed storage
    x_nc = args["x"].permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
    W_nc = args["W"].transpose(1, 2).contiguous().transpose(1, 2)
    assert not x_nc.is_contiguous() and not W_nc.is_contiguous()
    y = ops.adaptive_graph_conv(**{**args, "x": x_nc, "W": W_nc}, backend=backend)
    y_ref = reference.adaptive_graph_conv(**{k: (v.double() if v is not None else None)
                                             for k, v in args.items()})
    assert_close_scaled(y, y_ref, 2e-5, "noncontiguous")


def test_reference_equals_released_formulation():
    """The op's semantics equal the released GLA-GCN graph unit (per-partition eager form)."""
    from benchmarks.peer_released import released_graph_unit

    args = make_agc(3, 7, 9, 4, 11, 17, 3, attention=True, with_b=True, with_bias=True)
    y = released_graph_unit(**args)
    assert_close_scaled(reference.adaptive_graph_conv(**args), y, 1e-12, "released")


# ----------------------------------------------------------------------------------------------
# grouped_joint_linear


def make_gjl(lead, v, c, d, *, joint, shared, biases, dtype=torch.float64):
    gen = torch.Generator().manual_seed(torch.seed())
    out = {"x": _rand(*lead, v, c, dtype=dtype, gen=gen), "W_joint": None, "b_joint": None,
           "W_shared": None, "b_shared": None}
    if joint:
        out["W_joint"] = _rand(v, c, d, dtype=dtype, gen=gen, scale=c ** -0.5)
        out["b_joint"] = _rand(v, d, dtype=dtype, gen=gen) if biases else None
    if shared:
        out["W_shared"] = _rand(c, d, dtype=dtype, gen=gen, scale=c ** -0.5)
        out["b_shared"] = _rand(d, dtype=dtype, gen=gen) if biases else None
    return out


def run_gjl(args, lam, backend, gout):
    leaves = {k: (v.detach().clone().requires_grad_(True) if v is not None else None)
              for k, v in args.items()}
    lam_leaf = lam.detach().clone().requires_grad_(True) if isinstance(lam, torch.Tensor) else lam
    y = ops.grouped_joint_linear(**leaves, lam=lam_leaf, backend=backend)
    names = [k for k, v in leaves.items() if v is not None]
    inputs = [leaves[k] for k in names] + ([lam_leaf] if isinstance(lam, torch.Tensor) else [])
    grads = torch.autograd.grad(y, inputs, gout.to(y.dtype), allow_unused=True)
    return y.detach(), dict(zip(names + ["lam"], grads))


gjl_cases = st.fixed_dictionaries({
    "lead": st.lists(st.integers(1, 4), min_size=0, max_size=2).map(tuple),
    "v": st.sampled_from([1, 15, 16, 17]), "c": st.integers(1, 20), "d": st.sampled_from([1, 3, 5, 16]),
    "groups": st.sampled_from(["both", "joint", "shared"]), "biases": st.booleans(),
    "lam": st.one_of(st.floats(0, 1), st.floats(0, 1).map(lambda f: torch.tensor(f, dtype=torch.float64))),
})


@pytest.mark.parametrize("backend", _FAST)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@settings(max_examples=30, deadline=None)
@given(case=gjl_cases)
def test_gjl_backend_matches_reference(backend, dtype, case):
    groups = case["groups"]
    args = make_gjl(case["lead"], case["v"], case["c"], case["d"], joint=groups != "shared",
                    shared=groups != "joint", biases=case["biases"], dtype=dtype)
    lam = case["lam"]
    ref_args = {k: (v.double() if v is not None else None) for k, v in args.items()}
    gout = torch.randn(*case["lead"], case["v"], case["d"], dtype=torch.float64)
    y_ref, g_ref = run_gjl(ref_args, lam, "reference", gout)
    y, g = run_gjl(args, lam, backend, gout)
    assert y.dtype == dtype and y.shape == y_ref.shape
    assert_close_scaled(y, y_ref, TOL[dtype], "y")
    for name, ref in g_ref.items():
        if ref is None:  # lam has no influence when only one group is given
            assert g[name] is None or g[name].abs().max() == 0, name
            continue
        assert_close_scaled(g[name], ref, TOL[dtype] * 5, f"grad {name}")


def test_gjl_reference_literal_blend():
    """The reference is the literal spec: two products blended by lam."""
    args = make_gjl((5,), 17, 8, 3, joint=True, shared=True, biases=True)
    lam = 0.3
    x = args["x"]
    expected = torch.stack([
        lam * (x[:, v] @ args["W_joint"][v] + args["b_joint"][v])
        + (1 - lam) * (x[:, v] @ args["W_shared"] + args["b_shared"]) for v in range(17)], dim=1)
    torch.testing.assert_close(reference.grouped_joint_linear(**args, lam=lam), expected)


# ----------------------------------------------------------------------------------------------
# dispatch, build information


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
    args = make_agc(1, 3, 3, 2, 2, 5, 2, attention=True, with_b=False, with_bias=False)
    with ops.use_backend("reference"):
        y = ops.adaptive_graph_conv(**args)
    assert_close_scaled(y, reference.adaptive_graph_conv(**args), 1e-12, "use_backend")
    with pytest.raises(ValueError, match="backend must be one of"):
        ops.adaptive_graph_conv(**args, backend="magic")
    with pytest.raises(ValueError, match="not available"):
        ops.adaptive_graph_conv(**args, backend="cuda")
    with pytest.raises(ValueError, match="backend must be one of"):
        with ops.use_backend("fast"):
            pass


# ----------------------------------------------------------------------------------------------
# bad input: every backend gets the same clear errors (checked before dispatch)


def _agc_case(**override):
    args = make_agc(2, 4, 6, 3, 5, 17, 3, attention=True, with_b=True, with_bias=True,
                    dtype=torch.float32)
    args.update(override)
    return args


def _bad_agc_cases():
    a = _agc_case()
    nan_A = a["A"].clone()
    nan_A[0, 1, 2] = float("nan")
    inf_A = a["A"].clone()
    inf_A[2, 0, 0] = float("inf")
    return [
        ("x rank", dict(x=a["x"][0]), ValueError, r"x must have shape \(N, Cin, T, V\)"),
        ("x int", dict(x=a["x"].to(torch.int64)), TypeError, "x must be a floating-point"),
        ("x not tensor", dict(x=a["x"].numpy()), TypeError, "x must be a torch.Tensor"),
        ("empty batch", dict(x=a["x"][:0]), ValueError, "non-empty batch and window"),
        ("empty window", dict(x=a["x"][:, :, :0]), ValueError, "non-empty batch and window"),
        ("A wrong V", dict(A=a["A"][:, :16, :16]), ValueError, r"A must have shape \(K, V, V\)"),
        ("A nan", dict(A=nan_A), ValueError, "A contains NaN or inf"),
        ("A inf", dict(A=inf_A), ValueError, "A contains NaN or inf"),
        ("W wrong K", dict(W=a["W"][:2]), ValueError, r"W must have shape \(K, Cout, Cin\)"),
        ("W wrong Cin", dict(W=a["W"][:, :, :3]), ValueError, r"W must have shape \(K, Cout, Cin\)"),
        ("W dtype", dict(W=a["W"].double()), TypeError, "W has dtype"),
        ("bias shape", dict(bias=a["bias"][:, :5]), ValueError, r"bias must have shape \(K, Cout\)"),
        ("B shape", dict(B=a["B"][:2]), ValueError, r"B must have shape \(K, V, V\)"),
        ("theta without phi", dict(phi_w=None, phi_b=None), ValueError, "theta_w and phi_w"),
        ("theta_b alone", dict(theta_w=None, phi_w=None, phi_b=None), ValueError, "theta_b was given"),
        ("phi_w shape", dict(phi_w=a["phi_w"][:, :2]), ValueError, r"phi_w must have shape \(K, Ce, Cin\)"),
        ("theta_b shape", dict(theta_b=a["theta_b"][:, :1]), ValueError, r"theta_b must have shape \(K, Ce\)"),
        ("mixed device", dict(W=a["W"].to("meta")), ValueError, "W is on meta"),
    ]


@pytest.mark.parametrize("backend", ["reference"] + CPU_KERNEL_BACKENDS)
@pytest.mark.parametrize("case", _bad_agc_cases(), ids=lambda c: c[0])
def test_agc_bad_input(backend, case):
    _, override, exc, pattern = case
    with pytest.raises(exc, match=pattern):
        ops.adaptive_graph_conv(**_agc_case(**override), backend=backend)


def _bad_gjl_cases():
    a = make_gjl((4,), 17, 8, 3, joint=True, shared=True, biases=True, dtype=torch.float32)
    return [
        ("x rank", dict(x=a["x"][0, 0]), {}, ValueError, r"x must have shape \(\.\.\., V, C\)"),
        ("x int", dict(x=a["x"].to(torch.int32)), {}, TypeError, "x must be a floating-point"),
        ("empty", dict(x=a["x"][:0]), {}, ValueError, "x must not be empty"),
        ("no weights", dict(W_joint=None, b_joint=None, W_shared=None, b_shared=None), {},
         ValueError, "needs W_joint"),
        ("W_joint V", dict(W_joint=a["W_joint"][:16]), {}, ValueError, r"W_joint must have shape \(V, C, D\)"),
        ("W_shared C", dict(W_shared=a["W_shared"][:7]), {}, ValueError, r"W_shared must have shape \(C, D\)"),
        ("D mismatch", dict(W_shared=a["W_shared"][:, :2], b_shared=a["b_shared"][:2]), {},
         ValueError, "to match W_joint's D"),
        ("b_joint shape", dict(b_joint=a["b_joint"][:, :2]), {}, ValueError, r"b_joint must have shape \(V, D\)"),
        ("b_shared alone", dict(W_shared=None), {}, ValueError, "b_shared was given without W_shared"),
        ("dtype", dict(W_joint=a["W_joint"].double()), {}, TypeError, "W_joint has dtype"),
        ("lam high", {}, dict(lam=1.5), ValueError, r"lam must lie in \[0, 1\]"),
        ("lam negative tensor", {}, dict(lam=torch.tensor(-0.1)), ValueError, r"lam must lie in \[0, 1\]"),
        ("lam vector", {}, dict(lam=torch.rand(2)), ValueError, "0-dim tensor"),
        ("lam string", {}, dict(lam="half"), TypeError, "lam must be a float"),
        ("lam int tensor", {}, dict(lam=torch.tensor(1)), TypeError, "lam must be a floating-point"),
    ]


@pytest.mark.parametrize("backend", ["reference"] + CPU_KERNEL_BACKENDS)
@pytest.mark.parametrize("case", _bad_gjl_cases(), ids=lambda c: c[0])
def test_gjl_bad_input(backend, case):
    _, override, kw, exc, pattern = case
    args = make_gjl((4,), 17, 8, 3, joint=True, shared=True, biases=True, dtype=torch.float32)
    args.update(override)
    with pytest.raises(exc, match=pattern):
        ops.grouped_joint_linear(**args, **kw, backend=backend)


# ----------------------------------------------------------------------------------------------
# autocast: the constant graph and float32 weights meet a reduced-precision activation

ALL_CPU_BACKENDS = ["reference"] + CPU_KERNEL_BACKENDS
# bfloat16 rounds each input to 8 significant bits (2^-9 relative); these small sums stay within
# about 1e-2 of the output's largest value, gradients within 2e-2
BF16_OP_REL = 3e-2


@pytest.mark.parametrize("backend", ALL_CPU_BACKENDS)
@pytest.mark.parametrize("x_dtype", [torch.float32, torch.bfloat16])
def test_agc_under_cpu_autocast(backend, x_dtype):
    """Under torch.autocast("cpu", bfloat16) a float32 A and float32 weights are cast with x, on
    every backend: bfloat16 output close to float64, float32 gradients for the float32 leaves."""
    args = make_agc(2, 5, 6, 3, 4, 17, 3, attention=True, with_b=True, with_bias=True,
                    dtype=torch.float32, seed=12)
    ref_args = {k: (v.double() if v is not None else None) for k, v in args.items()}
    gout = torch.randn(2, 6, 4, 17, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y_ref, g_ref = run_agc(ref_args, "reference", gout)
    leaves = {k: (v.detach().clone().requires_grad_(k != "A") if v is not None else None)
              for k, v in args.items()}
    x_in = leaves["x"].to(x_dtype)  # what a previous layer returns under autocast
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = ops.adaptive_graph_conv(**{**leaves, "x": x_in}, backend=backend)
    assert y.dtype == torch.bfloat16
    assert_close_scaled(y, y_ref, BF16_OP_REL, f"{backend} y")
    names = _differentiable(args)
    grads = torch.autograd.grad(y, [leaves[n] for n in names], gout.to(y.dtype))
    for name, grad in zip(names, grads):
        assert grad.dtype == torch.float32 and bool(torch.isfinite(grad).all()), name
        scale = g_ref["theta_w"].abs().max() if name == "theta_b" else None
        assert_close_scaled(grad, g_ref[name], 2 * BF16_OP_REL, f"{backend} grad {name}", scale)


@pytest.mark.parametrize("backend", ALL_CPU_BACKENDS)
@pytest.mark.parametrize("lam", [0.3, "tensor"])
def test_gjl_under_cpu_autocast(backend, lam):
    args = make_gjl((3, 2), 17, 8, 3, joint=True, shared=True, biases=True, dtype=torch.float32)
    lam = torch.tensor(0.3) if lam == "tensor" else lam
    gout = torch.randn(3, 2, 17, 3, dtype=torch.float64)
    ref_args = {k: v.double() for k, v in args.items()}
    y_ref, g_ref = run_gjl(ref_args, lam.double() if isinstance(lam, torch.Tensor) else lam,
                           "reference", gout)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, g = run_gjl({**args, "x": args["x"].bfloat16()}, lam, backend, gout)
    assert y.dtype == torch.bfloat16
    assert_close_scaled(y, y_ref, BF16_OP_REL, f"{backend} y")
    for name, ref in g_ref.items():
        assert g[name] is not None and bool(torch.isfinite(g[name]).all()), name
        assert_close_scaled(g[name], ref, 2 * BF16_OP_REL, f"{backend} grad {name}")


@pytest.mark.parametrize("backend", [b for b in ALL_CPU_BACKENDS if b != "triton"])
def test_temporal_conv_under_cpu_autocast(backend):  # (no triton kernel: it runs the reference)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 6, 20, 17, generator=g)
    w, b = torch.randn(5, 6, 9, generator=g) / 8, torch.randn(5, generator=g)
    r = torch.randn(2, 5, 7, 17, generator=g)
    want = reference.temporal_conv(x.double(), w.double(), b.double(), r.double(), (4, 4), True, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        y = ops.temporal_conv(x.bfloat16(), w, b, residual=r, stride=3, relu=True, backend=backend)
    assert y.dtype == torch.bfloat16
    assert_close_scaled(y, want, BF16_OP_REL, backend)


def test_autocast_leaves_float64_alone():
    """Like torch's autocast, float64 tensors are not cast: a float64 argument next to a float32
    one is still a dtype error, and an all-float64 call runs in float64."""
    args = make_agc(1, 3, 4, 2, 3, 5, 2, attention=True, with_b=True, with_bias=True,
                    dtype=torch.float32, seed=3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with pytest.raises(TypeError,
                           match="W has dtype torch.float64 but x has dtype torch.bfloat16"):
            ops.adaptive_graph_conv(**{**args, "W": args["W"].double()})
        y = ops.adaptive_graph_conv(**{k: (v.double() if v is not None else None)
                                       for k, v in args.items()})
        assert y.dtype == torch.float64
    # outside autocast a mixed call is an error, as before
    with pytest.raises(TypeError, match="A has dtype torch.float32 but x has dtype torch.bfloat16"):
        ops.adaptive_graph_conv(**{**args, "x": args["x"].bfloat16()})


@pytest.mark.parametrize("backend", ALL_CPU_BACKENDS)
def test_A_requiring_grad_is_refused(backend):
    """A is a constant graph (no gradient on any backend): an A that requires grad is an error,
    not a silently missing gradient; under no_grad it is harmless."""
    args = make_agc(1, 3, 4, 2, 3, 5, 2, attention=True, with_b=True, with_bias=True,
                    dtype=torch.float64, seed=4)
    A = args["A"].clone().requires_grad_(True)
    with pytest.raises(ValueError, match="A requires grad.*A.detach()"):
        ops.adaptive_graph_conv(**{**args, "A": A}, backend=backend)
    with torch.no_grad():
        y = ops.adaptive_graph_conv(**{**args, "A": A}, backend=backend)
    assert_close_scaled(y, reference.adaptive_graph_conv(**args), 1e-10, backend)


def test_A_requiring_grad_is_refused_by_the_raw_op():
    pk = _native_ops_or_skip()
    a = make_agc(1, 3, 4, 2, 3, 5, 2, attention=True, with_b=False, with_bias=False, seed=5)
    args = [a[n] for n in AGC_NAMES]
    args[1] = args[1].clone().requires_grad_(True)
    with pytest.raises(ValueError, match="A requires grad"):
        pk.agc_forward(*args)


# ----------------------------------------------------------------------------------------------
# torch.library: opcheck and torch.compile


def _native_ops_or_skip():
    if "cpu" not in CPU_KERNEL_BACKENDS:
        pytest.skip("compiled extension not available")
    return torch.ops.posekernels


@pytest.mark.parametrize("attention,with_b,with_bias", [(True, True, True), (False, False, False),
                                                        (True, False, False), (False, True, True)])
def test_opcheck_agc(attention, with_b, with_bias):
    pk = _native_ops_or_skip()
    a = make_agc(2, 5, 4, 3, 3, 17, 3, attention=attention, with_b=with_b, with_bias=with_bias,
                 dtype=torch.float64)
    for name in _differentiable(a):
        a[name].requires_grad_(True)
    torch.library.opcheck(pk.agc_forward.default, tuple(a[n] for n in AGC_NAMES))


@pytest.mark.parametrize("has_bias", [True, False])
def test_opcheck_jl(has_bias):
    pk = _native_ops_or_skip()
    x = torch.randn(6, 17, 5, dtype=torch.float64, requires_grad=True)
    W = torch.randn(17, 5, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(17, 3, dtype=torch.float64, requires_grad=True) if has_bias else None
    torch.library.opcheck(pk.jl_forward.default, (x, W, b))


def test_torch_compile_fullgraph():
    model = TinyLifter()
    x = torch.randn(3, 9, 17, 2)
    eager = model(x)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    out = compiled(x)
    torch.testing.assert_close(out, eager, rtol=1e-5, atol=1e-5)
    out.sum().backward()
    assert model.lam.grad is not None and model.theta_w.grad is not None


@pytest.mark.slow
def test_torch_compile_inductor():
    model = TinyLifter()
    x = torch.randn(2, 5, 17, 2)
    torch.testing.assert_close(torch.compile(model, fullgraph=True)(x), model(x), rtol=1e-4, atol=1e-5)


def test_fresh_import_loads_extension_without_warnings():
    """`import posekernels` as the first import of a process loads the extension silently."""
    import subprocess
    import sys

    code = ("import warnings; warnings.simplefilter('error')\n"
            "import posekernels\n"
            "info = posekernels.build_info()\n"
            "assert info['extension'], info['extension_error']\n")
    subprocess.run([sys.executable, "-c", code], check=True, env={**__import__("os").environ,
                                                                  "TRITON_INTERPRET": "0"})
