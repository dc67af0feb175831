"""ONNX export of a lifting model through the reference path.

:func:`export_onnx` folds the model into its inference plan
(:func:`posekernels.inference.build_plan`, BatchNorms folded, eval only) with
``backend="reference"``, so every graph convolution is traced
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

from .inference import build_plan, model_joints

__all__ = ["export_onnx", "check_onnx"]


def _window_shape(model: nn.Module) -> tuple[int, int]:
    """(T, V) of the model's input window."""
    joints = model_joints(model)
    if joints is None:
        raise ValueError("the model has neither num_joints nor a skeleton: its input shape "
                         "(N, T, V, 2) is unknown")
    return int(getattr(model, "receptive_field", 1)), joints


def export_onnx(model: nn.Module, path: str | os.PathLike, *, batch: int = 1,
                opset: int = 17) -> str:
    """Write ``model`` (GLAGCN or any posekernels lifting model) to ``path`` as ONNX."""
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise ImportError("ONNX export needs the onnx package: pip install 'posekernels[onnx]'") \
            from None
    model = model.eval()
    plan = build_plan(model, backend="reference").cpu().eval()
    T, V = _window_shape(model)
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
    T, V = _window_shape(model)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, T, V, 2, generator=g) * 0.3
    session = ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"keypoints2d": x.numpy()})[0]
    param = next(model.parameters())
    with torch.no_grad():
        xin = x.to(param.device, param.dtype)
        want = model(xin)[:, 0] if hasattr(model, "receptive_field") else model(xin[:, 0])
    return float(np.abs(got - want.cpu().numpy()).max())
