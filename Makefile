# posekernels: `make test` and `make demo` set everything up themselves.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
# The CPU build of torch keeps CI small; a machine that already has torch (a CUDA build, say) keeps it.
TORCH_SPEC ?= torch==2.13.0
SOURCES := setup.py pyproject.toml $(wildcard csrc/cpu/*.cpp csrc/cpu/*.h csrc/cuda/*.cu csrc/cuda/*.cuh python_api/*.cpp python_api/*.h python_api/cuda/*.cpp)
STAMP := build/.posekernels-installed
# The stamp only means something while this Python imports posekernels from this checkout with
# its compiled extension (a new interpreter, virtualenv or machine, or an editable install of
# another checkout, leaves a stale stamp behind): otherwise drop it, so the install runs again.
# Checked from outside the checkout: inside it, the source folder itself would import.
INSTALLED := $(shell cd / && $(PYTHON) -c "import os, posekernels as p; from posekernels import _ext; here = os.path.realpath('$(CURDIR)/posekernels'); assert os.path.realpath(os.path.dirname(p.__file__)) == here and os.path.dirname(os.path.realpath(_ext._C.__file__)) == here; print('yes')" 2>/dev/null)
ifneq ($(INSTALLED),yes)
$(shell rm -f $(STAMP))
endif

.PHONY: install test test-fast demo bench gpu-check cuda-build-check clean

$(STAMP): $(SOURCES)
	$(PYTHON) -c "import torch" 2>/dev/null || $(PIP) install "$(TORCH_SPEC)"
	$(PIP) install setuptools wheel ninja pybind11
	$(PIP) install --no-build-isolation -e ".[test,triton]"
	$(PYTHON) -c "import posekernels, json; i = posekernels.build_info(); print(json.dumps(i)); assert i['extension'], i['extension_error']"
	@mkdir -p build && touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PYTHON) -m pytest tests -q

test-fast: $(STAMP)
	$(PYTHON) -m pytest tests -q -m "not slow"

demo: $(STAMP)
	$(PYTHON) -m posekernels demo

bench: $(STAMP)
	$(PYTHON) -m pytest benchmarks --benchmark-enable --benchmark-only --benchmark-columns=median,iqr,ops --benchmark-sort=name

gpu-check:
	bash benchmarks/gpu_check.sh

# No GPU needed: builds the CUDA sources against the GPU machine's torch (2.11.0, CUDA 13) in a
# virtualenv cached outside the repository and compiles the Triton kernels for sm_90 under its
# Triton and this Python's. Run it whenever csrc/cuda, python_api/cuda or the Triton kernels change.
cuda-build-check:
	PYTHON="$(PYTHON)" bash benchmarks/cuda_build_check.sh

clean:
	rm -rf build posekernels/_C*.so *.egg-info .pytest_cache
