#!/usr/bin/env bash
# Build check for the GPU machine's software stack, on a machine without a GPU (`make
# cuda-build-check`). Run it whenever csrc/cuda or python_api/cuda (or the Triton kernels) change.
#
#   1. a virtualenv OUTSIDE the repository, cached between runs, with the GPU machine's torch
#      (torch==2.11.0, which brings the NVIDIA CUDA 13 wheels and triton 3.6.0) and Python 3.12;
#   2. a copy of the working tree's sources (tracked and untracked-but-not-ignored files) in a
#      build folder next to it; the build folder's build/ (ninja objects) is kept between runs;
#   3. `POSEKERNELS_CUDA=1 pip install --no-build-isolation .` of that copy into the virtualenv
#      (non-editable: nothing is written into the repository), against the CUDA toolkit that
#      the `nvcc` on the PATH belongs to, with the wheels' nvidia/cuXX/{include,lib} added;
#   4. build_info() must report the compiled backends cpu and cuda;
#   5. tests/test_triton_backend.py::test_kernels_compile_for_sm90 under the virtualenv's Triton
#      (the GPU machine's) and under this machine's Python's Triton (PYTHON, default python3):
#      every kernel compiled for sm_90 in bf16, fp32 and fp64.
#
# Settings (environment): POSEKERNELS_CUDA_CHECK_CACHE (default ~/.cache/posekernels-cuda-check),
# CHECK_TORCH (default torch==2.11.0), CHECK_PYTHON (an interpreter for the virtualenv; default:
# Python 3.12 from the PATH or pyenv, else python3), CUDA_HOME (default: the toolkit of the real
# nvcc behind the `nvcc` on the PATH, found with `nvcc -dryrun`), MAX_JOBS (parallel compiles),
# PYTHON (the second interpreter of step 5; SKIP_SYSTEM_TRITON=1 skips that run).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"

CACHE="${POSEKERNELS_CUDA_CHECK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/posekernels-cuda-check}"
CHECK_TORCH="${CHECK_TORCH:-torch==2.11.0}"
PYTHON="${PYTHON:-python3}"
VENV="$CACHE/venv"
SRC="$CACHE/src"
VPY="$VENV/bin/python"
PACKAGES=("$CHECK_TORCH" setuptools wheel ninja pybind11 numpy pytest)
T0=$(date +%s)

say() { echo "[cuda-build-check $(( $(date +%s) - T0 ))s] $*"; }
die() { echo "cuda-build-check: $*" >&2; exit 1; }

mkdir -p "$CACHE"
CACHE="$(cd "$CACHE" && pwd)"
case "$CACHE/" in "$ROOT"/*) die "the cache $CACHE must lie outside the repository";; esac
command -v git >/dev/null || die "git is needed to list the sources to copy"

# ---- 1. the virtualenv ------------------------------------------------------------------------
find_python() {
  if [ -n "${CHECK_PYTHON:-}" ]; then echo "$CHECK_PYTHON"; return; fi
  local c
  local pyenv_root
  pyenv_root="$(pyenv root 2>/dev/null || true)"
  for c in python3.12 ${pyenv_root:+"$pyenv_root"/versions/3.12*/bin/python3.12}; do
    if "$c" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then
      echo "$c"; return
    fi
  done
  echo "cuda-build-check: no Python 3.12 found (the GPU machine's); using python3" >&2
  echo python3
}

STAMP="$VENV/.posekernels-packages"
WANT="${PACKAGES[*]}"
if [ ! -x "$VPY" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
  if [ ! -x "$VPY" ]; then
    BASE_PY="$(find_python)"
    say "creating $VENV with $("$BASE_PY" -c 'import sys; print(sys.version.split()[0])')"
    "$BASE_PY" -m venv "$VENV"
  fi
  say "installing ${PACKAGES[*]} (a multi-GB download the first time)"
  "$VPY" -m pip install --disable-pip-version-check -q "${PACKAGES[@]}"
  echo "$WANT" > "$STAMP"
fi
"$VPY" -c 'import sys, torch, triton; print("venv: Python", sys.version.split()[0], "torch",
torch.__version__, "CUDA", torch.version.cuda, "triton", triton.__version__)'
TORCH_CUDA="$("$VPY" -c 'import torch; print(torch.version.cuda or "")')"
[ -n "$TORCH_CUDA" ] || die "$CHECK_TORCH in $VENV has no CUDA"

