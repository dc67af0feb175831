"""File input and output of posekernels: atomic writes, safe npz reading, pose-array checks.

Every file posekernels writes (npz datasets, checkpoints, camera and report JSON) goes through
these helpers, and every npz it reads:

* :func:`atomic_write`, :func:`atomic_write_text`, :func:`atomic_savez` -- write a temporary file
  beside the target, then :func:`os.replace` it: a failed or interrupted write never leaves a
  partial file. The temporary has a recognisable name (:func:`temporary_name`:
  ``.<name>.<pid>.<host>.<random>.posekernels-tmp``), and the ones of killed writers are removed
  by the next write of the same target (:func:`remove_stale_temporaries`).
* :func:`load_npz` -- the entries of an npz file without unpickling arbitrary objects: object
  arrays go through an unpickler that resolves only numpy's array and scalar reconstruction
  globals (:data:`NPZ_ALLOWED_GLOBALS`); anything else raises :class:`UnsafeNpzError` (a
  ValueError) naming the file.
* :func:`require_key`, :func:`check_pose_array` -- checks of loaded entries with errors that
  name the file and the entry.
"""
from __future__ import annotations

import dataclasses
import importlib
import os
import pickle
import re
import secrets
import socket
from typing import Any, BinaryIO, Callable, Mapping

import numpy as np
from numpy.lib import format as npformat

__all__ = ["TEMP_SUFFIX", "temporary_name", "remove_stale_temporaries", "atomic_write",
           "replace_from_mapping", "atomic_write_text", "atomic_savez", "NPZ_ALLOWED_GLOBALS",
           "UnsafeNpzError",
           "load_npz", "require_key", "check_pose_array"]


# ----------------------------------------------------------------------------- atomic writes
TEMP_SUFFIX = ".posekernels-tmp"


def _host_tag() -> str:
    """This machine's name reduced to ``[A-Za-z0-9-]`` (at most 32 characters)."""
    host = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname() or "")[:32]
    return host or "host"


def temporary_name(path: str | os.PathLike, pid: int | None = None) -> str:
    """The temporary file an atomic write of ``path`` fills before renaming it:
    ``.<name>.<pid>.<host>.<random>.posekernels-tmp`` beside ``path``, so a leftover of a killed
    write says what it was for and which process wrote it."""
    path = os.fspath(path)
    directory, base = os.path.split(os.path.abspath(path))
    pid = os.getpid() if pid is None else pid
    return os.path.join(directory,
                        f".{base}.{pid}.{_host_tag()}.{secrets.token_hex(4)}{TEMP_SUFFIX}")


def _pid_alive(pid: int) -> bool:
    if pid <= 0 or pid == os.getpid() or os.name != "posix":
        return True  # unknown, ours, or no safe liveness test (os.kill(pid, 0) kills on Windows)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: alive, owned by another user
        return True
    return True


def remove_stale_temporaries(path: str | os.PathLike) -> list[str]:
    """Delete the temporaries of earlier atomic writes of ``path`` whose writer was killed:
    files named by :func:`temporary_name` for the same target and this machine whose pid is
    no longer running. Returns the removed paths. Temporaries of live processes, of other
    machines (shared file systems) and of other targets are left alone."""
    path = os.fspath(path)
    directory, base = os.path.split(os.path.abspath(path))
    pattern = re.compile(r"\." + re.escape(base) + r"\.(\d+)\.([A-Za-z0-9-]+)\.[0-9a-f]{8}"
                         + re.escape(TEMP_SUFFIX) + r"\Z")
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    host = _host_tag()
    for name in names:
        match = pattern.match(name)
        if match is None or match.group(2) != host or _pid_alive(int(match.group(1))):
            continue
        stale = os.path.join(directory, name)
        try:
            if os.path.isfile(stale) and not os.path.islink(stale):
                os.unlink(stale)
                removed.append(stale)
        except OSError:
            pass
    return removed


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Write ``path`` atomically: ``write(f)`` fills a temporary file in the same directory
    (named by :func:`temporary_name`), which then replaces ``path`` with :func:`os.replace`.
    On any error the temporary file is removed, so no partial output is ever left behind; the
    temporaries of earlier writes of ``path`` that were killed (SIGKILL, power loss) are
    removed first (:func:`remove_stale_temporaries`)."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ValueError(f"{path}: output directory {directory!r} does not exist")
    remove_stale_temporaries(path)
    tmp = temporary_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)
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


# ----------------------------------------------------------------------------- reading npz files
def _numpy_multiarray():
    try:  # numpy >= 2
        return importlib.import_module("numpy._core.multiarray")
    except ImportError:  # pragma: no cover - numpy 1.x
        return importlib.import_module("numpy.core.multiarray")


