"""Compare the CUDA launchers, run on the CPU emulator, with posekernels' float64 reference.

    python tests/cuda_emulator/check.py sweep [SEED] [COUNT]   # random small shapes, all dtypes
    python tests/cuda_emulator/check.py edges [NAME-FILTER]    # tiling edge cases and model shapes

The emulator binary is $EMU_EXE (default build/emulator/emu_fast; see README.md). Emulated device
attributes come from the environment: EMU_SMS (SM count, default 4: changes the reduction
splits), EMU_SMEM (opt-in shared memory per block, default 232448), EMU_CC (compute capability
major, default 9; 7 runs the 16-bit types on the SIMT path instead of tensor cores).
"""
from __future__ import annotations

import math
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from posekernels.ops import reference  # noqa: E402

DT = {torch.float32: 0, torch.float64: 1, torch.float16: 2, torch.bfloat16: 3}
# the tolerances of tests/test_cuda_backend.py (gradients: 5x)
TOL = {torch.float64: 1e-10, torch.float32: 2e-5, torch.float16: 5e-3, torch.bfloat16: 3e-2}
EXE = os.environ.get("EMU_EXE", str(REPO / "build" / "emulator" / "emu_fast"))


def _write(d, name, t):
    t = t.detach().contiguous()
    arr = t.view(torch.int16).numpy() if t.dtype in (torch.float16, torch.bfloat16) else t.numpy()
    arr.tofile(f"{d}/{name}.bin")


def _read(d, name, shape, dtype):
    np_dtype = {torch.float32: np.float32, torch.float64: np.float64}.get(dtype, np.int16)
    t = torch.from_numpy(np.fromfile(f"{d}/out_{name}.bin", dtype=np_dtype))
    if dtype in (torch.float16, torch.bfloat16):
        t = t.view(dtype)
    return t.reshape(shape)


def _run(d, op, spec, env=None):
    with open(f"{d}/spec.txt", "w") as f:
        f.write(op + "\n" + "".join(f"{k} {v}\n" for k, v in spec.items()))
    e = dict(os.environ)
    e.update(env or {})
    r = subprocess.run([EXE, d], capture_output=True, text=True, env=e, timeout=3600)
    if r.returncode != 0:
        raise RuntimeError(f"emulator failed (exit {r.returncode}): {r.stderr[-3000:]}")
    return r.stdout


def _close(name, a, ref, rel, floor=1e-12):
    a = a.double()
    if not torch.isfinite(a).all():  # outputs, workspace and shared memory start as NaN
        return f"{name}: {(~torch.isfinite(a)).sum().item()} non-finite values"
    scale = max(float(ref.abs().max()), floor)
    err = float((a - ref).abs().max())
    return f"{name}: max err {err:.3e} > {rel:g} x {scale:.3e}" if err > rel * scale else None


