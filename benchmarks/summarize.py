"""Turn one pytest-benchmark JSON file into markdown tables of medians and speed ratios.

    python benchmarks/summarize.py bench.json [--baseline released]

Ratios within a group compare implementations measured in the same run.
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict


def summarize(path: str, baselines=("released", "reference", "compiled", "blas")) -> str:
    with open(path) as f:
        data = json.load(f)
    groups = defaultdict(dict)
    for b in data["benchmarks"]:
        groups[b["group"]][b["extra_info"]["impl"]] = b
    machine = data.get("machine_info", {})
    lines = [f"Machine: {machine.get('cpu', {}).get('brand_raw', machine.get('processor', '?'))}, "
             f"{machine.get('cpu', {}).get('count', '?')} logical CPUs; "
             f"run {data.get('datetime', '?')}", ""]
    for group in sorted(groups):
        impls = groups[group]
        present = [b for b in baselines if b in impls]
        header = "| impl | median (ms) | " + " | ".join(f"speed-up vs {b}" for b in present) + " |"
        lines += [f"**{group}**", "", header, "|" + "---|" * (2 + len(present))]
        for name, b in sorted(impls.items(), key=lambda kv: kv[1]["stats"]["median"]):
            med = b["stats"]["median"]
            extra = ""
            if "flop" in b["extra_info"]:
                extra = f" ({b['extra_info']['flop'] / med / 1e9:.1f} GFLOP/s)"
            elif "bytes" in b["extra_info"]:
                extra = f" ({b['extra_info']['bytes'] / med / 1e9:.1f} GB/s)"
            ratios = " | ".join(f"{impls[p]['stats']['median'] / med:.2f}x" for p in present)
            lines.append(f"| {name} | {med * 1e3:.3f}{extra} | {ratios} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json_file")
    args = parser.parse_args()
    print(summarize(args.json_file))


if __name__ == "__main__":
    main()
