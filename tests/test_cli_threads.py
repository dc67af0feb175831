"""The busy-CPU warning of the live commands (posekernels/cli/_threads.py)."""
import os

import pytest
import torch

from posekernels.cli import _threads, main


@pytest.fixture
def cores(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    return 4


def test_busy_cpu_with_threads_warns(cores, monkeypatch):
    load = cores + float(os.urandom(1)[0]) / 64
    monkeypatch.setattr(os, "getloadavg", lambda: (load, 0.0, 0.0))
    note = _threads.busy_cpu_note(2)
    assert note is not None
    assert f"{load:.1f} on {cores} cores" in note and "--threads 1" in note
    assert "OMP_WAIT_POLICY=PASSIVE" in note


@pytest.mark.parametrize("threads,load,policy", [(1, 9.0, None), (2, 1.0, None),
                                                 (2, 9.0, "passive"), (8, 3.99, None)])
def test_no_warning_when_steady(cores, monkeypatch, threads, load, policy):
    monkeypatch.setattr(os, "getloadavg", lambda: (load, 0.0, 0.0))
    if policy:
        monkeypatch.setenv("OMP_WAIT_POLICY", policy)
    assert _threads.busy_cpu_note(threads) is None


def test_no_load_average_no_warning(cores, monkeypatch):
    def unavailable():
        raise OSError("no load average")
    monkeypatch.setattr(os, "getloadavg", unavailable)
    assert _threads.busy_cpu_note(4) is None


def test_stream_reports_a_busy_cpu(cores, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(os, "getloadavg", lambda: (7.5, 0.0, 0.0))
    src = tmp_path / "in.jsonl"
    src.write_text('{"stream": 1, "end": true}\n')
    saved = torch.get_num_threads()
    try:
        code = main(["stream", "--input", str(src), "--output", str(tmp_path / "out.jsonl"),
                     "--format", "coco17", "--width", "640", "--height", "480",
                     "--threads", "2"])
    finally:
        torch.set_num_threads(saved)
    assert code == 0
    assert "the CPU is busy (load average 7.5 on 4 cores)" in capsys.readouterr().err
