"""Inference: a trained lifting model turned into 3D poses.

* :func:`build_plan` (:mod:`posekernels.inference.plan`): the folded inference plan of a model
  (:class:`GLAGCNPlan` for a GLA-GCN: BatchNorms folded, the compiled kernels called through
  :mod:`posekernels.ops.unchecked`; :class:`ModulePlan` for any other model). It is the engine of
  everything below and of :class:`posekernels.stream.StreamingLifter` and
  :func:`posekernels.export.export_onnx` (``backend="reference"``), so that offline, streamed and
  exported poses agree.
* :func:`lift_sequence` (:mod:`posekernels.inference.lift`): offline lifting of a whole 2D
  sequence, one pose per frame (also ``posekernels.lift_sequence``).
* :func:`window_offsets`: the frames a model's window covers around the frame it predicts
  (centred or causal); :func:`window_sampling`: where that window reads input at another frame
  rate (:func:`model_rate`: the rate a model was trained at); :func:`model_joints`: the number of
  joints a model takes;
* :func:`place_in_camera` (:mod:`posekernels.inference.placement`): where the lifted person
  stands in a calibrated camera's frame (the root's position from the pose and its 2D);
* :func:`one_euro`, :class:`OneEuroFilter` (:mod:`posekernels.inference.smoothing`): causal
  smoothing of lifted poses, offline and live.

Layering: this package uses :mod:`posekernels.models`, :mod:`posekernels.ops` and
:mod:`posekernels.data`; :mod:`posekernels.stream`, :mod:`posekernels.export`,
:mod:`posekernels.evaluation` and the command line use it, never the reverse.
"""
from __future__ import annotations

from .lift import (WindowSampling, lift_sequence, model_joints, model_rate, window_offsets,
                   window_sampling)
from .placement import place_in_camera
from .plan import GLAGCNPlan, ModulePlan, build_plan
from .smoothing import SMOOTHING_DEFAULTS, OneEuroFilter, SmoothingConfig, one_euro

__all__ = ["lift_sequence", "window_offsets", "window_sampling", "WindowSampling", "model_rate",
           "model_joints", "place_in_camera", "build_plan", "GLAGCNPlan",
           "ModulePlan", "one_euro", "OneEuroFilter", "SmoothingConfig", "SMOOTHING_DEFAULTS"]
