"""The Triton backend's training epilogues (posekernels/ops/_triton_kernels.py: dropout_fwd,
bn_stats, bn_act_fwd, bn_act_bwd_sums, bn_act_bwd_z): the documented Philox masks element for
element (the cpu backend's masks for the same seed), values, running statistics and gradients
against float64 references, gradcheck, opcheck and torch.compile. On a GPU, and without one
through the Triton interpreter (conftest.py); ahead-of-time compilation for sm_90 is in
test_triton_backend.py."""
import pytest
import torch

from posekernels import ops

_triton = pytest.importorskip("posekernels.ops._triton",
                              reason="triton not importable: the backend is unavailable")

from test_epilogues import check_batch_norm_act, reference_keep, seed_of_next_call  # noqa: E402

DEVICES = [d for d in ("cpu", "cuda") if (d == "cpu" or torch.cuda.is_available())
           and "triton" in ops.available_backends(d)]
pytestmark = pytest.mark.skipif(not DEVICES, reason="no device runs the Triton backend here")
CPU_BUILT = ops.unchecked.available("cpu", "dropout")


@pytest.fixture
def spy(monkeypatch):
    """Counts the calls that reach the Triton backend's epilogue functions."""
    calls = {"dropout": 0, "batch_norm_act": 0}
    for name in calls:
        real = getattr(_triton, name)

        def wrapped(*a, _real=real, _name=name):
            calls[_name] += 1
            return _real(*a)
        monkeypatch.setattr(_triton, name, wrapped)
    return calls


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64],
                         ids=str)
@pytest.mark.parametrize("p", [0.1, 0.5, 0.85])
def test_dropout_mask_is_the_documented_philox_mask(device, dtype, p, spy):
    shape = tuple(int(s) for s in torch.randint(1, 40, (3,)))
    x = (torch.randn(shape, dtype=torch.float64) + 3.0).to(dtype).to(device)  # no zeros
    seed = seed_of_next_call()
    y = ops.dropout(x, p, backend="triton")
    assert spy["dropout"] == 1 and y.dtype == dtype and y.shape == x.shape
    keep = torch.from_numpy(reference_keep(x.numel(), p, seed)).reshape(shape).to(device)
    assert torch.equal(y != 0, keep)
    want = (x.double() * (1.0 / (1.0 - p))).to(dtype)  # one rounding of the scaled value
    rtol = 1e-15 if dtype == torch.float64 else torch.finfo(dtype).eps
    torch.testing.assert_close(y[keep].double(), want[keep].double(), rtol=rtol, atol=0)


@pytest.mark.skipif(not CPU_BUILT, reason="the compiled cpu backend is not built")
@pytest.mark.parametrize("device", DEVICES)
def test_dropout_and_epilogue_equal_the_cpu_backend(device):
    """The same generator state gives bit-identical dropout and the same epilogue mask."""
    for dtype in (torch.float32, torch.float64):
        x = torch.randn(5, 7, 33, dtype=dtype) + 2.0
        p = float(torch.rand(())) * 0.8 + 0.05
        a = ops.dropout(x, p, generator=torch.Generator().manual_seed(11), backend="cpu")
        b = ops.dropout(x.to(device), p, generator=torch.Generator().manual_seed(11),
                        backend="triton")
        assert torch.equal(a, b.cpu())
        z = torch.randn(4, 6, 9, 17, dtype=dtype)
        ya = ops.batch_norm_act(z, None, None, None, None, True, dropout=p,
                                generator=torch.Generator().manual_seed(3), backend="cpu")
        yb = ops.batch_norm_act(z.to(device), None, None, None, None, True, dropout=p,
                                generator=torch.Generator().manual_seed(3), backend="triton")
        assert torch.equal(ya != 0, yb.cpu() != 0)
        torch.testing.assert_close(yb.cpu(), ya, rtol=1e-5 if dtype == torch.float32 else 1e-12,
                                   atol=1e-5 if dtype == torch.float32 else 1e-12)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("p,use_res,relu,affine,shape",
                         [(0.0, False, False, True, None), (0.1, True, True, True, None),
                          (0.5, False, True, False, (4, 3, 30, 17)),  # several splits
                          (0.25, True, False, True, (2, 5, 1, 1))])   # two values per channel
