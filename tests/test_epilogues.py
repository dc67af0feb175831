"""The training epilogues of the cpu backend: counter-based dropout and the fused
BatchNorm + dropout + residual + ReLU (posekernels.ops.dropout / batch_norm_act, csrc/cpu/bn_act.cpp).

Masks are checked against an independent NumPy Philox4x32-10 (itself checked on the Random123
known-answer vectors), values and gradients against float64 references built from
torch.nn.functional, and the keep rate against binomial bounds."""
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from posekernels import ops
from posekernels.models import GLAGCN
from posekernels.models.glagcn import mpjpe_loss

pytestmark = pytest.mark.skipif(not ops.unchecked.available("cpu", "dropout"),
                                reason="the compiled cpu backend is not built")

M0, M1, W0, W1 = 0xD2511F53, 0xCD9E8D57, 0x9E3779B9, 0xBB67AE85
MASK32 = (1 << 32) - 1


def philox4x32_10(counters, key):
    """Philox4x32-10 of (4, n) uint64 counters (32-bit values) and a (k0, k1) key (NumPy)."""
    c0, c1, c2, c3 = (np.asarray(c, dtype=np.uint64) for c in counters)
    k0, k1 = np.uint64(key[0]), np.uint64(key[1])
    for _ in range(10):
        p0 = np.uint64(M0) * c0
        p1 = np.uint64(M1) * c2
        c0, c1, c2, c3 = ((p1 >> np.uint64(32)) ^ c1 ^ k0, p1 & np.uint64(MASK32),
                          (p0 >> np.uint64(32)) ^ c3 ^ k1, p0 & np.uint64(MASK32))
        k0 = (k0 + np.uint64(W0)) & np.uint64(MASK32)
        k1 = (k1 + np.uint64(W1)) & np.uint64(MASK32)
    return c0, c1, c2, c3


def test_philox_reference_matches_random123_vectors():
    # Random123's known-answer tests for philox4x32_10
    zero = philox4x32_10([[0], [0], [0], [0]], (0, 0))
    assert [int(w[0]) for w in zero] == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]
    ones = philox4x32_10([[MASK32]] * 4, (MASK32, MASK32))
    assert [int(w[0]) for w in ones] == [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]
    pi = philox4x32_10([[0x243F6A88], [0x85A308D3], [0x13198A2E], [0x03707344]],
                       (0xA4093822, 0x299F31D0))
    assert [int(w[0]) for w in pi] == [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1]