def _npz_allowed_globals() -> dict[tuple[str, str], Any]:
    """Every global an object array of a VideoPose3D / P-STMO npz may name: numpy array and
    scalar reconstruction, under numpy 1.x and 2.x module names. Dicts, lists, tuples,
    strings and numbers are built by pickle opcodes and need no global."""
    multiarray = _numpy_multiarray()
    allowed: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray,
                                           ("numpy", "dtype"): np.dtype}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = multiarray._reconstruct
        allowed[(module, "scalar")] = multiarray.scalar
    return allowed


NPZ_ALLOWED_GLOBALS = tuple(f"{m}.{n}" for m, n in _npz_allowed_globals())


class UnsafeNpzError(ValueError):
    """An npz object array names a global outside :data:`NPZ_ALLOWED_GLOBALS`."""


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles the object arrays of an npz, resolving only :data:`NPZ_ALLOWED_GLOBALS`."""

    def __init__(self, file, where: str) -> None:
        super().__init__(file, encoding="ASCII", fix_imports=True)  # as numpy.load
        self._where = where
        self._allowed = _npz_allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        obj = self._allowed.get((module, name))
        if obj is None:
            raise UnsafeNpzError(
                f"{self._where}: refused to load the global {module}.{name}: an npz object "
                "array may only hold numpy arrays, numpy scalars, dicts, lists, tuples, strings "
                "and numbers")
        return obj

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafeNpzError(f"{self._where}: refused a persistent id in an object array")


def _read_npy_member(fp: BinaryIO, where: str) -> np.ndarray | None:
    """An object array ``.npy`` member, unpickled by :class:`_RestrictedUnpickler`; None for
    any other member (the caller reads those with ``numpy.load(allow_pickle=False)``)."""
    version = npformat.read_magic(fp)
    if version == (1, 0):
        shape, fortran, dtype = npformat.read_array_header_1_0(fp)
    elif version == (2, 0):
        shape, fortran, dtype = npformat.read_array_header_2_0(fp)
    else:  # version 3.0 (utf-8 field names): numpy reads it, refusing object arrays
        return None
    if not dtype.hasobject:
        return None  # the caller reads it with numpy
    value = _RestrictedUnpickler(fp, where).load()
    if not isinstance(value, np.ndarray) or value.shape != tuple(shape):
        raise ValueError(f"{where}: the object array holds a {type(value).__name__}, expected "
                         f"an array of shape {tuple(shape)}")
    return value


def load_npz(path: str | os.PathLike) -> dict[str, Any]:
    """Open an npz written by VideoPose3D-style tools and return its entries.

    These files store Python dicts as 0-d object arrays (pickles). Plain arrays are read with
    ``numpy.load(allow_pickle=False)``; object arrays are unpickled by a restricted unpickler
    that resolves only :data:`NPZ_ALLOWED_GLOBALS` (numpy array and scalar reconstruction):
    any other global (a function a crafted file wants called) raises ValueError naming the
    file and the global, before anything runs. Files that are not zip archives (a bare
    pickle renamed .npz, a .npy) are refused. 0-d object arrays are unwrapped with
    ``.item()``; other arrays are returned as they are.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ValueError(f"{path}: is a directory, expected an npz file")
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such file")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"PK\x03\x04":  # npz files are zip archives; refuse bare pickles and .npy
        raise ValueError(f"{path}: not a readable npz file (not a zip archive)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            out = {}
            for key in npz.files:
                member = key + ".npy" if key + ".npy" in npz.zip.namelist() else key
                value = None
                if member.endswith(".npy"):
                    with npz.zip.open(member) as fp:
                        value = _read_npy_member(fp, f"{path}: entry {key!r}")
                if value is None:
                    value = npz[key]  # not an object array: numpy reads it, no pickle
                if isinstance(value, np.ndarray) and value.dtype == object and value.ndim == 0:
                    value = value.item()
                out[key] = value
    except UnsafeNpzError:
        raise
    except ValueError as exc:
        raise ValueError(f"{path}: not a readable npz file ({exc})") from exc
    except Exception as exc:  # zipfile.BadZipFile, OSError, pickle errors, EOFError ...
        raise ValueError(f"{path}: not a readable npz file ({type(exc).__name__}: {exc})") from exc
    return out


def require_key(entries: dict[str, Any], key: str, path: str) -> Any:
    """``entries[key]``, or ValueError naming ``path``, the key and the keys that were found."""
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


def replace_from_mapping(base: Any, d: Any, where: str, what: str = "settings") -> Any:
    """The dataclass instance ``base`` with the fields named in mapping ``d`` changed (``base``
    itself when ``d`` is None or empty). A non-mapping, unknown keys and values the dataclass
    refuses raise ValueError naming ``where`` (and the key); ``what`` says what ``d`` should
    hold."""
    if d is None:
        return base
    if not isinstance(d, Mapping):
        raise ValueError(f"{where}: must be an object of {what}, got {type(d).__name__}")
    names = {f.name for f in dataclasses.fields(base)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; valid keys: {sorted(names)}")
    if not d:
        return base
    try:
        return dataclasses.replace(base, **dict(d))
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
