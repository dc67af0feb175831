"""Metrics against straightforward float64 numpy references written here."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from posekernels import metrics as M


def rand_pose(rng, frames=40, joints=17):
    return rng.normal(size=(frames, joints, 3)) * 0.25 + rng.normal(size=(frames, 1, 3))


def random_rotation(rng):
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


# ---- references -----------------------------------------------------------------------------
def ref_mpjpe(p, t):
    return np.mean([np.mean([np.linalg.norm(p[f, j] - t[f, j]) for j in range(p.shape[1])])
                    for f in range(p.shape[0])]) * 1000


def ref_umeyama(p, t):
    """Umeyama (1991): similarity transform minimising sum |c R p_i + d - t_i|^2."""
    n = p.shape[0]
    mp, mt = p.mean(0), t.mean(0)
    pc, tc = p - mp, t - mt
    var_p = (pc ** 2).sum() / n
    cov = tc.T @ pc / n
    u, d, vt = np.linalg.svd(cov)
    s = np.eye(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        s[2, 2] = -1
    r = u @ s @ vt
    c = np.trace(np.diag(d) @ s) / var_p
    return (c * (r @ pc.T)).T + mt


def ref_p_mpjpe(p, t):
    errs = []
    for f in range(p.shape[0]):
        a = ref_umeyama(p[f], t[f])
        errs.append(np.linalg.norm(a - t[f], axis=1).mean())
    return np.mean(errs) * 1000


def ref_n_mpjpe(p, t):
    errs = []
    for f in range(p.shape[0]):
        s = np.sum(p[f] * t[f]) / np.sum(p[f] * p[f])
        errs.append(np.linalg.norm(s * p[f] - t[f], axis=1).mean())
    return np.mean(errs) * 1000


def ref_mpjve(p, t):
    vp, vt = p[1:] - p[:-1], t[1:] - t[:-1]
    return np.linalg.norm(vp - vt, axis=-1).mean() * 1000


def ref_pck(p, t, thr):
    e = np.linalg.norm(p - t, axis=-1) * 1000
    return 100.0 * np.count_nonzero(e <= thr) / e.size


# ---- tests ----------------------------------------------------------------------------------
def test_against_references():
    rng = np.random.default_rng(101)
    t = rand_pose(rng)
    p = t + rng.normal(size=t.shape) * 0.04
    assert M.mpjpe(p, t) == pytest.approx(ref_mpjpe(p, t), rel=1e-12)
    assert M.p_mpjpe(p, t) == pytest.approx(ref_p_mpjpe(p, t), rel=1e-9)
    tr, pr = t - t[:, :1], p - p[:, :1]
    assert M.n_mpjpe(pr, tr) == pytest.approx(ref_n_mpjpe(pr, tr), rel=1e-10)
    assert M.n_mpjpe(p, t, root=0) == pytest.approx(ref_n_mpjpe(pr, tr), rel=1e-10)
    assert M.mpjpe(p, t, root=0) == pytest.approx(ref_mpjpe(pr, tr), rel=1e-12)
    assert M.mpjve(p, t) == pytest.approx(ref_mpjve(p, t), rel=1e-12)
    assert M.mpjve(p, t, fps=50) == pytest.approx(ref_mpjve(p, t) * 50, rel=1e-12)
    for thr in (20.0, 60.0, 150.0):
        assert M.pck(p, t, thr) == pytest.approx(ref_pck(p, t, thr), abs=1e-12)
    want_auc = np.mean([ref_pck(p, t, k) for k in range(0, 151, 5)])
    assert M.auc(p, t) == pytest.approx(want_auc, abs=1e-12)
    assert M.pck(p, t, 150.0, joints=[0, 3, 5]) == pytest.approx(
        ref_pck(p[:, [0, 3, 5]], t[:, [0, 3, 5]], 150.0))


def test_similarity_copy_has_zero_p_mpjpe_and_reflection_does_not():
    rng = np.random.default_rng(202)
    t = rand_pose(rng, frames=30)
    rots = [random_rotation(rng) for _ in range(30)]
    p = np.stack([1.7 * t[f] @ rots[f].T + rng.normal(size=3) for f in range(30)])
    assert M.p_mpjpe(p, t) < 1e-9
    assert M.mpjpe(p, t) > 100
    np.testing.assert_allclose(M.procrustes_align(p, t), t, atol=1e-10)
    # A mirror image cannot be aligned by a rotation: error stays and matches the reference.
    mirrored = t * np.array([-1.0, 1.0, 1.0])
    assert M.p_mpjpe(mirrored, t) == pytest.approx(ref_p_mpjpe(mirrored, t), rel=1e-9)
    assert M.p_mpjpe(mirrored, t) > 10
    # N-MPJPE removes a pure scale.
    tr = t - t[:, :1]
    assert M.n_mpjpe(0.6 * tr, tr) < 1e-9


def test_torch_and_numpy_agree_and_types():
    rng = np.random.default_rng(303)
    t = rand_pose(rng, frames=12)
    p = t + rng.normal(size=t.shape) * 0.05
    pt, tt = torch.tensor(p, dtype=torch.float32), torch.tensor(t, dtype=torch.float32)
    for fn in (M.mpjpe, M.p_mpjpe, M.n_mpjpe, M.mpjve, M.pck, M.auc):
        a, b = fn(p, t), fn(pt, tt)
        assert isinstance(a, float) and isinstance(b, float)
        assert a == pytest.approx(b, rel=1e-5, abs=1e-4)
        per_np, per_t = fn(p, t, reduce=False), fn(pt, tt, reduce=False)
        assert isinstance(per_np, np.ndarray) and isinstance(per_t, torch.Tensor)
        assert per_np.shape == tuple(per_t.shape)
        assert per_np.mean() == pytest.approx(a, rel=1e-12)
    assert M.mpjpe(p, t, reduce=False).shape == (12,)
    assert M.mpjve(p, t, reduce=False).shape == (11,)
    # batched leading dimensions
    pb, tb = p.reshape(3, 4, 17, 3), t.reshape(3, 4, 17, 3)
    assert M.p_mpjpe(pb, tb, reduce=False).shape == (3, 4)
    assert M.p_mpjpe(pb, tb) == pytest.approx(M.p_mpjpe(p, t), rel=1e-12)
    assert M.per_joint_error(p, t).shape == (12, 17)


def test_bad_inputs():
    rng = np.random.default_rng(4)
    t = rand_pose(rng, frames=5)
    with pytest.raises(ValueError, match="shape"):
        M.mpjpe(t[:, :16], t)
    with pytest.raises(ValueError):
        M.mpjpe(t[..., :2], t[..., :2])
    with pytest.raises(ValueError):
        M.mpjve(t[:1], t[:1])
    with pytest.raises(ValueError):
        M.MetricAccumulator(["bogus"])


def test_accumulator_frame_weighted_per_action_then_mean():
    rng = np.random.default_rng(505)
    seqs = []
    for subject, action, n, noise in [("S9", "Walking 1", 30, 0.02), ("S9", "Walking", 50, 0.05),
                                      ("S11", "Walking 2", 20, 0.03), ("S11", "Eating", 40, 0.08),
                                      ("S9", "TakingPhoto", 25, 0.04)]:
        t = rand_pose(rng, frames=n)
        p = t + rng.normal(size=t.shape) * noise
        seqs.append((subject, action, p, t))
    acc = M.MetricAccumulator(("mpjpe", "p_mpjpe", "mpjve", "pck", "auc"))
    for s, a, p, t in seqs:
        acc.add(s, a, p if s == "S9" else torch.tensor(p), t)
    out = acc.summary()
    json.dumps(out)  # JSON-ready
    assert sorted(out["per_action"]) == ["Eating", "Photo", "Walking"]
    walk = [(p, t) for s, a, p, t in seqs if a.startswith("Walking")]
    errs = np.concatenate([np.linalg.norm(p - t, axis=-1).mean(-1) for p, t in walk]) * 1000
    assert out["per_action"]["Walking"]["mpjpe"] == pytest.approx(errs.mean(), rel=1e-12)
    assert out["per_action"]["Walking"]["frames"] == 100
    vel = np.concatenate([np.linalg.norm(np.diff(p - t, axis=0), axis=-1).mean(-1)
                          for p, t in walk]) * 1000
    assert out["per_action"]["Walking"]["mpjve"] == pytest.approx(vel.mean(), rel=1e-12)
    mean_actions = np.mean([out["per_action"][a]["mpjpe"] for a in ("Eating", "Photo", "Walking")])
    assert out["mean_over_actions"]["mpjpe"] == pytest.approx(mean_actions, rel=1e-12)
    all_err = np.concatenate([np.linalg.norm(p - t, axis=-1).mean(-1) for _, _, p, t in seqs])
    assert out["all_frames"]["mpjpe"] == pytest.approx(all_err.mean() * 1000, rel=1e-12)
    s11 = np.concatenate([np.linalg.norm(p - t, axis=-1).mean(-1)
                          for s, _, p, t in seqs if s == "S11"]) * 1000
    assert out["per_subject"]["S11"]["mpjpe"] == pytest.approx(s11.mean(), rel=1e-12)
    assert out["frames"] == 165
    text = M.format_table(out)
    assert "Walking" in text and "Mean over actions" in text and "P-MPJPE (mm)" in text
    assert "S11" in M.format_table(out, by="subject")


def test_accumulator_valid_mask_and_no_grouping():
    rng = np.random.default_rng(606)
    t = rand_pose(rng, frames=20)
    p = t + rng.normal(size=t.shape) * 0.05
    valid = np.ones(20, bool)
    valid[[3, 4, 10]] = False
    acc = M.MetricAccumulator(("mpjpe", "mpjve"), group=None)
    acc.add("TS1", "TS1 a", p, t, valid=valid)
    out = acc.summary()
    assert list(out["per_action"]) == ["TS1 a"]
    e = np.linalg.norm(p - t, axis=-1).mean(-1)[valid] * 1000
    assert out["all_frames"]["mpjpe"] == pytest.approx(e.mean(), rel=1e-12)
    pairs = valid[1:] & valid[:-1]
    v = np.linalg.norm(np.diff(p - t, axis=0), axis=-1).mean(-1)[pairs] * 1000
    assert out["all_frames"]["mpjve"] == pytest.approx(v.mean(), rel=1e-12)
    assert out["frames"] == 17
    assert not math.isnan(out["mean_over_actions"]["mpjpe"])


def test_per_joint_mpjpe_against_float64():
    """per_joint_mpjpe: per joint, frame-weighted within an action (valid frames only), averaged
    over actions; None when sequences of different joint counts were added."""
    rng = np.random.default_rng()
    acc = M.MetricAccumulator(("mpjpe", "p_mpjpe"), root=0, group=None)
    want = []
    for action in ("walk", "run"):
        sums, frames = np.zeros(17), 0
        for _ in range(int(rng.integers(1, 4))):
            n = int(rng.integers(3, 12))
            t = rng.normal(size=(n, 17, 3))
            p = t + rng.normal(scale=0.05, size=(n, 17, 3))
            valid = rng.random(n) < 0.7
            valid[0] = True
            acc.add("S1", action, p.astype(np.float32), t, valid=valid)
            pr, tr = p - p[:, :1], t - t[:, :1]
            e = np.linalg.norm(pr.astype(np.float32).astype(np.float64) - tr, axis=-1)[valid]
            sums += e.sum(0) * 1000
            frames += e.shape[0]
        want.append(sums / frames)
    summary = acc.summary()
    np.testing.assert_allclose(summary["per_joint_mpjpe"], np.mean(want, 0), rtol=1e-5)
    assert np.mean(summary["per_joint_mpjpe"]) == pytest.approx(
        summary["mean_over_actions"]["mpjpe"], rel=1e-5)
    mixed = M.MetricAccumulator(("mpjpe",))
    mixed.add("S1", "a", rng.normal(size=(4, 17, 3)), rng.normal(size=(4, 17, 3)))
    mixed.add("S1", "b", rng.normal(size=(4, 16, 3)), rng.normal(size=(4, 16, 3)))
    assert mixed.summary()["per_joint_mpjpe"] is None
    no_mpjpe = M.MetricAccumulator(("p_mpjpe",))
    no_mpjpe.add("S1", "a", rng.normal(size=(4, 17, 3)), rng.normal(size=(4, 17, 3)))
    assert no_mpjpe.summary()["per_joint_mpjpe"] is None
