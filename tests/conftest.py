"""Test configuration shared by the whole suite.

Without a CUDA device the Triton backend is exercised through its interpreter, which has to be
switched on before triton is first imported.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

from _op_harness import grid  # noqa: E402  (after TRITON_INTERPRET: it imports posekernels)


@pytest.fixture(params=grid())
def combo(request):
    """Every kernel backend x device x dtype (tests/_op_harness.py); a test that parametrizes
    `combo` itself picks a part of the grid."""
    return request.param


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
