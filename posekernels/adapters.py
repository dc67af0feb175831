"""Detector outputs to the h36m17 layout the lifters use, with confidences.

Supported layouts (``FORMATS``; the joint count is the size of the second-to-last axis):

``"coco17"``
    The COCO keypoint order of RTMPose, MMPose, YOLO-pose (Ultralytics), ViTPose, ...:
    nose, left/right eye, left/right ear, left/right shoulder, elbow, wrist, hip, knee, ankle.
``"openpose18"``
    OpenPose's COCO model (18 points: COCO's 17 in another order plus a neck).
``"body25"``
    OpenPose BODY_25 (COCO's points plus neck, mid-hip and six foot points).
``"blazepose33"``
    MediaPipe BlazePose / Pose Landmarker (33 landmarks). MediaPipe reports x, y as fractions of
    the image width and height: pass ``units="unit"`` for those.
``"halpe26"``
    AlphaPose / RTMPose Halpe-26: COCO's 17 in COCO order, then head top, neck, mid-hip and six
    foot points. Its head top is the h36m17 head (with its own confidence) instead of the rule
    below; the rest follows COCO.
``"halpe136"``
    Halpe full body (136): Halpe-26 followed by face and hand points (used as Halpe-26).
``"wholebody133"``
    COCO-WholeBody (133: RTMW, DWPose, RTMPose-wholebody): COCO's 17 body points first, then
    feet, face and hands (used as COCO-17).
``"h36m17"``
    Already in the lifter's layout (passed through).

h36m17 from COCO's 17 points (every rule uses 2D image positions; the confidence of a
synthesised joint is the smallest confidence of the points it is made from):

==========  ===============================================================================
h36m17      rule
==========  ===============================================================================
Hip (0)     pelvis = mean of the two hips
R/L hip, knee, foot   the COCO hip, knee, ankle of that side
Spine (7)   mean of pelvis and thorax (the middle of the trunk)
Thorax (8)  mean of the two shoulders
Neck/Nose (9)  the COCO nose
Head (10)   head centre ``c`` = mean of the two ears (or of the two eyes when the eyes are more
            confident than the ears); head = ``c + 0.5 (c - thorax)``: the top of the head lies
            above the ears by about half the thorax-to-ear distance
shoulders, elbows, wrists   the COCO points of that side
==========  ===============================================================================

Coordinates: pixels are normalised with :func:`posekernels.data.cameras.normalize_screen_coordinates`
(``x / w * 2 - [1, h / w]``, the convention the models were trained with). Missing points can be
given as NaN (or with a low score); they stay NaN / low and the
:class:`~posekernels.stream.StreamingLifter` fills them.
"""
from __future__ import annotations

import numpy as np

from .data.cameras import normalize_screen_coordinates

__all__ = ["FORMATS", "coco17_to_h36m17", "openpose18_to_coco17", "body25_to_coco17",
           "blazepose33_to_coco17", "halpe26_to_h36m17", "to_coco17", "to_h36m17",
           "HEAD_EXTENSION"]

FORMATS = {"coco17": 17, "openpose18": 18, "body25": 25, "blazepose33": 33, "halpe26": 26,
           "halpe136": 136, "wholebody133": 133, "h36m17": 17}
_HALPE_HEAD = 17  # Halpe-26's head top
HEAD_EXTENSION = 0.5

# index into the source layout for each COCO-17 joint
_OPENPOSE18_TO_COCO = (0, 15, 14, 17, 16, 5, 2, 6, 3, 7, 4, 11, 8, 12, 9, 13, 10)
_BODY25_TO_COCO = (0, 16, 15, 18, 17, 5, 2, 6, 3, 7, 4, 12, 9, 13, 10, 14, 11)
_BLAZEPOSE_TO_COCO = (0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28)
# COCO indices
_NOSE, _LEYE, _REYE, _LEAR, _REAR = 0, 1, 2, 3, 4
_LSHO, _RSHO, _LELB, _RELB, _LWRI, _RWRI = 5, 6, 7, 8, 9, 10
_LHIP, _RHIP, _LKNE, _RKNE, _LANK, _RANK = 11, 12, 13, 14, 15, 16


def _arrays(keypoints, scores, joints: int, name: str):
    kp = np.asarray(keypoints, dtype=np.float64)
    if kp.ndim < 2 or kp.shape[-1] != 2 or kp.shape[-2] != joints:
        raise ValueError(f"{name} keypoints must have shape (..., {joints}, 2), got {kp.shape}")
    if scores is None:
        sc = np.ones(kp.shape[:-1])
    else:
        sc = np.asarray(scores, dtype=np.float64)
        if sc.shape != kp.shape[:-1]:
            raise ValueError(f"{name} scores must have shape {kp.shape[:-1]}, got {sc.shape}")
    return kp, sc


def _reorder(keypoints, scores, table, joints, name):
    kp, sc = _arrays(keypoints, scores, joints, name)
    idx = list(table)
    return kp[..., idx, :], sc[..., idx]


def openpose18_to_coco17(keypoints, scores=None):
    """OpenPose COCO (18 points) -> COCO-17 order (the neck is dropped)."""
    return _reorder(keypoints, scores, _OPENPOSE18_TO_COCO, 18, "openpose18")


