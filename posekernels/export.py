"""ONNX export of a lifting model through the reference path.

:func:`export_onnx` folds the model into its inference plan (:func:`posekernels.stream.build_plan`,
BatchNorms folded, eval only) with ``backend="reference"``, so every graph convolution is traced
as plain PyTorch (einsum, softmax, conv) instead of the compiled custom ops, which ONNX cannot
represent. The graph has one input ``keypoints2d`` (N, T, V, 2), normalised screen coordinates,
and one output ``pose3d`` (N, V, 3), root-relative metres; the batch axis N is dynamic. It uses
torch's TorchScript-based exporter (no extra dependency beyond ``onnx``); :func:`check_onnx`
runs the file with onnxruntime and compares it with PyTorch. Needs ``pip install
'posekernels[onnx]'``.
"""
from __future__ import annotations

import os
import warnings

import numpy as np
import torch
from torch import nn

__all__ = ["export_onnx", "check_onnx"]


def export_onnx(model: nn.Module, path: str | os.PathLike, *, batch: int = 1,
                opset: int = 17) -> str:
    """Write ``model`` (GLAGCN or any posekernels lifting model) to ``path`` as ONNX."""
    from .stream._plan import build_plan

    try:
        import onnx  # noqa: F401
    except ImportError:
        raise ImportError("ONNX export needs the onnx package: pip install 'posekernels[onnx]'") \
            from None
    model = model.eval()
    plan = build_plan(model, backend="reference").cpu().eval()
    T = int(getattr(model, "receptive_field", 1))
    V = int(getattr(model, "num_joints", None) or model.skeleton.num_joints)
    example = torch.zeros(batch, T, V, 2)
    path = os.fspath(path)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(plan, (example,), path, dynamo=False, opset_version=opset,
                          input_names=["keypoints2d"], output_names=["pose3d"],
                          dynamic_axes={"keypoints2d": {0: "batch"}, "pose3d": {0: "batch"}})
    return path


def check_onnx(model: nn.Module, path: str | os.PathLike, *, batch: int = 4,
               seed: int = 0) -> float:
    """Largest |onnxruntime - PyTorch| on a random batch (PyTorch: the model's own forward)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ImportError("checking needs onnxruntime: pip install 'posekernels[onnx]'") from None
    model = model.eval()
    T = int(getattr(model, "receptive_field", 1))
    V = int(getattr(model, "num_joints", None) or model.skeleton.num_joints)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, T, V, 2, generator=g) * 0.3
    session = ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"keypoints2d": x.numpy()})[0]
    param = next(model.parameters())
    with torch.no_grad():
        xin = x.to(param.device, param.dtype)
        want = model(xin)[:, 0] if hasattr(model, "receptive_field") else model(xin[:, 0])
    return float(np.abs(got - want.cpu().numpy()).max())
