"""Real-time streaming: :class:`StreamingLifter` (live windows on the device, many streams in one
batch, CUDA graphs on the GPU, missing-data filling; one lifter may be shared by threads, its
calls serialise on a lock), the folded inference plan it runs (:func:`build_plan`), and
:func:`load_model` (``"default"`` or a checkpoint path).

See :mod:`posekernels.stream.lifter` for the exact semantics.
"""
from __future__ import annotations

from ._checkpoint import load_model
from ._plan import GLAGCNPlan, ModulePlan, build_plan
from .lifter import DEFAULT_MIN_SCORE, MAX_STREAMS, StreamingLifter, fill_missing

__all__ = ["StreamingLifter", "fill_missing", "build_plan", "GLAGCNPlan", "ModulePlan",
           "load_model", "DEFAULT_MIN_SCORE", "MAX_STREAMS"]
