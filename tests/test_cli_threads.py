"""Threads of the live commands on busy cores (posekernels/cli/_threads.py)."""
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
    assert f"{load:.1f} on {cores} cores" in note and "2 threads" in note


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


def _stream(tmp_path, *flags):
    src = tmp_path / "in.jsonl"
    src.write_text('{"stream": 1, "end": true}\n')
    seen = {}
    real = torch.set_num_threads

    def spy(n):
        seen["threads"] = n
        real(n)
    saved = torch.get_num_threads()
    try:
        torch.set_num_threads = spy
        real(2)
        code = main(["stream", "--input", str(src), "--output", str(tmp_path / "out.jsonl"),
                     "--format", "coco17", "--width", "640", "--height", "480", *flags])
        seen["after"] = torch.get_num_threads()
    finally:
        torch.set_num_threads = real
        real(saved)
    return code, seen


def test_stream_on_busy_cores_runs_one_thread(cores, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(os, "getloadavg", lambda: (7.5, 0.0, 0.0))
    code, seen = _stream(tmp_path)
    err = capsys.readouterr().err
    assert code == 0 and seen == {"threads": 1, "after": 1}
    assert "the CPU is busy (load average 7.5 on 4 cores)" in err
    assert "running on one thread" in err


def test_stream_keeps_explicit_threads_and_warns(cores, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(os, "getloadavg", lambda: (7.5, 0.0, 0.0))
    code, seen = _stream(tmp_path, "--threads", "3")
    err = capsys.readouterr().err
    assert code == 0 and seen == {"threads": 3, "after": 3}
    assert "the CPU is busy" in err and "--threads 1" in err


def test_stream_on_idle_cores_keeps_torch_default(cores, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(os, "getloadavg", lambda: (0.5, 0.0, 0.0))
    code, seen = _stream(tmp_path)
    assert code == 0 and seen == {"after": 2}
    assert "busy" not in capsys.readouterr().err


@pytest.mark.parametrize("value", ["0", "-2", "two", "5000"])
def test_threads_argument_is_checked(value, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["stream", "--input", "-", "--format", "coco17", "--width", "1", "--height", "1",
              "--threads", value])
    assert "--threads" in capsys.readouterr().err
