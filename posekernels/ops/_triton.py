"""The Triton backend: custom ops ``posekernels::agc_*_triton`` / ``posekernels::jl_*_triton``.

The four ops implement the schemas documented in :mod:`posekernels.ops._autograd` with the Triton
kernels of :mod:`posekernels.ops._triton_kernels`; fake kernels and autograd are registered
through :func:`_autograd.register_agc` / :func:`_autograd.register_jl`, exactly as for the compiled
ops in :mod:`posekernels.ops.unchecked`.

The kernels run on CUDA tensors, and on CPU tensors when ``TRITON_INTERPRET=1`` was set before
triton was first imported (testing only: slow; bf16 is computed in fp32 there because the
interpreter's bf16 tl.dot is wrong). Importing this module raises ImportError when triton is not
installed; the dispatcher then treats the backend as unavailable.

Pipeline of one adaptive graph convolution (N samples, K partitions):

forward
    1. ``agc_attention_fwd`` (grid N x K, only with attention): C = softmax(S / (Ce T)) and the
       fp32 graph M = A + B + C, both (N, K, V, V).
    2. ``agc_fwd`` (grid N x time tiles x Cout blocks): y = sum_k (W_k x) M_k + sum_k bias_k.
backward
    1. ``agc_bwd_graph`` (grid N x K, only with B or attention): gM = dL/dM per sample and
       partition, and the softmax backward gS.
    2. ``agc_bwd_x`` (grid N x time tiles x Cin blocks): grad x, graph and embedding terms.
    3. ``agc_bwd_w`` (grid blocks x K x splits of N): partial grad W and grad bias, summed here.
    4. ``agc_bwd_attw`` (grid blocks x K x splits of N, only with attention): partial grads of
       theta_w, theta_b, phi_w, phi_b, summed here.
"""
import contextlib
import math
from typing import Optional, Tuple

import torch
from torch import Tensor

import triton  # noqa: F401  (an ImportError here means: backend unavailable)
import triton.language as tl

from . import _autograd
from . import _triton_kernels as _k

AGC_FORWARD = "posekernels::agc_forward_triton"
AGC_BACKWARD = "posekernels::agc_backward_triton"
JL_FORWARD = "posekernels::jl_forward_triton"
JL_BACKWARD = "posekernels::jl_backward_triton"
DROPOUT = "posekernels::dropout_apply_triton"
BN_ACT_FORWARD = "posekernels::bn_act_forward_triton"
BN_ACT_BACKWARD = "posekernels::bn_act_backward_triton"

__all__ = ["adaptive_graph_conv", "joint_linear", "dropout", "batch_norm_act"]


# ------------------------------------------------------------------------------------------------
# launch parameters


