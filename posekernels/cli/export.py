"""``posekernels export --onnx FILE [--checkpoint PATH|default] [--mode causal|centered]``: ONNX export (reference path),
checked against PyTorch with onnxruntime when it is installed."""
from __future__ import annotations

import sys

from ._args import add_weights_arg


def register(sub) -> None:
    p = sub.add_parser("export", help="export a lifting model to ONNX")
    p.add_argument("--onnx", required=True, help="output .onnx file")
    p.add_argument("--checkpoint", default="default", help="checkpoint file or 'default'")
    p.add_argument("--mode", choices=["causal", "centered"], default=None,
                   help="with --checkpoint default: the shipped causal (default) or centred model")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--no-check", action="store_true",
                   help="skip the onnxruntime comparison with PyTorch")
    add_weights_arg(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from posekernels.checkpoints import DefaultModelUnavailable, load_model
    from posekernels.export import check_onnx, export_onnx

    try:
        model = load_model(args.checkpoint, mode=args.mode,
                           weights=getattr(args, "weights", "auto"))
    except (DefaultModelUnavailable, ValueError, OSError) as exc:
        print(f"posekernels export: {exc}", file=sys.stderr)
        return 2
    try:
        export_onnx(model, args.onnx, opset=args.opset)
    except (ImportError, ValueError) as exc:
        print(f"posekernels export: {exc}", file=sys.stderr)
        return 2
    T = getattr(model, "receptive_field", 1)
    print(f"wrote {args.onnx}: input keypoints2d (N, {T}, 17, 2) -> output pose3d (N, 17, 3)")
    if not args.no_check:
        try:
            err = check_onnx(model, args.onnx)
        except ImportError as exc:
            print(f"not checked: {exc}")
            return 0
        print(f"onnxruntime vs PyTorch: max |difference| {err:.2e}")
        if err > 1e-4:
            print("posekernels export: the ONNX output differs from PyTorch", file=sys.stderr)
            return 1
    return 0
