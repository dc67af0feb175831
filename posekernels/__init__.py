"""posekernels: graph-convolutional 3D human pose lifting with fused kernels.

The two hot operations live in :mod:`posekernels.ops`; every model goes through them.
"""
from __future__ import annotations

from ._version import __version__
from . import _ext
from . import ops
from .inference import lift_sequence

__all__ = ["__version__", "build_info", "ops", "lift_sequence"]


def __getattr__(name: str):
    """Lazy submodules: ``posekernels.stream`` / ``posekernels.adapters`` load on first use."""
    if name in ("stream", "adapters"):
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_info() -> dict:
    """Describe this installation: version, torch version, compiled backends, CUDA arch list."""
    import torch

    info = {
        "version": __version__,
        "torch_version": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "extension": _ext.has_extension(),
        "compiled_backends": _ext.compiled_backends(),
        "cuda_arch_list": [],
        "extension_error": _ext.load_error(),
    }
    if _ext.has_extension():
        info.update(_ext._C.build_info())
    try:
        import triton

        info["triton_version"] = triton.__version__
    except Exception:
        info["triton_version"] = None
    return info
