"""The ``cuda`` backend's internal paths (csrc/cuda, python_api/cuda) on CUDA tensors: tiling edge
cases, the SIMT path of the 16-bit types, streams and devices, its own limits. Accuracy, gradients,
the raw ops, bad input, opcheck and torch.compile run over every backend in test_ops.py.

Every test is marked ``gpu``: conftest.py skips them without a CUDA device, and the module skips
itself when the extension was built without its CUDA kernels. Inputs are drawn fresh on every run
(the seed is in the assertion message)."""
from __future__ import annotations

import os

import pytest
import torch

import posekernels
from _op_harness import (Combo, agc_args, assert_close_scaled, bf16, check_agc, differentiable,
                         f16, f32, f64, make_agc, to64)
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


@pytest.mark.parametrize("dtype", [f32, bf16, f64], ids=str)
@pytest.mark.parametrize("case", sorted(EDGE_SHAPES))
def test_agc_edge_shapes(dtype, case):
    check_agc(Combo("cuda", "cuda", dtype), EDGE_SHAPES[case])


@pytest.mark.parametrize("dtype", [bf16, f16], ids=str)
def test_agc_simt_path_for_16bit(dtype, monkeypatch):
    """POSEKERNELS_CUDA_NO_MMA=1 runs the 16-bit types on the SIMT path instead of tensor cores."""
    monkeypatch.setenv("POSEKERNELS_CUDA_NO_MMA", "1")
    check_agc(Combo("cuda", "cuda", dtype), dict(n=2, cin=96, cout=96, ce=24, t=27, v=17, k=3))
    check_agc(Combo("cuda", "cuda", dtype), dict(n=2, cin=6, cout=5, ce=3, t=4, v=16, k=3))


def test_agc_side_stream_and_current_device():
    """Work is queued on the current stream (and the input's device), without host syncs."""
    args = make_agc(2, 8, 8, 4, 9, 17, 3, dtype=f32, device="cuda")
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


def test_op_limits_and_devices():
    """At most 128 joints (a ValueError); every tensor on the CUDA device of x."""
    pk = torch.ops.posekernels
    with pytest.raises(ValueError, match="at most 128"):
        pk.agc_forward(*agc_args(make_agc(1, 2, 2, 1, 2, 129, 1, dtype=f32, device="cuda")))
    a = make_agc(2, 4, 6, 3, 5, 17, 3, dtype=f32, device="cuda")
    with pytest.raises(ValueError, match="W is on cpu"):
        pk.agc_forward(*agc_args({**a, "W": a["W"].cpu()}))
    x, W = torch.randn(4, 17, 8, device="cuda"), torch.randn(17, 8, 3, device="cuda")
    with pytest.raises(ValueError, match="W is on cpu"):
        pk.jl_forward(x, W.cpu(), None)


def test_large_batch_bf16_smoke():
    """A benchmark-sized call (N = 256, T = 27) runs and stays finite, forward and backward."""
    args = make_agc(256, 96, 96, 24, 27, 17, 3, dtype=bf16, device="cuda")
    leaves = {k: (v.requires_grad_(k != "A") if v is not None else None) for k, v in args.items()}
    y = ops.adaptive_graph_conv(**leaves, backend="cuda")
    y.float().square().mean().backward()
    torch.cuda.synchronize()
    assert torch.isfinite(y).all()
    for name in differentiable(args):
        assert torch.isfinite(leaves[name].grad).all(), name
    if os.environ.get("POSEKERNELS_CHECK_LARGE", "1") == "1":
        sub = {k: (v.detach()[:8] if k == "x" else (v.detach() if v is not None else None)) for k, v in leaves.items()}
        y_ref = reference.adaptive_graph_conv(**to64(sub))
        assert_close_scaled(y[:8], y_ref, Combo("cuda", "cuda", bf16).tol[0], "y (first 8 samples)")
