"""The ``cuda`` backend (csrc/cuda, python_api/cuda) against the float64 reference, on CUDA tensors.

Every test is marked ``gpu``: conftest.py skips them without a CUDA device, and the module skips
itself when the extension was built without its CUDA kernels. Inputs are drawn fresh on every run
(the seed is in the assertion message).

Tolerances are scale-aware (max |error| <= tol * max |reference|): float32 and float64 are
computed natively; float16/bfloat16 accumulate in fp32 but round the aggregated operand of the
tensor-core product and the saved attention term to 16 bits, hence the looser bounds.
"""
from __future__ import annotations

import math
import os

import pytest
import torch

from _tiny_models import TinyLifter

import posekernels
from posekernels import ops
from posekernels.ops import reference


def _cuda_backend_built() -> bool:
    try:
        return "cuda" in posekernels.build_info()["compiled_backends"]
    except Exception:  # pragma: no cover - a broken build reports through test_ops
        return False


pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not _cuda_backend_built(), reason="posekernels was built without its CUDA kernels"),
]

AGC_NAMES = ("x", "A", "W", "bias", "B", "theta_w", "theta_b", "phi_w", "phi_b")
FWD_TOL = {torch.float64: 1e-10, torch.float32: 2e-5, torch.float16: 5e-3, torch.bfloat16: 3e-2}
GRAD_TOL = {dt: 5 * tol for dt, tol in FWD_TOL.items()}
DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def _seed() -> int:
    return int(torch.randint(0, 2**31 - 1, ()).item())