def body25_to_coco17(keypoints, scores=None):
    """OpenPose BODY_25 -> COCO-17 order (neck, mid-hip and foot points are dropped)."""
    return _reorder(keypoints, scores, _BODY25_TO_COCO, 25, "body25")


def blazepose33_to_coco17(keypoints, scores=None):
    """MediaPipe BlazePose 33 landmarks -> COCO-17 order (eyes: the eye centres)."""
    return _reorder(keypoints, scores, _BLAZEPOSE_TO_COCO, 33, "blazepose33")


def halpe26_to_h36m17(keypoints, scores=None):
    """Halpe-26 (..., 26, 2) -> h36m17 (..., 17, 2) and scores: the COCO rules on its first 17
    points, with Halpe's own head top as the head."""
    kp, sc = _arrays(keypoints, scores, 26, "halpe26")
    out, conf = coco17_to_h36m17(kp[..., :17, :], sc[..., :17])
    out[..., 10, :], conf[..., 10] = kp[..., _HALPE_HEAD, :], sc[..., _HALPE_HEAD]
    return out, conf


def _mean2(kp, sc, a, b):
    return (kp[..., a, :] + kp[..., b, :]) / 2, np.minimum(sc[..., a], sc[..., b])


def coco17_to_h36m17(keypoints, scores=None):
    """COCO-17 (..., 17, 2) -> h36m17 (..., 17, 2) and scores (..., 17) (rules: module doc)."""
    kp, sc = _arrays(keypoints, scores, 17, "coco17")
    out = np.empty(kp.shape, dtype=np.float64)
    conf = np.empty(sc.shape, dtype=np.float64)
    pelvis, s_pelvis = _mean2(kp, sc, _LHIP, _RHIP)
    thorax, s_thorax = _mean2(kp, sc, _LSHO, _RSHO)
    ears, s_ears = _mean2(kp, sc, _LEAR, _REAR)
    eyes, s_eyes = _mean2(kp, sc, _LEYE, _REYE)
    use_eyes = s_eyes > s_ears
    centre = np.where(use_eyes[..., None], eyes, ears)
    s_centre = np.where(use_eyes, s_eyes, s_ears)
    out[..., 0, :], conf[..., 0] = pelvis, s_pelvis
    for h36m, coco in ((1, _RHIP), (2, _RKNE), (3, _RANK), (4, _LHIP), (5, _LKNE), (6, _LANK),
                       (9, _NOSE), (11, _LSHO), (12, _LELB), (13, _LWRI), (14, _RSHO),
                       (15, _RELB), (16, _RWRI)):
        out[..., h36m, :], conf[..., h36m] = kp[..., coco, :], sc[..., coco]
    out[..., 7, :] = (pelvis + thorax) / 2
    conf[..., 7] = np.minimum(s_pelvis, s_thorax)
    out[..., 8, :], conf[..., 8] = thorax, s_thorax
    out[..., 10, :] = centre + HEAD_EXTENSION * (centre - thorax)
    conf[..., 10] = np.minimum(s_centre, s_thorax)
    return out, conf


def to_coco17(keypoints, scores=None, fmt: str = "coco17"):
    """Any COCO-like layout of ``FORMATS`` (not h36m17) -> COCO-17 order."""
    if fmt == "coco17":
        return _arrays(keypoints, scores, 17, "coco17")
    if fmt == "openpose18":
        return openpose18_to_coco17(keypoints, scores)
    if fmt == "body25":
        return body25_to_coco17(keypoints, scores)
    if fmt == "blazepose33":
        return blazepose33_to_coco17(keypoints, scores)
    if fmt in ("halpe26", "halpe136", "wholebody133"):  # COCO's 17 come first, in COCO order
        kp, sc = _arrays(keypoints, scores, FORMATS[fmt], fmt)
        return kp[..., :17, :], sc[..., :17]
    raise ValueError(f"format must be one of {sorted(set(FORMATS) - {'h36m17'})}, got {fmt!r}")


def to_h36m17(keypoints, scores=None, *, fmt: str, width: float, height: float,
              units: str = "px"):
    """Detector keypoints (..., J, 2) in ``fmt`` -> normalised h36m17 (..., 17, 2) and scores.

    ``units="px"``: pixel coordinates of a ``width`` x ``height`` image; ``"unit"``: fractions of
    the width and height (MediaPipe); ``"normalized"``: already normalised screen coordinates.
    Returns float32 arrays.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {sorted(FORMATS)}, got {fmt!r}")
    if units not in ("px", "unit", "normalized"):
        raise ValueError(f"units must be 'px', 'unit' or 'normalized', got {units!r}")
    if units != "normalized" and not (width > 0 and height > 0):
        raise ValueError(f"width and height must be positive, got {width} x {height}")
    kp, sc = _arrays(keypoints, scores, FORMATS[fmt], fmt)
    if units == "unit":
        kp = kp * np.array([width, height], dtype=np.float64)
    if fmt in ("halpe26", "halpe136"):
        kp, sc = halpe26_to_h36m17(kp[..., :26, :], sc[..., :26])
    elif fmt != "h36m17":
        kp, sc = coco17_to_h36m17(*to_coco17(kp, sc, fmt))
    if units != "normalized":
        kp = normalize_screen_coordinates(kp, float(width), float(height))
    return kp.astype(np.float32), sc.astype(np.float32)
