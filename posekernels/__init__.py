"""posekernels: graph-convolutional 3D human pose lifting with fused kernels.

Layers, each using only the ones before it:

* :mod:`posekernels.ops` -- the three operations (graph convolution, grouped per-joint linear,
  temporal convolution) and the training epilogues (dropout, BatchNorm + dropout + residual +
  ReLU) with their backends; every model goes through them;
* :mod:`posekernels.skeletons`, :mod:`posekernels.models`, :mod:`posekernels.data`,
  :mod:`posekernels.metrics`;
* :mod:`posekernels.checkpoints` -- saving and loading models, the shipped default lifters;
* :mod:`posekernels.inference` -- the folded inference plan and offline lifting
  (:func:`lift_sequence`);
* :mod:`posekernels.stream`, :mod:`posekernels.export`, :mod:`posekernels.evaluation`,
  :mod:`posekernels.training`, :mod:`posekernels.adapters`;
* :mod:`posekernels.cli` -- the ``posekernels`` command (no library module imports it).
"""
from __future__ import annotations

from ._version import __version__
from . import _ext
from . import ops
from .inference import lift_sequence

__all__ = ["__version__", "build_info", "ops", "lift_sequence", "tune_cpu_allocator"]


def __getattr__(name: str):
    """Lazy submodules: ``posekernels.stream``, ``posekernels.adapters`` and
    ``posekernels.checkpoints`` load on first use."""
    if name in ("stream", "adapters", "checkpoints"):
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


_ALLOCATOR_TUNED = False


def tune_cpu_allocator() -> bool:
    """Make glibc's malloc keep large freed blocks for reuse (process-wide; once).

    By default glibc unmaps blocks above 128 KiB-32 MiB when they are freed and trims the heap
    top, so a loop that allocates and frees the same activations every step (an inference loop
    at a fixed batch) takes a page fault for every 4 KiB of them on every step. This raises the
    mmap threshold to its maximum (32 MiB) and the trim threshold to 1 GiB: freed memory stays in
    the process for reuse (resident memory stops shrinking after peaks; it does not grow without
    bound). :class:`posekernels.stream.StreamingLifter` calls it on the CPU unless
    ``tune_allocator=False``.

    Returns True when applied (glibc), False otherwise (other C libraries, no extension).
    """
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED:
        return True
    if not _ext.has_extension():
        return False
    _ALLOCATOR_TUNED = bool(_ext._C._tune_malloc(32 << 20, 1 << 30))
    return _ALLOCATOR_TUNED