def _acc_torch(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _acc_tl(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _precision(dtype: torch.dtype) -> str:
    """tl.dot input precision: fp32 follows torch.get_float32_matmul_precision() ("highest":
    3xTF32, close to fp32 accuracy; otherwise TF32). Ignored for 16-bit inputs."""
    if dtype == torch.float64:
        return "ieee"
    if dtype == torch.float32 and torch.get_float32_matmul_precision() == "highest":
        return "tf32x3"
    return "tf32"


def _pow2(n: int, lo: int, hi: Optional[int] = None) -> int:
    b = max(lo, triton.next_power_of_2(n))
    return b if hi is None else min(b, hi)


def _tile(v: int) -> int:
    """Positions per time tile (whole frames, FT = BJ // V of them)."""
    return _pow2(v, 64)


def _embed_block(ce: int) -> int:
    return 16 if _k.INTERPRET else _pow2(ce, 16, 64)


def _splits(n: int, programs: int, device: torch.device) -> Tuple[int, int]:
    """(number of splits, items per split) of a reduction over n items for split-n kernels."""
    if device.type == "cuda":
        sms = torch.cuda.get_device_properties(device).multi_processor_count
        want = max(1, (4 * sms) // max(1, programs))
    else:
        want = 2  # interpreter: exercise the split path on tiny inputs
    per = triton.cdiv(n, max(1, min(n, want)))
    return triton.cdiv(n, per), per


def _device_guard(t: Tensor):
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def _or(t: Optional[Tensor], dummy: Tensor) -> Tensor:
    return dummy if t is None else t


def _c(t: Optional[Tensor]) -> Optional[Tensor]:
    return None if t is None else t.contiguous()


def _static_graph(A: Tensor, B: Optional[Tensor], acc: torch.dtype) -> Tensor:
    m = A.to(acc)
    if B is not None:
        m = m + B.to(acc)
    return m.contiguous()


# ------------------------------------------------------------------------------------------------
# adaptive graph convolution


def _agc_forward(x, A, W, bias, B, theta_w, theta_b, phi_w, phi_b):
    x, A, W, bias, B = x.contiguous(), A.contiguous(), W.contiguous(), _c(bias), _c(B)
    theta_w, theta_b, phi_w, phi_b = _c(theta_w), _c(theta_b), _c(phi_w), _c(phi_b)
    n, cin, t, v = x.shape
    k, cout = W.shape[0], W.shape[1]
    acc = _acc_torch(x.dtype)
    meta = dict(BJ=_tile(v), ACC=_acc_tl(x.dtype), PREC=_precision(x.dtype))
    tiles = triton.cdiv(t, meta["BJ"] // v)
    y = x.new_empty((n, cout, t, v))
    with _device_guard(x):
        if theta_w is not None:
            ce = theta_w.shape[1]
            attn = x.new_empty((n, k, v, v))
            M = torch.empty((n, k, v, v), dtype=acc, device=x.device)
            _k.agc_attention_fwd[(n, k)](
                x, theta_w, _or(theta_b, x), phi_w, _or(phi_b, x), A, _or(B, x), attn, M,
                cin, ce, t, v, 1.0 / (ce * t), HAS_TB=theta_b is not None,
                HAS_PB=phi_b is not None, HAS_B=B is not None, BE=_embed_block(ce),
                BV=_pow2(v, 16), **meta)
            s_mn = k * v * v
        else:
            attn = x.new_empty((0,))
            M = _static_graph(A, B, acc)
            s_mn = 0
        _k.agc_fwd[lambda m: (n, tiles, triton.cdiv(cout, m["BO"]))](
            x, W, M, _or(bias, x), y, k, cin, cout, t, v, s_mn, HAS_BIAS=bias is not None,
            **meta)
    return y, attn


def _agc_backward(grad_y, x, A, W, bias, B, theta_w, theta_b, phi_w, phi_b, attn):
    g, x, A, W, attn = (grad_y.contiguous(), x.contiguous(), A.contiguous(), W.contiguous(),
                        attn.contiguous())
    bias, B, theta_w, theta_b, phi_w, phi_b = (_c(bias), _c(B), _c(theta_w), _c(theta_b),
                                               _c(phi_w), _c(phi_b))
    n, cin, t, v = x.shape
    k, cout = W.shape[0], W.shape[1]
    dtype, dev = x.dtype, x.device
    acc = _acc_torch(dtype)
    has_att = theta_w is not None
    ce = theta_w.shape[1] if has_att else 1
    be = _embed_block(ce)
    scale = 1.0 / (ce * t)
    meta = dict(BJ=_tile(v), ACC=_acc_tl(dtype), PREC=_precision(dtype))
    tiles = triton.cdiv(t, meta["BJ"] // v)
    empty = x.new_empty((0,))
    dummy = torch.empty((1,), dtype=acc, device=dev)
    static = _static_graph(A, B, acc)
    if has_att:
        M = (static.unsqueeze(0) + attn.to(acc)).contiguous()
        s_mn = k * v * v
    else:
        M, s_mn = static, 0
    with _device_guard(x):
        gM = torch.empty((n, k, v, v), dtype=acc, device=dev) if B is not None else dummy
        gS = torch.empty((n, k, v, v), dtype=acc, device=dev) if has_att else dummy
        if B is not None or has_att:
            _k.agc_bwd_graph[(n, k)](
                g, x, W, attn if has_att else x, gM, gS, cin, cout, t, v,
                STORE_GM=B is not None, HAS_ATT=has_att, BV=_pow2(v, 16), **meta)

        gx = torch.empty_like(x)
        _k.agc_bwd_x[lambda m: (n, tiles, triton.cdiv(cin, m["BC"]))](
            g, x, W, M, _or(theta_w, x), _or(theta_b, x), _or(phi_w, x), _or(phi_b, x), gS, gx,
            k, cin, cout, ce, t, v, s_mn, scale, HAS_ATT=has_att, HAS_TB=theta_b is not None,
            HAS_PB=phi_b is not None, BE=be, **meta)

        splits, per = _splits(n, triton.cdiv(cout, 64) * triton.cdiv(cin, 32) * k, dev)
        gWp = torch.empty((splits, k, cout, cin), dtype=acc, device=dev)
        gbp = torch.empty((splits, cout), dtype=acc, device=dev) if bias is not None else dummy
        _k.agc_bwd_w[lambda m: (triton.cdiv(cout, m["BO"]) * triton.cdiv(cin, m["BC"]), k,
                                splits)](
            g, x, M, gWp, gbp, n, cin, cout, t, v, s_mn, per, HAS_BIAS=bias is not None, **meta)
        gW = gWp.sum(0).to(dtype)
        gbias = (gbp.sum(0).to(dtype).unsqueeze(0).expand(k, cout).contiguous()
                 if bias is not None else empty)
        gB = gM.sum(0).to(dtype) if B is not None else x.new_empty((0,))

        if has_att:
            splits, per = _splits(n, triton.cdiv(ce, be) * triton.cdiv(cin, 32) * k, dev)
            gtwp = torch.empty((splits, k, ce, cin), dtype=acc, device=dev)
            gpwp = torch.empty((splits, k, ce, cin), dtype=acc, device=dev)
            gtbp = (torch.empty((splits, k, ce), dtype=acc, device=dev)
                    if theta_b is not None else dummy)
            gpbp = (torch.empty((splits, k, ce), dtype=acc, device=dev)
                    if phi_b is not None else dummy)
            _k.agc_bwd_attw[lambda m: (triton.cdiv(ce, be) * triton.cdiv(cin, m["BC"]), k,
                                       splits)](
                x, theta_w, _or(theta_b, x), phi_w, _or(phi_b, x), gS, gtwp, gpwp, gtbp, gpbp,
                n, cin, ce, t, v, per, scale, HAS_TB=theta_b is not None,
                HAS_PB=phi_b is not None, STORE_TB=theta_b is not None,
                STORE_PB=phi_b is not None, BE=be, **meta)
            gtw, gpw = gtwp.sum(0).to(dtype), gpwp.sum(0).to(dtype)
            gtb = gtbp.sum(0).to(dtype) if theta_b is not None else x.new_empty((0,))
            gpb = gpbp.sum(0).to(dtype) if phi_b is not None else x.new_empty((0,))
        else:
            gtw, gtb, gpw, gpb = (x.new_empty((0,)) for _ in range(4))
    return gx, gW, gbias, gB, gtw, gtb, gpw, gpb


# ------------------------------------------------------------------------------------------------
# per-joint linear


def _jl_block_d(d: int) -> int:
    return _pow2(d, 16, 64)


def _jl_forward(x, W, b):
    x, W, b = x.contiguous(), W.contiguous(), _c(b)
    m, v, c = x.shape
    d = W.shape[2]
    bd = _jl_block_d(d)
    y = x.new_empty((m, v, d))
    with _device_guard(x):
        _k.jl_fwd[lambda meta: (triton.cdiv(m, meta["BM"]), v, triton.cdiv(d, bd))](
            x, W, _or(b, x), y, m, v, c, d, HAS_B=b is not None, BD=bd, ACC=_acc_tl(x.dtype),
            PREC=_precision(x.dtype))
    return y


def _jl_backward(grad_y, x, W, has_bias):
    g, x, W = grad_y.contiguous(), x.contiguous(), W.contiguous()
    m, v, c = x.shape
    d = W.shape[2]
    bd = _jl_block_d(d)
    dtype, dev = x.dtype, x.device
    acc = _acc_torch(dtype)
    meta = dict(BD=bd, ACC=_acc_tl(dtype), PREC=_precision(dtype))
    gx = torch.empty_like(x)
    with _device_guard(x):
        _k.jl_bwd_x[lambda mt: (triton.cdiv(m, mt["BM"]), v, triton.cdiv(c, mt["BC"]))](
            g, W, gx, m, v, c, d, **meta)
        splits, per = _splits(m, triton.cdiv(c, 32) * triton.cdiv(d, bd) * v, dev)
        gWp = torch.empty((splits, v, c, d), dtype=acc, device=dev)
        gbp = (torch.empty((splits, v, d), dtype=acc, device=dev) if has_bias
               else torch.empty((1,), dtype=acc, device=dev))
        _k.jl_bwd_w[lambda mt: (triton.cdiv(c, mt["BC"]) * triton.cdiv(d, bd), v, splits)](
            g, x, gWp, gbp, m, v, c, d, per, HAS_B=has_bias, **meta)
    gW = gWp.sum(0).to(dtype)
    gb = gbp.sum(0).to(dtype) if has_bias else x.new_empty((0,))
    return gx, gW, gb


# ------------------------------------------------------------------------------------------------
# training epilogues (the masks are the cpu backend's, element for element)

_EW_BLOCK = 1024    # elements per program of the elementwise kernels
_RED_BLOCK = 256    # elements per step of the per-channel reductions
EPILOGUE_DTYPES = (torch.float32, torch.float64)
DROPOUT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _check_p_seed(p: float, seed: Tensor) -> Tuple[int, int]:
    """(seed as an unsigned 64-bit int, keep threshold) after checking ``p`` and ``seed``."""
    if not isinstance(p, (int, float)) or not 0.0 <= float(p) < 1.0:
        raise ValueError(f"p must be a number in [0, 1), got {p!r}")
    if not isinstance(seed, Tensor) or seed.dtype != torch.int64 or seed.numel() != 1 \
            or seed.device.type != "cpu":
        raise ValueError("seed must be a one-element int64 CPU tensor, got "
                         + (f"{seed.dtype} {tuple(seed.shape)} on {seed.device}"
                            if isinstance(seed, Tensor) else type(seed).__name__))
    thr = min(int(math.ldexp(1.0 - float(p), 32)), 0xFFFFFFFF) if p > 0 else 0
    return int(seed.reshape(()).item()) & 0xFFFFFFFFFFFFFFFF, thr


def _check_float(name: str, t: Tensor, dtypes) -> None:
    if not isinstance(t, Tensor) or t.dtype not in dtypes:
        raise ValueError(f"{name} must be a tensor of dtype {[str(d) for d in dtypes]}, got "
                         f"{t.dtype if isinstance(t, Tensor) else type(t).__name__}")


def _scale_tensor(p: float, acc: torch.dtype, device) -> Tensor:
    return torch.full((1,), 1.0 / (1.0 - p), dtype=acc, device=device)


def _dropout(x: Tensor, p: float, seed: Tensor) -> Tensor:
    _check_float("x", x, DROPOUT_DTYPES)
    s, thr = _check_p_seed(p, seed)
    x = x.contiguous()
    y = torch.empty_like(x)
    n = x.numel()
    if n == 0:
        return y
    acc = _acc_torch(x.dtype)
    with _device_guard(x):
        _k.dropout_fwd[(triton.cdiv(n, _EW_BLOCK),)](
            x, y, _scale_tensor(p, acc, x.device), n, s, thr, ACC=_acc_tl(x.dtype),
            BLOCK=_EW_BLOCK)
    return y


def _bn_shape(z: Tensor) -> Tuple[int, int, int]:
    """(N, C, L) of z (N, C, ...), L the product of the trailing dimensions."""
    n, c = z.shape[0], z.shape[1]
    return n, c, (z.numel() // (n * c)) if n * c else 0


def _check_bn(z: Tensor, weight, bias, residual) -> None:
    _check_float("z", z, EPILOGUE_DTYPES)
    if z.dim() < 2:
        raise ValueError(f"z must have shape (N, C, ...), got {tuple(z.shape)}")
    n, c, l = _bn_shape(z)
    if n * l < 2:
        raise ValueError(f"z needs more than one value per channel, got shape {tuple(z.shape)}")
    for name, t, shape in (("weight", weight, (c,)), ("bias", bias, (c,)),
                           ("residual", residual, tuple(z.shape))):
        if t is not None and (not isinstance(t, Tensor) or tuple(t.shape) != shape
                              or t.dtype != z.dtype or t.device != z.device):
            raise ValueError(f"{name} must be a {z.dtype} tensor of shape {shape} on {z.device}, "
                             f"got {_describe(t)}")


def _describe(t) -> str:
    if not isinstance(t, Tensor):
        return type(t).__name__
    return f"{t.dtype} {tuple(t.shape)} on {t.device}"


def _channel_splits(m: int, c: int, device: torch.device) -> Tuple[int, int]:
    """(splits, elements per split) of each channel's m positions for the reductions."""
    splits, per_blocks = _splits(triton.cdiv(m, _RED_BLOCK), c, device)
    return splits, per_blocks * _RED_BLOCK


def _bn_act_forward(z, weight, bias, residual, p, seed, eps, relu):
    _check_bn(z, weight, bias, residual)
    s, thr = _check_p_seed(p, seed)
    z, weight, bias, residual = z.contiguous(), _c(weight), _c(bias), _c(residual)
    n, c, l = _bn_shape(z)
    m = n * l
    dt, dev = z.dtype, z.device
    acc = _acc_torch(dt)
    splits, per = _channel_splits(m, c, dev)
    cnt = torch.empty((c, splits), dtype=acc, device=dev)
    mu = torch.empty_like(cnt)
    m2 = torch.empty_like(cnt)
    y = torch.empty_like(z)
    with _device_guard(z):
        _k.bn_stats[(c, splits)](z, cnt, mu, m2, c, l, m, per, ACC=_acc_tl(dt), BLOCK=_RED_BLOCK)
        # merge the splits in float64 (Chan et al.)
        cnt, mu, m2 = cnt.double(), mu.double(), m2.double()
        mean = (cnt * mu).sum(1) / m
        var = (m2 + cnt * (mu - mean[:, None]) ** 2).sum(1) / m
        mean_t = mean.to(dt)
        invstd = torch.rsqrt(var + eps)
        g = weight.double() if weight is not None else torch.ones_like(mean)
        b = bias.double() if bias is not None else torch.zeros_like(mean)
        mul = (g * invstd).to(acc)
        off = (b - mean_t.double() * g * invstd).to(acc)
        _k.bn_act_fwd[(triton.cdiv(z.numel(), _EW_BLOCK),)](
            z, _or(residual, z), mul, off, _scale_tensor(p, acc, dev) if p > 0 else mul, y,
            z.numel(), c, l, s, thr, HAS_P=p > 0, HAS_RES=residual is not None, RELU=bool(relu),
            ACC=_acc_tl(dt), BLOCK=_EW_BLOCK)
    return y, mean_t, var.to(dt)


def _bn_act_backward(grad_y, z, y, weight, mean, var, p, seed, eps, relu, has_residual):
    _check_bn(z, weight, None, None)
    for name, t in (("grad_y", grad_y), ("y", y)):
        if not isinstance(t, Tensor) or t.shape != z.shape or t.dtype != z.dtype:
            raise ValueError(f"{name} must have the shape and dtype of z "
                             f"({z.dtype} {tuple(z.shape)}), got {_describe(t)}")
    n, c, l = _bn_shape(z)
    for name, t in (("mean", mean), ("var", var)):
        if not isinstance(t, Tensor) or tuple(t.shape) != (c,) or t.dtype != z.dtype:
            raise ValueError(f"{name} must be a {z.dtype} tensor of shape ({c},), got "
                             f"{_describe(t)}")
    s, thr = _check_p_seed(p, seed)
    g_y, z, y, weight = grad_y.contiguous(), z.contiguous(), y.contiguous(), _c(weight)
    mean, var = mean.contiguous(), var.contiguous()
    m = n * l
    dt, dev = z.dtype, z.device
    acc = _acc_torch(dt)
    meta = dict(HAS_P=p > 0, RELU=bool(relu), ACC=_acc_tl(dt))
    scale = _scale_tensor(p, acc, dev) if p > 0 else mean
    splits, per = _channel_splits(m, c, dev)
    sd = torch.empty((c, splits), dtype=acc, device=dev)
    sdz = torch.empty_like(sd)
    gres = torch.empty_like(z) if has_residual else z.new_empty((0,))
    gz = torch.empty_like(z)
    with _device_guard(z):
        _k.bn_act_bwd_sums[(c, splits)](
            g_y, y, z, mean, scale, gres if has_residual else z, sd, sdz, c, l, m, per, s, thr,
            STORE_RES=bool(has_residual), BLOCK=_RED_BLOCK, **meta)
        sum_d, sum_dz = sd.double().sum(1), sdz.double().sum(1)
        invstd = torch.rsqrt(var.double() + eps)
        g = weight.double() if weight is not None else torch.ones_like(invstd)
        k = (g * invstd).to(acc)
        md = (sum_d / m).to(acc)
        kz = (invstd * invstd * sum_dz / m).to(acc)
        _k.bn_act_bwd_z[(triton.cdiv(z.numel(), _EW_BLOCK),)](
            g_y, y, z, mean, k, md, kz, scale, gz, z.numel(), c, l, s, thr, BLOCK=_EW_BLOCK,
            **meta)
    return gz, (sum_dz * invstd).to(dt), sum_d.to(dt), gres


# ------------------------------------------------------------------------------------------------
# the custom ops


def _run(fn, *args):
    """Call a launcher; under the interpreter, bf16 runs in fp32 (its bf16 tl.dot is wrong)."""
    if _k.INTERPRET and any(isinstance(a, Tensor) and a.dtype == torch.bfloat16 for a in args):
        up = tuple(a.float() if isinstance(a, Tensor) and a.dtype == torch.bfloat16 else a
                   for a in args)
        out = fn(*up)
        if isinstance(out, tuple):
            return tuple(o.to(torch.bfloat16) for o in out)
        return out.to(torch.bfloat16)
    return fn(*args)


@torch.library.custom_op(AGC_FORWARD, mutates_args=())
def agc_forward_triton(x: Tensor, A: Tensor, W: Tensor, bias: Optional[Tensor],
                       B: Optional[Tensor], theta_w: Optional[Tensor], theta_b: Optional[Tensor],
                       phi_w: Optional[Tensor], phi_b: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
    return _run(_agc_forward, x, A, W, bias, B, theta_w, theta_b, phi_w, phi_b)


@torch.library.custom_op(AGC_BACKWARD, mutates_args=())
def agc_backward_triton(grad_y: Tensor, x: Tensor, A: Tensor, W: Tensor, bias: Optional[Tensor],
                        B: Optional[Tensor], theta_w: Optional[Tensor], theta_b: Optional[Tensor],
                        phi_w: Optional[Tensor], phi_b: Optional[Tensor], attn: Tensor
                        ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    return _run(_agc_backward, grad_y, x, A, W, bias, B, theta_w, theta_b, phi_w, phi_b, attn)


@torch.library.custom_op(JL_FORWARD, mutates_args=())
def jl_forward_triton(x: Tensor, W: Tensor, b: Optional[Tensor]) -> Tensor:
    return _run(_jl_forward, x, W, b)


@torch.library.custom_op(JL_BACKWARD, mutates_args=())
def jl_backward_triton(grad_y: Tensor, x: Tensor, W: Tensor,
                       has_bias: bool) -> Tuple[Tensor, Tensor, Tensor]:
    return _run(_jl_backward, grad_y, x, W, has_bias)


@torch.library.custom_op(DROPOUT, mutates_args=())
def dropout_apply_triton(x: Tensor, p: float, seed: Tensor) -> Tensor:
    return _run(_dropout, x, p, seed)


@torch.library.custom_op(BN_ACT_FORWARD, mutates_args=())
def bn_act_forward_triton(z: Tensor, weight: Optional[Tensor], bias: Optional[Tensor],
                          residual: Optional[Tensor], p: float, seed: Tensor, eps: float,
                          relu: bool) -> Tuple[Tensor, Tensor, Tensor]:
    return _bn_act_forward(z, weight, bias, residual, p, seed, eps, relu)


@torch.library.custom_op(BN_ACT_BACKWARD, mutates_args=())
def bn_act_backward_triton(grad_y: Tensor, z: Tensor, y: Tensor, weight: Optional[Tensor],
                           mean: Tensor, var: Tensor, p: float, seed: Tensor, eps: float,
                           relu: bool, has_residual: bool
                           ) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    return _bn_act_backward(grad_y, z, y, weight, mean, var, p, seed, eps, relu, has_residual)


_autograd.register_agc(AGC_FORWARD, AGC_BACKWARD)
_autograd.register_jl(JL_FORWARD, JL_BACKWARD)
_autograd.register_dropout(DROPOUT)
_autograd.register_bn_act(BN_ACT_FORWARD, BN_ACT_BACKWARD)


def adaptive_graph_conv(x, A, W, bias, B, theta_w, theta_b, phi_w, phi_b):
    return torch.ops.posekernels.agc_forward_triton(x, A, W, bias, B, theta_w, theta_b, phi_w,
                                                   phi_b)[0]


def joint_linear(x, W, b):
    return torch.ops.posekernels.jl_forward_triton(x, W, b)


def dropout(x, p, seed):
    """Counter-based dropout on the Triton backend (the cpu backend's masks)."""
    return torch.ops.posekernels.dropout_apply_triton(x, p, seed)


def batch_norm_act(z, weight, bias, residual, p, seed, eps, relu):
    """Training BatchNorm + dropout + residual + ReLU on the Triton backend:
    ``(y, mean, biased var)``, as :func:`posekernels.ops.unchecked.batch_norm_act`."""
    return torch.ops.posekernels.bn_act_forward_triton(z, weight, bias, residual, p, seed, eps,
                                                      relu)
