"""Loads the compiled extension ``posekernels._C`` once; everything else asks here."""
from __future__ import annotations

import importlib.util
import warnings

import torch  # noqa: F401  (loads libtorch, which the extension links against)

_C = None
_ERROR: str | None = None

try:  # the extension registers the posekernels:: ops with torch.library on import
    if importlib.util.find_spec(f"{__package__}._C") is None:
        raise ImportError("posekernels._C was not built")
    from . import _C as _C  # type: ignore[attr-defined]  # noqa: F401
except Exception as exc:  # pragma: no cover - exercised only without a build
    _C = None
    _ERROR = f"{type(exc).__name__}: {exc}"
    warnings.warn(
        "posekernels: the compiled extension posekernels._C is not available "
        f"({_ERROR}); ops fall back to the 'reference' PyTorch backend "
        "(and 'triton' where available). Reinstall with "
        "`pip install --no-build-isolation -e .` to build it.",
        RuntimeWarning,
        stacklevel=2,
    )


def has_extension() -> bool:
    return _C is not None


# Read once: the dispatcher asks on every op call, also while torch.compile traces it, and a
# call into the pybind11 module cannot be traced.
_COMPILED: tuple[str, ...] = tuple(_C.compiled_backends()) if _C is not None else ()


def compiled_backends() -> list[str]:
    """Backends compiled into the extension ("cpu", and "cuda" when built with CUDA)."""
    return list(_COMPILED)


def load_error() -> str | None:
    return _ERROR
