"""Argument types shared by the commands."""
from __future__ import annotations

import argparse


def int_in(lo: int, hi: int):
    """An argparse type: an integer in [lo, hi], else a message naming the range."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer in [{lo}, {hi}], got {text!r}")
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"expected an integer in [{lo}, {hi}], got {value}")
        return value
    return parse


def add_weights_arg(p: argparse.ArgumentParser) -> None:
    """``--weights auto|average|last``: which weights of a training run's last.pt to load."""
    from posekernels.checkpoints import WEIGHTS

    p.add_argument("--weights", choices=WEIGHTS, default="auto",
                   help="a training run's last.pt written with ema_decay > 0 holds its last "
                        "weights and their moving average: auto (default) and average take "
                        "the average (what the trainer validates), last the last weights; "
                        "other checkpoints hold one set, which auto and last take")