def reference_keep(n, p, seed):
    """The documented mask: element 64 b + 16 w + j is kept when word w of
    Philox(key = seed, counter = 16 b + j) < (1 - p) * 2^32."""
    seed &= (1 << 64) - 1
    blocks = -(-n // 64)
    ctr = np.arange(blocks * 16, dtype=np.uint64)
    words = philox4x32_10([ctr & np.uint64(MASK32), ctr >> np.uint64(32),
                           np.zeros_like(ctr), np.zeros_like(ctr)], (seed & MASK32, seed >> 32))
    # (4, blocks * 16) -> element order block, word, lane
    w = np.stack(words).reshape(4, blocks, 16).transpose(1, 0, 2).reshape(-1)[:n]
    thr = min(int(math.ldexp(1.0 - p, 32)), MASK32)
    return w < thr


def seed_of_next_call():
    """The seed the next ops.dropout / batch_norm_act call will draw (then rewinds)."""
    state = torch.get_rng_state()
    seed = int(ops._draw_seed(None))
    torch.set_rng_state(state)
    return seed


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("p", [0.1, 0.5, 0.85])
def test_dropout_mask_is_the_documented_philox_mask(dtype, p):
    shape = tuple(int(s) for s in torch.randint(1, 40, (3,)))
    x = torch.randn(shape, dtype=dtype) + 3.0  # no zeros
    seed = seed_of_next_call()
    y = ops.dropout(x, p)
    keep = torch.from_numpy(reference_keep(x.numel(), p, seed)).reshape(shape)
    assert torch.equal(y != 0, keep)
    torch.testing.assert_close(y[keep], x[keep] / (1 - p), rtol=2e-7 if dtype == torch.float32
                               else 1e-15, atol=0)


@pytest.mark.parametrize("p", [0.1, 0.3, 0.7])
def test_dropout_keep_rate_and_scaling(p):
    x = torch.rand(200_003) + 0.5
    y = ops.dropout(x, p)
    kept = (y != 0).double().mean().item()
    sd = math.sqrt(p * (1 - p) / x.numel())
    assert abs(kept - (1 - p)) < 5 * sd
    # unbiased: E[y] = x
    assert abs((y.double().sum() / x.double().sum()).item() - 1) < 6 * math.sqrt(p / (1 - p) / x.numel())
    # neighbouring elements are independent: the pair-keep rate is (1 - p)^2
    k = (y != 0).double()
    pair = (k[1:] * k[:-1]).mean().item()
    assert abs(pair - (1 - p) ** 2) < 6 * math.sqrt((1 - p) ** 2 / x.numel())


def test_dropout_is_reproducible_and_fresh():
    x = torch.randn(5, 7, 11)
    torch.manual_seed(123)
    a = ops.dropout(x, 0.5)
    b = ops.dropout(x, 0.5)
    torch.manual_seed(123)
    assert torch.equal(ops.dropout(x, 0.5), a)
    assert not torch.equal(a, b)
    g = torch.Generator().manual_seed(7)
    c = ops.dropout(x, 0.5, generator=g)
    assert torch.equal(ops.dropout(x, 0.5, generator=torch.Generator().manual_seed(7)), c)


def test_dropout_gradient_is_the_same_mask():
    x = torch.randn(3, 8, 9, 17, dtype=torch.float64, requires_grad=True)
    y = ops.dropout(x, 0.4)
    g = torch.randn_like(y)
    (gx,) = torch.autograd.grad(y, x, g)
    keep = y.detach() != 0
    torch.testing.assert_close(gx, torch.where(keep, g / 0.6, torch.zeros_like(g)))
    seed = torch.tensor([987654321], dtype=torch.int64)
    assert torch.autograd.gradcheck(
        lambda t: torch.ops.posekernels.dropout_apply(t, 0.3, seed), (x[:1, :2],))


def test_dropout_identity_cases_and_fallbacks():
    x = torch.randn(4, 5)
    assert ops.dropout(x, 0.5, training=False) is x
    assert ops.dropout(x, 0.0) is x
    xb = x.to(torch.bfloat16)
    yb = ops.dropout(xb, 0.5, backend="reference")  # torch's dropout keeps the dtype
    assert yb.dtype == torch.bfloat16 and set(torch.unique(yb != 0).tolist()) <= {True, False}
    xt = torch.randn(6, 9).t()  # non-contiguous input
    yt = ops.dropout(xt, 0.5)
    assert yt.shape == xt.shape and torch.equal((yt != 0), yt != 0)
    kept = yt != 0
    torch.testing.assert_close(yt[kept], xt[kept] * 2)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_dropout_16bit_on_cpu_backend_is_the_fused_mask(dtype, monkeypatch):
    """16-bit tensors (bf16 autocast training) get the cpu backend's documented mask, computed on
    a float32 copy: the result is x / (1 - p) to the 16-bit rounding, in x's dtype, and the
    gradient has the same mask; torch's dropout is not called."""
    monkeypatch.setattr(F, "dropout", lambda *a, **k: pytest.fail("fell back to F.dropout"))
    p = float(torch.rand(()) * 0.8 + 0.1)
    shape = tuple(int(v) for v in torch.randint(1, 30, (3,)))
    x = (torch.randn(shape, dtype=torch.float64) + 3.0).to(dtype).requires_grad_()
    seed = seed_of_next_call()
    y = ops.dropout(x, p)
    assert y.dtype == dtype and y.shape == x.shape
    keep = torch.from_numpy(reference_keep(x.numel(), p, seed)).reshape(shape)
    assert torch.equal(y != 0, keep)
    # x / (1 - p) in float32, rounded to the 16-bit type: within one 16-bit rounding (half ulp)
    # of the exact value, plus the float32 product's own (relative 2^-24)
    half_ulp = 2.0 ** -8 if dtype == torch.bfloat16 else 2.0 ** -11  # 8 / 11 significant bits
    tol = dict(rtol=half_ulp + 2.0 ** -23, atol=2.0 ** -24)  # (float16 subnormals: absolute)
    torch.testing.assert_close(y[keep].double(), x.detach().double()[keep] / (1 - p), **tol)
    g = torch.randn(shape, dtype=torch.float64).to(dtype)
    (gx,) = torch.autograd.grad(y, x, g)
    assert gx.dtype == dtype and torch.equal(gx != 0, keep & (g != 0))
    torch.testing.assert_close(gx[keep].double(), g.double()[keep] / (1 - p), **tol)


@pytest.mark.parametrize("z_dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("param_dtype", ["float32", "same"])
def test_batch_norm_act_16bit_on_cpu_backend_matches_float64(z_dtype, param_dtype, monkeypatch):
    """A 16-bit z with float32 (autocast) or 16-bit BatchNorm parameters runs fused in float32:
    output in z's dtype, running statistics and every gradient against float64 with the
    documented mask, to the 16-bit rounding of the inputs and the output."""
    n, c = int(torch.randint(2, 7, ())), int(torch.randint(1, 12, ()))
    t, v = int(torch.randint(2, 25, ())), int(torch.randint(1, 18, ()))
    p = float(torch.rand(()) * 0.5)
    pdt = torch.float32 if param_dtype == "float32" else z_dtype
    z = (torch.randn(n, c, t, v) * 3 + torch.randn(1, c, 1, 1)).to(z_dtype).requires_grad_()
    w = (torch.rand(c) + 0.5).to(pdt).requires_grad_()
    b = torch.randn(c).to(pdt).requires_grad_()
    r = torch.randn(n, c, t, v).to(z_dtype).requires_grad_()
    rm, rv = torch.randn(c), torch.rand(c) + 0.5
    rm64, rv64 = rm.double(), rv.double()
    seed = seed_of_next_call()
    with monkeypatch.context() as m:
        m.setattr(F, "dropout", lambda *a, **k: pytest.fail("fell back to F.dropout"))
        m.setattr(F, "batch_norm", lambda *a, **k: pytest.fail("fell back to F.batch_norm"))
        y = ops.batch_norm_act(z, w, b, rm, rv, True, 0.2, 1e-3, dropout=p, residual=r,
                               relu=True)
    assert y.dtype == z_dtype and y.shape == z.shape
    keep = (torch.from_numpy(reference_keep(z.numel(), p, seed)).reshape(z.shape) if p > 0
            else None)
    leaves64 = [a.detach().double().requires_grad_() for a in (z, w, b, r)]
    ref = _bn_reference(leaves64[0], leaves64[1], leaves64[2], rm64, rv64, 0.2, 1e-3, keep, p,
                        leaves64[3], True)
    ulp = 2.0 ** -7 if z_dtype == torch.bfloat16 else 2.0 ** -10  # at 1 (8 / 11 significant bits)
    scale = ref.abs().max().item() + 1
    torch.testing.assert_close(y.double() / scale, ref.detach() / scale, rtol=0, atol=ulp)
    torch.testing.assert_close(rm.double(), rm64, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(rv.double(), rv64, rtol=1e-5, atol=1e-5)
    g = torch.randn(z.shape).to(z_dtype)
    got = torch.autograd.grad(y, (z, w, b, r), g)
    want = torch.autograd.grad(ref, leaves64, g.double())
    for a, e, leaf in zip(got, want, (z, w, b, r)):
        assert a.dtype == leaf.dtype
        s = e.abs().max().item() + 1
        # float32 sums, each gradient rounded once to its leaf's dtype
        torch.testing.assert_close(a.double() / s, e / s, rtol=0, atol=ulp)


def test_epilogues_under_autocast_return_float32_on_cpu():
    """Under CPU bf16 autocast the cpu backend's 16-bit epilogues keep their float32 result
    (the same bits as the float32 call with the same seed) instead of rounding it back to bf16;
    outside autocast they return the input's dtype; the reference backend keeps bf16."""
    z = (torch.randn(4, 6, 9, 17) * 2 + 1).to(torch.bfloat16)
    w, b = torch.rand(6) + 0.5, torch.randn(6)
    r = torch.randn(4, 6, 9, 17).to(torch.bfloat16)
    seed = int(torch.randint(0, 2 ** 31, ()))

    def bn(zz, rr, autocast, backend=None):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            return ops.batch_norm_act(zz, w, b, None, None, True, dropout=0.3, residual=rr,
                                      relu=True, backend=backend,
                                      generator=torch.Generator().manual_seed(seed))

    def drop(xx, autocast, backend=None):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            return ops.dropout(xx, 0.4, generator=torch.Generator().manual_seed(seed),
                               backend=backend)

    y = bn(z, r, True)
    assert y.dtype == torch.float32 and torch.equal(y, bn(z.float(), r.float(), False))
    assert bn(z, r, False).dtype == torch.bfloat16
    assert bn(z, r, True, "reference").dtype == torch.bfloat16
    d = drop(z, True)
    assert d.dtype == torch.float32 and torch.equal(d, drop(z.float(), False))
    assert drop(z, False).dtype == torch.bfloat16


def test_bf16_autocast_training_step_uses_the_fused_epilogues(monkeypatch):
    """A GLA-GCN training step under CPU bf16 autocast (the trainer's amp_cpu) runs every
    BatchNorm/dropout epilogue that the float32 step runs fused, fused too (no torch dropout),
    with the same masks, and its gradients stay close to the float32 step's."""
    seed = int(torch.randint(0, 10_000, ()))
    torch.manual_seed(seed)
    model = GLAGCN(receptive_field=9, channels=16, dropout=0.25).train()
    x = torch.randn(4, 9, 17, 2)
    target = torch.randn(4, 9, 17, 3) * 0.2
    state = {k: v.clone() for k, v in model.state_dict().items()}
    calls = []
    fused_bn, fused_drop = ops.unchecked.batch_norm_act, ops.unchecked.dropout
    monkeypatch.setattr(ops.unchecked, "batch_norm_act",
                        lambda z, *a: calls.append(("bn", z.dtype)) or fused_bn(z, *a))
    monkeypatch.setattr(ops.unchecked, "dropout",
                        lambda t, *a: calls.append(("drop", t.dtype)) or fused_drop(t, *a))
    monkeypatch.setattr(F, "dropout", lambda *a, **k: pytest.fail("fell back to F.dropout"))

    def step(amp):
        model.load_state_dict(state)
        calls.clear()
        torch.manual_seed(seed + 1)  # the same dropout seeds in both steps
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            loss = model.loss(x, target, stage=1)
        return loss, torch.autograd.grad(loss, list(model.parameters())), list(calls)

    loss32, grads32, calls32 = step(False)
    loss16, grads16, calls16 = step(True)
    assert [k for k, _ in calls16] == [k for k, _ in calls32] and len(calls32) > 10
    # the BatchNorms read the convolutions' bf16 outputs as they are (the graph op's float32
    # outputs stay float32); dropout runs on float32
    assert {d for k, d in calls16 if k == "bn"} == {torch.bfloat16, torch.float32}
    assert {d for k, d in calls16 if k == "drop"} == {torch.float32}
    assert abs(loss16.item() - loss32.item()) < 0.05 * abs(loss32.item())
    num = sum(float(((a.float() - e) ** 2).sum()) for a, e in zip(grads16, grads32))
    den = sum(float((e ** 2).sum()) for e in grads32)
    # the bf16 convolutions' rounding: 3-7.5 % relative over 12 seeds, the same with torch's own
    # epilogues under autocast (their correctness in 16 bits: the float64 test above)
    assert math.isfinite(num) and num < 0.15 ** 2 * den


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5, float("nan"), "0.5", True])
def test_dropout_bad_p(p):
    with pytest.raises(ValueError, match="p must be"):
        ops.dropout(torch.randn(3), p)
    with pytest.raises(ValueError, match="dropout must be"):
        ops.batch_norm_act(torch.randn(4, 3), None, None, None, None, True, dropout=p)


def test_raw_ops_reject_bad_arguments():
    seed = torch.tensor([1])
    with pytest.raises(ValueError, match="p must lie"):
        torch.ops.posekernels.dropout_apply(torch.randn(3), 1.0, seed)
    with pytest.raises(TypeError, match="float32 or float64"):
        torch.ops.posekernels.dropout_apply(torch.randn(3).half(), 0.5, seed)
    with pytest.raises(ValueError, match="seed must be"):
        torch.ops.posekernels.dropout_apply(torch.randn(3), 0.5, torch.tensor([1, 2]))
    with pytest.raises(TypeError, match="seed must be an int64"):
        torch.ops.posekernels.dropout_apply(torch.randn(3), 0.5, torch.tensor([1.0]))
    z = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match="weight must have shape"):
        torch.ops.posekernels.bn_act_forward(z, torch.ones(4), None, None, 0.0, seed, 1e-5, True)
    with pytest.raises(ValueError, match="residual must have the shape"):
        torch.ops.posekernels.bn_act_forward(z, None, None, torch.ones(2, 3), 0.0, seed, 1e-5, True)
    with pytest.raises(ValueError, match="more than one value per channel"):
        torch.ops.posekernels.bn_act_forward(torch.randn(1, 3), None, None, None, 0.0, seed, 1e-5,
                                             True)
    with pytest.raises(ValueError, match="eps must be"):
        torch.ops.posekernels.bn_act_forward(z, None, None, None, 0.0, seed, 0.0, True)
    y, m, v = torch.ops.posekernels.bn_act_forward(z, None, None, None, 0.0, seed, 1e-5, True)
    with pytest.raises(ValueError, match="mean must have shape"):
        torch.ops.posekernels.bn_act_backward(z, z, y, None, m[:2], v, 0.0, seed, 1e-5, True,
                                              False)
    with pytest.raises(ValueError, match="grad_y must have the shape"):
        torch.ops.posekernels.bn_act_backward(z[:1], z, y, None, m, v, 0.0, seed, 1e-5, True,
                                              False)