def agc_case(n, cin, cout, ce, t, v, k, attention, with_b, with_bias, emb_bias, dtype, seed, env=None,
             saved_attn=True):
    """Forward and backward of one agc case; returns the list of mismatches."""
    g = torch.Generator().manual_seed(seed)

    def r(*s, sc=1.0):
        return (torch.randn(*s, dtype=torch.float64, generator=g) * sc).to(dtype)

    a = {"x": r(n, cin, t, v), "A": torch.rand(k, v, v, dtype=torch.float64, generator=g).to(dtype),
         "W": r(k, cout, cin, sc=1 / math.sqrt(cin * k)), "bias": r(k, cout) if with_bias else None,
         "B": r(k, v, v, sc=0.3) if with_b else None, "theta_w": None, "theta_b": None, "phi_w": None, "phi_b": None}
    if attention:
        a["theta_w"] = r(k, ce, cin, sc=1 / math.sqrt(cin))
        a["phi_w"] = r(k, ce, cin, sc=1 / math.sqrt(cin))
        if emb_bias:
            a["theta_b"], a["phi_b"] = r(k, ce), r(k, ce)
    gy = torch.randn(n, cout, t, v, dtype=torch.float64, generator=g).to(dtype)
    ref = {kk: (vv.double().requires_grad_(kk != "A") if vv is not None else None) for kk, vv in a.items()}
    y_ref = reference.adaptive_graph_conv(**ref)
    names = [kk for kk in ref if kk != "A" and ref[kk] is not None]
    g_ref = dict(zip(names, torch.autograd.grad(y_ref, [ref[kk] for kk in names], gy.double())))
    errs = []
    with tempfile.TemporaryDirectory() as d:
        for kk, vv in a.items():
            if vv is not None:
                _write(d, kk, vv)
        spec = dict(dtype=DT[dtype], N=n, Cin=cin, Cout=cout, T=t, V=v, K=k, Ce=ce if attention else 0)
        _run(d, "agc_fwd", spec, env)
        errs.append(_close("y", _read(d, "y", (n, cout, t, v), dtype), y_ref.detach(), TOL[dtype]))
        if attention:
            attn = _read(d, "attn", (n, k, v, v), dtype)
            c_ref = reference.attention(*(ref[q].detach() if ref[q] is not None else None
                                          for q in ("x", "theta_w", "theta_b", "phi_w", "phi_b")))
            errs.append(_close("attn", attn, c_ref, TOL[dtype]))
            if saved_attn:  # else the backward recomputes it
                _write(d, "attn", attn)
        _write(d, "grad_y", gy)
        _run(d, "agc_bwd", spec, env)
        out = {"x": "gx", "W": "gW", "bias": "gbias", "B": "gB", "theta_w": "gtheta_w", "theta_b": "gtheta_b",
               "phi_w": "gphi_w", "phi_b": "gphi_b"}
        for kk in names:
            # gtheta_b is zero in theory (a per-row bias is constant along the softmax axis)
            floor = max(float(g_ref[q].abs().max()) for q in ("theta_w", "phi_w")) if kk == "theta_b" else 1e-12
            errs.append(_close("grad " + kk, _read(d, out[kk], tuple(a[kk].shape), dtype), g_ref[kk],
                               5 * TOL[dtype], floor))
    return [e for e in errs if e]


def jl_case(m, v, c, dd, bias, dtype, seed, env=None):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, v, c, dtype=torch.float64, generator=g).to(dtype)
    W = (torch.randn(v, c, dd, dtype=torch.float64, generator=g) / math.sqrt(c)).to(dtype)
    b = torch.randn(v, dd, dtype=torch.float64, generator=g).to(dtype) if bias else None
    gy = torch.randn(m, v, dd, dtype=torch.float64, generator=g).to(dtype)
    xr, Wr = x.double().requires_grad_(), W.double().requires_grad_()
    br = b.double().requires_grad_() if bias else None
    y_ref = reference.joint_linear(xr, Wr, br)
    gr = torch.autograd.grad(y_ref, [xr, Wr] + ([br] if bias else []), gy.double())
    errs = []
    with tempfile.TemporaryDirectory() as d:
        _write(d, "x", x)
        _write(d, "W", W)
        _write(d, "grad_y", gy)
        if bias:
            _write(d, "b", b)
        spec = dict(dtype=DT[dtype], M=m, V=v, C=c, D=dd, has_bias=int(bias))
        _run(d, "jl_fwd", spec, env)
        errs.append(_close("y", _read(d, "y", (m, v, dd), dtype), y_ref.detach(), TOL[dtype]))
        _run(d, "jl_bwd", spec, env)
        errs.append(_close("gx", _read(d, "gx", (m, v, c), dtype), gr[0], 5 * TOL[dtype]))
        errs.append(_close("gW", _read(d, "gW", (v, c, dd), dtype), gr[1], 5 * TOL[dtype]))
        if bias:
            errs.append(_close("gb", _read(d, "gb", (v, dd), dtype), gr[2], 5 * TOL[dtype]))
    return [e for e in errs if e]


def sweep(seed0=1, count=40):
    """Random small shapes like tests/test_ops.py's, every dtype, random device attributes."""
    rng = random.Random(seed0)
    dtypes = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
    bad = 0
    for i in range(count):
        dt = rng.choice(dtypes)
        shp = dict(n=rng.randint(1, 3), cin=rng.randint(1, 12), cout=rng.randint(1, 12), ce=rng.randint(1, 6),
                   t=rng.randint(1, 9), v=rng.choice([1, 5, 15, 16, 17]), k=rng.randint(1, 3),
                   attention=rng.random() < 0.6, with_b=rng.random() < 0.5, with_bias=rng.random() < 0.5,
                   emb_bias=rng.random() < 0.5)
        env = {"EMU_SMS": str(rng.choice([1, 4, 132])), "EMU_CC": rng.choice(["9", "9", "7"])}
        saved = rng.random() < 0.7
        e = agc_case(**shp, dtype=dt, seed=seed0 * 1000 + i, env=env, saved_attn=saved)
        j = jl_case(rng.randint(1, 40), rng.choice([1, 15, 16, 17]), rng.randint(1, 300 if rng.random() < 0.2 else 20),
                    rng.choice([1, 3, 5, 16]), rng.random() < 0.5, dt, seed0 * 1000 + i, env)
        if e or j:
            bad += 1
            print("FAIL", i, dt, shp, env, "saved attn" if saved else "recomputed attn", e, j, flush=True)
    print(f"sweep seed {seed0}: {count} cases, {bad} failing", flush=True)
    return bad


