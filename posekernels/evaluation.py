"""Evaluate a lifting model on sequences with :class:`posekernels.metrics.MetricAccumulator`.

* :func:`sequences_from_3d` -- world 3D sequences (a VideoPose3D 3D npz or the dict it holds)
  projected through the default virtual rig (:func:`posekernels.data.default_rig`, ``cameras=
  "rig"``) or through ``num_cameras`` static cameras per clip drawn from the documented
  evaluation distribution (``cameras="random"``,
  :func:`posekernels.data.random_cameras.evaluation_cameras`, seeded by ``camera_seed`` and the
  clip's name, so the same seed gives the same cameras), optionally with detector noise: one
  :class:`~posekernels.data.PoseSequence` per (subject, action, camera).
* :func:`sequences_from_bvh` -- BVH files or folders imported with
  :func:`posekernels.data.import_bvh` (CMU conventions; subject = folder name, action = file
  stem), then projected the same way; ``keypoints="coco17"`` makes the 2D input as a COCO
  detector and :mod:`posekernels.adapters` make it (:mod:`posekernels.data.detector_joints`).
* :func:`evaluate_sequences` -- lift every sequence with :func:`posekernels.lift_sequence`
  (optionally with the test-time flip) and accumulate MPJPE, P-MPJPE, N-MPJPE, MPJVE (mm, mm per
  frame), PCK at 150 mm and AUC over 0-150 mm against root-relative camera-frame targets:
  frame-weighted within an action, averaged over actions, and per subject.
* :func:`headline` -- the flat JSON object ``{"mpjpe", "p_mpjpe", "n_mpjpe", "mpjve", "pck",
  "auc", "frames"}`` (means over actions) of a summary.
"""
from __future__ import annotations

import os
from dataclasses import replace
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from torch import nn

from .metrics import METRICS, MetricAccumulator

__all__ = ["sequences_from_3d", "sequences_from_bvh", "evaluate_sequences", "headline"]


def sequences_from_3d(positions_3d: str | os.PathLike | Mapping[str, Mapping[str, Any]], *,
                      subjects: Iterable[str] | None = None, detector_noise: bool = False,
                      seed: int = 0, fps: float | None = None, num_joints: int | None = None,
                      cameras: str = "rig", num_cameras: int = 4,
                      camera_seed: int | None = None, camera_distribution=None):
    """Project world sequences (metres) through the default rig or random evaluation cameras;
    see the module docstring. ``camera_distribution``: with ``cameras="random"``, a
    :class:`~posekernels.data.random_cameras.CameraDistribution` (or a dict of its fields,
    changed from the evaluation distribution) to draw the cameras from instead, e.g. one's own
    camera: its image size and field of view, its height and distance as one-value ranges."""
    from .data import DetectorNoise, load_positions_3d, project_sequences
    from .data.random_cameras import (EVALUATION_CAMERAS, EVALUATION_SEED, CameraDistribution,
                                      camera_distribution_from_dict, evaluation_cameras)

    if isinstance(positions_3d, (str, os.PathLike)):
        positions_3d = load_positions_3d(positions_3d, num_joints=num_joints)
    if subjects is not None:
        subjects = [str(s) for s in subjects]
        missing = sorted(set(subjects) - set(positions_3d))
        if missing:
            raise ValueError(f"subject(s) {missing} not in the data (it has "
                             f"{sorted(positions_3d)})")
    noise = DetectorNoise(seed=seed) if detector_noise else None
    if cameras == "rig" and camera_distribution is not None:
        raise ValueError("camera_distribution applies to cameras='random', not to the rig")
    if cameras == "rig":
        return project_sequences(positions_3d, subjects=subjects, noise=noise, fps=fps)
    if cameras != "random":
        raise ValueError(f"cameras must be 'rig' or 'random', got {cameras!r}")
    cam_seed = EVALUATION_SEED if camera_seed is None else int(camera_seed)
    dist = camera_distribution if isinstance(camera_distribution, CameraDistribution) else \
        camera_distribution_from_dict(camera_distribution, "camera_distribution",
                                      base=EVALUATION_CAMERAS)

    def clip_cameras(subject, action, pos):
        return evaluation_cameras(pos, num_cameras, seed=cam_seed, key=f"{subject}/{action}",
                                  dist=dist)

    return project_sequences(positions_3d, clip_cameras, recenter_mode="none", noise=noise,
                             fps=fps, subjects=subjects)


