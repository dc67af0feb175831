"""Argument types shared by the commands."""
from __future__ import annotations

import argparse
import json


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


MAX_JSON_BYTES = 1 << 16


def read_json_object(text: str, where: str):
    """The JSON value of an inline object (``text`` starting with ``{`` or ``[``) or of the small
    UTF-8 file ``text`` names (at most 64 KiB); ValueError naming ``where`` on any problem."""
    if text.lstrip().startswith(("{", "[")):  # inline JSON, else a file
        source = text
    else:
        try:
            with open(text, "rb") as f:
                raw = f.read(MAX_JSON_BYTES + 1)
        except OSError as exc:
            raise ValueError(f"{where}: cannot read {text!r} ({exc.strerror or exc})") from None
        where = f"{where} {text}"
        if len(raw) > MAX_JSON_BYTES:
            raise ValueError(f"{where}: larger than {MAX_JSON_BYTES:,} bytes; expected a small "
                             "JSON object")
        try:
            source = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"{where}: not UTF-8 text; expected a JSON object") from None
    try:
        return json.loads(source), where
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}: not valid JSON ({exc})") from None
