"""Real-time streaming: :class:`StreamingLifter` (live windows on the device, many streams in one
batch, CUDA graphs on the GPU, missing-data filling; one lifter may be shared by threads, its
calls serialise on a lock), :func:`fill_missing` (its missing-data rule, offline) and the One
Euro smoothing of :mod:`posekernels.inference.smoothing` (:class:`OneEuroFilter` live,
:func:`one_euro` offline), exported here too.

The lifter runs the folded inference plan of :mod:`posekernels.inference`; :func:`build_plan`,
:class:`GLAGCNPlan` and :class:`ModulePlan` are that package's, and :func:`load_model`
(``"default"`` or a checkpoint path) and :class:`DefaultModelUnavailable` those of
:mod:`posekernels.checkpoints`, exported here too.

See :mod:`posekernels.stream.lifter` for the exact semantics.
"""
from __future__ import annotations

from ..checkpoints import DefaultModelUnavailable, load_model
from ..inference import GLAGCNPlan, ModulePlan, build_plan
from .lifter import DEFAULT_MIN_SCORE, MAX_COORDINATE, MAX_STREAMS, StreamingLifter, fill_missing
from ..inference.smoothing import (SMOOTHING_DEFAULTS, OneEuroFilter, SmoothingConfig, one_euro,
                                  smoothing_config)

__all__ = ["StreamingLifter", "fill_missing", "build_plan", "GLAGCNPlan", "ModulePlan",
           "load_model", "DefaultModelUnavailable", "DEFAULT_MIN_SCORE", "MAX_COORDINATE",
           "MAX_STREAMS", "OneEuroFilter", "SmoothingConfig", "one_euro", "smoothing_config",
           "SMOOTHING_DEFAULTS"]
