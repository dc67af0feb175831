"""The CUDA kernels of csrc/cuda, run unmodified on the CPU emulator (tests/cuda_emulator), against
the float64 reference. This is how CI, which has no GPU, checks their indexing, tiling, barriers
and numerics; real-GPU tests are in tests/test_cuda_backend.py."""
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++ to build the emulator")]


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    out = tmp_path_factory.mktemp("emulator")
    proc = subprocess.run(["bash", str(HERE / "cuda_emulator" / "build.sh"), "fast"],
                          env={**os.environ, "EMU_BUILD": str(out)}, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out / "emu_fast"


def _check(emulator, *args):
    proc = subprocess.run([sys.executable, str(HERE / "cuda_emulator" / "check.py"), *args],
                          env={**os.environ, "EMU_EXE": str(emulator)}, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_random_shapes_all_dtypes(emulator):
    _check(emulator, "sweep", str(random.randrange(1, 10**6)), "6")


@pytest.mark.parametrize("name", ["model_bf16", "long_window_recompute", "small_smem_f64", "tiny", "jl"])
def test_edge_cases(emulator, name):
    _check(emulator, "edges", name)


def test_training_epilogues(emulator):
    """dropout and the BatchNorm epilogue (csrc/cuda/bn_act.cu) against the cpu backend's
    operators: the same masks, one split and several, float32 and float64."""
    pytest.importorskip("posekernels._C", reason="needs the compiled cpu backend")
    _check(emulator, "epilogues", str(random.randrange(1, 10**6)), "4")
