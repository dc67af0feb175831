"""Build script for posekernels.

The C++ CPU kernels (csrc/cpu) and their torch bindings (python_api) are always compiled into
``posekernels._C``. CUDA sources (csrc/cuda/*.cu plus python_api/cuda/*.cpp) are added only when the
installed torch was built with CUDA and nvcc is found; ``POSEKERNELS_CUDA=0|1`` forces the choice.
``TORCH_CUDA_ARCH_LIST`` overrides the default CUDA targets (sm_90 plus PTX for newer GPUs).

The extension is compiled against the torch installed in the environment it is installed into, so
it must be built without PEP 517 build isolation: ``pip install --no-build-isolation -e .`` (or
``make install``). A plain ``pip install .`` builds in an isolated environment without the
installed torch (torch is deliberately not a build requirement in pyproject.toml, so pip does not
download one); :func:`require_installed_torch` then stops at once and says what to type.
"""
import glob
import os
import re
import subprocess
import sys

INSTALL_COMMAND = "pip install --no-build-isolation -e ."


def _target_torch():
    """Version of the torch that this interpreter sees outside any build environment (``-E``
    ignores the PYTHONPATH / PYTHONNOUSERSITE that pip's isolated build sets), or None when it has
    none; read from the package metadata, without importing torch."""
    probe = ("import importlib.metadata as m\n"
             "try:\n    print(m.version('torch'))\n"
             "except m.PackageNotFoundError:\n    pass\n")
    try:
        out = subprocess.run([sys.executable, "-E", "-c", probe], capture_output=True, text=True,
                             timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def require_installed_torch():
    """Import the torch to build against, or stop with a message naming the install command.

    Stops when torch cannot be imported (pip's isolated build, or no torch installed) and when
    the importable torch differs in version from the one installed for this interpreter (a build
    environment that brought its own torch: the extension would not load in the target; set
    ``POSEKERNELS_ALLOW_TORCH_MISMATCH=1`` to build anyway)."""
    how = (f"Install posekernels with\n\n    {INSTALL_COMMAND}\n\n(or `make install`, which "
           "also installs torch, setuptools, wheel, ninja and pybind11 first). posekernels "
           "compiles its C++ extension against the torch installed in your environment, so it must "
           "be built without build isolation.")
    try:
        import torch
    except ImportError:
        installed = _target_torch()
        if installed is None:
            raise SystemExit(f"posekernels: torch is not installed for {sys.executable}. Install "
                             f"torch (pip install torch), ninja and pybind11 first. {how}")
        raise SystemExit(f"posekernels: this build cannot import torch, although torch "
                         f"{installed} is installed for {sys.executable}: the build runs in an "
                         f"isolated environment (PEP 517 build isolation, which a plain "
                         f"`pip install .` uses). {how}")
    if os.environ.get("POSEKERNELS_ALLOW_TORCH_MISMATCH") == "1":
        return torch
    installed = _target_torch()
    # compare release versions: a wheel's metadata may lack the local label ("2.11.0" for
    # torch.__version__ "2.11.0+cu130")
    if installed is not None and installed.split("+")[0] != torch.__version__.split("+")[0]:
        raise SystemExit(f"posekernels: this build sees torch {torch.__version__} "
                         f"({os.path.dirname(torch.__file__)}), but torch {installed} is installed "
                         f"for {sys.executable}; an extension built against one does not load in "
                         f"the other. {how} (If this is intended, for instance a wheel built for "
                         "another environment, set POSEKERNELS_ALLOW_TORCH_MISMATCH=1.)")
    return torch


require_installed_torch()

from setuptools import setup  # noqa: E402  (after the torch check: it must run first)

HERE = os.path.dirname(os.path.abspath(__file__))


def read_version():
    with open(os.path.join(HERE, "posekernels", "_version.py")) as f:
        return re.search(r'__version__ = "([^"]+)"', f.read()).group(1)


def rel_glob(pattern):
    return sorted(os.path.relpath(p, HERE) for p in glob.glob(os.path.join(HERE, pattern)))


def want_cuda():
    import torch
    from torch.utils.cpp_extension import CUDA_HOME

    forced = os.environ.get("POSEKERNELS_CUDA")
    if forced is not None and forced not in ("0", "1"):
        raise SystemExit(f"POSEKERNELS_CUDA must be 0 or 1, got {forced!r}")
    if forced == "0":
        return False
    available = torch.version.cuda is not None and CUDA_HOME is not None
    if forced == "1" and not available:
        raise SystemExit("POSEKERNELS_CUDA=1 but torch has no CUDA support or nvcc/CUDA_HOME was not found")
    return available


def extensions():
    from torch.utils.cpp_extension import CppExtension, CUDAExtension

    sources = rel_glob("csrc/cpu/*.cpp") + rel_glob("python_api/*.cpp")
    cxx = ["-O3", "-std=c++20", "-fopenmp", "-fvisibility=hidden"]
    macros = [("POSEKERNELS_VERSION", f'"{read_version()}"')]
    include_dirs = [os.path.join(HERE, "csrc")]
    if want_cuda():
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "9.0+PTX")
        sources += rel_glob("csrc/cuda/*.cu") + rel_glob("python_api/cuda/*.cpp")
        macros.append(("POSEKERNELS_WITH_CUDA", "1"))
        macros.append(("POSEKERNELS_CUDA_ARCH_LIST", f'"{os.environ["TORCH_CUDA_ARCH_LIST"]}"'))
        nvcc = ["-O3", "-std=c++17", "--expt-relaxed-constexpr", "-lineinfo"]
        return [
            CUDAExtension(
                "posekernels._C",
                sources,
                include_dirs=include_dirs,
                define_macros=macros,
                extra_compile_args={"cxx": cxx, "nvcc": nvcc},
                extra_link_args=["-fopenmp"],
            )
        ]
    return [
        CppExtension(
            "posekernels._C",
            sources,
            include_dirs=include_dirs,
            define_macros=macros,
            extra_compile_args={"cxx": cxx},
            extra_link_args=["-fopenmp"],
        )
    ]


def cmdclass():
    from torch.utils.cpp_extension import BuildExtension

    return {"build_ext": BuildExtension.with_options(use_ninja=True)}


setup(version=read_version(), ext_modules=extensions(), cmdclass=cmdclass())
