"""pytest-benchmark suite for the two ops.

Run with ``make bench`` (or ``python -m pytest benchmarks --benchmark-enable --benchmark-only
--benchmark-json out.json`` then ``python benchmarks/summarize.py out.json``). Every variant of one
shape runs in the same session, so the ratios that summarize.py prints are side by side.

Implementations compared (per device):
* ``released``: the eager formulation of the released GLA-GCN code (benchmarks/peer_released.py),
* ``reference``: posekernels' plain-PyTorch reference backend,
* ``cpu`` / ``triton`` / ``cuda``: the kernel backends available for the device,
* ``compiled``: torch.compile(mode="max-autotune-no-cudagraphs") of the reference (CUDA only).

Shapes (K=3, Ce=24, Cin=Cout=96, V=17): (N=64, T=27) and (N=8, T=243) on CPU, plus
(N=256, T=243) and (N=1024, T=27) on CUDA. The grouped per-joint linear op is measured on the
per-frame features of the same shapes, x (N*T, 17, 96) -> (N*T, 17, 3), with both weight groups.
"""
from __future__ import annotations

import math
import os

import pytest
import torch

from benchmarks.peer_released import released_graph_unit, released_icl_grouped
from posekernels import ops
from posekernels.ops import reference

DEVICE = torch.device(os.environ.get("POSEKERNELS_BENCH_DEVICE",
                                     "cuda" if torch.cuda.is_available() else "cpu"))
CPU_SHAPES = [(64, 27), (8, 243)]
CUDA_SHAPES = CPU_SHAPES + [(256, 243), (1024, 27)]
SHAPES = CUDA_SHAPES if DEVICE.type == "cuda" else CPU_SHAPES
DTYPES = [torch.float32, torch.bfloat16] if DEVICE.type == "cuda" else [torch.float32]
K, CE, C, V, D = 3, 24, 96, 17, 3


def _sync():
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def _impls():
    names = ["released", "reference"] + [b for b in ops.available_backends(DEVICE) if b != "reference"]
    if DEVICE.type == "cuda":
        names.append("compiled")
    return names


def agc_inputs(n, t, dtype, requires_grad):
    g = torch.Generator(device="cpu").manual_seed(torch.seed())

    def r(*shape, scale=1.0):
        x = (torch.randn(*shape, generator=g) * scale).to(DEVICE, dtype)
        return x.requires_grad_(requires_grad)

    A = torch.rand(K, V, V, generator=g).to(DEVICE, dtype)
    return dict(x=r(n, C, t, V), A=A, W=r(K, C, C, scale=1 / math.sqrt(C * K)), bias=r(K, C, scale=0.1),
                B=r(K, V, V, scale=0.1), theta_w=r(K, CE, C, scale=C ** -0.5), theta_b=r(K, CE, scale=0.1),
                phi_w=r(K, CE, C, scale=C ** -0.5), phi_b=r(K, CE, scale=0.1))


_COMPILED = {}


def _agc_fn(impl):
    if impl == "released":
        return released_graph_unit
    if impl == "compiled":
        if "agc" not in _COMPILED:
            _COMPILED["agc"] = torch.compile(reference.adaptive_graph_conv, mode="max-autotune-no-cudagraphs")
        return _COMPILED["agc"]
    return lambda **a: ops.adaptive_graph_conv(**a, backend=impl)


def _bench(benchmark, fn, inputs, backward):
    leaves = [v for v in inputs.values() if v is not None and v.requires_grad]
    if backward:
        with torch.no_grad():
            gy = torch.randn_like(fn(**inputs))

        def step():
            y = fn(**inputs)
            torch.autograd.grad(y, leaves, gy)
            _sync()
    else:
        def step():
            with torch.no_grad():
                fn(**inputs)
            _sync()
    for _ in range(2):  # warm-up (and compilation) outside the timed rounds
        step()
    benchmark.pedantic(step, rounds=10 if DEVICE.type == "cpu" else 50, iterations=1, warmup_rounds=1)


@pytest.mark.parametrize("impl", _impls())
@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("n,t", SHAPES, ids=lambda v: str(v))
def test_adaptive_graph_conv(benchmark, impl, mode, dtype, n, t):
    benchmark.group = f"adaptive_graph_conv {DEVICE.type} N={n} T={t} {str(dtype)[6:]} {mode}"
    benchmark.extra_info.update(op="adaptive_graph_conv", impl=impl, n=n, t=t, mode=mode,
                                dtype=str(dtype), device=DEVICE.type,
                                flop=_agc_flop(n, t, backward=mode != "fwd"))
    inputs = agc_inputs(n, t, dtype, requires_grad=mode != "fwd")
    _bench(benchmark, _agc_fn(impl), inputs, backward=mode != "fwd")


def _agc_flop(n, t, backward):
    """2 x multiply-accumulates of one forward (the backward does about twice the forward)."""
    per_position = K * CE * C * 2 + K * CE * V + K * C * V + K * C * C
    fwd = 2 * per_position * n * t * V
    return fwd * (3 if backward else 1)


def gjl_inputs(m, dtype, requires_grad):
    g = torch.Generator(device="cpu").manual_seed(torch.seed())

    def r(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).to(DEVICE, dtype).requires_grad_(requires_grad)

    return dict(x=r(m, V, C), W_joint=r(V, C, D, scale=C ** -0.5), b_joint=r(V, D),
                W_shared=r(C, D, scale=C ** -0.5), b_shared=r(D))


