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


# ----------------------------------------------------------------------------- the plan's ops
def test_plan_runs_the_unchecked_ops_only_on_the_automatic_compiled_backend(monkeypatch):
    from posekernels import ops
    from posekernels.inference import build_plan
    from posekernels.ops import unchecked

    torch.manual_seed(0)
    model = GLAGCN(receptive_field=9, channels=8).eval()
    x = torch.randn(2, 9, 17, 2)
    calls = []

    def counted(name, real):
        def call(*args, **kwargs):
            calls.append(name)
            return real(*args, **kwargs)
        return call

    for name in ("graph_unit", "adaptive_graph_conv", "joint_linear", "temporal_conv"):
        monkeypatch.setattr(unchecked, name, counted(name, getattr(unchecked, name)))
    compiled = ops.available_backends("cpu")[0] == "cpu"
    with torch.no_grad():
        plan = build_plan(model)
        assert plan.unchecked == compiled and plan.fused_temporal == compiled
        want = model(x)[:, 0]
        torch.testing.assert_close(plan(x), want, atol=5e-5, rtol=5e-5)
        if compiled:
            assert {"graph_unit", "joint_linear", "temporal_conv"} <= set(calls)
        calls.clear()
        for backend in ("reference", *(("cpu",) if compiled else ())):
            checked = build_plan(model, backend=backend)  # explicit backend: the checked ops
            assert not checked.unchecked and not checked.fused_temporal
            torch.testing.assert_close(checked(x), want, atol=1e-5, rtol=1e-5)
        # (the checked cpu ops reach the kernels through unchecked.adaptive_graph_conv and
        # unchecked.joint_linear after their checks; the fused units are the plan's alone)
        assert not {"graph_unit", "temporal_conv"} & set(calls)


@pytest.mark.parametrize("groups", ["both", "joint", "shared", "no_bias"])
def test_blend_joint_weights_is_the_grouped_linear(groups):
    from posekernels import ops
    from posekernels.ops import reference

    g = torch.Generator().manual_seed(1)
    v, c, d = 5, 4, 3

    def rand(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    x = rand(7, v, c)
    Wj, bj, Ws, bs = rand(v, c, d), rand(v, d), rand(c, d), rand(d)
    args = {"both": (Wj, bj, Ws, bs), "joint": (Wj, bj, None, None),
            "shared": (None, None, Ws, bs), "no_bias": (Wj, None, Ws, None)}[groups]
    W, b = ops.blend_joint_weights(*args, 0.3, v)
    assert W.shape == (v, c, d) and (b is None) == (groups == "no_bias")
    torch.testing.assert_close(reference.joint_linear(x, W, b),
                               reference.grouped_joint_linear(x, *args, 0.3))


def test_model_joints_and_window_offsets():
    from posekernels.inference import model_joints, window_offsets

    assert model_joints(GLAGCN(receptive_field=3, channels=8)) == 17
    assert model_joints(GlobalNodeGCN(channels=8, aux=None)) == 16
    assert model_joints(torch.nn.Linear(2, 2)) is None
    assert window_offsets(5, causal=False).tolist() == [-2, -1, 0, 1, 2]
    assert window_offsets(5, causal=True).tolist() == [-4, -3, -2, -1, 0]
    import posekernels

    assert posekernels.lift_sequence is posekernels.inference.lift_sequence


def test_lift_sequence_and_streaming_under_autocast():
    """The folded plan (lift_sequence, StreamingLifter) runs under bf16 autocast on the CPU and
    gives the float32 result (the unchecked kernels run in the model's dtype)."""
    from posekernels import lift_sequence
    from posekernels.models import GLAGCN
    from posekernels.stream import StreamingLifter

    torch.manual_seed(int(torch.randint(0, 2 ** 31, ())))
    model = GLAGCN(receptive_field=9, channels=8, sequence_branch=False, head="shared").eval()
    kp = np.random.default_rng().standard_normal((20, 17, 2)).astype(np.float32) * 0.3
    ref = lift_sequence(model, kp)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = lift_sequence(model, kp)
        lifter = StreamingLifter(model)
        outs = [p for f in range(20) if (p := lifter.push(kp[f])) is not None]
        streamed = np.concatenate([np.stack(outs), lifter.flush()])
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)
    np.testing.assert_allclose(streamed, ref, atol=1e-5, rtol=0)
