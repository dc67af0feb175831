"""Readers and writers for the npz formats of the 3D pose lifting literature.

VideoPose3D formats (Human3.6M, HumanEva-I, and this project's CMU import):

* ``data_3d_<name>.npz``: one entry ``positions_3d``, a pickled ``dict`` stored as a 0-d object
  array: ``positions_3d[subject][action]`` is a float array (frames, joints, 3) of world
  coordinates in metres.
* ``data_2d_<name>_<keypoints>.npz``: ``positions_2d[subject][action]`` is a list with one
  (frames, joints, 2) array of pixel coordinates per camera, in the camera order of the
  dataset; ``metadata`` is a dict ``{"layout_name": str, "num_joints": int,
  "keypoints_symmetry": [left_joints, right_joints]}``.

P-STMO MPI-INF-3DHP format (``data_train_3dhp.npz`` / ``data_test_3dhp.npz``), one entry
``data`` holding a pickled dict:

* train: ``data["S1 Seq1"] = [cameras, fps]`` where ``cameras`` maps the camera id ("0", "1",
  "2", "4", "5", "6", "7", "8") to ``{"data_2d": (F, 17, 2) pixels, "data_3d": (F, 17, 3)}``;
* test: ``data["TS1"] = {"data_2d": (F, 17, 2), "data_3d": (F, 17, 3), "valid": (F,)}``.

``data_3d`` is the "universal" (height-normalised) skeleton, ``univ_annot3``, in camera
coordinates and millimetres; joints are in the 17-joint MPI order with the pelvis (root) at
index 14. Images are 2048 x 2048 except TS5/TS6 (1920 x 1080).

**Pickles.** All of these files store Python dicts as object arrays, which numpy writes as
pickles. They are never opened with ``np.load(..., allow_pickle=True)``: plain arrays are read
with ``allow_pickle=False`` and object arrays by a restricted unpickler that resolves only
numpy's array and scalar reconstruction (:func:`posekernels.data.io.load_npz`), so a crafted
file that names any other global (``os.system``, ``numpy.savetxt`` ...) raises ValueError
naming the file and the global, and nothing in it runs.

Every loader validates what it reads and raises :class:`ValueError` naming the file and the
problem (unreadable file, missing key, wrong nesting, wrong shape or joint count, NaN frames,
empty sequences). Writers validate first and write atomically (temporary file in the same
directory, then :func:`os.replace`), so a failed write leaves no partial file.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ..skeletons import SKELETONS
from . import splits
from .io import atomic_savez, check_pose_array, load_npz, require_key

__all__ = [
    "PoseSequence", "load_positions_3d", "save_positions_3d", "load_positions_2d",
    "save_positions_2d", "load_h36m_3d", "load_h36m_2d", "load_humaneva_3d", "load_humaneva_2d",
    "load_3dhp", "h36m_metadata", "pair_sequences",
]

_H36M17 = SKELETONS["h36m17"]


@dataclass
class PoseSequence:
    """One sequence seen by one camera, ready for lifting.

    ``positions_3d`` (frames, joints, 3) is in metres, in the camera frame (x right, y down,
    z forward) when it comes from a camera-aware loader; ``positions_2d`` (frames, joints, 2) is
    in pixels of an image ``image_size = (width, height)``. ``valid`` marks usable frames where the
    dataset says so (MPI-INF-3DHP test set), else None.
    """
    subject: str
    action: str
    camera: str | None
    positions_3d: np.ndarray | None
    positions_2d: np.ndarray | None
    image_size: tuple[int, int] | None
    fps: float | None = None
    valid: np.ndarray | None = None
    extra: dict = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str, str | None]:
        return (self.subject, self.action, self.camera)

    @property
    def num_frames(self) -> int:
        arr = self.positions_2d if self.positions_2d is not None else self.positions_3d
        return 0 if arr is None else int(arr.shape[0])

    def normalized_2d(self) -> np.ndarray:
        """``positions_2d`` mapped to [-1, 1] horizontally: ``x / w * 2 - [1, h / w]``."""
        from .cameras import normalize_screen_coordinates

        if self.positions_2d is None or self.image_size is None:
            raise ValueError(f"sequence {self.key}: no 2D positions or image size")
        w, h = self.image_size
        return normalize_screen_coordinates(self.positions_2d, w, h)


# --------------------------------------------------------------------------------------------
# VideoPose3D 3D / 2D files
# --------------------------------------------------------------------------------------------

def _iter_nested(data: Any, path: str, key: str) -> Iterable[tuple[str, str, Any]]:
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: {key} must be a dict of subjects, got {type(data).__name__}")
    if len(data) == 0:
        raise ValueError(f"{path}: {key} is empty (no subjects)")
    for subject, actions in data.items():
        if not isinstance(actions, Mapping):
            raise ValueError(f"{path}: {key}[{subject!r}] must be a dict of actions, "
                             f"got {type(actions).__name__}")
        if len(actions) == 0:
            raise ValueError(f"{path}: {key}[{subject!r}] has no actions")
        for action, value in actions.items():
            yield str(subject), str(action), value


def _validate_3d(data: Any, path: str, num_joints: int | Sequence[int] | None,
                 key: str = "positions_3d") -> dict[str, dict[str, np.ndarray]]:
    out: dict[str, dict[str, np.ndarray]] = {}
    joints = None
    for subject, action, value in _iter_nested(data, path, key):
        where = f"{path}: {key}[{subject!r}][{action!r}]"
        arr = check_pose_array(value, where, dims=3)
        if joints is None:
            joints = arr.shape[1]
            allowed = ([num_joints] if isinstance(num_joints, int) else
                       list(num_joints) if num_joints is not None else None)
            if allowed is not None and joints not in allowed:
                want = " or ".join(str(a) for a in allowed)
                raise ValueError(f"{where}: expected {want} joints, got {joints}")
        elif arr.shape[1] != joints:
            raise ValueError(f"{where}: has {arr.shape[1]} joints but other sequences have "
                             f"{joints}")
        out.setdefault(subject, {})[action] = arr
    return out


def load_positions_3d(path: str | os.PathLike, *,
                      num_joints: int | Sequence[int] | None = None
                      ) -> dict[str, dict[str, np.ndarray]]:
    """Read ``positions_3d[subject][action]`` (frames, joints, 3) from a VideoPose3D 3D npz.

    Object arrays are read with a restricted unpickler (see the module docstring). Returns
    float32 arrays in the file's units (metres for the standard files). ``num_joints`` (an int
    or a list of allowed counts) checks the joint count. Raises ValueError on any problem.
    """
    path = os.fspath(path)
    entries = load_npz(path)
    return _validate_3d(require_key(entries, "positions_3d", path), path, num_joints)


def save_positions_3d(path: str | os.PathLike,
                      positions_3d: Mapping[str, Mapping[str, Any]]) -> None:
    """Write ``positions_3d[subject][action]`` (frames, joints, 3, metres) as a 3D npz (float32).

    Validated first (same rules as the loader); written atomically.
    """
    path = os.fspath(path)
    data = _validate_3d(positions_3d, path, None)
    atomic_savez(path, positions_3d=np.array(data, dtype=object))


def _camera_list(value: Any, where: str) -> list[Any]:
    if isinstance(value, np.ndarray) and value.dtype != object and value.ndim == 4:
        return list(value)  # stacked (cameras, frames, joints, 2)
    if isinstance(value, np.ndarray) and value.dtype == object:
        return list(value.ravel())
    if isinstance(value, (list, tuple)):
        return list(value)
    raise ValueError(f"{where}: expected a list with one (frames, joints, 2) array per camera, "
                     f"got {type(value).__name__}")


def _validate_metadata(metadata: Any, path: str, num_joints: int | None) -> dict:
    if not isinstance(metadata, Mapping):
        raise ValueError(f"{path}: metadata must be a dict, got {type(metadata).__name__}")
    for k in ("layout_name", "num_joints", "keypoints_symmetry"):
        if k not in metadata:
            raise ValueError(f"{path}: metadata lacks {k!r}")
    meta = dict(metadata)
    try:
        nj = int(meta["num_joints"])
    except (TypeError, ValueError):
        raise ValueError(f"{path}: metadata num_joints is not an integer") from None
    if num_joints is not None and nj != num_joints:
        raise ValueError(f"{path}: metadata says {nj} joints but the arrays have {num_joints}")
    sym = meta["keypoints_symmetry"]
    try:
        left, right = (list(int(i) for i in side) for side in sym)
    except (TypeError, ValueError):
        raise ValueError(f"{path}: metadata keypoints_symmetry must be [left, right] lists "
                         "of joint indices") from None
    if len(left) != len(right) or any(not 0 <= i < nj for i in left + right):
        raise ValueError(f"{path}: metadata keypoints_symmetry is inconsistent with {nj} joints")
    meta["num_joints"] = nj
    meta["keypoints_symmetry"] = [left, right]
    meta["layout_name"] = str(meta["layout_name"])
    return meta


def _validate_2d(data: Any, path: str, num_joints: int | None
                 ) -> dict[str, dict[str, list[np.ndarray]]]:
    out: dict[str, dict[str, list[np.ndarray]]] = {}
    joints = num_joints
    for subject, action, value in _iter_nested(data, path, "positions_2d"):
        where = f"{path}: positions_2d[{subject!r}][{action!r}]"
        cams = _camera_list(value, where)
        if not cams:
            raise ValueError(f"{where}: no cameras")
        arrs = []
        for i, cam in enumerate(cams):
            arr = check_pose_array(cam, f"{where}[{i}]", dims=2, num_joints=joints)
            joints = arr.shape[1]
            arrs.append(arr)
        out.setdefault(subject, {})[action] = arrs
    return out


def load_positions_2d(path: str | os.PathLike, *, num_joints: int | None = None
                      ) -> tuple[dict[str, dict[str, list[np.ndarray]]], dict]:
    """Read ``(positions_2d, metadata)`` from a VideoPose3D 2D npz.

    ``positions_2d[subject][action]`` is a list of (frames, joints, 2) float32 pixel arrays, one
    per camera. Object arrays are read with a restricted unpickler (see the module docstring).
    """
    path = os.fspath(path)
    entries = load_npz(path)
    data = _validate_2d(require_key(entries, "positions_2d", path), path, num_joints)
    joints = next(iter(next(iter(data.values())).values()))[0].shape[1]
    meta = _validate_metadata(require_key(entries, "metadata", path), path, joints)
    return data, meta


def h36m_metadata() -> dict:
    """The ``metadata`` entry of a Human3.6M-layout (17 joints) 2D file."""
    return {"layout_name": "h36m", "num_joints": 17,
            "keypoints_symmetry": [list(_H36M17.left), list(_H36M17.right)]}


def save_positions_2d(path: str | os.PathLike,
                      positions_2d: Mapping[str, Mapping[str, Sequence[Any]]],
                      metadata: Mapping[str, Any] | None = None) -> None:
    """Write a VideoPose3D 2D npz (float32 pixel coordinates, one array per camera).

    ``metadata`` defaults to :func:`h36m_metadata` (valid only for 17-joint data). Validated
    first; written atomically.
    """
    path = os.fspath(path)
    data = _validate_2d(positions_2d, path, None)
    joints = next(iter(next(iter(data.values())).values()))[0].shape[1]
    meta = _validate_metadata(h36m_metadata() if metadata is None else metadata, path, joints)
    atomic_savez(path, positions_2d=np.array(data, dtype=object),
                 metadata=np.array(meta, dtype=object))


# --------------------------------------------------------------------------------------------
# Dataset-specific wrappers
# --------------------------------------------------------------------------------------------

def load_h36m_3d(path: str | os.PathLike, *, num_joints: int = 17
                 ) -> dict[str, dict[str, np.ndarray]]:
    """Read ``data_3d_h36m.npz`` (world coordinates, metres).

    The file ships the 32 Human3.6M mocap joints; with ``num_joints=17`` (default) they are
    reduced to the 17-joint layout by keeping :data:`splits.H36M_32_TO_17` (the VideoPose3D
    selection). 17-joint files pass through. ``num_joints=32`` returns the raw joints.
    """
    if num_joints not in (17, 32):
        raise ValueError(f"num_joints must be 17 or 32, got {num_joints}")
    allowed = (32, 17) if num_joints == 17 else (32,)
    data = load_positions_3d(path, num_joints=allowed)
    if num_joints == 17:
        idx = np.asarray(splits.H36M_32_TO_17)
        for actions in data.values():
            for action, arr in actions.items():
                if arr.shape[1] == 32:
                    actions[action] = np.ascontiguousarray(arr[:, idx])
    return data


def load_h36m_2d(path: str | os.PathLike) -> tuple[dict[str, dict[str, list[np.ndarray]]], dict]:
    """Read a Human3.6M 2D file (``data_2d_h36m_<keypoints>.npz``, 17 joints, 4 cameras)."""
    return load_positions_2d(path, num_joints=17)


def load_humaneva_3d(path: str | os.PathLike) -> dict[str, dict[str, np.ndarray]]:
    """Read ``data_3d_humaneva15.npz`` (15 joints, world coordinates in metres).

    Subjects are named ``"Train/S1"``, ``"Validate/S1"``, ...; actions ``"Walk 1 chunk0"`` etc.
    """
    return load_positions_3d(path, num_joints=15)


def load_humaneva_2d(path: str | os.PathLike
                     ) -> tuple[dict[str, dict[str, list[np.ndarray]]], dict]:
    """Read a HumanEva-I 2D file (``data_2d_humaneva15_<keypoints>.npz``, 15 joints, 3 cameras)."""
    return load_positions_2d(path, num_joints=15)


def pair_sequences(positions_3d: Mapping[str, Mapping[str, np.ndarray]],
                   positions_2d: Mapping[str, Mapping[str, Sequence[np.ndarray]]],
                   cameras: Mapping[str, Sequence[Any]], *,
                   subjects: Iterable[str] | None = None, actions: Iterable[str] | None = None,
                   fps: float | None = None) -> list[PoseSequence]:
    """Pair world 3D sequences with per-camera 2D sequences (the VideoPose3D pipeline).

    ``cameras[subject]`` lists :class:`posekernels.data.Camera` objects in the order of the 2D
    file's camera lists (see :func:`posekernels.data.load_cameras_json`). Each 3D sequence is
    moved into every camera's frame (``positions_3d`` of the result, metres); 2D sequences longer
    than the 3D one are trimmed to its length (detections can run a few frames longer), shorter
    ones are an error. ``subjects`` restricts the subjects; ``actions`` keeps keys whose
    :func:`splits.canonical_action` or full name is listed.
    """
    want_subj = None if subjects is None else set(subjects)
    want_act = None if actions is None else set(actions)
    out: list[PoseSequence] = []
    for subject in sorted(positions_3d):
        if want_subj is not None and subject not in want_subj:
            continue
        if subject not in positions_2d:
            raise ValueError(f"subject {subject!r} has 3D data but no 2D data")
        if subject not in cameras:
            raise ValueError(f"subject {subject!r} has no cameras")
        cams = list(cameras[subject])
        for action in sorted(positions_3d[subject]):
            if want_act is not None and not ({action, splits.canonical_action(action)} & want_act):
                continue
            p3 = positions_3d[subject][action]
            views = positions_2d[subject].get(action)
            if views is None:
                raise ValueError(f"{subject}/{action}: no 2D data")
            if len(views) != len(cams):
                raise ValueError(f"{subject}/{action}: {len(views)} 2D views but "
                                 f"{len(cams)} cameras")
            for cam, p2 in zip(cams, views):
                if p2.shape[0] < p3.shape[0]:
                    raise ValueError(f"{subject}/{action}/{cam.name}: 2D has {p2.shape[0]} "
                                     f"frames, 3D has {p3.shape[0]}")
                if p2.shape[1] != p3.shape[1]:
                    raise ValueError(f"{subject}/{action}/{cam.name}: 2D has {p2.shape[1]} "
                                     f"joints, 3D has {p3.shape[1]}")
                c3 = cam.world_to_camera(np.asarray(p3, dtype=np.float64))
                out.append(PoseSequence(subject, action, cam.name, c3,
                                        np.asarray(p2[:p3.shape[0]], dtype=np.float64),
                                        (cam.width, cam.height), fps))
    return out


# --------------------------------------------------------------------------------------------
# MPI-INF-3DHP (P-STMO npz)
# --------------------------------------------------------------------------------------------

def _3dhp_pair(entry: Any, where: str, scale: float) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(entry, Mapping):
        raise ValueError(f"{where}: expected a dict with data_2d and data_3d, "
                         f"got {type(entry).__name__}")
    for k in ("data_2d", "data_3d"):
        if k not in entry:
            raise ValueError(f"{where}: missing key {k!r}")
    p2 = check_pose_array(entry["data_2d"], f"{where}['data_2d']", dims=2, num_joints=17)
    p3 = check_pose_array(entry["data_3d"], f"{where}['data_3d']", dims=3, num_joints=17)
    if p2.shape[0] != p3.shape[0]:
        raise ValueError(f"{where}: data_2d has {p2.shape[0]} frames but data_3d has "
                         f"{p3.shape[0]}")
    return p2, p3 * np.float32(scale)


def load_3dhp(path: str | os.PathLike, *, units: str = "mm") -> list[PoseSequence]:
    """Read a P-STMO MPI-INF-3DHP npz (train or test; the structure tells which).

    Returns one :class:`PoseSequence` per (sequence, camera): training sequences as
    ``subject="S1", action="Seq1", camera="0"`` with the file's fps; test sequences as
    ``subject="TS1", action="TS1", camera=None`` with ``valid`` (bool per frame) and their fps
    (25 for TS1-TS4, 50 for TS5-TS6). ``positions_3d`` is converted from ``units`` ("mm", the
    files' unit, or "m") to metres; it stays in camera coordinates and is not made
    root-relative (the root is joint 14). Object arrays are read with a restricted unpickler
    (see the module docstring).
    """
    path = os.fspath(path)
    if units not in ("mm", "m"):
        raise ValueError(f"units must be 'mm' or 'm', got {units!r}")
    scale = 1e-3 if units == "mm" else 1.0
    data = require_key(load_npz(path), "data", path)
    if not isinstance(data, Mapping) or not data:
        raise ValueError(f"{path}: 'data' must be a non-empty dict of sequences")
    out: list[PoseSequence] = []
    for seq, entry in data.items():
        seq = str(seq)
        where = f"{path}: data[{seq!r}]"
        if isinstance(entry, (list, tuple)):  # training layout: [cameras, fps]
            if len(entry) < 1 or not isinstance(entry[0], Mapping) or not entry[0]:
                raise ValueError(f"{where}: expected [dict of cameras, fps]")
            parts = seq.split(" ")
            if len(parts) != 2:
                raise ValueError(f"{where}: training keys look like 'S1 Seq1'")
            subject, action = parts
            fps = None
            if len(entry) > 1:
                try:
                    fps = float(entry[1])
                except (TypeError, ValueError):
                    raise ValueError(f"{where}: fps {entry[1]!r} is not a number") from None
            for cam, cam_entry in entry[0].items():
                p2, p3 = _3dhp_pair(cam_entry, f"{where}[0][{cam!r}]", scale)
                out.append(PoseSequence(subject, action, str(cam), p3, p2,
                                        splits.MPI3DHP_TRAIN_IMAGE_SIZE, fps))
        elif isinstance(entry, Mapping):  # test layout
            p2, p3 = _3dhp_pair(entry, where, scale)
            if "valid" not in entry:
                raise ValueError(f"{where}: missing key 'valid'")
            valid = np.asarray(entry["valid"]).reshape(-1)
            if valid.shape[0] != p2.shape[0]:
                raise ValueError(f"{where}: 'valid' has {valid.shape[0]} entries for "
                                 f"{p2.shape[0]} frames")
            size = splits.MPI3DHP_TEST_IMAGE_SIZE.get(seq, splits.MPI3DHP_TRAIN_IMAGE_SIZE)
            out.append(PoseSequence(seq, seq, None, p3, p2, size,
                                    splits.MPI3DHP_TEST_FPS.get(seq), valid.astype(bool)))
        else:
            raise ValueError(f"{where}: unexpected entry of type {type(entry).__name__}")
    return out