@pytest.mark.parametrize("p,use_res,relu,affine",
                         [(0.0, False, False, True), (0.3, True, True, True),
                          (0.5, False, True, False)])
def test_bn_act_reads_bfloat16_z_as_its_float32_value(p, use_res, relu, affine):
    """The raw cpu op on a bfloat16 z (float32 everything else) computes exactly what it computes
    on z's float32 value: the same y, statistics and float32 gradients bit for bit, and grad_z
    the float32 call's grad_z rounded once to bfloat16 (row lengths off the vector width,
    rows of several mask segments)."""
    n, c = int(torch.randint(2, 7, ())), int(torch.randint(1, 13, ()))
    t = int(torch.randint(1, 40, ()))
    v = (1, 5, 17)[int(torch.randint(0, 3, ()))]
    z16 = (torch.randn(n, c, t, v) * 3 + torch.randn(1, c, 1, 1)).to(torch.bfloat16)
    w = torch.rand(c) + 0.5 if affine else None
    b = torch.randn(c) if affine else None
    r = torch.randn(z16.shape) if use_res else None
    seed = torch.tensor([int(torch.randint(0, 2 ** 62, ()))])
    fwd, bwd = torch.ops.posekernels.bn_act_forward, torch.ops.posekernels.bn_act_backward
    y16, m16, v16 = fwd(z16, w, b, r, p, seed, 1e-5, relu)
    y32, m32, v32 = fwd(z16.float(), w, b, r, p, seed, 1e-5, relu)
    assert y16.dtype == m16.dtype == v16.dtype == torch.float32
    for a, e in ((y16, y32), (m16, m32), (v16, v32)):
        assert torch.equal(a, e)
    g = torch.randn(z16.shape)
    got = bwd(g, z16, y16, w, m16, v16, p, seed, 1e-5, relu, use_res)
    want = bwd(g, z16.float(), y32, w, m32, v32, p, seed, 1e-5, relu, use_res)
    assert got[0].dtype == torch.bfloat16 and torch.equal(got[0], want[0].to(torch.bfloat16))
    for a, e in zip(got[1:], want[1:]):
        assert a.dtype == torch.float32 and torch.equal(a, e)


