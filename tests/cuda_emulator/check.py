"""Compare the CUDA launchers, run on the CPU emulator, with posekernels' float64 reference.

    python tests/cuda_emulator/check.py sweep [SEED] [COUNT]   # random small shapes, all dtypes
    python tests/cuda_emulator/check.py edges [NAME-FILTER]    # tiling edge cases and model shapes
    python tests/cuda_emulator/check.py epilogues [SEED] [COUNT]  # dropout, bn_act fwd/bwd

The emulator binary is $EMU_EXE (default build/emulator/emu_fast; see README.md). Emulated device
attributes come from the environment: EMU_SMS (SM count, default 4: changes the reduction
splits), EMU_SMEM (opt-in shared memory per block, default 232448), EMU_CC (compute capability
major, default 9; 7 runs the 16-bit types on the SIMT path instead of tensor cores).
"""
from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "tests")]
from _op_harness import (TOL, differentiable, grad_out, make_agc, make_gjl, run_agc, run_gjl,  # noqa: E402
                         scaled_error, theta_b_floor, to64, typical_sizes)
from posekernels.ops import reference  # noqa: E402

DT = {torch.float32: 0, torch.float64: 1, torch.float16: 2, torch.bfloat16: 3}
EXE = os.environ.get("EMU_EXE", str(REPO / "build" / "emulator" / "emu_fast"))
GRAD_NAMES = {"x": "gx", "W": "gW", "bias": "gbias", "B": "gB", "theta_w": "gtheta_w", "theta_b": "gtheta_b",
              "phi_w": "gphi_w", "phi_b": "gphi_b"}


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
    r = subprocess.run([EXE, d], capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=3600)
    if r.returncode != 0:
        raise RuntimeError(f"emulator failed (exit {r.returncode}): {r.stderr[-3000:]}")
    return r.stdout


def _floors(run, gout, dtype):
    """As tests/_op_harness.py judges gradients: 16-bit ones against their typical size."""
    return typical_sizes(run, gout) if dtype.itemsize == 2 else {}


def agc_case(n, cin, cout, ce, t, v, k, attention, with_b, with_bias, emb_bias, dtype, seed, env=None,
             saved_attn=True):
    """Forward and backward of one agc case; returns the list of mismatches (outputs, workspace
    and shared memory start as NaN in the emulator: a value never written shows as non-finite)."""
    a = make_agc(n, cin, cout, ce, t, v, k, attention=attention, with_b=with_b, with_bias=with_bias,
                 theta_b=emb_bias, phi_b=emb_bias, dtype=dtype, seed=seed)
    gy = grad_out((n, cout, t, v), dtype, "cpu", seed + 1)
    ref = to64(a)
    y_ref, g_ref = run_agc(ref, "reference", gy)
    floors = _floors(lambda g: run_agc(ref, "reference", g), gy, dtype)
    tol, gtol = TOL["cuda", "cuda"][dtype]
    errs = []
    with tempfile.TemporaryDirectory() as d:
        for kk, vv in a.items():
            if vv is not None:
                _write(d, kk, vv)
        spec = dict(dtype=DT[dtype], N=n, Cin=cin, Cout=cout, T=t, V=v, K=k, Ce=ce if attention else 0)
        _run(d, "agc_fwd", spec, env)
        errs.append(scaled_error(_read(d, "y", (n, cout, t, v), dtype), y_ref, tol, "y"))
        if attention:
            attn = _read(d, "attn", (n, k, v, v), dtype)
            c_ref = reference.attention(*(ref[q] for q in ("x", "theta_w", "theta_b", "phi_w", "phi_b")))
            errs.append(scaled_error(attn, c_ref, tol, "attn"))
            if saved_attn:  # else the backward recomputes it
                _write(d, "attn", attn)
        _write(d, "grad_y", gy.to(dtype))
        _run(d, "agc_bwd", spec, env)
        for kk in differentiable(a):
            floor = theta_b_floor(g_ref) if kk == "theta_b" else floors.get(kk, 1e-12)
            errs.append(scaled_error(_read(d, GRAD_NAMES[kk], tuple(a[kk].shape), dtype), g_ref[kk], gtol,
                                     "grad " + kk, floor))
    return [e for e in errs if e]


def jl_case(m, v, c, dd, bias, dtype, seed, env=None):
    a = make_gjl((m,), v, c, dd, shared=False, biases=bias, dtype=dtype, seed=seed)
    gy = grad_out((m, v, dd), dtype, "cpu", seed + 1)
    y_ref, g_ref = run_gjl(to64(a), 1.0, "reference", gy)
    floors = _floors(lambda g: run_gjl(to64(a), 1.0, "reference", g), gy, dtype)
    tol, gtol = TOL["cuda", "cuda"][dtype]
    errs = []
    with tempfile.TemporaryDirectory() as d:
        for name, key in (("x", "x"), ("W", "W_joint"), ("b", "b_joint")):
            if a[key] is not None:
                _write(d, name, a[key])
        _write(d, "grad_y", gy.to(dtype))
        spec = dict(dtype=DT[dtype], M=m, V=v, C=c, D=dd, has_bias=int(bias))
        _run(d, "jl_fwd", spec, env)
        errs.append(scaled_error(_read(d, "y", (m, v, dd), dtype), y_ref, tol, "y"))
        _run(d, "jl_bwd", spec, env)
        for name, key, shape in (("gx", "x", (m, v, c)), ("gW", "W_joint", (v, c, dd)), ("gb", "b_joint", (v, dd))):
            if a[key] is not None:
                errs.append(scaled_error(_read(d, name, shape, dtype), g_ref[key], gtol, name, floors.get(key, 1e-12)))
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