# ---- CUDA toolkit and the NVIDIA wheels' headers and libraries ---------------------------------
if [ -z "${CUDA_HOME:-}" ]; then
  command -v nvcc >/dev/null || die "nvcc not on the PATH and CUDA_HOME not set"
  # `nvcc` may be a wrapper script; the real driver reports its own folder as TOP.
  probe="$(mktemp -d)"
  echo '__global__ void k() {}' > "$probe/k.cu"
  top="$(nvcc -dryrun -c "$probe/k.cu" -o "$probe/k.o" 2>&1 | sed -n 's/^#\$ TOP=//p' | head -1)"
  rm -rf "$probe"
  [ -n "$top" ] || die "cannot find the CUDA toolkit of $(command -v nvcc); set CUDA_HOME"
  CUDA_HOME="$(cd "$top" && pwd)"
fi
[ -f "$CUDA_HOME/include/cuda_runtime.h" ] ||
  die "CUDA_HOME=$CUDA_HOME has no include/cuda_runtime.h"
[ -x "$CUDA_HOME/bin/nvcc" ] || die "CUDA_HOME=$CUDA_HOME has no bin/nvcc"
NVCC_VERSION="$("$CUDA_HOME/bin/nvcc" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p')"
[ "${NVCC_VERSION%%.*}" = "${TORCH_CUDA%%.*}" ] ||
  die "nvcc $NVCC_VERSION ($CUDA_HOME) does not match torch's CUDA $TORCH_CUDA"
NV="$("$VPY" -c "import os, sysconfig
print(os.path.join(sysconfig.get_paths()['purelib'], 'nvidia', 'cu${TORCH_CUDA%%.*}'))")"
[ -d "$NV/include" ] && [ -d "$NV/lib" ] || die "no $NV/include and $NV/lib in the virtualenv"
say "CUDA_HOME=$CUDA_HOME (nvcc $NVCC_VERSION), NVIDIA wheels: $NV"

# ---- 2. copy of the sources --------------------------------------------------------------------
mkdir -p "$SRC"
find "$SRC" -mindepth 1 -maxdepth 1 ! -name build -exec rm -rf {} +
git -C "$ROOT" ls-files -z -c -o --exclude-standard |
  tar -C "$ROOT" --null --ignore-failed-read -T - -cf - 2>/dev/null | tar -C "$SRC" -xf -
[ -f "$SRC/setup.py" ] || die "copying the sources to $SRC failed"
say "sources copied to $SRC"

# ---- 3. the build ------------------------------------------------------------------------------
B0=$(date +%s)
(cd "$SRC" && env CUDA_HOME="$CUDA_HOME" POSEKERNELS_CUDA=1 \
  CPATH="$NV/include${CPATH:+:$CPATH}" LIBRARY_PATH="$NV/lib${LIBRARY_PATH:+:$LIBRARY_PATH}" \
  MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
  "$VPY" -m pip install --disable-pip-version-check -q --no-build-isolation --no-deps .)
say "built and installed in $(( $(date +%s) - B0 ))s"

# ---- 4. build_info -----------------------------------------------------------------------------
(cd "$CACHE" && "$VPY" - <<'EOF'
import json
import posekernels
info = posekernels.build_info()
print(posekernels.__file__)
print(json.dumps(info))
assert info["extension"], info["extension_error"]
assert {"cpu", "cuda"} <= set(info["compiled_backends"]), info["compiled_backends"]
EOF
)
say "build_info: compiled backends include cpu and cuda"

# ---- 5. Triton kernels compiled for sm_90 under both Tritons -----------------------------------
aot() {  # aot LABEL PYTHON DIR
  local log
  log="$(mktemp)"
  local version
  version="$("$2" -c 'import triton; print("triton", triton.__version__)')" ||
    die "$1 cannot import triton"
  say "sm_90 compile check under $1: $version"
  if ! (cd "$3" && POSEKERNELS_REQUIRE_AOT=1 "$2" -m pytest -q -p no:cacheprovider -o addopts=-ra \
        tests/test_triton_backend.py::test_kernels_compile_for_sm90) > "$log" 2>&1 ||
     ! grep -q "1 passed" "$log"; then
    cat "$log"; rm -f "$log"; die "Triton sm_90 compile check failed under $1"
  fi
  tail -1 "$log"; rm -f "$log"
}
aot "the virtualenv" "$VPY" "$SRC"
if [ "${SKIP_SYSTEM_TRITON:-0}" != "1" ]; then
  aot "$PYTHON" "$PYTHON" "$ROOT"
fi
say "all passed"