def test_batch_norm_act_matches_float64(device, dtype, p, use_res, relu, affine, shape, spy):
    check_batch_norm_act("triton", device, dtype, p, use_res, relu, affine, shape)
    assert spy["batch_norm_act"] == 1


@pytest.mark.parametrize("device", DEVICES)
def test_gradcheck_and_opcheck(device):
    f64 = dict(dtype=torch.float64, device=device)
    z = torch.randn(3, 4, 5, 2, **f64).requires_grad_()
    w = (torch.rand(4, **f64) + 0.5).requires_grad_()
    b = torch.randn(4, **f64).requires_grad_()
    r = torch.randn(3, 4, 5, 2, **f64).requires_grad_()
    seed = torch.tensor([int(torch.randint(0, 2 ** 62, ()))])
    fwd = torch.ops.posekernels.bn_act_forward_triton
    assert torch.autograd.gradcheck(lambda *a: fwd(*a, 0.3, seed, 1e-5, True)[0], (z, w, b, r))
    assert torch.autograd.gradcheck(lambda a: fwd(a, None, None, None, 0.0, seed, 1e-5, False)[0],
                                    (z,))
    drop = torch.ops.posekernels.dropout_apply_triton
    assert torch.autograd.gradcheck(lambda a: drop(a, 0.4, seed), (z,))
    torch.library.opcheck(fwd, (z, w, b, r, 0.3, seed, 1e-5, True))
    torch.library.opcheck(fwd, (z.float(), None, None, None, 0.0, seed, 1e-5, False))
    torch.library.opcheck(drop, (z, 0.4, seed))


@pytest.mark.parametrize("device", DEVICES)
def test_compile_fullgraph(device):
    z = torch.randn(4, 6, 9, 5, device=device, requires_grad=True)
    w, b = torch.rand(6, device=device) + 0.5, torch.randn(6, device=device)

    def f(z):
        with ops.use_backend("triton"):
            y = ops.batch_norm_act(z, w, b, None, None, True, dropout=0.2, relu=True)
            return ops.dropout(y + 1.0, 0.3)

    torch.manual_seed(5)
    eager = f(z)
    torch.manual_seed(5)
    out = torch.compile(f, fullgraph=True, backend="aot_eager")(z)
    assert out.shape == eager.shape and 0.3 < (out == 0).double().mean().item() < 0.7
    out.sum().backward()
    assert z.grad is not None and torch.isfinite(z.grad).all()


def test_raw_ops_reject_bad_arguments():
    dev = DEVICES[0]
    z = torch.randn(2, 3, 4, device=dev)
    seed = torch.tensor([1])
    drop, fwd = torch.ops.posekernels.dropout_apply_triton, torch.ops.posekernels.bn_act_forward_triton
    with pytest.raises(ValueError, match="p must be"):
        drop(z, 1.0, seed)
    with pytest.raises(ValueError, match="seed must be"):
        drop(z, 0.5, torch.tensor([1.0]))
    with pytest.raises(ValueError, match="x must be a tensor of dtype"):
        drop(z.long(), 0.5, seed)
    with pytest.raises(ValueError, match="z must be a tensor of dtype"):
        fwd(z.half(), None, None, None, 0.0, seed, 1e-5, False)
    with pytest.raises(ValueError, match="weight must be"):
        fwd(z, torch.ones(4, device=dev), None, None, 0.0, seed, 1e-5, False)
    with pytest.raises(ValueError, match="residual must be"):
        fwd(z, None, None, z[:1], 0.0, seed, 1e-5, False)
    with pytest.raises(ValueError, match="more than one value per channel"):
        fwd(z[:1, :, :1], None, None, None, 0.0, seed, 1e-5, False)
