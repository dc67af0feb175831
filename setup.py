"""Build script for posekernels.

The C++ CPU kernels (csrc/cpu) and their torch bindings (python_api) are always compiled into
``posekernels._C``. CUDA sources (csrc/cuda/*.cu plus python_api/cuda/*.cpp) are added only when the
installed torch was built with CUDA and nvcc is found; ``POSEKERNELS_CUDA=0|1`` forces the choice.
``TORCH_CUDA_ARCH_LIST`` overrides the default CUDA targets (sm_90 plus PTX for newer GPUs).
"""
import glob
import os
import re

from setuptools import setup

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
