"""Installation: a plain `pip install .` (PEP 517 build isolation, which cannot see the installed
torch) stops at once with a message naming `pip install --no-build-isolation -e .`, instead of
downloading another torch and compiling against it.

The fast tests run setup.py the way an isolated build would see it (no site-packages: no torch;
or a different torch first on the path) on a copy of the few files it reads. The slow test runs
the real thing: `pip install .` from a fresh virtual environment (it needs the package index for
setuptools and wheel, and is skipped when that cannot be reached)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMMAND = "pip install --no-build-isolation -e ."


def _source_copy(tmp_path: Path) -> Path:
    """The files setup.py and pyproject.toml need, copied (so no build output lands in the tree)."""
    src = tmp_path / "src"
    (src / "posekernels").mkdir(parents=True)
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copy(ROOT / "posekernels" / "_version.py", src / "posekernels" / "_version.py")
    return src


def _clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONNOUSERSITE", "PYTHONHOME")}
    env.update(extra)
    return env


def test_pyproject_does_not_make_pip_download_torch():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    names = [re.split(r"[\s\[<>=!~;]", r, maxsplit=1)[0].lower() for r in requires]
    assert "torch" not in names, requires


def test_setup_without_torch_stops_at_once_with_the_command(tmp_path):
    """No torch importable (python -S: what pip's isolated build environment looks like) while
    torch is installed for this interpreter: exit 1 within seconds, naming the command."""
    src = _source_copy(tmp_path)
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-S", "setup.py", "--version"], cwd=src,
                          capture_output=True, text=True, timeout=120, env=_clean_env())
    assert time.monotonic() - start < 60
    assert proc.returncode != 0
    assert COMMAND in proc.stderr and "isolated" in proc.stderr and "make install" in proc.stderr
    assert not (src / "build").exists() and not list(src.glob("*.egg-info"))


def test_setup_with_another_torch_stops(tmp_path):
    """A build environment that brings its own torch (another version than the one installed for
    this interpreter) is refused: the extension would not load in the target environment."""
    src = _source_copy(tmp_path)
    fake = tmp_path / "fake" / "torch"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('__version__ = "0.0.1+other"\n')
    proc = subprocess.run([sys.executable, "-S", "setup.py", "--version"], cwd=src,
                          capture_output=True, text=True, timeout=120,
                          env=_clean_env(PYTHONPATH=str(fake.parent)))
    assert proc.returncode != 0
    assert "this build sees torch 0.0.1+other" in proc.stderr and COMMAND in proc.stderr
    assert "POSEKERNELS_ALLOW_TORCH_MISMATCH=1" in proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("system_site_packages", [True, False])
def test_plain_pip_install_stops_with_the_command(tmp_path, system_site_packages):
    """The real `pip install .` from a fresh virtual environment: with the system's torch visible
    (--system-site-packages) or without any torch, it stops within a minute, before compiling
    anything, with the command to type."""
    import venv

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(system_site_packages=system_site_packages, with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    src = _source_copy(tmp_path)
    start = time.monotonic()
    proc = subprocess.run([str(python), "-m", "pip", "install", "--no-cache-dir",
                           "--disable-pip-version-check", str(src)],
                          capture_output=True, text=True, timeout=600, env=_clean_env())
    elapsed = time.monotonic() - start
    out = proc.stdout + proc.stderr
    if "Installing build dependencies" in out and "posekernels:" not in out and (
            "Could not find a version" in out or "NewConnectionError" in out
            or "No matching distribution" in out):
        pytest.skip("the package index (setuptools, wheel) is not reachable")
    assert proc.returncode != 0, out[-3000:]
    assert COMMAND in out, out[-3000:]
    expected = "isolated environment" if system_site_packages else "torch is not installed"
    assert expected in out, out[-3000:]
    assert elapsed < 120, f"took {elapsed:.0f} s"
    assert not (src / "build").exists()
