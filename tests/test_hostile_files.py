"""Hostile and careless input files (issue 12): crafted pickles must never run, broken files
must fail with a ValueError (or a CLI error) naming the file, and killed atomic writes must not
leave their temporaries behind for good.

Every gadget below is first shown to be live (a plain ``pickle.loads`` / ``np.load(...,
allow_pickle=True)`` of it does create its marker file), so the "no marker" checks can fail.
"""
from __future__ import annotations

import argparse
import io
import os
import pickle
import re
import shlex
import signal
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest
import torch

from posekernels.cli import main as cli_main
from posekernels.data import formats as F
from posekernels.data import io as data_io
from posekernels.models import load_official_checkpoint, official_key_shapes
from posekernels.models.checkpoint import official_checkpoint_globals, read_official_state_dict
from posekernels.checkpoints import (build_model, load_checkpoint, load_model, read_checkpoint,
                                     save_checkpoint)

posix_only = pytest.mark.skipif(os.name != "posix", reason="gadgets and pids are POSIX")


@pytest.fixture(autouse=True)
def _keep_torch_rng():
    """Building models here draws from torch's global generator; restore it so the tests that
    run after these see the same random numbers as without them."""
    state = torch.get_rng_state()
    yield
    torch.set_rng_state(state)


# ----------------------------------------------------------------------------- gadgets
class SystemGadget:
    """Unpickles into ``os.system("touch MARKER")`` (pickled as posix.system)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(self.marker)}",))


class RunstringGadget:
    """Unpickles into ``numpy.testing._private.utils.runstring(code, {})``, an exec."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        from numpy.testing._private.utils import runstring
        return (runstring, (f"open({self.marker!r}, 'w').close()", {}))


