"""The op tests' harness (test_ops.py, the per-backend files, tests/cuda_emulator/check.py):
arguments drawn in float64 from a fresh seed (or a given one), the float64 reference run, one
tolerance table, and the grid of backend x device x dtype that the op tests run over."""
from __future__ import annotations

import math
import secrets
from typing import NamedTuple

import pytest
import torch

from posekernels import ops

AGC_NAMES = ("x", "A", "W", "bias", "B", "theta_w", "theta_b", "phi_w", "phi_b")
f64, f32, f16, bf16 = torch.float64, torch.float32, torch.float16, torch.bfloat16
DTYPES = (f64, f32, f16, bf16)

# max |error| <= tol * max |float64 reference on the same rounded inputs|: (forward, gradients).
# 16-bit types compute in float32 but round the outputs (cuda: also the tensor-core operand) to 16
# bits; cuda and triton round the saved attention term too, which shows in the gradients where the
# softmax is peaked (up to ~7 % in bfloat16). The Triton interpreter computes bfloat16 in float32.
TOL = {
    ("cpu", "cpu"): {f64: (1e-10, 5e-10), f32: (2e-5, 1e-4), f16: (5e-3, 5e-3), bf16: (4e-2, 4e-2)},
    ("cuda", "cuda"): {f64: (1e-10, 5e-10), f32: (2e-5, 1e-4), f16: (5e-3, 2.5e-2), bf16: (3e-2, 1.5e-1)},
    ("triton", "cpu"): {f64: (1e-10, 1e-10), f32: (2e-5, 2e-5), f16: (1e-2, 2.5e-2), bf16: (2e-2, 1.5e-1)},
    ("triton", "cuda"): {f64: (1e-10, 1e-10), f32: (1e-4, 1e-4), f16: (1e-2, 2.5e-2), bf16: (5e-2, 1.5e-1)},
}
KERNELS = tuple(TOL)  # (backend, device) pairs with kernels of their own
REFERENCE = (("reference", "cpu"), ("reference", "cuda"))
COMPILED = (("cpu", "cpu"), ("cuda", "cuda"))  # the C++ ops torch.ops.posekernels.*
TRITON = (("triton", "cpu"), ("triton", "cuda"))


class Combo(NamedTuple):
    backend: str
    device: str
    dtype: torch.dtype

    def __str__(self):
        return f"{self.backend}-{self.device}-{str(self.dtype).removeprefix('torch.')}"

    @property
    def tol(self):
        return TOL[self.backend, self.device][self.dtype]

    @property
    def interpreted(self):  # the Triton interpreter (slow): tiny cases only
        return self.backend == "triton" and self.device == "cpu"


def grid(dtypes=DTYPES, pairs=KERNELS, interpreted=True):
    """pytest parameters over (backend, device) pairs x dtypes. Those on CUDA are marked gpu
    (conftest.py skips them without a device); a backend missing here is skipped."""
    params = []
    for backend, device in pairs:
        if backend == "triton" and device == "cpu" and not interpreted:
            continue
        marks = [pytest.mark.gpu] if device == "cuda" else []
        if (device == "cpu" or torch.cuda.is_available()) and backend not in ops.available_backends(device):
            marks.append(pytest.mark.skip(reason=f"backend {backend!r} unavailable for {device} tensors"))
        params += [pytest.param(c, id=str(c), marks=marks) for c in
                   (Combo(backend, device, dt) for dt in dtypes)]
    return params


def fresh_seed() -> int:
    return secrets.randbits(31)


def _drawer(seed, dtype, device):
    gen = torch.Generator().manual_seed(seed)

    def draw(*shape, scale=1.0, uniform=False):
        t = (torch.rand if uniform else torch.randn)(*shape, dtype=f64, generator=gen)
        return (t * scale).to(device, dtype)
    return draw