def epilogue_case(n, c, l, dtype, p, relu, res, affine, seed, env=None):
    """dropout / bn_act forward and backward of csrc/cuda/bn_act.cu against the cpu backend's
    operators (the same Philox masks, so equal up to rounding; the cpu ones are checked against
    float64 in tests/test_epilogues.py). Returns an error string or ''."""
    g = torch.Generator().manual_seed(seed)
    z = (torch.randn(n, c, l, generator=g, dtype=torch.float64) * 3
         + torch.randn(1, c, 1, generator=g, dtype=torch.float64) * 5).to(dtype)
    w = (torch.rand(c, generator=g, dtype=torch.float64) + 0.5).to(dtype) if affine else None
    b = torch.randn(c, generator=g, dtype=torch.float64).to(dtype) if affine else None
    r = torch.randn(n, c, l, generator=g, dtype=torch.float64).to(dtype) if res else None
    gy = torch.randn(n, c, l, generator=g, dtype=torch.float64).to(dtype)
    key = int(torch.randint(-(2 ** 62), 2 ** 62, (1,), generator=g))
    seed_t = torch.tensor([key], dtype=torch.int64)
    eps = 1e-5
    tol = dict(rtol=2e-5, atol=2e-5) if dtype == torch.float32 else dict(rtol=1e-11, atol=1e-11)
    ops = torch.ops.posekernels
    common = {"dtype": DT[dtype], "p_ppm": round(p * 1e6), "seed": key, "relu": int(relu),
              "eps_ppb": round(eps * 1e9)}
    p = round(p * 1e6) / 1e6
    errors = []
    with tempfile.TemporaryDirectory() as d:
        _write(d, "x", z)
        _run(d, "dropout", {"dtype": DT[dtype], "n": z.numel(), "p_ppm": common["p_ppm"],
                            "seed": key}, env)
        if not torch.equal(_read(d, "y", z.shape, dtype), ops.dropout_apply(z, p, seed_t)):
            errors.append("dropout differs from the cpu backend")
    with tempfile.TemporaryDirectory() as d:
        for name, t in (("z", z), ("weight", w), ("bias", b), ("residual", r)):
            if t is not None:
                _write(d, name, t)
        _run(d, "bn_fwd", dict(common, N=n, C=c, L=l), env)
        want = ops.bn_act_forward(z, w, b, r, p, seed_t, eps, relu)
        for name, shape, ref in (("y", z.shape, want[0]), ("mean", (c,), want[1]),
                                 ("var", (c,), want[2])):
            got = _read(d, name, shape, dtype)
            scale = float(ref.abs().max()) + 1
            if not torch.allclose(got / scale, ref / scale, **tol):
                errors.append(f"bn forward {name}: max error {float((got - ref).abs().max()):.3g}")
    with tempfile.TemporaryDirectory() as d:
        y, mean, var = ops.bn_act_forward(z, w, b, r, p, seed_t, eps, relu)
        for name, t in (("z", z), ("weight", w), ("grad_y", gy), ("y", y), ("mean", mean),
                        ("var", var)):
            if t is not None:
                _write(d, name, t)
        _run(d, "bn_bwd", dict(common, N=n, C=c, L=l, has_residual=int(res)), env)
        want = ops.bn_act_backward(gy, z, y, w, mean, var, p, seed_t, eps, relu, res)
        outs = [("gz", z.shape, want[0]), ("gw", (c,), want[1]), ("gb", (c,), want[2])]
        if res:
            outs.append(("gres", z.shape, want[3]))
        for name, shape, ref in outs:
            got = _read(d, name, shape, dtype)
            scale = float(ref.abs().max()) + 1
            if not torch.allclose(got / scale, ref / scale, **tol):
                errors.append(f"bn backward {name}: max error {float((got - ref).abs().max()):.3g}")
    return "; ".join(errors)


def epilogues(seed0=1, count=6):
    """Random shapes (one split or many: EMU_SMS), both dtypes, with and without each part."""
    rng = random.Random(seed0)
    bad = 0
    cases = [(2, 3, 1, torch.float64, 0.0, False, False, False),      # two values per channel
             (3, 4, 700, torch.float32, 0.3, True, True, True)]       # several splits
    for _ in range(count):
        cases.append((rng.randint(1, 6), rng.randint(1, 9), rng.choice([1, 17, 27 * 17, 300]),
                      rng.choice([torch.float32, torch.float64]), rng.choice([0.0, 0.1, 0.5]),
                      rng.random() < 0.5, rng.random() < 0.5, rng.random() < 0.5))
    for i, (n, c, l, dt, p, relu, res, affine) in enumerate(cases):
        if n * l < 2:
            n = 2
        env = {"EMU_SMS": "132" if i == 1 else str(rng.choice([1, 4, 132]))}  # case 1: splits
        e = epilogue_case(n, c, l, dt, p, relu, res, affine, seed0 * 1000 + i, env)
        bad += bool(e)
        print("epilogue", n, c, l, dt, p, relu, res, affine, env, "OK" if not e else e, flush=True)
    return bad


if __name__ == "__main__":
    cmd = sys.argv[1] if len(sys.argv) > 1 else "sweep"
    if cmd == "sweep":
        sys.exit(1 if sweep(*(int(a) for a in sys.argv[2:4])) else 0)
    if cmd == "edges":
        sys.exit(1 if edges(sys.argv[2] if len(sys.argv) > 2 else "") else 0)
    if cmd == "epilogues":
        sys.exit(1 if epilogues(*(int(a) for a in sys.argv[2:4])) else 0)
    sys.exit(f"unknown command {cmd!r}: sweep [SEED COUNT] | edges [NAME-FILTER] | "
             "epilogues [SEED COUNT]")