class SavetxtGadget:
    """Unpickles into ``numpy.savetxt(MARKER, ...)`` (it could as well write a .pth file that
    Python runs at its next start)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (np.savetxt, (self.marker, np.zeros(1)))


GADGETS = {"system": SystemGadget, "runstring": RunstringGadget, "savetxt": SavetxtGadget}


@pytest.fixture(params=sorted(GADGETS))
def gadget(request, tmp_path):
    """(gadget object, marker path); the marker must never appear."""
    marker = tmp_path / f"MARKER_{request.param}"
    return GADGETS[request.param](marker), marker


def _no_marker(marker):
    assert not marker.exists(), f"the gadget ran: {marker} was created"


@posix_only
@pytest.mark.parametrize("name", sorted(GADGETS))
def test_gadgets_are_live(tmp_path, name):
    """Guard against vacuous tests: unrestricted loading does run each gadget."""
    marker = tmp_path / "live_marker"
    pickle.loads(pickle.dumps({"x": GADGETS[name](marker)}, protocol=2))
    assert marker.exists()
    marker.unlink()
    path = tmp_path / "live.npz"
    np.savez(path, positions_3d=np.array({"S1": {"A": GADGETS[name](marker)}}, dtype=object))
    with np.load(path, allow_pickle=True) as npz:
        npz["positions_3d"]
    assert marker.exists()


# ----------------------------------------------------------------------------- file builders
def _official_state_dict(seed=0):
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in official_key_shapes(3, 8, 17).items():
        sd[f"module.{key}"] = (torch.tensor(0) if key.endswith("num_batches_tracked")
                               else torch.rand(shape, generator=g) + 0.5)
    return sd


def _tiny_posekernels_checkpoint(path):
    model = build_model({"arch": "glagcn", "receptive_field": 3, "channels": 8})
    save_checkpoint(path, model)
    return path


def _hostile_checkpoints(tmp_path, gadget_obj):
    """Checkpoint-like files that hold the gadget: torch.save dicts (authors' layout and
    posekernels layout) and bare pickles (protocol 2 and the default)."""
    sd = _official_state_dict()
    files = {}
    files["torch_official.pt"] = {"model_pos": sd, "epoch": 3, "x": gadget_obj}
    files["torch_posekernels.pt"] = {"format": "posekernels-checkpoint", "version": 1,
                                     "model_config": {"arch": "glagcn", "receptive_field": 3,
                                                      "channels": 8},
                                     "model": {}, "config": gadget_obj}
    out = []
    for name, obj in files.items():
        torch.save(obj, tmp_path / name)
        out.append(tmp_path / name)
    for proto in (2, pickle.DEFAULT_PROTOCOL):
        path = tmp_path / f"raw_p{proto}.pt"
        path.write_bytes(pickle.dumps({"model_pos": sd, "x": gadget_obj}, protocol=proto))
        out.append(path)
    return out


def _hostile_npzs(tmp_path, gadget_obj):
    """npz files whose object arrays hold the gadget, in each layout the loaders read."""
    seq = np.zeros((4, 17, 3), np.float32)
    meta = {"layout_name": "h36m", "num_joints": 17, "keypoints_symmetry": [[1], [4]]}
    layouts = {
        "data_3d_evil.npz": {"positions_3d": {"S1": {"A": gadget_obj}}},
        "data_3d_evil_top.npz": {"positions_3d": gadget_obj},
        "data_2d_evil.npz": {"positions_2d": {"S1": {"A": [seq[..., :2], gadget_obj]}},
                             "metadata": meta},
        "data_2d_evil_meta.npz": {"positions_2d": {"S1": {"A": [seq[..., :2]]}},
                                  "metadata": {**meta, "layout_name": gadget_obj}},
        "data_evil_3dhp.npz": {"data": {"TS1": {"data_2d": seq[..., :2], "data_3d": seq,
                                                "valid": gadget_obj}}},
        "data_evil_list.npz": {"positions_3d": np.array([seq, gadget_obj], dtype=object)},
    }
    out = []
    for name, entries in layouts.items():
        arrays = {k: (v if isinstance(v, np.ndarray) else np.array(v, dtype=object))
                  for k, v in entries.items()}
        np.savez_compressed(tmp_path / name, **arrays)
        out.append(tmp_path / name)
    return out


NPZ_READERS = {
    "load_npz": data_io.load_npz,
    "load_positions_3d": F.load_positions_3d,
    "load_positions_2d": F.load_positions_2d,
    "load_h36m_3d": F.load_h36m_3d,
    "load_h36m_2d": F.load_h36m_2d,
    "load_humaneva_3d": F.load_humaneva_3d,
    "load_humaneva_2d": F.load_humaneva_2d,
    "load_3dhp": F.load_3dhp,
}


def _call_reader(name, fn, path):
    return fn(path)


def _assert_refused(exc_info, path, marker):
    _no_marker(marker)
    message = str(exc_info.value)
    assert str(path) in message or os.path.basename(str(path)) in message, message


# ----------------------------------------------------------------------------- checkpoints
CHECKPOINT_LOADERS = {
    "load_official_checkpoint": load_official_checkpoint,
    "read_official_state_dict": read_official_state_dict,
    "read_checkpoint": read_checkpoint,
    "load_checkpoint": load_checkpoint,
    "load_model": load_model,
}


@posix_only
@pytest.mark.parametrize("loader", sorted(CHECKPOINT_LOADERS))
def test_checkpoint_loaders_refuse_gadgets(tmp_path, gadget, loader):
    obj, marker = gadget
    for path in _hostile_checkpoints(tmp_path, obj):
        with pytest.raises(ValueError) as info:
            CHECKPOINT_LOADERS[loader](str(path))
        _assert_refused(info, path, marker)


@posix_only
def test_official_loader_names_the_refused_global(tmp_path, gadget):
    obj, marker = gadget
    path = tmp_path / "epoch_80.bin"
    torch.save({"model_pos": _official_state_dict(), "x": obj}, path)
    expected = {SystemGadget: "posix.system", RunstringGadget: "runstring",
                SavetxtGadget: "numpy.savetxt"}[type(obj)]
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*weights-only load refuses.*"
                       + re.escape(expected)):
        load_official_checkpoint(path)
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*refused global.*"
                       + re.escape(expected)):
        read_checkpoint(path)
    _no_marker(marker)


def test_official_allow_list_is_exact():
    names = official_checkpoint_globals()
    assert len(names) == len(set(names))
    for name in names:
        assert not name.endswith(".") and "*" not in name
    for forbidden in ("numpy.testing._private.utils.runstring", "numpy.savetxt", "numpy.load",
                      "numpy.save", "numpy.fromfile", "numpy.ndarray.tofile", "posix.system",
                      "builtins.exec", "builtins.eval", "numpy.dtypes.ObjectDType"):
        assert forbidden not in names
    assert {"numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar", "numpy.dtype",
            "numpy.core.multiarray._reconstruct", "numpy.ndarray"} <= set(names)
    assert all(n.startswith(("numpy.core.multiarray.", "numpy._core.multiarray.",
                             "numpy.dtypes.", "numpy.random.")) or
               n in ("numpy.ndarray", "numpy.dtype", "argparse.Namespace") for n in names)


def test_authors_checkpoint_with_numpy_objects_loads(tmp_path):
    sd = _official_state_dict(1)
    ckpt = {"epoch": np.int64(3), "lr": np.float64(1e-3), "model_pos": sd,
            "optimizer": {"state": {0: {"step": torch.tensor(5.0),
                                        "exp_avg": torch.zeros(3)}},
                          "param_groups": [{"lr": np.float32(1e-3), "params": [0]}]},
            "random_state": np.random.RandomState(0),
            "legacy_state": np.random.RandomState(1).get_state(),
            "args": argparse.Namespace(stride=1), "curve": np.linspace(0, 1, 5),
            "flags": np.array([True, False]), "best": np.float16(2.5)}
    path = tmp_path / "epoch_3.bin"
    torch.save(ckpt, path)
    model = load_official_checkpoint(path)
    assert model.receptive_field == 3 and model.channels == 8 and not model.training
    assert torch.equal(model.data_bn.running_var, sd["module.data_bn.running_var"])


def _as_numpy1_checkpoint(src, dst):
    """Rewrite a torch.save file as numpy 1.x would have written it (numpy.core names)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename.endswith("/data.pkl"):
                assert b"numpy._core.multiarray" in data
                data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
            zout.writestr(info.filename, data)