def make_agc(n, cin, cout, ce, t, v, k, *, attention=True, with_b=True, with_bias=True, emb_bias=True,
             dtype=torch.float32, seed=0, device="cuda"):
    """Random arguments (drawn in float64 on the CPU, then cast and moved)."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=1.0):
        return (torch.randn(*shape, dtype=torch.float64, generator=g) * scale).to(device, dtype)

    args = {
        "x": r(n, cin, t, v),
        "A": torch.rand(k, v, v, dtype=torch.float64, generator=g).to(device, dtype),
        "W": r(k, cout, cin, scale=1 / math.sqrt(cin * k)),
        "bias": r(k, cout) if with_bias else None,
        "B": r(k, v, v, scale=0.3) if with_b else None,
        "theta_w": None, "theta_b": None, "phi_w": None, "phi_b": None,
    }
    if attention:
        args["theta_w"] = r(k, ce, cin, scale=1 / math.sqrt(cin))
        args["phi_w"] = r(k, ce, cin, scale=1 / math.sqrt(cin))
        if emb_bias:
            args["theta_b"] = r(k, ce)
            args["phi_b"] = r(k, ce)
    return args


def _differentiable(args):
    return [name for name in AGC_NAMES if name != "A" and args[name] is not None]


def run_agc(args, backend, grad_out):
    leaves = {k: (v.detach().clone().requires_grad_(k in _differentiable(args)) if v is not None else None)
              for k, v in args.items()}
    y = ops.adaptive_graph_conv(**leaves, backend=backend)
    names = _differentiable(args)
    grads = torch.autograd.grad(y, [leaves[n] for n in names], grad_out.to(y.dtype))
    return y.detach(), dict(zip(names, grads))


def assert_close_scaled(actual, expected, tol, what, floor=1e-12):
    actual = actual.double()
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert torch.isfinite(actual).all(), f"{what}: non-finite values"
    scale = max(float(expected.abs().max()), floor)
    err = float((actual - expected).abs().max())
    assert err <= tol * scale, f"{what}: max error {err:.3e} exceeds {tol:g} x scale {scale:.3e}"


def check_agc(dtype, seed, **shape):
    args = make_agc(dtype=dtype, seed=seed, **shape)
    ref_args = {k: (v.double() if v is not None else None) for k, v in args.items()}
    n, _, t, v = args["x"].shape
    gout = torch.randn(n, args["W"].shape[1], t, v, dtype=torch.float64, device="cuda").to(dtype).double()
    y_ref, g_ref = run_agc(ref_args, "reference", gout)
    y, g = run_agc(args, "cuda", gout)
    where = f"dtype={dtype} seed={seed} shape={shape}"
    assert y.dtype == dtype and y.device.type == "cuda"
    assert_close_scaled(y, y_ref, FWD_TOL[dtype], f"y ({where})")
    assert set(g) == set(g_ref)
    for name, ref in g_ref.items():
        assert g[name].dtype == dtype, name
        # gtheta_b is exactly zero in theory (a per-row bias is constant along the softmax axis):
        # measure it against the scale of the other embedding gradients.
        floor = max(float(g_ref["theta_w"].abs().max()), float(g_ref["phi_w"].abs().max())) if name == "theta_b" else 1e-12
        assert_close_scaled(g[name], ref, GRAD_TOL[dtype], f"grad {name} ({where})", floor)


SMALL = dict(n=2, cin=6, cout=5, ce=3, t=4, k=3)
FLAGS = [
    dict(attention=True, with_b=True, with_bias=True, emb_bias=True),
    dict(attention=True, with_b=False, with_bias=False, emb_bias=False),
    dict(attention=False, with_b=True, with_bias=True),
    dict(attention=False, with_b=False, with_bias=False),
]


@pytest.mark.parametrize("dtype", DTYPES + [torch.float64], ids=str)
@pytest.mark.parametrize("v", [15, 16, 17])
@pytest.mark.parametrize("flags", FLAGS, ids=lambda f: "-".join(k for k, on in f.items() if on) or "plain")
def test_agc_small_shapes(dtype, v, flags):
    check_agc(dtype, _seed(), v=v, **SMALL, **flags)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("n,t", [(4, 27), (2, 81)])
def test_agc_model_sized(dtype, n, t):
    """The real layer shape: C = 96, Ce = 24, K = 3, V = 17, every term present."""
    check_agc(dtype, _seed(), n=n, cin=96, cout=96, ce=24, t=t, v=17, k=3)


# Shapes that take the less common paths of the kernels: several Cout / Cin / Ce tiles, graphs
# too large to stay in shared memory, V = 1 and V at the limit, long windows split over blocks.
EDGE_SHAPES = {
    "channels_over_one_tile": dict(n=1, cin=130, cout=100, ce=50, t=5, v=5, k=2),
    "graph_not_resident": dict(n=1, cin=5, cout=7, ce=3, t=2, v=61, k=3),
    "max_joints": dict(n=1, cin=3, cout=4, ce=2, t=2, v=128, k=1),
    "single_joint_long_window": dict(n=1, cin=4, cout=3, ce=2, t=300, v=1, k=2),
    "long_window": dict(n=2, cin=6, cout=5, ce=3, t=243, v=17, k=2),
    "tiny": dict(n=1, cin=1, cout=1, ce=1, t=1, v=1, k=1),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=str)
@pytest.mark.parametrize("case", sorted(EDGE_SHAPES))
def test_agc_edge_shapes(dtype, case):
    check_agc(dtype, _seed(), **EDGE_SHAPES[case])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_agc_simt_path_for_16bit(dtype, monkeypatch):
    """POSEKERNELS_CUDA_NO_MMA=1 runs the 16-bit types on the SIMT path instead of tensor cores."""
    monkeypatch.setenv("POSEKERNELS_CUDA_NO_MMA", "1")
    check_agc(dtype, _seed(), n=2, cin=96, cout=96, ce=24, t=27, v=17, k=3)
    check_agc(dtype, _seed(), v=16, **SMALL, **FLAGS[0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_agc_backward_recomputes_attention(dtype):
    """agc_backward with an empty attn recomputes the softmax term; both ways agree."""
    pk = torch.ops.posekernels
    a = make_agc(2, 8, 7, 4, 9, 17, 3, dtype=dtype, seed=_seed())
    args = tuple(a[n] for n in AGC_NAMES)
    y, attn = pk.agc_forward(*args)
    gy = torch.randn_like(y)
    saved = pk.agc_backward(gy, *args, attn)
    recomputed = pk.agc_backward(gy, *args, attn.new_empty((0,)))
    for s, r in zip(saved, recomputed):
        assert s.shape == r.shape
        if s.numel():
            assert_close_scaled(r, s.double(), 5 * FWD_TOL[dtype], "recomputed vs saved attn")


def test_agc_forward_attn_output_is_the_softmax_term():
    pk = torch.ops.posekernels
    a = make_agc(2, 6, 5, 3, 7, 17, 3, dtype=torch.float32, seed=_seed())
    _, attn = pk.agc_forward(*(a[n] for n in AGC_NAMES))
    expected = reference.attention(*(a[n].double() for n in ("x", "theta_w", "theta_b", "phi_w", "phi_b")))
    assert_close_scaled(attn, expected, 2e-5, "attn")
    a_no = make_agc(2, 6, 5, 3, 7, 17, 3, attention=False, seed=_seed())
    _, attn_no = pk.agc_forward(*(a_no[n] for n in AGC_NAMES))
    assert attn_no.shape == (0,)


def test_agc_noncontiguous_inputs():
    args = make_agc(2, 6, 5, 3, 4, 17, 3, seed=_seed())
    x_nc = args["x"].permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
    W_nc = args["W"].transpose(1, 2).contiguous().transpose(1, 2)
    B_nc = args["B"].transpose(1, 2).contiguous().transpose(1, 2)
    assert not x_nc.is_contiguous() and not W_nc.is_contiguous() and not B_nc.is_contiguous()
    y_ref = reference.adaptive_graph_conv(**{k: (v.double() if v is not None else None) for k, v in args.items()})
    y = ops.adaptive_graph_conv(**{**args, "x": x_nc, "W": W_nc, "B": B_nc}, backend="cuda")
    assert_close_scaled(y, y_ref, 2e-5, "noncontiguous (front end)")
    # the op itself accepts strided tensors too
    y_op, _ = torch.ops.posekernels.agc_forward(x_nc, args["A"], W_nc, args["bias"], B_nc, args["theta_w"],
                                                args["theta_b"], args["phi_w"], args["phi_b"])
    assert_close_scaled(y_op, y_ref, 2e-5, "noncontiguous (op)")
    x_slice = make_agc(2, 6, 5, 3, 8, 17, 3, seed=_seed())["x"][:, :, ::2]  # a strided view
    y_s = ops.adaptive_graph_conv(**{**args, "x": x_slice}, backend="cuda")
    y_s_ref = reference.adaptive_graph_conv(**{k: (v.double() if v is not None else None)
                                               for k, v in {**args, "x": x_slice}.items()})
    assert_close_scaled(y_s, y_s_ref, 2e-5, "sliced x")


def test_agc_side_stream_and_current_device():
    """Work is queued on the current stream (and the input's device), without host syncs."""
    args = make_agc(2, 8, 8, 4, 9, 17, 3, seed=_seed())
    y_default = ops.adaptive_graph_conv(**args, backend="cuda")
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        y_side = ops.adaptive_graph_conv(**args, backend="cuda")
    torch.cuda.current_stream().wait_stream(stream)
    torch.testing.assert_close(y_side, y_default, rtol=1e-6, atol=1e-6)
    if torch.cuda.device_count() > 1:
        other = {k: (v.to("cuda:1") if v is not None else None) for k, v in args.items()}
        with torch.cuda.device(0):
            y_other = ops.adaptive_graph_conv(**other, backend="cuda")
        assert y_other.device == torch.device("cuda:1")
        torch.testing.assert_close(y_other.to("cuda:0"), y_default, rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# bad input straight into the op (the Python front end checks before dispatch; the C++ op must
# raise the same kinds of errors for direct callers)


def _bad_op_cases():
    return [
        ("x rank", lambda a: {**a, "x": a["x"][0]}, ValueError, r"x must have shape \(N, Cin, T, V\)"),
        ("x int", lambda a: {**a, "x": a["x"].to(torch.int32)}, TypeError, "x must be a floating-point"),
        ("A wrong V", lambda a: {**a, "A": a["A"][:, :16, :16]}, ValueError, r"A must have shape \(K, V, V\)"),
        ("W wrong Cin", lambda a: {**a, "W": a["W"][:, :, :3]}, ValueError, r"W must have shape \(K, Cout, Cin\)"),
        ("W dtype", lambda a: {**a, "W": a["W"].double()}, TypeError, "W has dtype"),
        ("W on cpu", lambda a: {**a, "W": a["W"].cpu()}, ValueError, "W is on cpu"),
        ("bias shape", lambda a: {**a, "bias": a["bias"][:, :2]}, ValueError, r"bias must have shape \(K, Cout\)"),
        ("B shape", lambda a: {**a, "B": a["B"][:2]}, ValueError, r"B must have shape \(K, V, V\)"),
        ("phi without theta", lambda a: {**a, "theta_w": None, "theta_b": None}, ValueError, "theta_w and phi_w"),
        ("theta_b shape", lambda a: {**a, "theta_b": a["theta_b"][:, :1]}, ValueError, r"theta_b must have shape"),
    ]


@pytest.mark.parametrize("case", _bad_op_cases(), ids=lambda c: c[0])
def test_agc_op_bad_input(case):
    _, edit, exc, pattern = case
    a = edit(make_agc(2, 4, 6, 3, 5, 17, 3, seed=0))
    with pytest.raises(exc, match=pattern):
        torch.ops.posekernels.agc_forward(*(a[n] for n in AGC_NAMES))


def test_agc_too_many_joints_is_a_value_error():
    a = make_agc(1, 2, 2, 1, 2, 129, 1, seed=0)
    with pytest.raises(ValueError, match="at most 128"):
        torch.ops.posekernels.agc_forward(*(a[n] for n in AGC_NAMES))


def test_agc_backward_bad_grad():
    a = make_agc(2, 4, 6, 3, 5, 17, 3, seed=0)
    args = tuple(a[n] for n in AGC_NAMES)
    y, attn = torch.ops.posekernels.agc_forward(*args)
    with pytest.raises(ValueError, match="grad_y must have shape"):
        torch.ops.posekernels.agc_backward(y[:, :3], *args, attn)
    with pytest.raises(TypeError, match="grad_y has dtype"):
        torch.ops.posekernels.agc_backward(y.double(), *args, attn)
    with pytest.raises(ValueError, match="attn must have shape"):
        torch.ops.posekernels.agc_backward(y, *args, attn[:, :2])


def test_front_end_errors_with_cuda_backend():
    a = make_agc(2, 4, 6, 3, 5, 17, 3, seed=0)
    with pytest.raises(ValueError, match=r"W must have shape \(K, Cout, Cin\)"):
        ops.adaptive_graph_conv(**{**a, "W": a["W"][:2]}, backend="cuda")
    with pytest.raises(TypeError, match="W has dtype"):
        ops.adaptive_graph_conv(**{**a, "W": a["W"].half()}, backend="cuda")
    with pytest.raises(ValueError, match="not available"):
        ops.adaptive_graph_conv(**{k: (v.cpu() if v is not None else None) for k, v in a.items()}, backend="cuda")


# ----------------------------------------------------------------------------------------------
# per-joint linear


JL_CASES = [((64,), 17, 96, 3), ((5, 7), 15, 20, 1), ((3,), 16, 300, 16), ((1,), 1, 1, 5), ((33,), 17, 33, 5)]


@pytest.mark.parametrize("dtype", DTYPES + [torch.float64], ids=str)
@pytest.mark.parametrize("lead,v,c,d", JL_CASES)
@pytest.mark.parametrize("groups", ["both", "joint", "shared"])
@pytest.mark.parametrize("tensor_lam", [False, True])
def test_gjl_matches_reference(dtype, lead, v, c, d, groups, tensor_lam):
    seed = _seed()
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=1.0):
        return (torch.randn(*shape, dtype=torch.float64, generator=g) * scale).to("cuda", dtype)

    args = {"x": r(*lead, v, c), "W_joint": None, "b_joint": None, "W_shared": None, "b_shared": None}
    if groups != "shared":
        args["W_joint"], args["b_joint"] = r(v, c, d, scale=c ** -0.5), r(v, d)
    if groups != "joint":
        args["W_shared"], args["b_shared"] = r(c, d, scale=c ** -0.5), r(d)
    lam = torch.tensor(0.3, dtype=torch.float64, device="cuda") if tensor_lam else 0.3
    gout = torch.randn(*lead, v, d, dtype=torch.float64, device="cuda").to(dtype).double()

    def run(a, backend, cast):
        leaves = {k: (cast(t).detach().requires_grad_() if t is not None else None) for k, t in a.items()}
        lam_leaf = lam.detach().clone().requires_grad_() if tensor_lam else lam
        y = ops.grouped_joint_linear(**leaves, lam=lam_leaf, backend=backend)
        names = [k for k, t in leaves.items() if t is not None]
        inputs = [leaves[k] for k in names] + ([lam_leaf] if tensor_lam else [])
        grads = torch.autograd.grad(y, inputs, gout.to(y.dtype), allow_unused=True)
        return y.detach(), dict(zip(names + (["lam"] if tensor_lam else []), grads))

    y_ref, g_ref = run(args, "reference", lambda t: t.double())
    y, g = run(args, "cuda", lambda t: t)
    where = f"dtype={dtype} seed={seed} lead={lead} v={v} c={c} d={d} groups={groups}"
    assert y.dtype == dtype
    assert_close_scaled(y, y_ref, FWD_TOL[dtype], f"y ({where})")
    for name, ref in g_ref.items():
        if ref is None:
            assert g[name] is None or g[name].abs().max() == 0, name
            continue
        assert_close_scaled(g[name], ref, GRAD_TOL[dtype], f"grad {name} ({where})")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("has_bias", [True, False])
def test_jl_ops_direct(dtype, has_bias):
    pk = torch.ops.posekernels
    x = torch.randn(300, 17, 96, device="cuda").to(dtype)
    W = (torch.randn(17, 96, 3, device="cuda") / 10).to(dtype)
    b = torch.randn(17, 3, device="cuda").to(dtype) if has_bias else None
    y = pk.jl_forward(x, W, b)
    y_ref = reference.joint_linear(x.double(), W.double(), b.double() if has_bias else None)
    assert_close_scaled(y, y_ref, FWD_TOL[dtype], "jl y")
    gy = torch.randn_like(y)
    gx, gW, gb = pk.jl_backward(gy, x, W, has_bias)
    assert_close_scaled(gx, torch.einsum("mvd,vcd->mvc", gy.double(), W.double()), GRAD_TOL[dtype], "jl gx")
    assert_close_scaled(gW, torch.einsum("mvc,mvd->vcd", x.double(), gy.double()), GRAD_TOL[dtype], "jl gW")
    if has_bias:
        assert_close_scaled(gb, gy.double().sum(0), GRAD_TOL[dtype], "jl gb")
    else:
        assert gb.shape == (0,)


def test_jl_op_bad_input():
    pk = torch.ops.posekernels
    x = torch.randn(4, 17, 8, device="cuda")
    W = torch.randn(17, 8, 3, device="cuda")
    with pytest.raises(ValueError, match=r"W must have shape \(V, C, D\)"):
        pk.jl_forward(x, W[:16], None)
    with pytest.raises(TypeError, match="W has dtype"):
        pk.jl_forward(x, W.double(), None)
    with pytest.raises(ValueError, match=r"b must have shape \(V, D\)"):
        pk.jl_forward(x, W, torch.randn(17, 2, device="cuda"))
    with pytest.raises(ValueError, match="W is on cpu"):
        pk.jl_forward(x, W.cpu(), None)
    with pytest.raises(ValueError, match="grad_y must have shape"):
        pk.jl_backward(torch.randn(4, 17, 2, device="cuda"), x, W, True)


# ----------------------------------------------------------------------------------------------
# torch.library: opcheck and torch.compile on CUDA tensors


@pytest.mark.parametrize("attention,with_b,with_bias", [(True, True, True), (False, False, False),
                                                        (True, False, False), (False, True, True)])
def test_opcheck_agc_cuda(attention, with_b, with_bias):
    a = make_agc(2, 5, 4, 3, 3, 17, 3, attention=attention, with_b=with_b, with_bias=with_bias,
                 dtype=torch.float64, seed=_seed())
    for name in _differentiable(a):
        a[name].requires_grad_(True)
    torch.library.opcheck(torch.ops.posekernels.agc_forward.default, tuple(a[n] for n in AGC_NAMES))


@pytest.mark.parametrize("has_bias", [True, False])
def test_opcheck_jl_cuda(has_bias):
    x = torch.randn(6, 17, 5, dtype=torch.float64, device="cuda", requires_grad=True)
    W = torch.randn(17, 5, 3, dtype=torch.float64, device="cuda", requires_grad=True)
    b = torch.randn(17, 3, dtype=torch.float64, device="cuda", requires_grad=True) if has_bias else None
    torch.library.opcheck(torch.ops.posekernels.jl_forward.default, (x, W, b))


def test_opcheck_agc_backward_cuda():
    a = make_agc(2, 5, 4, 3, 3, 17, 3, dtype=torch.float64, seed=_seed())
    args = tuple(a[n] for n in AGC_NAMES)
    y, attn = torch.ops.posekernels.agc_forward(*args)
    torch.library.opcheck(torch.ops.posekernels.agc_backward.default, (torch.randn_like(y), *args, attn))


@pytest.mark.parametrize("compile_backend", ["aot_eager", "inductor"])
def test_torch_compile_cuda(compile_backend):
    model = TinyLifter(backend="cuda").cuda()
    x = torch.randn(3, 9, 17, 2, device="cuda")
    eager = model(x)
    compiled = torch.compile(model, fullgraph=True, backend=compile_backend)
    out = compiled(x)
    torch.testing.assert_close(out, eager, rtol=1e-5, atol=1e-5)
    out.sum().backward()
    assert model.lam.grad is not None and model.theta_w.grad is not None


def test_large_batch_bf16_smoke():
    """A benchmark-sized call (N = 256, T = 27) runs and stays finite, forward and backward."""
    args = make_agc(256, 96, 96, 24, 27, 17, 3, dtype=torch.bfloat16, seed=_seed())
    leaves = {k: (v.requires_grad_(k != "A") if v is not None else None) for k, v in args.items()}
    y = ops.adaptive_graph_conv(**leaves, backend="cuda")
    y.float().square().mean().backward()
    torch.cuda.synchronize()
    assert torch.isfinite(y).all()
    for name in _differentiable(args):
        assert torch.isfinite(leaves[name].grad).all(), name
    if os.environ.get("POSEKERNELS_CHECK_LARGE", "1") == "1":
        sub = {k: (v.detach()[:8] if k == "x" else (v.detach() if v is not None else None)) for k, v in leaves.items()}
        y_ref = reference.adaptive_graph_conv(**{k: (v.double() if v is not None else None) for k, v in sub.items()})
        assert_close_scaled(y[:8], y_ref, FWD_TOL[torch.bfloat16], "y (first 8 samples)")