def make_agc(n, cin, cout, ce, t, v, k, *, attention=True, with_b=True, with_bias=True,
             theta_b=True, phi_b=True, dtype=f64, device="cpu", seed=None):
    """Arguments of adaptive_graph_conv (absent terms None), drawn in float64, then cast."""
    r = _drawer(fresh_seed() if seed is None else seed, dtype, device)
    return {
        "x": r(n, cin, t, v), "A": r(k, v, v, uniform=True),
        "W": r(k, cout, cin, scale=1 / math.sqrt(cin * k)),
        "bias": r(k, cout) if with_bias else None,
        "B": r(k, v, v, scale=0.3) if with_b else None,
        "theta_w": r(k, ce, cin, scale=cin ** -0.5) if attention else None,
        "theta_b": r(k, ce) if attention and theta_b else None,
        "phi_w": r(k, ce, cin, scale=cin ** -0.5) if attention else None,
        "phi_b": r(k, ce) if attention and phi_b else None,
    }


def make_gjl(lead, v, c, d, *, joint=True, shared=True, biases=True, dtype=f64, device="cpu",
             seed=None):
    """Arguments of grouped_joint_linear but lam (absent terms None)."""
    r = _drawer(fresh_seed() if seed is None else seed, dtype, device)
    return {"x": r(*lead, v, c),
            "W_joint": r(v, c, d, scale=c ** -0.5) if joint else None,
            "b_joint": r(v, d) if joint and biases else None,
            "W_shared": r(c, d, scale=c ** -0.5) if shared else None,
            "b_shared": r(d) if shared and biases else None}


def grad_out(shape, dtype, device, seed):
    """A gradient of the output, rounded to dtype, held in float64."""
    return _drawer(seed, dtype, device)(*shape).double()


def to64(args):
    return {k: (v.double() if isinstance(v, torch.Tensor) else v) for k, v in args.items()}


def agc_args(args):
    """The positional arguments of the raw agc ops."""
    return tuple(args[k] for k in AGC_NAMES)


def differentiable(args):
    return [k for k in AGC_NAMES if k != "A" and args[k] is not None]


def raw(backend, op):
    """torch.ops.posekernels.<op> of a backend (the Triton ones carry a _triton suffix)."""
    return getattr(torch.ops.posekernels, op + ("_triton" if backend == "triton" else ""))


def run_agc(args, backend, gout=None):
    """Output and (with gout) the gradient of every given input but A, through the op."""
    names = differentiable(args)
    leaves = {k: (v.detach().clone().requires_grad_(k in names) if v is not None else None)
              for k, v in args.items()}
    y = ops.adaptive_graph_conv(**leaves, backend=backend)
    if gout is None:
        return y.detach(), {}
    return y.detach(), dict(zip(names, torch.autograd.grad(y, [leaves[k] for k in names],
                                                           gout.to(y.dtype))))


def run_gjl(args, lam, backend, gout):
    """Output and the gradient of every given input (lam too when it is a tensor; None where
    the output does not depend on it)."""
    leaves = {k: (v.detach().clone().requires_grad_() if v is not None else None)
              for k, v in args.items()}
    is_t = isinstance(lam, torch.Tensor)
    lam = lam.detach().clone().requires_grad_() if is_t else lam
    y = ops.grouped_joint_linear(**leaves, lam=lam, backend=backend)
    names = [k for k, v in leaves.items() if v is not None]
    grads = torch.autograd.grad(y, [leaves[k] for k in names] + ([lam] if is_t else []),
                                gout.to(y.dtype), allow_unused=True)
    return y.detach(), dict(zip(names + ["lam"], grads))


def scaled_error(actual, expected, rel, what, floor=1e-12):
    """None when max |actual - expected| <= rel * max(max |expected|, floor), else why not."""
    if tuple(actual.shape) != tuple(expected.shape):
        return f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    actual, expected = actual.detach().double().to(expected.device), expected.detach()
    if not torch.isfinite(actual).all():
        return f"{what}: {int((~torch.isfinite(actual)).sum())} non-finite values"
    scale = max(float(expected.abs().max()), floor)
    err = float((actual - expected).abs().max())
    return None if err <= rel * scale else f"{what}: max error {err:.3e} > {rel:g} x {scale:.3e}"