def test_authors_checkpoint_with_numpy1_names_loads(tmp_path):
    sd = _official_state_dict(2)
    torch.save({"epoch": np.int64(80), "lr": np.float64(1e-5), "model_pos": sd,
                "random_state": np.random.RandomState(3), "mean": np.zeros(3)},
               tmp_path / "new.bin")
    _as_numpy1_checkpoint(tmp_path / "new.bin", tmp_path / "old.bin")
    assert "numpy.core.multiarray.scalar" in \
        torch.serialization.get_unsafe_globals_in_checkpoint(tmp_path / "old.bin")
    model = load_official_checkpoint(tmp_path / "old.bin")
    assert torch.equal(model.data_bn.weight, sd["module.data_bn.weight"])


def _broken_files(tmp_path, good: bytes):
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good[: len(good) // 2])
    tiny = tmp_path / "tiny.pt"
    tiny.write_bytes(good[:10])
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all\n" * 10)
    folder = tmp_path / "folder.pt"
    folder.mkdir()
    return [empty, truncated, tiny, junk, folder, tmp_path / "missing.pt"]


@pytest.mark.parametrize("loader", sorted(CHECKPOINT_LOADERS))
def test_checkpoint_loaders_broken_files(tmp_path, loader):
    good = _tiny_posekernels_checkpoint(tmp_path / "good.pt")
    for path in _broken_files(tmp_path, good.read_bytes()):
        with pytest.raises(ValueError) as info:
            CHECKPOINT_LOADERS[loader](str(path))
        assert str(path) in str(info.value), (path, str(info.value))
    folder_msg = str(pytest.raises(ValueError, CHECKPOINT_LOADERS[loader],
                                   str(tmp_path / "folder.pt")).value)
    assert "directory" in folder_msg


def test_official_loader_broken_files_say_what_was_expected(tmp_path):
    torch.save({"model_pos": _official_state_dict()}, tmp_path / "good.bin")
    for path in _broken_files(tmp_path, (tmp_path / "good.bin").read_bytes()):
        with pytest.raises(ValueError, match=re.escape(str(path)) + ".*GLA-GCN checkpoint"):
            load_official_checkpoint(path)
    torch.save([1, 2, 3], tmp_path / "list.bin")
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "list.bin"))
                       + ".*expected a checkpoint dict"):
        load_official_checkpoint(tmp_path / "list.bin")


# ----------------------------------------------------------------------------- npz files
@posix_only
@pytest.mark.parametrize("reader", sorted(NPZ_READERS))
def test_npz_readers_refuse_gadgets(tmp_path, gadget, reader):
    obj, marker = gadget
    for path in _hostile_npzs(tmp_path, obj):
        with pytest.raises(ValueError) as info:
            _call_reader(reader, NPZ_READERS[reader], path)
        _assert_refused(info, path, marker)
        assert "refused to load the global" in str(info.value)


@posix_only
def test_npz_refusal_names_file_and_global(tmp_path, gadget):
    obj, marker = gadget
    path = tmp_path / "data_3d_h36m.npz"
    np.savez_compressed(path, positions_3d=np.array({"S1": {"A": obj}}, dtype=object))
    expected = {SystemGadget: "posix.system",
                RunstringGadget: "numpy.testing._private.utils.runstring",
                SavetxtGadget: "numpy.savetxt"}[type(obj)]
    with pytest.raises(ValueError, match=re.escape(f"{path}: entry 'positions_3d': refused to "
                                                   f"load the global {expected}")):
        F.load_positions_3d(path)
    _no_marker(marker)