def _gjl_fn(impl):
    if impl == "released":
        return lambda **a: released_icl_grouped(**a, lam=0.5)
    if impl == "compiled":
        if "gjl" not in _COMPILED:
            _COMPILED["gjl"] = torch.compile(reference.grouped_joint_linear, mode="max-autotune-no-cudagraphs")
        return _COMPILED["gjl"]
    return lambda **a: ops.grouped_joint_linear(**a, lam=0.5, backend=impl)


@pytest.mark.parametrize("impl", _impls())
@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("n,t", SHAPES, ids=lambda v: str(v))
def test_grouped_joint_linear(benchmark, impl, mode, dtype, n, t):
    m = n * t
    benchmark.group = f"grouped_joint_linear {DEVICE.type} M={m} {str(dtype)[6:]} {mode}"
    elem = torch.tensor([], dtype=dtype).element_size()
    benchmark.extra_info.update(op="grouped_joint_linear", impl=impl, m=m, mode=mode, dtype=str(dtype),
                                device=DEVICE.type,
                                bytes=(m * V * (C + D)) * elem * (3 if mode != "fwd" else 1))
    _bench(benchmark, _gjl_fn(impl), gjl_inputs(m, dtype, requires_grad=mode != "fwd"),
           backward=mode != "fwd")


TCONV_SHAPES = [(1, 243, 1), (16, 81, 1), (64, 27, 1), (64, 27, 3), (16, 81, 3)]  # (N, T, stride)


@pytest.mark.parametrize("impl", ["reference", "cpu"] if DEVICE.type == "cpu" else ["reference"])
@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("n,t,stride", TCONV_SHAPES, ids=lambda v: str(v))
def test_temporal_conv(benchmark, impl, mode, n, t, stride):
    """The (9, 1) convolution + bias + residual + ReLU ending every GLA-GCN block: ``reference``
    is F.conv2d (oneDNN on the CPU) + add + ReLU, ``cpu`` the fused Winograd kernel (``fwd``,
    inference) or the differentiable one (``fwd+bwd``: Winograd forward and input gradient,
    oneDNN weight gradient; gradients of x, weight, bias and residual)."""
    benchmark.group = f"temporal_conv {DEVICE.type} N={n} T={t} stride={stride} float32 {mode}"
    t_out = (t - 1) // stride + 1
    benchmark.extra_info.update(op="temporal_conv", impl=impl, n=n, t=t, stride=stride,
                                mode=mode, dtype="torch.float32", device=DEVICE.type,
                                flop=2 * n * C * C * 9 * t_out * V * (3 if mode != "fwd" else 1))
    g = torch.Generator(device="cpu").manual_seed(torch.seed())
    grad = mode != "fwd"
    x = torch.relu(torch.randn(n, C, t, V, generator=g)).to(DEVICE).requires_grad_(grad)
    w = (torch.randn(C, C, 9, 1, generator=g) / math.sqrt(9 * C)).to(DEVICE).requires_grad_(grad)
    b = torch.randn(C, generator=g).to(DEVICE).requires_grad_(grad)
    r = torch.randn(n, C, t_out, V, generator=g).to(DEVICE).requires_grad_(grad)
    inputs = dict(x=x, weight=w, bias=b, residual=r)
    _bench(benchmark, lambda **a: ops.temporal_conv(**a, stride=stride, relu=True, backend=impl),
           inputs, backward=grad)


GEMM_SHAPES = [(96, 288, 408), (96, 288, 102), (144, 96, 408), (96, 288, 4131)]  # R x Q x S


def _cpu_gemm_available():
    from posekernels import _ext, build_info

    return DEVICE.type == "cpu" and _ext._C is not None and build_info().get("cpu_gemm") == "avx512"


@pytest.mark.skipif(not _cpu_gemm_available(), reason="the AVX-512 product is not in use here")
@pytest.mark.parametrize("impl", ["blas", "avx512"])
@pytest.mark.parametrize("r,q,s", GEMM_SHAPES, ids=lambda v: str(v))
def test_cpu_gemm(benchmark, impl, r, q, s):
    """The CPU kernels' float32 product, one thread (as inside their parallel loops): the AVX-512
    kernel against torch.mm (the wheel's BLAS). Shapes: the graph convolution's channel mix per
    24-frame block and per T = 243 sample, its embeddings, the Winograd kernel's products."""
    from posekernels import _ext

    benchmark.group = f"cpu_gemm R={r} Q={q} S={s} float32 1 thread"
    benchmark.extra_info.update(op="cpu_gemm", impl=impl, mode="fwd", dtype="torch.float32",
                                device="cpu", flop=2 * r * q * s)
    g = torch.Generator().manual_seed(torch.seed())
    A, B, C = torch.randn(r, q, generator=g), torch.randn(q, s, generator=g), torch.empty(r, s)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        if impl == "avx512":
            fn = lambda: _ext._C._avx512_gemm(A, B, C, False, False, 1.0, 0.0)  # noqa: E731
        else:
            fn = lambda: torch.mm(A, B, out=C)  # noqa: E731
        for _ in range(3):
            fn()
        benchmark.pedantic(fn, rounds=30, iterations=1, warmup_rounds=2)
    finally:
        torch.set_num_threads(threads)
