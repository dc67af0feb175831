"""File helpers shared by the data modules: atomic npz writes and input validation."""
from __future__ import annotations

import os
import tempfile
from typing import Any, BinaryIO, Callable

import numpy as np


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Write ``path`` atomically: ``write(f)`` fills a temporary file in the same directory,
    which then replaces ``path`` with :func:`os.replace`. On any error the temporary file is
    removed, so no partial output is ever left behind."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ValueError(f"{path}: output directory {directory!r} does not exist")
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".",
                               suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def atomic_savez(path: str | os.PathLike, **arrays: Any) -> None:
    """Write a compressed npz to ``path`` atomically (see :func:`atomic_write`).

    Unlike :func:`numpy.savez`, the name is used exactly as given (no ``.npz`` appended).
    """
    atomic_write(path, lambda f: np.savez_compressed(f, **arrays))


def load_npz_pickled(path: str | os.PathLike) -> dict[str, Any]:
    """Open an npz written by VideoPose3D-style tools and return its entries.

    These files store Python dicts as 0-d object arrays, so they are opened with
    ``allow_pickle=True``: unpickling can run arbitrary code, so only call this on files you
    trust (the loaders in this package only open the paths the user passes them). Files that
    are not zip archives (a bare pickle renamed .npz, a .npy) are refused. 0-d object
    arrays are unwrapped with ``.item()``; other arrays are returned as they are.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such file")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"PK\x03\x04":  # npz files are zip archives; refuse bare pickles and .npy
        raise ValueError(f"{path}: not a readable npz file (not a zip archive)")
    try:
        with np.load(path, allow_pickle=True) as npz:
            out = {}
            for key in npz.files:
                value = npz[key]
                if isinstance(value, np.ndarray) and value.dtype == object and value.ndim == 0:
                    value = value.item()
                out[key] = value
    except ValueError as exc:
        raise ValueError(f"{path}: not a readable npz file ({exc})") from exc
    except Exception as exc:  # zipfile.BadZipFile, OSError, pickle errors, EOFError ...
        raise ValueError(f"{path}: not a readable npz file ({type(exc).__name__}: {exc})") from exc
    return out


def require_key(entries: dict[str, Any], key: str, path: str) -> Any:
    if key not in entries:
        found = ", ".join(sorted(entries)) or "nothing"
        raise ValueError(f"{path}: missing key {key!r} (found: {found})")
    return entries[key]


def check_pose_array(value: Any, where: str, *, dims: int, num_joints: int | None = None,
                     allow_empty: bool = False) -> np.ndarray:
    """Validate one (F, J, dims) pose array: numeric, finite, non-empty; returns float32."""
    try:
        arr = np.asarray(value)
        if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
            raise TypeError
        arr = arr.astype(np.float32, copy=False)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: not a numeric array") from None
    if arr.ndim != 3 or arr.shape[-1] != dims:
        raise ValueError(f"{where}: expected shape (frames, joints, {dims}), got {arr.shape}")
    if arr.shape[0] == 0 and not allow_empty:
        raise ValueError(f"{where}: empty sequence (0 frames)")
    if arr.shape[1] == 0:
        raise ValueError(f"{where}: 0 joints")
    if num_joints is not None and arr.shape[1] != num_joints:
        raise ValueError(f"{where}: expected {num_joints} joints, got {arr.shape[1]}")
    finite = np.isfinite(arr).reshape(arr.shape[0], -1).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        shown = ", ".join(str(i) for i in bad[:10]) + (" ..." if bad.size > 10 else "")
        raise ValueError(f"{where}: {bad.size} frame(s) contain NaN or infinite values "
                         f"(frames {shown})")
    return arr


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write a UTF-8 text file atomically (see :func:`atomic_write`)."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))