def test_npz_allow_list_is_exact():
    assert set(data_io.NPZ_ALLOWED_GLOBALS) == {
        "numpy.ndarray", "numpy.dtype",
        "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct",
        "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar"}


def test_npz_builtin_callables_are_refused(tmp_path):
    """Not only module functions: builtins (eval, getattr ...) are globals too."""
    class Eval:
        def __reduce__(self):
            return (eval, ("1 + 1",))

    path = tmp_path / "e.npz"
    np.savez(path, positions_3d=np.array({"S1": {"A": Eval()}}, dtype=object))
    with pytest.raises(ValueError, match="refused to load the global builtins.eval"):
        F.load_positions_3d(path)


def test_videopose3d_files_still_load(tmp_path):
    """Real layouts with numpy scalars and strings in metadata, lists of camera arrays, and
    files written by numpy 1.x (protocol 3, numpy.core names)."""
    rng = np.random.default_rng(0)
    seq3 = rng.standard_normal((5, 17, 3)).astype(np.float32)
    seq2 = rng.standard_normal((5, 17, 2))
    p3 = tmp_path / "data_3d_h36m.npz"
    np.savez_compressed(p3, positions_3d={"S1": {"Walking": seq3, "Eating 2": seq3 * 2}})
    out = F.load_positions_3d(p3, num_joints=17)
    np.testing.assert_array_equal(out["S1"]["Eating 2"], seq3 * 2)
    p2 = tmp_path / "data_2d_h36m_cpn.npz"
    meta = {"layout_name": np.str_("h36m"), "num_joints": np.int64(17),
            "keypoints_symmetry": [np.array([4, 5, 6]), np.array([1, 2, 3])]}
    np.savez_compressed(p2, positions_2d={"S1": {"Walking": [seq2, seq2 + 1]}}, metadata=meta,
                        plain=np.arange(4))
    data, meta_out = F.load_positions_2d(p2)
    np.testing.assert_allclose(data["S1"]["Walking"][1], seq2 + 1, rtol=1e-6)
    assert meta_out["num_joints"] == 17 and meta_out["keypoints_symmetry"][0] == [4, 5, 6]
    assert data_io.load_npz(p2)["plain"].tolist() == [0, 1, 2, 3]
    # numpy 1.x: object arrays pickled with protocol 3 under numpy.core.multiarray
    arr = np.array({"S1": {"Walking": seq3}}, dtype=object)
    member = io.BytesIO()
    np.lib.format.write_array_header_1_0(member, np.lib.format.header_data_from_array_1_0(arr))
    payload = pickle.dumps(arr, protocol=3)
    payload = payload.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"numpy.core.multiarray" in payload
    member.write(payload)
    old = tmp_path / "data_3d_old.npz"
    with zipfile.ZipFile(old, "w") as z:
        z.writestr("positions_3d.npy", member.getvalue())
    np.testing.assert_array_equal(F.load_positions_3d(old)["S1"]["Walking"], seq3)


def test_npz_broken_files(tmp_path):
    np.savez_compressed(tmp_path / "good.npz",
                        positions_3d={"S1": {"A": np.zeros((3, 17, 3), np.float32)}})
    good = (tmp_path / "good.npz").read_bytes()
    cases = {"empty.npz": b"", "truncated.npz": good[: len(good) // 2], "tiny.npz": good[:6],
             "pickle.npz": pickle.dumps({"positions_3d": 1})}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "folder.npz").mkdir()
    for name in [*cases, "folder.npz", "missing.npz"]:
        path = tmp_path / name
        for reader, fn in NPZ_READERS.items():
            with pytest.raises(ValueError) as info:
                _call_reader(reader, fn, path)
            assert str(path) in str(info.value), (reader, name, str(info.value))
    with pytest.raises(ValueError, match="folder.npz: is a directory"):
        F.load_positions_3d(tmp_path / "folder.npz")


# ----------------------------------------------------------------------------- command line
def _npz_3d(path):
    rng = np.random.default_rng(1)
    np.savez_compressed(path, positions_3d={
        "S1": {"A": (rng.standard_normal((8, 17, 3)) * 0.2).astype(np.float32)}})
    return path


