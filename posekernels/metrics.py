"""Evaluation metrics for 3D human pose estimation.

Units: poses are given in **metres**, (..., joints, 3); errors come back in **millimetres**
(MPJVE in millimetres per frame unless ``fps`` is given, then mm/s; PCK and AUC in percent).
Every function accepts numpy arrays or torch tensors (computed in float64, on the tensors'
device). Scalar results are Python floats; ``reduce=False`` returns one value per frame (all
leading dimensions kept), as a numpy array for numpy inputs and a tensor otherwise.

* MPJPE: mean Euclidean joint error. Give root-relative poses, or ``root=`` to subtract that
  joint from both prediction and target first.
* P-MPJPE: MPJPE after aligning each predicted frame to its target with the optimal similarity
  transform (scale, rotation with reflection correction, translation; orthogonal Procrustes).
* N-MPJPE: MPJPE after the optimal per-frame scale of the prediction
  (``s = <pred, target> / <pred, pred>``); give root-relative poses or ``root=``.
* MPJVE: mean Euclidean error of the first temporal difference (velocity); the frame axis is the
  one before the joint axis.
* PCK: percentage of joints with error <= ``threshold`` (150 mm by default); AUC: mean PCK
  over thresholds 0, 5, ..., 150 mm.

Aggregation (:class:`MetricAccumulator`): errors are frame-weighted inside an action (all frames
of all sequences of that action, over subjects and cameras), then averaged over actions (the
Human3.6M protocol); the same is reported per subject and over all frames. :meth:`summary`
returns a JSON-ready dict and :func:`format_table` renders it for the terminal.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch

__all__ = [
    "mpjpe", "p_mpjpe", "n_mpjpe", "mpjve", "pck", "auc", "procrustes_align",
    "per_joint_error", "MetricAccumulator", "format_table", "AUC_THRESHOLDS_MM", "METRICS",
]

AUC_THRESHOLDS_MM = tuple(float(t) for t in range(0, 151, 5))
METRICS = ("mpjpe", "p_mpjpe", "n_mpjpe", "mpjve", "pck", "auc")
UNITS = {"mpjpe": "mm", "p_mpjpe": "mm", "n_mpjpe": "mm", "mpjve": "mm/frame", "pck": "%",
         "auc": "%"}


def _pair(pred: Any, target: Any) -> tuple[torch.Tensor, torch.Tensor, bool]:
    numpy_out = not isinstance(pred, torch.Tensor) and not isinstance(target, torch.Tensor)
    device = next((x.device for x in (pred, target) if isinstance(x, torch.Tensor)), None)

    def conv(x):
        t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x, np.float64))
        return t.to(device=device if device is not None else t.device, dtype=torch.float64)

    p, t = conv(pred), conv(target)
    if p.shape != t.shape:
        raise ValueError(f"prediction shape {tuple(p.shape)} != target shape {tuple(t.shape)}")
    if p.ndim < 2 or p.shape[-1] != 3:
        raise ValueError(f"poses must be (..., joints, 3), got {tuple(p.shape)}")
    if p.shape[-2] == 0:
        raise ValueError("poses have no joints")
    return p, t, numpy_out


def _out(values: torch.Tensor, reduce: bool, numpy_out: bool):
    if reduce:
        if values.numel() == 0:
            raise ValueError("no frames to evaluate")
        return float(values.mean())
    return values.cpu().numpy() if numpy_out else values


def _rel(p: torch.Tensor, t: torch.Tensor, root: int | None):
    if root is None:
        return p, t
    return p - p[..., root:root + 1, :], t - t[..., root:root + 1, :]


def per_joint_error(pred, target, *, root: int | None = None):
    """Euclidean error per joint in mm, shape (..., joints) (same kind as the inputs)."""
    p, t, np_out = _pair(pred, target)
    p, t = _rel(p, t, root)
    err = torch.linalg.vector_norm(p - t, dim=-1) * 1000.0
    return err.cpu().numpy() if np_out else err


def mpjpe(pred, target, *, root: int | None = None, reduce: bool = True):
    """Mean per-joint position error (mm)."""
    p, t, np_out = _pair(pred, target)
    p, t = _rel(p, t, root)
    return _out(torch.linalg.vector_norm(p - t, dim=-1).mean(-1) * 1000.0, reduce, np_out)


def _procrustes(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Similarity-align every frame of ``p`` (..., V, 3) to ``t``; float64 tensors."""
    shape = p.shape
    p = p.reshape(-1, shape[-2], 3)
    t = t.reshape(-1, shape[-2], 3)
    mu_p = p.mean(-2, keepdim=True)
    mu_t = t.mean(-2, keepdim=True)
    a = p - mu_p
    b = t - mu_t
    m = a.transpose(-1, -2) @ b                     # (N, 3, 3) cross-covariance
    u, s, vh = torch.linalg.svd(m)
    d = torch.where(torch.linalg.det(u @ vh) < 0, -1.0, 1.0).to(p.dtype)
    u = torch.cat([u[..., :2], u[..., 2:] * d[:, None, None]], dim=-1)
    s = torch.cat([s[..., :2], s[..., 2:] * d[:, None]], dim=-1)
    rot = u @ vh                                    # proper rotation applied as a @ rot
    norm_a = (a * a).sum((-1, -2))
    scale = s.sum(-1) / norm_a.clamp_min(torch.finfo(p.dtype).tiny)
    aligned = scale[:, None, None] * (a @ rot) + mu_t
    return aligned.reshape(shape)