def sequences_from_bvh(paths: Sequence[str], *, subject: str | None = None,
                       repair_glitches: bool = True, detector_noise: bool = False,
                       seed: int = 0, cameras: str = "rig", num_cameras: int = 4,
                       camera_seed: int | None = None, fps: float = 50.0,
                       camera_distribution=None, keypoints: str = "h36m17"):
    """Import BVH files / folders (CMU conventions) resampled to ``fps`` (default 50 Hz, the
    shipped lifters' training rate; another rate is what a camera running at it shows) and
    project them (module doc).

    ``keypoints="coco17"`` gives the 2D input a live pipeline gives: COCO-17 points (the face
    points of :data:`posekernels.data.detector_joints.FACE_SITES` moved with each clip's head)
    projected, detector noise added to them (``detector_noise``; the same seeds, COCO's
    per-point scale), then :func:`posekernels.adapters.coco17_to_h36m17`; the 3D targets are
    the h36m17 mocap joints as always, and the cameras the same as for ``"h36m17"``."""
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not 1.0 <= fps <= 1000.0:
        raise ValueError(f"fps must be a frame rate in [1, 1000], got {fps!r}")
    from .data import DetectorNoise
    from .data.bvh import (CMU_H36M17_TABLE, bvh_sequence_name, find_bvh_files, import_bvh,
                           read_bvh)
    from .data.detector_joints import (COCO17_LEFT, COCO17_NOISE_SCALE, COCO17_RIGHT,
                                       FACE_SITE_NAMES, KEYPOINT_STYLES, add_face_sites,
                                       detector_view)

    if keypoints not in KEYPOINT_STYLES:
        raise ValueError(f"keypoints must be one of {list(KEYPOINT_STYLES)}, got {keypoints!r}")
    coco = keypoints == "coco17"
    table = tuple(CMU_H36M17_TABLE) + (FACE_SITE_NAMES if coco else ())
    positions: dict[str, dict[str, np.ndarray]] = {}
    for path in find_bvh_files(list(paths)):
        subj, action = bvh_sequence_name(path, subject)
        if action in positions.get(subj, {}):
            raise ValueError(f"{path}: duplicate sequence {subj}/{action}")
        source = add_face_sites(read_bvh(path)) if coco else path
        positions.setdefault(subj, {})[action] = import_bvh(
            source, joint_table=table, repair_glitches=repair_glitches, fps=float(fps)).positions
    seqs = sequences_from_3d(positions, detector_noise=detector_noise and not coco, seed=seed,
                             fps=float(fps), cameras=cameras, num_cameras=num_cameras,
                             camera_seed=camera_seed, camera_distribution=camera_distribution)
    if not coco:
        return seqs
    noise = DetectorNoise(seed=seed, joint_scale=COCO17_NOISE_SCALE, left=COCO17_LEFT,
                          right=COCO17_RIGHT) if detector_noise else None
    out = []
    for s in seqs:
        width = s.image_size[0] if s.image_size else 1000
        uv = detector_view(s.positions_2d, noise, (s.subject, s.action, s.camera), int(width))
        out.append(replace(s, positions_3d=s.positions_3d[:, :17], positions_2d=uv,
                           extra={**s.extra, "keypoints": "coco17"}))
    return out


def evaluate_sequences(model: nn.Module, sequences: Iterable[Any], *, flip_tta: bool = True,
                       batch_size: int = 1024, metrics: Sequence[str] = METRICS,
                       root: int = 0, progress: bool = False, fps: float | None = None,
                       model_fps: float | None = None, smoothing=None,
                       precision: str = "float32") -> MetricAccumulator:
    """Lift each :class:`~posekernels.data.PoseSequence` and accumulate the metrics.

    Targets are the sequences' camera-frame 3D positions made root-relative (joint ``root``);
    predictions are made root-relative too. ``fps`` / ``model_fps``: the sequences' frame rate
    and the model's, as in :func:`posekernels.lift_sequence` (windows sampled at the model's
    frame spacing); ``smoothing``: One Euro smoothing of each sequence's poses, as
    ``lift_sequence(smoothing=...)``; ``precision``: ``"bf16"`` for bfloat16 weight products, as
    ``lift_sequence(precision=...)``. Returns the accumulator (call ``.summary()``).
    """
    from .inference import lift_sequence

    seqs = list(sequences)
    if not seqs:
        raise ValueError("no sequences to evaluate")
    acc = MetricAccumulator(metrics, root=root)
    it = seqs
    if progress:
        try:
            from tqdm import tqdm
            it = tqdm(seqs, desc="evaluate", unit="seq", leave=False)
        except ImportError:  # pragma: no cover - tqdm is optional
            pass
    for seq in it:
        if seq.positions_3d is None:
            raise ValueError(f"sequence {seq.key}: no 3D targets to evaluate against")
        pred = lift_sequence(model, seq.normalized_2d().astype(np.float32), flip_tta=flip_tta,
                             batch_size=batch_size, fps=fps, model_fps=model_fps,
                             smoothing=smoothing, precision=precision)
        target = np.asarray(seq.positions_3d, dtype=np.float64)
        acc.add(seq.subject, seq.action, pred, target, valid=seq.valid)
    return acc


def headline(summary: Mapping[str, Any]) -> dict:
    """``{"mpjpe", "p_mpjpe", "n_mpjpe", "mpjve", "pck", "auc", "frames"}`` of a summary (means
    over actions; metrics that were not computed are left out)."""
    out = {m: float(summary["mean_over_actions"][m]) for m in summary["metrics"]}
    out["frames"] = int(summary["frames"])
    return out