@posix_only
def test_cli_refuses_hostile_files(tmp_path, gadget, capsys):
    obj, marker = gadget
    evil_npz = _hostile_npzs(tmp_path, obj)[0]
    evil_pt = tmp_path / "evil.pt"
    torch.save({"format": "posekernels-checkpoint", "version": 1, "model": {},
                "model_config": {"arch": "glagcn"}, "x": obj}, evil_pt)
    good_ckpt = _tiny_posekernels_checkpoint(tmp_path / "good.pt")
    good_npz = _npz_3d(tmp_path / "data_3d_good.npz")
    frames = tmp_path / "frames.jsonl"
    frames.write_text("")
    runs = [
        (["evaluate", "--data-3d", str(evil_npz), "--checkpoint", str(good_ckpt)], evil_npz),
        (["evaluate", "--data-3d", str(good_npz), "--checkpoint", str(evil_pt)], evil_pt),
        (["stream", "--checkpoint", str(evil_pt), "--input", str(frames), "--format", "h36m17",
          "--width", "1000", "--height", "1000"], evil_pt),
        (["export", "--checkpoint", str(evil_pt), "--onnx", str(tmp_path / "m.onnx"),
          "--no-check"], evil_pt),
    ]
    for argv, bad in runs:
        capsys.readouterr()
        rc = cli_main(argv)
        err = capsys.readouterr().err
        assert rc != 0, argv
        assert str(bad) in err, (argv, err)
        _no_marker(marker)
    assert not (tmp_path / "m.onnx").exists()


@posix_only
def test_cli_subprocess_refuses_hostile_npz(tmp_path):
    marker = tmp_path / "MARKER_subprocess"
    evil = tmp_path / "evil.npz"
    np.savez(evil, positions_3d=np.array({"S1": {"A": SystemGadget(marker)}}, dtype=object))
    good_ckpt = _tiny_posekernels_checkpoint(tmp_path / "good.pt")
    proc = subprocess.run([sys.executable, "-m", "posekernels", "evaluate", "--data-3d",
                           str(evil), "--checkpoint", str(good_ckpt)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert str(evil) in proc.stderr and "posix.system" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    _no_marker(marker)


# ----------------------------------------------------------------------------- temporaries
def _temporaries(folder):
    return sorted(n for n in os.listdir(folder) if n.endswith(data_io.TEMP_SUFFIX))


@posix_only
def test_killed_write_leaves_recognisable_temporary_that_the_next_write_removes(tmp_path):
    target = tmp_path / "data_3d_big.npz"
    code = textwrap.dedent(f"""
        import os, signal
        from posekernels.data.io import atomic_write
        def write(f):
            f.write(b"x" * 100000)
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        atomic_write({str(target)!r}, write)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    left = _temporaries(tmp_path)
    assert len(left) == 1, os.listdir(tmp_path)
    assert re.fullmatch(r"\.data_3d_big\.npz\.\d+\.[A-Za-z0-9-]+\.[0-9a-f]+\.posekernels-tmp",
                        left[0]), left
    assert (tmp_path / left[0]).stat().st_size == 100000
    assert not target.exists()
    F.save_positions_3d(target, {"S1": {"A": np.zeros((3, 17, 3), np.float32)}})
    assert _temporaries(tmp_path) == []
    assert F.load_positions_3d(target)["S1"]["A"].shape == (3, 17, 3)


@posix_only
def test_stale_temporary_cleanup_spares_live_and_foreign_files(tmp_path):
    target = tmp_path / "model.pt"
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    dead = data_io.temporary_name(target, pid=done.pid)
    live_parent = data_io.temporary_name(target, pid=os.getppid())
    ours = data_io.temporary_name(target)
    other_target = data_io.temporary_name(tmp_path / "other.pt", pid=done.pid)
    other_host = os.path.join(
        str(tmp_path),
        f".model.pt.{done.pid}.{data_io._host_tag()}x.0123abcd{data_io.TEMP_SUFFIX}")
    old_style = str(tmp_path / ".model.pt.abc123.tmp")
    for name in (dead, live_parent, ours, other_target, other_host, old_style):
        with open(name, "wb") as f:
            f.write(b"partial")
    _tiny_posekernels_checkpoint(target)  # atomic_torch_save -> atomic_write
    assert not os.path.exists(dead)
    for kept in (live_parent, ours, other_target, other_host, old_style):
        assert os.path.exists(kept), kept
    assert read_checkpoint(target)["model_config"]["arch"] == "glagcn"


def test_failed_write_removes_its_temporary(tmp_path):
    def fail(f):
        f.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        data_io.atomic_write(tmp_path / "out.bin", fail)
    assert os.listdir(tmp_path) == []
