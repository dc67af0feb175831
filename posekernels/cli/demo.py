"""``posekernels demo``: a short demonstration of the two fused ops on a GLA-GCN-sized layer.

It runs one adaptive graph convolution (C=96, Ce=24, K=3, V=17) and one individually connected
head with every backend available here, checks each against the float64 reference and prints
the time per call.
"""
from __future__ import annotations

import math
import time

import torch


def register(sub) -> None:
    p = sub.add_parser("demo", help="demonstrate the fused ops on a GLA-GCN-sized layer")
    p.add_argument("--batch", type=int, default=16, help="batch size N (default 16)")
    p.add_argument("--frames", type=int, default=27, help="temporal window T (default 27)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.set_defaults(func=run)


def _time(fn, repeats=5):
    fn()
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def run(args) -> int:
    import posekernels
    from posekernels import ops
    from posekernels.ops import reference

    if args.batch < 1 or args.frames < 1:
        raise SystemExit("--batch and --frames must be at least 1")
    device = torch.device(args.device)
    k, c, ce, v = 3, 96, 24, 17
    g = torch.Generator().manual_seed(0)
    agc = dict(x=torch.randn(args.batch, c, args.frames, v, generator=g),
               A=torch.rand(k, v, v, generator=g), W=torch.randn(k, c, c, generator=g) / math.sqrt(3 * c),
               bias=torch.randn(k, c, generator=g) * 0.1, B=torch.randn(k, v, v, generator=g) * 0.1,
               theta_w=torch.randn(k, ce, c, generator=g) / math.sqrt(c), theta_b=torch.randn(k, ce, generator=g),
               phi_w=torch.randn(k, ce, c, generator=g) / math.sqrt(c), phi_b=torch.randn(k, ce, generator=g))
    icl = dict(x=torch.randn(args.batch, v, c, generator=g), W_joint=torch.randn(v, c, 3, generator=g) * 0.1,
               b_joint=torch.randn(v, 3, generator=g), W_shared=torch.randn(c, 3, generator=g) * 0.1,
               b_shared=torch.randn(3, generator=g))
    ref_agc = reference.adaptive_graph_conv(**{n: t.double() for n, t in agc.items()})
    ref_icl = reference.grouped_joint_linear(**{n: t.double() for n, t in icl.items()}, lam=0.5)
    agc = {n: t.to(device) for n, t in agc.items()}
    icl = {n: t.to(device) for n, t in icl.items()}

    info = posekernels.build_info()
    print(f"posekernels {info['version']} | torch {info['torch_version']} | "
          f"compiled backends: {info['compiled_backends'] or 'none'} | device: {device}")
    print(f"adaptive_graph_conv x=(N={args.batch}, C={c}, T={args.frames}, V={v}), K={k}, Ce={ce}; "
          f"grouped_joint_linear x=(N={args.batch}, V={v}, C={c}) -> D=3")
    print(f"{'backend':<10} {'agc ms':>9} {'agc max err':>12} {'icl ms':>9} {'icl max err':>12}")
    with torch.no_grad():
        for backend in ops.available_backends(device):
            if backend == "triton" and device.type == "cpu":
                continue  # the interpreter is for tests, not for a demonstration of speed
            y = ops.adaptive_graph_conv(**agc, backend=backend)
            p = ops.grouped_joint_linear(**icl, lam=0.5, backend=backend)
            t_agc = _time(lambda: ops.adaptive_graph_conv(**agc, backend=backend))
            t_icl = _time(lambda: ops.grouped_joint_linear(**icl, lam=0.5, backend=backend))
            e_agc = (y.cpu().double() - ref_agc).abs().max().item()
            e_icl = (p.cpu().double() - ref_icl).abs().max().item()
            print(f"{backend:<10} {t_agc * 1e3:9.2f} {e_agc:12.2e} {t_icl * 1e3:9.3f} {e_icl:12.2e}")
    return 0
