"""DistributedDataParallel: two CPU processes on gloo train the same model (torchrun-style
environment), end with identical parameters on both ranks, and only rank 0 writes files."""
from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from _training_data import synthetic_positions

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed missing")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, root: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    from posekernels.training import config_from_dict, train

    cfg = config_from_dict(dict(
        model={"arch": "glagcn", "receptive_field": 3, "channels": 8}, val_subjects=["S2"],
        epochs=2, stage1_epochs=1, batch_size=64, out_dir=os.path.join(root, "run"),
        progress=False, threads=1, device="cpu", seed=3))
    res = train(cfg, positions_3d=synthetic_positions(frames=200), log=lambda *a: None)
    assert res["world_size"] == world and res["rank"] == rank
    torch.save({"state": res["model"].state_dict(),
                "losses": [h["loss"] for h in res["history"]]},
               os.path.join(root, f"rank{rank}.pt"))


def test_two_gloo_processes_keep_identical_parameters(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for k, v in r0["state"].items():
        if k.endswith(("running_mean", "running_var", "num_batches_tracked")):
            continue  # BatchNorm statistics are per rank (each sees its own half of a batch)
        torch.testing.assert_close(v, r1["state"][k], rtol=0, atol=0, msg=k)
    # the logged loss is the mean over ranks
    assert r0["losses"] == r1["losses"]
    # training moved the weights away from the (shared) initialisation
    torch.manual_seed(3)
    from posekernels.training import build_model

    init = build_model({"arch": "glagcn", "receptive_field": 3, "channels": 8}).state_dict()
    assert not torch.equal(init["head.W_joint"], r0["state"]["head.W_joint"])
    # rank 0 wrote the outputs
    assert sorted(os.listdir(tmp_path / "run")) == ["history.json", "last.pt", "model.pt"]
