"""Threads of the live commands (``stream``, ``demo``): ``--threads``, and one thread when they
start on a machine whose cores are already busy."""
from __future__ import annotations

import argparse
import os

import torch

from ._args import int_in


def busy_cpu_note(threads: int | None = None) -> str | None:
    """A diagnosis when the cores are already busy and torch runs several threads (``threads``,
    default ``torch.get_num_threads()``), else None; :func:`steady_threads` acts on it.

    torch's CPU kernels synchronise their threads at the end of every parallel region, and the
    OpenMP runtime makes waiting threads spin: on cores that other processes keep busy (a 2D
    detector on the same CPU) a spinning thread holds a core while the thread it waits for is
    descheduled, and each frame takes many times longer (measured on 2 busy cores: 132 ms per
    frame for the shipped T = 81 lifter with two threads, 5.7 ms with one, 5.6 ms with two and
    ``OMP_WAIT_POLICY=PASSIVE``; 3.8 ms with two on idle cores). "Busy" is a one-minute load
    average at least the number of cores this process may run on.
    """
    threads = torch.get_num_threads() if threads is None else int(threads)
    if threads <= 1 or os.environ.get("OMP_WAIT_POLICY", "").strip().upper() == "PASSIVE":
        return None
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # not available on this platform
        return None
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    if load < cores:
        return None
    return (f"the CPU is busy (load average {load:.1f} on {cores} cores) and torch runs "
            f"{threads} threads: waiting threads then spin on cores that other work needs and "
            "each frame can take many times longer")


def steady_threads(requested: int | None, report, device="cpu") -> None:
    """Thread setting of the live commands (``stream``, ``demo``): ``requested`` threads when
    given (``--threads``); on a CPU ``device``, a warning through ``report`` if the cores are
    busy, and without ``requested``, torch's default or one thread when the cores are already
    busy (reported)."""
    if requested:
        torch.set_num_threads(requested)
    if not str(device).startswith("cpu"):
        return
    note = busy_cpu_note()
    if note is None:
        return
    if requested:
        report(f"{note}; --threads 1, or OMP_WAIT_POLICY=PASSIVE in the environment, keeps the "
               "latency steady")
    else:
        torch.set_num_threads(1)
        report(f"{note}; running on one thread (--threads N chooses; OMP_WAIT_POLICY=PASSIVE in "
               "the environment keeps several threads steady)")


MAX_THREADS = 4096


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    """``--threads N`` as :func:`steady_threads` reads it."""
    parser.add_argument("--threads", type=int_in(1, MAX_THREADS), default=None,
                        help="torch intra-op threads (default: torch's choice, or 1 when the CPU "
                             "is already busy at start; 1 is steadier on a machine shared with "
                             "other work)")
