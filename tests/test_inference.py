"""lift_sequence against a per-frame loop that builds each padded window by hand."""
import numpy as np
import pytest
import torch

from posekernels import lift_sequence
from posekernels.data.windows import flip_pose
from posekernels.models import GLAGCN, GlobalNodeGCN


def _loop_reference(model, kp, flip=False):
    t = model.receptive_field
    f = kp.shape[0]
    lo = -(t - 1) if model.causal else -((t - 1) // 2)
    out = []
    for i in range(f):
        win = torch.stack([kp[min(max(i + o, 0), f - 1)] for o in range(lo, lo + t)])[None]
        pred = model(win)[0, 0]
        if flip:
            sk = model.skeleton
            pred = (pred + flip_pose(model(flip_pose(win, sk.left, sk.right))[0, 0], sk.left, sk.right)) / 2
        out.append(pred)
    return torch.stack(out)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("frames", [1, 4, 13])
def test_lift_sequence_matches_window_loop(causal, frames):
    torch.manual_seed(torch.seed() % 2**31)
    model = GLAGCN(receptive_field=9, channels=8, causal=causal).eval()
    kp = torch.randn(frames, 17, 2)
    got = lift_sequence(model, kp, batch_size=3)
    with torch.no_grad():
        want = _loop_reference(model, kp)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_lift_sequence_flip_tta_numpy_and_mode_restored():
    model = GLAGCN(receptive_field=3, channels=8, sequence_branch=False).train()
    kp = np.random.randn(6, 17, 2).astype(np.float32)
    got = lift_sequence(model, kp, flip_tta=True)
    assert isinstance(got, np.ndarray) and got.shape == (6, 17, 3)
    assert model.training, "lift_sequence must restore the training flag"
    model.eval()
    with torch.no_grad():
        want = _loop_reference(model, torch.from_numpy(kp), flip=True)
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-5)


def test_lift_sequence_single_frame_model():
    model = GlobalNodeGCN(channels=16).eval()
    kp = torch.randn(5, 16, 2)
    with torch.no_grad():
        torch.testing.assert_close(lift_sequence(model, kp), model(kp), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bad,exc,msg", [
    (torch.randn(5, 16, 2), ValueError, "V = 17"),
    (torch.randn(5, 17, 3), ValueError, r"\(F, V, 2\)"),
    (torch.randn(0, 17, 2), ValueError, "empty"),
    (torch.full((3, 17, 2), float("nan")), ValueError, "NaN"),
    ([[0.0, 1.0]], TypeError, "numpy array or torch tensor"),
])
def test_lift_sequence_bad_input(bad, exc, msg):
    model = GLAGCN(receptive_field=3, channels=8)
    with pytest.raises(exc, match=msg):
        lift_sequence(model, bad)


@pytest.mark.parametrize("causal", [False, True])
def test_lift_sequence_fold_matches_model(causal):
    """fold=False runs the model itself (exact to the window loop); fold=True runs the folded plan
    (its Winograd temporal convolutions round differently: within the plan's bound)."""
    torch.manual_seed(torch.seed() % 2**31)
    model = GLAGCN(receptive_field=27, channels=16, causal=causal).eval()
    kp = torch.randn(20, 17, 2)
    with torch.no_grad():
        want = _loop_reference(model, kp)
    scale = max(1.0, want.abs().max().item())
    unfolded = lift_sequence(model, kp, fold=False, batch_size=7)
    # batched vs one window at a time: the kernels split the work differently (float rounding)
    assert (unfolded - want).abs().max().item() < 1e-5 * scale
    folded = lift_sequence(model, kp, batch_size=7)
    assert (folded - want).abs().max().item() < 5e-5 * scale