def assert_close_scaled(actual, expected, rel, what, floor=1e-12):
    message = scaled_error(actual, expected, rel, what, floor)
    assert message is None, message


def theta_b_floor(g_ref):
    """d/d theta_b is 0 in theory (a bias constant over v leaves the softmax over v unchanged):
    its rounding noise is measured against the embedding weights' gradients."""
    return max(float(g_ref[k].abs().max()) for k in ("theta_w", "phi_w"))


def typical_sizes(reference_run, gout, samples=3):
    """The typical size of each float64 reference gradient at these inputs: its largest RMS over
    random output gradients like gout. A gradient that sums many terms can cancel to near zero by
    chance, yet a 16-bit computation's rounding error still scales with this size."""
    draws = [reference_run(torch.randn_like(gout))[1] for _ in range(samples)]
    return {k: float(torch.stack([d[k] for d in draws]).square().mean(0).sqrt().max())
            for k, g in draws[0].items() if g is not None}


def _floors(combo, reference_run, gout):
    """Gradients in 16 bits are judged against their typical size where they cancel by chance."""
    return typical_sizes(reference_run, gout) if combo.dtype.itemsize == 2 else {}


def check_agc(combo: Combo, shape: dict, seed=None, **terms):
    """Forward and every gradient of one backend against float64 on the same rounded inputs."""
    seed = fresh_seed() if seed is None else seed
    args = make_agc(**shape, **terms, dtype=combo.dtype, device=combo.device, seed=seed)
    n, _, t, v = args["x"].shape
    gout = grad_out((n, args["W"].shape[1], t, v), combo.dtype, combo.device, seed + 1)
    ref = to64(args)
    y_ref, g_ref = run_agc(ref, "reference", gout)
    floors = _floors(combo, lambda gy: run_agc(ref, "reference", gy), gout)
    y, g = run_agc(args, combo.backend, gout)
    where, (tol, gtol) = f"{combo}, seed {seed}, {shape} {terms}", combo.tol
    assert y.dtype == combo.dtype and y.device.type == combo.device, where
    assert_close_scaled(y, y_ref, tol, f"y ({where})")
    assert set(g) == set(g_ref), where
    for name in g_ref:
        assert g[name].dtype == combo.dtype, f"grad {name} ({where})"
        floor = theta_b_floor(g_ref) if name == "theta_b" else floors.get(name, 1e-12)
        assert_close_scaled(g[name], g_ref[name], gtol, f"grad {name} ({where})", floor)


def check_gjl(combo: Combo, lead, v, c, d, groups="both", biases=True, lam=0.3, seed=None):
    """grouped_joint_linear's forward and gradients (lam's too when lam == "tensor")."""
    seed = fresh_seed() if seed is None else seed
    args = make_gjl(lead, v, c, d, joint=groups != "shared", shared=groups != "joint",
                    biases=biases, dtype=combo.dtype, device=combo.device, seed=seed)
    if isinstance(lam, str):  # "tensor"
        lam = torch.tensor(0.3, dtype=f64, device=combo.device)
    gout = grad_out((*lead, v, d), combo.dtype, combo.device, seed + 1)
    y_ref, g_ref = run_gjl(to64(args), lam, "reference", gout)
    floors = _floors(combo, lambda gy: run_gjl(to64(args), lam, "reference", gy), gout)
    y, g = run_gjl(args, lam, combo.backend, gout)
    where, (tol, gtol) = f"{combo}, seed {seed}, {lead} v={v} c={c} d={d} {groups} lam={lam}", combo.tol
    assert y.dtype == combo.dtype and y.device.type == combo.device, where
    assert_close_scaled(y, y_ref, tol, f"y ({where})")
    for name, ref in g_ref.items():
        if ref is None:  # lam has no influence when only one group is given
            assert g[name] is None or g[name].abs().max() == 0, f"grad {name} ({where})"
            continue
        assert name == "lam" or g[name].dtype == combo.dtype, f"grad {name} ({where})"
        assert_close_scaled(g[name], ref, gtol, f"grad {name} ({where})", floors.get(name, 1e-12))
