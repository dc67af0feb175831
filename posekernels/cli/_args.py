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