def procrustes_align(pred, target):
    """``pred`` aligned per frame to ``target`` by the optimal similarity transform."""
    p, t, np_out = _pair(pred, target)
    out = _procrustes(p, t)
    return out.cpu().numpy() if np_out else out


def p_mpjpe(pred, target, *, reduce: bool = True):
    """MPJPE after per-frame similarity Procrustes alignment (mm)."""
    p, t, np_out = _pair(pred, target)
    aligned = _procrustes(p, t)
    return _out(torch.linalg.vector_norm(aligned - t, dim=-1).mean(-1) * 1000.0, reduce, np_out)


def n_mpjpe(pred, target, *, root: int | None = None, reduce: bool = True):
    """MPJPE after the optimal per-frame scale of the prediction (mm)."""
    p, t, np_out = _pair(pred, target)
    p, t = _rel(p, t, root)
    num = (p * t).sum((-1, -2), keepdim=True)
    den = (p * p).sum((-1, -2), keepdim=True).clamp_min(torch.finfo(p.dtype).tiny)
    return _out(torch.linalg.vector_norm(p * (num / den) - t, dim=-1).mean(-1) * 1000.0,
                reduce, np_out)


def mpjve(pred, target, *, root: int | None = None, fps: float | None = None,
          reduce: bool = True):
    """Mean per-joint velocity error: frames along axis -3; mm/frame (mm/s with ``fps``).

    ``reduce=False`` returns one value per frame pair (frames - 1 along that axis).
    """
    p, t, np_out = _pair(pred, target)
    if p.ndim < 3:
        raise ValueError("MPJVE needs a frame axis: poses of shape (..., frames, joints, 3)")
    if p.shape[-3] < 2:
        raise ValueError("MPJVE needs at least 2 frames")
    p, t = _rel(p, t, root)
    dv = torch.diff(p, dim=-3) - torch.diff(t, dim=-3)
    err = torch.linalg.vector_norm(dv, dim=-1).mean(-1) * 1000.0
    if fps is not None:
        err = err * float(fps)
    return _out(err, reduce, np_out)


def _select(p, t, joints):
    if joints is None:
        return p, t
    idx = torch.as_tensor(list(joints), dtype=torch.long, device=p.device)
    return p.index_select(-2, idx), t.index_select(-2, idx)


def pck(pred, target, threshold: float = 150.0, *, root: int | None = None,
        joints: Sequence[int] | None = None, reduce: bool = True):
    """Percentage of joints with error <= ``threshold`` mm (``joints`` selects a subset)."""
    p, t, np_out = _pair(pred, target)
    p, t = _rel(p, t, root)
    p, t = _select(p, t, joints)
    err = torch.linalg.vector_norm(p - t, dim=-1) * 1000.0
    return _out((err <= threshold).to(torch.float64).mean(-1) * 100.0, reduce, np_out)


def auc(pred, target, thresholds: Sequence[float] = AUC_THRESHOLDS_MM, *,
        root: int | None = None, joints: Sequence[int] | None = None, reduce: bool = True):
    """Area under the PCK curve: mean PCK (percent) over ``thresholds`` (0, 5, ..., 150 mm)."""
    p, t, np_out = _pair(pred, target)
    p, t = _rel(p, t, root)
    p, t = _select(p, t, joints)
    err = torch.linalg.vector_norm(p - t, dim=-1) * 1000.0
    thr = torch.as_tensor(list(thresholds), dtype=torch.float64, device=p.device)
    if thr.numel() == 0:
        raise ValueError("auc needs at least one threshold")
    hits = (err.unsqueeze(-1) <= thr).to(torch.float64)    # (..., V, K)
    return _out(hits.mean((-1, -2)) * 100.0, reduce, np_out)


