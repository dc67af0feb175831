"""The interleaved training-step ratio script (benchmarks/train_step_ratio.py): its arithmetic
and its command line (one short round; timings themselves belong to the benchmarks)."""
from __future__ import annotations

import json
import random
import statistics

import pytest

from benchmarks import train_step_ratio as tsr
from posekernels import ops


def test_quartiles_match_statistics():
    values = [random.uniform(0.5, 3.0) for _ in range(random.randint(5, 30))]
    q = tsr.quartiles(values)
    assert q[1] == pytest.approx(statistics.median(values))
    assert q[0] <= q[1] <= q[2]
    one = random.uniform(1, 2)
    assert tsr.quartiles([one]) == (one, one, one)


@pytest.mark.parametrize("argv", [["--shapes", "nope"], ["--rounds", "0"], ["--shapes", ","]])
def test_bad_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        tsr.main(argv)
    assert exc.value.code == 2
    assert "--" in capsys.readouterr().err


@pytest.mark.skipif("cpu" not in ops.available_backends("cpu"), reason="cpu backend not built")
def test_one_round_writes_json(tmp_path, capsys):
    out = tmp_path / "ratio.json"
    assert tsr.main(["--rounds", "1", "--warmup", "0", "--threads", "1",
                     "--shapes", "released_T27_b64", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    (r,) = data["results"]
    assert r["shape"] == "released_T27_b64" and r["precision"] == "float32"
    assert len(r["cpu_times_ms"]) == len(r["reference_times_ms"]) == 1
    assert r["ratio_of_medians"] == pytest.approx(r["reference_ms"] / r["cpu_ms"])
    assert "released_T27_b64" in capsys.readouterr().out