f32, f64, f16, bf16 = torch.float32, torch.float64, torch.float16, torch.bfloat16
ALL = dict(attention=True, with_b=True, with_bias=True, emb_bias=True)
EDGES = {
    "model_bf16": (dict(n=2, cin=96, cout=96, ce=24, t=27, v=17, k=3, **ALL), bf16, {}),
    "model_f32": (dict(n=1, cin=96, cout=96, ce=24, t=27, v=17, k=3, **ALL), f32, {}),
    "model_f16_simt": (dict(n=1, cin=96, cout=96, ce=24, t=9, v=17, k=3, **ALL), f16, {"EMU_CC": "7"}),
    "big_channels_f32": (dict(n=1, cin=130, cout=100, ce=50, t=3, v=5, k=2, **ALL), f32, {}),
    "big_channels_bf16": (dict(n=1, cin=130, cout=100, ce=50, t=3, v=5, k=2, attention=True, with_b=False,
                               with_bias=True, emb_bias=False), bf16, {}),
    "graph_not_resident_f32": (dict(n=1, cin=5, cout=7, ce=3, t=2, v=61, k=3, attention=True, with_b=True,
                                    with_bias=False, emb_bias=True), f32, {}),
    "max_joints_f64": (dict(n=1, cin=3, cout=4, ce=2, t=2, v=128, k=1, **ALL), f64, {}),
    "max_joints_bf16": (dict(n=1, cin=3, cout=4, ce=2, t=2, v=128, k=1, **ALL), bf16, {}),
    "long_window_recompute": (dict(n=2, cin=6, cout=5, ce=3, t=70, v=17, k=2, **ALL), f32, {"EMU_SMS": "64"}),
    "long_window_243_bf16": (dict(n=2, cin=6, cout=5, ce=3, t=243, v=17, k=2, **ALL), bf16, {"EMU_SMS": "132"}),
    "small_smem_f64": (dict(n=2, cin=20, cout=20, ce=6, t=30, v=16, k=2, **ALL), f64, {"EMU_SMEM": "40000"}),
    "small_smem_bf16": (dict(n=2, cin=20, cout=20, ce=6, t=30, v=16, k=2, **ALL), bf16, {"EMU_SMEM": "40000"}),
    "single_joint_long_window": (dict(n=1, cin=4, cout=3, ce=2, t=300, v=1, k=2, **ALL), f32, {}),
    "tiny": (dict(n=1, cin=1, cout=1, ce=1, t=1, v=1, k=1, **ALL), f32, {}),
}
JL_EDGES = [(300, 17, 96, 3, True, bf16), (50, 17, 300, 20, True, f32), (1, 1, 1, 1, False, f64),
            (70, 16, 33, 5, True, f16)]


def edges(name_filter=""):
    bad = 0
    for name, (shp, dt, env) in EDGES.items():
        if name_filter not in name:
            continue
        e = agc_case(**shp, dtype=dt, seed=7, env=env, saved_attn="recompute" not in name)
        bad += bool(e)
        print(name, "OK" if not e else e, flush=True)
    if "jl".startswith(name_filter) or not name_filter:
        for m, v, c, d, b, dt in JL_EDGES:
            e = jl_case(m, v, c, d, b, dt, 3)
            bad += bool(e)
            print("jl", m, v, c, d, dt, "OK" if not e else e, flush=True)
    return bad


if __name__ == "__main__":
    cmd = sys.argv[1] if len(sys.argv) > 1 else "sweep"
    if cmd == "sweep":
        sys.exit(1 if sweep(*(int(a) for a in sys.argv[2:4])) else 0)
    if cmd == "edges":
        sys.exit(1 if edges(sys.argv[2] if len(sys.argv) > 2 else "") else 0)
    sys.exit(f"unknown command {cmd!r}: sweep [SEED COUNT] | edges [NAME-FILTER]")
