"""The benchmark scripts' own logic: the interleaved training-step ratio script
(benchmarks/train_step_ratio.py: its arithmetic and its command line, one short round; timings
themselves belong to the benchmarks) and train_cmu.py's training-clip subsets."""
from __future__ import annotations

import json
import random
import statistics

import numpy as np
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


def test_clip_subset_keeps_validation_and_scales_epochs(tmp_path):
    from benchmarks import train_cmu
    from posekernels.data import load_positions_3d, save_positions_3d

    rng = np.random.default_rng()
    pos = {s: {f"{s}_{c:02d}": rng.standard_normal((int(rng.integers(30, 300)), 17, 3))
               .astype(np.float32) for c in range(int(rng.integers(3, 12)))}
           for s in ("01", "02", "05", "09")}
    src = tmp_path / "all.npz"
    save_positions_3d(src, pos)
    frac = float(rng.uniform(0.2, 0.7))
    recipe = {"epochs": 4, "clip_fraction": frac, "val_subjects": ["09"]}
    path, epochs = train_cmu.clip_subset(str(src), str(tmp_path / "run"), recipe, seed=3)
    assert "clip_fraction" not in recipe
    kept = load_positions_3d(path)
    assert sorted(kept) == ["01", "02", "05", "09"]
    assert sorted(kept["09"]) == sorted(pos["09"])  # validation whole
    full = sub = 0
    for s in ("01", "02", "05"):
        assert len(kept[s]) == max(1, round(frac * len(pos[s])))
        for c, a in kept[s].items():
            np.testing.assert_array_equal(a, pos[s][c])
        full += sum(len(a) for a in pos[s].values())
        sub += sum(len(a) for a in kept[s].values())
    assert epochs == max(1, round(4 * full / sub))
    # the same seed keeps the same clips
    again, _ = train_cmu.clip_subset(str(src), str(tmp_path / "again"),
                                     {"epochs": 4, "clip_fraction": frac}, seed=3)
    assert {s: sorted(v) for s, v in load_positions_3d(again).items()} == \
        {s: sorted(v) for s, v in kept.items()}
    with pytest.raises(SystemExit, match="clip_fraction"):
        train_cmu.clip_subset(str(src), str(tmp_path / "bad"), {"epochs": 4, "clip_fraction": 0},
                              seed=0)