def test_bn_act_bfloat16_z_opcheck_and_bad_dtypes():
    """The mixed call (bfloat16 z, float32 parameters) passes opcheck (fake kernel dtypes,
    autograd registration); the other tensors must then be float32, and float16 z is refused
    by name."""
    z = (torch.randn(3, 4, 6, 5) * 2).to(torch.bfloat16).requires_grad_()
    w = (torch.rand(4) + 0.5).requires_grad_()
    b = torch.randn(4, requires_grad=True)
    r = torch.randn(3, 4, 6, 5, requires_grad=True)
    seed = torch.tensor([int(torch.randint(0, 2 ** 62, ()))])
    fwd = torch.ops.posekernels.bn_act_forward
    torch.library.opcheck(fwd, (z, w, b, r, 0.3, seed, 1e-5, True))
    torch.library.opcheck(fwd, (z, None, None, None, 0.0, seed, 1e-5, False))
    zd = z.detach()
    with pytest.raises(TypeError, match="weight must be float32 with a bfloat16 z"):
        fwd(zd, w.detach().to(torch.bfloat16), None, None, 0.0, seed, 1e-5, True)
    with pytest.raises(TypeError, match="residual must be float32 with a bfloat16 z"):
        fwd(zd, None, None, r.detach().double(), 0.0, seed, 1e-5, True)
    with pytest.raises(TypeError, match=r"z must be float32 or float64 \(or bfloat16\)"):
        fwd(zd.half(), None, None, None, 0.0, seed, 1e-5, True)
    y, m, v = fwd(zd, None, None, None, 0.0, seed, 1e-5, True)
    with pytest.raises(TypeError, match="grad_y must be float32 with a bfloat16 z"):
        torch.ops.posekernels.bn_act_backward(y.to(torch.bfloat16), zd, y, None, m, v, 0.0, seed,
                                              1e-5, True, False)


