"""Kept for older imports: :func:`load_model` and :class:`DefaultModelUnavailable` live in
:mod:`posekernels.checkpoints` (also exported by :mod:`posekernels.stream`)."""
from __future__ import annotations

from ..checkpoints import DefaultModelUnavailable, load_model

__all__ = ["load_model", "DefaultModelUnavailable"]
