"""WindowDataset: on-device window gathering, replicate padding, causal windows, flips."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from posekernels.data import PoseSequence, WindowDataset, flip_pose

LEFT, RIGHT = [4, 5, 6, 11, 12, 13], [1, 2, 3, 14, 15, 16]


def make_sequences(rng, lengths=(1, 5, 12)):
    xs, ys = [], []
    for n in lengths:
        xs.append(rng.uniform(-1, 1, size=(n, 17, 2)))
        ys.append(rng.normal(size=(n, 17, 3)) * 0.3 + np.array([0.0, 0.0, 4.0]))
    return xs, ys


def reference_windows(xs, T, causal):
    """Python loop: for every frame, its window with edge (replicate) padding."""
    pad = T - 1 if causal else (T - 1) // 2
    out = []
    for x in xs:
        for t in range(len(x)):
            idx = [min(max(t + k - pad, 0), len(x) - 1) for k in range(T)]
            out.append(x[idx])
    return np.stack(out)


@pytest.mark.parametrize("T,causal", [(5, False), (27, False), (4, True), (1, False)])
def test_windows_match_reference(T, causal):
    rng = np.random.default_rng(T)
    xs, ys = make_sequences(rng)
    ds = WindowDataset(xs, ys, receptive_field=T, causal=causal, dtype=torch.float64)
    assert len(ds) == ds.num_frames == 18
    x, y = ds.batch(torch.arange(len(ds)))
    assert x.shape == (18, T, 17, 2) and y.shape == (18, 1, 17, 3)
    np.testing.assert_allclose(x.numpy(), reference_windows(xs, T, causal), atol=0)
    want_y = np.concatenate([y_ - y_[:, :1] for y_ in ys])[:, None]
    np.testing.assert_allclose(y.numpy(), want_y, atol=1e-12)
    assert (y[:, :, 0] == 0).all()
    # single item and negative/unsorted indices
    xi, yi = ds[7]
    np.testing.assert_array_equal(xi.numpy(), x[7].numpy())
    xb, _ = ds.batch([17, 0, 3])
    np.testing.assert_array_equal(xb.numpy(), x[[17, 0, 3]].numpy())
    with pytest.raises(IndexError):
        ds.batch([18])


def test_flip_augmentation_doubles_and_mirrors():
    rng = np.random.default_rng(30)
    xs, ys = make_sequences(rng, (6, 9))
    ds = WindowDataset(xs, ys, receptive_field=3, flip=True, dtype=torch.float64)
    m = ds.num_frames
    assert len(ds) == 2 * m == 30
    x, y = ds.batch(torch.arange(len(ds)))
    np.testing.assert_allclose(x[m:].numpy(), flip_pose(x[:m].numpy(), LEFT, RIGHT))
    np.testing.assert_allclose(y[m:].numpy(), flip_pose(y[:m].numpy(), LEFT, RIGHT))
    # by hand for one sample: x negated, LHip (4) <-> RHip (1)
    np.testing.assert_allclose(x[m + 2, :, 4, 0].numpy(), -x[2, :, 1, 0].numpy())
    np.testing.assert_allclose(x[m + 2, :, 4, 1].numpy(), x[2, :, 1, 1].numpy())
    np.testing.assert_allclose(x[m + 2, :, 0].numpy(), x[2, :, 0].numpy() * [-1, 1])
    # flipping twice is the identity; torch and numpy agree
    t = torch.tensor(xs[0])
    np.testing.assert_allclose(flip_pose(flip_pose(t)).numpy(), xs[0])
    np.testing.assert_allclose(flip_pose(t).numpy(), flip_pose(xs[0]))


def test_batches_cover_every_sample_once_and_are_reproducible():
    rng = np.random.default_rng(31)
    xs, ys = make_sequences(rng, (7, 11, 3))
    ds = WindowDataset(xs, ys, receptive_field=9, flip=True)
    seen = torch.cat([ids for _, _, ids in ds.batches(8, with_ids=True,
                                                      generator=torch.Generator().manual_seed(0))])
    assert sorted(seen.tolist()) == list(range(len(ds)))
    again = torch.cat([ids for _, _, ids in ds.batches(8, with_ids=True,
                                                       generator=torch.Generator().manual_seed(0))])
    assert torch.equal(seen, again)
    sizes = [x.shape[0] for x, _ in ds.batches(8, drop_last=True)]
    assert sizes == [8] * (len(ds) // 8)
    ordered = [x for x, _ in ds.batches(len(ds), shuffle=False)][0]
    x_all, _ = ds.batch(torch.arange(len(ds)))
    assert torch.equal(ordered, x_all)
    assert ds.sequence_of([0, 7, 18, 20, 21]).tolist() == [0, 1, 2, 2, 0]  # 21: flipped frame 0


def test_valid_masks_keys_and_from_sequences():
    rng = np.random.default_rng(32)
    seqs = []
    for i, n in enumerate((8, 5)):
        uv = rng.uniform(0, 1000, size=(n, 17, 2))
        p3 = rng.normal(size=(n, 17, 3)) * 0.3 + np.array([0, 0, 4.0])
        valid = np.ones(n, bool)
        if i == 0:
            valid[[0, 5]] = False
        seqs.append(PoseSequence("S1", f"A{i}", "vcam0", p3, uv, (1000, 1000),
                                 valid=valid if i == 0 else None))
    ds = WindowDataset.from_sequences(seqs, receptive_field=3, dtype=torch.float64)
    assert ds.keys == [("S1", "A0", "vcam0"), ("S1", "A1", "vcam0")]
    assert ds.num_frames == 6 + 5
    assert ds.frame_of(torch.arange(3)).tolist() == [1, 2, 3]
    x, y = ds.batch([0])
    # sample 0 is frame 1 of sequence 0; its window reads frame 0 although frame 0 is invalid.
    want = seqs[0].normalized_2d()[[0, 1, 2]]
    np.testing.assert_allclose(x[0].numpy(), want, atol=1e-12)
    np.testing.assert_allclose(y[0, 0].numpy(), seqs[0].positions_3d[1] - seqs[0].positions_3d[1, :1],
                               atol=1e-12)
    # inference without targets
    ds2 = WindowDataset([s.normalized_2d() for s in seqs], None, receptive_field=5)
    x2, y2 = ds2.batch([0, 1])
    assert y2 is None and x2.dtype == torch.float32 and x2.shape == (2, 5, 17, 2)


@pytest.mark.parametrize("balance", [0.0, 0.37, 1.0])
def test_sample_weights_weigh_sequences_by_their_valid_frames(balance):
    """Each sample weighs 1 / L ** balance (L: its sequence's valid frames), so a sequence
    weighs L ** (1 - balance): checked per sequence against a float64 count made here."""
    rng = np.random.default_rng()
    lengths = rng.integers(3, 40, size=5)
    xs, ys = make_sequences(rng, tuple(int(n) for n in lengths))
    valid = [rng.random(int(n)) < 0.7 for n in lengths]
    for m in valid:
        m[0] = True
    ds = WindowDataset(xs, ys, receptive_field=3, valid=valid, flip=True)
    w = ds.sample_weights(balance)
    assert w.dtype == torch.float64 and w.shape == (ds.num_frames,)
    seq = ds.sequence_of(torch.arange(ds.num_frames)).numpy()
    counts = np.array([m.sum() for m in valid], dtype=np.float64)
    for i, c in enumerate(counts):
        np.testing.assert_allclose(w.numpy()[seq == i], c ** -balance, rtol=1e-12)
        np.testing.assert_allclose(w.numpy()[seq == i].sum(), c ** (1 - balance), rtol=1e-12)
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="balance"):
            ds.sample_weights(bad)


def test_bad_inputs():
    rng = np.random.default_rng(33)
    xs, ys = make_sequences(rng, (4, 6))
    with pytest.raises(ValueError, match="odd"):
        WindowDataset(xs, ys, receptive_field=4)
    with pytest.raises(ValueError, match="target sequences"):
        WindowDataset(xs, ys[:1])
    bad = [x.copy() for x in xs]
    bad[1][2, 3, 0] = np.nan
    with pytest.raises(ValueError, match="sequence 1.*NaN"):
        WindowDataset(bad, ys)
    with pytest.raises(ValueError, match="empty"):
        WindowDataset([xs[0][:0]], [ys[0][:0]])
    with pytest.raises(ValueError, match="joints"):
        WindowDataset([xs[0], xs[1][:, :15]])
    with pytest.raises(ValueError, match="targets must be"):
        WindowDataset(xs, [ys[0], ys[1][:-1]])


@pytest.mark.gpu
def test_gather_on_cuda_matches_cpu():
    rng = np.random.default_rng(34)
    xs, ys = make_sequences(rng, (30, 50))
    cpu = WindowDataset(xs, ys, receptive_field=27, flip=True)
    gpu = WindowDataset(xs, ys, receptive_field=27, flip=True, device="cuda")
    ids = torch.arange(len(cpu))
    xc, yc = cpu.batch(ids)
    xg, yg = gpu.batch(ids.cuda())
    assert xg.device.type == "cuda"
    torch.testing.assert_close(xg.cpu(), xc)
    torch.testing.assert_close(yg.cpu(), yc)