@pytest.mark.parametrize("z_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("p,use_res,relu", [(0.0, False, False), (0.3, True, True)])
def test_bn_act_writes_bfloat16_y_rounded_once(z_dtype, p, use_res, relu):
    """out_dtype=bfloat16 on the cpu kernels: y is the float32 result rounded once (bit for bit),
    the statistics unchanged; the backward on the bfloat16 y and grad_y gives exactly what the
    float32 backward gives on their float32 values."""
    n, c, t = int(torch.randint(2, 6, ())), int(torch.randint(1, 11, ())), int(torch.randint(1, 40, ()))
    v = (1, 5, 17)[int(torch.randint(0, 3, ()))]
    z = (torch.randn(n, c, t, v) * 3 + torch.randn(1, c, 1, 1)).to(z_dtype)
    w, b = torch.rand(c) + 0.5, torch.randn(c)
    r = torch.randn(n, c, t, v) if use_res else None
    seed = torch.tensor([int(torch.randint(0, 2 ** 62, ()))])
    fwd, bwd = torch.ops.posekernels.bn_act_forward, torch.ops.posekernels.bn_act_backward
    y16, m16, v16 = fwd(z, w, b, r, p, seed, 1e-5, relu, torch.bfloat16)
    y32, m32, v32 = fwd(z, w, b, r, p, seed, 1e-5, relu)
    assert y16.dtype == torch.bfloat16 and torch.equal(y16, y32.to(torch.bfloat16))
    assert torch.equal(m16, m32) and torch.equal(v16, v32)
    g = torch.randn(z.shape).to(torch.bfloat16)
    got = bwd(g, z, y16, w, m16, v16, p, seed, 1e-5, relu, use_res)
    want = bwd(g.float(), z, y16.float(), w, m32, v32, p, seed, 1e-5, relu, use_res)
    for a, e in zip(got, want):
        assert a.dtype == e.dtype and torch.equal(a, e)


def test_batch_norm_act_out_dtype():
    """ops.batch_norm_act(out_dtype=...): the cpu kernels' bfloat16 y equals the float32 call's
    result converted (same seed), gradients included; other backends convert; bad values are
    refused by name, also by the raw op."""
    z = (torch.randn(3, 5, 7, 17) * 2 + 1).requires_grad_()
    w = (torch.rand(5) + 0.5).requires_grad_()
    b = torch.randn(5, requires_grad=True)
    r = torch.randn(3, 5, 7, 17, requires_grad=True)
    seed = int(torch.randint(0, 2 ** 31, ()))

    def bn(out_dtype, backend=None):
        return ops.batch_norm_act(z, w, b, None, None, True, dropout=0.2, residual=r, relu=True,
                                  generator=torch.Generator().manual_seed(seed), backend=backend,
                                  out_dtype=out_dtype)
    y16, y32 = bn(torch.bfloat16), bn(None)
    assert y16.dtype == torch.bfloat16 and torch.equal(y16, y32.to(torch.bfloat16))
    g = torch.randn(z.shape).to(torch.bfloat16)
    got = torch.autograd.grad(y16, (z, w, b, r), g)
    want = torch.autograd.grad(y32.to(torch.bfloat16), (z, w, b, r), g)
    for a, e in zip(got, want):
        assert torch.equal(a, e)
    assert bn(torch.float64, "reference").dtype == torch.float64
    assert bn(torch.bfloat16, "reference").dtype == torch.bfloat16
    with pytest.raises(TypeError, match="out_dtype must be None or a floating-point"):
        bn(torch.int32)
    fwd = torch.ops.posekernels.bn_act_forward
    s = torch.tensor([seed])
    zd = z.detach()
    with pytest.raises(TypeError, match=r"out_dtype must be None or torch.float32 \(or torch.bfloat16\)"):
        fwd(zd, None, None, None, 0.0, s, 1e-5, True, torch.float16)
    with pytest.raises(TypeError, match="None or torch.float64 for a z of dtype torch.float64"):
        fwd(zd.double(), None, None, None, 0.0, s, 1e-5, True, torch.bfloat16)
    y, m, v = fwd(zd, None, None, None, 0.0, s, 1e-5, True, torch.bfloat16)
    with pytest.raises(TypeError, match="grad_y must be bfloat16 like y"):
        torch.ops.posekernels.bn_act_backward(y.float(), zd, y, None, m, v, 0.0, s, 1e-5, True,
                                              False)
    torch.library.opcheck(fwd, (z.detach().requires_grad_(), w, b, r, 0.3, s, 1e-5, True,
                                torch.bfloat16))


def test_baseline_compilation_of_the_epilogues(tmp_path):
    """POSEKERNELS_CPU_EPILOGUE=baseline (read once per process) runs the loops' baseline-ISA
    compilation, which CPUs without AVX-512 get: the mask, the float64-oracle checks and the
    bfloat16 paths of this file pass there too (run in a subprocess), and its results agree
    with the AVX-512 compilation's."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, POSEKERNELS_CPU_EPILOGUE="baseline")
    tests = ["test_dropout_mask_is_the_documented_philox_mask", "test_batch_norm_act_matches_float64",
             "test_batch_norm_act_long_rows_match_float64",
             "test_bn_act_reads_bfloat16_z_as_its_float32_value",
             "test_bn_act_writes_bfloat16_y_rounded_once"]
    assert all(t in globals() for t in tests), tests
    script = ("import torch, posekernels\n"
              "assert posekernels.build_info()['cpu_epilogue'] == 'baseline'\n"
              "g = torch.Generator().manual_seed(5)\n"
              "z = torch.randn(3, 6, 41, 17, generator=g) * 2 + 1\n"
              "w, b = torch.rand(6, generator=g) + 0.5, torch.randn(6, generator=g)\n"
              "r = torch.randn(z.shape, generator=g)\n"
              "s = torch.tensor([12345])\n"
              "y, m, v = torch.ops.posekernels.bn_act_forward(z, w, b, r, 0.3, s, 1e-5, True)\n"
              "gz = torch.ops.posekernels.bn_act_backward(torch.ones_like(z), z, y, w, m, v, 0.3, s,"
              " 1e-5, True, True)\n"
              "torch.save((y, m, v) + tuple(gz), __import__('sys').argv[1])\n")
    path = tmp_path / "baseline.pt"
    subprocess.run([sys.executable, "-c", script, str(path)], check=True, env=env)
    got = torch.load(path)
    g = torch.Generator().manual_seed(5)
    z = torch.randn(3, 6, 41, 17, generator=g) * 2 + 1
    w, b = torch.rand(6, generator=g) + 0.5, torch.randn(6, generator=g)
    r = torch.randn(z.shape, generator=g)
    s = torch.tensor([12345])
    y, m, v = torch.ops.posekernels.bn_act_forward(z, w, b, r, 0.3, s, 1e-5, True)
    want = (y, m, v) + tuple(torch.ops.posekernels.bn_act_backward(
        torch.ones_like(z), z, y, w, m, v, 0.3, s, 1e-5, True, True))
    for a, e in zip(got, want):
        assert torch.equal(a != 0, e != 0)  # the same dropout mask and ReLU pattern
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-5)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           __file__, "-k", " or ".join(tests)],
                          env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout


def _bn_reference(z, w, b, rm, rv, momentum, eps, keep, p, r, relu):
    y = F.batch_norm(z, rm, rv, w, b, True, momentum, eps)
    if keep is not None:
        y = torch.where(keep, y / (1 - p), torch.zeros_like(y))
    if r is not None:
        y = y + r
    return F.relu(y) if relu else y


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("p,use_res,relu,affine",
                         [(0.0, False, False, True), (0.1, True, True, True),
                          (0.5, False, True, False), (0.0, True, False, True),
                          (0.25, True, False, True)])
def test_batch_norm_act_matches_float64(dtype, p, use_res, relu, affine):
    check_batch_norm_act("cpu", "cpu", dtype, p, use_res, relu, affine)


def check_batch_norm_act(backend, device, dtype, p, use_res, relu, affine, shape=None):
    """ops.batch_norm_act on ``backend`` against a float64 reference with the documented mask:
    output, running statistics and every gradient (random shape unless given)."""
    n, c = int(torch.randint(2, 9, ())), int(torch.randint(1, 20, ()))
    t, v = int(torch.randint(1, 30, ())), int(torch.randint(1, 18, ()))
    if shape is not None:
        n, c, t, v = shape
    f64 = dict(dtype=torch.float64, device=device)
    z64 = torch.randn(n, c, t, v, **f64) * 3 + torch.randn(1, c, 1, 1, **f64)
    w64 = (torch.rand(c, **f64) + 0.5) if affine else None
    b64 = torch.randn(c, **f64) if affine else None
    r64 = torch.randn(n, c, t, v, **f64) if use_res else None
    rm64, rv64 = torch.randn(c, **f64), torch.rand(c, **f64) + 0.5
    momentum, eps = float(torch.rand(())) * 0.5, 1e-3

    def cast(tn):
        return None if tn is None else tn.to(dtype).requires_grad_(tn.dim() > 1 or affine)
    z, w, b, r = cast(z64), cast(w64), cast(b64), cast(r64)
    rm, rv = rm64.to(dtype), rv64.to(dtype)
    seed = seed_of_next_call()
    y = ops.batch_norm_act(z, w, b, rm, rv, True, momentum, eps, dropout=p, residual=r, relu=relu,
                           backend=backend)
    keep = (torch.from_numpy(reference_keep(z.numel(), p, seed)).reshape(z.shape).to(device)
            if p > 0 else None)
    leaves64 = [t_.clone().requires_grad_() for t_ in (z64, w64, b64, r64) if t_ is not None]
    it = iter(leaves64)
    zz = next(it)
    ww = next(it) if affine else None
    bb = next(it) if affine else None
    rr = next(it) if use_res else None
    ref = _bn_reference(zz, ww, bb, rm64, rv64, momentum, eps, keep, p, rr, relu)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(y.double(), ref.detach(), **tol)
    torch.testing.assert_close(rm.double(), rm64, **tol)
    torch.testing.assert_close(rv.double(), rv64, **tol)
    g = torch.randn_like(ref)
    leaves = [t_ for t_ in (z, w, b, r) if t_ is not None]
    got = torch.autograd.grad(y, leaves, g.to(dtype))
    want = torch.autograd.grad(ref, leaves64, g)
    for a, e in zip(got, want):
        scale = e.abs().max().item() + 1
        torch.testing.assert_close(a.double() / scale, e / scale, **tol)


def test_batch_norm_act_gradcheck_and_opcheck():
    z = torch.randn(3, 4, 5, 2, dtype=torch.float64, requires_grad=True)
    w = (torch.rand(4, dtype=torch.float64) + 0.5).requires_grad_()
    b = torch.randn(4, dtype=torch.float64, requires_grad=True)
    r = torch.randn(3, 4, 5, 2, dtype=torch.float64, requires_grad=True)
    seed = torch.tensor([int(torch.randint(0, 2 ** 62, ()))])
    fwd = torch.ops.posekernels.bn_act_forward
    assert torch.autograd.gradcheck(lambda *a: fwd(*a, 0.3, seed, 1e-5, True)[0], (z, w, b, r))
    assert torch.autograd.gradcheck(lambda a: fwd(a, None, None, None, 0.0, seed, 1e-5, False)[0],
                                    (z,))
    torch.library.opcheck(fwd, (z, w, b, r, 0.3, seed, 1e-5, True))
    torch.library.opcheck(fwd, (z.float(), None, None, None, 0.0, seed, 1e-5, False))
    torch.library.opcheck(torch.ops.posekernels.dropout_apply, (z, 0.4, seed))


def test_epilogues_compile_fullgraph():
    z = torch.randn(4, 6, 9, 5)
    w, b = torch.rand(6) + 0.5, torch.randn(6)
    r = torch.randn_like(z)

    def f(z, w, b, r):
        y = ops.batch_norm_act(z, w, b, None, None, True, residual=r, relu=True)
        return ops.dropout(y, 0.0) * 2

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(z, w, b, r), f(z, w, b, r))

    # with dropout: the seeds are drawn inside the graph (a different stream); it traces, runs
    # and differentiates, and drops about the right share
    zg = torch.randn(8, 6, 9, 5, requires_grad=True)

    def g(z):
        y = ops.batch_norm_act(z, None, None, None, None, True, dropout=0.3, relu=False)
        return ops.dropout(y + 10.0, 0.5)

    out = torch.compile(g, fullgraph=True, backend="aot_eager")(zg)
    dropped = (out == 0).double().mean().item()
    assert abs(dropped - 0.5) < 0.06
    out.sum().backward()
    assert zg.grad is not None and torch.isfinite(zg.grad).all()


def test_batch_norm_act_long_rows_match_float64():
    """Rows of several mask segments (L = T * V > 256, not a multiple of the vector width)."""
    check_batch_norm_act("cpu", "cpu", torch.float32, 0.3, True, True, True,
                         shape=(3, 5, int(torch.randint(20, 40, ())), 17))


def test_batch_norm_act_statistics_are_stable_far_from_zero():
    """Per-row moments combined per channel: no cancellation when the mean dwarfs the spread."""
    c = 4
    z = 1000.0 + 0.01 * torch.randn(6, c, 23, 17, dtype=torch.float64)
    rm, rv = torch.zeros(c), torch.ones(c)
    ops.batch_norm_act(z.float(), None, None, rm, rv, True, momentum=1.0, eps=1e-12)
    torch.testing.assert_close(rm.double(), z.mean((0, 2, 3)), rtol=1e-7, atol=0)
    torch.testing.assert_close(rv.double(), z.var((0, 2, 3)), rtol=1e-3, atol=0)


def test_batch_norm_act_does_not_depend_on_thread_count():
    """Per-row partials combined in a fixed order: 1 and 2 threads give the same bits."""
    z0 = torch.randn(int(torch.randint(5, 12, ())), 7, 41, 17) * 2 + 0.5
    r0, g = torch.randn_like(z0), torch.randn_like(z0)
    w0, b0 = torch.rand(7) + 0.5, torch.randn(7)
    seed = int(torch.randint(0, 2**31, ()))
    results = []
    saved = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            z, r, w, b = (t.clone().requires_grad_() for t in (z0, r0, w0, b0))
            rm, rv = torch.zeros(7), torch.ones(7)
            y = ops.batch_norm_act(z, w, b, rm, rv, True, dropout=0.3, residual=r, relu=True,
                                   generator=torch.Generator().manual_seed(seed))
            results.append([y, rm, rv, *torch.autograd.grad(y, (z, r, w, b), g)])
    finally:
        torch.set_num_threads(saved)
    for a, e in zip(*results):
        assert torch.equal(a, e)


def test_batch_norm_act_eval_and_reference_backend_agree():
    z = torch.randn(5, 3, 7, 4)
    bn = nn.BatchNorm2d(3).eval()
    bn.running_mean.normal_()
    bn.running_var.uniform_(0.5, 2)
    r = torch.randn_like(z)
    y = ops.batch_norm_act(z, bn.weight, bn.bias, bn.running_mean, bn.running_var, False,
                           dropout=0.5, residual=r, relu=True)
    torch.testing.assert_close(y, F.relu(bn(z) + r))
    with pytest.raises(ValueError, match="training=False needs running_mean"):
        ops.batch_norm_act(z, None, None, None, None, False)


@pytest.mark.parametrize("arch", ["released", "glagcn"])
def test_models_train_identically_with_fused_and_reference_epilogues(arch, monkeypatch):
    """Without dropout the fused epilogues change nothing: one training step of a model (cpu
    backend, float64) with them equals the same step with the reference epilogues
    (F.batch_norm + add + ReLU): loss, every gradient, the BatchNorm statistics."""
    torch.manual_seed(int(torch.randint(0, 10_000, ())))
    kw = dict(receptive_field=9, channels=16, dropout=0.0)
    if arch == "released":
        kw.update(sequence_branch=False, head="shared")
    base = GLAGCN(**kw).double().train()
    x = torch.randn(6, 9, 17, 2, dtype=torch.float64)
    target = torch.randn(6, 1, 17, 3, dtype=torch.float64) * 0.1
    fused = ops.batch_norm_act
    results = {}
    for epilogue in ("fused", "reference"):
        if epilogue == "reference":
            monkeypatch.setattr(ops, "batch_norm_act",
                                lambda *a, **k: fused(*a, **dict(k, backend="reference")))
        m = GLAGCN(**kw).double().train()
        m.load_state_dict(base.state_dict())
        for mod in m.modules():  # the graph units' own dropout too
            if isinstance(mod, nn.Dropout):
                mod.p = 0.0
        with ops.use_backend("cpu"):
            loss = mpjpe_loss(m(x), target)
            loss.backward()
        results[epilogue] = (loss.detach(), {k: p.grad for k, p in m.named_parameters()},
                             {k: b_ for k, b_ in m.named_buffers()})
    (l1, g1, b1), (l2, g2, b2) = results["fused"], results["reference"]
    torch.testing.assert_close(l1, l2, rtol=1e-10, atol=1e-12)
    # (a bias right before a BatchNorm has a zero gradient: judge each against the largest)
    assert {k for k, g in g1.items() if g is None} == {k for k, g in g2.items() if g is None}
    g1 = {k: g for k, g in g1.items() if g is not None}
    top = max(g2[k].abs().max().item() for k in g1)
    for k in g1:
        scale = max(g2[k].abs().max().item(), 1e-3 * top)
        torch.testing.assert_close(g1[k] / scale, g2[k] / scale, rtol=1e-7, atol=1e-8, msg=k)
    for k in b1:
        torch.testing.assert_close(b1[k], b2[k], rtol=1e-10, atol=1e-12, msg=k)


def test_model_dropout_is_reproducible_and_active():
    m = GLAGCN(receptive_field=9, channels=16, dropout=0.3).train()
    x = torch.randn(4, 9, 17, 2)
    torch.manual_seed(5)
    a = m(x)
    torch.manual_seed(5)
    b = m(x)
    c = m(x)
    assert torch.equal(a, b) and not torch.equal(a, c)


# ------------------------------------------------------------------------------ the cuda backend
CUDA_EPILOGUES = torch.cuda.is_available() and ops.unchecked.available("cuda", "dropout")


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA_EPILOGUES, reason="needs the extension built with CUDA and a GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("p,use_res,relu,affine,shape",
                         [(0.0, False, False, True, None), (0.1, True, True, True, None),
                          (0.5, False, True, False, (64, 96, 27, 17)),  # many splits
                          (0.25, True, False, True, (2, 5, 1, 1))])
def test_cuda_batch_norm_act_matches_float64(dtype, p, use_res, relu, affine, shape):
    check_batch_norm_act("cuda", "cuda", dtype, p, use_res, relu, affine, shape)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA_EPILOGUES, reason="needs the extension built with CUDA and a GPU")
def test_cuda_epilogues_equal_the_cpu_backend_and_check_gradients():
    for dtype in (torch.float32, torch.float64):
        x = torch.randn(5, 7, 1001, dtype=dtype) + 2.0
        p = float(torch.rand(())) * 0.8 + 0.05
        a = ops.dropout(x, p, generator=torch.Generator().manual_seed(4), backend="cpu")
        b = ops.dropout(x.cuda(), p, generator=torch.Generator().manual_seed(4), backend="cuda")
        assert torch.equal(a, b.cpu())
    z = torch.randn(3, 4, 5, 2, dtype=torch.float64, device="cuda", requires_grad=True)
    w = (torch.rand(4, dtype=torch.float64, device="cuda") + 0.5).requires_grad_()
    r = torch.randn_like(z).requires_grad_()
    seed = torch.tensor([int(torch.randint(0, 2 ** 62, ()))])
    fwd = torch.ops.posekernels.bn_act_forward
    assert torch.autograd.gradcheck(lambda *t: fwd(*t, None, r, 0.3, seed, 1e-5, True)[0], (z, w))
    torch.library.opcheck(fwd, (z, w, None, r, 0.3, seed, 1e-5, True))
    torch.library.opcheck(torch.ops.posekernels.dropout_apply, (z, 0.4, seed))
