"""``posekernels info``: print build information as JSON."""
from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser("info", help="show version, torch version and compiled backends")
    p.set_defaults(func=run)


def run(args) -> int:
    import posekernels
    from posekernels import ops

    info = posekernels.build_info()
    info["available_backends"] = {"cpu": ops.available_backends("cpu")}
    print(json.dumps(info, indent=2))
    return 0