# --------------------------------------------------------------------------------------------
# Aggregation
# --------------------------------------------------------------------------------------------

def _default_group(action: str) -> str:
    from posekernels.data.splits import canonical_action

    return canonical_action(action)


class MetricAccumulator:
    """Collect per-frame errors sequence by sequence and aggregate them per action / subject.

    ``add(subject, action, pred, target)`` takes one sequence (frames, joints, 3) in metres;
    ``valid`` (bool per frame) restricts which frames count (MPJVE uses frame pairs with both
    frames valid). Actions are grouped by ``group`` (default
    :func:`posekernels.data.splits.canonical_action`, so "Walking 1" counts as "Walking"; pass
    ``group=None`` to keep names as given). ``root`` applies to MPJPE, N-MPJPE, MPJVE, PCK and
    AUC (P-MPJPE is translation invariant).
    """

    def __init__(self, metrics: Sequence[str] = ("mpjpe", "p_mpjpe", "n_mpjpe", "mpjve"), *,
                 root: int | None = None, pck_threshold: float = 150.0,
                 auc_thresholds: Sequence[float] = AUC_THRESHOLDS_MM,
                 pck_joints: Sequence[int] | None = None, fps: float | None = None,
                 group: Callable[[str], str] | None = _default_group):
        bad = [m for m in metrics if m not in METRICS]
        if bad:
            raise ValueError(f"unknown metric(s) {bad}; choose from {METRICS}")
        self.metrics = tuple(metrics)
        self.root = root
        self.pck_threshold = float(pck_threshold)
        self.auc_thresholds = tuple(auc_thresholds)
        self.pck_joints = pck_joints
        self.fps = fps
        self.group = group
        # (subject, action) -> metric -> [sum, count]
        self._sums: dict[tuple[str, str], dict[str, list[float]]] = {}
        # (subject, action, joints) -> [per-joint error sums (joints,) in mm, frames] (mpjpe)
        self._joint_sums: dict[tuple[str, str, int], list] = {}

    def _per_frame(self, name: str, p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        # (MPJPE comes from add()'s per-joint errors)
        if name == "p_mpjpe":
            return p_mpjpe(p, t, reduce=False)
        if name == "n_mpjpe":
            return n_mpjpe(p, t, root=self.root, reduce=False)
        if name == "pck":
            return pck(p, t, self.pck_threshold, root=self.root, joints=self.pck_joints,
                       reduce=False)
        if name == "auc":
            return auc(p, t, self.auc_thresholds, root=self.root, joints=self.pck_joints,
                       reduce=False)
        raise AssertionError(name)

    def add(self, subject: str, action: str, pred, target, *, valid=None) -> None:
        p, t, _ = _pair(pred, target)
        if p.ndim != 3:
            raise ValueError(f"add() takes one sequence (frames, joints, 3), got {tuple(p.shape)}")
        if p.shape[0] == 0:
            raise ValueError(f"{subject}/{action}: empty sequence")
        mask = None
        if valid is not None:
            mask = torch.as_tensor(np.asarray(valid) if not isinstance(valid, torch.Tensor)
                                   else valid).reshape(-1).to(device=p.device, dtype=torch.bool)
            if mask.shape[0] != p.shape[0]:
                raise ValueError(f"{subject}/{action}: valid has {mask.shape[0]} entries for "
                                 f"{p.shape[0]} frames")
        key = (str(subject), self.group(str(action)) if self.group else str(action))
        sums = self._sums.setdefault(key, {m: [0.0, 0] for m in self.metrics})
        sums.setdefault("frames", [0.0, 0])
        n_frames = int(mask.sum()) if mask is not None else p.shape[0]
        sums["frames"][1] += n_frames
        per_joint = None  # (frames, joints) mm, computed once: per-joint sums and MPJPE
        if "mpjpe" in self.metrics:
            per_joint = per_joint_error(p, t, root=self.root)
            kept = per_joint[mask] if mask is not None else per_joint
            acc = self._joint_sums.setdefault((*key, p.shape[1]), [
                torch.zeros(p.shape[1], dtype=torch.float64), 0])
            acc[0] += kept.double().sum(0).cpu()
            acc[1] += int(kept.shape[0])
        for name in self.metrics:
            if name == "mpjve":
                if p.shape[0] < 2:
                    continue
                vals = mpjve(p, t, root=self.root, fps=self.fps, reduce=False)
                if mask is not None:
                    vals = vals[mask[1:] & mask[:-1]]
            else:
                vals = (per_joint.mean(-1) if name == "mpjpe"
                        else self._per_frame(name, p, t))
                if mask is not None:
                    vals = vals[mask]
            sums[name][0] += float(vals.sum())
            sums[name][1] += int(vals.numel())

    @staticmethod
    def _merge(groups: Iterable[dict[str, list[float]]], metrics) -> dict[str, float]:
        total: dict[str, list[float]] = {m: [0.0, 0] for m in metrics}
        frames = 0
        for g in groups:
            frames += g["frames"][1]
            for m in metrics:
                total[m][0] += g[m][0]
                total[m][1] += g[m][1]
        out: dict[str, float] = {"frames": frames}
        for m in metrics:
            s, n = total[m]
            out[m] = s / n if n else math.nan
        return out

    def summary(self) -> dict:
        """JSON-ready results: per action, per subject, mean over actions, all frames; with MPJPE
        also ``per_joint_mpjpe`` (mm per joint, frame-weighted within an action, averaged over
        actions like the headline; None when sequences of different joint counts were added)."""
        if not self._sums:
            raise ValueError("no sequences were added")
        actions = sorted({a for _, a in self._sums})
        subjects = sorted({s for s, _ in self._sums})
        per_action = {a: self._merge([v for (s, aa), v in self._sums.items() if aa == a],
                                     self.metrics) for a in actions}
        per_subject = {s: self._merge([v for (ss, _), v in self._sums.items() if ss == s],
                                      self.metrics) for s in subjects}
        mean_actions = {}
        for m in self.metrics:
            vals = [r[m] for r in per_action.values() if not math.isnan(r[m])]
            mean_actions[m] = float(np.mean(vals)) if vals else math.nan
        per_joint = None
        joint_counts = {v for _, _, v in self._joint_sums}
        if len(joint_counts) == 1:  # MPJPE per joint, frame-weighted per action, mean over actions
            rows = []
            for a in actions:
                groups = [v for (_, aa, _), v in self._joint_sums.items() if aa == a]
                n = sum(g[1] for g in groups)
                if n:
                    rows.append(sum(g[0] for g in groups) / n)
            per_joint = torch.stack(rows).mean(0).tolist() if rows else None
        units = dict(UNITS)
        if self.fps is not None:
            units["mpjve"] = "mm/s"
        return {
            "metrics": list(self.metrics),
            "units": {m: units[m] for m in self.metrics},
            "frames": int(sum(v["frames"][1] for v in self._sums.values())),
            "mean_over_actions": mean_actions,
            "all_frames": self._merge(self._sums.values(), self.metrics),
            "per_action": per_action,
            "per_subject": per_subject,
            "per_joint_mpjpe": per_joint,
            "pck_threshold_mm": self.pck_threshold,
        }


_LABELS = {"mpjpe": "MPJPE", "p_mpjpe": "P-MPJPE", "n_mpjpe": "N-MPJPE", "mpjve": "MPJVE",
           "pck": "PCK", "auc": "AUC"}


def format_table(summary: dict, by: str = "action", digits: int = 1) -> str:
    """Plain-text table of a :meth:`MetricAccumulator.summary` (``by="action"`` or
    ``"subject"``), ending with the mean over actions and the all-frames row."""
    if by not in ("action", "subject"):
        raise ValueError("by must be 'action' or 'subject'")
    metrics = summary["metrics"]
    rows = summary["per_action" if by == "action" else "per_subject"]
    header = [by.capitalize(), "Frames"] + [
        f"{_LABELS[m]} ({summary['units'][m]})" for m in metrics]

    def fmt(v):
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"

    body = [[name, str(int(r["frames"]))] + [fmt(r[m]) for m in metrics]
            for name, r in rows.items()]
    foot = [["Mean over actions", str(summary["frames"])] +
            [fmt(summary["mean_over_actions"][m]) for m in metrics],
            ["All frames", str(summary["frames"])] +
            [fmt(summary["all_frames"][m]) for m in metrics]]
    table = [header] + body + foot
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]

    def line(r):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(r, widths)))

    sep = "-" * len(line(header))
    return "\n".join([line(header), sep] + [line(r) for r in body] + [sep] +
                     [line(r) for r in foot])
